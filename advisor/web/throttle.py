"""How many wrong keys the service listens to: a few per client and a cap over all clients,
per sliding window, kept in memory. Pure: the clock is passed in.

The per-client limit spares everyone else from one client's typos; the overall cap is what
holds against a flood, since a client's address is whatever a trusted proxy says it is.
While a client is locked out every attempt is refused, the right key included, and refused
attempts are not counted, so the lock ends when the window passes. Handlers that run in
worker threads consult it too, hence the lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class Throttle:
    def __init__(self, *, per_client: int = 5, overall: int = 30, window: float = 60,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.overall, self.window, self.clock = per_client, overall, window, clock
        self._all: deque[float] = deque()  # every failure in the window, oldest first
        self._by_client: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _forget(self, now: float) -> None:
        while self._all and self._all[0] <= now - self.window:
            self._all.popleft()
        for client in list(self._by_client):
            times = self._by_client[client]
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._by_client[client]

    def wait(self, client: str) -> int:
        """Whole seconds until `client` may try again; 0 when it may try now."""
        with self._lock:
            now = self.clock()
            self._forget(now)
            until = 0.0
            if len(self._all) >= self.overall:
                until = self._all[-self.overall] + self.window
            mine = self._by_client.get(client)
            if mine is not None and len(mine) >= self.per_client:
                until = max(until, mine[-self.per_client] + self.window)
        return max(1, math.ceil(until - now)) if until > now else 0

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._forget(now)
            self._all.append(now)
            self._by_client.setdefault(client, deque()).append(now)

    def tracked(self) -> int:
        """Clients with failures in the window (what the throttle holds in memory)."""
        with self._lock:
            self._forget(self.clock())
            return len(self._by_client)
