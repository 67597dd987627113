"""The estimator against published vLLM start-up logs kept aside from fitting.

Targets (issue: weights within 2 %, KV pool within 0.25 GiB, KV tokens within 10 %, the
fit verdict right every time). The table with every case is bench/accuracy.py's.
"""

from __future__ import annotations

import msgspec
import pytest
from vllm_cases import _count, _flag, load_cases

from advisor.estimate import (
    COMPILE_GIB,
    compile_peak_gib,
    engine_default_util,
    estimate,
    graphs_in_reservation,
)
from advisor.history import version_of

CASES = [c for c in load_cases() if not c.skip]
CHECK = [c for c in CASES if c.split == "check"]
# The check logs the estimator misses today (issue 9; bench/accuracy.py and docs/accuracy.md
# show each figure). Strict: a miss that goes away fails until it is taken off this list.
# - vLLM 0.27, RTX 4090, Qwen3 1.7B/4B compiled cold: 0.51-0.61 GiB over. Their peak is
#   modelled within 0.01 GiB (the compile's kernel benchmark, estimate.py compile_peak_gib);
#   what they keep allocated after the profile run besides (consumed 0.56 GiB above a warm
#   start, about the benchmark's copy of the embedding table, most likely its freed block
#   pinned past empty_cache; none for Qwen3-8B or Qwen2.5-0.5B) is not predicted. Qwen3-1.7B's
#   tokens come within 10 %.
# Off the list: the RTX 5090's Qwen3-14B-AWQ (0.28), 0.25 GiB over, at the bound. It was
#   1.73, all of it in what vLLM printed as consumed (weights + non-torch 11.22 GiB against
#   9.52 modelled) until Marlin's repacking was counted (weights.py::repack_held_bytes, 1.41
#   GiB); its tokens come within 5 %, its peak is modelled (1.49 / 1.46). And the RTX 4090's
#   Qwen2.5-0.5B offline start at 8192 batched tokens, 0.81 GiB under until the cold peak was
#   modelled as the benchmark's copy of the embeddings, not per batched token.
# - vLLM 0.30, RTX 5090, Qwen3-30B-A3B-GPTQ-Int4 (mixture of experts): 0.96 GiB under at
#   4,104 tokens and one sequence, 0.39 at 8,192 and 16 (fp8 KV, FlashInfer). Weights within
#   0.9 %. What vLLM consumed beyond the weights grows with the batch (0.44, 0.58, 0.83 GiB at
#   2,048, 4,104 and 8,192 tokens: the MoE workspace's freed blocks pinned, the case 0.31's
#   split limit in profile_run names), while Marlin's repacking is charged 1.03 GiB that these
#   starts do not show held; and at 16 sequences V2's graph estimate (0.53 GiB) runs far over
#   its capture (0.07). None of it is modelled for mixture-of-experts models.
KNOWN_MISSES = {
    *(("kv_pool", name) for name in (
        "rtx4090-qwen3-1p7b-util045-cold-v0271",
        "rtx4090-qwen3-4b-base-util045-coresident-v0271", "rtx4090-qwen3-4b-util045-v0271",
        "rtx5090-qwen3-30b-a3b-gptq-int4-4104-b1-v0300",
        "rtx5090-qwen3-30b-a3b-gptq-int4-2k-fp8kv-seqs16-v0300")),
    *(("kv_tokens", name) for name in (
        "rtx4090-qwen3-4b-base-util045-coresident-v0271",
        "rtx4090-qwen3-4b-util045-v0271")),
}


def _cases(test: str, cases: list) -> list:  # type: ignore[type-arg]
    miss = pytest.mark.xfail(strict=True, reason="a known miss of the estimator (issue 9)")
    return [pytest.param(c, id=c.name, marks=[miss] if (test, c.name) in KNOWN_MISSES else [])
            for c in cases]


def test_enough_published_cases_are_checked() -> None:
    assert len(CHECK) >= 10
    assert any(c.failed for c in CHECK), "at least one refusal among the checked logs"


@pytest.mark.parametrize("case", _cases("verdict", CHECK))
def test_fit_verdict_matches_what_vllm_did(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.fits == (not case.failed), e.reason


@pytest.mark.parametrize("case", [c for c in CHECK if c.measured.weights_gib],
                         ids=lambda c: c.name)
def test_weights_within_2_percent(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.weights_gib == pytest.approx(case.measured.weights_gib, rel=0.02)


@pytest.mark.parametrize("case", _cases("kv_pool", [c for c in CHECK if not c.failed
                                                   and c.measured.kv_cache_gib]))
def test_kv_pool_within_a_quarter_gib(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.kv_cache_gib == pytest.approx(case.measured.kv_cache_gib, abs=0.25)


@pytest.mark.parametrize("case", _cases("kv_tokens", [c for c in CHECK if not c.failed
                                                     and c.measured.kv_cache_tokens]))
def test_kv_tokens_within_10_percent(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.kv_cache_tokens == pytest.approx(case.measured.kv_cache_tokens, rel=0.10)
    if case.measured.max_concurrency is not None:  # a table row gives tokens only
        assert e.max_concurrency == pytest.approx(case.measured.max_concurrency, rel=0.10)


# Model Runner V2's window (0.25-0.28, estimate.py MRV2_NO_GRAPH_ESTIMATE): vLLM's printed
# peak activation is the forward pass or, compiling cold, the compile benchmark's buffers, and
# nothing for the graphs; the estimate's activation term is held to that figure on the
# check logs that print it.
WINDOW = [c for c in CHECK if c.version and (0, 25) <= c.version < (0, 29)
          and c.measured.activation_gib is not None]


@pytest.mark.parametrize("case", _cases("peak", WINDOW))
def test_the_printed_peak_is_modelled_term_by_term(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.activation_gib == pytest.approx(case.measured.activation_gib, abs=0.15)


def test_the_graphs_stay_out_of_the_pool_only_where_vllm_estimates_none() -> None:
    # RTX 3060, Qwen2.5-Coder-1.5B-AWQ at 1,024 compiled: vLLM 0.26 printed the same 8.29 GiB
    # pool at 128, 256 and 320 sequences; 0.32 takes its graph estimate out of the pool,
    # which grows with the capture sizes more sequences bring
    case = next(c for c in CASES if c.name == "rtx3060-qwen25-coder-1p5b-awq-1k-kvfp8-v0260")
    assert case.settings and case.model and case.ckpt and case.target

    def pool(seqs: int, version: tuple[int, int]) -> float:
        s = msgspec.structs.replace(case.settings, max_num_seqs=seqs, vllm_version=version)
        return estimate(case.model, case.ckpt, case.target, s).kv_cache_gib

    assert pool(128, (0, 26)) == pool(256, (0, 26)) == pool(320, (0, 26))
    assert pool(128, (0, 32)) > pool(256, (0, 32)) > pool(320, (0, 32))
    arch = case.model.arch
    assert not graphs_in_reservation(arch, (0, 26))
    assert graphs_in_reservation(msgspec.structs.replace(arch, experts=8, experts_per_token=2),
                                 (0, 26))  # mixture-of-experts models kept the old runner


def test_a_cold_compile_peaks_at_its_benchmarks_copy_of_the_embeddings() -> None:
    # Qwen3-8B on an RTX 4090, 0.27: cold it printed a peak of 1.18 GiB, warm 0.19
    case = next(c for c in CASES if c.name == "rtx4090-qwen3-8b-8k-warm-v0271")
    assert case.settings and case.model and case.ckpt and case.target
    cold = msgspec.structs.replace(case.settings, compile_cache="cold")
    warm = msgspec.structs.replace(case.settings, compile_cache="warm")
    ec = estimate(case.model, case.ckpt, case.target, cold)
    ew = estimate(case.model, case.ckpt, case.target, warm)
    arch = case.model.arch
    bench = compile_peak_gib(arch, 1, 2048, (0, 27), False, "cold")
    # the table's copy (vocab × hidden, bf16) and the fused gather's two outputs
    assert bench == pytest.approx((arch.vocab_size + 2 * 2048) * arch.hidden_size * 2 / 2**30)
    assert ec.activation_gib == pytest.approx(bench, abs=0.01)
    assert ec.activation_gib == pytest.approx(1.18, abs=0.02)
    assert ew.activation_gib == pytest.approx(0.19, abs=0.02)
    # the larger of the two, not their sum: a batch whose forward pass outgrows the copy
    # peaks at the forward pass
    wide = msgspec.structs.replace(cold, max_num_batched_tokens=32768)
    forward = estimate(case.model, case.ckpt, case.target,
                       msgspec.structs.replace(wide, compile_cache="warm")).activation_gib
    assert forward > compile_peak_gib(arch, 1, 32768, (0, 27), False, "cold")
    assert estimate(case.model, case.ckpt, case.target, wide).activation_gib == forward
    # and what a cold compile leaves allocated besides (COMPILE_GIB)
    left = COMPILE_GIB["cold"] - COMPILE_GIB["warm"]
    assert ew.kv_cache_gib - ec.kv_cache_gib == pytest.approx(
        ec.activation_gib - ew.activation_gib + left, abs=0.02)
    eager = msgspec.structs.replace(case.settings, compile_cache="cold", enforce_eager=True)
    assert estimate(case.model, case.ckpt, case.target, eager).activation_gib == \
        pytest.approx(ew.activation_gib, abs=0.01)
    # tensor parallelism splits the table over the ranks
    assert compile_peak_gib(arch, 2, 2048, (0, 27), False, "cold") < bench * 0.6


def test_the_sampler_warmup_after_the_pool_is_what_refuses_more_sequences() -> None:
    # GTX 1660 SUPER, vLLM 0.26: 128 sequences start, 512 run out of memory in the sampler's
    # warm-up once the KV cache is allocated (the pool itself is the same 3.18 GiB)
    case = next(c for c in CASES if c.name == "gtx1660s-qwen25-coder-1p5b-awq-1k-seqs512-FAILED-v0260")
    assert case.settings and case.model and case.ckpt and case.target

    def at(seqs: int, util: float = 0.85, version: tuple[int, int] = (0, 26)):  # type: ignore[no-untyped-def]
        s = msgspec.structs.replace(case.settings, max_num_seqs=seqs, gpu_mem_util=util,
                                    vllm_version=version)
        return estimate(case.model, case.ckpt, case.target, s)

    refused = at(512)
    assert not refused.fits and "sampler warm-up" in refused.reason
    assert at(128).fits
    # what it needs grows with the sequences; a lower utilization leaves it room
    assert at(512, util=0.4).fits
    # before 0.25 the profile ran the full sampler, so the pool already left room for it
    assert "sampler warm-up" not in at(512, version=(0, 19)).reason


def test_a_log_that_states_no_utilization_reads_the_engines_own_default() -> None:
    assert engine_default_util((0, 19)) == engine_default_util((0, 20)) == 0.9
    assert engine_default_util((0, 21)) == 0.92
    assert engine_default_util((0, 27)) == engine_default_util((0, 32)) == 0.92
    # the installed vLLM's own default, read from its config
    from vllm.config.cache import CacheConfig
    assert CacheConfig().gpu_memory_utilization == engine_default_util((0, 32))


def test_a_logs_header_is_read_as_people_write_it() -> None:
    # further published logs are added by hand: a version as `vllm --version` or a docker
    # tag prints it, counts with separators, booleans in any case
    assert [version_of(v) for v in ("0.31.0", "v0.30.1", "0.10.1.1", "0.13.0+cu126", "")] \
        == [(0, 31), (0, 30), (0, 10), (0, 13), None]
    assert [_count(v) for v in ("8192", "8,192", "8_192", "32k", "32K", " ", "", "auto", "-1")] \
        == [8192, 8192, 8192, 32000, 32768, None, None, None, None]
    assert [_flag(v) for v in ("true", "True", "yes", "false", "")] == [True, True, True, False, False]
