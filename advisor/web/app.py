"""The Litestar application: JSON API and server-rendered pages over the same functions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template import TemplateConfig

from advisor import __version__
from advisor.catalog import Catalog, data_dir, load_catalog, load_gpus
from advisor.config import Settings, ensure_api_key
from advisor.errors import AdvisorError, ModelNotFound
from advisor.history import Measurement
from advisor.profile import read_host
from advisor.specs import HostProfile
from advisor.store import Store
from advisor.supervisor import NoFreePort, Supervisor, UnknownDeployment
from advisor.web import api, deployments, events, pages, proxy
from advisor.web.secret import server_secret
from advisor.web.sessions import secure_cookies, session_middleware
from advisor.web.throttle import Throttle


def create_app(
    settings: Settings,
    *,
    profiler: Callable[[], HostProfile] = read_host,
    catalog: Catalog | None = None,
    keep_engines: bool = False,
    start_timeout: float = 900,
) -> Litestar:
    """Build the app. The catalog loads once, at start, so a broken file stops `serve` early
    with its message instead of failing every request. The supervisor lives as long as the
    app: it re-attaches engines at start and stops them at shutdown (unless kept)."""
    cat = catalog or load_catalog(settings.catalog_dir)
    gpus = load_gpus(settings.catalog_dir)
    # httpx logs every request at INFO: every /v1 call, health check and metrics read would
    # cost a formatted log line
    logging.getLogger("httpx").setLevel(logging.WARNING)
    key, _made = ensure_api_key(settings)
    # CSRF tokens are signed with a random secret kept in ADVISOR_HOME, never one derived
    # from the key (a token is handed to every visitor); sessions are kept server-side there
    secret = server_secret(settings.home)
    session = session_middleware(settings.home)

    async def start_supervisor(app: Litestar) -> None:
        store = Store(settings.home / "advisor.db")
        app.state.supervisor = Supervisor(settings, store, cat, gpus, profiler,
                                          start_timeout=start_timeout)
        await app.state.supervisor.start()

    async def stop_supervisor(app: Litestar) -> None:
        await proxy.close()
        await app.state.supervisor.shutdown(keep_engines=keep_engines)
        app.state.supervisor.store.close()

    def supervisor(state: State) -> Supervisor:
        return state.supervisor  # type: ignore[no-any-return]

    def host_history(state: State) -> tuple[Measurement, ...]:
        return state.supervisor.history()  # type: ignore[no-any-return]

    return Litestar(
        route_handlers=[api.healthz, api.profile, api.models, api.estimate, api.recommend,
                        deployments.launch, deployments.deployments, deployments.deployment,
                        deployments.stop, deployments.logs, deployments.metrics,
                        proxy.v1, events.events, pages.home, pages.recommend_page,
                        pages.models_page, pages.signin_page, pages.signin, pages.signout,
                        pages.launch_page, pages.deployments_page, pages.dashboard, pages.stop_page],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "catalog": Provide(lambda: cat, use_cache=True, sync_to_thread=False),
            "profiler": Provide(lambda: profiler, use_cache=True, sync_to_thread=False),
            "gpu_table": Provide(lambda: gpus, use_cache=True, sync_to_thread=False),
            "supervisor": Provide(supervisor, sync_to_thread=False),
            "host_history": Provide(host_history, sync_to_thread=False),
        },
        state=State({"api_key": key, "throttle": Throttle()}),
        on_startup=[start_supervisor],
        middleware=[secure_cookies, session],
        csrf_config=CSRFConfig(secret=secret, cookie_samesite="strict",
                               exclude=["/api", "/v1", "/schema", "/healthz"]),
        on_shutdown=[stop_supervisor],
        exception_handlers={AdvisorError: advisor_error, NotFoundException: page_not_found},
        template_config=TemplateConfig(directory=data_dir("templates"), engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(title="slm-advisor", version=__version__),
    )


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return not path.startswith(("/api", "/v1", "/schema", "/healthz"))


def advisor_error(request: Request[Any, Any, Any], exc: AdvisorError) -> Response[Any]:
    """A message for people, never a trace: 404 for an unknown id, 409 when no port is free,
    422 for what the request asked that cannot be done. Pages get a page, the API JSON."""
    if isinstance(exc, UnknownDeployment) or (isinstance(exc, ModelNotFound) and request.method == "GET"):
        status = 404
    elif isinstance(exc, NoFreePort):
        status = 409
    else:
        status = 422
    if _wants_html(request):
        return Template("error.html", status_code=status, context={
            "title": "Not found" if status == 404 else "That cannot be done", "message": str(exc),
            "signed_in": False})
    return Response({"detail": str(exc)}, status_code=status)


def page_not_found(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if _wants_html(request):
        return Template("error.html", status_code=exc.status_code, context={
            "title": "Not found" if exc.status_code == 404 else "Something went wrong",
            "message": exc.detail if exc.status_code < 500 else
            "The advisor could not answer this page; its log says why.", "signed_in": False})
    return Response({"status_code": exc.status_code, "detail": exc.detail},
                    status_code=exc.status_code)
