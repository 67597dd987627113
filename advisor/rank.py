"""Rank every checkpoint of the catalog for a use case, with the reasons in plain words.

The weighting of each use case is data below, documented in docs/ranking.md. A score is
0–100: the quality the published evidence gives the model for the use case, the model's
declared strengths, and the use case's trait (size for edge, context for long-context,
languages for multilingual, speed for chat). Evidence is compared only within an evidence
set (one harness, benchmark and setting: advisor.specs.Score.evidence_set), never pooled
across harnesses. Quantized checkpoints pay their published quality cost. Nothing that does
not fit ranks above anything that does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from advisor.article import on_row
from advisor.calibrate import Calibration, calibration
from advisor.estimate import EngineSettings, Estimate, Target
from advisor.history import LoadTest
from advisor.launch import command_line
from advisor.placement import on_gpus, place, with_layout
from advisor.plan import FitChecks, plan, with_replica_speed
from advisor.specs import Checkpoint, Model, Score


@dataclass(frozen=True)
class UseCaseWeights:
    benchmarks: dict[str, float]  # benchmark name (case-insensitive) → weight of each set of it
    quality: float  # share of the score from the evidence
    strength: float  # share from the model declaring the use case a strength
    trait: float  # share from the use case's trait
    trait_name: str
    reasoning_sets: bool = False  # whether reasoning-mode (thinking) evidence counts


USE_CASE_WEIGHTS: dict[str, UseCaseWeights] = {
    # aider code editing: one leaderboard that ran every model through the same 133 exercises;
    # livebench coding: one leaderboard's coding category (each release its own set), half of it
    # LiveCodeBench-style generation, so weighted as LiveCodeBench; bigcodebench: one leaderboard's
    # 1,140 tasks (the mean of its Complete and Instruct splits), weighted as HumanEval
    "code": UseCaseWeights({"humaneval": 1.0, "humaneval+": 1.0, "mbpp": 0.7, "mbpp+": 0.7,
                            "livecodebench": 1.0, "livebench coding": 1.0, "bigcodebench": 1.0,
                            "multipl-e": 0.5, "aider code editing": 0.7},
                           0.7, 0.2, 0.1, "speed", True),
    "math": UseCaseWeights({"math": 1.0, "math-500": 1.0, "gsm8k": 0.6, "aime 2024": 0.8,
                            "aime 2025": 0.8}, 0.7, 0.2, 0.1, "speed", True),
    # human preference first: LMArena's ratings are what "a better chat model" means here
    "chat": UseCaseWeights({"arena elo": 3.0, "arena-hard": 1.0, "ifeval": 0.6, "wildbench": 0.6,
                            "mt-bench": 0.5, "mmlu-pro": 0.4, "mmlu-redux": 0.4, "mmlu": 0.3},
                           0.6, 0.15, 0.25, "speed"),
    "edge": UseCaseWeights({"ifeval": 1.0, "arena elo": 1.0, "arena-hard": 0.6, "mmlu": 0.6,
                            "mmlu-pro": 0.6, "mmlu-redux": 0.6, "gsm8k": 0.4}, 0.3, 0.1, 0.6,
                           "small size"),
    "long-context": UseCaseWeights({"ruler": 1.0, "infinitebench/en.mc": 0.5}, 0.3, 0.2, 0.5,
                                   "native context"),
    "multilingual": UseCaseWeights({"mgsm": 1.0, "mmmlu": 1.0, "global-mmlu-lite": 1.0,
                                    "multilingual mmlu": 1.0, "global mmlu": 1.0, "mgsm8k (extended)": 1.0,
                                    "okapi mmlu (translated)": 0.7, "ifeval (multilingual)": 0.7},
                                   0.4, 0.2, 0.4, "languages"),
}

# Quality lost to 4-bit weights: the seed article's Phi-4 figure (MATH 80.4 → ~78.2 with
# Q4_K_M, within its "1–3 % degradation on reasoning benchmarks"). No published figure for
# 8-bit here: none is charged, and the reasons say so.
FOUR_BIT_COST = 1 - 78.2 / 80.4
FOUR_BIT_SOURCE = "seed article (Small Language Models: Intelligence at the Edge), quantization FAQ"

FULL_SET = 5  # an evidence set of this many catalog models counts fully; fewer count less
PRIOR_WEIGHT = 0.5  # how strongly a model's quality is pulled toward the use case's prior


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
    # the seed article's "VRAM (Q4)" for the model as it writes it ("~5 GB"; None where it
    # sizes none), and why it differs from this row's vLLM accounting (advisor.article)
    article_vram_q4: str | None = None
    article_vram_note: str = ""
    # output tokens per joule in this checkpoint's latest load test on this host (a GPU's
    # NVML energy); `edge` ranks the measured picks by it (docs/ranking.md)
    tokens_per_joule: float | None = None


@dataclass(frozen=True)
class EvidenceSet:
    """The catalog models' figures from one harness, benchmark and setting."""

    key: str
    benchmark: str
    harness: str
    rating: bool  # an Elo-style rating rather than a percentage
    values: dict[str, float]  # model id → figure

    @property
    def best(self) -> float:
        return max(self.values.values())

    @property
    def size_weight(self) -> float:
        """A set compares its models with each other: one of two says less than one of eight."""
        return min(1.0, (len(self.values) - 1) / (FULL_SET - 1))

    def normalised(self, value: float) -> float:
        """0–1 against the set's best: a percentage as a fraction of the best; a rating as
        twice its expected score against the best (Elo's logistic, 400 points a decade)."""
        if self.rating:
            return 2 / (1 + 10 ** ((self.best - value) / 400))
        return value / self.best if self.best else 0.0


@dataclass(frozen=True)
class Evidence:
    """Every comparable evidence set of the catalog, and each use case's prior."""

    sets: dict[str, EvidenceSet]
    priors: dict[str, float] = field(default_factory=dict)  # use case → lower quartile
    evidenced: dict[str, int] = field(default_factory=dict)  # use case → models with evidence
    names: dict[str, str] = field(default_factory=dict)  # model id → name
    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # use case → model → 0–1
    # each model's hardware-free score, by (model id, use case), filled as rankings ask
    scores: dict[tuple[str, str], ModelScore] = field(default_factory=dict)

    def used(self, model: Model, w: UseCaseWeights) -> list[tuple[Score, EvidenceSet, float]]:
        """The model's figures that count for the use case: (score, its set, the set's weight)."""
        out = []
        for s in model.scores:
            bw = w.benchmarks.get(s.benchmark.lower())
            es = self.sets.get(s.evidence_set)
            if not bw or es is None or len(es.values) < 2:
                continue
            if s.reasoning == "on" and not w.reasoning_sets:
                continue
            out.append((s, es, bw * es.size_weight))
        return out


def _lower_quartile(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) / 4
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


FIT_ROUNDS = 200


def _fit(obs: list[tuple[str, str, float, float]], pull: float,
         target: float | dict[str, float]) -> dict[str, float]:
    """Least squares over the use case's figures: normalised figure ≈ model quality + set
    offset. The offset absorbs what a set's best and its company make of the scale, so two
    models are compared only through the sets they share, directly or by a chain of shared
    rivals. Each quality is pulled toward `target` with weight `pull`; offsets average zero,
    so qualities keep the level of the figures. obs: (model, set, normalised figure, weight)."""
    models = sorted({o[0] for o in obs})
    sets = sorted({o[1] for o in obs})
    goal = target if isinstance(target, dict) else dict.fromkeys(models, target)
    theta = dict(goal)
    offset = dict.fromkeys(sets, 0.0)
    for _ in range(FIT_ROUNDS):
        num = dict.fromkeys(sets, 0.0)
        den = dict.fromkeys(sets, 0.0)
        for m, s, q, w in obs:
            num[s] += w * (q - theta[m])
            den[s] += w
        offset = {s: num[s] / den[s] for s in sets}
        mean = sum(offset[s] * den[s] for s in sets) / sum(den.values())
        offset = {s: o - mean for s, o in offset.items()}
        num = {m: pull * goal[m] for m in models}
        den = dict.fromkeys(models, pull)
        for m, s, q, w in obs:
            num[m] += w * (q - offset[s])
            den[m] += w
        theta = {m: num[m] / den[m] for m in models}
    return theta


# the fit of each catalog's evidence, by the figures it reads: it depends on the catalog
# alone and costs about 100 ms, so a service fits once, not once per ranking
_EVIDENCE_KEPT: dict[bytes, Evidence] = {}


def best_scores(models: list[Model]) -> Evidence:
    """The catalog's evidence sets, and for each use case every evidenced model's quality
    (fitted across the sets) and the prior: the lower quartile of those qualities, what a
    model is pulled toward when it has little evidence and what it gets when it has none.
    Kept per catalog (by value); the answer is only read."""
    # every figure the fit reads, by value (half the bytes of the whole models to encode)
    key = msgspec.json.encode([(m.id, m.name, m.scores) for m in models])
    got = _EVIDENCE_KEPT.get(key)
    if got is None:
        if len(_EVIDENCE_KEPT) >= 8:  # catalogs edited while a service runs
            _EVIDENCE_KEPT.clear()
        got = _EVIDENCE_KEPT[key] = _fit_evidence(models)
    return got


def _fit_evidence(models: list[Model]) -> Evidence:
    sets: dict[str, EvidenceSet] = {}
    for m in models:
        for s in m.scores:
            es = sets.setdefault(s.evidence_set, EvidenceSet(
                key=s.evidence_set, benchmark=s.benchmark, harness=s.harness, rating=s.is_rating,
                values={}))
            es.values[m.id] = s.value
    ev = Evidence(sets=sets, names={m.id: m.name for m in models})
    for use_case, w in USE_CASE_WEIGHTS.items():
        obs = [(m.id, es.key, es.normalised(s.value), weight)
               for m in models for s, es, weight in ev.used(m, w)]
        if not obs:
            ev.priors[use_case], ev.evidenced[use_case] = 0.0, 0
            continue
        level = sum(q * wt for _, _, q, wt in obs) / sum(wt for *_, wt in obs)
        # first pass: barely pulled (only to pin the scale); its lower quartile is the prior
        first = _fit(obs, 0.01, level)
        prior = _lower_quartile(list(first.values()))
        fitted = _fit(obs, PRIOR_WEIGHT, prior)
        ev.priors[use_case] = round(prior, 3)
        ev.evidenced[use_case] = len(fitted)
        # scaled so the best evidenced model is 1: the fit may put a model above its sets' best
        top = max(fitted.values())
        ev.quality[use_case] = {m: max(0.0, q / top) for m, q in fitted.items()}
    return ev


def _quality(model: Model, use_case: str, ev: Evidence) -> tuple[float | None, str]:
    """Quality 0–1 fitted from the model's comparable evidence (None, and no text, when it
    has none), with the figures it rests on."""
    used = ev.used(model, USE_CASE_WEIGHTS[use_case])
    quality = ev.quality.get(use_case, {}).get(model.id)
    if not used or quality is None:
        return None, ""
    parts = [f"{s.benchmark} {s.value:g} (best {es.best:g} of {len(es.values)} models, {s.harness})"
             for s, es, _ in sorted(used, key=lambda u: -u[2])]
    return quality, "; ".join(parts)


def ahead_on_evidence(model: Model, use_case: str, ev: Evidence,
                      limit: int = 5) -> list[tuple[str, str]]:
    """The catalog models that beat this one in most of the evidence sets they share for the
    use case, most decisive first: (model id, the published figures that say so)."""
    w = USE_CASE_WEIGHTS[use_case]
    mine = ev.used(model, w)
    rivals: dict[str, list[tuple[bool, str]]] = {}
    for s, es, _ in mine:
        for other, value in es.values.items():
            if other != model.id and value != s.value:
                rivals.setdefault(other, []).append(
                    (value > s.value, f"{s.benchmark} {value:g} vs {s.value:g} ({s.harness})"))
    ahead = []
    for other, duels in rivals.items():
        wins = [text for won, text in duels if won]
        if 2 * len(wins) > len(duels):
            ahead.append((len(wins) - (len(duels) - len(wins)), other, wins))
    ahead.sort(key=lambda a: (-a[0], a[1]))
    return [(other, f"{ev.names.get(other, other)}: " + "; ".join(wins[:2]))
            for _, other, wins in ahead[:limit]]


def lacking_evidence(models: list[Model], ev: Evidence | None = None) -> dict[str, list[str]]:
    """Each model's claimed use cases that no comparable evidence backs: model id → use cases."""
    ev = ev or best_scores(models)
    out: dict[str, list[str]] = {}
    for m in models:
        missing = [u for u in m.strengths if u in USE_CASE_WEIGHTS
                   and not ev.used(m, USE_CASE_WEIGHTS[u])]
        if missing:
            out[m.id] = missing
    return out


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


def speed_said(speed: float, source: str = "estimate") -> str:
    """A row's decode speed in words, with what it rests on: the estimate (perhaps scaled
    by this host's load tests), or this checkpoint's own load test here."""
    if source.startswith("measured"):
        return f"{source}, so about {speed:g} tokens/s for one stream"
    return f"about {speed:g} tokens/s for one stream ({source})"


def _speed(model: Model, est: Estimate, source: str = "estimate") -> tuple[float, str]:
    speed = est.decode_tokens_per_s
    if speed:
        return min(1.0, speed / 150), speed_said(speed, source)
    return min(1.0, 3 / max(model.params_b, 0.5)), "speed not estimated for this hardware"


@dataclass(frozen=True)
class ModelScore:
    """What a model scores for a use case before the hardware is known: the same for each
    of its checkpoints and every request, so worked out once per model."""

    points: float  # 0–1: benchmarks, strengths and a trait that needs no hardware, weighted
    reasons: tuple[str, ...]
    speed_weight: float  # the trait's share when the trait is speed (0 otherwise)


def model_score(model: Model, use_case: str, best: Evidence) -> ModelScore:
    """Kept in the catalog's Evidence: the same for every request."""
    got = best.scores.get((model.id, use_case))
    if got is None:
        got = best.scores[model.id, use_case] = _model_score(model, use_case, best)
    return got


def _model_score(model: Model, use_case: str, best: Evidence) -> ModelScore:
    w = USE_CASE_WEIGHTS[use_case]
    reasons: list[str] = []
    quality, used = _quality(model, use_case, best)
    if quality is None:
        # no comparable figure: the use case's prior, said plainly, never a guess from size
        quality = best.priors[use_case]
        reasons.append(f"no comparable {use_case} evidence; quality taken as the lower quartile "
                       f"({quality:.2f}) of the {best.evidenced[use_case]} models that have it")
    else:
        reasons.append(f"{use_case} quality {quality:.2f} from {used}")
    ahead = ahead_on_evidence(model, use_case, best)
    if ahead:
        reasons.append(f"published {use_case} evidence puts these ahead of it: "
                       + " | ".join(text for _, text in ahead))
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


def score_one(model: Model, ckpt: Checkpoint, est: Estimate, part: ModelScore,
              source: str = "estimate") -> tuple[float, list[str]]:
    """A checkpoint's score: its model's part, the speed its estimate predicts where the
    use case weighs speed, and the published cost of 4-bit weights. `source`: what the
    speed rests on (the estimate, or this host's load tests: advisor.calibrate)."""
    reasons = list(part.reasons)
    points = part.points
    if part.speed_weight:
        speed, text = _speed(model, est, source)
        points += part.speed_weight * speed
        reasons.append(text)
    score = 100 * points
    if ckpt.quant != "none" and ckpt.bits == 4:
        score *= 1 - FOUR_BIT_COST
        reasons.append(f"4-bit weights cost about {100 * FOUR_BIT_COST:.1f} % quality "
                       f"(MATH 80.4 → 78.2 for Phi-4 at Q4_K_M, {FOUR_BIT_SOURCE})")
    elif ckpt.quant != "none":
        reasons.append("8-bit weights: no published quality cost in the catalog; none charged")
    return round(max(0.0, min(100.0, score)), 1), reasons


def _plan_fewest_gpus(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
                      tp_given: bool, first: Estimate,
                      checks: FitChecks, replicas: int | None = None) -> tuple[Estimate, EngineSettings]:
    """On several GPUs, the layout of advisor.placement: with no --tp the fewest GPUs that
    hold the model (tp where NVLinked and the heads divide, pp otherwise), and replicas
    where one holds the model but not the concurrency asked, or as many as `replicas`."""
    if target.engine != "vllm" or not replicas and (
            target.gpus <= 1 or first.fits and first.meets_request):
        return plan(model, ckpt, target, settings, first, checks), settings
    key = (ckpt.repo, ckpt.quant, tp_given, replicas or None, target, settings)
    placed = checks.placed.get(key)
    if placed is None:  # a request seen before finds its layouts made
        placed = checks.placed[key] = place(model, ckpt, target, settings, replicas=replicas,
                                            parallel_given=tp_given, known=first,
                                            fits=lambda s: checks.fits(ckpt, target, s))
    s, layout = placed.settings, placed.layout
    on = on_gpus(target, layout.replicas[0]) if layout.replicas else target
    est = plan(model, ckpt, on, s, first if s == settings and on == target else None,
               checks if on == target else None)
    est = with_replica_speed(with_layout(est, layout, s, placed.refusal), model, ckpt, on, s)
    return est, s


def recommend(models: list[Model], use_case: str, target: Target, settings: EngineSettings,
              tp_given: bool = False, replicas: int | None = None,
              tests: tuple[LoadTest, ...] = ()) -> list[Result]:
    """Every checkpoint of every model, best first; none that fits below one that does not.
    `tp_given`: the request named tp or pp, which are kept; `replicas`: as many as asked;
    `tests`: this host's load tests on the target's engine and hardware (advisor.calibrate)."""
    best = best_scores(models)
    cal = calibration(models, target, settings, tests) if tests else None
    results = []
    for m in models:
        # the fix search of each refused checkpoint tries its siblings: it finds their
        # accounting kept, as a request seen before finds all of it
        checks = FitChecks.kept(m, target, settings)
        bare = [checks.estimate(c, target, settings) for c in m.checkpoints]
        part = model_score(m, use_case, best)
        for c, first in zip(m.checkpoints, bare, strict=True):
            est, s = _plan_fewest_gpus(m, c, target, settings, tp_given, first, checks, replicas)
            source, tpj = "estimate", None
            if cal:  # only where this host ran a load test: no work per row otherwise
                est, source, mine = cal.apply(c, est)
                tpj = mine.test.tokens_per_joule if mine else None
            score, reasons = score_one(m, c, est, part, source)
            if est.layout:  # how it spreads over the GPUs, said
                reasons += est.layout.reasons
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
                reasons.insert(1, f"too slow here: {speed_said(est.decode_tokens_per_s or 0.0, source)}, "
                                  f"under the {SPEED_FLOOR:g} tokens/s floor; ranked below the "
                                  "faster picks that fit")
            elif est.fits and est.decode_tokens_per_s and not part.speed_weight:
                # not scored for this use case, but the floor judged it: say what it saw
                reasons.append(speed_said(est.decode_tokens_per_s, source) + " here")
            article, article_note = on_row(m, c, est)
            results.append(Result(model=m.id, name=m.name, repo=c.repo, quant=c.quant, label=c.label,
                                  params_b=m.params_b, score=score, fits=est.fits,
                                  meets_request=est.meets_request, estimate=est, reasons=reasons,
                                  command=command_line(c, est, s), too_slow=slow,
                                  article_vram_q4=article, article_vram_note=article_note,
                                  tokens_per_joule=tpj))
    if use_case == "edge" and cal and cal.energy:
        by_efficiency(results, cal)
        results.sort(key=edge_key)
    else:
        results.sort(key=order_key)
    return mark_chosen(results)


def _top(r: Result) -> bool:
    """Fits, holds the concurrency asked and decodes at the floor or faster."""
    return r.fits and r.meets_request and not r.too_slow


def edge_key(r: Result) -> tuple[object, ...]:
    """`edge` where this host measured tokens per joule (docs/ranking.md, "Measured on this
    host"): among the picks that fit, hold the concurrency and meet the floor, the measured
    ones first, the most tokens per joule first; the rest in the order of `order_key`."""
    base = order_key(r)
    measured = _top(r) and r.tokens_per_joule is not None
    return (*base[:3], not measured, -(r.tokens_per_joule or 0.0) if measured else 0.0, *base[3:])


def by_efficiency(results: list[Result], cal: Calibration) -> None:
    """Say in each top row's reasons where edge's efficiency rule put it."""
    measured = sum(1 for r in results if _top(r) and r.tokens_per_joule is not None)
    if not measured:  # the measured ones do not fit this request: today's order, unsaid
        return
    for r in results:
        if not _top(r):
            continue
        mine = cal.own.get((r.repo, r.quant))
        if r.tokens_per_joule is not None and mine:
            r.reasons.insert(1, f"edge: ranked by efficiency, {mine.efficiency()}; the picks "
                                "measured here that fit come first, the most tokens per joule first")
        else:
            r.reasons.insert(1, f"edge: no energy measured for it on this host; ranked after the "
                                f"{measured} measured pick{'s' if measured != 1 else ''} that fit, "
                                "by score")


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
