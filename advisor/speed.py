"""Decode speed and time to first token from a roofline: estimates, labelled as such.

Decoding one token reads every weight on each GPU once, plus the KV cache of the
context; it is bound by memory bandwidth, plus a fixed cost per layer (kernel launches,
the scheduler) that dominates small models. Prefill is bound by tensor throughput.
Constants are fitted on published vLLM measurements (tests/data/speed_measurements.toml,
`fit` entries) and checked on the rest by bench/speed.py.
"""

from __future__ import annotations

from typing import NamedTuple

BANDWIDTH_EFFICIENCY = 0.80  # share of peak bandwidth decode reaches
# Per decode step per layer: kernel launches and scheduling, by vLLM version. 0.6.3:
# fitted on the Qwen2.5 A100 benchmark (0.5B, where it dominates). Newer engines (V1, whole
# steps captured in CUDA graphs) pay far less: fitted on Qwen3-8B bf16 on an H100 with
# vLLM 0.30 (tests/data/speed_measurements.toml, entries 10 and 11); applied from 0.19,
# the earliest of the newer measurements (between 0.6.3 and 0.19 there are none to say).
SECONDS_PER_LAYER: list[tuple[tuple[int, int], float]] = [
    ((0, 19), 0.00002),
    ((0, 0), 0.00011),
]
NEWEST = (99, 0)  # a version past every entry above
PREFILL_MFU = 0.45  # share of dense bf16 throughput prefill reaches
CONTEXT_TOKENS = 1000  # the context a decode-speed figure assumes
PROMPT_TOKENS = 1000  # the prompt a time-to-first-token figure assumes


class Roofline(NamedTuple):
    bandwidth_gbps: float  # per GPU
    bf16_tflops: float | None  # per GPU; None when not sourced


def per_layer_s(version: tuple[int, int]) -> float:
    for since, seconds in SECONDS_PER_LAYER:
        if version >= since:
            return seconds
    raise ValueError(f"no per-layer cost for vLLM {version}")


def decode_step_s(weights_bytes_per_gpu: int, kv_bytes_per_token_per_gpu: int, layers: int,
                  hw: Roofline, concurrency: int = 1, active_params: int = 0, tp: int = 1,
                  context: int = CONTEXT_TOKENS, version: tuple[int, int] = NEWEST) -> float:
    """Seconds for one decode step of `concurrency` sequences on vLLM `version`."""
    read = weights_bytes_per_gpu + concurrency * context * kv_bytes_per_token_per_gpu
    memory = read / (hw.bandwidth_gbps * 1e9 * BANDWIDTH_EFFICIENCY)
    compute = 0.0
    if hw.bf16_tflops and active_params:
        compute = 2 * active_params / tp * concurrency / (hw.bf16_tflops * 1e12 * PREFILL_MFU)
    return max(memory, compute) + layers * per_layer_s(version)


def decode_tokens_per_s(step_s: float) -> float:
    """Tokens each stream receives per second."""
    return round(1 / step_s, 1)


def ttft_s(active_params: int, tp: int, hw: Roofline, step_s: float,
           prompt_tokens: int = PROMPT_TOKENS) -> float | None:
    if not hw.bf16_tflops:
        return None
    prefill = 2 * active_params / tp * prompt_tokens / (hw.bf16_tflops * 1e12 * PREFILL_MFU)
    return round(prefill + step_s, 4)


def predict(weights_bytes_per_gpu: int, kv_bytes_per_token_per_gpu: int, layers: int,
            active_params: int, tp: int, concurrency: int, hw: Roofline,
            version: tuple[int, int] = NEWEST) -> tuple[float, float, float | None]:
    """Tokens/s of one stream, tokens/s of each of `concurrency` streams, and time to
    first token: what a plan shows, in one call."""
    one = decode_step_s(weights_bytes_per_gpu, kv_bytes_per_token_per_gpu, layers, hw, 1,
                        active_params, tp, version=version)
    alone = decode_tokens_per_s(one)
    each = alone if concurrency == 1 else decode_tokens_per_s(decode_step_s(
        weights_bytes_per_gpu, kv_bytes_per_token_per_gpu, layers, hw, concurrency,
        active_params, tp, version=version))
    return alone, each, ttft_s(active_params, tp, hw, one)
