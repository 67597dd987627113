"""What /v1 routes to: the ready engines by the model names they serve, with their keys.

Kept in memory (it is on the path of every /v1 call); the supervisor adds an engine when
it becomes ready and removes it the moment it ends for any reason. Where several engines
serve one name (the replicas of a launch), a request goes to the one with the fewest
requests outstanding, ties to the one that has been given the fewest, so that requests
one after another alternate too.
"""

from __future__ import annotations

from advisor.specs import Deployment


class Routes:
    def __init__(self) -> None:
        self._ready: dict[str, Deployment] = {}
        self._keys: dict[str, str] = {}  # engine API keys, never in the database
        self._outstanding: dict[str, int] = {}  # requests passed on and not yet answered
        self._given: dict[str, int] = {}  # requests passed on in all

    def add_key(self, dep_id: str, key: str) -> None:
        self._keys[dep_id] = key

    def set_ready(self, d: Deployment) -> None:
        self._ready[d.id] = d

    def remove(self, dep_id: str, *, keep_key: bool = False) -> None:
        self._ready.pop(dep_id, None)
        self._given.pop(dep_id, None)
        if not keep_key:
            self._keys.pop(dep_id, None)

    def route(self, model_name: str) -> tuple[Deployment, str] | None:
        """The ready engine that serves `model_name` with the fewest requests outstanding
        (then the fewest given), and its own API key."""
        best: Deployment | None = None
        for d in self._ready.values():
            if model_name in d.served_names and d.id in self._keys and (
                    best is None or self._load(d.id) < self._load(best.id)):
                best = d
        return (best, self._keys[best.id]) if best else None

    def _load(self, dep_id: str) -> tuple[int, int]:
        return self._outstanding.get(dep_id, 0), self._given.get(dep_id, 0)

    def take(self, model_name: str) -> tuple[Deployment, str] | None:
        """`route`, counting the request as outstanding on the engine chosen until `done`."""
        hit = self.route(model_name)
        if hit:
            dep_id = hit[0].id
            self._outstanding[dep_id] = self._outstanding.get(dep_id, 0) + 1
            self._given[dep_id] = self._given.get(dep_id, 0) + 1
        return hit

    def done(self, dep_id: str) -> None:
        left = self._outstanding.get(dep_id, 0) - 1
        if left > 0:
            self._outstanding[dep_id] = left
        else:
            self._outstanding.pop(dep_id, None)

    def outstanding(self, dep_id: str) -> int:
        return self._outstanding.get(dep_id, 0)

    def ready(self) -> list[tuple[Deployment, str]]:
        return [(d, self._keys[d.id]) for d in self._ready.values() if d.id in self._keys]
