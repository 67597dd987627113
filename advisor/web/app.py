"""The Litestar application: JSON API and server-rendered pages over the same functions."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.template import TemplateConfig

from advisor import __version__
from advisor.catalog import Catalog, data_dir, load_catalog
from advisor.config import Settings
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
    return Litestar(
        route_handlers=[api.healthz, api.profile, api.models, pages.home, pages.models_page],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "catalog": Provide(lambda: cat, use_cache=True, sync_to_thread=False),
            "profiler": Provide(lambda: profiler, use_cache=True, sync_to_thread=False),
        },
        template_config=TemplateConfig(directory=data_dir("templates"), engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(title="slm-advisor", version=__version__),
    )
