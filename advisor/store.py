"""SQLite under ADVISOR_HOME: deployments, their settings, states, timings and figures.

The only importer of sqlite3. Each deployment is a row of indexed columns plus its whole
record as JSON, so new fields need no migration; schema changes go in MIGRATIONS.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from advisor.specs import ACTIVE_STATES, Deployment


def _m001_deployments(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE deployments (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            record TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX deployments_state ON deployments(state)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_deployments]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # one connection, serialised: the service writes little and from one process
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for i, step in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.execute("BEGIN")
                step(self._db)
                self._db.execute(f"PRAGMA user_version={i}")
                self._db.execute("COMMIT")

    def save(self, d: Deployment) -> None:
        record = msgspec.json.encode(d).decode()
        with self._lock:
            self._db.execute(
                "INSERT INTO deployments (id, state, created_at, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, record=excluded.record",
                (d.id, d.state, d.created_at, record))

    def get(self, deployment_id: str) -> Deployment | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM deployments WHERE id = ?",
                                   (deployment_id,)).fetchone()
        return msgspec.json.decode(row[0], type=Deployment) if row else None

    def all(self) -> list[Deployment]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM deployments ORDER BY created_at DESC").fetchall()
        return [msgspec.json.decode(r[0], type=Deployment) for r in rows]

    def active(self) -> list[Deployment]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            rows = self._db.execute(
                f"SELECT record FROM deployments WHERE state IN ({marks}) ORDER BY created_at",
                ACTIVE_STATES).fetchall()
        return [msgspec.json.decode(r[0], type=Deployment) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
