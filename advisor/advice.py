"""The two questions the product answers, as the CLI and the web both ask them:
"how will this model do here?" (estimate) and "which model should I run?" (recommend)."""

from __future__ import annotations

import msgspec

from advisor.calibrate import calibration
from advisor.catalog import Catalog
from advisor.errors import AdvisorError
from advisor.estimate import EngineSettings, Estimate, Target
from advisor.hfmeta import resolve
from advisor.history import LoadTest, Measurement
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
             local_ok: bool = True, tests: tuple[LoadTest, ...] = ()) -> Plan:
    """`local_ok`: the caller may name a local folder (the CLI, or a web caller with the key);
    `tests`: this host's load tests, which calibrate the decode speed as a ranking's is."""
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
    tests = tests_for(tests, req, host, target)
    if target.engine != "vllm":
        est = _calibrated(plan(model, ckpt, target, settings), model, catalog, target, ckpt,
                          settings, tests)
        return Plan(model=model, ckpt=ckpt, target=target, settings=settings, estimate=est)
    # on GPUs: tp or pp, replicas, and which GPUs; the estimate is the first replica's
    placed = place(model, ckpt, target, settings, replicas=req.replicas,
                   fit_to_need=req.fit_to_need,
                   parallel_given=req.tp is not None or req.pp is not None)
    settings, layout = placed.settings, placed.layout
    first = on_gpus(target, layout.replicas[0]) if layout.replicas else target
    est = with_layout(plan(model, ckpt, first, settings), layout, settings, placed.refusal)
    est = _calibrated(with_replica_speed(est, model, ckpt, first, settings), model, catalog,
                      first, ckpt, settings, tests)
    return Plan(model=model, ckpt=ckpt, target=first, settings=settings, estimate=est)


def _calibrated(est: Estimate, model: Model, catalog: Catalog, target: Target, ckpt: Checkpoint,
                settings: EngineSettings, tests: tuple[LoadTest, ...]) -> Estimate:
    """The estimate with its decode speed calibrated by this host's load tests as a ranking
    calibrates it (advisor.calibrate): the checkpoint's own test, else the host's factor
    from the catalog's tested checkpoints (and says so in its provenance)."""
    if not tests:
        return est
    models = catalog.models if any(m is model for m in catalog.models) else [*catalog.models, model]
    cal = calibration(models, target, settings, tests)
    return cal.apply(ckpt, est)[0] if cal else est


def estimate_for(req: PlanRequest, catalog: Catalog, host: HostProfile, gpus: list[GpuSpec],
                 check_free: bool = False, history: tuple[Measurement, ...] = (), *,
                 local_ok: bool = True, tests: tuple[LoadTest, ...] = ()) -> Estimate:
    return plan_for(req, catalog, host, gpus, check_free, history, local_ok=local_ok,
                    tests=tests).estimate


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
