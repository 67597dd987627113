"""The estimator against published vLLM start-up logs kept aside from fitting.

Targets (issue: weights within 3 %, KV pool within 0.25 GiB, KV tokens within 10 %, the
fit verdict right every time). The table with every case is bench/accuracy.py's.
"""

from __future__ import annotations

import pytest
from vllm_cases import load_cases

CASES = [c for c in load_cases() if not c.skip]
CHECK = [c for c in CASES if c.split == "check"]


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


@pytest.mark.parametrize("case", [c for c in CHECK if not c.failed and c.measured.kv_cache_gib],
                         ids=lambda c: c.name)
def test_kv_pool_within_a_quarter_gib(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.kv_cache_gib == pytest.approx(case.measured.kv_cache_gib, abs=0.25)


@pytest.mark.parametrize("case", [c for c in CHECK if not c.failed and c.measured.kv_cache_tokens],
                         ids=lambda c: c.name)
def test_kv_tokens_within_10_percent(case) -> None:  # type: ignore[no-untyped-def]
    e = case.predict()
    assert e.kv_cache_tokens == pytest.approx(case.measured.kv_cache_tokens, rel=0.10)
    assert e.max_concurrency == pytest.approx(case.measured.max_concurrency, rel=0.10)
