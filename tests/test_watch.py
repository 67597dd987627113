"""The starting/ready state machine (advisor.watch) with its clock, sleep and ports passed in:
a hung start, a dead leader, a hung engine and a stop that races the watch, in
milliseconds and without a real sleep. The same faults run end to end on the real engine
in test_faults.py and test_deployments_engine.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from advisor.specs import Deployment
from advisor.watch import Watch, WatchPorts, follow


class Scene:
    """One deployment's record, a clock that moves only when the machine sleeps, and what
    the machine asked of the outside."""

    def __init__(self, tmp: Path, *, exit_at: float | None = None, healthy_until: float = -1,
                 healthy_from: float = 1e9) -> None:
        log = tmp / "engine.log"
        log.write_text("")
        self.record = Deployment(id="d1", model="tiny", repo="/m", quant="none", state="starting",
                                 pid=4242, log_path=str(log), started_at=0.0)
        self.now = 0.0
        self.exit_at, self.healthy_until, self.healthy_from = exit_at, healthy_until, healthy_from
        self.ended: list[float] = []
        self.saved: list[str] = []
        self.log = log

    def load(self, dep_id: str) -> Deployment | None:
        return msgspec.structs.replace(self.record)

    def save(self, d: Deployment) -> None:
        self.record = msgspec.structs.replace(d)
        self.saved.append(d.state)

    def exited(self, d: Deployment) -> int | bool | None:
        return -9 if self.exit_at is not None and self.now >= self.exit_at else None

    async def healthy(self, d: Deployment) -> bool:
        return self.now >= self.healthy_from and (self.healthy_until < 0 or self.now < self.healthy_until)

    async def end(self, d: Deployment) -> None:
        self.ended.append(self.now)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    def ports(self) -> WatchPorts:
        return WatchPorts(load=self.load, save=self.save, exited=self.exited, healthy=self.healthy,
                          end=self.end, clock=lambda: self.now, sleep=self.sleep)

    def run(self, start_timeout: float = 600) -> Deployment:
        asyncio.run(asyncio.wait_for(
            follow(Watch(dep_id="d1"), self.ports(), start_timeout=start_timeout, poll=0.25,
                   tail=lambda d: self.log.read_text().splitlines()), timeout=10))
        return self.record


def test_a_start_that_never_answers_times_out_at_the_limit_and_is_ended(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    d = scene.run(start_timeout=600)
    assert d.state == "failed" and "did not become ready in 600 s" in (d.cause or "")
    assert scene.ended == [scene.now] and 600 < scene.now < 601  # ten simulated minutes, no real ones


def test_a_dead_leader_ends_its_group_then_fails_with_the_signal(tmp_path: Path) -> None:
    scene = Scene(tmp_path, exit_at=3.0, healthy_from=1.0)
    d = scene.run()
    assert d.state == "failed" and "signal 9 (SIGKILL)" in (d.cause or "")
    assert scene.saved[:1] == ["ready"], "it was ready before its leader died"
    assert len(scene.ended) == 1, "the group is ended before the failure is saved"


def test_the_engines_own_refusal_in_its_log_is_the_cause(tmp_path: Path) -> None:
    scene = Scene(tmp_path, exit_at=1.0)
    scene.log.write_text("ValueError: To serve at least one request with the model's max seq len "
                         "(65536), ... the estimated maximum model length is 32640.\n")
    d = scene.run()
    assert d.state == "failed" and "To serve at least one request" in (d.cause or "")
    assert "vLLM suggests 32640" in (d.fix or "")


def test_a_ready_engine_that_stops_answering_is_ended_after_five_misses(tmp_path: Path) -> None:
    scene = Scene(tmp_path, healthy_from=0.5, healthy_until=20.0)
    d = scene.run()
    assert d.state == "failed" and "stopped answering /health" in (d.cause or "")
    assert 20 + 5 * 2 <= scene.now < 20 + 6 * 2.5 and len(scene.ended) == 1


def test_a_stop_that_lands_while_watching_wins_and_nothing_is_overwritten(tmp_path: Path) -> None:
    scene = Scene(tmp_path, healthy_from=1e9)

    async def stop_soon(seconds: float) -> None:
        scene.now += seconds
        if scene.now >= 2.0 and scene.record.state == "starting":
            scene.record = msgspec.structs.replace(scene.record, state="stopping")

    scene.sleep = stop_soon  # type: ignore[method-assign]
    d = scene.run()
    assert d.state == "stopping" and scene.saved == [] and scene.ended == []
