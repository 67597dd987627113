"""Launch, list, watch and stop engines: JSON endpoints over the Supervisor."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

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
         lines: Annotated[int, Parameter(ge=1, le=10000)] = 200) -> str:
    """The engine's log tail (it can name the engine's own key, hence the guard)."""
    return supervisor.log_tail(deployment_id, lines)


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
