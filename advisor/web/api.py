"""JSON endpoints. Each parses its input, calls one function, and returns a domain Struct."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, JSONBody, Parameter

from advisor import __version__
from advisor.advice import Recommendation, estimate_for, recommend_for
from advisor.catalog import Catalog, load_api_prices
from advisor.cluster import ClusterRequest
from advisor.config import Settings
from advisor.cost import Cost, Prices, cost_of, throughput_of
from advisor.errors import NeedsKey
from advisor.estimate import Estimate
from advisor.history import LoadTest, Measurement
from advisor.planner import PlanAnswer, answer_for
from advisor.specs import GpuSpec, HostProfile, Model, PlanRequest
from advisor.supervisor import Supervisor
from advisor.web.auth import allowed


@get("/healthz", sync_to_thread=False, tags=["service"])
def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok", "version": __version__}


@get("/api/profile", sync_to_thread=True, tags=["host"])
def profile(profiler: NamedDependency[Callable[[], HostProfile]]) -> HostProfile:
    """The host profile: GPUs through NVML, CPU, RAM and disk; `notes` says what could not be read."""
    return profiler()


@get("/api/models", sync_to_thread=False, tags=["catalog"])
def models(catalog: NamedDependency[Catalog]) -> list[Model]:
    """The catalog: every model with its checkpoints, scores and their sources."""
    return catalog.models


@post("/api/estimate", sync_to_thread=True, tags=["plan"], status_code=200)
def estimate(request: Request[Any, Any, Any], data: JSONBody[PlanRequest],
             catalog: NamedDependency[Catalog],
             profiler: NamedDependency[Callable[[], HostProfile]],
             gpu_table: NamedDependency[list[GpuSpec]],
             host_history: NamedDependency[tuple[Measurement, ...]],
             host_tests: NamedDependency[tuple[LoadTest, ...]]) -> Estimate:
    """One memory and speed estimate: what vLLM will print at start-up, and whether it starts.
    A local model folder needs the API key (else 401): the answer would say whether a path exists."""
    try:
        return estimate_for(data, catalog, profiler(), gpu_table, history=host_history,
                            tests=host_tests,
                            local_ok=allowed(request.scope, request.app.state.api_key))
    except NeedsKey as exc:
        raise NotAuthorizedException(str(exc)) from None


@post("/api/recommend", sync_to_thread=True, tags=["plan"], status_code=200)
def recommend(data: JSONBody[PlanRequest], catalog: NamedDependency[Catalog],
              profiler: NamedDependency[Callable[[], HostProfile]],
              gpu_table: NamedDependency[list[GpuSpec]],
              host_history: NamedDependency[tuple[Measurement, ...]],
              host_tests: NamedDependency[tuple[LoadTest, ...]]) -> Recommendation:
    """Every checkpoint of the catalog ranked for `use_case`, best first, with reasons; a
    checkpoint load-tested on this host ranks by its measured speed."""
    return recommend_for(data, catalog, profiler(), gpu_table, history=host_history,
                         tests=host_tests)


@post("/api/plan", sync_to_thread=True, tags=["plan"], status_code=200)
def plan(request: Request[Any, Any, Any], data: JSONBody[ClusterRequest],
         catalog: NamedDependency[Catalog], gpu_table: NamedDependency[list[GpuSpec]]) -> PlanAnswer:
    """A model laid out over a cluster (tp, pp, replicas) with its deployments: vLLM with Ray,
    LeaderWorkerSet, production-stack values, KubeRay RayService (docs/cluster.md)."""
    try:
        return answer_for(data, catalog, gpu_table,
                          local_ok=allowed(request.scope, request.app.state.api_key))
    except NeedsKey as exc:
        raise NotAuthorizedException(str(exc)) from None


@get("/api/deployments/{deployment_id:str}/cost", sync_to_thread=False, tags=["deployments"])
def cost(deployment_id: FromPath[str], supervisor: NamedDependency[Supervisor],
         settings: NamedDependency[Settings],
         kwh_price: Annotated[float | None, Parameter(ge=0, le=100)] = None,
         card_per_hour: Annotated[float | None, Parameter(ge=0, le=10000)] = None,
         card_price: Annotated[float | None, Parameter(ge=0, le=10_000_000)] = None,
         card_years: Annotated[float | None, Parameter(gt=0, le=50)] = None,
         watts: Annotated[float | None, Parameter(gt=0, le=100_000)] = None) -> Cost:
    """A million generated tokens on this deployment, in USD, from its latest load test (or
    the estimate, labelled so) and the prices given, beside published API prices."""
    d = msgspec.to_builtins(supervisor.get(deployment_id))
    prices = Prices(kwh_price=kwh_price, card_per_hour=card_per_hour, card_price=card_price,
                    card_years=card_years, watts=watts)
    return cost_of(throughput_of(d), prices, load_api_prices(settings.catalog_dir))
