"""Engine processes as process groups: spawn one, know it again, end all of it.

The only home of subprocess and os.killpg. An engine is the leader of a session of its own
(vLLM's EngineCore and Worker processes are its children, in its group), so ending a
deployment means ending the group, not the leader: a leader killed with -9 leaves its
children holding the memory. A recorded PID alone is not an engine: after a reboot or a
long run the number is reused, so a process is recognised by its start time and command
line as /proc records them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import msgspec

Sleep = Callable[[float], Awaitable[None]]


class ProcessIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """What tells one process from a later one that got the same PID."""

    pid: int
    start_ticks: int  # /proc/PID/stat field 22: clock ticks after boot
    cmdline: list[str]


def identity(pid: int) -> ProcessIdentity | None:
    """The running process `pid` as /proc shows it; None when there is none (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return ProcessIdentity(pid=pid, start_ticks=int(fields[19]),
                           cmdline=[a.decode(errors="replace") for a in raw.split(b"\0") if a])


def is_same(pid: int, start_ticks: int | None, argv: list[str]) -> bool:
    """Whether `pid` is still the process that was started with `argv` at `start_ticks`."""
    now = identity(pid)
    return now is not None and start_ticks is not None and now.start_ticks == start_ticks \
        and now.cmdline == argv


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def numa_cores() -> list[list[int]]:
    """The cores this process may run on, by NUMA node (/sys/devices/system/node), each
    node's in order; one group of them all where the kernel shows no nodes."""
    allowed = os.sched_getaffinity(0)
    nodes: list[list[int]] = []
    for node in sorted(Path("/sys/devices/system/node").glob("node[0-9]*"),
                       key=lambda p: int(p.name[4:])):
        try:
            listed = (node / "cpulist").read_text().strip()
        except OSError:
            continue
        cores = [c for part in listed.split(",") if part
                 for c in _span(part) if c in allowed]
        if cores:
            nodes.append(cores)
    return nodes or [sorted(allowed)]


def _span(part: str) -> range:
    first, _, last = part.partition("-")
    return range(int(first), int(last or first) + 1)


def spawn(argv: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new session, its output appended to `log_path` (0600)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(argv, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env), start_new_session=True, cwd=cwd)
    finally:
        os.close(fd)


Child = subprocess.Popen[bytes]  # an engine this service spawned (others only have a PID)
Spawner = Callable[..., Child]


async def end_group(pgid: int, *, grace: float, child: subprocess.Popen[bytes] | None = None,
                    sleep: Sleep = asyncio.sleep, step: float = 0.1) -> bool:
    """TERM every process of the group, KILL what is left after `grace` seconds, and wait
    until none is left (reaping our own child). True when the group is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    waited = 0.0
    while waited < grace and group_alive(pgid):
        if child is not None:
            child.poll()
        await sleep(step)
        waited += step
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for _ in range(100):  # SIGKILL cannot be ignored; the kernel needs a moment to free them
        if child is not None:
            child.poll()
        if not group_alive(pgid):
            break
        await sleep(step)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(child.wait, 10)
    return not group_alive(pgid)


def owns_tcp_port(pid: int, port: int) -> bool:
    """Whether process `pid` holds the TCP socket whose local port is `port` (a connection it
    opened), from /proc/net/tcp{,6} and its file descriptors."""
    suffix = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[1].endswith(suffix):
                inodes.add(fields[9])
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False
