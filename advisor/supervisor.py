"""Start, watch and stop vLLM engines: the deployments' lifecycle over their records.

The pieces it composes, each in its own module: admission against free memory
(advisor.admit), process groups (advisor.procs), the engine's HTTP probes over its Unix
socket (advisor.probes), the starting/ready state machine (advisor.watch) and the /v1
routing table (advisor.routes). The rules it keeps:

- a record is written (`pending`) before anything is spawned, so no engine runs that the
  store does not list; if the record cannot be written, nothing is started;
- an engine listens on a Unix socket in a 0700 folder and gets its key through the
  environment, so nothing reaches it (not even /tokenize or /invocations, which vLLM's
  key does not guard) except through the advisor, and no key shows in `ps`;
- engines outlive a restart of the service and are re-attached only when the recorded PID
  still has the recorded start time and command line: a reused PID is never touched;
- a deployment that ends for any reason has its whole process group ended and its routing
  removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from advisor.admit import admit, reserved_gib
from advisor.advice import Plan
from advisor.catalog import Catalog
from advisor.config import Settings
from advisor.enginelog import Measured
from advisor.errors import AdvisorError
from advisor.estimate import INSTALLED_VLLM
from advisor.history import LoadTest, Measurement, from_deployments, load_tests
from advisor.home import socket_dir
from advisor.launch import cpu_binds, engine_argv
from advisor.probes import EngineProbe
from advisor.procs import (
    Child,
    Spawner,
    end_group,
    group_alive,
    group_members,
    identity,
    is_same,
    numa_cores,
    spawn,
)
from advisor.routes import Routes
from advisor.specs import ACTIVE_STATES, Deployment, GpuSpec, HostProfile, PlanRequest
from advisor.store import Store, StoreUnavailable
from advisor.watch import Watch, WatchPorts, follow

log = logging.getLogger("advisor.supervisor")


class UnknownDeployment(AdvisorError):
    """No deployment has this id (HTTP 404)."""


class LaunchFailed(AdvisorError):
    """The engine could not be started at all (its files could not be written): HTTP 503."""


def new_engine_key() -> str:
    """An engine's own API key (hex: it once went on argv, where a leading "-" read as a flag)."""
    return secrets.token_hex(24)


def served_names(model_id: str, repo: str) -> list[str]:
    """The names /v1 routes to an engine. A name that starts with "-" (a folder called `-H`)
    would read as a flag in the engine's `--served-model-name` list, so it is left out; the
    folder's path, which starts with "/", still names it."""
    return [n for n in dict.fromkeys([model_id, repo]) if n and not n.startswith("-")]


class Supervisor:
    def __init__(self, settings: Settings, store: Store, catalog: Catalog, gpus: list[GpuSpec],
                 profiler: Callable[[], HostProfile], *, start_timeout: float = 900,
                 grace: float = 10, poll: float = 0.25,
                 clock: Callable[[], float] = time.time, spawner: Spawner = spawn) -> None:
        self.settings, self.store, self.catalog, self.gpus = settings, store, catalog, gpus
        self.profiler, self.clock, self.spawner = profiler, clock, spawner
        self.start_timeout, self.grace, self.poll = start_timeout, grace, poll
        self.logs = settings.home / "logs"
        self.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_dir = socket_dir(settings.home)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.routes = Routes()
        self.probe = EngineProbe()
        self.listeners: list[Callable[[Deployment], None]] = []
        self._lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._children: dict[str, Child] = {}  # engines this run spawned
        self._metrics: dict[str, tuple[float, dict[str, float]]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Re-attach engines that outlived the last run of the service; mark the others lost,
        ending what is left of their groups (but never a process that merely reuses a PID)."""
        for d in self.store.active():
            if d.pid and is_same(d.pid, d.pid_start, d.pid_cmdline or d.command):
                key = self._read_key(d.id)
                if d.state == "stopping" or key is None:
                    self._spawn_stop(d)
                    continue
                self.routes.add_key(d.id, key)
                self._watch(d, from_end=d.state == "ready")
                if d.state == "ready":
                    self.routes.set_ready(d)
                continue
            if d.pid and identity(d.pid) is None and group_members(d.pid):
                # the leader died while nobody watched; its workers still hold memory
                await end_group(d.pid, grace=self.grace)
            reused = d.pid is not None and identity(d.pid) is not None
            d.state, d.phase, d.stopped_at = "lost", None, self.clock()
            d.cause = ("the engine process was gone when the service started"
                       + (f" (pid {d.pid} now belongs to another process, left alone)" if reused else ""))
            d.fix = "launch it again"
            log.warning("deployment %s is lost: %s", d.id, d.cause)
            self._save(d)
            self._forget_files(d)

    async def shutdown(self, keep_engines: bool) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        if not keep_engines:
            await asyncio.gather(*(self._stop_now(d) for d in self.store.active()))
        await self.probe.close()

    async def _stop_now(self, d: Deployment) -> None:
        await self._end(d)
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

    def load_tests(self) -> tuple[LoadTest, ...]:
        """This host's latest load test of each checkpoint, for the ranking's speed."""
        return load_tests(self.store.benched(), INSTALLED_VLLM)

    def log_tail(self, deployment_id: str, lines: int = 200) -> str:
        return "\n".join(self._tail(self.get(deployment_id), lines)) + "\n"

    def _tail(self, d: Deployment, lines: int = 400) -> list[str]:
        path = Path(d.log_path)
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 256 * 1024))
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def route(self, model_name: str) -> tuple[Deployment, str] | None:
        """The ready engine that serves `model_name`, and its own API key."""
        return self.routes.route(model_name)

    def take(self, model_name: str) -> tuple[Deployment, str] | None:
        """`route`, balanced over the replicas that serve the name (least outstanding
        requests); the caller says `done` when the engine has answered."""
        return self.routes.take(model_name)

    def done(self, deployment_id: str) -> None:
        self.routes.done(deployment_id)

    def ready(self) -> list[tuple[Deployment, str]]:
        return self.routes.ready()

    # ------------------------------------------------------------------ launch

    async def launch(self, req: PlanRequest) -> Deployment:
        """Plan against what is free now, record the launch, then start the engine."""
        async with self._lock:  # two launches cannot take the same memory
            host = await asyncio.to_thread(self.profiler)
            chosen = await asyncio.to_thread(admit, req, host, self.store.active(), self.catalog,
                                             self.gpus, self.history(), self.settings.hf_cache,
                                             tests=self.load_tests())
            records = self._records(req, chosen)
            for d in records:
                self._save(d)  # StoreUnavailable here: nothing has been started
            started: list[Deployment] = []
            for d in records:
                try:
                    started.append(await self._start_engine(d))
                except LaunchFailed:
                    for rest in records[len(started) + 1:]:  # never left pending
                        rest.state, rest.stopped_at = "failed", self.clock()
                        rest.cause = "another replica of this launch could not be started"
                        rest.fix = "launch it again"
                        with contextlib.suppress(StoreUnavailable):
                            self._save(rest)
                    raise
            return started[0]

    def _records(self, req: PlanRequest, chosen: Plan) -> list[Deployment]:
        """One record per engine: one, or one per replica where the replicas are engines
        of their own behind /v1 (advisor.placement), each pinned to its GPUs."""
        lay = chosen.estimate.layout
        if chosen.estimate.engine != "vllm" or lay is None or not lay.replicas:
            return [self._record(req, chosen)]
        if lay.dp_mode == "data-parallel-size":  # one engine runs every rank
            return [self._record(req, chosen, gpus=[i for r in lay.replicas for i in r],
                                 data_parallel=lay.dp)]
        first = self._record(req, chosen, gpus=lay.replicas[0])
        rest = [self._record(req, chosen, gpus=ids, replica=r, replica_of=first.id)
                for r, ids in enumerate(lay.replicas[1:], start=1)]
        if rest:
            first.replica_of = first.id
        return [first, *rest]

    def _record(self, req: PlanRequest, chosen: Plan, *, gpus: list[int] | None = None,
                replica: int = 0, replica_of: str = "", data_parallel: int = 1) -> Deployment:
        model, ckpt, est = chosen.model, chosen.ckpt, chosen.estimate
        dep_id = secrets.token_hex(4)
        sock = self.run_dir / f"{dep_id}.sock"
        names = served_names(model.id, ckpt.repo)
        argv, env = engine_argv(ckpt, est, chosen.settings, python=self.settings.vllm_python,
                                uds=str(sock), served_names=names, gpus=gpus,
                                data_parallel=data_parallel)
        if est.engine == "vllm-cpu" and "--enforce-eager" not in argv:
            argv.append("--enforce-eager")  # the CPU engine has no CUDA graphs; compiling costs minutes
        if est.engine == "vllm-cpu" and est.tp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # one rank per NUMA node or core group: vLLM's "auto" binds by NUMA node only
            binds = cpu_binds(numa_cores(), est.tp)
            if binds:
                env["VLLM_CPU_OMP_THREADS_BIND"] = binds
        now = self.clock()
        return Deployment(id=dep_id, model=model.id, repo=ckpt.repo, quant=ckpt.quant, state="pending",
                          endpoint="/v1", served_names=names, command=argv, env=env, socket=str(sock),
                          request=msgspec.to_builtins(req), predicted=msgspec.to_builtins(est),
                          log_path=str(self.logs / f"{dep_id}.log"), reserved_gib=reserved_gib(chosen),
                          weight_bytes=ckpt.weight_bytes,
                          engine=est.engine, gpu_name=chosen.target.gpu_name, created_at=now,
                          gpus=gpus or [], replica=replica, replica_of=replica_of)

    async def _start_engine(self, d: Deployment) -> Deployment:
        key = new_engine_key()
        try:
            self._write_key(d.id, key)
            proc = self.spawner(d.command, env={**os.environ, **d.env, "VLLM_API_KEY": key},
                                log_path=Path(d.log_path), cwd=self.settings.home)
        except OSError as exc:
            self._forget_files(d)
            cause = f"the engine could not be started: {exc.strerror or exc}"
            d.state, d.cause, d.stopped_at = "failed", cause, self.clock()
            d.fix = "check that ADVISOR_HOME's disk has room and is writable, then launch again"
            with contextlib.suppress(StoreUnavailable):
                self._save(d)
            log.error("deployment %s: %s", d.id, cause)
            raise LaunchFailed(f"{cause} (ADVISOR_HOME {self.settings.home})") from None
        self._children[d.id] = proc
        seen = identity(proc.pid)
        d.pid, d.pid_start = proc.pid, seen.start_ticks if seen else None
        d.state, d.started_at = "starting", self.clock()
        try:
            self._save(d)
        except StoreUnavailable:
            # the engine runs but its record could not say so: it must not outlive this answer
            await end_group(proc.pid, grace=self.grace, child=proc)
            self._children.pop(d.id, None)
            self._forget_files(d)
            raise
        self.routes.add_key(d.id, key)
        self._watch(d, from_end=False)
        return d

    def _write_key(self, dep_id: str, key: str) -> None:
        """The engine's key, for re-attaching after a restart: created 0600, never chmod-ed later."""
        fd = os.open(self.run_dir / f"{dep_id}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)

    def _read_key(self, dep_id: str) -> str | None:
        try:
            return (self.run_dir / f"{dep_id}.key").read_text().strip() or None
        except OSError:
            return None

    def _forget_files(self, d: Deployment) -> None:
        for path in (self.run_dir / f"{d.id}.key", Path(d.socket) if d.socket else None):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()

    # ------------------------------------------------------------------ watching

    def _watch(self, d: Deployment, from_end: bool) -> None:
        known = Measured.__dataclass_fields__
        w = Watch(dep_id=d.id,
                  measured=Measured(**{k: v for k, v in d.measured.items() if k in known}))  # type: ignore[arg-type]
        if from_end and Path(d.log_path).exists():
            w.offset = Path(d.log_path).stat().st_size
        ports = WatchPorts(load=self.store.get, save=self._save_watched, exited=self._exited,
                           healthy=self._healthy, end=self._end, clock=self.clock)
        task = asyncio.get_running_loop().create_task(
            follow(w, ports, start_timeout=self.start_timeout, poll=self.poll, tail=self._tail))
        task.add_done_callback(functools.partial(self._unroute_unless_ready, d.id))
        self._tasks[d.id] = task

    def _unroute_unless_ready(self, dep_id: str, _task: object = None) -> None:
        """However a watch ended (the record changed under it, too), /v1 stops routing to an
        engine that is not ready."""
        d = self.store.get(dep_id)
        if d is None or d.state != "ready":
            self.routes.remove(dep_id, keep_key=d is not None and d.state in ("pending", "starting"))

    def _save_watched(self, d: Deployment) -> None:
        if d.state == "ready" and d.pid:
            seen = identity(d.pid)  # the command line as it reads once the engine runs
            if seen and seen.start_ticks == d.pid_start:
                d.pid_cmdline = seen.cmdline
        self._save(d)

    def _save(self, d: Deployment) -> None:
        self.store.save(d)
        if d.state == "ready":
            self.routes.set_ready(d)
        else:
            self.routes.remove(d.id, keep_key=d.state in ("pending", "starting"))
        if d.state not in ACTIVE_STATES:
            self._tasks.pop(d.id, None)
            self._metrics.pop(d.id, None)
        for listener in self.listeners:
            listener(d)

    def _exited(self, d: Deployment) -> int | bool | None:
        """The exit code if our child exited, True if a re-attached leader is gone, else None."""
        proc = self._children.get(d.id)
        if proc is not None:
            return proc.poll()
        assert d.pid
        return None if is_same(d.pid, d.pid_start, d.pid_cmdline or d.command) else True

    async def _healthy(self, d: Deployment) -> bool:
        return bool(d.socket) and await self.probe.healthy(d.socket)

    async def _end(self, d: Deployment) -> None:
        """End the deployment's whole process group and forget its files and routing."""
        self.routes.remove(d.id)
        if d.pid:
            await end_group(d.pid, grace=self.grace, child=self._children.get(d.id))
        self._children.pop(d.id, None)
        self._forget_files(d)
        if d.socket:
            await self.probe.forget(d.socket)

    # ------------------------------------------------------------------ stopping

    async def stop(self, deployment_id: str) -> Deployment:
        """Stop a deployment. One that already ended still has anything left of its group ended
        (a leader killed with -9 leaves its workers behind). Stopping a launch's first
        replica stops all its replicas; a later one stops alone."""
        d = self.get(deployment_id)
        if d.replica_of == d.id:  # the launch's first replica: the launch, all its replicas
            for other in self.store.active():
                if other.replica_of == d.id and other.id != d.id:
                    await self._stop_one(other)
        return await self._stop_one(d)

    async def _stop_one(self, d: Deployment) -> Deployment:
        if d.state not in ACTIVE_STATES:
            if d.pid and identity(d.pid) is None and group_alive(d.pid):
                await self._end(d)
            return d
        if d.state != "stopping":
            d.state, d.phase = "stopping", None
            self._save(d)
            self._spawn_stop(d)
        return d

    def _spawn_stop(self, d: Deployment) -> None:
        async def run() -> None:
            task = self._tasks.pop(d.id, None)
            if task:
                task.cancel()
            await self._end(d)
            done = self.get(d.id)
            done.state, done.stopped_at = "stopped", self.clock()
            self._save(done)

        asyncio.get_running_loop().create_task(run())

    # ------------------------------------------------------------------ metrics

    async def metrics(self, deployment_id: str, max_age: float = 1.5) -> dict[str, float]:
        """The engine's /metrics as {name{labels}: value}, shared for `max_age` seconds:
        every open dashboard asks, and parsing is not free."""
        cached = self._metrics.get(deployment_id)
        if cached and time.monotonic() - cached[0] < max_age:
            return cached[1]
        d = self.get(deployment_id)
        out = await self.probe.metrics(d.socket) if d.state == "ready" and d.socket else {}
        self._metrics[deployment_id] = (time.monotonic(), out)
        return out
