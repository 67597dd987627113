"""The SQLite store: deployments survive a reopen; migrations run once."""

from __future__ import annotations

from pathlib import Path

from advisor.specs import Deployment
from advisor.store import MIGRATIONS, Store


def _dep(dep_id: str, state: str = "starting", t: float = 1.0) -> Deployment:
    return Deployment(id=dep_id, model="tiny", repo="/m", quant="none", state=state,  # type: ignore[arg-type]
                      created_at=t, predicted={"kv_cache_tokens": 1024})


def test_a_saved_deployment_reads_back_whole_after_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    store.save(_dep("a1"))
    store.close()
    again = Store(tmp_path / "a.db")
    got = again.get("a1")
    assert got == _dep("a1")
    assert again._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_updates_replace_and_active_lists_only_live_states(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    store.save(_dep("a1", t=1))
    store.save(_dep("b2", t=2))
    store.save(_dep("a1", "stopped", t=1))
    assert [d.id for d in store.all()] == ["b2", "a1"]  # newest first
    assert [d.id for d in store.active()] == ["b2"]
    assert store.get("nope") is None
