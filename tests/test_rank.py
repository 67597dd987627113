"""The ranker, as a user reads its answer."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from advisor.advice import recommend_for
from advisor.catalog import load_catalog, load_gpus
from advisor.profile import read_host
from advisor.rank import USE_CASE_WEIGHTS
from advisor.specs import USE_CASES, PlanRequest

CATALOG, GPUS, HOST = load_catalog(), load_gpus(), read_host()
N_CHECKPOINTS = sum(len(m.checkpoints) for m in CATALOG.models)


def rec(**kw: object):  # type: ignore[no-untyped-def]
    return recommend_for(msgspec.convert(kw, PlanRequest), CATALOG, HOST, GPUS)


@pytest.mark.parametrize("use_case", USE_CASES)
def test_every_checkpoint_is_ranked_and_nothing_that_fits_ranks_below_a_misfit(use_case: str) -> None:
    results = rec(use_case=use_case, gpu="RTX 3060").results
    assert len(results) == N_CHECKPOINTS
    fits = [r.fits for r in results]
    assert fits == sorted(fits, reverse=True), "a result that does not fit ranks above one that does"
    assert any(fits) and not all(fits)
    assert all(0 <= r.score <= 100 for r in results)
    for r in results:
        assert r.reasons and (r.fits or r.reasons[0].startswith("does not fit: "))


def test_on_a_host_without_gpu_edge_recommends_models_of_3b_or_less() -> None:
    results = rec(use_case="edge", gpus=0, ram_gib=16).results
    top = results[:10]
    assert all(r.fits for r in top)
    # the first five rows 3B or less; none of the ten above Phi-4-mini's 3.8B (the fp8 rows
    # that once filled the ten are refused on the CPU engine, which cannot load them)
    assert all(r.params_b <= 3.3 for r in top[:5]), [(r.model, r.params_b) for r in top]
    assert all(r.params_b <= 3.9 for r in top), [(r.model, r.params_b) for r in top]


def test_on_one_24_gib_gpu_bf16_phi4_does_not_fit_and_a_4_bit_phi4_does() -> None:
    results = rec(use_case="math", gpu_gib=24).results
    phi4 = {r.repo: r for r in results if r.model == "phi-4"}
    assert not phi4["microsoft/phi-4"].fits or phi4["microsoft/phi-4"].label != "bfloat16"
    assert phi4["RedHatAI/phi-4-quantized.w4a16"].fits


def test_each_command_is_one_pasteable_line_with_every_flag_of_the_plan() -> None:
    gpu = rec(use_case="chat", gpu="L4", max_model_len=8192).results[0]
    words = shlex.split(gpu.command)
    assert words[:3] == ["vllm", "serve", gpu.repo]
    assert "--max-model-len" in words and words[words.index("--max-model-len") + 1] == "8192"
    assert "--gpu-memory-utilization" in words
    cpu = rec(use_case="edge", gpus=0, ram_gib=16).results[0]
    words = shlex.split(cpu.command)
    assert words[0].startswith("VLLM_CPU_KVCACHE_SPACE=")
    assert words[1:5] == ["python", "-m", "vllm.entrypoints.openai.api_server", "--model"]


def test_a_4_bit_checkpoint_pays_its_published_quality_cost() -> None:
    # math weighs speed by 0.1 only, and on the CPU engine the 4-bit kernel is no faster
    results = rec(use_case="math", gpus=0, ram_gib=64).results
    by = {(r.model, r.label): r for r in results}
    plain, awq = by[("qwen2.5-7b", "bfloat16")], by[("qwen2.5-7b", "awq 4-bit")]
    assert awq.score < plain.score
    assert any("4-bit weights cost" in reason for reason in awq.reasons)


def test_use_case_weightings_are_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "ranking.md").read_text()
    for use_case, w in USE_CASE_WEIGHTS.items():
        assert f"`{use_case}`" in doc
        for bench in w.benchmarks:
            assert bench in doc.lower(), (use_case, bench)


def test_recommend_json_follows_the_contract() -> None:
    out = subprocess.run([sys.executable, "-m", "advisor", "recommend", "--use-case", "code",
                          "--gpu", "RTX 4090", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"request", "host", "results"}
    first = data["results"][0]
    assert {"model", "repo", "quant", "score", "fits", "estimate", "reasons", "command",
            "chosen", "too_slow", "rank"} <= set(first)
    assert len(data["results"]) == N_CHECKPOINTS and first["chosen"] and first["rank"] == 1
    assert {"weights_gib", "kv_cache_tokens", "max_concurrency", "provenance"} <= set(first["estimate"])


# ------------------------------------------------------------- the seed article's guide

def _models_in_order(results) -> list[str]:  # type: ignore[no-untyped-def]
    order: list[str] = []
    for r in results:
        if r.model not in order:
            order.append(r.model)
    return order


SEED_PICKS = [("code", "phi-4"), ("code", "qwen2.5-coder-7b"), ("chat", "gemma-2-9b"),
              ("chat", "llama-3.1-8b"), ("long-context", "mistral-nemo-12b"),
              ("long-context", "llama-3.1-8b"), ("multilingual", "qwen2.5-7b")]
# Phi-4's code evidence: the BigCodeBench leaderboard (17 catalog models), LiveBench's coding
# category in the two releases that rate it (with Gemma 2 9B, Gemma 3 12B and 4B, Llama 3.1 8B
# and Qwen2.5 7B), the Qwen3 report's LiveCodeBench v5 rows (non-thinking, beside Qwen3 and its
# other baselines) and its card's HumanEval beside Qwen2.5-14B. Qwen2.5-Coder-7B has BigCodeBench
# and Aider's code-editing leaderboard besides its report's table.


def _seed_pick_holds(results, model: str) -> None:  # type: ignore[no-untyped-def]
    order = _models_in_order(results)
    place = order.index(model) + 1
    if place <= 10:
        return
    pick = next(r for r in results if r.model == model and r.chosen)
    if pick.too_slow:
        # under the usable floor on this hardware (a CPU host's measured bandwidth): it ranks
        # below every faster fitting pick, and its reasons say so with its speed
        assert any("under the 10 tokens/s floor" in x for x in pick.reasons), pick.reasons
        faster = [r for r in results if r.chosen and r.fits and not r.too_slow]
        assert all(order.index(r.model) < place - 1 for r in faster), (model, place)
        return
    # outside the first ten: its reasons must name models the published evidence puts ahead
    reasons = pick.reasons
    ahead = [r for r in reasons if " evidence puts these ahead of it: " in r]
    assert ahead, f"{model} is #{place} of {len(order)} models with no published reason: {reasons}"
    names = {m.id: m.name for m in CATALOG.models}
    above = order[:place - 1]
    assert any(f"{names[m]}: " in ahead[0] for m in above), (model, place, ahead[0])


@pytest.mark.parametrize(("use_case", "model"), SEED_PICKS)
def test_on_one_rtx_4090_each_seed_pick_is_in_the_first_ten_or_says_who_beats_it(
        use_case: str, model: str) -> None:
    _seed_pick_holds(rec(use_case=use_case, gpu="RTX 4090").results, model)


def test_on_a_host_without_gpu_llama_3_2_3b_is_among_the_first_ten_edge_models() -> None:
    _seed_pick_holds(rec(use_case="edge", gpus=0, ram_gib=16).results, "llama-3.2-3b")


def _kendall_tau(xs: list[float], ys: list[float]) -> float:
    concordant = discordant = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            sign = (xs[i] - xs[j]) * (ys[i] - ys[j])
            concordant += sign > 0
            discordant += sign < 0
    return (concordant - discordant) / max(1, concordant + discordant)


def test_with_no_memory_limit_the_chat_order_agrees_with_human_preference_ratings() -> None:
    # LMArena's ratings are in the catalog as evidence; the rest of the score (other evidence,
    # strengths, speed on an H200) must not overturn their order
    elo = {m.id: s.value for m in CATALOG.models for s in m.scores if s.is_rating}
    assert len(elo) >= 10  # the 2025-12-11 snapshot rates ten catalog models
    order = _models_in_order(rec(use_case="chat", gpu="H200").results)
    rated = [m for m in order if m in elo]
    tau = _kendall_tau([-float(rated.index(m)) for m in elo], list(elo.values()))
    assert tau >= 0.7, (tau, rated)


# ----------------------------------------------------------------- one row per model, speed


@pytest.mark.parametrize(("use_case", "hw"), [("code", {"gpu": "RTX 4090"}),
                                              ("chat", {"gpus": 0, "ram_gib": 16})])
def test_each_model_has_one_chosen_row_its_best_ranked_and_ranks_count_models(
        use_case: str, hw: dict[str, object]) -> None:
    results = rec(use_case=use_case, **hw).results
    assert len(results) == N_CHECKPOINTS  # the JSON keeps every checkpoint
    chosen = [r for r in results if r.chosen]
    assert sorted(r.model for r in chosen) == sorted(m.id for m in CATALOG.models)
    seen: set[str] = set()
    for r in results:  # the chosen row is the model's first in rank order (as the page groups)
        assert r.chosen == (r.model not in seen)
        seen.add(r.model)
    # places count models: 1, 2, 3 … on the chosen rows; every row carries its model's place
    assert [r.rank for r in chosen] == list(range(1, len(CATALOG.models) + 1))
    place = {r.model: r.rank for r in chosen}
    assert all(r.rank == place[r.model] for r in results)
    # a model with several checkpoints shows one of them first, and its others after it
    multi = next(m for m in CATALOG.models if len(m.checkpoints) > 2)
    rows = [r for r in results if r.model == multi.id]
    assert len(rows) == len(multi.checkpoints) and rows[0].chosen and not any(r.chosen for r in rows[1:])


def test_a_checkpoint_under_the_speed_floor_is_flagged_and_below_every_faster_fitting_one() -> None:
    from advisor.rank import SPEED_FLOOR

    results = rec(use_case="chat", gpus=0, ram_gib=16).results
    fitting = [r for r in results if r.fits and r.meets_request]
    assert all(r.estimate.decode_tokens_per_s for r in fitting), "CPU speed left unestimated"
    slow = [r for r in fitting if r.too_slow]
    fast = [r for r in fitting if not r.too_slow]
    assert slow and fast  # on a CPU host both kinds exist, and the floor splits them
    assert all(r.estimate.decode_tokens_per_s < SPEED_FLOOR for r in slow)  # type: ignore[operator]
    assert all(r.estimate.decode_tokens_per_s >= SPEED_FLOOR for r in fast)  # type: ignore[operator]
    assert fitting.index(slow[0]) > fitting.index(fast[-1])
    assert all(any("under the 10 tokens/s floor" in x for x in r.reasons) for r in slow)
    # among the too slow the faster goes first: the nearest to usable
    speeds = [r.estimate.decode_tokens_per_s for r in slow]
    assert speeds == sorted(speeds, reverse=True)  # type: ignore[type-var]
    assert not any(r.too_slow for r in results if not r.fits)


@pytest.mark.parametrize("use_case", USE_CASES)
def test_the_top_cpu_picks_on_this_host_decode_at_a_usable_speed_by_the_estimate(use_case: str) -> None:
    """This host's profile (its measured bandwidth and cores): the first five models either
    decode at 10 tokens/s or more, or say they do not."""
    from advisor.rank import SPEED_FLOOR

    assert HOST.ram.bandwidth_gbps and HOST.ram.bandwidth_per_core_gbps
    top = [r for r in rec(use_case=use_case, gpus=0).results if r.chosen][:5]
    assert all(r.fits for r in top)
    for r in top:
        speed = r.estimate.decode_tokens_per_s
        assert speed is not None, r.model
        assert speed >= SPEED_FLOOR or (r.too_slow and "too slow" in r.reasons[1]), (r.model, speed)
    # the catalog's sub-1B models decode at 10 tokens/s on any host past ~8 GB/s: the
    # first pick is a usable one
    assert not top[0].too_slow, (top[0].model, top[0].estimate.decode_tokens_per_s)


def test_equal_rows_are_ordered_by_the_documented_tie_rule() -> None:
    from advisor.rank import order_key

    results = rec(use_case="edge", gpus=0, ram_gib=16).results
    assert [order_key(r) for r in results] == sorted(order_key(r) for r in results)
    # rows equal in every term before the tie rule: the smaller weights first, then the repo
    tied = [(a, b) for a, b in zip(results, results[1:], strict=False)
            if order_key(a)[:5] == order_key(b)[:5]]
    assert tied  # the catalog has them (a model's AWQ and GPTQ at one score and speed)
    for a, b in tied:
        ka, kb = order_key(a), order_key(b)
        assert (ka[5], ka[6], ka[7], ka[8]) <= (kb[5], kb[6], kb[7], kb[8])
        assert a.estimate.weights_gib <= b.estimate.weights_gib
    doc = (Path(__file__).parent.parent / "docs" / "ranking.md").read_text()
    assert "## Speed" in doc and "tie" in doc.split("## Speed", 1)[1].lower()


def test_the_api_returns_every_checkpoint_each_marked_with_its_models_chosen_one() -> None:
    from litestar.testing import TestClient

    from advisor.config import load_settings
    from advisor.web.app import create_app

    with TestClient(app=create_app(load_settings())) as client:
        r = client.post("/api/recommend", json={"use_case": "chat", "gpus": 0, "ram_gib": 16})
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert len(rows) == N_CHECKPOINTS
    place: dict[str, int] = {}
    for row in rows:
        new = row["model"] not in place
        place.setdefault(row["model"], len(place) + 1)
        assert row["chosen"] == new  # the page takes a model's first row as its chosen one
        assert row["rank"] == place[row["model"]] and isinstance(row["too_slow"], bool)
    assert sum(row["chosen"] for row in rows) == len(place) == len(CATALOG.models)
