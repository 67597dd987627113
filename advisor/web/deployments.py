"""Launch, list, watch and stop engines: JSON endpoints over the Supervisor."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from advisor.config import Settings
from advisor.enginelog import is_probe, phase_spans
from advisor.loadtest import bench_deployment
from advisor.specs import BenchRequest, Deployment, PlanRequest
from advisor.supervisor import Supervisor
from advisor.web.auth import require_key


@post("/api/deployments", guards=[require_key], status_code=202, tags=["deployments"])
async def launch(data: JSONBody[PlanRequest], supervisor: NamedDependency[Supervisor]) -> Deployment:
    """Start an engine for `model` with the plan's flags; 422 with the estimator's reason when
    it will not fit in the memory free now, 409 when no engine port is free."""
    return await supervisor.launch(data)


@get("/api/deployments", sync_to_thread=False, tags=["deployments"])
def deployments(supervisor: NamedDependency[Supervisor]) -> list[Deployment]:
    """Every deployment, newest first, with its state, timings and figures."""
    return supervisor.all()


@get("/api/deployments/{deployment_id:str}", sync_to_thread=False, tags=["deployments"])
def deployment(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor]) -> Deployment:
    return supervisor.get(deployment_id)


@delete("/api/deployments/{deployment_id:str}", guards=[require_key], status_code=202,
        tags=["deployments"])
async def stop(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor]) -> Response[Deployment]:
    """Stop the engine's whole process group (TERM, then KILL after a grace period)."""
    return Response(await supervisor.stop(deployment_id), status_code=202)


@get("/api/deployments/{deployment_id:str}/logs", guards=[require_key], sync_to_thread=True,
     media_type="text/plain", tags=["deployments"])
def logs(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor],
         lines: Annotated[int, Parameter(ge=1, le=10000)] = 200,
         probes: FromQuery[bool] = True) -> str:
    """The engine's log tail (it can name the engine's own key, hence the guard);
    `probes=false` leaves out the advisor's own /health and /metrics calls in its access log."""
    if probes:
        return supervisor.log_tail(deployment_id, lines)
    kept = [x for x in supervisor.log_tail(deployment_id, 10000).splitlines() if not is_probe(x)]
    return "\n".join(kept[-lines:]) + "\n"


class Phase(msgspec.Struct, kw_only=True):
    phase: str
    started_s: float
    took_s: float | None


@get("/api/deployments/{deployment_id:str}/phases", sync_to_thread=True, tags=["deployments"])
def phases(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor]) -> list[Phase]:
    """The start-up phases the engine's log shows so far, each with when it began and how
    long it took (seconds, by the log's own timestamps)."""
    d = supervisor.get(deployment_id)
    try:
        with Path(d.log_path).open("rb") as fh:
            text = fh.read(16 * 2**20).decode(errors="replace")
    except OSError:
        return []
    return [Phase(phase=s.phase, started_s=s.started_s, took_s=s.took_s)
            for s in phase_spans(text.splitlines())]


@get("/api/deployments/{deployment_id:str}/metrics", tags=["deployments"])
async def metrics(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor]) -> dict[str, float]:
    """vLLM's Prometheus metrics of a ready engine, flattened (empty when not ready)."""
    return await supervisor.metrics(deployment_id)


@post("/api/deployments/{deployment_id:str}/bench", guards=[require_key], status_code=200,
      tags=["deployments"])
async def bench(deployment_id: FromPath[str], data: JSONBody[BenchRequest],
                supervisor: NamedDependency[Supervisor]) -> Deployment:
    """A bounded load test of a ready engine with vLLM's own client (`vllm bench serve`): the
    deployment with its figures in `benches`; 422 when it is not ready or one is running.
    Never run unless asked: it loads the engine (and a shared GPU) for its length."""
    return await bench_deployment(supervisor, deployment_id, data)


class Download(msgspec.Struct, kw_only=True):
    bytes: int  # in the Hugging Face cache so far, partial files included
    expected_bytes: int | None  # the checkpoint's weights as stored (what is fetched)
    local: bool  # a local folder: nothing to download


@get("/api/deployments/{deployment_id:str}/download", sync_to_thread=True, tags=["deployments"])
def download(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor],
             settings: NamedDependency[Settings]) -> Download:
    """How far the model's download has come: the bytes of its folder in the Hugging Face
    cache (the `.incomplete` files huggingface_hub writes included)."""
    d = supervisor.get(deployment_id)
    weights = d.predicted.get("weights_gib")  # an older record: the plan's share of them
    expected = d.weight_bytes or (int(weights * 2**30) if isinstance(weights, int | float)
                                  else None)
    if Path(d.repo).is_dir():
        return Download(bytes=0, expected_bytes=expected, local=True)
    folder = settings.hf_cache / ("models--" + d.repo.replace("/", "--"))
    total = 0
    for f in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
    return Download(bytes=total, expected_bytes=expected, local=False)
