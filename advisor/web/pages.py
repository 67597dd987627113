"""HTML pages. Each names its JSON twin under /api/ in a Link header (as Datasette does)."""

from __future__ import annotations

from collections.abc import Callable

from litestar import get
from litestar.di import NamedDependency
from litestar.response import Template

from advisor.catalog import Catalog
from advisor.specs import HostProfile


def _twin(path: str) -> dict[str, str]:
    return {"Link": f'<{path}>; rel="alternate"; type="application/json"'}


@get("/", sync_to_thread=True, include_in_schema=False)
def home(profiler: NamedDependency[Callable[[], HostProfile]], catalog: NamedDependency[Catalog]) -> Template:
    host = profiler()
    return Template("index.html", context={"host": host, "n_models": len(catalog.models)},
                    headers=_twin("/api/profile"))


@get("/models", sync_to_thread=False, include_in_schema=False)
def models_page(catalog: NamedDependency[Catalog]) -> Template:
    return Template("models.html", context={"models": catalog.models}, headers=_twin("/api/models"))
