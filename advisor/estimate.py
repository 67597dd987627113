"""Predict the memory figures vLLM prints at start-up, and whether it will start at all.

Pure functions over the catalog's types; no I/O. The accounting follows vLLM's own code
(vllm/v1/worker/gpu_worker.py::determine_available_memory, vllm/utils/mem_utils.py,
vllm/v1/core/kv_cache_utils.py), read in the version the advisor installs (0.32):

  requested   = ceil(cuda_total × gpu_memory_utilization)          (per GPU)
  available   = requested − weights − activation peak − non-torch
                − CUDA-graph estimate (from 0.21 on; before, graphs sit outside)
  num_blocks  = available // bytes_per_block                       (block 16 GPU, 128 CPU)
  it starts if available > 0 and (available − one block) holds one max_model_len sequence
  tokens      = int(num_blocks / blocks_per_request × max_model_len)
  concurrency = num_blocks / blocks_per_request

The CPU engine sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (whole GiB) instead.
Activation, non-torch and CUDA-graph memory are modelled per architecture and fitted on
published start-up logs (tests/data/vllm_logs; bench/accuracy.py prints the table); where
this host has launched the same checkpoint with the same flags, what its engine logged
refines the pool (Target.history, advisor/history.py).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, NamedTuple

import msgspec

from advisor.history import Measurement, find
from advisor.specs import Architecture, Checkpoint, Layout, Model
from advisor.weights import REPACK_COUNTED_SINCE, load_overhead_bytes, repack_held_bytes

GIB = 2**30
INSTALLED_VLLM = (0, 32)
# From 0.21 on, vLLM profiles CUDA-graph memory and takes it out of the reservation.
CUDA_GRAPHS_IN_RESERVATION_SINCE = (0, 21)
# ...except where Model Runner V2 runs: the default for dense models from 0.25.1, whose
# profile_cudagraph_memory was a placeholder returning 0 (vllm-project/vllm#49224, PR
# #36520), so determine_available_memory took nothing for the graphs and captured them after
# the KV cache, outside the reservation. The 0.26.0 and 0.27.1 logs here (model_runner.py
# lines, not gpu_model_runner.py) agree to 0.01 GiB: pool = requested − consumed − peak
# activation, the graphs printed apart; 0.32's V2 runner estimates for real
# (v1/worker/gpu/model_runner.py:1038). The V2 estimate came with PR #53306 (opened
# 2026-08-21, merged after; reverted and forward-fixed by #53682/#53955 from 2026-08-26),
# after v0.28.0 was cut from main of about 2026-08-17 (vllm-project/vllm#54331), so 0.28 is
# inside: its RTX 5090 log prints a peak of 1.46 GiB, the cold compile's benchmark buffers
# (1.49, compile_peak_gib) with no graph estimate in it, and the GTX 1650 0.28 pool agrees
# within 0.05 GiB read this way (0.24 under, read with the graphs inside). 0.29 on: outside.
MRV2_NO_GRAPH_ESTIMATE = ((0, 25), (0, 29))

# ----------------------------------------------------------------- fitted constants
# Activation peak of the profiling pass. From vLLM 0.19 on it is the larger of the dummy
# forward pass over max_num_batched_tokens (M) and the dummy sampler pass over max_num_seqs
# (S) sequences of fp32 logits with their probabilities, sort keys and indices, plus a
# small base. Fitted on the v0.19 logs in tests/data/vllm_logs/ (planner-*: Llama-3.1-8B
# 1.89 GiB, Gemma-2-2B 3.62 GiB, the rest kept to check it): bench/accuracy.py.
# the base, by version: 0.19 logs 0.153 GiB; from 0.24 the fit split's breakdown lines leave
# nothing for it (bench/fit_terms.py: -0.05 GiB on the A40 0.26 log, so 0)
ACT_BASE_GIB: list[tuple[tuple[int, int], float]] = [((0, 24), 0.0), ((0, 0), 0.153)]
# bytes per (sequence × vocabulary entry) in the sampler's dummy pass, by vLLM version
SAMPLER_BYTES_PER_LOGIT: list[tuple[tuple[int, int], float]] = [
    # 0.24 on the fit split's warm starts peak at no more than the forward pass (Qwen3-8B on
    # an RTX 4090, 0.27: 0.19 GiB in all at 256 sequences): the logits as the model returns
    # them, bf16, are what is left of the sampler's share
    ((0, 24), 2.0),
    ((0, 19), 14.2),  # planner v0.19 logs: (3.62 − 1.89) GiB / (1024 × (256000 − 128256))
    ((0, 0), 38.5),  # llm-d planner's table (v0.11 recipe): Llama-3.1-8B 4.76 GiB at S=1024
]
# dummy forward pass: gate/up output and activation (3 × intermediate / tp) and the
# residual stream with its norm and attention output (4 × hidden), bf16
FWD_INTER, FWD_HIDDEN = 3.0, 4.0
# Non-torch memory during profiling (cuBLAS workspaces; NCCL and custom all-reduce with
# tensor parallelism), (tp 1, tp > 1) by version: planner v0.19 logs 0.24–0.25 and 2.07 GiB;
# the planner's table (v0.11 recipe) 0.13–0.14 and 0.54 GiB.
# From 0.24 the NCCL buffers come before vLLM's first snapshot (gpu_worker.py::init_device),
# and the fit split's 0.26 breakdowns print 0.05–0.08 GiB at tp 1 (bench/fit_terms.py); no fit
# log of 0.24+ runs tp > 1, so that keeps the 0.19 figure. The tp > 1 figure stands for any
# world of more than one GPU per replica (tp × pp): pipeline stages open NCCL communicators
# too; no published log of pp alone was found to fit it on.
# 0.27 prints weights and non-torch as one consumed figure; the fit split's one start of 0.27
# that compiled nothing new (Qwen3-8B, warm, RTX 4090) consumed 0.27 GiB beyond its weights:
# not the compile's, so charged cold or warm (bench/fit_terms.py). Later versions print no
# breakdown here: they keep the 0.26 figure.
NON_TORCH_GIB: list[tuple[tuple[int, int], tuple[float, float]]] = [
    ((0, 28), (0.065, 2.07)),
    ((0, 27), (0.27, 2.07)),
    ((0, 24), (0.065, 2.07)),
    ((0, 19), (0.25, 2.07)),
    ((0, 0), (0.13, 0.54)),
]
# From 0.24 vLLM measures what its start-up consumed by free memory (mem_utils.py::
# memory_profiling, total_consumed), and its transient peak as torch's high-water mark over
# the whole profile_run (0.32: utils/mem_utils.py:284-321). A cold torch.compile runs inside
# that window, before the profiling forward pass: vLLM turns on Inductor's combo kernels with
# benchmark_combo_kernel on CUDA (config/compilation.py, 0.27-0.32), and Inductor benchmarks
# each candidate kernel on inputs it allocates afresh, a rand_strided device tensor for every
# buffer argument, graph inputs included (torch 2.13 _inductor/codegen/triton.py::
# codegen_kernel_benchmark, get_args). The largest kernel input of the decoder is the
# embedding table, read by the gather that Inductor fuses with the first layer's norm, whose
# two outputs (the residual and the normed rows) are max_num_batched_tokens × hidden each. A
# warm cache finds the timings on disk (.kernel_perf) and benchmarks nothing. So the cold peak
# is the larger of the forward pass and that benchmark's buffers (`compile_peak_gib`): not
# fitted. On the published cold starts it agrees within 0.03 GiB (the cold peak vLLM printed
# against the copy and outputs): Qwen3-1.7B 0.59 / 0.60, Qwen3-4B 0.74 / 0.74, Qwen3-8B
# 1.18 / 1.19 (RTX 4090, 0.27); Llama-3.1-8B-W8A8 1.01 / 1.01 (A40, 0.26); Qwen2.5-1.5B-AWQ
# 0.45 / 0.45 (RTX 3060, 0.26); Qwen2.5-0.5B at 8192 batched tokens 0.31 against a forward
# pass of 0.28, which its copy (0.28) does not exceed. A per-(batched token × hidden)
# scratch of 118 B, fitted here before, put that last start 0.77 GiB over. Charged with the
# activation, as vLLM prints it; 0 with --enforce-eager.
COMPILE_SINCE = (0, 24)
# What a compile leaves allocated after the profile run besides, by cache state: the median
# of the fit split's residuals once the benchmark's peak and 0.27's non-torch are charged, one
# per configuration (bench/fit_terms.py): cold 0.10 (Qwen3-1.7B on 0.27 +0.62, Qwen2.5-1.5B
# GPTQ on a T4, 0.28, +0.10 once Marlin's repacking is counted (weights.py::
# repack_held_bytes) and its fp16 +0.12, the 0.26 logs +0.04 and -0.02), warm 0. What the
# +0.62 start keeps is most likely the benchmark's freed copy of the embedding table: a later
# allocation that outlives the profile run carved out of its block pins the whole segment
# past empty_cache, and vLLM counts it as consumed (the case 0.31 guards against by running
# profile_run under max_split_size_mb=20, v1/worker/gpu_worker.py:683-690). Whether a start
# gets pinned so is not a term a checkpoint predicts (Qwen3-1.7B and -4B did on 0.27, Qwen3-8B
# and Qwen2.5-0.5B did not); the band carries it.
COMPILE_GIB = {"cold": 0.10, "warm": 0.0}
# The benchmark's peak and COMPILE_GIB were checked on Model Runner V2's 0.26-0.28 logs,
# where the printed peak holds no graph estimate to confound them, and are charged on every
# compiled version from 0.24: the mechanism is the same code outside that window (0.32:
# utils/mem_utils.py::memory_profiling resets the high-water mark once, on entry, and
# profile_run compiles inside it; nothing resets it after the compile). The A100 0.31 start
# of issue 9 prints a peak of 1.44 GiB: its 0.23 graph estimate and the 1.01 of its compile
# benchmark's buffers leave 0.20, and the two 0.29/0.30 starts of the RTX 5060 Ti leave 0.35
# cold and 0.38 warm beyond their forward pass or benchmark and printed graphs: a term of
# Model Runner V2's 0.29+ estimate not modelled (its graph term here runs over by about as
# much: the pools are 0.09 and 0.10 under). A flat cold non-torch term of 0.39 GiB stood here
# before (the median of six fit logs, -0.10 to +0.76): it put that start's pool 0.41 GiB over.
COMPILE_WARM_S = 5.0
# What the CUDA context takes before vLLM's first snapshot: free memory as NVML reads it
# must exceed the reservation by this much (planner v0.19 logs: cuda_memory=0.51GiB).
CUDA_CONTEXT_GIB = 0.51
# vLLM's own gpu_memory_utilization when a start does not pass one, by version: what a
# published log means when it states none. The advisor's commands always pass the flag, so
# this reads logs only. 0.92 from 0.21: vllm-project/vllm PR #38284 ("Enable CUDAGraph memory
# profiling by default", commit 96a85c5, merged 2026-04-21: "slated for default enablement in
# v0.21 ... correspondingly increases the default --gpu-memory-utilization to 0.92"; vLLM's
# own warning reads "default since v0.21.0", as CUDA_GRAPHS_IN_RESERVATION_SINCE). Agreeing:
# 0.32's config/cache.py (Field(default=0.92)), 0.27.1's unasked starts printing 0.92, 0.26.0
# listing an explicit 0.9 among its "non-default args"; 0.19.1 unasked printed 0.9000.
ENGINE_DEFAULT_UTIL: list[tuple[tuple[int, int], float]] = [((0, 21), 0.92), ((0, 0), 0.9)]


def engine_default_util(version: tuple[int, int]) -> float:
    """The gpu_memory_utilization vLLM of this version uses when none is passed."""
    return next(u for since, u in ENGINE_DEFAULT_UTIL if version >= since)


# CUDA graphs (cuda_graph_gib): MiB per (layer × graph captured), the median of the fit
# split's printed estimates at tp 1 (bench/fit_terms.py: Gemma-2-2B 0.205 and Llama-3.1-8B
# 0.269 on the v0.19 H100 logs; what the 0.26-0.27 fit logs' peak activation implies,
# 0.135-0.298, agrees); at tp > 1 each graph also holds the all-reduce's nodes: the tp-2
# Llama log's estimate is 2.01 × its tp-1 one.
GRAPH_MIB_PER_LAYER = 0.237
GRAPH_TP_FACTOR = 2.0
# How far the modelled GPU KV pool lands from what vLLM printed, as the P95 half-width of the
# band every estimate carries, by vLLM version: the largest |error| on the check split of
# tests/data/vllm_logs (the logs no constant was fitted on), rounded up to 0.05 GiB.
# bench/accuracy.py prints the errors and the band's coverage, each case left out of the
# width it is checked against. The CPU engine's pool is the size it is told: no band.
KV_POOL_SPREAD_GIB: list[tuple[tuple[int, int], float, str]] = [
    ((0, 24), 1.0, "25 check logs of vLLM 0.26 to 0.31 on cards of 5.6 to 79 GiB; the RTX 5090 "
                   "Qwen3-30B-A3B-GPTQ start of 0.30 at 4,104 tokens sets it (0.96 GiB under: "
                   "its mixture-of-experts terms are not modelled); the most over is 0.61, the "
                   "RTX 4090 Qwen3-4B cold starts of 0.27 (what a cold compile may leave pinned, "
                   "see COMPILE_GIB)"),
    ((0, 0), 0.2, "14 check logs of vLLM 0.8 to 0.19"),
]


@lru_cache(maxsize=64)
def kv_pool_spread_gib(version: tuple[int, int]) -> tuple[float, str]:
    return next((w, why) for since, w, why in KV_POOL_SPREAD_GIB if version >= since)


# What vLLM's CPU engine (0.32) loads, from its kernel tables (model_executor/kernels/linear):
# weight-only AWQ, GPTQ and compressed-tensors W4A16 through CPUWNA16LinearKernel, which
# takes 4-bit weights only (uint4, uint4b8: mixed_precision/cpu.py), so no 8-bit GPTQ; INT8
# W8A8 through CPUInt8ScaledMMLinearKernel. fp8 quantized at load dies on the CPU build
# ("_C::static_scaled_fp8_quant() expected at most 0 argument(s)"); published FP8 checkpoints
# have CPU kernels in that table but none was launched here, so they are refused as well.
# Nor does it quantize at load, or read bitsandbytes or GGUF.
CPU_QUANTS = frozenset({"none", "awq", "gptq"})


def cpu_engine_refuses(ckpt: Checkpoint) -> str:
    """Why vLLM's CPU engine cannot load this checkpoint ("" when it can)."""
    if ckpt.at_load:
        return (f"vLLM's CPU engine does not quantize at load ({ckpt.quant}); use a published "
                "4-bit AWQ or GPTQ, an INT8 W8A8, or the plain checkpoint")
    if ckpt.quant == "compressed-tensors":
        fp8 = fp8_weights(ckpt)
        if ckpt.bits == 4 or (ckpt.bits == 8 and not fp8):
            return ""
        return ("vLLM's CPU engine reads compressed-tensors as 4-bit W4A16 or INT8 W8A8; "
                f"this one is {'FP8' if fp8 else f'{ckpt.bits}-bit'}")
    if ckpt.quant == "gguf":
        return ("vLLM's CPU engine cannot load GGUF: its loader moved to the vllm-gguf-plugin "
                "package in vLLM 0.24, with CUDA kernels only" + (f"; {ckpt.note}" if ckpt.note else ""))
    if ckpt.quant == "bitsandbytes":
        return ("vLLM's CPU engine cannot load bitsandbytes 4-bit: its NF4 kernels are CUDA's, "
                "in the vllm-bnb-plugin package since vLLM 0.28; use a published 4-bit AWQ or "
                "GPTQ checkpoint, or the plain one")
    if ckpt.quant not in CPU_QUANTS:
        return f"vLLM's CPU engine cannot load {ckpt.quant} checkpoints"
    if ckpt.quant != "none" and ckpt.bits != 4:
        return (f"vLLM's CPU kernels for {ckpt.quant.upper()} take 4-bit weights only "
                f"(CPUWNA16); this checkpoint is {ckpt.bits}-bit")
    return ""


def fp8_weights(ckpt: Checkpoint) -> bool:
    """Whether the checkpoint's weights are FP8. The catalog does not say which 8-bit
    compressed-tensors scheme a repo is; RedHatAI names its FP8 repos and notes so
    (…-FP8-dynamic, "FP8 weights"), and its INT8 ones …-quantized.w8a8."""
    if ckpt.quant == "fp8":
        return True
    return ckpt.quant == "compressed-tensors" and ckpt.bits == 8 and (
        "fp8" in ckpt.repo.lower() or "fp8" in ckpt.note.lower())


# The oldest GPU vLLM's CUDA build runs on, by the release from which it holds: its
# installation guide (docs/getting_started/installation/gpu.cuda.inc.md) says compute
# capability 7.0 (V100) up to v0.14.0's docs and 7.5 (T4, RTX 20xx) in v0.21.0's and since;
# the releases between were not read, and are given the older floor.
GPU_FLOOR = (((0, 21), (7, 5)), ((0, 0), (7, 0)))
# The compute capability each quantization needs, from get_min_capability in vLLM 0.32's
# model_executor/layers/quantization (auto_awq.py 75, fp8.py 75 and online/base.py 75 for fp8
# at load, compressed_tensors schemes W4A16, INT8 W8A8 and W8A16-FP8 75, auto_gptq.py 60):
# vLLM refuses the checkpoint at start below it (config/vllm.py::_get_quantization_config).
QUANT_FLOOR = {"awq": (7, 5), "fp8": (7, 5), "compressed-tensors": (7, 5), "gptq": (6, 0)}
# FP8 weights run natively from compute capability 8.9 (Ada, Hopper); below it vLLM 0.32
# serves them weight-only through Marlin (kernels/linear/scaled_mm/marlin.py,
# MarlinFP8ScaledMMLinearKernel), which repacks each tensor as it does 4-bit ones.
FP8_NATIVE_SINCE = (8, 9)


def gpu_floor_refusal(target: Target, version: tuple[int, int]) -> str:
    """Why vLLM's CUDA build will not run on the target's GPU ("" when it will, or unknown)."""
    cc = target.compute_capability
    floor = next(f for since, f in GPU_FLOOR if version >= since)
    if cc is None or cc >= floor:
        return ""
    return (f"vLLM {version[0]}.{version[1]} runs on GPUs of compute capability "
            f"{floor[0]}.{floor[1]} or newer; {target.gpu_name or 'this GPU'} is "
            f"{cc[0]}.{cc[1]} (plan for the CPU engine instead: gpus 0)")


def quant_refusal(ckpt: Checkpoint, target: Target) -> str:
    """Why vLLM refuses this checkpoint's quantization on the target's GPU ("" when not)."""
    cc, floor = target.compute_capability, QUANT_FLOOR.get(ckpt.quant)
    if cc is None or floor is None or cc >= floor:
        return ""
    return (f"vLLM's {ckpt.quant} kernels need compute capability {floor[0]}.{floor[1]}; "
            f"{target.gpu_name or 'this GPU'} is {cc[0]}.{cc[1]}")


def marlin_repacks(ckpt: Checkpoint, target: Target) -> bool:
    """Whether vLLM loads these weights through Marlin, which repacks them (weights.py::
    repack_held_bytes): 4-bit AWQ, GPTQ and W4A16 from compute capability 7.5, and FP8
    weights from 7.5 up to the native FP8 of 8.9. An unknown GPU is taken as recent."""
    cc = target.compute_capability
    if ckpt.bits == 4 and ckpt.quant in ("awq", "gptq", "compressed-tensors"):
        return cc is None or cc >= (7, 5)
    if fp8_weights(ckpt) and not ckpt.at_load:
        # fp8 at load quantizes layer by layer as it loads (quantization/online/fp8.py):
        # what that leaves held was not read, so it is not charged
        return cc is not None and (7, 5) <= cc < FP8_NATIVE_SINCE
    return False


# The CPU engine: what the Python process holds beside weights and KV (torch, vLLM, the
# API server), measured on vllm-cpu 0.32 with the tiny test models.
CPU_PROCESS_OVERHEAD_GIB = 2.5


class Target(msgspec.Struct, kw_only=True, frozen=True, cache_hash=True):
    """The hardware a plan is for: a GPU model and count, or the CPU engine with its RAM."""

    engine: Literal["vllm", "vllm-cpu"]
    gpu_name: str = ""
    gpu_gib: float = 0.0  # CUDA's total per GPU
    gpus: int = 0
    free_gib: float | None = None  # free per GPU now (a launch checks against it)
    # free GiB now on each GPU of this host, by NVML index: a plan takes the tp × pp GPUs with
    # the most free (free_gib is then ignored); () where the plan is not for this host now
    free_by_gpu: tuple[tuple[int, float], ...] = ()
    # what free_by_gpu is: what is free now (a launch), or the card less the memory no
    # listed process holds (a recommendation or an estimate on this host's own GPUs)
    free_basis: Literal["now", "card less unowned"] = "now"
    # GiB held by no listed process on each GPU, by NVML index, where past the profile's
    # threshold (advisor.hardware.UNOWNED_NOTE_GIB); the estimate's notes say it
    unowned_by_gpu: tuple[tuple[int, float], ...] = ()
    nvlink: bool | None = None  # the GPUs are NVLinked (None: unknown, planned as not)
    bandwidth_gbps: float | None = None  # memory bandwidth per GPU, GB/s (CPU: all cores)
    cpu_per_core_gbps: float | None = None  # the CPU engine: one core's memory bandwidth
    cpu_cores: int = 0  # the CPU engine: physical cores
    cpu_core_rate_gops: float | None = None  # the CPU engine: the profile's core probe
    bf16_tflops: float | None = None  # dense bf16 tensor throughput per GPU
    # (major, minor): which kernels vLLM picks, and whether its build runs here; None: unknown
    compute_capability: tuple[int, int] | None = None
    ram_gib: float = 0.0  # the CPU engine's budget
    cpu_kv_gib: int | None = None  # VLLM_CPU_KVCACHE_SPACE; None: the plan picks one
    history: tuple[Measurement, ...] = ()  # this host's launches on this GPU (advisor.history)


class EngineSettings(msgspec.Struct, kw_only=True, frozen=True, cache_hash=True):
    """The engine flags a plan sets (vLLM's names in snake_case)."""

    gpu_mem_util: float = 0.9
    max_model_len: int | None = None  # None: the longest that fits, capped at native
    tp: int = 1
    pp: int = 1  # pipeline stages: each GPU holds about 1/pp of the layers
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    concurrency: int = 1
    enforce_eager: bool = False
    # whether torch.compile finds its cache from an earlier start with the same settings
    # (vLLM's log: "torch.compile took 0.3 s" against tens of seconds); a first start is cold
    compile_cache: Literal["cold", "warm"] = "cold"
    vllm_version: tuple[int, int] = INSTALLED_VLLM
    # vLLM's exact KV pool per GPU: no memory profile, no utilization (gpu_worker.py)
    kv_cache_memory_bytes: int | None = None
    # every modality limited to 0 (--limit-mm-per-prompt): vLLM skips the multimodal tower
    # and its encoder-cache profiling; the tower term reads this
    text_only: bool = False


class Estimate(msgspec.Struct, kw_only=True):
    """What vLLM will print at start-up, predicted; field names are the JSON contract's."""

    model: str
    repo: str
    quant: str
    dtype: str
    engine: str
    tp: int
    gpu_mem_util: float
    reservation_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: int
    kv_cache_tokens: int
    block_size: int
    max_num_batched_tokens: int
    max_model_len: int | None
    max_concurrency: float
    fits: bool
    meets_request: bool
    reason: str
    decode_tokens_per_s: float | None = None
    decode_tokens_per_s_at_concurrency: float | None = None
    ttft_s: float | None = None
    cpu_kv_space_gib: int | None = None
    # GiB taken off the modelled KV pool because a launch on this host measured it
    host_correction_gib: float | None = None
    max_num_seqs: int | None = None  # as vLLM resolves it (the flag, or its default)
    # what vLLM's log suggests for --kv-cache-memory-bytes after a profiled start on a GPU
    # ("…to fit into requested memory"); None on the CPU engine, with the flag given, or
    # when it would not start
    suggested_kv_cache_memory_bytes: int | None = None
    # how sure: the KV pool and its tokens at the P95 band's ends ([low, high]; kv_cache_gib
    # and kv_cache_tokens are the P50), and the verdict it gives: fits, tight (fits at P50,
    # not at the band's low end), does not fit
    kv_cache_gib_range: list[float] = []
    kv_cache_tokens_range: list[int] = []
    verdict: str = ""
    provenance: dict[str, str] = {}
    pp: int = 1
    # where it runs on this host's GPUs (advisor.layout): the GPUs of each replica and what
    # is left on each; None where the plan is not placed on GPUs
    layout: Layout | None = None
    # in words, what the plan took into account that no figure shows (memory on the GPU
    # that no listed process holds)
    notes: list[str] = []


# ----------------------------------------------------------------- pieces


def kv_dtype_bytes(ckpt: Checkpoint, kv_cache_dtype: str) -> int:
    if kv_cache_dtype == "fp8":
        return 1
    return 4 if ckpt.dtype == "float32" else 2


def kv_heads_per_gpu(arch: Architecture, tp: int) -> int:
    """vLLM splits KV heads across ranks, replicating them when tp exceeds their count."""
    return max(1, arch.kv_heads // tp)


def kv_bytes_per_token(arch: Architecture, dtype_bytes: int, tp: int = 1) -> int:
    """K and V of every layer for one token, on one GPU."""
    return arch.layers * 2 * kv_heads_per_gpu(arch, tp) * arch.head_dim * dtype_bytes


class KvLayout(NamedTuple):  # a tuple: the ranker builds dozens per request
    """vLLM's grouping of layers into KV-cache groups that share one pool of blocks."""

    block_size: int
    bytes_per_block: int  # one block id across every layer of one group
    full_groups: int
    sliding_groups: int
    window: int
    in_flight_tokens: int  # max_num_batched_tokens: sliding layers keep window − 1 + this

    def blocks_per_request(self, max_len: int) -> int:
        full = math.ceil(max_len / self.block_size)
        held = min(self.window - 1 + self.in_flight_tokens, max_len)
        sliding = math.ceil(held / self.block_size) + 1
        return self.full_groups * full + self.sliding_groups * sliding


@lru_cache(maxsize=4096)
def kv_layout(arch: Architecture, dtype_bytes: int, tp: int, block_size: int,
              max_num_batched_tokens: int) -> KvLayout:
    layer_page = block_size * 2 * kv_heads_per_gpu(arch, tp) * arch.head_dim * dtype_bytes
    n = arch.layers
    if arch.sliding_window and arch.sliding_window_pattern != 1:
        # every Nth layer attends globally, the others slide (Gemma 2: N=2, Gemma 3: N=6)
        pattern = arch.sliding_window_pattern or 2
        full = n // pattern
        sliding = n - full
        buckets = [b for b in (full, sliding) if b]
        group = min(buckets)
        if max(buckets) < group * 1.5:
            group = max(buckets)
        return KvLayout(block_size=block_size, bytes_per_block=group * layer_page,
                        full_groups=math.ceil(full / group),
                        sliding_groups=math.ceil(sliding / group),
                        window=arch.sliding_window, in_flight_tokens=max_num_batched_tokens)
    if arch.sliding_window and arch.sliding_window_pattern == 1:
        return KvLayout(block_size=block_size, bytes_per_block=n * layer_page, full_groups=0,
                        sliding_groups=1, window=arch.sliding_window,
                        in_flight_tokens=max_num_batched_tokens)
    return KvLayout(block_size=block_size, bytes_per_block=n * layer_page, full_groups=1,
                    sliding_groups=0, window=0, in_flight_tokens=max_num_batched_tokens)


def mm_items_profiled(arch: Architecture, max_num_batched_tokens: int, max_num_seqs: int,
                      max_model_len: int) -> int:
    """How many items (images) vLLM's profile run pushes through the multimodal tower at
    once: the encoder budget, max(max_num_batched_tokens, one item's tokens), over one item's
    tokens, at most what max_num_seqs prompts can hold (multimodal/encoder_budget.py,
    v1/core/encoder_cache_manager.py::compute_mm_encoder_budget); 0 with no tower."""
    per_item = arch.mm_tokens_per_item
    if not (per_item and arch.mm_encoder_positions):
        return 0
    budget = max(max_num_batched_tokens, per_item)
    per_prompt = max(1, max_model_len // per_item)
    return max(1, min(budget // per_item, max_num_seqs * per_prompt))


@lru_cache(maxsize=4096)
def activation_gib(arch: Architecture, tp: int, max_num_batched_tokens: int, max_num_seqs: int,
                   version: tuple[int, int] = INSTALLED_VLLM, mm_items: int = 0) -> float:
    """The transient peak of vLLM's profile run: its version's base and `profile_peak_gib`."""
    base = next(b for since, b in ACT_BASE_GIB if version >= since)
    return base + profile_peak_gib(arch, tp, max_num_batched_tokens, max_num_seqs, version,
                                   mm_items)


def profile_peak_gib(arch: Architecture, tp: int, max_num_batched_tokens: int,
                     max_num_seqs: int, version: tuple[int, int], mm_items: int = 0) -> float:
    """The largest of the dummy forward pass over max_num_batched_tokens, the dummy sampler
    pass over max_num_seqs sequences of logits, and, for a multimodal checkpoint served with
    its tower, the tower's pass over `mm_items` items (the same per-token shape: its MLP's two
    projections and the residual stream), whose outputs the encoder cache keeps through the
    decoder's pass."""
    inter = arch.expert_intermediate_size * arch.experts_per_token if arch.experts else \
        arch.intermediate_size
    forward = max_num_batched_tokens * (FWD_INTER * inter / tp + FWD_HIDDEN * arch.hidden_size) * 2
    per_logit = next(b for since, b in SAMPLER_BYTES_PER_LOGIT if version >= since)
    sampler = max_num_seqs * arch.vocab_size * per_logit  # logits are gathered whole on each rank
    tower = cache = 0.0
    if mm_items:
        tower = mm_items * arch.mm_encoder_positions * (
            2 * arch.mm_encoder_intermediate + FWD_HIDDEN * arch.mm_encoder_hidden) * 2
        cache = mm_items * arch.mm_tokens_per_item * arch.hidden_size * 2
    return max(forward + cache, sampler + cache, tower) / GIB


def non_torch_gib(tp: int, version: tuple[int, int] = INSTALLED_VLLM,
                  enforce_eager: bool = False, compile_cache: str = "cold") -> float:
    """What the libraries hold outside torch, and, compiled from 0.24, what a compile of that
    cache state leaves (COMPILE_GIB)."""
    one, many = next(v for since, v in NON_TORCH_GIB if version >= since)
    compiled = 0.0 if enforce_eager or version < COMPILE_SINCE else COMPILE_GIB[compile_cache]
    return (one if tp == 1 else many) + compiled


def compile_peak_gib(arch: Architecture, tp: int, max_num_batched_tokens: int,
                     version: tuple[int, int], enforce_eager: bool, compile_cache: str) -> float:
    """What a cold torch.compile's kernel benchmark holds at once (see COMPILE_SINCE): a copy
    of this rank's share of the embedding table and the gather's two outputs, in the model's
    dtype; 0 warm, eager, or before vLLM compiled."""
    if enforce_eager or compile_cache != "cold" or version < COMPILE_SINCE:
        return 0.0
    outputs = 2 * max_num_batched_tokens * arch.hidden_size * _plain_bytes(arch)
    return (_table_bytes(arch, tp) + outputs) / GIB


def _plain_bytes(arch: Architecture) -> int:
    """Bytes per element of what a checkpoint keeps unquantized (embeddings, a multimodal
    tower) and of the activations."""
    return 4 if arch.torch_dtype == "float32" else 2


def _table_bytes(arch: Architecture, tp: int) -> int:
    """One rank's share of the embedding table (vLLM splits the vocabulary over tp)."""
    return math.ceil(arch.vocab_size / tp) * arch.hidden_size * _plain_bytes(arch)


# The versions whose first start may keep that benchmark's copy of the embedding table
# (COMPILE_GIB): from 0.27, which reads what the start consumed from free memory, to 0.31,
# which runs profile_run under max_split_size_mb=20 so that no block over 20 MiB is split.
PINNED_COPY_VERSIONS = ((0, 27), (0, 31))


def pinnable_copy_gib(arch: Architecture, tp: int, version: tuple[int, int],
                      enforce_eager: bool, compile_cache: str) -> float:
    """What a cold start of PINNED_COPY_VERSIONS may keep beyond COMPILE_GIB: the benchmark's
    copy of this rank's share of the embedding table, when it is pinned (0 elsewhere). Not a
    term of the P50, as it is not pinned every time; the band's low end reaches it."""
    lo, hi = PINNED_COPY_VERSIONS
    if not lo <= version < hi or enforce_eager or compile_cache != "cold":
        return 0.0
    return max(_table_bytes(arch, tp) / GIB - COMPILE_GIB["cold"], 0.0)


# Model Runner V2 warms its sampler up after the KV cache is allocated
# (v1/worker/gpu/warmup.py::warmup_kernels, called from gpu_worker.py::compile_or_warm_up_model)
# with SamplingParams.for_sampler_warmup(): temperature, top-k, top-p, min-p, penalties,
# logprobs and prompt logprobs, over min(max_num_seqs, max_num_batched_tokens // 2)
# requests, while the profile run's dummy sampler skipped top-k, top-p and logprobs
# (v1/worker/gpu/model_runner.py::_dummy_sampler_run, "using less GPU memory than what is
# possible during actual execution": SAMPLER_BYTES_PER_LOGIT's 2 bytes from 0.24). So its
# transient is not in the pool's accounting and must fit in what the pool leaves: the card
# beyond the reservation and the activation peak reserved (free again by then), less the
# CUDA graphs, which the window's versions capture first, outside the reservation (the 0.26
# logs here: "Graph capturing finished" seconds before the warm-up ran out of memory).
# Modelled in Model Runner V2's window only (dense models; mixture-of-experts kept the old
# runner, whose profile ran the full sampler): 0.32 warms up before capturing, inside a
# reservation that holds the graph estimate, with a sampler rewritten around an fp32 copy
# that its processors change in place and a fused FlashInfer top-k/top-p
# (v1/worker/gpu/sample/sampler.py), so the 0.26 figure below does not carry to it and no
# published 0.29+ log shows the warm-up's peak.
# bytes per (request × vocabulary entry) the full sampler holds at its peak (fp32 logits and
# their processed copy, top-k/top-p's sort values and int64 indices, probabilities and
# log-probabilities), fitted: the least the warm-up is known to need, from the fit split's
# RTX 3060 0.26 start at 320 sequences (rtx3060-qwen25-coder-1p5b-awq-1k-kvfp8-seqs320-FAILED-
# v0260), which held 1.48 GiB of the warm-up's tensors and asked 186 MiB more when it ran
# out: (1.48 GiB + 186 MiB) / (320 × 151,936) = 36.7. The fit split's warm Qwen3-8B start on
# an RTX 4090 at 256 sequences, which came up with 1.51 GiB beside its pool, bounds it from
# above (41.7); the old full sampler's profiled peak, 38.5 (SAMPLER_BYTES_PER_LOGIT before
# 0.19), lies between.
SAMPLER_WARMUP_BYTES_PER_LOGIT = 36.7


def sampler_warmup_refusal(arch: Architecture, total_gib: float, requested: int, act: float,
                           graphs: float, max_num_batched_tokens: int, max_num_seqs: int,
                           version: tuple[int, int], enforce_eager: bool) -> str:
    """Why Model Runner V2's sampler warm-up would run out of memory after the KV cache is
    allocated ("" when it fits; see SAMPLER_WARMUP_BYTES_PER_LOGIT)."""
    lo, hi = MRV2_NO_GRAPH_ESTIMATE
    if not lo <= version < hi or arch.experts:
        return ""
    reqs = min(max_num_seqs, max_num_batched_tokens // 2)
    need = reqs * arch.vocab_size * SAMPLER_WARMUP_BYTES_PER_LOGIT
    left = total_gib * GIB - requested + (act - (0.0 if enforce_eager else graphs)) * GIB
    if need <= left:
        return ""
    return (f"vLLM's sampler warm-up after the KV cache is allocated needs about "
            f"{_gib(need):.2f} GiB for {reqs:,} sequences of {arch.vocab_size:,} logits; about "
            f"{_gib(max(left, 0)):.2f} GiB is left beside the pool (lower --max-num-seqs or "
            "gpu_memory_utilization)")


def graphs_in_reservation(arch: Architecture, version: tuple[int, int]) -> bool:
    """Whether vLLM takes its CUDA-graph estimate out of the reservation before sizing the KV
    cache: from 0.21, but not for dense models on Model Runner V2's placeholder
    (MRV2_NO_GRAPH_ESTIMATE)."""
    lo, hi = MRV2_NO_GRAPH_ESTIMATE
    if lo <= version < hi and not arch.experts:
        return False
    return version >= CUDA_GRAPHS_IN_RESERVATION_SINCE


@lru_cache(maxsize=1024)
def cudagraph_capture_sizes(max_num_batched_tokens: int, max_num_seqs: int) -> tuple[int, ...]:
    """The batch sizes vLLM captures CUDA graphs for, by default and without speculative
    decoding (vllm/config/vllm.py::_set_cudagraph_sizes, 0.32): 1, 2, 4, multiples of 8 below
    256, multiples of 16 from 256, up to min(2 × max_num_seqs, 512, max_num_batched_tokens);
    the token budget and max_num_seqs themselves when they fit under that ceiling."""
    cap = min(2 * max_num_seqs, 512, max_num_batched_tokens)
    sizes = {n for n in (1, 2, 4) if n <= cap}
    if cap >= 8:
        sizes.update(range(8, min(cap + 1, 256), 8))
    if cap >= 256:
        sizes.update(range(256, cap + 1, 16))
    if max_num_batched_tokens <= cap:
        sizes.add(max_num_batched_tokens)
    if max_num_seqs <= cap:
        sizes.add(max_num_seqs)
    return tuple(sorted(sizes))


@lru_cache(maxsize=1024)
def cudagraph_counts(max_num_batched_tokens: int, max_num_seqs: int) -> tuple[int, int]:
    """Graphs captured per mode under vLLM's default FULL_AND_PIECEWISE: a piecewise graph for
    every capture size, a full one for each size a batch of decodes fills (<= max_num_seqs;
    v1/cudagraph_dispatcher.py::initialize_cudagraph_keys)."""
    sizes = cudagraph_capture_sizes(max_num_batched_tokens, max_num_seqs)
    return len(sizes), sum(1 for n in sizes if n <= max_num_seqs)


def graphs_after_the_first(max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """The graphs each costing the second capture's memory in vLLM's estimate: all but the
    first of each mode."""
    return sum(n - 1 for n in cudagraph_counts(max_num_batched_tokens, max_num_seqs) if n)


def cuda_graph_gib(arch: Architecture, enforce_eager: bool, max_num_batched_tokens: int,
                   max_num_seqs: int, tp: int = 1) -> float:
    """vLLM's own estimate (gpu_model_runner.py::profile_cudagraph_memory): per mode, the
    first (largest) capture plus the second's memory times the graphs left. The graphs share
    one pool, so what each further one adds is its kernel nodes, and a piecewise graph has a
    piece per layer: the estimate is modelled as MiB per layer and graph beyond the first."""
    if enforce_eager:
        return 0.0
    graphs = graphs_after_the_first(max_num_batched_tokens, max_num_seqs)
    per_layer = GRAPH_MIB_PER_LAYER * (GRAPH_TP_FACTOR if tp > 1 else 1.0)
    return graphs * arch.layers * per_layer / 1024


def default_batching(target: Target, tp: int) -> tuple[int, int]:
    """vLLM's API-server defaults for max_num_batched_tokens and max_num_seqs
    (vllm/engine/arg_utils.py::get_batch_defaults)."""
    if target.engine == "vllm-cpu":
        return 2048 * tp, 128 * tp
    if target.gpu_gib >= 160 * 0.93:
        return 16384, 1024
    if target.gpu_gib >= 70 * 0.93 and "a100" not in target.gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def batching(target: Target, tp: int, max_num_batched_tokens: int | None,
             max_num_seqs: int | None, max_model_len: int) -> tuple[int, int]:
    """max_num_batched_tokens and max_num_seqs as vLLM resolves them
    (arg_utils.py::_set_default_max_num_seqs_and_batched_tokens_args, chunked prefill on):
    a defaulted token budget is capped at max_num_seqs × max_model_len, and a defaulted
    max_num_seqs at the token budget. `max_model_len`: the one asked, or the native one
    (what vLLM holds at that point under `--max-model-len auto`)."""
    d_m, d_s = default_batching(target, tp)
    seqs = max_num_seqs or d_s
    tokens = max_num_batched_tokens or min(seqs * max_model_len, d_m)
    if max_num_seqs is None:
        seqs = min(seqs, tokens)
    return tokens, seqs


# vLLM's margin in the --kv-cache-memory-bytes it suggests (gpu_worker.py: 150 MiB)
KV_SUGGESTION_BUFFER = 150 * 2**20
# The suggestion is in the 0.32 source and in the 0.19 logs here (tests/data/vllm_logs/
# planner-v0190-*); before 0.19 none is predicted, as none was seen.
KV_SUGGESTION_SINCE = (0, 19)
# With every modality of a tower limited to 0, vLLM builds the tower as a missing layer and
# loads none of its weights (models/interfaces.py::_mark_tower_model, read in 0.32's code).
# A published launch on 0.25.1 measured it: 16.74 GiB of weights text-only against 17.60
# with vision on, a 0.86 GiB tower. Earlier versions are charged the tower: not checked.
TOWER_SKIPPED_SINCE = (0, 25)


def tower_bytes_skipped(arch: Architecture, settings: EngineSettings) -> int:
    """The multimodal tower's weights vLLM does not load when serving text only: its
    parameters (`extra_params`), kept in the checkpoint's unquantized dtype."""
    if not (settings.text_only and arch.extra_params
            and settings.vllm_version >= TOWER_SKIPPED_SINCE):
        return 0
    return arch.extra_params * _plain_bytes(arch)


def suggested_kv_cache_memory_bytes(available: int, graphs_gib: float) -> int:
    """The value vLLM's log suggests for --kv-cache-memory-bytes "to fit into requested
    memory": requested − (consumed + peak activation + captured CUDA graphs) − 150 MiB.
    Its peak activation already holds the CUDA-graph estimate (0.21 on), so the graphs
    count twice: the pool it used less the graphs less the margin (0.19 logs: 69.0 −
    0.76 − 0.15 = 68.1 GiB printed)."""
    return available - int(graphs_gib * GIB) - KV_SUGGESTION_BUFFER


def weights_bytes_per_gpu(ckpt: Checkpoint, tp: int, pp: int = 1) -> int:
    """An even split over tp ranks and pp stages. vLLM's stages split the layers evenly
    (distributed/utils.py::get_pp_indices), the embeddings going with the first and the LM
    head with the last, so the largest stage may hold up to one vocabulary matrix more."""
    return math.ceil(ckpt.weight_bytes / (tp * pp))


def stage_arch(arch: Architecture, pp: int) -> Architecture:
    """The layers one pipeline stage holds (the most of any stage): its KV cache and CUDA
    graphs are per layer."""
    return arch if pp <= 1 else msgspec.structs.replace(arch, layers=math.ceil(arch.layers / pp))


def free_on(target: Target, gpus: int) -> float | None:
    """Free GiB on each of the GPUs a plan of `gpus` GPUs takes: the `gpus` with the most
    free of this host's (budgets never pooled: the least of those), or the target's figure."""
    if not target.free_by_gpu:
        return target.free_gib
    free = sorted((f for _, f in target.free_by_gpu), reverse=True)
    return free[min(gpus, len(free)) - 1]


def _gib(n: float) -> float:
    return round(n / GIB, 2)


# ----------------------------------------------------------------- the estimate


def _longest_fitting(available: int, layout: KvLayout, native: int) -> int:
    """vLLM's auto-fit: the longest max_model_len whose one sequence fits beside the null
    block. vLLM binary-searches (_estimate_max_model_len_from_groups); the blocks a request
    needs are piecewise linear in its length, so it is solved here in closed form
    (tests/test_estimate.py checks it against that search)."""
    block, full, sliding = layout.block_size, layout.full_groups, layout.sliding_groups
    blocks = (available - layout.bytes_per_block) // layout.bytes_per_block
    if not sliding:  # full attention only: whole blocks
        return max(0, min(native, blocks // full * block))
    # up to `saturated` tokens a sliding layer holds the whole sequence plus one block:
    # (full + sliding) × ceil(n / block) + sliding blocks
    saturated = layout.window - 1 + layout.in_flight_tokens
    whole = (blocks - sliding) // (full + sliding)
    if whole < 1:
        return 0
    longest = min(native, saturated, whole * block)
    if longest < saturated or native <= saturated:
        return longest
    # past it the sliding layers hold a fixed number of blocks; only full layers grow
    fixed = sliding * (math.ceil(saturated / block) + 1)
    if not full:
        return native
    return max(saturated, min(native, (blocks - fixed) // full * block))


class _Shared(NamedTuple):
    """The part of the accounting that does not depend on a checkpoint's weights: the same
    for every checkpoint of one model under one request, so computed once (the ranker
    estimates the whole catalog per request)."""

    block: int
    batched: int  # max_num_batched_tokens
    layout: KvLayout
    kv_per_token: int
    act: float
    nontorch: float
    graphs: float
    requested: int  # bytes per GPU: ceil(total × utilization); 0 on the CPU engine
    overhead: int  # bytes taken from the reservation beside the weights
    refusals: tuple[str, ...]  # reasons vLLM would refuse whatever the weights
    # what does not fit beside the pool once it is allocated: CUDA graphs outside the
    # reservation (before 0.21, and Model Runner V2's window), the sampler warm-up (0.25 on)
    graph_refusal: str
    shown: tuple[float, float, float, float]  # reservation, activation, non-torch, graphs in GiB


@lru_cache(maxsize=8192)
def _shared(arch: Architecture, target: Target, dtype_b: int, tp: int, gpu_mem_util: float,
            max_num_batched_tokens: int | None, max_num_seqs: int | None, enforce_eager: bool,
            vllm_version: tuple[int, int], compile_cache: str = "cold",
            mm_items: int = 0, pp: int = 1) -> _Shared:
    """Keyed on the flags it reads only, so that trying another context length or
    concurrency (the cheapest-fix search does) finds it computed."""
    whole, arch = arch, stage_arch(arch, pp)
    d_m, d_s = default_batching(target, tp)
    m = max_num_batched_tokens or d_m
    s = max_num_seqs or d_s
    cpu = target.engine == "vllm-cpu"
    block = 128 if cpu else 16
    layout = kv_layout(arch, dtype_b, tp, block, m)
    per_token = kv_bytes_per_token(arch, dtype_b, tp)
    if cpu:
        return _Shared(block=block, batched=m, layout=layout, kv_per_token=per_token, act=0.0,
                       nontorch=0.0, graphs=0.0, requested=0, overhead=0, refusals=(),
                       graph_refusal="", shown=(round(target.ram_gib, 2), 0.0, 0.0, 0.0))
    requested = math.ceil(target.gpu_gib * GIB * gpu_mem_util)
    act = max(activation_gib(arch, tp, m, s, vllm_version, mm_items),
              compile_peak_gib(arch, tp, m, vllm_version, enforce_eager, compile_cache))
    nontorch = non_torch_gib(tp * pp, vllm_version, enforce_eager, compile_cache)
    graphs = cuda_graph_gib(arch, enforce_eager, m, s, tp)
    in_reservation = graphs_in_reservation(arch, vllm_version)
    overhead = int((act + nontorch + (graphs if in_reservation else 0)) * GIB)
    graph_refusal = ""
    if not in_reservation and not enforce_eager:
        outside = target.gpu_gib * GIB - requested
        if graphs * GIB > outside:
            graph_refusal = (f"CUDA graphs need about {graphs:.2f} GiB outside the reservation; "
                             f"{_gib(outside):.2f} GiB is left")
    if not graph_refusal:
        graph_refusal = sampler_warmup_refusal(arch, target.gpu_gib, requested, act, graphs,
                                               m, s, vllm_version, enforce_eager)
    return _Shared(block=block, batched=m, layout=layout, kv_per_token=per_token, act=act,
                   nontorch=nontorch, graphs=graphs, requested=requested, overhead=overhead,
                   refusals=tuple(_gpu_refusals(whole, target, tp, gpu_mem_util, requested, pp,
                                                vllm_version)),
                   graph_refusal=graph_refusal,
                   shown=(_gib(requested), round(act, 2), round(nontorch, 2), round(graphs, 2)))


class Account(NamedTuple):
    """One checkpoint's accounting, in bytes and tokens, before it is rounded for people."""

    shared: _Shared
    weights: int
    available: int  # KV bytes per GPU (negative: short by that much)
    space: int | None  # VLLM_CPU_KVCACHE_SPACE
    longest: int
    max_len: int | None
    concurrency: float
    tokens: int
    reasons: list[str]
    seen: Measurement | None  # this host's launch that refined the pool
    seqs: int  # max_num_seqs as vLLM resolves it
    held: int  # bytes the weights' repacking leaves held (non-torch, as vLLM prints it)


def account(model: Model, ckpt: Checkpoint, target: Target,
            settings: EngineSettings) -> Account:
    """One checkpoint's accounting under one set of flags: what `estimate` rounds and
    words for people (a caller that asks again keeps it: plan.FitChecks)."""
    arch = model.arch
    length = settings.max_model_len or arch.native_context
    batched, seqs = batching(target, settings.tp, settings.max_num_batched_tokens,
                             settings.max_num_seqs, length)
    sh = _shared(arch, target, kv_dtype_bytes(ckpt, settings.kv_cache_dtype), settings.tp,
                 settings.gpu_mem_util, batched, seqs, settings.enforce_eager,
                 settings.vllm_version, settings.compile_cache,
                 0 if settings.text_only else mm_items_profiled(arch, batched, seqs, length),
                 settings.pp)
    layout = sh.layout
    weights = weights_bytes_per_gpu(ckpt, settings.tp, settings.pp)
    if skipped := tower_bytes_skipped(arch, settings):
        weights -= math.ceil(skipped / (settings.tp * settings.pp))
    cpu = target.engine == "vllm-cpu"
    held = 0  # what the weights' repacking leaves held beside them (weights.py)
    if not cpu:  # what torch's allocator counts for those tensors, and the rotary cache
        weights += load_overhead_bytes(arch, ckpt.quant, ckpt.bits, ckpt.group_size, ckpt.dtype,
                                       settings.tp, settings.pp)
        if settings.vllm_version >= REPACK_COUNTED_SINCE and marlin_repacks(ckpt, target):
            held = repack_held_bytes(arch, ckpt.quant, ckpt.bits, ckpt.group_size, ckpt.dtype,
                                     settings.tp, settings.pp)
    space: int | None = None
    seen: Measurement | None = None
    if cpu:
        budget = target.ram_gib
        if settings.kv_cache_memory_bytes:
            # the flag is the pool; the plan leaves VLLM_CPU_KVCACHE_SPACE unset, as the
            # CPU platform lets that variable override the flag (platforms/cpu.py)
            available = settings.kv_cache_memory_bytes
        else:
            space = target.cpu_kv_gib
            if space is None:
                space = _cpu_kv_space(model, target, settings, layout, weights)
            available = space * GIB
        reasons: list[str] = []
        refused = cpu_engine_refuses(ckpt)
        if refused:
            reasons.append(refused)
        if budget * GIB - weights - available - CPU_PROCESS_OVERHEAD_GIB * GIB < 0:
            reasons.append(
                f"needs {_gib(weights + available) + CPU_PROCESS_OVERHEAD_GIB:.2f} GiB of RAM "
                f"(weights {_gib(weights):.2f}, KV cache {_gib(available):g}, process "
                f"{CPU_PROCESS_OVERHEAD_GIB}), above the {budget:.2f} GiB budget")
    elif settings.kv_cache_memory_bytes:
        # vLLM skips the memory profile and the utilization: the pool is exactly the flag
        # (gpu_worker.py::determine_available_memory). Its start-up check of free memory
        # against the utilization still runs (worker/utils.py::request_memory, in
        # sh.refusals); beyond it, weights, activation, non-torch memory, the CUDA graphs it
        # still captures and the pool must all fit in the card, or allocation runs out.
        available = settings.kv_cache_memory_bytes
        reasons = list(sh.refusals)
        if refused := quant_refusal(ckpt, target):
            reasons.append(refused)
        need = weights + held + int((sh.act + sh.nontorch + sh.graphs) * GIB) + available
        free = free_on(target, settings.tp * settings.pp)
        card = free if free is not None else target.gpu_gib
        room = int((card - CUDA_CONTEXT_GIB) * GIB)
        if need > room:
            reasons.append(f"--kv-cache-memory-bytes {available:,} ({_gib(available):.2f} GiB) "
                           f"with weights {_gib(weights):.2f}, activation, non-torch and CUDA "
                           f"graphs needs {_gib(need):.2f} GiB per GPU; {_gib(room):.2f} GiB "
                           f"is there beside the {CUDA_CONTEXT_GIB} GiB CUDA context")
    else:
        available = sh.requested - weights - sh.overhead - held
        if target.history:
            seen = find(target.history, ckpt.repo, ckpt.quant, target.gpu_name, settings.tp,
                        sh.batched, settings.enforce_eager, settings.vllm_version)
            if seen:
                available -= int(seen.shortfall_gib * GIB)
        reasons = list(sh.refusals)
        if refused := quant_refusal(ckpt, target):
            reasons.append(refused)
        if weights > sh.requested:
            reasons.append(f"the weights alone ({_gib(weights):.2f} GiB per GPU) exceed the "
                           f"{_gib(sh.requested):.2f} GiB reservation")
        if sh.graph_refusal:
            reasons.append(sh.graph_refusal)

    if batched < seqs:  # config/scheduler.py::verify_max_model_len refuses it at start
        reasons.append(f"max_num_batched_tokens {batched:,} is below max_num_seqs {seqs:,}; "
                       "vLLM refuses that (lower --max-num-seqs or raise "
                       "--max-num-batched-tokens)")
    native = arch.native_context
    longest = _longest_fitting(available, layout, native) if available > 0 else 0
    asked = settings.max_model_len
    if asked is not None and asked > native:
        reasons.append(f"max_model_len {asked:,} is above the model's native context {native:,}")
    max_len: int | None = asked if asked is not None else (longest or None)
    if available <= 0 and not reasons:
        reasons.append("no memory left for the KV cache after weights"
                       + ("" if cpu else ", activations and CUDA graphs"))
    elif asked is None and longest == 0 and not reasons:
        # a pool too small for one block per KV group beside vLLM's null block: no context
        # length starts (an asked one gets the sentence below, with its need)
        reasons.append(f"{_gib(available):.2f} GiB is left for the KV cache, too little for "
                       f"one {layout.block_size}-token block of context beside vLLM's null "
                       "block")
    elif asked is not None and longest < asked and available > 0 and not reasons:
        need = layout.blocks_per_request(asked) * layout.bytes_per_block
        reasons.append(f"one {asked:,}-token sequence needs {_gib(need):.2f} GiB of KV cache; "
                       f"{_gib(available):.2f} GiB is available (longest that fits: {longest:,})")
    concurrency, tokens = 0.0, 0
    if max_len and available > 0:
        concurrency = (available // layout.bytes_per_block) / layout.blocks_per_request(max_len)
        tokens = int(concurrency * max_len)
    return Account(shared=sh, weights=weights, available=available, space=space,
                    longest=longest, max_len=max_len, concurrency=concurrency, tokens=tokens,
                    reasons=reasons, seen=seen, seqs=seqs, held=held)


def fits(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings) -> bool:
    """Whether vLLM would start: `estimate(...).fits` without building the answer."""
    return not account(model, ckpt, target, settings).reasons


def longest_fitting(model: Model, ckpt: Checkpoint, target: Target,
                    settings: EngineSettings) -> int:
    """The longest max_model_len vLLM would start with under these flags, as
    `--max-model-len auto` finds it (0: it would not start at any length)."""
    a = account(model, ckpt, target, msgspec.structs.replace(settings, max_model_len=None))
    return 0 if a.reasons else a.longest


def estimate(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
             accounted: Account | None = None) -> Estimate:
    """One checkpoint under one set of flags on one target, as vLLM would account for it.
    `accounted`: `account(...)` of these same arguments, where the caller kept it."""
    a = accounted or account(model, ckpt, target, settings)
    sh = a.shared
    ok = not a.reasons
    reservation, act, nontorch, graphs = sh.shown
    seqs = a.seqs
    suggested = None
    if (ok and target.engine == "vllm" and not settings.kv_cache_memory_bytes
            and settings.vllm_version >= KV_SUGGESTION_SINCE):
        suggested = suggested_kv_cache_memory_bytes(a.available, sh.graphs)
    # the figures whose source only this estimate knows; the plan adds the rest
    prov = {"kv_cache_gib": a.seen.note} if a.seen else {}
    spread = below = 0
    if target.engine == "vllm" and not settings.kv_cache_memory_bytes:
        width, why = kv_pool_spread_gib(settings.vllm_version)
        prov["kv_cache_gib_range"] = f"P50 ± {width} GiB, the largest miss on {why} (bench/accuracy.py)"
        spread = below = int(width * GIB)
        pinned = pinnable_copy_gib(stage_arch(model.arch, settings.pp), settings.tp,
                                   settings.vllm_version, settings.enforce_eager,
                                   settings.compile_cache)
        if pinned > width:
            below = int(pinned * GIB)
            prov["kv_cache_gib_range"] += (
                f"; down to P50 − {pinned:.2f} GiB: a first start of vLLM 0.27-0.30 may keep "
                "torch.compile's benchmark copy of the embedding table (0.31 guards against it)")
    if settings.kv_cache_memory_bytes:
        prov["kv_cache_gib"] = ("--kv-cache-memory-bytes: the pool as given (vLLM skips the "
                                "memory profile and gpu_memory_utilization)")
    if a.held:
        nontorch = round(nontorch + a.held / GIB, 2)
        prov["non_torch_gib_repack"] = (
            f"with {_gib(a.held)} GiB of the quantized tensors Marlin's repacking replaced "
            "that stay held in 20 MiB-split blocks, counted in vLLM's consumed memory from "
            "0.27 (weights.py::repack_held_bytes)")
    if skipped := tower_bytes_skipped(model.arch, settings):
        prov["weights_tower"] = (f"text only: vLLM {settings.vllm_version[0]}."
                                 f"{settings.vllm_version[1]} loads none of the multimodal "
                                 f"tower's {_gib(skipped)} GiB (--limit-mm-per-prompt 0)")
    pool = max(a.available, 0)
    low, high = max(pool - below, 0), pool + spread
    scale = a.tokens / pool if pool else 0.0
    verdict = "does not fit" if not ok else "fits"
    if ok and settings.max_model_len and \
            low < sh.layout.blocks_per_request(settings.max_model_len) * sh.layout.bytes_per_block:
        verdict = "tight"
    return Estimate(
        kv_cache_gib_range=[_gib(low), _gib(high)],
        kv_cache_tokens_range=[int(low * scale), int(high * scale)], verdict=verdict,
        model=model.id, repo=ckpt.repo, quant=ckpt.quant, dtype=ckpt.dtype, engine=target.engine,
        tp=settings.tp, pp=settings.pp, gpu_mem_util=settings.gpu_mem_util,
        reservation_gib=reservation,
        weights_gib=_gib(a.weights), activation_gib=act, non_torch_gib=nontorch,
        cuda_graph_gib=graphs,
        kv_cache_gib=_gib(max(a.available, 0)), kv_bytes_per_token=sh.kv_per_token,
        kv_cache_tokens=a.tokens, block_size=sh.block, max_num_batched_tokens=sh.batched,
        max_model_len=a.max_len if ok else None, max_concurrency=round(a.concurrency, 2),
        fits=ok, meets_request=ok and a.concurrency >= settings.concurrency,
        reason="; ".join(a.reasons), cpu_kv_space_gib=a.space,
        host_correction_gib=a.seen.shortfall_gib if a.seen else None,
        max_num_seqs=seqs, suggested_kv_cache_memory_bytes=suggested, provenance=prov,
        notes=unowned_notes(target),
    )


def estimate_provenance(engine: str, block: int, batched: int, version: tuple[int, int],
                        eager: bool) -> dict[str, str]:
    """Where each memory figure of an estimate comes from (the weights' source aside)."""
    prov = {"kv_bytes_per_token": "layers × 2 × kv_heads × head_dim × dtype bytes (config.json)",
            "kv_cache_tokens": f"vLLM's block accounting ({block}-token blocks)"}
    if engine == "vllm-cpu":
        prov["kv_cache_gib"] = "VLLM_CPU_KVCACHE_SPACE (the CPU engine's explicit KV size)"
        return prov
    lo, hi = MRV2_NO_GRAPH_ESTIMATE
    mrv2 = lo <= version < hi
    inside = version >= CUDA_GRAPHS_IN_RESERVATION_SINCE and not mrv2
    prov["activation_gib"] = (f"modelled: max_num_batched_tokens {batched}, "
                              "fitted on published vLLM logs (bench/accuracy.py)")
    prov["non_torch_gib"] = "fitted on published vLLM logs (bench/fit_terms.py)"
    if version >= COMPILE_SINCE and not eager:
        prov["activation_gib"] += ("; a first start's torch.compile benchmarks its kernels on "
                                   "fresh copies of their inputs inside the profiling window, "
                                   "the embedding table the largest, so its peak is at least "
                                   "that copy (a start that finds the compile cache does not)")
    prov["cuda_graph_gib"] = ("0: --enforce-eager" if eager else
                              f"modelled per layer; {'inside' if inside else 'outside'} the "
                              f"reservation in vLLM {version[0]}.{version[1]}"
                              + (" for dense models (Model Runner V2 estimates 0)" if mrv2 else ""))
    prov["kv_cache_gib"] = ("the reservation less weights, activation, non-torch and graphs"
                            if inside or eager else "the reservation less weights, activation "
                            "and non-torch (the graphs are captured after it, outside)")
    return prov


def _gpu_refusals(arch: Architecture, target: Target, tp: int, gpu_mem_util: float,
                  requested: int, pp: int = 1,
                  version: tuple[int, int] = INSTALLED_VLLM) -> list[str]:
    out = []
    if too_old := gpu_floor_refusal(target, version):
        out.append(too_old)
    if pp > 1 and tp * pp > max(target.gpus, 1):
        out.append(f"tensor parallel size {tp} × pipeline parallel size {pp} needs {tp * pp} "
                   f"GPUs; {target.gpus} planned")
    elif tp > max(target.gpus, 1):
        out.append(f"tensor parallel size {tp} needs {tp} GPUs; {target.gpus} planned")
    if arch.attention_heads % tp:
        out.append(f"{arch.attention_heads} attention heads do not divide across {tp} GPUs")
    elif tp > arch.kv_heads and tp % arch.kv_heads:
        out.append(f"{arch.kv_heads} KV heads cannot be replicated evenly across {tp} GPUs")
    if pp > arch.layers:
        out.append(f"{arch.layers} layers cannot make {pp} pipeline stages")
    free = free_on(target, tp * pp)
    if free is not None and (free - CUDA_CONTEXT_GIB) * GIB < requested:
        where = "is free on the GPU" if target.free_basis == "now" else \
            (f"of the card's {target.gpu_gib:.2f} is there to reserve "
             f"({target.gpu_gib - free:.2f} GiB is held by no listed process)")
        out.append(f"only {free:.2f} GiB {where}, below the "
                   f"{_gib(requested):.2f} GiB that gpu_memory_utilization {gpu_mem_util} "
                   f"reserves (plus {CUDA_CONTEXT_GIB} GiB for the CUDA context)")
    return out


def unowned_notes(target: Target) -> list[str]:
    """The estimate's note on GPU memory no listed process holds, on the GPUs it takes."""
    if not target.unowned_by_gpu:  # most hosts, and every CPU one: nothing to say, per row
        return []
    mine = {i for i, _ in target.free_by_gpu}
    out = []
    for i, gib in target.unowned_by_gpu:
        if mine and i not in mine:
            continue
        if target.free_basis == "now":
            out.append(f"GPU {i}: {gib:.2f} GiB of GPU memory is held by no listed process; "
                       "it is outside the free memory this plan is checked against (NVML's "
                       "free, as CUDA's that vLLM checks, already leaves it out)")
        else:
            out.append(f"GPU {i}: {gib:.2f} GiB of GPU memory is held by no listed process; "
                       "it is taken off the budget (vLLM starts only where free memory covers "
                       "gpu_memory_utilization × the total, and stopping what runs here frees "
                       "none of it)")
    return out


def _cpu_kv_space(model: Model, target: Target, settings: EngineSettings, layout: KvLayout,
                  weights: int) -> int:
    """Whole GiB of VLLM_CPU_KVCACHE_SPACE: enough for the requested sequences (or the
    native context), within what RAM leaves after weights and the process."""
    length = settings.max_model_len or model.arch.native_context
    need = (layout.blocks_per_request(length) * max(settings.concurrency, 1) + 1) \
        * layout.bytes_per_block
    room = target.ram_gib - _gib(weights) - CPU_PROCESS_OVERHEAD_GIB
    return max(1, min(math.ceil(need / GIB), math.floor(room)))
