"""HTML pages. Each names its JSON twin under /api/ in a Link header (as Datasette does);
forms work without JavaScript, and every form that changes something carries a CSRF token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Template

from advisor.admit import admit
from advisor.advice import estimate_for, plan_for, recommend_for
from advisor.catalog import Catalog
from advisor.config import Settings
from advisor.errors import AdvisorError, NeedsKey
from advisor.estimate import Estimate
from advisor.hardware import UNOWNED_NOTE_GIB, cuda_gib
from advisor.history import LoadTest, Measurement
from advisor.launch import command_line, human_readable_int
from advisor.rank import Result
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
# the fields the form shows, each with its error beside it
FORM_FIELDS = ("use_case", "gpu", "gpu_gib", "gpus", "max_model_len", "concurrency", "model",
               "max_num_seqs", "kv_cache_memory_bytes", "vllm_version", "enforce_eager", "text_only",
               "pp", "replicas")
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


# ----------------------------------------------------------------- figures for people


def times(x: float | None) -> str:
    """A concurrency as one figure: '3.2×', and '1×' (never '1.0×' beside '1×')."""
    if x is None:
        return "–"
    return f"{round(x)}×" if abs(x - round(x)) < 0.05 else f"{x:.1f}×"


def seconds(x: float | None) -> str:
    """A duration at the precision a person reads: '598 ms', '2.4 s', '3 min 5 s'."""
    if x is None:
        return "–"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    if x < 60:
        return f"{x:.1f} s"
    return f"{int(x // 60)} min {int(x % 60)} s"


def gib(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1f} GiB" if x >= 1 else f"{x * 1024:.0f} MiB"


def first_url(text: str) -> str:
    """The address in a source note ('Gemma 3 report, https://…'), or '' when it has none."""
    found = re.search(r"https?://\S+", text or "")
    return found[0].rstrip(").,;") if found else ""


FILTERS: dict[str, Callable[..., str]] = {"times": times, "seconds": seconds, "gib": gib,
                                          "first_url": first_url, "shown": lambda c, p: shown_command(c, p)}


class Group(msgspec.Struct, kw_only=True):
    """One model on the results page: the checkpoint ranked first, and the model's others."""

    chosen: Result
    others: list[Result]
    license: str
    quants: list[str]
    launchable: bool  # the form plans for this host (each row's engine checked too)


def group_results(results: list[Result], catalog: Catalog, launchable: bool) -> list[Group]:
    """One group per model, in rank order: the first row of a model is its chosen one."""
    by_model: dict[str, list[Result]] = {}
    for r in results:
        by_model.setdefault(r.model, []).append(r)
    licenses = {m.id: m.license for m in catalog.models}
    return [Group(chosen=rows[0], others=rows[1:], license=licenses.get(model, ""),
                  quants=sorted({r.quant for r in rows}), launchable=launchable)
            for model, rows in by_model.items()]


def runs_here(form: dict[str, str], host: HostProfile, gpus: list[GpuSpec]) -> bool:
    """Whether the form plans for this very host: a GPU it names is one this host has, and
    a CPU plan (0 GPUs) is asked only of a host that runs the CPU engine. A plan for an RTX
    4090 on a GPU-less host has no Launch button: what would start there is another plan.
    (Each row's engine is checked against the host's too: `launchable`.)"""
    if form.get("gpus", "").strip() == "0":
        return host.engine == "vllm-cpu"
    if form.get("gpu"):
        spec = next((g for g in gpus if g.name == form["gpu"]), None)
        return spec is not None and any(m.lower() in g.name.lower()
                                        for g in host.gpus for m in spec.match)
    return True


def launchable(r: Result | Estimate, here: bool, host: HostProfile) -> bool:
    """A row this host can start as shown: planned for it, on the engine it runs."""
    est = r.estimate if isinstance(r, Result) else r
    return here and est.fits and est.engine == host.engine


_BARE_PYTHON = re.compile(r"(^|\s)python(?= -m )")


def shown_command(command: str, python: str) -> str:
    """The ranker's command with the interpreter that has vLLM in place of a bare `python`
    (the one the supervisor starts): the line to paste is the line a launch runs."""
    return _BARE_PYTHON.sub(lambda m: m[1] + shlex.quote(python), command, count=1)


def _home_context(host: HostProfile, catalog: Catalog, gpus: list[GpuSpec],
                  form: dict[str, str], request: Request[Any, Any, Any]) -> dict[str, Any]:
    budget = host.gpus[0].memory_cuda_gib if host.gpus else None
    return {"host": host, "n_models": len(catalog.models), "use_cases": USE_CASES,
            "carried": CARRIED, "groups": None, "licenses": sorted({m.license for m in catalog.models}),
            "gpu_table": [(g.name, cuda_gib(g), g.bandwidth_gbps) for g in gpus],
            "form": form, "default_budget": budget, "signed_in": signed_in(request),
            # below this, unowned memory is within the CUDA total's error: not said, not taken off
            "unowned_note_gib": UNOWNED_NOTE_GIB,
            "here": _here(request, form),
            "errors": {}, "stray_errors": {}, "results": None, "own": None}


def _here(request: Request[Any, Any, Any], form: dict[str, str]) -> str:
    """This page's address, for sign-in to come back to (a posted form as its query)."""
    if form:
        kept = {k: v for k, v in form.items() if v and k != "_csrf_token"}
        return "/?" + urlencode(kept)
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


# (async with the work in a thread: two sync_to_thread handlers on one path trip Litestar)
@get("/", include_in_schema=False)
async def home(request: Request[Any, Any, Any], settings: NamedDependency[Settings],
               profiler: NamedDependency[Callable[[], HostProfile]],
               catalog: NamedDependency[Catalog],
               gpu_table: NamedDependency[list[GpuSpec]],
               host_history: NamedDependency[tuple[Measurement, ...]],
               host_tests: NamedDependency[tuple[LoadTest, ...]]) -> Template:
    """The form; with its fields in the query (`/?use_case=chat&gpu=…`), its results too: a
    results page has an address, which sign-in returns to."""
    query = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
    if query.get("use_case"):
        return await asyncio.to_thread(_recommend_page, request, query, profiler, catalog,
                                       gpu_table, host_history, settings, host_tests)
    ctx = _home_context(await asyncio.to_thread(profiler), catalog, gpu_table, {}, request)
    return Template("index.html", context=ctx, headers=_twin("/api/profile"))


@post("/", include_in_schema=False, status_code=200)
async def recommend_page(request: Request[Any, Any, Any], data: Form,
                         settings: NamedDependency[Settings],
                         profiler: NamedDependency[Callable[[], HostProfile]],
                         catalog: NamedDependency[Catalog],
                         gpu_table: NamedDependency[list[GpuSpec]],
                         host_history: NamedDependency[tuple[Measurement, ...]],
                         host_tests: NamedDependency[tuple[LoadTest, ...]]) -> Template:
    return await asyncio.to_thread(_recommend_page, request, data, profiler, catalog, gpu_table,
                                   host_history, settings, host_tests)


def _recommend_page(request: Request[Any, Any, Any], data: dict[str, str],
                    profiler: Callable[[], HostProfile], catalog: Catalog,
                    gpu_table: list[GpuSpec], history: tuple[Measurement, ...],
                    settings: Settings, tests: tuple[LoadTest, ...] = ()) -> Template:
    host = profiler()
    ctx = _home_context(host, catalog, gpu_table, data, request)
    ctx["python"] = settings.vllm_python
    req, errors = parse_form(data)
    needs_key = False
    if req is not None:
        try:
            ctx["results"] = recommend_for(req, catalog, host, gpu_table, history, tests).results
            here = runs_here(data, host, gpu_table)
            ctx["groups"] = group_results(ctx["results"], catalog, here)
            ctx["quants"] = sorted({r.quant for r in ctx["results"]})
            ctx["own_launchable"] = here
            ctx["any_launchable"] = any(launchable(r, here, host) for r in ctx["results"])
            if req.model:
                # a local folder only for a signed-in browser: the answer says whether a path exists
                ctx["own"] = estimate_for(req, catalog, host, gpu_table, history=history, tests=tests,
                                          local_ok=signed_in(request))
        except AdvisorError as exc:
            field = str(exc).split(":", 1)[0] if ":" in str(exc) else "form"
            errors[field if field in (*CARRIED, "model", "use_case") else "form"] = str(exc)
            needs_key = isinstance(exc, NeedsKey)
    ctx["errors"] = errors
    # an error of a field the form has no place for (ram_gib, a schema path) shows on top
    ctx["stray_errors"] = {k: v for k, v in errors.items() if k not in FORM_FIELDS}
    ctx["request_json"] = msgspec.json.encode(req).decode() if req else ""
    return Template("index.html", context=ctx, headers=_twin("/api/recommend"),
                    status_code=401 if needs_key else 400 if errors else 200)


@get("/models", sync_to_thread=False, include_in_schema=False)
def models_page(request: Request[Any, Any, Any], catalog: NamedDependency[Catalog]) -> Template:
    return Template("models.html", headers=_twin("/api/models"), context={
        "models": catalog.models, "use_cases": USE_CASES, "signed_in": signed_in(request),
        "licenses": sorted({m.license for m in catalog.models})})


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


LAUNCH_FIELDS = ("model", "quant", "command", *CARRIED)


def _launch_request(data: dict[str, str]) -> PlanRequest:
    """The launch form as a PlanRequest (ValueError, msgspec.ValidationError when wrong)."""
    body: dict[str, object] = {"model": data.get("model", "")}
    for name in ("quant", "gpu", *TEXTS):
        if data.get(name):
            body[name] = data[name]
    for name in FLAGS:
        body[name] = data.get(name, "").strip().lower() in ("1", "on", "true", "yes")
    layout, bad = parse_gpu_layout(data)
    if bad:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in bad.items()))
    body.update(layout)
    for name, kind in NUMBERS.items():
        if data.get(name):
            body[name] = kind(data[name])
    return msgspec.convert(body, PlanRequest)


def hub_reachable(timeout: float = 3.0) -> str:
    """'' when huggingface.co answers, else why not, in a few words."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "HF_HUB_OFFLINE is set: nothing will be downloaded"
    try:
        httpx.head("https://huggingface.co", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"huggingface.co cannot be reached from this host ({type(exc).__name__})"
    return ""


def _confirm(data: dict[str, str], settings: Settings, host: HostProfile, catalog: Catalog,
             gpu_table: list[GpuSpec], supervisor: Supervisor) -> dict[str, Any]:
    """What a launch would start now, and what it needs: the plan the supervisor's own
    admission makes against the memory free now, its command beside the one the results
    page showed, and the download."""
    ctx: dict[str, Any] = {"fields": {k: data[k] for k in LAUNCH_FIELDS if data.get(k)},
                           "shown": data.get("command", ""), "error": "", "plan": None}
    if not runs_here(data, host, gpu_table):
        ctx["error"] = (f"This host cannot run that plan: it was made for "
                        f"{data.get('gpu') or 'the CPU engine'}, and this host has "
                        f"{', '.join(g.name for g in host.gpus) or 'no GPU'}. Copy its command "
                        f"to the machine it was made for.")
        return ctx
    req: PlanRequest | None = None
    try:
        req = _launch_request(data)
        chosen = admit(req, host, supervisor.store.active(), catalog, gpu_table,
                       supervisor.history(), settings.hf_cache, tests=supervisor.load_tests())
    except (AdvisorError, msgspec.ValidationError, ValueError) as exc:
        ctx["error"] = str(exc)
        with contextlib.suppress(AdvisorError, msgspec.ValidationError, ValueError):
            ctx["plan"] = req and plan_for(req, catalog, host, gpu_table, check_free=True)
        return ctx
    est = chosen.estimate
    ctx["plan"] = chosen
    if est.engine != host.engine:
        ctx["error"] = f"This host runs {host.engine}; the plan is for {est.engine}."
        return ctx
    ctx["command"] = shown_command(command_line(chosen.ckpt, est, chosen.settings),
                                   settings.vllm_python)
    ctx["same"] = not ctx["shown"] or ctx["shown"] == ctx["command"]
    local = Path(chosen.ckpt.repo).is_dir()
    cached = (settings.hf_cache / ("models--" + chosen.ckpt.repo.replace("/", "--"))).exists()
    ctx["download_gib"] = 0.0 if local or cached else chosen.ckpt.weight_bytes / 2**30
    ctx["where"] = "a local folder" if local else "in the Hugging Face cache" if cached else ""
    ctx["disk"] = host.disk
    ctx["hub"] = hub_reachable() if ctx["download_gib"] else ""
    return ctx


@get("/launch", include_in_schema=False)
async def confirm_page(request: Request[Any, Any, Any], settings: NamedDependency[Settings],
                       profiler: NamedDependency[Callable[[], HostProfile]],
                       catalog: NamedDependency[Catalog], gpu_table: NamedDependency[list[GpuSpec]],
                       supervisor: NamedDependency[Supervisor]) -> Template | Redirect:
    """Before a launch: exactly what will start, the download and the disk, the Hub. Signed
    out, sign-in comes back here with every field."""
    data = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
    if not signed_in(request):
        return Redirect("/signin?" + urlencode({"next": f"/launch?{urlencode(data)}"}), status_code=303)
    host = await asyncio.to_thread(profiler)
    ctx = await asyncio.to_thread(_confirm, data, settings, host, catalog, gpu_table, supervisor)
    return Template("launch.html", status_code=422 if ctx["error"] else 200,
                    context={**ctx, "signed_in": True})


@post("/deployments", include_in_schema=False, status_code=303)
async def launch_page(request: Request[Any, Any, Any], data: Form,
                      supervisor: NamedDependency[Supervisor]) -> Redirect | Template:
    if not signed_in(request):
        # back to the confirmation with every field: the launch is one click away again
        kept = {k: data[k] for k in LAUNCH_FIELDS if data.get(k)}
        return Redirect("/signin?" + urlencode({"next": f"/launch?{urlencode(kept)}"}), status_code=303)
    try:
        d = await supervisor.launch(_launch_request(data))
    except (AdvisorError, msgspec.ValidationError, ValueError) as exc:
        return Template("error.html", status_code=422, context={
            "title": "This launch was refused", "message": str(exc), "signed_in": True})
    return Redirect(f"/deployments/{d.id}", status_code=303)


@get("/favicon.ico", include_in_schema=False)
async def favicon() -> Redirect:
    return Redirect("/static/favicon.svg", status_code=301)


@get("/deployments", sync_to_thread=False, include_in_schema=False)
def deployments_page(request: Request[Any, Any, Any],
                     supervisor: NamedDependency[Supervisor]) -> Template:
    return Template("deployments.html", headers=_twin("/api/deployments"), context={
        "deployments": supervisor.all(), "signed_in": signed_in(request),
        "base_url": f"{request.base_url}".rstrip("/") + "/v1"})


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
    back = request.headers.get("referer", "")
    # from the list, back to the list; else to the deployment's page
    from_list = back.split("?")[0].endswith("/deployments")
    target = "/deployments" if from_list else f"/deployments/{deployment_id}"
    return Redirect(target, status_code=303)
