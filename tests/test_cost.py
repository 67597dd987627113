"""Local or API in numbers: the cost of a million generated tokens, from what a load test
measured (or the estimate, labelled so), beside published API prices with their sources."""

from __future__ import annotations

import pytest

from advisor.catalog import load_api_prices
from advisor.cost import HOURS_PER_YEAR, Prices, cost_of, throughput_of


def _bench(**kw: object) -> dict[str, object]:
    return {"client": "vllm bench serve (vLLM 0.32)", "num_prompts": 200, "concurrency": 8,
            "decode_tokens_per_s": 1000.0, "output_tokens": 120_000, "duration_s": 120.0,
            "energy_j": 36_000.0, **kw}


def test_a_measured_load_test_sets_the_throughput_and_the_energy_per_token() -> None:
    t = throughput_of({"benches": [_bench(decode_tokens_per_s=10.0), _bench()], "predicted": {}})
    assert t is not None and t.measured and t.tokens_per_s == 1000.0  # the latest test
    assert t.joules_per_token == 0.3 and t.watts == 300.0
    c = cost_of(t, Prices(kwh_price=0.30, card_price=30_000, card_years=3), [])
    # a million tokens: 1000 s of this deployment, 0.3 MJ = 0.0833 kWh
    assert c.hours_per_m == pytest.approx(1e6 / 1000 / 3600, rel=1e-3)
    assert c.energy_kwh_per_m == pytest.approx(0.3e6 / 3.6e6, rel=1e-3)
    assert c.energy_per_m == pytest.approx(0.3e6 / 3.6e6 * 0.30, rel=1e-3)
    per_hour = 30_000 / (3 * HOURS_PER_YEAR)
    assert c.card_per_m == pytest.approx(per_hour * 1e6 / 1000 / 3600, rel=1e-3)
    assert c.total_per_m == pytest.approx(c.energy_per_m + c.card_per_m, rel=1e-3)
    assert c.missing == [] and "busy every hour" in c.card_source


def test_before_a_load_test_the_estimate_is_used_and_labelled_as_such() -> None:
    d = {"benches": [], "predicted": {"decode_tokens_per_s_at_concurrency": 40.0},
         "request": {"concurrency": 4}}
    t = throughput_of(d)
    assert t is not None and not t.measured and t.tokens_per_s == 160.0
    c = cost_of(t, Prices(kwh_price=0.25), [])
    assert c.throughput_source.startswith("estimate") and not c.measured
    # no power figure and no card price: both named as missing, no total invented
    assert c.energy_per_m is None and c.total_per_m is None
    assert c.missing == ["power draw", "card cost"]
    with_watts = cost_of(t, Prices(kwh_price=0.25, watts=200), [])
    assert with_watts.energy_per_m == pytest.approx(200 * (1e6 / 160 / 3600) / 1000 * 0.25, rel=1e-3)


def test_no_throughput_at_all_says_to_run_a_load_test() -> None:
    assert throughput_of({"predicted": {}}) is None
    c = cost_of(None, Prices(), [])
    assert c.tokens_per_s is None and c.missing == ["throughput"]
    assert any(r.startswith("privacy") for r in c.reasons_for_local)


def test_published_api_prices_each_carry_a_source_and_a_date() -> None:
    prices = {p.model: p for p in load_api_prices()}
    assert {"gpt-4o", "gpt-4o-mini"} <= set(prices)
    for p in prices.values():
        assert p.source.startswith("https://") and p.date and p.provider
        assert 0 < p.input_per_m <= p.output_per_m
