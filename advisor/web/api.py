"""JSON endpoints. Each parses its input, calls one function, and returns a domain Struct."""

from __future__ import annotations

from collections.abc import Callable

from litestar import get
from litestar.di import NamedDependency

from advisor import __version__
from advisor.catalog import Catalog
from advisor.specs import HostProfile, Model


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
