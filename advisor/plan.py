"""From a user's request to a plan: the hardware, the flags, the estimate, and for every
"does not fit" the cheapest change that makes it fit. Pure: the host profile and the GPU
table come in as arguments.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain, combinations
from typing import Literal, NamedTuple

import msgspec

from advisor.errors import AdvisorError
from advisor.estimate import (
    CUDA_CONTEXT_GIB,
    INSTALLED_VLLM,
    Account,
    EngineSettings,
    Estimate,
    Target,
    account,
    cpu_engine_refuses,
    estimate,
    estimate_provenance,
    free_on,
    graphs_in_reservation,
    longest_fitting,
    weights_bytes_per_gpu,
)
from advisor.hardware import UNOWNED_NOTE_GIB, capability_of, cuda_gib, find_gpu
from advisor.history import Measurement, version_of
from advisor.placement import Placed, layouts
from advisor.specs import Architecture, Checkpoint, GpuSpec, HostProfile, Model, PlanRequest
from advisor.speed import (
    CONTEXT_TOKENS,
    CpuRoofline,
    Roofline,
    cpu_bandwidth_gbps,
    cpu_core_factor,
    cpu_threads,
    predict,
    predict_cpu,
)
from advisor.weights import (
    active_param_count,
    checkpoint_bytes,
    describe_computation,
    param_count,
    plain_params,
)

GIB = 2**30


def target_for(req: PlanRequest, host: HostProfile, gpus: list[GpuSpec],
               check_free: bool = False, history: tuple[Measurement, ...] = ()) -> Target:
    """The hardware a request plans for: named, given, or this host's. `history`: what this
    host's launches measured, used where the plan is for this host's own GPU."""
    if req.gpus == 0 or (not host.gpus and req.gpu is None and req.gpu_gib is None):
        return Target(engine="vllm-cpu", ram_gib=req.ram_gib or host.ram.available_gib,
                      cpu_kv_gib=req.cpu_kv_gib, bandwidth_gbps=host.ram.bandwidth_gbps,
                      cpu_per_core_gbps=host.ram.bandwidth_per_core_gbps,
                      cpu_cores=host.cpu.physical_cores or host.cpu.logical_cores,
                      cpu_core_rate_gops=host.cpu.core_rate_gops)
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
    # the GPUs this host may give the plan: those named (gpu_ids), else all of them
    mine = [g for g in host.gpus if req.gpu_ids is None or g.index in req.gpu_ids]
    if host_gpu and req.gpu_ids is not None and len(mine) < len(set(req.gpu_ids)):
        have = ", ".join(str(g.index) for g in host.gpus)
        raise AdvisorError(f"gpu_ids: this host has GPUs {have}; {sorted(req.gpu_ids)} asked")
    count = req.gpus or (len(mine) if host_gpu else 1)
    bandwidth = (host_gpu.memory_bandwidth_gbps if host_gpu else None) or (
        spec.bandwidth_gbps if spec else None)
    free = None
    by_gpu: tuple[tuple[int, float], ...] = ()
    # memory no listed process holds is not free, and stopping what runs here frees none of
    # it: vLLM starts only where free memory covers utilization × total
    # (v1/worker/utils.py::request_memory), so it narrows what the plan may reserve
    unowned = tuple((g.index, g.memory_unowned_gib) for g in mine[:count]
                    if g.memory_unowned_gib is not None
                    and g.memory_unowned_gib > UNOWNED_NOTE_GIB) if host_gpu else ()
    basis: Literal["now", "card less unowned"] = "now"
    if check_free and host_gpu:
        # each GPU on its own: a plan takes the GPUs with the most free (estimate.free_on),
        # so a busy first GPU does not refuse a host whose second is empty. NVML's free
        # already leaves the unowned memory out (as CUDA's free, which vLLM checks, does):
        # taking it off again would count it twice
        by_gpu = tuple((g.index, g.memory_free_gib) for g in mine[:count])
        free = min(f for _, f in by_gpu)
    elif unowned and not req.gpu_gib:
        # a recommendation or an estimate plans for the card as if what runs here stopped
        # (a launch then checks what is free): the card, less what no process holds
        off = dict(unowned)
        by_gpu = tuple((g.index, round(gib - off.get(g.index, 0.0), 2)) for g in mine[:count])
        free, basis = min(f for _, f in by_gpu), "card less unowned"
    # NVLink only where every GPU planned on reports it; unknown is planned as none
    nvlink = all(g.nvlink for g in mine[:count]) if host_gpu and mine else None
    name = host_gpu.name if host_gpu else spec.name if spec else ""
    capability = capability_of((host_gpu.compute_capability if host_gpu else None)
                               or (spec.compute_capability if spec else None))
    return Target(engine="vllm", gpu_name=name, gpu_gib=gib, gpus=count, free_gib=free,
                  compute_capability=capability,
                  free_by_gpu=by_gpu, free_basis=basis, unowned_by_gpu=unowned, nvlink=nvlink,
                  bandwidth_gbps=bandwidth, bf16_tflops=(spec.bf16_tflops or None) if spec else None,
                  history=tuple(m for m in history if m.gpu_name == name) if host_gpu else ())


def vllm_version_of(text: str) -> tuple[int, int]:
    """(major, minor) of what `vllm --version` prints ("v0.10.1.1", "0.13.0+cu126"):
    the estimator's accounting changes between minor releases, never within one."""
    found = version_of(text)
    if not found:  # PlanRequest's pattern lets none through; a caller building one by hand
        raise AdvisorError(f"vllm_version: {text!r} is not a vLLM version (e.g. 0.10.1.1)")
    return found


def settings_for(req: PlanRequest, tp: int | None = None) -> EngineSettings:
    version = vllm_version_of(req.vllm_version) if req.vllm_version else INSTALLED_VLLM
    if req.kv_cache_memory_bytes and req.cpu_kv_gib:
        # the CPU platform lets VLLM_CPU_KVCACHE_SPACE override the flag: one of them
        raise AdvisorError("kv_cache_memory_bytes: give it or cpu_kv_gib, not both (on the CPU "
                           "engine VLLM_CPU_KVCACHE_SPACE overrides --kv-cache-memory-bytes)")
    return EngineSettings(gpu_mem_util=req.gpu_mem_util, max_model_len=req.max_model_len,
                          tp=tp or req.tp or 1, pp=req.pp or 1,
                          kv_cache_dtype=req.kv_cache_dtype,
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
    if target.engine == "vllm-cpu":
        return _with_cpu_speed(e, model, ckpt, target, settings)
    if not target.bandwidth_gbps:
        return e
    e.decode_tokens_per_s, e.decode_tokens_per_s_at_concurrency, e.ttft_s = predict(
        # a token passes the pp stages one after another: each step reads the weights and KV
        # of every stage, as one GPU of a tp-only plan does
        weights_bytes_per_gpu(ckpt, settings.tp), e.kv_bytes_per_token * settings.pp,
        model.arch.layers,
        active_param_count(model.arch), settings.tp, settings.concurrency,
        Roofline(bandwidth_gbps=target.bandwidth_gbps, bf16_tflops=target.bf16_tflops),
        settings.vllm_version)
    return e


@lru_cache(maxsize=64)
def cpu_roofline(target: Target) -> CpuRoofline | None:
    if not (target.bandwidth_gbps and target.cpu_per_core_gbps and target.cpu_cores):
        return None
    return CpuRoofline(bandwidth_gbps=target.bandwidth_gbps, per_core_gbps=target.cpu_per_core_gbps,
                       physical_cores=target.cpu_cores, core_rate_gops=target.cpu_core_rate_gops)


def cpu_scheme(ckpt: Checkpoint) -> str:
    """Which CPU kernel unpacks the checkpoint's weights ("" for plain ones)."""
    if ckpt.quant == "none":
        return ""
    return "w4" if ckpt.bits == 4 else "int8"


def decode_read_bytes(model: Model, ckpt: Checkpoint, tp: int) -> int:
    """Bytes one decoded token reads on one rank: every weight, less an untied embedding
    table (a lookup reads one row of it) and, for a mixture of experts, the experts not
    routed to."""
    arch = model.arch
    total = weights_bytes_per_gpu(ckpt, tp)
    plain = 4 if ckpt.dtype == "float32" else 2
    if not arch.tied_embeddings:
        total -= arch.vocab_size * arch.hidden_size * plain // tp
    if arch.experts:
        total = int(total * active_param_count(arch) / param_count(arch))
    return max(total, 0)


@lru_cache(maxsize=1024)
def _quantized_weights(arch: Architecture) -> int:
    """Weights a quantized checkpoint's kernel unpacks per token: the active linear ones."""
    return active_param_count(arch) - plain_params(arch)


@lru_cache(maxsize=8192)
def _cpu_speed(arch: Architecture, read_bytes: int, kv_bytes_per_token: int, scheme: str,
               hw: CpuRoofline, tp: int, concurrency: int, context: int) -> tuple[float, float]:
    # a ranking asks this of every checkpoint; a service asks it again per request
    return predict_cpu(read_bytes, kv_bytes_per_token, arch.layers, hw,
                       _quantized_weights(arch) if scheme else 0, scheme, tp, concurrency, context)


def _with_cpu_speed(e: Estimate, model: Model, ckpt: Checkpoint, target: Target,
                    settings: EngineSettings) -> Estimate:
    hw = cpu_roofline(target)
    if hw is None:
        return e
    e.decode_tokens_per_s, e.decode_tokens_per_s_at_concurrency = _cpu_speed(
        model.arch, decode_read_bytes(model, ckpt, settings.tp), e.kv_bytes_per_token,
        cpu_scheme(ckpt), hw, settings.tp, settings.concurrency,
        settings.max_model_len or CONTEXT_TOKENS)
    return e


def with_replica_speed(e: Estimate, model: Model, ckpt: Checkpoint, target: Target,
                       settings: EngineSettings) -> Estimate:
    """With data-parallel replicas each engine serves its share of the sequences asked: the
    speed at concurrency is one replica's at ceil(concurrency / replicas), said in the
    layout's reasons (a new list: a ranker's layouts are kept between rankings)."""
    layout = e.layout
    if layout is None or layout.dp <= 1 or e.decode_tokens_per_s_at_concurrency is None:
        return e
    each = math.ceil(settings.concurrency / layout.dp)
    with_speed(e, model, ckpt, target, msgspec.structs.replace(settings, concurrency=each))
    e.layout = msgspec.structs.replace(layout, reasons=[
        *layout.reasons, f"speed at concurrency per replica: {each} of the "
        f"{settings.concurrency} sequences on each of {layout.dp} replicas, "
        f"{e.decode_tokens_per_s_at_concurrency:g} tokens/s each"])
    return e


def provenance_of(e: Estimate, ckpt: Checkpoint, target: Target,
                  settings: EngineSettings) -> dict[str, str]:
    """Where each figure of a plan comes from: the estimate's, then the speed's, with what
    the estimate itself noted (a pool this host's history refined) taking precedence."""
    if target.engine == "vllm-cpu":
        prov = {**_provenance(e.engine, e.block_size, e.max_num_batched_tokens,
                              settings.vllm_version, settings.enforce_eager, None, None),
                "decode_tokens_per_s": _cpu_speed_provenance(target, settings), **e.provenance}
        prov["weights_gib"] = ckpt.weight_bytes_source or "computed"
        return prov
    prov = {**_provenance(e.engine, e.block_size, e.max_num_batched_tokens,
                          settings.vllm_version, settings.enforce_eager,
                          target.bandwidth_gbps if target.engine == "vllm" else None,
                          target.bf16_tflops), **e.provenance}
    prov["weights_gib"] = ((ckpt.weight_bytes_source or "computed") + "; with what torch's CUDA "
                           "allocator rounds the tensors up to and the rotary cache "
                           "(weights.py::load_overhead_bytes)")
    return prov


@lru_cache(maxsize=64)
def _cpu_speed_provenance(target: Target, settings: EngineSettings) -> str:
    hw = cpu_roofline(target)
    if hw is None:
        return "not estimated: no measured memory bandwidth for this host"
    threads = cpu_threads(hw.physical_cores, settings.tp)
    return (f"estimate: CPU roofline, {threads} engine thread{'s' if threads > 1 else ''} of "
            f"{hw.physical_cores} cores (one kept for the scheduler) at "
            f"{cpu_bandwidth_gbps(hw, settings.tp):g} GB/s measured (STREAM Copy), "
            f"{_core_speed(hw)}, "
            f"{settings.max_model_len or CONTEXT_TOKENS:,} tokens of context; constants "
            "fitted on the real CPU engine (bench/cpu_speed.py)")


def _core_speed(hw: CpuRoofline) -> str:
    if not hw.core_rate_gops:
        return "cores as fast as the fitting host's (not measured)"
    return (f"cores at {cpu_core_factor(hw):.2f}x the fitting host's speed "
            f"({hw.core_rate_gops:g} G weights/s measured)")


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


class _Memo:
    """What a FitChecks remembers, apart from the model it asks about."""

    def __init__(self) -> None:
        # the estimator's accounting of each row asked (FitChecks.estimate), and whether the
        # flags the fix search tries fit
        self.accounts: dict[tuple[str, str, Target, EngineSettings], Account] = {}
        self.fits: dict[tuple[str, str, Target, EngineSettings], bool] = {}
        self.longest: dict[tuple[str, str, Target, EngineSettings], int] = {}
        self.spaces: dict[tuple[Target, EngineSettings, bool], _Space] = {}
        self.fixes: dict[tuple[str, str, Target, EngineSettings], Fix | None] = {}
        # the ranker's layouts over several GPUs (advisor.placement): by checkpoint, whether
        # tp/pp were given, the replicas asked, and the request
        self.placed: dict[tuple[str, str, bool, int | None, Target, EngineSettings], Placed] = {}


@lru_cache(maxsize=1024)
def _kept_memo(model_key: tuple[object, ...], target: Target, settings: EngineSettings) -> _Memo:
    """One memo per model (by value) and request, kept: a service asked again about the
    same hardware and flags answers from it, as the estimator's own caches do."""
    return _Memo()


def _model_key(model: Model) -> tuple[object, ...]:
    """Every figure of a model that its estimates, the fix search and the fix's words read."""
    return (model.id, model.arch, tuple((c.repo, c.quant, c.dtype, c.bits, c.group_size,
                                         c.weight_bytes, c.at_load, c.note)
                                        for c in model.checkpoints))


class FitChecks:
    """The estimator's answers for one model, remembered: whether a checkpoint starts under
    a set of flags, the longest context it starts with, and the cheapest fix found. Keyed on
    the checkpoint's repo and quantization and on the target and settings structs, all
    values. The ranker keeps one per model and request (`kept`), so the fix searches of
    its refused checkpoints share what each of them checked, and a request seen before
    finds them done."""

    def __init__(self, model: Model, memo: _Memo | None = None) -> None:
        self.model = model
        memo = memo or _Memo()
        self._accounts, self._fits = memo.accounts, memo.fits
        self._longest, self._spaces = memo.longest, memo.spaces
        self.fixes = memo.fixes
        self.placed = memo.placed

    @classmethod
    def kept(cls, model: Model, target: Target, settings: EngineSettings) -> FitChecks:
        """The one kept for this model (by value), target and settings."""
        return cls(model, _kept_memo(_model_key(model), target, settings))

    def account(self, ckpt: Checkpoint, target: Target, settings: EngineSettings) -> Account:
        """The estimator's accounting (estimate.account), worked out once per key."""
        key = (ckpt.repo, ckpt.quant, target, settings)
        got = self._accounts.get(key)
        if got is None:
            got = self._accounts[key] = account(self.model, ckpt, target, settings)
        return got

    def estimate(self, ckpt: Checkpoint, target: Target, settings: EngineSettings) -> Estimate:
        """A new Estimate (callers fill it in) from the remembered accounting."""
        return estimate(self.model, ckpt, target, settings,
                        self.account(ckpt, target, settings))

    def fits(self, ckpt: Checkpoint, target: Target, settings: EngineSettings) -> bool:
        # the fix search asks this thousands of times a ranking: only the answer is kept
        key = (ckpt.repo, ckpt.quant, target, settings)
        got = self._fits.get(key)
        if got is None:
            kept = self._accounts.get(key)
            got = self._fits[key] = not (kept or account(self.model, ckpt, target, settings)).reasons
        return got

    def longest(self, ckpt: Checkpoint, target: Target, settings: EngineSettings) -> int:
        key = (ckpt.repo, ckpt.quant, target, settings)
        got = self._longest.get(key)
        if got is None:
            got = self._longest[key] = longest_fitting(self.model, ckpt, target, settings)
        return got

    def space(self, target: Target, settings: EngineSettings, more_gpus: bool) -> _Space:
        """What the fix search tries for this model under these flags (see `find_fix`)."""
        key = (target, settings, more_gpus)
        got = self._spaces.get(key)
        if got is None:
            got = self._spaces[key] = _Space(self.model, target, settings, more_gpus)
        return got


def plan(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
         est: Estimate | None = None, checks: FitChecks | None = None) -> Estimate:
    """The estimate with speed, and for a "no" the reason with the cheapest change that fits.
    `est`: the bare estimate of these same arguments, when the caller already has it;
    `checks`: what the estimator already answered for this model on this target."""
    e = with_speed(est or estimate(model, ckpt, target, settings), model, ckpt, target, settings)
    e.provenance = provenance_of(e, ckpt, target, settings)
    if e.fits:
        return e
    fix = cheapest_fix(model, ckpt, target, settings, checks)
    e.reason += f". Cheapest change that fits: {fix}" if fix else \
        ". Nothing in the catalog's checkpoints or these settings makes it fit this hardware"
    return e


# ----------------------------------------------------------------- the cheapest fix
# What one change costs the user, cheapest kind first (docs/fixes.md): a flag, a shorter
# context, a lower-precision KV cache, a quantized checkpoint, more of the GPUs given.
FLAG, CONTEXT, KV_DTYPE, CHECKPOINT, GPUS = range(5)
# the shortest context a fix may cut a request to (or the request's own, when shorter)
CONTEXT_FLOOR = 2048
UTIL_CEILING = 0.95  # the highest gpu_memory_utilization a fix suggests
MAX_EXTRA_TP = 8  # the most GPUs a fix that needs more than were given asks for
Layout = tuple[int, int]  # (tp, pp)

Cost = tuple[tuple[int, int], ...]  # the (kind, rank) of each change, costliest first


class _Pair(NamedTuple):
    """A checkpoint and a layout (tensor-parallel size and pipeline stages) to try, and
    what changing to them costs."""

    ckpt: Checkpoint
    tp: int
    pp: int
    target: Target  # with as many GPUs as the layout needs
    cost: Cost  # of its changes (none, the checkpoint, the layout, or both)


class _Helper(NamedTuple):
    """A flag that only ever helps a fit (more reservation, smaller KV, shorter context,
    a KV space sized to the context), tried on every pair that can fit at all."""

    cost: tuple[int, int]  # (kind, rank)
    words: str  # "" where the fix's figure names it (the context, the KV space)
    util: float | None = None
    kv_fp8: bool = False
    shorter_context: bool = False
    auto_kv_space: bool = False


class _Try(NamedTuple):
    cost: Cost
    pair: _Pair
    helpers: tuple[_Helper, ...]


class Fix(NamedTuple):
    """The cheapest change that fits: what to run, and its changes in words."""

    ckpt: Checkpoint
    target: Target  # the given one, with more GPUs or an auto-sized CPU KV space if the fix says so
    settings: EngineSettings
    text: str  # every change, e.g. "use REPO (awq 4-bit, …) with --gpu-memory-utilization 0.95"


class _Space:
    """What a fix search tries for one model under one target and settings, worked out once
    and filled in as searches ask: the ranker searches for every refused checkpoint of a
    model under the same request, and they try each other."""

    def __init__(self, model: Model, target: Target, settings: EngineSettings,
                 more_gpus: bool) -> None:
        cpu = target.engine == "vllm-cpu"
        self.model, self.target, self.settings = model, target, settings
        # the checkpoints a fix may change to, biggest (least lossy) first
        self.by_size = sorted((c for c in model.checkpoints if not cpu or not cpu_engine_refuses(c)),
                              key=lambda c: -c.weight_bytes)
        self.layouts = _layouts(model, target, settings, more_gpus)
        self.helpers, self.combos = _helpers(target, settings)
        self.auto_kv_target = target if target.cpu_kv_gib is None else \
            msgspec.structs.replace(target, cpu_kv_gib=None)
        self.floor = min(settings.max_model_len or 0, CONTEXT_FLOOR)
        # helpers only ever help, so a pair that fails with all of them fails with any (not
        # where vLLM captures CUDA graphs outside the reservation: before 0.21, and dense
        # models on 0.25-0.27's Model Runner V2; a higher utilization leaves them less room)
        self.prune = bool(self.helpers) and (
            cpu or graphs_in_reservation(model.arch, settings.vllm_version))
        self.feasible: dict[tuple[str, str, Layout], bool] = {}  # by checkpoint and layout
        self._asked: dict[tuple[str, str], tuple[_Pair, ...]] = {}
        # each pair's cheapest fit (see _first_fit), by checkpoint, layout and cost
        self.first: dict[tuple[str, str, Layout, Cost], Fix | None] = {}
        # every checkpoint with every layout, as the change of checkpoint, cheapest first
        self.changes = sorted((p for i, c in enumerate(self.by_size)
                               for p in self._pairs_of(c, (CHECKPOINT, i))),
                              key=lambda p: p.cost)
        # a layout of fewer GPUs than the one asked is a flag, whose tries mix with the
        # helpers'
        self.tp_below = any(cost and cost[0] == FLAG for _, _, cost, _ in self.layouts)
        # each variant of the settings built once, so that its hash (a key of FitChecks)
        # is worked out once
        self._variants: dict[tuple[int, int, float, bool], EngineSettings] = {}

    def variant(self, tp: int, pp: int, util: float | None, kv_fp8: bool) -> EngineSettings:
        """The settings with this layout and, where given, utilization and an fp8 KV cache."""
        key = (tp, pp, util or self.settings.gpu_mem_util, kv_fp8)
        got = self._variants.get(key)
        if got is None:
            changes: dict[str, object] = {}
            if tp != self.settings.tp:
                changes["tp"] = tp
            if pp != self.settings.pp:
                changes["pp"] = pp
            if util is not None:
                changes["gpu_mem_util"] = util
            if kv_fp8:
                changes["kv_cache_dtype"] = "fp8"
            got = self._variants[key] = msgspec.structs.replace(self.settings, **changes)
        return got

    def pairs(self, ckpt: Checkpoint) -> tuple[_Pair, ...]:
        """The checkpoint asked with each layout whose weights fit the card."""
        key = (ckpt.repo, ckpt.quant)
        got = self._asked.get(key)
        if got is None:
            got = self._asked[key] = self._pairs_of(ckpt, None)
        return got

    def _pairs_of(self, ckpt: Checkpoint, change: tuple[int, int] | None) -> tuple[_Pair, ...]:
        card = self.target.gpu_gib * GIB
        cpu = self.target.engine == "vllm-cpu"
        pairs = []
        for tp, pp, tp_cost, target in self.layouts:
            if not cpu and weights_bytes_per_gpu(ckpt, tp, pp) > card:
                continue  # no flag makes room beyond the card
            pairs.append(_Pair(ckpt=ckpt, tp=tp, pp=pp, target=target,
                               cost=_cost_of(change, tp_cost)))
        return tuple(pairs)


def _cost_of(a: tuple[int, int] | None, b: tuple[int, int] | None) -> Cost:
    """The cost of a pair's two possible changes (a checkpoint, a layout), costliest first."""
    if a is None:
        return () if b is None else (b,)
    if b is None:
        return (a,)
    return (a, b) if a > b else (b, a)


def cheapest_fix(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
                 checks: FitChecks | None = None) -> str:
    """The words of `find_fix`'s answer; "" when nothing fits."""
    fix = find_fix(model, ckpt, target, settings, checks)
    return fix.text if fix else ""


def find_fix(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
             checks: FitChecks | None = None) -> Fix | None:
    """The cheapest combination of changes with which vLLM starts, searched, every candidate
    checked with the estimator (`fits`); None when none does.

    What is searched: another checkpoint of the same model (on the CPU engine, those it
    loads); tensor or pipeline parallelism over the GPUs given, as advisor.placement plans
    it (tp where the heads divide, pp where they do not or NVLink is absent or unknown);
    gpu_memory_utilization 0.95, or what is free now where that is less; an fp8 KV cache;
    the request's context cut to the longest that fits (at least 2,048 tokens, or the
    request's own when shorter); on the CPU engine, VLLM_CPU_KVCACHE_SPACE sized to the
    context. Only when nothing on the GPUs given fits, tp or pp over more.

    The order (docs/fixes.md): fixes on the GPUs given before any that needs more; then
    fewer changes first; then, change by change from the costliest, the cheaper kind:
    a flag (utilization, KV space, fewer GPUs) < a shorter context < an fp8 KV cache <
    a quantized checkpoint (the bigger first) < more of the GPUs given (fewer first).
    The search goes one number of changes at a time and stops at the first fit. It skips
    a checkpoint and tp whose weights alone exceed the card, and, from vLLM 0.21 on, one
    that does not fit even with every helping flag set."""
    checks = checks or FitChecks(model)
    key = (ckpt.repo, ckpt.quant, target, settings)
    if key in checks.fixes:
        return checks.fixes[key]
    found = _loadable_sibling(checks, target, settings) if (
        target.engine == "vllm-cpu" and cpu_engine_refuses(ckpt)) else None
    if found is None:
        found = _search(checks, ckpt, checks.space(target, settings, more_gpus=False))
    if found is None and target.engine == "vllm":
        found = _search(checks, ckpt, checks.space(target, settings, more_gpus=True))
    checks.fixes[key] = found
    return found


def _loadable_sibling(checks: FitChecks, target: Target, settings: EngineSettings) -> Fix | None:
    """For a checkpoint the CPU engine refuses: its biggest sibling that loads, if that fits
    as asked. Every fix of such a refusal changes the checkpoint, so this one change, the
    cheapest checkpoint of all, is the search's own answer, found without building the
    search (a GPU-less host's ranking has a refusal per fp8 and 8-bit row)."""
    loadable = [c for c in checks.model.checkpoints if not cpu_engine_refuses(c)]
    if not loadable:
        return None
    biggest = max(loadable, key=lambda c: c.weight_bytes)  # the first of the biggest, as _Space
    if not checks.fits(biggest, target, settings):
        return None
    return Fix(ckpt=biggest, target=target, settings=settings, text=_checkpoint_words(biggest))


def _search(checks: FitChecks, ckpt: Checkpoint, space: _Space) -> Fix | None:
    """The tries in cost order, each checked until one fits. Every change of a pair (a
    checkpoint, more GPUs) outranks every helper, so the tries come pair by pair, the
    pair asked first, each pair's in the helpers' own order; only a tp below the one asked,
    a flag, mixes with the helpers, and then the tries are sorted."""
    # the CPU engine refuses such a checkpoint whatever the flags: only another one fixes it
    refused = space.target.engine == "vllm-cpu" and bool(cpu_engine_refuses(ckpt))
    own = () if refused else space.pairs(ckpt)
    # lazily: the search stops at its first fit, most often well before the last pair
    others = (p for p in space.changes if refused or p.ckpt.weight_bytes < ckpt.weight_bytes)
    if space.tp_below:
        return _search_sorted(checks, space, [*own, *others])
    costed = sorted((p for p in own if p.cost), key=_pair_cost)
    # both in cost order (space.changes is sorted); on a tie the asked checkpoint first
    rest = heapq.merge(costed, others, key=_pair_cost) if costed else others
    for p in chain((p for p in own if not p.cost), rest):
        fix = _first_fit(checks, space, p)
        if fix is not None:
            return fix
    return None


def _pair_cost(p: _Pair) -> Cost:
    return p.cost


def _search_sorted(checks: FitChecks, space: _Space, pairs: list[_Pair]) -> Fix | None:
    """The tries grouped by their pair's costliest change where it outranks every helper
    (a checkpoint, GPUs), each group's sorted: no helper outranks that change."""
    groups: dict[tuple[int, int], list[_Pair]] = {}
    for p in pairs:
        lead = p.cost[0] if p.cost and p.cost[0][0] >= CHECKPOINT else (FLAG, -1)
        groups.setdefault(lead, []).append(p)
    for lead in sorted(groups):
        tries = [_Try(cost=tuple(sorted(p.cost + cost, reverse=True)) if p.cost and cost
                      else p.cost or cost, pair=p, helpers=hs)
                 for p in groups[lead] for hs, cost in space.combos if p.cost or hs]
        tries.sort(key=lambda t: t.cost)
        for t in tries:
            if space.prune and t.helpers and not _feasible(checks, space, t.pair):
                continue
            fix = _fits_with(checks, space, t.pair, t.helpers)
            if fix is not None:
                return fix
    return None


def _first_fit(checks: FitChecks, space: _Space, pair: _Pair) -> Fix | None:
    """The pair with each combination of helpers, cheapest first, until one fits;
    remembered, as the searches of a model's other checkpoints try the same pairs."""
    key = (pair.ckpt.repo, pair.ckpt.quant, (pair.tp, pair.pp), pair.cost)
    if key not in space.first:
        space.first[key] = _first_fit_of(checks, space, pair)
    return space.first[key]


def _first_fit_of(checks: FitChecks, space: _Space, pair: _Pair) -> Fix | None:
    for hs, _ in space.combos:
        if not hs:
            if not pair.cost:  # the checkpoint and flags asked: the refusal itself
                continue
        elif space.prune and not _feasible(checks, space, pair):
            return None
        fix = _fits_with(checks, space, pair, hs)
        if fix is not None:
            return fix
    return None


def _layouts(model: Model, target: Target, settings: EngineSettings,
             more_gpus: bool) -> list[tuple[int, int, tuple[int, int] | None, Target]]:
    """Each layout (tp, pp) to try with the cost of changing to it (None: the one asked) and
    the target with as many GPUs: the one asked and those of other sizes that the GPUs
    given allow, or with `more_gpus` only sizes above the GPUs given (up to MAX_EXTRA_TP)."""
    if target.engine == "vllm-cpu":
        return [(settings.tp, settings.pp, None, target)]
    asked = settings.tp * settings.pp
    if more_gpus:
        return [(tp, pp, (GPUS, rank), msgspec.structs.replace(target, gpus=tp * pp))
                for tp, pp, rank in _by_size(model, target, max(target.gpus, asked) + 1,
                                             MAX_EXTRA_TP)]
    return [(settings.tp, settings.pp, None, target)] + [
        (tp, pp, (GPUS if tp * pp > asked else FLAG, rank), target)
        for tp, pp, rank in _by_size(model, target, 1, target.gpus)
        if (tp, pp) != (settings.tp, settings.pp)]


def _by_size(model: Model, target: Target, low: int,
             high: int) -> list[tuple[int, int, int]]:
    """(tp, pp, rank) for each number of GPUs from low to high, as advisor.placement's
    choose_parallel tries them (placement.layouts): NVLinked, tp (or, where the heads do
    not divide, tp x pp) before pp; without NVLink or unknown, pp before tp. The rank
    orders them: fewer GPUs first, then the one placement tries first."""
    return [(tp, pp, 2 * n + i) for n in range(low, high + 1)
            for i, (tp, pp) in enumerate(layouts(model, n, target.nvlink))]


Combos = tuple[tuple[tuple[_Helper, ...], Cost], ...]


@lru_cache(maxsize=256)
def _helpers(target: Target, settings: EngineSettings) -> tuple[tuple[_Helper, ...], Combos]:
    """The helping flags for a request, and every combination of them (none first),
    cheapest first, with its cost. Kept per request: every model's search uses the same."""
    helpers = _helpers_of(target, settings)
    combos = sorted(((hs, tuple(sorted((h.cost for h in hs), reverse=True)))
                     for k in range(len(helpers) + 1)
                     for hs in combinations(helpers, k)), key=lambda hc: hc[1])
    return helpers, tuple(combos)


def _helpers_of(target: Target, settings: EngineSettings) -> tuple[_Helper, ...]:
    helpers = []
    if target.engine == "vllm-cpu":
        if target.cpu_kv_gib is not None:
            helpers.append(_Helper(cost=(FLAG, 0), words="", auto_kv_space=True))
    else:
        util, why = UTIL_CEILING, ""
        free = free_on(target, settings.tp * settings.pp)
        if free is not None:
            usable = math.floor((free - CUDA_CONTEXT_GIB) / target.gpu_gib * 100) / 100
            if usable < util:
                util, why = usable, (" (what is free now)" if target.free_basis == "now" else
                                     " (what the memory no listed process holds leaves)")
        if util != settings.gpu_mem_util and util > 0.05:
            helpers.append(_Helper(cost=(FLAG, 0), util=util,
                                   words=f"--gpu-memory-utilization {util:.2f}{why}"))
    if settings.max_model_len:
        helpers.append(_Helper(cost=(CONTEXT, 0), words="", shorter_context=True))
    if target.engine == "vllm" and settings.kv_cache_dtype == "auto":
        helpers.append(_Helper(cost=(KV_DTYPE, 0), words="--kv-cache-dtype fp8", kv_fp8=True))
    return tuple(helpers)


def _feasible(checks: FitChecks, space: _Space, pair: _Pair) -> bool:
    """Whether the pair fits with every helper set: the bound that prunes it otherwise."""
    key = (pair.ckpt.repo, pair.ckpt.quant, (pair.tp, pair.pp))
    got = space.feasible.get(key)
    if got is None:
        s, target = _applied(space, pair, [h for h in space.helpers if not h.shorter_context])
        if s.max_model_len:
            # the request's context, or one cut to at least the floor (the longest is
            # capped at native, so a request past it needs the cut)
            got = checks.longest(pair.ckpt, target, s) >= space.floor
        else:
            got = checks.fits(pair.ckpt, target, s)
        space.feasible[key] = got
    return got


def _applied(space: _Space, pair: _Pair,
             helpers: Iterable[_Helper]) -> tuple[EngineSettings, Target]:
    """The settings and target of a pair with these helpers (the context left as asked)."""
    util, kv_fp8, target = None, False, pair.target
    for h in helpers:
        if h.util is not None:
            util = h.util
        kv_fp8 = kv_fp8 or h.kv_fp8
        if h.auto_kv_space:
            target = space.auto_kv_target
    return space.variant(pair.tp, pair.pp, util, kv_fp8), target


def _fits_with(checks: FitChecks, space: _Space, pair: _Pair,
               helpers: tuple[_Helper, ...]) -> Fix | None:
    """The fix if the pair fits with these helpers, else None."""
    s, target = _applied(space, pair, helpers)
    flags = [h.words for h in helpers if h.words]
    asked = s.max_model_len
    if asked and any(h.shorter_context for h in helpers):
        longest = checks.longest(pair.ckpt, target, s)
        if not space.floor <= longest < asked:  # too short, or no cut needed (a cheaper try)
            return None
        s = msgspec.structs.replace(s, max_model_len=longest)
        flags.append(f"--max-model-len {longest}")
    if not checks.fits(pair.ckpt, target, s):
        return None
    if any(h.auto_kv_space for h in helpers):
        space_gib = estimate(checks.model, pair.ckpt, target, s).cpu_kv_space_gib
        flags.insert(0, f"VLLM_CPU_KVCACHE_SPACE={space_gib}")
        target = msgspec.structs.replace(target, cpu_kv_gib=space_gib)
    return Fix(ckpt=pair.ckpt, target=target, settings=s, text=_describe(space, pair, flags))


def _describe(space: _Space, pair: _Pair, flags: list[str]) -> str:
    """Every change of the fix: "use REPO (awq 4-bit, 5.19 GiB of weights) with
    --gpu-memory-utilization 0.95 and --max-model-len 16384"."""
    words = []
    if any(kind == CHECKPOINT for kind, _ in pair.cost):
        words.append(_checkpoint_words(pair.ckpt))
    layout = []
    if pair.tp != space.settings.tp:
        layout.append(f"--tensor-parallel-size {pair.tp}")
    if pair.pp != space.settings.pp:
        layout.append(f"--pipeline-parallel-size {pair.pp}")
    if layout and pair.tp * pair.pp > space.target.gpus:
        layout[-1] += f" (needs {pair.tp * pair.pp} GPUs)"
    words += layout + flags
    if words[0].startswith(("use ", "quantize ")) and len(words) > 1:
        return f"{words[0]} with {' and '.join(words[1:])}"
    return " and ".join(words)


def _checkpoint_words(c: Checkpoint) -> str:
    how = "quantize at load with --quantization " + c.quant if c.at_load else f"use {c.repo}"
    return f"{how} ({c.label}, {c.weight_bytes / GIB:.2f} GiB of weights)"
