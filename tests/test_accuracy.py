"""The estimator against published vLLM start-up logs kept aside from fitting.

Targets (issue: weights within 3 %, KV pool within 0.25 GiB, KV tokens within 10 %, the
fit verdict right every time). The table with every case is bench/accuracy.py's.
"""

from __future__ import annotations

import pytest
from vllm_cases import load_cases

CASES = [c for c in load_cases() if not c.skip]
CHECK = [c for c in CASES if c.split == "check"]
# The check logs the estimator misses today (issue 9; bench/accuracy.py and docs/accuracy.md
# show each figure). Strict: a miss that goes away fails until it is taken off this list.
# - vLLM 0.27, RTX 4090, Qwen3 1.7B/4B compiled cold: 0.66-0.80 GiB over. Their peak is
#   modelled within 0.03 GiB (the compile's autotuning scratch, estimate.py
#   COMPILE_SCRATCH_BYTES); what they keep allocated after the profile run besides (consumed
#   0.56 GiB above a warm start; none for Qwen3-8B or on the 0.26 logs: an allocator segment
#   pinned past empty_cache) is not predicted.
# - GTX 1650 (0.28): the pool within 0.25 GiB, its tokens 13.8 % under.
# - RTX 5090, Qwen3-14B-AWQ (0.28): 1.9 GiB over, unexplained.
# - GTX 1660 SUPER at 512 sequences: vLLM runs out of memory warming up the sampler after
#   the KV cache is allocated, which the estimator does not model.
KNOWN_MISSES = {
    ("verdict", "gtx1660s-qwen25-coder-1p5b-awq-1k-seqs512-FAILED-v0260"),
    *(("kv_pool", name) for name in (
        "rtx4090-qwen3-1p7b-util045-cold-v0271",
        "rtx4090-qwen3-4b-base-util045-coresident-v0271", "rtx4090-qwen3-4b-util045-v0271",
        "rtx5090-qwen3-14b-awq-16k-v0280", "rtx5090-qwen3-14b-awq-32k-v0280")),
    *(("kv_tokens", name) for name in (
        "gtx1650-qwen25-0p5b-v0280", "rtx4090-qwen3-1p7b-util045-cold-v0271",
        "rtx4090-qwen3-4b-base-util045-coresident-v0271",
        "rtx4090-qwen3-4b-util045-v0271", "rtx5090-qwen3-14b-awq-16k-v0280",
        "rtx5090-qwen3-14b-awq-32k-v0280")),
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
def test_weights_within_3_percent(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.weights_gib == pytest.approx(case.measured.weights_gib, rel=0.03)


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
