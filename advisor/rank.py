"""Rank every checkpoint of the catalog for a use case, with the reasons in plain words.

The weighting of each use case is data below, documented in docs/ranking.md. A score is
0–100: published benchmark scores for the use case (each normalised by the best in the
catalog), the model's declared strengths, and the use case's traits (size for edge,
context for long-context, languages for multilingual, speed for chat). Quantized
checkpoints pay their published quality cost. Nothing that does not fit ranks above
anything that does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from advisor.estimate import EngineSettings, Estimate, Target, estimate
from advisor.launch import command_line
from advisor.plan import FitChecks, plan
from advisor.specs import Checkpoint, Model


@dataclass(frozen=True)
class UseCaseWeights:
    benchmarks: dict[str, float]  # benchmark name (case-insensitive) → weight
    quality: float  # share of the score from benchmarks
    strength: float  # share from the model declaring the use case a strength
    trait: float  # share from the use case's trait
    trait_name: str


USE_CASE_WEIGHTS: dict[str, UseCaseWeights] = {
    "code": UseCaseWeights({"humaneval": 1.0, "mbpp": 0.7, "livecodebench": 1.0, "multipl-e": 0.5},
                           0.7, 0.2, 0.1, "speed"),
    "math": UseCaseWeights({"math": 1.0, "math-500": 1.0, "gsm8k": 0.6, "aime 2024": 0.8,
                            "aime 2025": 0.8, "aime": 0.8}, 0.7, 0.2, 0.1, "speed"),
    "chat": UseCaseWeights({"ifeval": 1.0, "mmlu": 0.6, "mmlu-pro": 0.8, "mmlu-redux": 0.8,
                            "arena-hard": 0.8}, 0.6, 0.15, 0.25, "speed"),
    "edge": UseCaseWeights({"ifeval": 1.0, "mmlu": 0.6, "mmlu-pro": 0.6, "gsm8k": 0.4}, 0.3, 0.1,
                           0.6, "small size"),
    "long-context": UseCaseWeights({"ruler": 1.0}, 0.3, 0.2, 0.5, "native context"),
    "multilingual": UseCaseWeights({"mgsm": 1.0, "mmmlu": 1.0, "global-mmlu-lite": 1.0,
                                    "multilingual mmlu": 1.0}, 0.4, 0.2, 0.4, "languages"),
}

# Quality lost to 4-bit weights: the seed article's Phi-4 figure (MATH 80.4 → ~78.2 with
# Q4_K_M, its "1–3 % on reasoning benchmarks"). No published figure for 8-bit here: none is
# charged, and the reasons say so.
FOUR_BIT_COST = 1 - 78.2 / 80.4
FOUR_BIT_SOURCE = "seed article (Small Language Models: Intelligence at the Edge), quantization FAQ"


class Result(msgspec.Struct, kw_only=True):
    model: str
    name: str
    repo: str
    quant: str
    label: str
    params_b: float
    score: float
    fits: bool
    meets_request: bool
    estimate: Estimate
    reasons: list[str]
    command: str
    # decodes under SPEED_FLOOR tokens/s for one stream here (by the estimate): ranked
    # below every pick that fits and is not (docs/ranking.md, "Speed")
    too_slow: bool = False
    # the model's best-ranked row: the checkpoint that suits this hardware best. A ranking
    # shows one row per model, the chosen ones; the JSON keeps every row.
    chosen: bool = False
    rank: int = 0  # the model's place among models (1 = first), the same on all its rows


def best_scores(models: list[Model]) -> dict[str, float]:
    best: dict[str, float] = {}
    for m in models:
        for s in m.scores:
            key = s.benchmark.lower()
            best[key] = max(best.get(key, 0.0), s.value)
    return best


def _quality(model: Model, w: UseCaseWeights, best: dict[str, float]) -> tuple[float | None, str]:
    total = weight = 0.0
    used = []
    for s in model.scores:
        key = s.benchmark.lower()
        if key in w.benchmarks and best.get(key):
            total += w.benchmarks[key] * s.value / best[key]
            weight += w.benchmarks[key]
            used.append(f"{s.benchmark} {s.value:g}")
    if not weight:
        return None, ""
    return total / weight, ", ".join(used)


def _trait(model: Model, w: UseCaseWeights) -> tuple[float, str] | None:
    """The use case's trait for the model; None for speed, which depends on the hardware."""
    if w.trait_name == "small size":
        p = model.params_b
        value = 1.0 if p <= 3.2 else max(0.0, 1 - (p - 3.2) / 6)
        return value, f"{p:g}B parameters" + (" (edge-sized)" if p <= 3.2 else "")
    if w.trait_name == "native context":
        ctx = model.arch.native_context
        return min(1.0, math.log2(ctx / 4096) / math.log2(131072 / 4096)), f"native context {ctx:,}"
    if w.trait_name == "languages":
        n = len(model.languages)
        return min(1.0, n / 12), f"{n} languages listed"
    return None


# The usable floor: a pick that decodes more slowly than this for one stream is flagged
# and ranked below every fitting pick that is faster (docs/ranking.md, "Speed").
SPEED_FLOOR = 10.0  # tokens/s


def too_slow(est: Estimate) -> bool:
    """Under the floor by the estimate; a speed not estimated is not judged."""
    return est.decode_tokens_per_s is not None and est.decode_tokens_per_s < SPEED_FLOOR


def _speed(model: Model, est: Estimate) -> tuple[float, str]:
    speed = est.decode_tokens_per_s
    if speed:
        return min(1.0, speed / 150), f"about {speed:g} tokens/s for one stream (estimate)"
    return min(1.0, 3 / max(model.params_b, 0.5)), "speed not estimated for this hardware"


@dataclass(frozen=True)
class ModelScore:
    """What a model scores for a use case before the hardware is known: the same for each
    of its checkpoints and every request, so worked out once per model."""

    points: float  # 0–1: benchmarks, strengths and a trait that needs no hardware, weighted
    reasons: tuple[str, ...]
    speed_weight: float  # the trait's share when the trait is speed (0 otherwise)


def model_score(model: Model, use_case: str, best: dict[str, float]) -> ModelScore:
    w = USE_CASE_WEIGHTS[use_case]
    reasons: list[str] = []
    quality, used = _quality(model, w, best)
    if quality is None:
        # no published figure for this use case: a size prior, said plainly
        quality = min(0.85, 0.45 + 0.1 * math.log2(max(model.params_b, 0.25) / 0.5))
        reasons.append(f"no published {use_case} benchmark in the catalog; quality judged by size")
    else:
        reasons.append(f"{use_case} benchmarks: {used}")
    strength = 1.0 if use_case in model.strengths else 0.0
    if strength:
        reasons.append(f"its authors name {use_case} among its strengths")
    points = w.quality * quality + w.strength * strength
    trait = _trait(model, w)
    if trait:
        points += w.trait * trait[0]
        reasons.append(trait[1])
    return ModelScore(points=points, reasons=tuple(reasons),
                      speed_weight=0.0 if trait else w.trait)


def score_one(model: Model, ckpt: Checkpoint, est: Estimate, part: ModelScore) -> tuple[float, list[str]]:
    """A checkpoint's score: its model's part, the speed its estimate predicts where the
    use case weighs speed, and the published cost of 4-bit weights."""
    reasons = list(part.reasons)
    points = part.points
    if part.speed_weight:
        speed, text = _speed(model, est)
        points += part.speed_weight * speed
        reasons.append(text)
    score = 100 * points
    if ckpt.quant != "none" and ckpt.bits == 4:
        score *= 1 - FOUR_BIT_COST
        reasons.append(f"4-bit weights cost about {100 * FOUR_BIT_COST:.1f} % quality "
                       f"({FOUR_BIT_SOURCE})")
    elif ckpt.quant != "none":
        reasons.append("8-bit weights: no published quality cost in the catalog; none charged")
    return round(max(0.0, min(100.0, score)), 1), reasons


def _plan_fewest_gpus(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
                      tp_given: bool, first: Estimate,
                      checks: FitChecks) -> tuple[Estimate, EngineSettings]:
    """With no --tp, the fewest GPUs that hold the model (as a user would try)."""
    if not first.fits and not tp_given and target.engine == "vllm":
        for tp in (2, 4, 8):
            if tp > target.gpus or model.arch.attention_heads % tp:
                continue
            s = msgspec.structs.replace(settings, tp=tp)
            if checks.fits(ckpt, target, s):
                return plan(model, ckpt, target, s), s
    return plan(model, ckpt, target, settings, first, checks), settings


def recommend(models: list[Model], use_case: str, target: Target, settings: EngineSettings,
              tp_given: bool = False) -> list[Result]:
    """Every checkpoint of every model, best first; none that fits below one that does not."""
    best = best_scores(models)
    results = []
    for m in models:
        bare = [estimate(m, c, target, settings) for c in m.checkpoints]
        part = model_score(m, use_case, best)
        # the fix search of each refused checkpoint tries its siblings: tell it what they did
        checks = FitChecks.kept(m, target, settings)
        for c, e in zip(m.checkpoints, bare, strict=True):
            checks.remember(c, target, settings, e.fits)
        for c, first in zip(m.checkpoints, bare, strict=True):
            est, s = _plan_fewest_gpus(m, c, target, settings, tp_given, first, checks)
            score, reasons = score_one(m, c, est, part)
            if not est.fits:
                reasons.insert(0, f"does not fit: {est.reason}")
            elif not est.meets_request:
                reasons.insert(0, f"fits, but holds {est.max_concurrency:g} sequences of "
                                  f"{est.max_model_len:,} tokens, fewer than the "
                                  f"{settings.concurrency} asked")
            else:
                reasons.insert(0, f"fits: {est.kv_cache_tokens:,} KV tokens, "
                                  f"{est.max_concurrency:g}× concurrency at {est.max_model_len:,} tokens")
            slow = est.fits and too_slow(est)
            if slow:
                reasons.insert(1, f"too slow: about {est.decode_tokens_per_s:g} tokens/s for one "
                                  f"stream here (estimate), under the {SPEED_FLOOR:g} tokens/s "
                                  "floor; ranked below the faster picks that fit")
            elif est.fits and est.decode_tokens_per_s and not part.speed_weight:
                # not scored for this use case, but the floor judged it: say what it saw
                reasons.append(f"about {est.decode_tokens_per_s:g} tokens/s for one stream "
                               "here (estimate)")
            results.append(Result(model=m.id, name=m.name, repo=c.repo, quant=c.quant, label=c.label,
                                  params_b=m.params_b, score=score, fits=est.fits,
                                  meets_request=est.meets_request, estimate=est, reasons=reasons,
                                  command=command_line(c, est, s), too_slow=slow))
    results.sort(key=order_key)
    return mark_chosen(results)


def order_key(r: Result) -> tuple[bool, bool, bool, float, float, float, float, str, str, str]:
    """Best first (docs/ranking.md, "Speed"): what fits, then what holds the concurrency
    asked, then what decodes at the usable floor or faster; among those the higher score,
    among the too slow the faster, then the higher score; ties go to the smaller weights,
    the faster decode, then the model id, repo and quantization (one order for equal rows)."""
    speed = r.estimate.decode_tokens_per_s or 0.0
    return (not r.fits, not r.meets_request, r.too_slow, -speed if r.too_slow else -r.score,
            -r.score, r.estimate.weights_gib, -speed, r.model, r.repo, r.quant)


def mark_chosen(results: list[Result]) -> list[Result]:
    """Mark each model's first row (in rank order) chosen, and number models, not rows."""
    places: dict[str, int] = {}
    for r in results:
        r.chosen = r.model not in places
        if r.chosen:
            places[r.model] = len(places) + 1
        r.rank = places[r.model]
    return results
