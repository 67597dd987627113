"""One deployment's state machine while it starts and serves: starting → ready, or failed.

It follows the engine's log file (phases and figures, through advisor.enginelog), notices
the leader's exit, asks /health, and times a start out. Its clock, its sleep, the probe
and what it does to end an engine are passed in, so the fault tests drive it without
real waiting. It never spawns or signals a process itself.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from advisor.enginelog import Measured, read_failure, read_figure, read_phase
from advisor.specs import Deployment

FIXES = {
    "kv_too_small": "lower --max-model-len (vLLM suggests {suggested}), use --kv-cache-dtype fp8, or a "
                    "quantized checkpoint",
    "no_kv_memory": "lower --max-model-len, use --kv-cache-dtype fp8, or a smaller checkpoint",
    "free_below_reservation": "lower --gpu-memory-utilization, or stop what else holds GPU memory",
    "oom": "use a quantized checkpoint, or lower --gpu-memory-utilization or --max-model-len",
    "gated": "accept the model's license on Hugging Face and set HF_TOKEN",
    "missing_repo": "check the repo id or folder (and HF_TOKEN for private repos)",
    "unsupported_architecture": "this vLLM version cannot run this architecture: pick another model",
    "port_taken": "another process took the engine's address: launch again",
    "bad_argument": "the engine refused its command line (the cause names the flag): report it, "
                    "with the command shown on this deployment",
    "offline": "connect this host to huggingface.co (or unset HF_HUB_OFFLINE), or download the "
               "model elsewhere and launch its folder",
    "engine_died": "the engine crashed (see the log tail); a model the CPU engine cannot run fails "
                   "at its first request",
}

# the cause of a failed start in one sentence, before the log line that shows it
SENTENCES = {
    "kv_too_small": "The KV cache is too small for one request of the full context.",
    "no_kv_memory": "No memory was left for the KV cache.",
    "free_below_reservation": "Less GPU memory was free than the engine asked to reserve.",
    "oom": "The engine ran out of memory.",
    "gated": "The model is gated: its license must be accepted on Hugging Face.",
    "missing_repo": "The model's files were not found.",
    "unsupported_architecture": "This vLLM cannot run the model's architecture.",
    "port_taken": "The engine's address was taken by another process.",
    "bad_argument": "The engine refused its command line.",
    "offline": "The model could not be downloaded: the Hugging Face Hub cannot be reached.",
    "engine_died": "The engine crashed while starting.",
}

HEALTH_EVERY_S = 1.0  # while starting
HEALTH_READY_EVERY_S = 2.0
HEALTH_FAILURES = 5  # consecutive failed /health answers of a ready engine before it counts as hung


@dataclass(frozen=True, kw_only=True)
class WatchPorts:
    """What the state machine needs from outside, passed in."""

    load: Callable[[str], Deployment | None]  # the stored record, or None
    save: Callable[[Deployment], None]
    exited: Callable[[Deployment], int | bool | None]  # exit code, True when gone, None if alive
    healthy: Callable[[Deployment], Awaitable[bool]]
    end: Callable[[Deployment], Awaitable[None]]  # end the engine's whole process group
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass
class Watch:
    """The state one watched deployment carries between ticks."""

    dep_id: str
    measured: Measured = field(default_factory=Measured)
    offset: int = 0  # how far into the log file has been read
    health_failures: int = 0
    last_health: float = 0.0


def read_log(d: Deployment, w: Watch, clock: Callable[[], float]) -> bool:
    """Read the log lines written since the last call into `d` and `w`; True on any change."""
    try:
        with Path(d.log_path).open("rb") as fh:
            fh.seek(w.offset)
            chunk = fh.read(4 * 2**20)
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
                d.engine_ready_at = clock()
                changed = True
        elif phase and d.state == "starting" and phase != d.phase:
            d.phase = phase
            changed = True
    return changed


def failure_of(tail: list[str], code: int | bool) -> tuple[str, str]:
    """The cause and the fix of an engine that exited, from its log tail and exit status."""
    failure = None
    for line in tail:
        failure = read_failure(line) or failure
        if failure and failure.kind != "engine_died":
            break
    if failure:
        fix = FIXES[failure.kind].format(suggested=failure.suggested_max_model_len or "a shorter one")
        return f"{SENTENCES[failure.kind]} The log says: {failure.line}", fix
    if isinstance(code, bool):
        return "the engine's processes are gone", "launch it again; see the log tail"
    if code < 0:
        return (f"the engine was killed by signal {-code} ({signal.Signals(-code).name})",
                "launch it again; if nobody stopped it, the kernel's OOM killer may have")
    return f"the engine exited with code {code}", "see the log tail"


async def follow(w: Watch, ports: WatchPorts, *, start_timeout: float, poll: float,
                 tail: Callable[[Deployment], list[str]]) -> None:
    """Watch until the deployment leaves starting/ready; every end of the engine is saved
    as a state with its cause, after its whole group was ended."""
    while True:
        d = ports.load(w.dep_id)
        if d is None or d.state not in ("starting", "ready"):
            return
        changed = read_log(d, w, ports.clock)
        code = ports.exited(d)
        if code is not None:
            read_log(d, w, ports.clock)
            await ports.end(d)  # the leader is gone; its EngineCore and workers may not be
            cause, fix = failure_of(tail(d), code)
            _fail(d, w, ports, cause, fix)
            return
        now = ports.clock()
        if d.state == "starting":
            started = d.started_at if d.started_at is not None else now
            if now - started > start_timeout:
                await ports.end(d)
                _fail(d, w, ports, f"the engine did not become ready in {start_timeout:.0f} s "
                                   f"(last phase: {d.phase or 'none'})",
                      "see the log tail; a first download of a large model can take longer "
                      "(ADVISOR_START_TIMEOUT)")
                return
            if d.engine_ready_at or now - w.last_health > HEALTH_EVERY_S:
                w.last_health = now
                if await ports.healthy(d):
                    d.state, d.phase, d.ready_at = "ready", None, ports.clock()
                    changed = True
        elif now - w.last_health > HEALTH_READY_EVERY_S:
            w.last_health = now
            if await ports.healthy(d):
                w.health_failures = 0
            else:
                w.health_failures += 1
                if w.health_failures >= HEALTH_FAILURES:
                    await ports.end(d)
                    _fail(d, w, ports, "the engine stopped answering /health",
                          "launch it again; see the log tail for why it hung")
                    return
        if changed:
            d.measured = w.measured.as_dict()
            current = ports.load(w.dep_id)
            if current is None or current.state not in ("starting", "ready"):
                return  # stopped meanwhile: the stop's record wins
            ports.save(d)
        await ports.sleep(poll)


def _fail(d: Deployment, w: Watch, ports: WatchPorts, cause: str, fix: str) -> None:
    current = ports.load(d.id)
    if current is not None and current.state not in ("starting", "ready"):
        return  # a stop got there first: it owns the record
    d.measured = w.measured.as_dict()
    d.state, d.phase, d.cause, d.fix, d.stopped_at = "failed", None, cause, fix, ports.clock()
    ports.save(d)
