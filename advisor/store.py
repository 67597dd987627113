"""SQLite under ADVISOR_HOME: deployments, their settings, states, timings and figures.

The only importer of sqlite3. Each deployment is a row of indexed columns plus its whole
record as JSON, so new fields need no migration; schema changes go in MIGRATIONS.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from advisor.errors import AdvisorError
from advisor.specs import ACTIVE_STATES, BenchResult, Deployment

log = logging.getLogger("advisor.store")


class StoreUnavailable(AdvisorError):
    """The database could not be written (locked by another process, disk full): HTTP 503."""


class StoreDamaged(AdvisorError):
    """The database cannot be opened or created at all (a read-only home): the service stops."""


def _m001_deployments(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE deployments (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            record TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX deployments_state ON deployments(state)")


def _m002_benches(db: sqlite3.Connection) -> None:
    # load tests in a table of their own: the record is rewritten whole by every watch save
    db.execute("""
        CREATE TABLE benches (
            deployment TEXT NOT NULL REFERENCES deployments(id),
            at REAL NOT NULL,
            record TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX benches_deployment ON benches(deployment, at)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_deployments, _m002_benches]


class Store:
    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.kept_aside: Path | None = None  # where a damaged database was moved, if it was
        self._lock = threading.Lock()
        self._unreadable: set[str] = set()
        self._busy_ms = busy_timeout_ms
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except OSError as exc:
            raise StoreDamaged(f"cannot create the database {path} ({exc.strerror or exc}): check "
                               "that ADVISOR_HOME is writable and its disk is not full") from None
        except sqlite3.DatabaseError as exc:
            if not path.exists() or isinstance(exc, sqlite3.OperationalError):
                raise StoreDamaged(f"cannot open the database {path} ({exc}): check that "
                                   "ADVISOR_HOME is writable and its disk is not full") from None
            self.kept_aside = self._keep_aside(f"it cannot be read ({exc})")
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size == 0:
            # SQLite takes an empty file for an empty database: history would vanish unsaid
            self.kept_aside = self._keep_aside("it was empty (0 bytes)")
        if not self.path.exists():  # created 0600: deployments name models, folders and commands
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # one connection, serialised: the service writes little and from one process
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA busy_timeout={int(self._busy_ms)}")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self._db = db
            self._migrate()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _keep_aside(self, why: str) -> Path:
        """Move a damaged database (and its WAL) aside, never over it, and say so in the log."""
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                part.rename(str(aside) + suffix)
        log.warning("the database %s was kept aside as %s because %s; a new one was started",
                    self.path, aside, why)
        return aside

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for i, step in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.execute("BEGIN")
                step(self._db)
                self._db.execute(f"PRAGMA user_version={i}")
                self._db.execute("COMMIT")

    def save(self, d: Deployment) -> None:
        """Write the record; StoreUnavailable when the database is locked or the disk full."""
        record = msgspec.json.encode(d).decode()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO deployments (id, state, created_at, record) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET state=excluded.state, record=excluded.record",
                    (d.id, d.state, d.created_at, record))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"could not write deployment {d.id} to {self.path} ({exc}): "
                                   "another process may hold the database, or the disk is full") from None

    def save_bench(self, deployment_id: str, result: BenchResult) -> None:
        """Keep one load test's figures beside the deployment's prediction."""
        try:
            with self._lock:
                self._db.execute("INSERT INTO benches (deployment, at, record) VALUES (?, ?, ?)",
                                 (deployment_id, result.at, msgspec.json.encode(result).decode()))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"could not write the load test of {deployment_id} to "
                                   f"{self.path} ({exc})") from None

    def _with_benches(self, out: list[Deployment]) -> list[Deployment]:
        if not out:
            return out
        by_id = {d.id: d for d in out}
        marks = ",".join("?" * len(by_id))
        with self._lock:
            rows = self._db.execute(
                f"SELECT deployment, record FROM benches WHERE deployment IN ({marks}) ORDER BY at",
                list(by_id)).fetchall()
        for d in out:
            d.benches = []
        for dep_id, record in rows:
            try:
                by_id[dep_id].benches.append(msgspec.json.decode(record, type=BenchResult))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("a load test of %s in %s cannot be read and is skipped: %s",
                          dep_id, self.path, exc)
        return out

    def get(self, deployment_id: str) -> Deployment | None:
        with self._lock:
            row = self._db.execute("SELECT id, record FROM deployments WHERE id = ?",
                                   (deployment_id,)).fetchone()
        return next(iter(self._with_benches(self._decode([row]))), None) if row else None

    def all(self) -> list[Deployment]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, record FROM deployments ORDER BY created_at DESC").fetchall()
        return self._with_benches(self._decode(rows))

    def benched(self) -> list[Deployment]:
        """The deployments with a load test, with their tests: what calibrates the ranking
        (one indexed query that finds nothing on a host that never ran one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, record FROM deployments WHERE id IN (SELECT DISTINCT deployment "
                "FROM benches) ORDER BY created_at DESC").fetchall()
        return self._with_benches(self._decode(rows))

    def active(self) -> list[Deployment]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, record FROM deployments WHERE state IN ({marks}) ORDER BY created_at",
                ACTIVE_STATES).fetchall()
        return self._decode(rows)

    def _decode(self, rows: list[tuple[str, str]]) -> list[Deployment]:
        """Records that decode; one that does not is left in place and logged (once per id),
        so one damaged row cannot break every listing and estimate."""
        out = []
        for row_id, record in rows:
            try:
                out.append(msgspec.json.decode(record, type=Deployment))
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                if row_id not in self._unreadable:
                    self._unreadable.add(row_id)
                    log.error("deployment %s in %s cannot be read and is skipped: %s",
                              row_id, self.path, exc)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
