"""The Litestar application: JSON API and server-rendered pages over the same functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from advisor import __version__
from advisor.catalog import Catalog, data_dir, load_catalog, load_gpus
from advisor.config import Settings
from advisor.errors import AdvisorError, ModelNotFound
from advisor.profile import read_host
from advisor.specs import HostProfile
from advisor.web import api, pages


def create_app(
    settings: Settings,
    *,
    profiler: Callable[[], HostProfile] = read_host,
    catalog: Catalog | None = None,
) -> Litestar:
    """Build the app. The catalog loads once, at start, so a broken file stops `serve` early
    with its message instead of failing every request."""
    cat = catalog or load_catalog(settings.catalog_dir)
    gpus = load_gpus(settings.catalog_dir)
    return Litestar(
        route_handlers=[api.healthz, api.profile, api.models, api.estimate, api.recommend,
                        pages.home, pages.models_page],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "catalog": Provide(lambda: cat, use_cache=True, sync_to_thread=False),
            "profiler": Provide(lambda: profiler, use_cache=True, sync_to_thread=False),
            "gpus": Provide(lambda: gpus, use_cache=True, sync_to_thread=False),
        },
        exception_handlers={AdvisorError: advisor_error},
        template_config=TemplateConfig(directory=data_dir("templates"), engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(title="slm-advisor", version=__version__),
    )


def advisor_error(request: Request[Any, Any, Any], exc: AdvisorError) -> Response[dict[str, str]]:
    """A message for people, never a trace: 422 for what the request asked that cannot be done."""
    status = 404 if isinstance(exc, ModelNotFound) and request.method == "GET" else 422
    return Response({"detail": str(exc)}, status_code=status)
