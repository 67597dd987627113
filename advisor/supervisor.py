"""Start, watch and stop vLLM engines: one process group each, a log file each.

The only home of subprocess and os.killpg. An engine writes its log to a file under
ADVISOR_HOME (not a pipe), so it outlives a restart of the service and is re-attached:
the watcher follows the file, reads phases and figures with advisor.enginelog, asks the
engine's /health, and records every change in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from advisor.advice import plan_for
from advisor.catalog import Catalog
from advisor.config import Settings
from advisor.enginelog import Measured, read_failure, read_figure, read_phase
from advisor.errors import AdvisorError
from advisor.estimate import CPU_PROCESS_OVERHEAD_GIB, INSTALLED_VLLM
from advisor.history import Measurement, from_deployments
from advisor.launch import engine_argv
from advisor.specs import ACTIVE_STATES, Deployment, GpuSpec, HostProfile, PlanRequest
from advisor.store import Store

GIB = 2**30

FIXES = {
    "kv_too_small": "lower --max-model-len (vLLM suggests {suggested}), use --kv-cache-dtype fp8, or a "
                    "quantized checkpoint",
    "no_kv_memory": "lower --max-model-len, use --kv-cache-dtype fp8, or a smaller checkpoint",
    "free_below_reservation": "lower --gpu-memory-utilization, or stop what else holds GPU memory",
    "oom": "use a quantized checkpoint, or lower --gpu-memory-utilization or --max-model-len",
    "gated": "accept the model's license on Hugging Face and set HF_TOKEN",
    "missing_repo": "check the repo id or folder (and HF_TOKEN for private repos)",
    "unsupported_architecture": "this vLLM version cannot run this architecture: pick another model",
    "port_taken": "another process took the port: launch again and the advisor picks a free one",
    "engine_died": "the engine crashed (see the log tail); a model the CPU engine cannot run fails "
                   "at its first request",
}


class Refused(AdvisorError):
    """A launch that will not fit in what is free now (HTTP 422)."""


class NoFreePort(AdvisorError):
    """Every port of ADVISOR_ENGINE_PORTS is taken (HTTP 409)."""


class UnknownDeployment(AdvisorError):
    """No deployment has this id (HTTP 404)."""


@dataclass
class _Watch:
    task: asyncio.Task[None]
    proc: subprocess.Popen[bytes] | None  # None when re-attached after a restart
    measured: Measured = field(default_factory=Measured)
    offset: int = 0


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def new_engine_key() -> str:
    """An engine's own API key. Hex, because it goes on the engine's command line after
    --api-key, and a url-safe token that starts with "-" (1 in 64) reads as a flag there:
    the engine exits with "argument --api-key: expected at least one argument"."""
    return secrets.token_hex(24)


def port_free(port: int, *, lingering_ok: bool = True) -> bool:
    """Whether an engine could listen on the port (as uvicorn does, with SO_REUSEADDR, so a
    port whose last connections linger in TIME_WAIT counts as free; `lingering_ok=False`
    asks for a port nothing has touched lately)."""
    with socket.socket() as s:
        if lingering_ok:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Supervisor:
    def __init__(self, settings: Settings, store: Store, catalog: Catalog, gpus: list[GpuSpec],
                 profiler: Callable[[], HostProfile], *, start_timeout: float = 900,
                 grace: float = 10, poll: float = 0.25,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.store, self.catalog, self.gpus = settings, store, catalog, gpus
        self.profiler, self.clock = profiler, clock
        self.start_timeout, self.grace, self.poll = start_timeout, grace, poll
        self._lock = asyncio.Lock()
        self._watches: dict[str, _Watch] = {}
        self._ready: dict[str, Deployment] = {}  # what /v1 routes to
        self._metrics: dict[str, tuple[float, dict[str, float]]] = {}
        self._keys: dict[str, str] = {}  # engine API keys, in memory only; re-read from argv
        self.logs = settings.home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._http = httpx.AsyncClient(timeout=2.0)
        self.listeners: list[Callable[[Deployment], None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Re-attach engines that outlived the last run of the service; mark the dead lost."""
        for d in self.store.active():
            if d.pid and group_alive(d.pid):
                if d.state == "stopping":
                    self._spawn_stop(d)
                    continue
                self._watch(d, proc=None, from_end=d.state == "ready")
                if d.state == "ready":
                    self._ready[d.id] = d
            else:
                d.state, d.phase = "lost", None
                d.cause = "the engine process was gone when the service started"
                d.fix = "launch it again"
                d.stopped_at = self.clock()
                self._save(d)

    async def shutdown(self, keep_engines: bool) -> None:
        for w in self._watches.values():
            w.task.cancel()
        if not keep_engines:
            await asyncio.gather(*(self._stop_now(d) for d in self.store.active()))
        await self._http.aclose()

    async def _stop_now(self, d: Deployment) -> None:
        await self._terminate(d)
        d.state, d.phase, d.stopped_at = "stopped", None, self.clock()
        self._save(d)

    # ------------------------------------------------------------------ queries

    def get(self, deployment_id: str) -> Deployment:
        d = self.store.get(deployment_id)
        if d is None:
            raise UnknownDeployment(f"no deployment {deployment_id!r}")
        return d

    def all(self) -> list[Deployment]:
        return self.store.all()

    def history(self) -> tuple[Measurement, ...]:
        """What this host's launches measured, for estimates to refine themselves with."""
        return from_deployments(self.store.all(), INSTALLED_VLLM)

    def log_tail(self, deployment_id: str, lines: int = 200) -> str:
        d = self.get(deployment_id)
        path = Path(d.log_path)
        if not path.exists():
            return ""
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            text = fh.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) + "\n"

    def route(self, model_name: str) -> tuple[Deployment, str] | None:
        """The ready engine that serves `model_name`, and its own API key (from memory: this
        is on the path of every /v1 call)."""
        for d in self._ready.values():
            if model_name in d.served_names and d.id in self._keys:
                return d, self._keys[d.id]
        return None

    def ready(self) -> list[tuple[Deployment, str]]:
        return [(d, self._keys[d.id]) for d in self._ready.values() if d.id in self._keys]

    # ------------------------------------------------------------------ launch

    async def launch(self, req: PlanRequest) -> Deployment:
        """Plan against what is free now, take a port, start the engine; refuse what won't fit."""
        async with self._lock:  # two launches cannot take the same memory or port
            d, proc = await asyncio.to_thread(self._launch_locked, req)
            self._watch(d, proc=proc, from_end=False)
            return d

    def _launch_locked(self, req: PlanRequest) -> tuple[Deployment, subprocess.Popen[bytes]]:
        host = self.profiler()
        pending = [d for d in self.store.active() if d.state in ("pending", "starting")]
        held = sum(d.reserved_gib for d in pending)
        cpu = req.gpus == 0 or not host.gpus
        if cpu:
            budget = host.ram.available_gib - held
            req = msgspec.structs.replace(req, gpus=0, ram_gib=min(req.ram_gib or budget, budget))
        else:
            # engines still loading have not taken their memory yet: count it as taken
            gpus = [msgspec.structs.replace(g, memory_free_gib=g.memory_free_gib - held)
                    for g in host.gpus]
            host = msgspec.structs.replace(host, gpus=gpus)
        chosen = plan_for(req, self.catalog, host, self.gpus, check_free=True,
                          history=self.history())
        model, ckpt, settings, est = chosen.model, chosen.ckpt, chosen.settings, chosen.estimate
        if not est.fits:
            raise Refused(f"will not fit in the memory free now: {est.reason}")
        self._check_disk(ckpt.repo, ckpt.weight_bytes, host)
        port = self._free_port()
        key = new_engine_key()
        dep_id = secrets.token_hex(4)
        served = list(dict.fromkeys([model.id, ckpt.repo]))
        argv, env = engine_argv(ckpt, est, settings, python=self.settings.vllm_python, port=port,
                                served_names=served, api_key=key)
        if est.engine == "vllm-cpu":
            argv.append("--enforce-eager")  # the CPU engine has no CUDA graphs; compiling costs minutes
        log_path = self.logs / f"{dep_id}.log"
        reserved = (est.weights_gib + (est.cpu_kv_space_gib or 0) + CPU_PROCESS_OVERHEAD_GIB
                    if cpu else est.reservation_gib)
        now = self.clock()
        d = Deployment(id=dep_id, model=model.id, repo=ckpt.repo, quant=ckpt.quant, state="starting",
                       port=port, endpoint="/v1", served_names=served,
                       command=[a if a != key else "***" for a in argv], env=env,
                       request=msgspec.to_builtins(req), predicted=msgspec.to_builtins(est),
                       log_path=str(log_path), reserved_gib=round(reserved, 2), engine=est.engine,
                       gpu_name=chosen.target.gpu_name, created_at=now, started_at=now)
        with log_path.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **env}, start_new_session=True,
                                    cwd=self.settings.home)
        d.pid = proc.pid
        self._keys[dep_id] = key
        (self.logs / f"{dep_id}.key").write_text(key)
        os.chmod(self.logs / f"{dep_id}.key", 0o600)
        self._save(d)
        return d, proc

    def _check_disk(self, repo: str, weight_bytes: int, host: HostProfile) -> None:
        """A checkpoint to download must fit on the disk that holds the Hugging Face cache."""
        if Path(repo).exists():
            return
        cached = self.settings.hf_cache / ("models--" + repo.replace("/", "--"))
        need = weight_bytes / GIB * 1.05  # a little for the tokenizer and configs
        if not cached.exists() and host.disk.free_gib < need:
            raise Refused(f"the download of {repo} needs {need:.1f} GiB; {host.disk.free_gib:.1f} GiB "
                          f"is free at {host.disk.path}")

    def _free_port(self) -> int:
        lo, hi = self.settings.engine_ports
        taken = {d.port for d in self.store.active()}
        for port in range(lo, hi + 1):
            if port not in taken and port_free(port):
                return port
        raise NoFreePort(f"every engine port in {lo}-{hi} is taken (ADVISOR_ENGINE_PORTS)")

    # ------------------------------------------------------------------ watching

    def _watch(self, d: Deployment, proc: subprocess.Popen[bytes] | None, from_end: bool) -> None:
        if proc is None:  # re-attached: the key is in a 0600 file beside the log, not the database
            key_file = self.logs / f"{d.id}.key"
            if key_file.exists():
                self._keys[d.id] = key_file.read_text().strip()
        w = _Watch(task=asyncio.get_running_loop().create_task(self._follow(d.id)), proc=proc)
        known = Measured.__dataclass_fields__
        w.measured = Measured(**{k: v for k, v in d.measured.items() if k in known})  # type: ignore[arg-type]
        if from_end and Path(d.log_path).exists():
            w.offset = Path(d.log_path).stat().st_size
        self._watches[d.id] = w

    def _save(self, d: Deployment) -> None:
        self.store.save(d)
        if d.state == "ready":
            self._ready[d.id] = d
        else:
            self._ready.pop(d.id, None)
        for listener in self.listeners:
            listener(d)

    def _exited(self, d: Deployment, w: _Watch) -> int | None | bool:
        """The exit code if our child exited, True if a re-attached group is gone, else None."""
        if w.proc is not None:
            code = w.proc.poll()
            return code
        assert d.pid
        return True if not group_alive(d.pid) else None

    async def _follow(self, dep_id: str) -> None:
        w = self._watches[dep_id]
        health_failures = 0
        last_health = 0.0
        try:
            while True:
                d = self.store.get(dep_id)
                if d is None or d.state not in ("starting", "ready"):
                    return
                changed = self._read_log(d, w)
                code = self._exited(d, w)
                if code is not None:
                    self._read_log(d, w)
                    self._fail_exited(d, w, code)
                    return
                now = self.clock()
                if d.state == "starting":
                    if now - (d.started_at or now) > self.start_timeout:
                        await self._terminate(d)
                        d = self.get(dep_id)
                        self._fail(d, f"the engine did not become ready in {self.start_timeout:.0f} s "
                                      f"(last phase: {d.phase or 'none'})",
                                   "see the log tail; a first download of a large model can take "
                                   "longer (ADVISOR_START_TIMEOUT)")
                        return
                    if d.engine_ready_at or now - last_health > 1.0:
                        last_health = now
                        if await self._healthy(d):
                            d.state, d.phase, d.ready_at = "ready", None, self.clock()
                            changed = True
                elif now - last_health > 2.0:
                    last_health = now
                    if await self._healthy(d):
                        health_failures = 0
                    else:
                        health_failures += 1
                        if health_failures >= 5:
                            await self._terminate(d)
                            self._fail(self.get(dep_id), "the engine stopped answering /health",
                                       "launch it again; see the log tail for why it hung")
                            return
                if changed:
                    d.measured = w.measured.as_dict()
                    self._save(d)
                await asyncio.sleep(self.poll)
        except asyncio.CancelledError:
            pass

    def _read_log(self, d: Deployment, w: _Watch) -> bool:
        path = Path(d.log_path)
        try:
            with path.open("rb") as fh:
                fh.seek(w.offset)
                chunk = fh.read()
        except OSError:
            return False
        end = chunk.rfind(b"\n")
        if end < 0:
            return False
        w.offset += end + 1
        changed = False
        for raw in chunk[: end + 1].decode(errors="replace").splitlines():
            if read_figure(raw, w.measured):
                changed = True
            phase = read_phase(raw)
            if phase == "ready":
                if d.engine_ready_at is None:
                    d.engine_ready_at = self.clock()
                    changed = True
            elif phase and d.state == "starting" and phase != d.phase:
                d.phase = phase
                changed = True
        return changed

    async def _healthy(self, d: Deployment) -> bool:
        try:
            r = await self._http.get(f"http://127.0.0.1:{d.port}/health")
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _fail_exited(self, d: Deployment, w: _Watch, code: int | bool) -> None:
        text = self.log_tail(d.id, 400).splitlines()
        failure = None
        for line in text:
            failure = read_failure(line) or failure
            if failure and failure.kind != "engine_died":
                break
        if failure:
            cause = failure.line
            fix = FIXES[failure.kind].format(suggested=failure.suggested_max_model_len or "a shorter one")
        elif isinstance(code, int) and not isinstance(code, bool) and code < 0:
            cause = f"the engine was killed by signal {-code} ({signal.Signals(-code).name})"
            fix = "launch it again; if nobody stopped it, the kernel's OOM killer may have"
        elif isinstance(code, int) and not isinstance(code, bool):
            cause = f"the engine exited with code {code}"
            fix = "see the log tail"
        else:
            cause = "the engine's processes are gone"
            fix = "launch it again; see the log tail"
        d.measured = w.measured.as_dict()
        self._fail(d, cause, fix)

    def _fail(self, d: Deployment, cause: str, fix: str) -> None:
        d.state, d.phase, d.cause, d.fix, d.stopped_at = "failed", None, cause, fix, self.clock()
        self._save(d)
        self._watches.pop(d.id, None)

    # ------------------------------------------------------------------ stopping

    async def stop(self, deployment_id: str) -> Deployment:
        d = self.get(deployment_id)
        if d.state not in ACTIVE_STATES:
            return d
        if d.state != "stopping":
            d.state, d.phase = "stopping", None
            self._save(d)
            self._spawn_stop(d)
        return d

    def _spawn_stop(self, d: Deployment) -> None:
        async def run() -> None:
            w = self._watches.pop(d.id, None)
            if w:
                w.task.cancel()
            await self._terminate(d)
            done = self.get(d.id)
            done.state, done.stopped_at = "stopped", self.clock()
            self._save(done)

        asyncio.get_running_loop().create_task(run())

    async def _terminate(self, d: Deployment) -> None:
        """TERM the whole group, then KILL after the grace period; reap our child."""
        if not d.pid:
            return
        w = self._watches.get(d.id)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(d.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and group_alive(d.pid):
            if w and w.proc:
                w.proc.poll()
            await asyncio.sleep(0.1)
        if group_alive(d.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(d.pid, signal.SIGKILL)
        if w and w.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(w.proc.wait, 10)

    # ------------------------------------------------------------------ metrics

    async def metrics(self, deployment_id: str, max_age: float = 1.5) -> dict[str, float]:
        """The engine's /metrics, parsed by prometheus_client, as {name{labels}: value}.
        Shared for `max_age` seconds: every open dashboard asks, parsing is not free."""
        cached = self._metrics.get(deployment_id)
        if cached and time.monotonic() - cached[0] < max_age:
            return cached[1]
        out = await self._read_metrics(deployment_id)
        self._metrics[deployment_id] = (time.monotonic(), out)
        return out

    async def _read_metrics(self, deployment_id: str) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        d = self.get(deployment_id)
        if d.state != "ready":
            return {}
        try:
            r = await self._http.get(f"http://127.0.0.1:{d.port}/metrics")
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(r.text):
            if not family.name.startswith("vllm"):
                continue
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                                  if k not in ("engine", "model_name"))
                out[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
        return out
