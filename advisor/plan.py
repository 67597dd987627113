"""From a user's request to a plan: the hardware, the flags, the estimate, and for every
"does not fit" the cheapest change that makes it fit. Pure: the host profile and the GPU
table come in as arguments.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import msgspec

from advisor.errors import AdvisorError
from advisor.estimate import (
    CUDA_CONTEXT_GIB,
    INSTALLED_VLLM,
    EngineSettings,
    Estimate,
    Target,
    estimate,
    estimate_provenance,
    fits,
    longest_fitting,
    weights_bytes_per_gpu,
)
from advisor.hardware import cuda_gib, find_gpu
from advisor.history import Measurement
from advisor.specs import Checkpoint, GpuSpec, HostProfile, Model, PlanRequest
from advisor.speed import Roofline, predict
from advisor.weights import active_param_count, checkpoint_bytes, describe_computation

GIB = 2**30


def target_for(req: PlanRequest, host: HostProfile, gpus: list[GpuSpec],
               check_free: bool = False, history: tuple[Measurement, ...] = ()) -> Target:
    """The hardware a request plans for: named, given, or this host's. `history`: what this
    host's launches measured, used where the plan is for this host's own GPU."""
    if req.gpus == 0 or (not host.gpus and req.gpu is None and req.gpu_gib is None):
        return Target(engine="vllm-cpu", ram_gib=req.ram_gib or host.ram.available_gib,
                      cpu_kv_gib=req.cpu_kv_gib)
    spec: GpuSpec | None = None
    if req.gpu:
        spec = find_gpu(gpus, req.gpu)
        if spec is None:
            names = ", ".join(g.name for g in gpus)
            raise AdvisorError(f"gpu: {req.gpu!r} is not in the GPU table ({names})")
    elif host.gpus:
        spec = find_gpu(gpus, host.gpus[0].name)
    host_gpu = host.gpus[0] if host.gpus and not req.gpu else None
    if req.gpu_gib:
        gib = req.gpu_gib
    elif spec and req.gpu:
        gib = cuda_gib(spec)
    elif host_gpu:
        gib = host_gpu.memory_cuda_gib
    else:
        raise AdvisorError("gpu_gib: no GPU on this host; give gpu_gib or gpu, or gpus 0 for the CPU")
    count = req.gpus or (len(host.gpus) if host_gpu else 1)
    bandwidth = (host_gpu.memory_bandwidth_gbps if host_gpu else None) or (
        spec.bandwidth_gbps if spec else None)
    free = None
    if check_free and host_gpu:
        free = min(g.memory_free_gib for g in host.gpus[:count])
    name = host_gpu.name if host_gpu else spec.name if spec else ""
    return Target(engine="vllm", gpu_name=name, gpu_gib=gib, gpus=count, free_gib=free,
                  bandwidth_gbps=bandwidth, bf16_tflops=(spec.bf16_tflops or None) if spec else None,
                  history=tuple(m for m in history if m.gpu_name == name) if host_gpu else ())


def vllm_version_of(text: str) -> tuple[int, int]:
    """(major, minor) of what `vllm --version` prints ("v0.10.1.1", "0.13.0+cu126"):
    the estimator's accounting changes between minor releases, never within one."""
    found = re.match(r"\s*v?(\d+)\.(\d+)", text)
    if not found:  # PlanRequest's pattern lets none through; a caller building one by hand
        raise AdvisorError(f"vllm_version: {text!r} is not a vLLM version (e.g. 0.10.1.1)")
    return int(found[1]), int(found[2])


def settings_for(req: PlanRequest, tp: int | None = None) -> EngineSettings:
    version = vllm_version_of(req.vllm_version) if req.vllm_version else INSTALLED_VLLM
    if req.kv_cache_memory_bytes and req.cpu_kv_gib:
        # the CPU platform lets VLLM_CPU_KVCACHE_SPACE override the flag: one of them
        raise AdvisorError("kv_cache_memory_bytes: give it or cpu_kv_gib, not both (on the CPU "
                           "engine VLLM_CPU_KVCACHE_SPACE overrides --kv-cache-memory-bytes)")
    return EngineSettings(gpu_mem_util=req.gpu_mem_util, max_model_len=req.max_model_len,
                          tp=tp or req.tp or 1, kv_cache_dtype=req.kv_cache_dtype,
                          max_num_batched_tokens=req.max_num_batched_tokens,
                          max_num_seqs=req.max_num_seqs, enforce_eager=req.enforce_eager,
                          concurrency=req.concurrency, vllm_version=version,
                          kv_cache_memory_bytes=req.kv_cache_memory_bytes,
                          text_only=req.text_only)


def checkpoint_for(model: Model, quant: str | None) -> Checkpoint | None:
    """The checkpoint a `quant` names: a published repo first, vLLM quantizing at load after."""
    quant = quant or "none"
    hits = [c for c in model.checkpoints if c.quant == quant]
    if not hits and quant == "fp8":  # an fp8 compressed-tensors repo is fp8 too
        hits = [c for c in model.checkpoints if c.quant == "compressed-tensors" and c.bits == 8]
    if not hits and quant in ("fp8", "bitsandbytes"):
        plain = next((c for c in model.checkpoints if c.quant == "none"), None)
        if plain:
            made = Checkpoint(repo=plain.repo, quant=quant,  # type: ignore[arg-type]
                              bits=8 if quant == "fp8" else 4, dtype=plain.dtype, at_load=True,
                              note=f"quantized to {quant} by vLLM at load")
            made.weight_bytes = checkpoint_bytes(model.arch, made)
            made.weight_bytes_source = describe_computation(made)
            return made
    hits.sort(key=lambda c: c.at_load)
    return hits[0] if hits else None


def with_speed(e: Estimate, model: Model, ckpt: Checkpoint, target: Target,
               settings: EngineSettings) -> Estimate:
    """The decode speed and time to first token, where the hardware's figures are sourced."""
    if target.engine != "vllm" or not target.bandwidth_gbps:
        return e
    e.decode_tokens_per_s, e.decode_tokens_per_s_at_concurrency, e.ttft_s = predict(
        weights_bytes_per_gpu(ckpt, settings.tp), e.kv_bytes_per_token, model.arch.layers,
        active_param_count(model.arch), settings.tp, settings.concurrency,
        Roofline(target.bandwidth_gbps, target.bf16_tflops), settings.vllm_version)
    return e


def provenance_of(e: Estimate, ckpt: Checkpoint, target: Target,
                  settings: EngineSettings) -> dict[str, str]:
    """Where each figure of a plan comes from: the estimate's, then the speed's, with what
    the estimate itself noted (a pool this host's history refined) taking precedence."""
    prov = {**_provenance(e.engine, e.block_size, e.max_num_batched_tokens,
                          settings.vllm_version, settings.enforce_eager,
                          target.bandwidth_gbps if target.engine == "vllm" else None,
                          target.bf16_tflops), **e.provenance}
    prov["weights_gib"] = ckpt.weight_bytes_source or "computed"
    return prov


@lru_cache(maxsize=256)
def _provenance(engine: str, block: int, batched: int, version: tuple[int, int], eager: bool,
                bandwidth_gbps: float | None, bf16_tflops: float | None) -> dict[str, str]:
    prov = estimate_provenance(engine, block, batched, version, eager)
    if not bandwidth_gbps:
        prov["decode_tokens_per_s"] = "not estimated: no sourced bandwidth for this hardware"
        return prov
    prov["decode_tokens_per_s"] = (f"estimate: roofline on {bandwidth_gbps:g} GB/s, fitted on "
                                   "published vLLM measurements (bench/speed.py)")
    prov["ttft_s"] = (f"estimate: 1,000-token prompt at {bf16_tflops:g} dense bf16 TFLOPS"
                      if bf16_tflops else "not estimated: no sourced tensor throughput for this GPU")
    return prov


def plan(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
         est: Estimate | None = None, known: dict[int, bool] | None = None) -> Estimate:
    """The estimate with speed, and for a "no" the reason with the cheapest change that fits.
    `est`: the bare estimate of these same arguments, when the caller already has it;
    `known`: whether each of the model's checkpoints fits these settings (by id), likewise."""
    e = with_speed(est or estimate(model, ckpt, target, settings), model, ckpt, target, settings)
    e.provenance = provenance_of(e, ckpt, target, settings)
    if e.fits:
        return e
    fix = cheapest_fix(model, ckpt, target, settings, known or {})
    e.reason += f". Cheapest change that fits: {fix}" if fix else \
        ". Nothing in the catalog's checkpoints or these settings makes it fit this hardware"
    return e


def cheapest_fix(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
                 known: dict[int, bool] | None = None) -> str:
    """Changes in the order they cost the user least: a setting, then context, then a
    quantized checkpoint, then more GPUs. Each is checked with the estimator itself."""
    rep = msgspec.structs.replace
    if target.engine == "vllm-cpu":
        if settings.max_model_len and not fits(model, ckpt, target, settings):
            longest = longest_fitting(model, ckpt, target, settings)
            if longest:
                return f"--max-model-len {longest}"
        if target.cpu_kv_gib:
            for space in range(target.cpu_kv_gib + 1, int(target.ram_gib) + 1):
                if fits(model, ckpt, rep(target, cpu_kv_gib=space), settings):
                    return f"VLLM_CPU_KVCACHE_SPACE={space}"
        return ""
    # settings cannot help when the weights alone exceed what any setting would reserve
    settings_can_help = weights_bytes_per_gpu(ckpt, settings.tp) < target.gpu_gib * GIB * 0.9
    if target.free_gib is not None and settings_can_help:
        usable = math.floor((target.free_gib - CUDA_CONTEXT_GIB) / target.gpu_gib * 100) / 100
        if 0.05 < usable < settings.gpu_mem_util and fits(
                model, ckpt, target, rep(settings, gpu_mem_util=usable)):
            return f"--gpu-memory-utilization {usable:.2f} (what is free now)"
    if settings_can_help and settings.gpu_mem_util < 0.95 and fits(
            model, ckpt, target, rep(settings, gpu_mem_util=0.95)):
        return "--gpu-memory-utilization 0.95"
    if settings_can_help and settings.kv_cache_dtype == "auto" and fits(
            model, ckpt, target, rep(settings, kv_cache_dtype="fp8")):
        return "--kv-cache-dtype fp8"
    if settings_can_help and settings.max_model_len:
        longest = longest_fitting(model, ckpt, target, settings)
        if longest and longest >= min(settings.max_model_len, 2048):
            return f"--max-model-len {longest}"
    # quantized checkpoints, largest (least lossy) first
    smaller = sorted((c for c in model.checkpoints if c.weight_bytes < ckpt.weight_bytes),
                     key=lambda c: -c.weight_bytes)
    known = known or {}
    for c in smaller:
        if known.get(id(c)) if id(c) in known else fits(model, c, target, settings):
            how = "quantize at load with --quantization " + c.quant if c.at_load else f"use {c.repo}"
            return f"{how} ({c.label}, {c.weight_bytes / GIB:.2f} GiB of weights)"
    for tp in (2, 4, 8):
        if tp <= settings.tp or model.arch.attention_heads % tp:
            continue
        more = rep(target, gpus=max(target.gpus, tp))
        if fits(model, ckpt, more, rep(settings, tp=tp)):
            have = "" if tp <= target.gpus else f" (needs {tp} GPUs)"
            return f"--tensor-parallel-size {tp}{have}"
    return ""
