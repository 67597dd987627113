"""Server-sent events for the dashboards: `deployment` on every change, and every two
seconds `gpu` (the host's GPUs, RAM) and `metrics` (vLLM's, for a ready engine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from advisor.specs import Deployment, HostProfile
from advisor.supervisor import Supervisor

TICK_S = 2.0
_sample: tuple[float, bytes] = (0.0, b"")


def _host(profiler: Callable[[], HostProfile]) -> bytes:
    """One host sample shared by every open dashboard (NVML is not free)."""
    global _sample
    if time.monotonic() - _sample[0] > TICK_S * 0.9:
        _sample = (time.monotonic(), msgspec.json.encode(profiler()))
    return _sample[1]


@get("/api/events", tags=["events"])
async def events(supervisor: NamedDependency[Supervisor],
                 profiler: NamedDependency[Callable[[], HostProfile]],
                 deployment: FromQuery[str | None] = None) -> ServerSentEvent:
    """`deployment`, `gpu` and `metrics` events; `?deployment=ID` for one deployment's."""
    if deployment:
        # an unknown id is a 404 (UnknownDeployment) here, before the stream starts: raised
        # inside the stream it was a traceback in the log and a 200 cut short
        supervisor.get(deployment)
    queue: asyncio.Queue[Deployment] = asyncio.Queue(maxsize=256)

    def listener(d: Deployment) -> None:
        if (deployment is None or d.id == deployment) and not queue.full():
            queue.put_nowait(d)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        supervisor.listeners.append(listener)
        try:
            if deployment:  # read again once listening, so that no change falls in between
                yield ServerSentEventMessage(event="deployment", data=msgspec.json.encode(
                    supervisor.get(deployment)).decode())
            next_tick = 0.0
            while True:
                wait = max(0.0, next_tick - time.monotonic())
                try:
                    d = await asyncio.wait_for(queue.get(), timeout=wait)
                    yield ServerSentEventMessage(event="deployment", data=msgspec.json.encode(d).decode())
                    continue
                except TimeoutError:
                    pass
                next_tick = time.monotonic() + TICK_S
                host = await asyncio.to_thread(_host, profiler)
                yield ServerSentEventMessage(event="gpu", data=host.decode())
                if deployment:
                    metrics = await supervisor.metrics(deployment)
                    if metrics:
                        yield ServerSentEventMessage(event="metrics",
                                                     data=msgspec.json.encode(metrics).decode())
        finally:
            supervisor.listeners.remove(listener)

    return ServerSentEvent(stream())
