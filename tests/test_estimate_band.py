"""How sure an estimate is: the KV pool's P95 band, the `tight` verdict, and the band's
coverage on published logs no constant was fitted on (issue 9)."""

from __future__ import annotations

import sys
from pathlib import Path

from advisor.advice import estimate_for
from advisor.catalog import load_catalog, load_gpus
from advisor.estimate import kv_pool_spread_gib
from advisor.profile import read_host
from advisor.specs import PlanRequest

CATALOG, GPUS, HOST = load_catalog(), load_gpus(), read_host()


def est(**kw: object):  # type: ignore[no-untyped-def]
    return estimate_for(PlanRequest(**kw), CATALOG, HOST, GPUS)  # type: ignore[arg-type]


def test_a_gpu_estimate_carries_a_band_around_its_p50() -> None:
    e = est(model="llama-3.1-8b", gpu="RTX 4090", max_model_len=8192)
    lo, hi = e.kv_cache_gib_range
    width, _why = kv_pool_spread_gib((0, 32))
    assert lo < e.kv_cache_gib < hi and abs((hi - lo) / 2 - width) < 0.02
    tlo, thi = e.kv_cache_tokens_range
    assert tlo < e.kv_cache_tokens < thi
    assert "P50 ±" in e.provenance["kv_cache_gib_range"]
    assert e.verdict == "fits"


def test_a_context_that_fits_only_at_the_p50_is_tight() -> None:
    longest = est(model="llama-3.1-8b", gpu="RTX 4090").max_model_len
    assert longest
    at_edge = est(model="llama-3.1-8b", gpu="RTX 4090", max_model_len=longest)
    assert at_edge.fits and at_edge.verdict == "tight"
    beyond = est(model="llama-3.1-8b", gpu="RTX 4090", max_model_len=longest * 2)
    assert not beyond.fits and beyond.verdict == "does not fit"


def test_on_0_27_to_0_30_a_first_starts_band_reaches_down_by_the_embedding_copy() -> None:
    # Qwen3-14B-AWQ on an RTX 5090: vLLM 0.28's first start may keep torch.compile's
    # benchmark copy of its 151,936 x 5,120 bf16 embedding table (1.45 GiB); 0.31 does not
    flags = {"model": "qwen3-14b", "quant": "awq", "gpu": "RTX 5090", "max_model_len": 16384}
    old = est(vllm_version="0.28.0", **flags)
    lo, hi = old.kv_cache_gib_range
    width, _why = kv_pool_spread_gib((0, 28))
    assert abs(hi - old.kv_cache_gib - width) < 0.02
    assert abs(old.kv_cache_gib - lo - (151936 * 5120 * 2 / 2**30 - 0.10)) < 0.02
    assert "benchmark copy of the embedding table" in old.provenance["kv_cache_gib_range"]
    new = est(vllm_version="0.31.0", **flags)
    lo, hi = new.kv_cache_gib_range
    assert abs((hi - lo) / 2 - width) < 0.02
    assert "benchmark copy" not in new.provenance["kv_cache_gib_range"]


def test_the_cpu_engines_pool_is_what_it_is_told() -> None:
    e = est(model="qwen2.5-0.5b", gpus=0, ram_gib=16, cpu_kv_gib=2, max_model_len=4096)
    assert e.kv_cache_gib_range == [e.kv_cache_gib, e.kv_cache_gib] and e.verdict == "fits"


def test_the_band_holds_95_percent_of_held_out_logs_each_left_out_of_its_width() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from accuracy import coverage, rows

    line = coverage(rows())[-1]
    n = int(line.split("printed pool: ")[1].split(".")[0])
    held = int(line.split("(left one out): ")[1].split(" of ")[0])
    assert n >= 15 and held / n >= 0.95, line
