"""The two questions the product answers, as the CLI and the web both ask them:
"how will this model do here?" (estimate) and "which model should I run?" (recommend)."""

from __future__ import annotations

import msgspec

from advisor.catalog import Catalog
from advisor.errors import AdvisorError
from advisor.estimate import EngineSettings, Estimate, Target
from advisor.hfmeta import resolve
from advisor.history import LoadTest, Measurement, find
from advisor.placement import on_gpus, place, with_layout
from advisor.plan import checkpoint_for, plan, settings_for, target_for, with_replica_speed
from advisor.rank import Result, recommend
from advisor.specs import Checkpoint, GpuSpec, HostProfile, Model, PlanRequest


class Recommendation(msgspec.Struct, kw_only=True):
    request: PlanRequest
    host: HostProfile
    results: list[Result]


class Refusal(AdvisorError):
    """The request names something that cannot be planned (a quantization the model lacks)."""


class Plan(msgspec.Struct, kw_only=True):
    """One model, the checkpoint the request names, the flags, and the estimate."""

    model: Model
    ckpt: Checkpoint
    target: Target
    settings: EngineSettings
    estimate: Estimate


def plan_for(req: PlanRequest, catalog: Catalog, host: HostProfile, gpus: list[GpuSpec],
             check_free: bool = False, history: tuple[Measurement, ...] = (), *,
             local_ok: bool = True) -> Plan:
    """`local_ok`: the caller may name a local folder (the CLI, or a web caller with the key)."""
    if not req.model:
        raise AdvisorError("model: name a catalog id, a listed repo, or a model folder")
    model, named = resolve(req.model, catalog, local_ok=local_ok)
    ckpt = named if named and (req.quant is None or named.quant == req.quant) else \
        checkpoint_for(model, req.quant)
    if ckpt is None:
        have = ", ".join(sorted({c.quant for c in model.checkpoints}))
        raise Refusal(f"quant: {model.id} has no {req.quant} checkpoint (it has: {have}; "
                      "fp8 and bitsandbytes can also quantize the plain one at load)")
    target = target_for(req, host, gpus, check_free=check_free, history=history)
    settings = settings_for(req)
    if target.engine != "vllm":
        est = _calibrated(plan(model, ckpt, target, settings), target, ckpt, settings)
        return Plan(model=model, ckpt=ckpt, target=target, settings=settings, estimate=est)
    # on GPUs: tp or pp, replicas, and which GPUs; the estimate is the first replica's
    placed = place(model, ckpt, target, settings, replicas=req.replicas,
                   fit_to_need=req.fit_to_need,
                   parallel_given=req.tp is not None or req.pp is not None)
    settings, layout = placed.settings, placed.layout
    first = on_gpus(target, layout.replicas[0]) if layout.replicas else target
    est = with_layout(plan(model, ckpt, first, settings), layout, settings, placed.refusal)
    est = _calibrated(with_replica_speed(est, model, ckpt, first, settings), first, ckpt, settings)
    return Plan(model=model, ckpt=ckpt, target=first, settings=settings, estimate=est)


def _calibrated(est: Estimate, target: Target, ckpt: Checkpoint,
                settings: EngineSettings) -> Estimate:
    """The estimate with its decode speed scaled by a load test of the same checkpoint and
    flags on this host, where one was run (and says so in its provenance)."""
    seen = find(target.history, ckpt.repo, ckpt.quant, target.gpu_name, settings.tp,
                est.max_num_batched_tokens, settings.enforce_eager, settings.vllm_version)
    if seen and seen.speed and est.decode_tokens_per_s:  # a load test here scales the roofline
        ratio = seen.speed.ratio
        est.decode_tokens_per_s = round(est.decode_tokens_per_s * ratio, 1)
        if est.decode_tokens_per_s_at_concurrency:
            est.decode_tokens_per_s_at_concurrency = round(
                est.decode_tokens_per_s_at_concurrency * ratio, 1)
        est.provenance = {**est.provenance, "decode_tokens_per_s": seen.speed.note}
    return est


def estimate_for(req: PlanRequest, catalog: Catalog, host: HostProfile, gpus: list[GpuSpec],
                 check_free: bool = False, history: tuple[Measurement, ...] = (), *,
                 local_ok: bool = True) -> Estimate:
    return plan_for(req, catalog, host, gpus, check_free, history, local_ok=local_ok).estimate


def recommend_for(req: PlanRequest, catalog: Catalog, host: HostProfile,
                  gpus: list[GpuSpec], history: tuple[Measurement, ...] = (),
                  tests: tuple[LoadTest, ...] = ()) -> Recommendation:
    """`tests`: this host's load tests (advisor.history.load_tests); those of the target's
    engine and hardware calibrate the ranking's speed (advisor.calibrate)."""
    if not req.use_case:
        raise AdvisorError("use_case: one of code, math, chat, edge, long-context, multilingual")
    target = target_for(req, host, gpus, history=history)
    # a pp asked is kept as a tp is: placement does not lay the GPUs out again
    results = recommend(catalog.models, req.use_case, target, settings_for(req),
                        tp_given=req.tp is not None or req.pp is not None,
                        replicas=req.replicas, tests=tests_for(tests, req, host, target))
    return Recommendation(request=req, host=host, results=results)


def tests_for(tests: tuple[LoadTest, ...], req: PlanRequest, host: HostProfile,
              target: Target) -> tuple[LoadTest, ...]:
    """The load tests that speak for the target: on the CPU engine (always this host's
    CPU), those of the CPU engine; on a GPU, those of this host's GPU model, and none for a
    GPU named in the request (another machine's), as target_for takes history."""
    if not tests:
        return ()
    if target.engine == "vllm-cpu":
        return tuple(t for t in tests if t.engine == "vllm-cpu")
    if not host.gpus or req.gpu:
        return ()
    return tuple(t for t in tests if t.engine == "vllm" and t.gpu_name == target.gpu_name)
