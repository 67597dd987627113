"""The supervisor's state machine, with a scripted child at the seam (tests/fake_engine.py).

The same behaviours are shown on the real CPU engine in test_deployments_engine.py; here
they run in seconds, including the ones that take minutes for real (a hung start).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_engine import until_state
from tinymodels import build_model

from advisor.catalog import load_catalog, load_gpus
from advisor.config import load_settings
from advisor.procs import group_alive
from advisor.profile import read_host
from advisor.specs import PlanRequest
from advisor.store import Store
from advisor.supervisor import Supervisor, new_engine_key


@pytest.fixture(name="model")
def fx_model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "tiny")


@pytest.fixture(name="run")
def fx_run(tmp_path: Path, python: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("ADVISOR_VLLM_PYTHON", str(python))

    def run(mode: str, body: object, start_timeout: float = 30, grace: float = 10) -> object:
        monkeypatch.setenv("FAKE_ENGINE", mode)

        async def go() -> object:
            settings = load_settings()
            sup = Supervisor(settings, Store(settings.home / "a.db"), load_catalog(), load_gpus(),
                             read_host, start_timeout=start_timeout, grace=grace, poll=0.05)
            await sup.start()
            try:
                return await body(sup)  # type: ignore[operator]
            finally:
                await sup.shutdown(keep_engines=False)

        return asyncio.run(go())

    yield run


REQ = {"gpus": 0, "cpu_kv_gib": 1, "max_model_len": 256}


def test_a_start_goes_through_phases_to_ready_with_measured_figures(run, model: Path) -> None:  # type: ignore[no-untyped-def]
    async def body(sup: Supervisor) -> None:
        d = await sup.launch(PlanRequest(model=str(model), **REQ))
        assert d.state == "starting"
        d = await until_state(sup, d.id, {"ready", "failed"})  # type: ignore[assignment]
        assert d.state == "ready", d.cause
        assert d.measured["kv_cache_tokens"] == 1_048_576 == d.predicted["kv_cache_tokens"]
        assert d.ready_at and d.engine_ready_at and d.ready_at >= d.engine_ready_at
        stopped = await sup.stop(d.id)
        assert stopped.state == "stopping"
        d = await until_state(sup, d.id, {"stopped"})  # type: ignore[assignment]
        assert d.pid and not group_alive(d.pid)

    run("ok", body)


def test_a_refusal_in_the_log_becomes_a_cause_and_a_fix(run, model: Path) -> None:  # type: ignore[no-untyped-def]
    async def body(sup: Supervisor) -> None:
        d = await sup.launch(PlanRequest(model=str(model), **REQ))
        d = await until_state(sup, d.id, {"failed"})  # type: ignore[assignment]
        assert "To serve at least one request" in d.cause
        assert "vLLM suggests 32640" in d.fix

    run("kv", body)


def test_a_hung_start_times_out_into_failed_and_its_group_is_killed(run, model: Path) -> None:  # type: ignore[no-untyped-def]
    async def body(sup: Supervisor) -> None:
        d = await sup.launch(PlanRequest(model=str(model), **REQ))
        d = await until_state(sup, d.id, {"failed"}, timeout=30)  # type: ignore[assignment]
        assert "did not become ready in 2 s (last phase: profiling)" in d.cause
        assert not group_alive(d.pid)

    run("hang", body, start_timeout=2)


def test_stop_escalates_to_sigkill_after_the_grace_period(run, model: Path) -> None:  # type: ignore[no-untyped-def]
    async def body(sup: Supervisor) -> None:
        d = await sup.launch(PlanRequest(model=str(model), **REQ))
        d = await until_state(sup, d.id, {"ready"})  # type: ignore[assignment]
        await sup.stop(d.id)
        d = await until_state(sup, d.id, {"stopped"}, timeout=20)  # type: ignore[assignment]
        assert not group_alive(d.pid)

    run("stubborn", body, grace=1)


def test_at_start_a_recorded_engine_that_is_gone_is_marked_lost(tmp_path: Path, python: Path,
                                                                model: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    monkeypatch.setenv("ADVISOR_VLLM_PYTHON", str(python))
    monkeypatch.setenv("FAKE_ENGINE", "ok")

    async def go() -> None:
        settings = load_settings()
        first = Supervisor(settings, Store(settings.home / "a.db"), load_catalog(), load_gpus(),
                           read_host, poll=0.05)
        await first.start()
        d = await first.launch(PlanRequest(model=str(model), **REQ))
        await until_state(first, d.id, {"ready"})
        await first.shutdown(keep_engines=True)  # the service goes away, the engine stays
        assert d.pid and group_alive(d.pid)
        os.killpg(d.pid, signal.SIGKILL)  # ... and then the engine dies while nobody watches
        for _ in range(100):
            if not group_alive(d.pid):
                break
            await asyncio.sleep(0.05)
        second = Supervisor(settings, Store(settings.home / "a.db"), load_catalog(), load_gpus(),
                            read_host, poll=0.05)
        await second.start()
        lost = second.get(d.id)
        assert lost.state == "lost" and "gone when the service started" in (lost.cause or "")
        await second.shutdown(keep_engines=False)

    asyncio.run(go())


def test_an_engine_key_never_reads_as_a_flag_on_the_engines_command_line() -> None:
    # a url-safe token began with "-" one launch in 64, and the engine refused its argv
    assert not any(new_engine_key().startswith("-") for _ in range(2000))


def test_a_record_ended_behind_the_watch_is_no_longer_routed(run, model: Path) -> None:  # type: ignore[no-untyped-def]
    # what a second service on the same home once did: mark the first one's engine stopped
    async def body(sup: Supervisor) -> None:
        d = await sup.launch(PlanRequest(model=str(model), **REQ))
        d = await until_state(sup, d.id, {"ready"})  # type: ignore[assignment]
        assert sup.route("tiny") is not None
        d.state = "stopped"
        sup.store.save(d)  # behind the supervisor's back
        for _ in range(100):
            if sup.route("tiny") is None:
                break
            await asyncio.sleep(0.05)
        try:
            assert sup.route("tiny") is None and sup.ready() == []
        finally:
            # the record says stopped, so the supervisor's shutdown leaves the engine be: the
            # test ends what it orphaned
            assert d.pid
            os.killpg(d.pid, signal.SIGKILL)
            for _ in range(100):
                if not group_alive(d.pid):
                    break
                await asyncio.sleep(0.05)
        assert not group_alive(d.pid)

    run("ok", body)
