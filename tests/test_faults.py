"""Faults of the supervisor, store and home, each reproduced with real processes, real SQLite,
real signals and (where the fault is the engine's) the real CPU vLLM engine: each ends in a
named state, with nothing left running and nothing stored lost.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from engine import free_port
from service import KEY, TINY, Service, free_port_range
from tinymodels import build_servable_model

from advisor.home import socket_dir
from advisor.procs import group_alive, group_members, identity
from advisor.specs import Deployment
from advisor.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="model")
def fx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_servable_model(tmp_path_factory.mktemp("models") / "tiny")


def _serve(home: Path, *extra: str, port: int | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`advisor serve` run to its end (for homes it must refuse)."""
    env = {**os.environ, "ADVISOR_HOME": str(home), "ADVISOR_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "advisor", "serve", "--port", str(port or free_port()),
                           *extra], capture_output=True, text=True, env=env, timeout=timeout)


def _engines_of(home: Path) -> list[int]:
    """Every process whose command line names an engine socket of this home."""
    sockets = str(socket_dir(home))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            seen = identity(int(entry.name))
            if seen and any(a.startswith(sockets) and a.endswith(".sock") for a in seen.cmdline):
                found.append(seen.pid)
    return found


def _wait_gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not group_alive(pgid)


@pytest.fixture(scope="module", name="service")
def fx_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("faults") / "home", free_port_range(2))
    yield svc
    svc.stop()


def test_a_second_service_on_the_same_home_refuses_and_touches_nothing(service: Service,
                                                                        model: Path) -> None:
    d = service.launch(model=str(model), **TINY).json()
    d = service.wait_state(d["id"], {"ready", "failed"})
    assert d["state"] == "ready", d["cause"]
    before = service.http.get("/api/deployments").json()
    taken = _serve(service.home, port=service.port)  # the first service's port, too
    assert taken.returncode == 2 and "cannot listen" in taken.stderr, taken.stderr
    assert taken.stderr.strip().count("\n") == 0, taken.stderr
    second = _serve(service.home)
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0, second.stderr  # one line
    assert "another advisor serve" in second.stderr and str(service.home) in second.stderr
    # the first service's engine still serves, and nothing stored changed
    assert service.http.get("/api/deployments").json() == before
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=KEY)
    reply = client.chat.completions.create(model="tiny", max_tokens=4,
                                           messages=[{"role": "user", "content": "still there?"}])
    assert reply.choices[0].message.content is not None

    # files of the home are private: database, logs, the engine's key and socket folder
    home = service.home
    for path in (home / "advisor.db", home / "logs" / "advisor.log", Path(d["log_path"]),
                 Path(d["socket"]).with_suffix(".key")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert Path(d["socket"]).with_suffix(".key").stat().st_size > 0, "the key was written whole"
    assert stat.S_IMODE(Path(d["socket"]).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_an_engine_is_reached_only_through_the_advisor(service: Service, model: Path) -> None:
    d = next(x for x in service.http.get("/api/deployments").json() if x["state"] == "ready")
    # nothing listens on TCP: no port to find, and the key is in no command line
    assert d["port"] is None
    key = Path(d["socket"]).with_suffix(".key").read_text()
    for pid in group_members(d["pid"]):
        seen = identity(pid)
        assert seen and not any(key in a for a in seen.cmdline), seen
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout \
        if Path("/usr/bin/ss").exists() else ""
    assert f"pid={d['pid']}," not in listening
    # another local user cannot reach the socket, not even the routes vLLM's key leaves open
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1]); print('connected')\n"
             "except OSError as e: print(type(e).__name__)\n")
    other = subprocess.run(["/usr/bin/python3", "-c", probe, d["socket"]], capture_output=True,
                           text=True, user="nobody", timeout=30)
    assert other.stdout.strip() == "PermissionError", other


def test_a_killed_leader_has_its_whole_group_ended(service: Service, model: Path) -> None:
    d = next(x for x in service.http.get("/api/deployments").json() if x["state"] == "ready")
    workers = [p for p in group_members(d["pid"]) if p != d["pid"]]
    assert workers, "vLLM's EngineCore runs beside the API server"
    os.kill(d["pid"], signal.SIGKILL)  # the leader only, as the OOM killer would
    d = service.wait_state(d["id"], {"failed"}, timeout=60)
    assert "signal 9" in d["cause"], d["cause"]
    assert _wait_gone(d["pid"]), f"left running: {group_members(d['pid'])}"
    assert not Path(d["socket"]).exists()
    assert service.http.get("/v1/models").json()["data"] == [], "no routing to a dead engine"
    assert service.http.delete(f"/api/deployments/{d['id']}").json()["state"] == "failed"


def test_an_orphaned_group_found_at_start_is_ended_and_marked_lost(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    first = Service(home, free_port_range(2), "--keep-engines")
    d = first.launch(model=str(model), **TINY).json()
    d = first.wait_state(d["id"], {"ready", "failed"})
    assert d["state"] == "ready", d["cause"]
    first.stop()  # the engine outlives the service ...
    assert group_alive(d["pid"])
    os.kill(d["pid"], signal.SIGKILL)  # ... then its leader dies while nobody watches
    time.sleep(1)
    assert group_members(d["pid"]), "its EngineCore is left behind, holding memory"
    second = Service(home, free_port_range(2))
    try:
        lost = second.deployment(d["id"])
        assert lost["state"] == "lost" and "gone" in lost["cause"]
        assert _wait_gone(d["pid"]), f"left running: {group_members(d['pid'])}"
    finally:
        second.stop()


def test_a_locked_database_refuses_the_launch_and_starts_nothing(tmp_path: Path, model: Path) -> None:
    svc = Service(tmp_path / "home", free_port_range(2))
    try:
        kept = svc.launch(model=str(model), gpus=0, cpu_kv_gib=4096, max_model_len=256)
        assert kept.status_code == 422  # a refusal stores nothing; the list is the baseline
        before = svc.http.get("/api/deployments").json()
        other = sqlite3.connect(svc.home / "advisor.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the database
        try:
            r = svc.launch(model=str(model), **TINY)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert r.status_code == 503, r.text
        assert "database" in r.json()["detail"], r.text
        assert not _engines_of(svc.home), "no engine runs that the store does not list"
        assert svc.http.get("/api/deployments").json() == before
        assert not list((svc.home / "run").glob("*.key")), "no key file left behind"
    finally:
        svc.stop()


@pytest.fixture(name="small_disk")
def fx_small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_refuses_the_launch_and_starts_nothing(small_disk: Path, model: Path) -> None:
    home = small_disk / "home"
    svc = Service(home, free_port_range(2))
    try:
        first = svc.http.get("/api/deployments").json()
        with (small_disk / "filler").open("wb") as fh:  # fill what is left of the disk
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        r = svc.launch(model=str(model), **TINY)
        assert r.status_code == 503, r.text
        assert "disk" in r.json()["detail"] or "database" in r.json()["detail"]
        assert not _engines_of(home)
        (small_disk / "filler").unlink()
        after = svc.http.get("/api/deployments").json()
        new = [x for x in after if x["id"] not in {f["id"] for f in first}]
        # either nothing could be written, or the record says why the launch failed
        assert all(x["state"] == "failed" and x["cause"] for x in new), new
        assert svc.http.get("/healthz").status_code == 200
    finally:
        svc.stop()


def test_a_reused_pid_is_not_taken_for_an_engine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        seen = identity(stranger.pid)
        assert seen
        store = Store(home / "advisor.db")
        # a record of an engine whose PID now belongs to someone else
        store.save(Deployment(id="reused01", model="tiny", repo="/m", quant="none", state="ready",
                              pid=stranger.pid, pid_start=seen.start_ticks - 1,
                              command=["python", "-m", "vllm.entrypoints.openai.api_server"],
                              socket=str(home / "run" / "reused01.sock"), created_at=1.0))
        store.save(Deployment(id="samecmd1", model="tiny", repo="/m", quant="none", state="ready",
                              pid=stranger.pid, pid_start=seen.start_ticks, command=["sleep", "6000"],
                              created_at=2.0))
        store.close()
        svc = Service(home, free_port_range(2))
        try:
            for dep_id in ("reused01", "samecmd1"):
                d = svc.deployment(dep_id)
                assert d["state"] == "lost" and "another process" in d["cause"], d
        finally:
            svc.stop()
        assert stranger.poll() is None, "the unrelated process was left alone"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_home_that_cannot_be_used_stops_serve_with_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    done = _serve(a_file)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "ADVISOR_HOME" in done.stderr and str(a_file) in done.stderr

    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode == 0:
        try:
            done = _serve(ro)
            assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
            assert "Read-only" in done.stderr and "ADVISOR_HOME" in done.stderr
        finally:
            subprocess.run(["umount", "-l", str(ro)], check=False)


@pytest.mark.parametrize("content", [b"", b"this is not a database" * 100], ids=["empty", "garbage"])
def test_a_damaged_database_is_kept_aside_never_replaced_silently(tmp_path: Path,
                                                                 content: bytes) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "advisor.db").write_bytes(content)
    svc = Service(home, free_port_range(2))
    try:
        assert svc.http.get("/api/deployments").json() == []
    finally:
        svc.stop()
    aside = list(home.glob("advisor.db.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert "kept aside" in svc.log.read_text()  # said on stderr
    assert "kept aside" in (home / "logs" / "advisor.log").read_text()


def test_one_unreadable_row_does_not_break_listings_or_estimates(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    store = Store(home / "advisor.db")
    store.save(Deployment(id="good0001", model="tiny", repo=str(model), quant="none", state="stopped",
                          created_at=1.0))
    store._db.execute("INSERT INTO deployments (id, state, created_at, record) VALUES "
                      "('bad00001', 'stopped', 2.0, '{\"id\": 3')")
    store.close()
    svc = Service(home, free_port_range(2))
    try:
        listed = svc.http.get("/api/deployments")
        assert listed.status_code == 200 and [d["id"] for d in listed.json()] == ["good0001"]
        est = svc.http.post("/api/estimate", json={"model": str(model), **TINY})
        assert est.status_code == 200, est.text
        assert svc.http.get("/api/deployments/bad00001").status_code == 404
    finally:
        svc.stop()
    assert "bad00001" in (home / "logs" / "advisor.log").read_text()
    again = sqlite3.connect(home / "advisor.db")
    assert again.execute("SELECT count(*) FROM deployments").fetchone()[0] == 2, "nothing deleted"


def test_an_unexpected_exception_is_logged_once_and_the_answer_says_where(advisor_home: Path) -> None:
    from litestar import get
    from litestar.testing import TestClient

    from advisor.config import load_settings
    from advisor.web.app import create_app

    @get("/api/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("a fault of ours")

    app = create_app(load_settings())
    app.register(boom)
    with TestClient(app=app) as client:
        api = client.get("/api/boom")
        page = client.get("/api/boom", headers={"accept": "text/html"})
    log = (advisor_home / "logs" / "advisor.log").read_text()
    assert api.status_code == 500 and "advisor.log" in api.json()["detail"]
    assert "RuntimeError" not in api.text, "no traceback in the answer"
    assert log.count("RuntimeError: a fault of ours") == 2 and "Traceback" in log
    assert page.status_code == 500
