"""Place a plan on the GPUs of one host (docs/gpus.md). Pure.

- Where one GPU cannot hold the model, the fewest GPUs that can: tensor parallelism where
  the GPUs are NVLinked and the attention and KV heads divide, pipeline parallelism where
  the heads do not divide or NVLink is absent or unknown (vLLM's parallelism guide:
  docs.vllm.ai/en/latest/serving/parallelism_scaling.html, "GPUs lack NVLink (e.g. L40S)").
- Where one replica holds the model but not the concurrency asked, data-parallel replicas
  over the GPUs left (vLLM's data parallel deployment guide: docs.vllm.ai/en/latest/serving/
  data_parallel_deployment.html); dense models as independent engines behind the advisor's
  /v1 (its "external load balancing"), mixture-of-experts models as one engine with
  --data-parallel-size, whose ranks must step together.
- Each replica on the GPUs with the most free memory; a GPU another model already uses
  gets a gpu_memory_utilization from this plan's predicted need, not vLLM's default 0.9.
- Budgets are never pooled except through tp and pp: every figure is per GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from advisor.estimate import CUDA_CONTEXT_GIB, EngineSettings, Estimate, Target, estimate, free_on
from advisor.specs import Checkpoint, GpuShare, Layout, Model

Fits = Callable[[EngineSettings], bool]
UTIL_FLOOR = 0.05  # the lowest gpu_memory_utilization a shared GPU is given


def tp_divides(model: Model, tp: int) -> bool:
    """vLLM's own rule: attention heads divide across the ranks, and KV heads divide or
    replicate evenly (the estimator refuses the rest)."""
    heads, kv = model.arch.attention_heads, model.arch.kv_heads
    return not heads % tp and (tp <= kv and not kv % tp or tp > kv and not tp % kv)


def largest_tp(model: Model, gpus: int) -> int:
    """The largest tp that divides `gpus` and the model's heads (tp_divides): the tp of a
    tp × pp layout of that many GPUs, pipeline stages making up the rest."""
    return max(t for t in range(1, gpus + 1) if not gpus % t and tp_divides(model, t))


def layouts(model: Model, gpus: int, nvlink: bool | None) -> list[tuple[int, int]]:
    """The layouts (tp, pp) of `gpus` GPUs, in the order choose_parallel tries them. NVLinked:
    tp over all of them where the heads divide, else the largest tp that does with the rest
    as pipeline stages (tp x pp), then pp alone. No NVLink or unknown: pp, then tp (where pp
    cannot hold it, tp still might)."""
    if gpus == 1:
        return [(1, 1)]
    pp_only = [(1, gpus)] if gpus <= model.arch.layers else []
    if nvlink:
        tp = largest_tp(model, gpus)  # gpus itself where the heads divide by it
        mixed = [(tp, gpus // tp)] if tp > 1 and gpus // tp <= model.arch.layers else []
        return mixed + pp_only
    tp_only = [(gpus, 1)] if tp_divides(model, gpus) else []
    return pp_only + tp_only


def choose_parallel(model: Model, target: Target, settings: EngineSettings,
                    fits: Fits, fits_as_is: bool | None = None) -> tuple[EngineSettings, list[str]]:
    """The fewest GPUs of the target that hold the model, and how: tp or pp. The settings
    unchanged where one GPU holds it or nothing on these GPUs does. `fits_as_is`: the
    caller's answer for `settings`, where it has one."""
    if fits_as_is is None:
        fits_as_is = fits(settings)
    if target.engine != "vllm" or target.gpus <= 1 or fits_as_is:
        return settings, []
    for n in range(2, target.gpus + 1):
        for tp, pp in layouts(model, n, target.nvlink):
            s = msgspec.structs.replace(settings, tp=tp, pp=pp)
            if fits(s):
                return s, [_why(model, n, tp, target.nvlink)]
    return settings, []


def _why(model: Model, n: int, tp: int, nvlink: bool | None) -> str:
    a = model.arch
    if 1 < tp < n:
        return (f"one GPU cannot hold it: tensor parallelism {tp} × pipeline parallelism "
                f"{n // tp} over {n} GPUs (NVLinked; {a.attention_heads} attention / "
                f"{a.kv_heads} KV heads do not divide by {n}: tp {tp} within, pp across)")
    if tp > 1:
        link = "NVLinked" if nvlink else "no NVLink, and pipeline stages do not hold it"
        return (f"one GPU cannot hold it: tensor parallelism over {n} GPUs ({link}; "
                f"{a.attention_heads} attention heads and {a.kv_heads} KV heads divide)")
    if not tp_divides(model, n):
        cause = f"{a.attention_heads} attention / {a.kv_heads} KV heads do not divide by {n}"
    else:
        cause = "no NVLink between them" if nvlink is False else \
            "NVLink unknown, planned as none"
    return f"one GPU cannot hold it: pipeline parallelism over {n} GPUs ({cause})"


def gpu_order(target: Target) -> list[int]:
    """The GPUs in the order replicas take them: most free first (by index on a tie)."""
    if target.free_by_gpu:
        return [i for i, _ in sorted(target.free_by_gpu, key=lambda g: (-g[1], g[0]))]
    return list(range(target.gpus))


def on_gpus(target: Target, ids: list[int]) -> Target:
    """The target narrowed to these GPUs (their free memory only)."""
    if not target.free_by_gpu:
        return target
    return msgspec.structs.replace(
        target, free_by_gpu=tuple(g for g in target.free_by_gpu if g[0] in ids),
        unowned_by_gpu=tuple(g for g in target.unowned_by_gpu if g[0] in ids))


def need_util(model: Model, ckpt: Checkpoint, target: Target,
              settings: EngineSettings) -> float | None:
    """The least gpu_memory_utilization (hundredths) with which vLLM starts and its pool
    holds `concurrency` sequences of max_model_len, within what is free on the GPUs the plan
    takes; None when none does, or no context is asked (the need is then open-ended)."""
    free = free_on(target, settings.tp * settings.pp)
    if not settings.max_model_len or settings.kv_cache_memory_bytes or free is None:
        return None
    top = math.floor((free - CUDA_CONTEXT_GIB) / target.gpu_gib * 100)

    def enough(hundredths: int) -> bool:
        e = estimate(model, ckpt, target,
                     msgspec.structs.replace(settings, gpu_mem_util=hundredths / 100))
        return e.fits and e.meets_request

    low = round(UTIL_FLOOR * 100)
    if top < low or not enough(top):
        return None
    while low < top:  # the smallest that is enough: more memory never hurts a fit
        mid = (low + top) // 2
        if enough(mid):
            top = mid
        else:
            low = mid + 1
    return top / 100


class Placed(NamedTuple):
    settings: EngineSettings
    layout: Layout
    refusal: str  # why the replicas asked cannot be placed ("" when they can)


def place(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings, *,
          replicas: int | None = None, fit_to_need: bool = False,
          parallel_given: bool = False, known: Estimate | None = None,
          fits: Fits | None = None) -> Placed:
    """tp or pp, data-parallel replicas, their GPUs and what is left on each GPU.
    `replicas`: as many as asked (None: as the concurrency asks); `fit_to_need`: size the
    reservation to the predicted need even on a GPU nobody else uses; `parallel_given`: the
    request named tp or pp, which are kept; `known`: the estimate of these very arguments,
    where the caller has it (the ranker does), so that it is not made again; `fits`: the
    caller's remembered answers (plan.FitChecks) for this checkpoint on this target."""
    reasons: list[str] = []
    asked = settings
    if not parallel_given:
        settings, why = choose_parallel(
            model, target, settings,
            fits or (lambda s: estimate(model, ckpt, target, s).fits),
            known.fits if known is not None else None)
        reasons += why
    world = settings.tp * settings.pp
    order = gpu_order(target)
    groups = len(order) // world
    first = on_gpus(target, order[:world])
    shared = bool(target.free_by_gpu) and \
        (free_on(first, world) or 0) - CUDA_CONTEXT_GIB < target.gpu_gib * settings.gpu_mem_util
    if fit_to_need or shared:
        util = need_util(model, ckpt, first, settings)
        if util is not None and util != settings.gpu_mem_util:
            settings = msgspec.structs.replace(settings, gpu_mem_util=util)
            reasons.append(f"gpu_memory_utilization {util:g}: the predicted need of "
                           f"{settings.concurrency} × {settings.max_model_len:,} tokens"
                           + (" (the GPU is shared with what already runs there)" if shared
                              else ", the rest of the GPU left to other models"))
    one = known if known is not None and settings == asked and first == target else \
        estimate(model, ckpt, first, settings)
    dp, refusal = 1, ""
    if replicas:
        dp = replicas
        if replicas > groups:
            refusal = (f"replicas: {replicas} replicas of {world} GPU(s) each need "
                       f"{replicas * world} GPUs; {len(order)} planned")
    elif one.fits and not one.meets_request and groups > 1 and one.max_concurrency > 0:
        dp = min(groups, math.ceil(settings.concurrency / one.max_concurrency))
        reasons.append(f"one replica holds {one.max_concurrency:g} of the {settings.concurrency} "
                       f"sequences asked: {dp} data-parallel replicas")
    placed = [order[r * world:(r + 1) * world] for r in range(min(dp, groups))]
    if len(placed) > 1 and target.free_by_gpu and not refusal:
        # one utilization for every replica: where the last (least free) GPUs cannot take
        # it, the predicted need, if that fits there
        last = on_gpus(target, placed[-1])
        if not estimate(model, ckpt, last, settings).fits:
            each = math.ceil(settings.concurrency / len(placed))  # what one replica holds
            util = need_util(model, ckpt, last,
                             msgspec.structs.replace(settings, concurrency=each))
            if util is not None:
                settings = msgspec.structs.replace(settings, gpu_mem_util=util)
                one = estimate(model, ckpt, first, settings)
                reasons.append(f"gpu_memory_utilization {util:g} on every replica: the "
                               f"predicted need of {each} × {settings.max_model_len:,} "
                               f"tokens each, as GPU {placed[-1]} is shared")
    if not refusal and target.free_by_gpu:  # GPUs alike otherwise: the first one's answer
        for r, ids in enumerate(placed[1:], start=1):
            if not estimate(model, ckpt, on_gpus(target, ids), settings).fits:
                if replicas:
                    refusal = (f"replicas: replica {r + 1} on GPU {ids} does not fit in the "
                               "memory free there")
                    break
                placed, dp = placed[:r], r  # the replicas that fit
                reasons.append(f"{r} replica(s): the next GPUs have too little free")
                break
    moe = model.arch.experts > 0
    layout = Layout(tp=settings.tp, pp=settings.pp, dp=dp,
                    dp_mode="data-parallel-size" if moe and dp > 1 else "engines",
                    replicas=placed, gpus=_shares(target, one, settings, placed),
                    nvlink=target.nvlink, reasons=reasons)
    return Placed(settings=settings, layout=layout, refusal=refusal)


def _shares(target: Target, est: Estimate, settings: EngineSettings,
            placed: list[list[int]]) -> list[GpuShare]:
    """Every GPU of the target, with what the plan takes on it and what is left."""
    free = dict(target.free_by_gpu) or {i: target.gpu_gib for i in range(target.gpus)}
    if settings.kv_cache_memory_bytes:
        # no reservation: what the engine holds is its figures (and the CUDA context)
        taken = (est.weights_gib + est.activation_gib + est.non_torch_gib + est.cuda_graph_gib
                 + settings.kv_cache_memory_bytes / 2**30)
    else:
        taken = est.reservation_gib
    taken = round(taken + CUDA_CONTEXT_GIB, 2)
    on = {i: r for r, ids in enumerate(placed) for i in ids}
    return [GpuShare(index=i, free_gib=round(f, 2), replica=on.get(i, 0),
                     planned_gib=taken if i in on else 0.0,
                     left_gib=round(f - taken, 2) if i in on else round(f, 2))
            for i, f in sorted(free.items())]


def with_layout(e: Estimate, layout: Layout, settings: EngineSettings, refusal: str) -> Estimate:
    """The first replica's estimate, carrying the layout: the request is met when the
    replicas together hold the sequences asked; a refusal of the replicas is a "no"."""
    e.layout = layout
    if layout.dp > 1 and e.fits:
        e.meets_request = e.max_concurrency * layout.dp >= settings.concurrency
    if refusal:
        e.fits, e.meets_request = False, False
        e.reason = "; ".join(r for r in (e.reason, refusal) if r)
        e.verdict = "does not fit"
    return e
