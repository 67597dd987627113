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
SECONDS_PER_LAYER = 0.00011  # per decode step per layer: launches and scheduling
PREFILL_MFU = 0.45  # share of dense bf16 throughput prefill reaches
CONTEXT_TOKENS = 1000  # the context a decode-speed figure assumes
PROMPT_TOKENS = 1000  # the prompt a time-to-first-token figure assumes


class Roofline(NamedTuple):
    bandwidth_gbps: float  # per GPU
    bf16_tflops: float | None  # per GPU; None when not sourced


def decode_step_s(weights_bytes_per_gpu: int, kv_bytes_per_token_per_gpu: int, layers: int,
                  hw: Roofline, concurrency: int = 1, active_params: int = 0, tp: int = 1,
                  context: int = CONTEXT_TOKENS) -> float:
    """Seconds for one decode step of `concurrency` sequences."""
    read = weights_bytes_per_gpu + concurrency * context * kv_bytes_per_token_per_gpu
    memory = read / (hw.bandwidth_gbps * 1e9 * BANDWIDTH_EFFICIENCY)
    compute = 0.0
    if hw.bf16_tflops and active_params:
        compute = 2 * active_params / tp * concurrency / (hw.bf16_tflops * 1e12 * PREFILL_MFU)
    return max(memory, compute) + layers * SECONDS_PER_LAYER


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
            active_params: int, tp: int, concurrency: int,
            hw: Roofline) -> tuple[float, float, float | None]:
    """Tokens/s of one stream, tokens/s of each of `concurrency` streams, and time to
    first token: what a plan shows, in one call."""
    one = decode_step_s(weights_bytes_per_gpu, kv_bytes_per_token_per_gpu, layers, hw, 1,
                        active_params, tp)
    alone = decode_tokens_per_s(one)
    each = alone if concurrency == 1 else decode_tokens_per_s(decode_step_s(
        weights_bytes_per_gpu, kv_bytes_per_token_per_gpu, layers, hw, concurrency,
        active_params, tp))
    return alone, each, ttft_s(active_params, tp, hw, one)
