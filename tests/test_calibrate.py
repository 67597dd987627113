"""This host's load tests in the ranking: a load-tested checkpoint ranks by its measured speed,
the others of the same engine and hardware by the roofline times the host's bounded factor,
and `edge` puts the measured picks with the most tokens per joule first. Load tests are kept
in a real SQLite store as the load test writes them (the client's JSON through result_of;
energy through EnergyMeter at its NVML seam), ranked by the real ranker."""

from __future__ import annotations

import math
import time
from pathlib import Path

import msgspec
import pytest
from test_history import gpu_host
from test_nvml_energy import EnergyNvml

from advisor.advice import recommend_for
from advisor.calibrate import HOST_FACTOR_BOUNDS, calibration, roofline_at
from advisor.catalog import load_catalog, load_gpus
from advisor.estimate import INSTALLED_VLLM
from advisor.history import LoadTest, load_tests
from advisor.loadtest import result_of
from advisor.plan import settings_for, target_for
from advisor.profile import EnergyMeter, read_host
from advisor.rank import SPEED_FLOOR, Result, order_key
from advisor.specs import BenchRequest, Deployment, HostProfile, PlanRequest
from advisor.store import Store

CATALOG, GPUS = load_catalog(), load_gpus()
# one stream at 1,000 tokens of context: the shape a ranking's speed figure assumes, so a
# test run at it is taken as it was measured
ONE = (1, 900, 200)


def _stored(store: Store, dep_id: str, repo: str, quant: str, tokens_per_s: float, *,
            engine: str = "vllm-cpu", gpu_name: str = "", shape: tuple[int, int, int] = ONE,
            joules: float | None = None, at: float | None = None) -> None:
    """A launch and one load test of it, as the supervisor and advisor.loadtest store them."""
    concurrency, inp, out = shape
    n = 20
    raw = {"completed": n, "failed": 0, "duration": n * out / tokens_per_s / concurrency,
           "total_output_tokens": n * out, "output_throughput": tokens_per_s * concurrency,
           "mean_tpot_ms": 1000 / tokens_per_s, "p50_ttft_ms": 40.0}
    energy, source = None, "the CPU engine: no energy counter"
    if joules is not None:  # what EnergyMeter reads from NVML's counter over the test
        nvml = EnergyNvml()
        meter = EnergyMeter([0], nvml=nvml)  # type: ignore[arg-type]
        meter.start()
        nvml.mj += int(joules * 1000)
        energy, source = meter.stop()
    d = Deployment(id=dep_id, model=repo, repo=repo, quant=quant, state="stopped", engine=engine,
                   gpu_name=gpu_name, predicted={"tp": 1, "max_model_len": 4096},
                   request={"concurrency": concurrency}, created_at=time.time())
    store.save(d)
    store.save_bench(dep_id, result_of(raw, req=BenchRequest(num_prompts=n), shape=shape,
                                       kv_peak=0.1, energy_j=energy, energy_source=source,
                                       result_file="", at=at or time.time()))


def _rows(results: list[Result], repo: str) -> dict[str, Result]:
    return {r.quant: r for r in results if r.repo == repo}


@pytest.fixture(name="cpu_host", scope="module")
def fx_cpu_host() -> HostProfile:
    return read_host()  # one reading for the module: the roofline is the same throughout


QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
CPU_CHAT = PlanRequest(use_case="chat", gpus=0, max_model_len=1000, concurrency=1, cpu_kv_gib=2)


def test_a_load_test_on_the_cpu_engine_gives_that_checkpoint_its_measured_speed(
        tmp_path: Path, cpu_host: HostProfile) -> None:
    store = Store(tmp_path / "advisor.db")
    assert load_tests(store.benched(), INSTALLED_VLLM) == ()  # nothing run: nothing to apply
    before = recommend_for(CPU_CHAT, CATALOG, cpu_host, GPUS).results
    same = recommend_for(CPU_CHAT, CATALOG, cpu_host, GPUS, tests=()).results
    assert msgspec.json.encode(before) == msgspec.json.encode(same)
    plain = _rows(before, QWEN)["none"]
    assert plain.estimate.decode_tokens_per_s
    assert any("tokens/s for one stream (estimate)" in x for x in plain.reasons)

    # measured at 0.8 × the roofline, once at the ranking's own shape
    _stored(store, "abcd", QWEN, "none", round(0.8 * plain.estimate.decode_tokens_per_s, 2))
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    assert [(t.repo, t.concurrency, t.context) for t in tests] == [(QWEN, 1, 1000)]
    after = recommend_for(CPU_CHAT, CATALOG, cpu_host, GPUS, tests=tests).results
    mine = _rows(after, QWEN)["none"]
    assert mine.estimate.decode_tokens_per_s == pytest.approx(tests[0].tokens_per_s, abs=0.1)
    # the floor judges the measured figure too
    assert mine.too_slow == (tests[0].tokens_per_s < SPEED_FLOOR)
    said = next(x for x in mine.reasons if x.startswith("measured on this host"))
    assert said.startswith(f"measured on this host: {tests[0].tokens_per_s:g} tokens/s per "
                           f"stream at concurrency 1 (load test of {tests[0].day}, deployment abcd")
    assert "the roofline × 0.80" in said
    assert "measured on this host" in mine.estimate.provenance["decode_tokens_per_s"]

    # the others on this engine: the roofline times the host's factor, said so
    other = next(r for r in after if r.repo != QWEN and r.estimate.decode_tokens_per_s)
    was = next(r for r in before if (r.repo, r.quant) == (other.repo, other.quant))
    assert other.estimate.decode_tokens_per_s == pytest.approx(
        0.8 * (was.estimate.decode_tokens_per_s or 0), abs=0.15)
    assert any("(estimate, × 0.80 from this host's load test of 1 other checkpoint)" in x
               for x in other.reasons)
    # speed is chat's trait: the slower measured figure costs the score
    assert mine.score < plain.score


def test_the_ratio_is_taken_at_the_tests_own_concurrency_and_context(
        tmp_path: Path, cpu_host: HostProfile) -> None:
    """A test at concurrency 4 and a short context is set against the roofline at that shape,
    not at the ranking's: a faithful roofline then calibrates to × 1."""
    req = msgspec.structs.replace(CPU_CHAT, use_case="code")
    model = CATALOG.by_repo(QWEN)
    assert model
    target, settings = target_for(req, cpu_host, GPUS), settings_for(req)
    shape = (4, 100, 60)
    probe = LoadTest(deployment="x", repo=QWEN, quant="none", engine="vllm-cpu", gpu_name="",
                     tp=1, version=INSTALLED_VLLM, concurrency=4, context=130, tokens_per_s=1.0,
                     at=0.0)
    roof = roofline_at(model[0], model[1][0], target, settings, probe)
    assert roof
    store = Store(tmp_path / "advisor.db")
    _stored(store, "c4", QWEN, "none", roof, shape=shape)
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    assert tests[0].context == 130
    cal = calibration(CATALOG.models, target, settings, tests)
    assert cal and cal.own[QWEN, "none"].ratio == pytest.approx(1.0, abs=0.01)
    row = _rows(recommend_for(req, CATALOG, cpu_host, GPUS, tests=tests).results, QWEN)["none"]
    alone = _rows(recommend_for(req, CATALOG, cpu_host, GPUS).results, QWEN)["none"]
    assert row.estimate.decode_tokens_per_s == pytest.approx(alone.estimate.decode_tokens_per_s,
                                                             abs=0.2)


def test_the_host_factor_is_a_geometric_mean_bounded_to_a_factor_of_two(
        tmp_path: Path, cpu_host: HostProfile) -> None:
    base = {(r.repo, r.quant): r.estimate.decode_tokens_per_s or 0.0
            for r in recommend_for(CPU_CHAT, CATALOG, cpu_host, GPUS).results}
    store = Store(tmp_path / "advisor.db")
    qwen15 = "Qwen/Qwen2.5-1.5B-Instruct"
    # one at 0.1 of its roofline (a host under load), one at 0.4
    _stored(store, "d1", QWEN, "none", round(0.1 * base[QWEN, "none"], 2))
    _stored(store, "d2", qwen15, "none", round(0.4 * base[qwen15, "none"], 2))
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    results = recommend_for(CPU_CHAT, CATALOG, cpu_host, GPUS, tests=tests).results
    mean = math.sqrt(0.1 * 0.4)  # 0.2, under the bound
    assert mean < HOST_FACTOR_BOUNDS[0]
    other = next(r for r in results if r.repo not in (QWEN, qwen15) and r.estimate.decode_tokens_per_s)
    assert other.estimate.decode_tokens_per_s == pytest.approx(
        HOST_FACTOR_BOUNDS[0] * base[other.repo, other.quant], abs=0.15)
    assert any("× 0.50 from this host's load tests of 2 other checkpoints, bounded from 0.20" in x
               for x in other.reasons)
    # each tested checkpoint keeps its own measurement, unbounded
    for repo, share in ((QWEN, 0.1), (qwen15, 0.4)):
        got = _rows(results, repo)["none"].estimate.decode_tokens_per_s
        assert got == pytest.approx(share * base[repo, "none"], abs=0.1)


def test_only_tests_of_the_targets_engine_hardware_and_vllm_count(tmp_path: Path) -> None:
    host = gpu_host()
    store = Store(tmp_path / "advisor.db")
    _stored(store, "cpu1", QWEN, "none", 5.0)  # the CPU engine's: says nothing of the H100
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    gpu_req = PlanRequest(use_case="chat", max_model_len=1000)
    plain = recommend_for(gpu_req, CATALOG, host, GPUS).results
    assert msgspec.json.encode(recommend_for(gpu_req, CATALOG, host, GPUS, tests=tests).results) \
        == msgspec.json.encode(plain)

    h100 = host.gpus[0].name
    speed = _rows(plain, QWEN)["none"].estimate.decode_tokens_per_s
    assert speed
    _stored(store, "gpu1", QWEN, "none", round(speed / 2, 1), engine="vllm", gpu_name=h100)
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    assert len(tests) == 2
    got = _rows(recommend_for(gpu_req, CATALOG, host, GPUS, tests=tests).results, QWEN)["none"]
    assert got.estimate.decode_tokens_per_s == pytest.approx(speed / 2, abs=0.1)
    assert any("deployment gpu1" in x for x in got.reasons)
    # a GPU named in the request is another machine's; another vLLM is another engine
    for other in (msgspec.structs.replace(gpu_req, gpu="H100 80GB"),
                  msgspec.structs.replace(gpu_req, vllm_version="0.19")):
        row = _rows(recommend_for(other, CATALOG, host, GPUS, tests=tests).results, QWEN)["none"]
        assert not any("measured on this host" in x or "load test" in x for x in row.reasons)


# ------------------------------------------------------------- edge, by tokens per joule

EDGE = PlanRequest(use_case="edge", max_model_len=4096, concurrency=8)


def test_edge_ranks_the_measured_picks_by_tokens_per_joule_first(tmp_path: Path) -> None:
    host = gpu_host()
    h100 = host.gpus[0].name
    before = recommend_for(EDGE, CATALOG, host, GPUS).results
    chosen = [r for r in before if r.chosen and r.fits and r.meets_request and not r.too_slow]
    first, low, lower = chosen[0], chosen[5], chosen[8]  # two picks the score puts far down
    store = Store(tmp_path / "advisor.db")
    shape = (8, 512, 128)
    n_tokens = 20 * 128
    # the lower one the most efficient: 4 tokens/J, then 2, then the score's first at 1
    _stored(store, "e1", lower.repo, lower.quant, 100.0, engine="vllm", gpu_name=h100,
            shape=shape, joules=n_tokens / 4)
    _stored(store, "e2", low.repo, low.quant, 100.0, engine="vllm", gpu_name=h100,
            shape=shape, joules=n_tokens / 2)
    _stored(store, "e3", first.repo, first.quant, 100.0, engine="vllm", gpu_name=h100,
            shape=shape, joules=n_tokens / 1)
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    assert sorted(t.tokens_per_joule or 0 for t in tests) == [1.0, 2.0, 4.0]
    assert all(t.energy_source == "NVML energy counter" for t in tests)

    after = recommend_for(EDGE, CATALOG, host, GPUS, tests=tests).results
    top = [(r.repo, r.quant) for r in after[:3]]
    assert top == [(lower.repo, lower.quant), (low.repo, low.quant), (first.repo, first.quant)]
    assert [r.tokens_per_joule for r in after[:3]] == [4.0, 2.0, 1.0]
    assert "edge: ranked by efficiency, 4 tokens per joule measured on this host" in after[0].reasons[1]
    assert "NVML energy counter" in after[0].reasons[1]
    # the rest keep their order below, said
    rest = [(r.repo, r.quant) for r in after[3:] if r.chosen]
    kept = [(r.repo, r.quant) for r in before if r.chosen and (r.repo, r.quant) not in top]
    assert rest[:5] == kept[:5]
    fourth = after[3]
    assert fourth.tokens_per_joule is None
    assert "no energy measured for it on this host; ranked after the 3 measured picks" in fourth.reasons[1]
    # another use case is ranked by its own score, the efficiency only shown
    chat = recommend_for(msgspec.structs.replace(EDGE, use_case="chat"), CATALOG, host, GPUS,
                         tests=tests).results
    assert [r.model for r in chat] == [r.model for r in sorted(chat, key=order_key)]
    assert next(r for r in chat if (r.repo, r.quant) == (lower.repo, lower.quant)
                ).tokens_per_joule == 4.0
    assert not any("edge: " in x for r in chat for x in r.reasons)


def test_a_measured_pick_that_does_not_fit_the_request_is_not_lifted(tmp_path: Path) -> None:
    host = gpu_host()
    h100 = host.gpus[0].name
    tight = msgspec.structs.replace(EDGE, gpu_gib=10)  # this H100 with 10 GiB given
    before = recommend_for(tight, CATALOG, host, GPUS).results
    refused = next(r for r in before if not r.fits)
    store = Store(tmp_path / "advisor.db")
    _stored(store, "big", refused.repo, refused.quant, 50.0, engine="vllm", gpu_name=h100,
            shape=(8, 512, 128), joules=100.0)
    tests = load_tests(store.benched(), INSTALLED_VLLM)
    after = recommend_for(tight, CATALOG, host, GPUS, tests=tests).results
    assert [(r.repo, r.quant) for r in after if r.fits][:5] == \
        [(r.repo, r.quant) for r in before if r.fits][:5]
    row = next(r for r in after if (r.repo, r.quant) == (refused.repo, refused.quant))
    assert not row.fits and row.tokens_per_joule == pytest.approx(25.6)
    assert not any("edge: " in x for r in after for x in r.reasons)


def test_the_rules_are_written_where_the_ranking_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "ranking.md").read_text()
    part = doc.split("## Measured on this host", 1)[1]
    lo, hi = HOST_FACTOR_BOUNDS
    assert f"**bounded to {lo:g}–{hi:g}**" in part
    assert "**`edge` by tokens per joule.**" in part and "is not lifted" in part
