"""The speed roofline against published vLLM measurements kept aside from fitting."""

from __future__ import annotations

import statistics

from speed_cases import load_speed_cases

from advisor.speed import Roofline, decode_step_s, decode_tokens_per_s


def test_median_error_on_held_out_measurements_is_within_25_percent() -> None:
    checked = [c for c in load_speed_cases() if not c.skip and c.split == "check"]
    pairs = {(c.raw["model"], c.raw["gpu"]) for c in checked}
    assert len(pairs) >= 10 or len(checked) >= 10
    assert statistics.median(abs(c.error) for c in checked) <= 0.25


def test_decode_is_bound_by_bandwidth_so_halving_the_bytes_nearly_doubles_speed() -> None:
    hw = Roofline(bandwidth_gbps=2039, bf16_tflops=312)
    full = decode_tokens_per_s(decode_step_s(15 * 10**9, 0, 1, hw))
    half = decode_tokens_per_s(decode_step_s(int(7.5 * 10**9), 0, 1, hw))
    assert 1.9 < half / full < 2.0


def test_many_streams_share_one_read_of_the_weights() -> None:
    hw = Roofline(bandwidth_gbps=2039, bf16_tflops=312)
    one = decode_step_s(15 * 10**9, 131072, 32, hw, concurrency=1, active_params=8 * 10**9)
    eight = decode_step_s(15 * 10**9, 131072, 32, hw, concurrency=8, active_params=8 * 10**9)
    assert eight < 2 * one  # eight streams cost far less than eight times one
