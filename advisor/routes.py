"""What /v1 routes to: the ready engines by the model names they serve, with their keys.

Kept in memory (it is on the path of every /v1 call); the supervisor adds an engine when
it becomes ready and removes it the moment it ends for any reason.
"""

from __future__ import annotations

from advisor.specs import Deployment


class Routes:
    def __init__(self) -> None:
        self._ready: dict[str, Deployment] = {}
        self._keys: dict[str, str] = {}  # engine API keys, never in the database

    def add_key(self, dep_id: str, key: str) -> None:
        self._keys[dep_id] = key

    def set_ready(self, d: Deployment) -> None:
        self._ready[d.id] = d

    def remove(self, dep_id: str, *, keep_key: bool = False) -> None:
        self._ready.pop(dep_id, None)
        if not keep_key:
            self._keys.pop(dep_id, None)

    def route(self, model_name: str) -> tuple[Deployment, str] | None:
        """The ready engine that serves `model_name`, and its own API key."""
        for d in self._ready.values():
            if model_name in d.served_names and d.id in self._keys:
                return d, self._keys[d.id]
        return None

    def ready(self) -> list[tuple[Deployment, str]]:
        return [(d, self._keys[d.id]) for d in self._ready.values() if d.id in self._keys]
