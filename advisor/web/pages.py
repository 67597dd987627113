"""HTML pages. Each names its JSON twin under /api/ in a Link header (as Datasette does);
forms work without JavaScript, and every form that changes something carries a CSRF token.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Template

from advisor.advice import estimate_for, recommend_for
from advisor.catalog import Catalog
from advisor.errors import AdvisorError, NeedsKey
from advisor.hardware import cuda_gib
from advisor.history import Measurement
from advisor.launch import human_readable_int
from advisor.specs import USE_CASES, VLLM_VERSION_PATTERN, GpuSpec, HostProfile, PlanRequest
from advisor.supervisor import Supervisor
from advisor.web import auth

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
NUMBERS: dict[str, Callable[[str], float | int]] = {
    "gpu_gib": float, "gpus": int, "max_model_len": int, "concurrency": int, "ram_gib": float,
    "max_num_seqs": int,
    # in bytes, or as vLLM's parser reads it ("8G" is 8 GiB)
    "kv_cache_memory_bytes": human_readable_int}
FLAGS = ("enforce_eager", "text_only")  # checkboxes
TEXTS = ("vllm_version",)
# the several-GPUs fieldset (docs/gpus.md): whole numbers within PlanRequest's bounds
GPU_LAYOUT = {"pp": "pipeline stages", "replicas": "replicas"}
GPU_LAYOUT_MAX = 64
# what the launch button carries over from the form
CARRIED = ("gpu", *NUMBERS, *FLAGS, *TEXTS, *GPU_LAYOUT)


def _twin(path: str) -> dict[str, str]:
    return {"Link": f'<{path}>; rel="alternate"; type="application/json"'}


def signed_in(request: Request[Any, Any, Any]) -> bool:
    return auth.signed_in(request.scope)


def parse_gpu_layout(form: dict[str, str]) -> tuple[dict[str, int], dict[str, str]]:
    """The several-GPUs fieldset's fields (pp, replicas), or the message for each one that is
    wrong; an empty field leaves the choice to the planner."""
    values: dict[str, int] = {}
    errors: dict[str, str] = {}
    for name, what in GPU_LAYOUT.items():
        text = form.get(name, "").strip()
        if not text:
            continue
        if not text.isdecimal():
            errors[name] = f"{text!r} is not a whole number of {what}"
        elif not 1 <= int(text) <= GPU_LAYOUT_MAX:
            errors[name] = f"{what}: from 1 to {GPU_LAYOUT_MAX}"
        else:
            values[name] = int(text)
    return values, errors


def parse_form(form: dict[str, str]) -> tuple[PlanRequest | None, dict[str, str]]:
    """The recommendation form as a PlanRequest, or the message for each field that is wrong."""
    errors: dict[str, str] = {}
    data: dict[str, object] = {}
    use_case = form.get("use_case", "")
    if use_case not in USE_CASES:
        errors["use_case"] = f"choose one of: {', '.join(USE_CASES)}"
    else:
        data["use_case"] = use_case
    for name, kind in NUMBERS.items():
        text = form.get(name, "").strip()
        if not text:
            continue
        try:
            value = kind(text)
        except ValueError as exc:
            errors[name] = str(exc) if kind is human_readable_int else \
                f"{text!r} is not a {'whole ' if kind is int else ''}number"
            continue
        if value < 0 or (value == 0 and name != "gpus"):
            errors[name] = "must be more than 0" if name != "gpus" else "cannot be negative"
            continue
        data[name] = value
    for name in FLAGS:
        mark = form.get(name, "").strip().lower()
        if mark in ("1", "on", "true", "yes"):
            data[name] = True
        elif mark not in ("", "0", "off", "false", "no"):
            errors[name] = f"{form[name]!r} is not a checkbox value (on or off)"
    version = form.get("vllm_version", "").strip()
    if version and (len(version) > 64 or not re.search(VLLM_VERSION_PATTERN, version)):
        errors["vllm_version"] = (f"{version!r} is not a vLLM version as `vllm --version` "
                                  "prints it (e.g. 0.32.0, 0.10.1.1, 0.13.0+cu126)")
    elif version:
        data["vllm_version"] = version
    if form.get("gpu"):
        data["gpu"] = form["gpu"]
    if form.get("model", "").strip():
        data["model"] = form["model"].strip()
    layout, bad = parse_gpu_layout(form)
    data.update(layout)
    errors.update(bad)
    if not errors:
        try:
            return msgspec.convert(data, PlanRequest), {}
        except msgspec.ValidationError as exc:
            text = str(exc)
            field = text.rsplit("$.", 1)[-1].rstrip("`") if "$." in text else "form"
            errors[field] = text.split(" - at ")[0]
    return None, errors


def _home_context(host: HostProfile, catalog: Catalog, gpus: list[GpuSpec],
                  form: dict[str, str], request: Request[Any, Any, Any]) -> dict[str, Any]:
    budget = host.gpus[0].memory_cuda_gib if host.gpus else None
    return {"host": host, "n_models": len(catalog.models), "use_cases": USE_CASES,
            "carried": CARRIED,
            "gpu_table": [(g.name, cuda_gib(g), g.bandwidth_gbps) for g in gpus],
            "form": form, "default_budget": budget, "signed_in": signed_in(request),
            "errors": {}, "results": None, "own": None}


# (async with the work in a thread: two sync_to_thread handlers on one path trip Litestar)
@get("/", include_in_schema=False)
async def home(request: Request[Any, Any, Any], profiler: NamedDependency[Callable[[], HostProfile]],
               catalog: NamedDependency[Catalog],
               gpu_table: NamedDependency[list[GpuSpec]]) -> Template:
    ctx = _home_context(await asyncio.to_thread(profiler), catalog, gpu_table, {}, request)
    return Template("index.html", context=ctx, headers=_twin("/api/profile"))


@post("/", include_in_schema=False, status_code=200)
async def recommend_page(request: Request[Any, Any, Any], data: Form,
                         profiler: NamedDependency[Callable[[], HostProfile]],
                         catalog: NamedDependency[Catalog],
                         gpu_table: NamedDependency[list[GpuSpec]],
                         host_history: NamedDependency[tuple[Measurement, ...]]) -> Template:
    return await asyncio.to_thread(_recommend_page, request, data, profiler, catalog, gpu_table,
                                   host_history)


def _recommend_page(request: Request[Any, Any, Any], data: dict[str, str],
                    profiler: Callable[[], HostProfile], catalog: Catalog,
                    gpu_table: list[GpuSpec], history: tuple[Measurement, ...]) -> Template:
    host = profiler()
    ctx = _home_context(host, catalog, gpu_table, data, request)
    req, errors = parse_form(data)
    needs_key = False
    if req is not None:
        try:
            ctx["results"] = recommend_for(req, catalog, host, gpu_table, history).results
            if req.model:
                # a local folder only for a signed-in browser: the answer says whether a path exists
                ctx["own"] = estimate_for(req, catalog, host, gpu_table, history=history,
                                          local_ok=signed_in(request))
        except AdvisorError as exc:
            field = str(exc).split(":", 1)[0] if ":" in str(exc) else "form"
            errors[field if field in (*CARRIED, "model", "use_case") else "form"] = str(exc)
            needs_key = isinstance(exc, NeedsKey)
    ctx["errors"] = errors
    ctx["request_json"] = msgspec.json.encode(req).decode() if req else ""
    return Template("index.html", context=ctx, headers=_twin("/api/recommend"),
                    status_code=401 if needs_key else 400 if errors else 200)


@get("/models", sync_to_thread=False, include_in_schema=False)
def models_page(catalog: NamedDependency[Catalog]) -> Template:
    return Template("models.html", context={"models": catalog.models}, headers=_twin("/api/models"))


@get("/plan", sync_to_thread=True, include_in_schema=False)
def plan_page(request: Request[Any, Any, Any], catalog: NamedDependency[Catalog],
              gpu_table: NamedDependency[list[GpuSpec]]) -> Template:
    """A cluster layout and its manifests (a GET form: it changes nothing). Twin: POST /api/plan."""
    from advisor.planner import answer_for, form_request

    form = dict(request.query_params)
    req, errors = form_request(form) if form else (None, {})
    answer, status = None, 400 if errors else 200
    if req is not None:
        try:
            answer = answer_for(req, catalog, gpu_table, local_ok=signed_in(request))
        except AdvisorError as exc:
            errors, status = {"model": str(exc)}, 400
    return Template("plan.html", status_code=status, headers=_twin("/api/plan"), context={
        "form": form, "errors": errors, "answer": answer, "gpus": gpu_table,
        "signed_in": signed_in(request)})


# ----------------------------------------------------------------- signing in


@get("/signin", sync_to_thread=False, include_in_schema=False)
def signin_page(request: Request[Any, Any, Any], next: FromQuery[str] = "/") -> Template:  # noqa: A002
    return Template("signin.html", context={"next": next, "error": "",
                                            "signed_in": signed_in(request)})


@post("/signin", sync_to_thread=False, include_in_schema=False, status_code=303)
def signin(request: Request[Any, Any, Any], data: Form) -> Redirect | Template:
    key: str = request.app.state.api_key
    target = data.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    throttle, client = auth.throttle_of(request.scope), auth.client_of(request.scope)
    if wait := throttle.wait(client):
        # refused before the key is looked at: during a lock-out the right key is no answer
        return Template("signin.html", status_code=429, headers={"Retry-After": str(wait)}, context={
            "next": target, "error": f"Too many failed sign-ins from here or overall: try again "
                                     f"in {wait} s.", "signed_in": False})
    if auth.key_matches(data.get("key", "").strip(), key):
        token, cookie = auth.new_csrf_cookie(request.app.state.csrf)
        request.set_session({"signed_in": True, "csrf": token})
        return Redirect(target, status_code=303, cookies=[cookie])
    throttle.failed(client)
    return Template("signin.html", status_code=400, context={
        "next": target, "error": "That is not the API key (see ADVISOR_HOME/api-key or the "
                                 "key `advisor serve` printed on first start).", "signed_in": False})


@post("/signout", sync_to_thread=False, include_in_schema=False, status_code=303)
def signout(request: Request[Any, Any, Any]) -> Redirect:
    request.clear_session()
    return Redirect("/", status_code=303)


# ----------------------------------------------------------------- deployments


@post("/deployments", include_in_schema=False, status_code=303)
async def launch_page(request: Request[Any, Any, Any], data: Form,
                      supervisor: NamedDependency[Supervisor]) -> Redirect | Template:
    if not signed_in(request):
        return Redirect("/signin?next=/", status_code=303)
    body: dict[str, object] = {"model": data.get("model", "")}
    for name in ("quant", "gpu", *TEXTS):
        if data.get(name):
            body[name] = data[name]
    for name in FLAGS:
        body[name] = data.get(name, "").strip().lower() in ("1", "on", "true", "yes")
    layout, bad = parse_gpu_layout(data)
    body.update(layout)
    try:
        if bad:
            raise AdvisorError("; ".join(f"{k}: {v}" for k, v in bad.items()))
        for name, kind in NUMBERS.items():
            if data.get(name):
                body[name] = kind(data[name])
        d = await supervisor.launch(msgspec.convert(body, PlanRequest))
    except (AdvisorError, msgspec.ValidationError, ValueError) as exc:
        return Template("error.html", status_code=422, context={
            "title": "This launch was refused", "message": str(exc), "signed_in": True})
    return Redirect(f"/deployments/{d.id}", status_code=303)


@get("/deployments", sync_to_thread=False, include_in_schema=False)
def deployments_page(request: Request[Any, Any, Any],
                     supervisor: NamedDependency[Supervisor]) -> Template:
    return Template("deployments.html", headers=_twin("/api/deployments"), context={
        "deployments": supervisor.all(), "signed_in": signed_in(request)})


@get("/deployments/{deployment_id:str}", sync_to_thread=False, include_in_schema=False)
def dashboard(request: Request[Any, Any, Any], deployment_id: FromPath[str],
              supervisor: NamedDependency[Supervisor]) -> Template:
    d = supervisor.get(deployment_id)
    return Template("deployment.html", headers=_twin(f"/api/deployments/{d.id}"), context={
        "d": d, "signed_in": signed_in(request),
        "base_url": f"{request.base_url}".rstrip("/") + "/v1"})


@post("/deployments/{deployment_id:str}/stop", include_in_schema=False, status_code=303)
async def stop_page(request: Request[Any, Any, Any], deployment_id: FromPath[str],
                    supervisor: NamedDependency[Supervisor]) -> Redirect:
    if not signed_in(request):
        return Redirect(f"/signin?next=/deployments/{deployment_id}", status_code=303)
    await supervisor.stop(deployment_id)
    return Redirect(f"/deployments/{deployment_id}", status_code=303)
