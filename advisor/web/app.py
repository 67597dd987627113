"""The Litestar application: JSON API and server-rendered pages over the same functions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from advisor import __version__
from advisor.catalog import Catalog, data_dir, load_catalog, load_gpus
from advisor.config import Settings, ensure_api_key
from advisor.errors import AdvisorError, HubUnavailable, ModelNotFound
from advisor.history import LoadTest, Measurement
from advisor.home import HomeLock, log_to_file, prepare
from advisor.profile import read_host
from advisor.specs import HostProfile
from advisor.store import Store, StoreUnavailable
from advisor.supervisor import LaunchFailed, Supervisor, UnknownDeployment
from advisor.web import api, auth, deployments, events, pages, proxy
from advisor.web.apidocs import OfflineRenderPlugin
from advisor.web.secret import server_secret
from advisor.web.sessions import secure_cookies, session_middleware
from advisor.web.throttle import Throttle

log = logging.getLogger("advisor.web")


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
    app: it re-attaches engines at start and stops them at shutdown (unless kept).

    ADVISOR_HOME is checked, locked and its database opened here, before a port is bound or
    an engine touched: a second service on the same home, a read-only home or a database
    that cannot be opened stops `serve` with one line, and changes nothing."""
    cat = catalog or load_catalog(settings.catalog_dir)
    gpus = load_gpus(settings.catalog_dir)
    prepare(settings.home)
    lock = HomeLock(settings.home).acquire()
    try:
        log_path = log_to_file(settings.home)
        log.info("slm-advisor %s, ADVISOR_HOME %s", __version__, settings.home)
        store = Store(settings.home / "advisor.db")
    except BaseException:
        lock.release()
        raise
    # httpx logs every request at INFO: every /v1 call, health check and metrics read would
    # cost a formatted log line
    logging.getLogger("httpx").setLevel(logging.WARNING)
    key, _made = ensure_api_key(settings)
    # CSRF tokens are signed with a random secret kept in ADVISOR_HOME, never one derived
    # from the key (a token is handed to every visitor); sessions are kept server-side there
    secret = server_secret(settings.home)
    session = session_middleware(settings.home)
    csrf = CSRFConfig(secret=secret, cookie_samesite="strict",
                      exclude=["/api", "/v1", "/schema", "/healthz"])

    async def start_supervisor(app: Litestar) -> None:
        app.state.supervisor = Supervisor(settings, store, cat, gpus, profiler,
                                          start_timeout=start_timeout)
        await app.state.supervisor.start()

    async def stop_supervisor(app: Litestar) -> None:
        await proxy.close()
        await app.state.supervisor.shutdown(keep_engines=keep_engines)
        app.state.supervisor.store.close()
        lock.release()

    def supervisor(state: State) -> Supervisor:
        return state.supervisor  # type: ignore[no-any-return]

    def host_history(state: State) -> tuple[Measurement, ...]:
        return state.supervisor.history()  # type: ignore[no-any-return]

    def host_tests(state: State) -> tuple[LoadTest, ...]:
        return state.supervisor.load_tests()  # type: ignore[no-any-return]

    return Litestar(
        route_handlers=[api.healthz, api.profile, api.models, api.estimate, api.recommend, api.plan,
                        pages.plan_page, api.cost,
                        deployments.launch, deployments.deployments, deployments.deployment,
                        deployments.stop, deployments.logs, deployments.metrics, deployments.bench,
                        deployments.phases, deployments.download,
                        proxy.v1, events.events, pages.home, pages.recommend_page,
                        pages.models_page, pages.signin_page, pages.signin, pages.signout,
                        pages.launch_page, pages.deployments_page, pages.dashboard, pages.stop_page,
                        pages.confirm_page, pages.favicon,
                        # the pages' scripts, styles and vendored libraries: nothing from a CDN
                        create_static_files_router(path="/static", directories=[data_dir("static")],
                                                   include_in_schema=False)],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "catalog": Provide(lambda: cat, use_cache=True, sync_to_thread=False),
            "profiler": Provide(lambda: profiler, use_cache=True, sync_to_thread=False),
            "gpu_table": Provide(lambda: gpus, use_cache=True, sync_to_thread=False),
            "supervisor": Provide(supervisor, sync_to_thread=False),
            "host_history": Provide(host_history, sync_to_thread=False),
            "host_tests": Provide(host_tests, sync_to_thread=False),
        },
        state=State({"api_key": key, "log_path": str(log_path), "throttle": Throttle(),
                      "csrf": csrf}),
        on_startup=[start_supervisor],
        # our CSRF middleware in place of Litestar's csrf_config (auth.CSRFMiddleware says why)
        middleware=[secure_cookies, session, DefineMiddleware(auth.CSRFMiddleware, config=csrf)],
        on_shutdown=[stop_supervisor],
        exception_handlers={AdvisorError: advisor_error, HTTPException: http_error,
                            Exception: unexpected_error},
        template_config=TemplateConfig(directory=data_dir("templates"), engine=JinjaTemplateEngine,
                                       engine_callback=_add_filters),
        # the API viewer rendered here, from the schema: the stock ones load from a CDN
        openapi_config=OpenAPIConfig(title="slm-advisor", version=__version__, render_plugins=[
            OfflineRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")]),
    )


def _add_filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(pages.FILTERS)
    engine.engine.globals["launchable"] = pages.launchable


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return not path.startswith(("/api", "/v1", "/schema", "/healthz"))


def advisor_error(request: Request[Any, Any, Any], exc: AdvisorError) -> Response[Any]:
    """A message for people, never a trace: 404 for an unknown id, 503 when the database,
    the disk or the Hugging Face Hub cannot answer now (the request may be fine: try again),
    422 for what the request asked that cannot be done. Pages get a page, the API JSON."""
    headers = {}
    if isinstance(exc, HubUnavailable):
        status, headers = 503, {"Retry-After": "5"}
    elif isinstance(exc, UnknownDeployment) or (isinstance(exc, ModelNotFound)
                                                and request.method == "GET"):
        status = 404
    elif isinstance(exc, StoreUnavailable | LaunchFailed):
        status = 503
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    else:
        status = 422
    if _wants_html(request):
        return Template("error.html", status_code=status, headers=headers, context={
            "title": {404: "Not found", 503: "Not available now"}.get(status, "That cannot be done"),
            "message": str(exc),
            "signed_in": False})
    return Response({"detail": str(exc)}, status_code=status, headers=headers)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own 4xx (a body that does not validate, an unknown route, a missing key),
    with its message and the fields it names; a 5xx of its own is logged like any other."""
    if exc.status_code >= 500:
        return unexpected_error(request, exc)
    headers = dict(exc.headers or {})
    if _wants_html(request):
        return Template("error.html", status_code=exc.status_code, headers=headers, context={
            "title": "Not found" if exc.status_code == 404 else "That cannot be done",
            "message": exc.detail, "signed_in": False})
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=headers)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Whatever escaped a handler: its traceback logged once, in ADVISOR_HOME/logs/advisor.log,
    and an answer that says where that log is (never the traceback itself)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    where = getattr(request.app.state, "log_path", "the service's log")
    message = f"The advisor failed on this request (a fault of ours, not of the input); the " \
              f"traceback is in {where}."
    if _wants_html(request):
        return Template("error.html", status_code=500, context={
            "title": "Something went wrong", "message": message, "signed_in": False})
    return Response({"status_code": 500, "detail": message}, status_code=500)
