"""The estimator against published vLLM start-up logs kept aside from fitting.

Targets (issue: weights within 3 %, KV pool within 0.25 GiB, KV tokens within 10 %, the
fit verdict right every time). The table with every case is bench/accuracy.py's.
"""

from __future__ import annotations

import pytest
from vllm_cases import load_cases

CASES = [c for c in load_cases() if not c.skip]
CHECK = [c for c in CASES if c.split == "check"]
# Check cases the estimator is known to miss today: vLLM 0.24+ on consumer cards, whose
# overheads (sampler, CUDA graphs by capture size, non-torch) the terms fitted on 0.19
# H100 logs do not model (issue 9, docs/accuracy.md). strict: the day the model gets them
# right, these tests fail until the mark is removed.
KNOWN_MISSES = {
    ("kv_pool", "gtx1650-qwen25-0p5b-v0280"), ("kv_pool", "rtx5090-qwen3-14b-awq-16k-v0280"),
    ("kv_pool", "rtx5090-qwen3-14b-awq-32k-v0280"),
    ("kv_tokens", "gtx1650-qwen25-0p5b-v0280"), ("kv_tokens", "rtx5090-qwen3-14b-awq-16k-v0280"),
    ("kv_tokens", "rtx5090-qwen3-14b-awq-32k-v0280"),
}


def _cases(test: str, cases: list) -> list:  # type: ignore[type-arg]
    miss = pytest.mark.xfail(strict=True, reason="a known miss of the estimator (issue 9)")
    return [pytest.param(c, id=c.name, marks=[miss] if (test, c.name) in KNOWN_MISSES else [])
            for c in cases]


def test_enough_published_cases_are_checked() -> None:
    assert len(CHECK) >= 10
    assert any(c.failed for c in CHECK), "at least one refusal among the checked logs"


@pytest.mark.parametrize("case", CHECK, ids=lambda c: c.name)
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
