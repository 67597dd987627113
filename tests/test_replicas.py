"""Several GPUs on one host, end to end with real CPU vLLM engines. Slow.

- The advisor in-process (uvicorn on a real port) with its host profile faked at the seam:
  two L4s, the first partly used. A launch of two replicas is planned per GPU, each engine
  a real process pinned with CUDA_VISIBLE_DEVICES and its own gpu_memory_utilization, read
  back from /proc; the CPU build ignores both, which is what lets it stand in for the GPUs.
  /v1 then shares requests between the two, counted by each engine's own /metrics.
- The CPU engine's own tensor parallelism: tp 2 on this machine's two cores, one rank per
  core (VLLM_CPU_OMP_THREADS_BIND "0|1", set by the supervisor), through `advisor serve`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from engine import free_port
from service import KEY, TINY, Service, free_port_range
from test_multi_gpu import host
from tinymodels import build_servable_model

from advisor.config import load_settings
from advisor.web.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="model")
def fx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_servable_model(tmp_path_factory.mktemp("models") / "tiny")


def test_cpu_tensor_parallel_2_runs_one_rank_per_core(tmp_path: Path, model: Path) -> None:
    svc = Service(tmp_path / "home", free_port_range(3))
    try:
        # two ranks on two cores leave the service and the engine's front end little CPU
        # while they start and take the first request: a slow host needs more than 30 s
        svc.http.timeout = httpx.Timeout(180)
        d = svc.launch(model=str(model), tp=2, **TINY).json()
        assert d["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "0|1", d
        d = svc.wait_state(d["id"], {"ready", "failed"})
        assert d["state"] == "ready", d["cause"]
        # each rank holds half the KV heads: 1 GiB holds twice the tokens of tp 1
        assert d["measured"]["kv_cache_tokens"] == d["predicted"]["kv_cache_tokens"] == 2_097_152
        r = svc.http.post("/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        svc.http.delete(f"/api/deployments/{d['id']}")
        svc.wait_state(d["id"], {"stopped"}, timeout=60)
    finally:
        svc.stop()


class InProcess:
    """`create_app` with a fake profiler, served by uvicorn on a real port in a thread."""

    def __init__(self, home: Path) -> None:
        settings = load_settings()
        assert settings.home == home
        # GPU 0 has 12 GiB taken by someone else, GPU 1 is empty
        self.app = create_app(settings, profiler=lambda: host([12.0, 0.3]))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.1)
        self.http = httpx.Client(base_url=self.url, timeout=60,
                                 headers={"Authorization": f"Bearer {KEY}"})

    def wait_ready(self, dep_id: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            d: dict[str, Any] = self.http.get(f"/api/deployments/{dep_id}").json()
            if d["state"] in ("ready", "failed", "stopped", "lost"):
                return d
            assert time.monotonic() < deadline, d
            time.sleep(0.5)

    def stop(self) -> None:
        self.server.should_exit = True  # the app's shutdown stops its engines
        self.thread.join(timeout=120)
        self.http.close()


@pytest.fixture(scope="module", name="pair")
def fx_pair(tmp_path_factory: pytest.TempPathFactory,
            model: Path) -> Iterator[tuple[InProcess, list[dict[str, Any]]]]:
    home = tmp_path_factory.mktemp("replicas") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVISOR_HOME", str(home))
        mp.setenv("ADVISOR_API_KEY", KEY)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # the CPU build's pool; the plan is a GPU's
        svc = InProcess(home)
        try:
            r = svc.http.post("/api/deployments", json={
                "model": str(model), "max_model_len": 256, "replicas": 2, "fit_to_need": True,
                "enforce_eager": True})
            assert r.status_code == 202, r.text
            first = r.json()
            group = [d for d in svc.http.get("/api/deployments").json()
                     if d["replica_of"] == first["id"]]
            assert len(group) == 2
            ready = [svc.wait_ready(d["id"]) for d in sorted(group, key=lambda d: d["replica"])]
            assert all(d["state"] == "ready" for d in ready), [d["cause"] for d in ready]
            yield svc, ready
        finally:
            svc.stop()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in raw if b"=" in p)


def _cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def test_each_replica_is_pinned_to_its_gpu_with_its_per_gpu_memory(
        pair: tuple[InProcess, list[dict[str, Any]]]) -> None:
    _svc, (one, two) = pair
    # the emptier GPU first; each its own, never the two pooled
    assert one["gpus"] == [1] and two["gpus"] == [0]
    layout = one["predicted"]["layout"]
    assert layout["dp"] == 2 and layout["replicas"] == [[1], [0]]
    util = one["predicted"]["gpu_mem_util"]
    assert 0 < util < 0.9  # from the predicted need, so the busy GPU 0 takes a replica too
    for d, gpu in ((one, "1"), (two, "0")):
        env, argv = _environ(d["pid"]), _cmdline(d["pid"])
        assert env["CUDA_VISIBLE_DEVICES"] == gpu and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert argv[argv.index("--gpu-memory-utilization") + 1] == f"{util:g}"
    # what is left on each GPU, as the plan says it
    left = {g["index"]: g for g in layout["gpus"]}
    assert left[0]["free_gib"] == pytest.approx(22.49 - 12.0, abs=0.01)
    assert left[0]["left_gib"] == pytest.approx(left[0]["free_gib"] - left[0]["planned_gib"], abs=0.01)
    assert left[1]["left_gib"] > left[0]["left_gib"]


def _served(svc: InProcess, dep_id: str) -> float:
    metrics = svc.http.get(f"/api/deployments/{dep_id}/metrics").json()
    return sum(v for k, v in metrics.items() if k.startswith("vllm:request_success_total"))


def test_v1_shares_the_load_between_the_replicas(
        pair: tuple[InProcess, list[dict[str, Any]]]) -> None:
    svc, replicas = pair
    before = [_served(svc, d["id"]) for d in replicas]

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=svc.url, timeout=120,
                                     headers={"Authorization": f"Bearer {KEY}"}) as client:
            replies = await asyncio.gather(*(client.post("/v1/completions", json={
                "model": "tiny", "prompt": f"Hello {i}", "max_tokens": 8}) for i in range(n)))
        return [r.status_code for r in replies]

    assert asyncio.run(burst(8)) == [200] * 8  # at once: least outstanding spreads them
    for i in range(4):  # one after another: ties go to the one given fewer
        r = svc.http.post("/v1/completions", json={"model": "tiny", "prompt": f"Hi {i}",
                                                   "max_tokens": 4})
        assert r.status_code == 200
    time.sleep(1.5)  # the metrics are shared for 1.5 s
    counts = [_served(svc, d["id"]) - b for d, b in zip(replicas, before, strict=True)]
    print(f"requests served per replica (engine /metrics): {counts}")  # shown with -s
    assert sum(counts) == 12, counts
    assert min(counts) >= 4, counts  # each engine says it served its share
