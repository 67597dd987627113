"""One-click launch, end to end: a real `advisor serve`, the real CPU vLLM engine, the
official `openai` client, real signals. Slow: each engine start takes about a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from service import KEY, TINY, Service, free_port_range
from tinymodels import build_servable_model

from advisor.procs import group_alive

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="model")
def fx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_servable_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module", name="service")
def fx_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("svc") / "home"
    svc = Service(home, free_port_range(6))
    yield svc
    svc.stop()


def test_launch_chat_stream_metrics_and_stop(service: Service, model: Path) -> None:
    r = service.launch(model=str(model), **TINY)
    assert r.status_code == 202, r.text
    d = r.json()
    assert d["state"] == "starting" and d["endpoint"] == "/v1"
    # the engine listens on a Unix socket in a private folder, with its key in its environment
    assert d["port"] is None and d["socket"] and "--uds" in d["command"]
    assert "--enforce-eager" in d["command"] and "--api-key" not in d["command"]
    phases: list[str] = []
    d = service.wait_state(d["id"], {"ready", "failed"}, seen=phases)
    assert d["state"] == "ready", d["cause"]
    assert phases, "a phase is shown while starting"
    # predicted against measured, as the engine printed it
    assert d["measured"]["kv_cache_tokens"] == d["predicted"]["kv_cache_tokens"] == 1_048_576
    assert d["measured"]["max_concurrency"] == d["predicted"]["max_concurrency"]

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=KEY)
    listed = [m.id for m in client.models.list().data]
    assert "tiny" in listed and str(model) in listed
    reply = client.chat.completions.create(model="tiny", max_tokens=8,
                                           messages=[{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens == 8
    chunks = list(client.chat.completions.create(model="tiny", max_tokens=8, stream=True,
                                                 messages=[{"role": "user", "content": "Hi"}]))
    assert len(chunks) >= 8 and any(c.choices and c.choices[0].delta.content for c in chunks)

    # /v1 without the advisor's key is refused; the engine's socket without its key too
    assert httpx.post(f"{service.url}/v1/chat/completions", json={"model": "tiny"}).status_code == 401
    direct = httpx.Client(transport=httpx.HTTPTransport(uds=d["socket"]), base_url="http://engine")
    assert direct.post("/v1/chat/completions", json={"model": "tiny"}).status_code == 401

    metrics = service.http.get(f"/api/deployments/{d['id']}/metrics").json()
    assert metrics["vllm:prompt_tokens_total"] > 0 and "vllm:num_requests_running" in metrics
    tail = service.http.get(f"/api/deployments/{d['id']}/logs", params={"lines": 50})
    assert tail.status_code == 200 and tail.text.count("\n") <= 50

    listed = subprocess.run([sys.executable, "-m", "advisor", "deployments", "--json", "--url",
                             service.url], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ADVISOR_API_KEY": KEY})
    assert d["id"] in listed.stdout
    r = service.http.delete(f"/api/deployments/{d['id']}")
    assert r.status_code == 202 and r.json()["state"] in ("stopping", "stopped")
    d = service.wait_state(d["id"], {"stopped"}, timeout=60)
    assert not group_alive(d["pid"]), "the engine's process group is gone"
    assert not Path(d["socket"]).exists(), "its socket is removed"


def test_an_engine_killed_with_sigkill_is_failed_with_its_cause(service: Service, model: Path) -> None:
    before = {x["id"] for x in service.http.get("/api/deployments").json()}
    d = service.launch(model=str(model), **TINY).json()
    d = service.wait_state(d["id"], {"ready", "failed"})
    assert d["state"] == "ready", d["cause"]
    os.killpg(d["pid"], signal.SIGKILL)
    d = service.wait_state(d["id"], {"failed", "lost"}, timeout=60)
    assert "signal 9" in d["cause"] or "gone" in d["cause"], d["cause"]
    assert d["fix"]
    after = {x["id"] for x in service.http.get("/api/deployments").json()}
    assert before <= after, "nothing stored was lost"


def test_a_model_the_engine_cannot_run_is_a_classified_failure(service: Service,
                                                               tmp_path: Path) -> None:
    bad = build_servable_model(tmp_path / "tiny-hd16", head_dim=16, num_attention_heads=16,
                               num_key_value_heads=8)
    d = service.launch(model=str(bad), **TINY).json()
    d = service.wait_state(d["id"], {"ready", "failed"})
    if d["state"] == "ready":  # the CPU engine fails only at its first request
        r = service.http.post("/v1/chat/completions", timeout=120, json={
            "model": "tiny-hd16", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code >= 400
        d = service.wait_state(d["id"], {"failed"}, timeout=120)
    assert d["state"] == "failed" and d["cause"] and d["fix"]


def test_a_launch_that_will_not_fit_is_refused_and_two_cannot_take_the_same_memory(
        service: Service, model: Path) -> None:
    too_big = service.launch(model=str(model), gpus=0, cpu_kv_gib=4096, max_model_len=256)
    assert too_big.status_code == 422 and "RAM" in too_big.json()["detail"]
    # the same through the CLI: one line, exit 2
    cli = subprocess.run([sys.executable, "-m", "advisor", "launch", str(model), "--gpus", "0",
                          "--cpu-kv-gib", "4096", "--url", service.url], capture_output=True,
                         text=True, env={**os.environ, "ADVISOR_API_KEY": KEY}, timeout=60)
    assert cli.returncode == 2 and cli.stderr.startswith("error: 422: will not fit")
    ram = service.http.get("/api/profile").json()["ram"]["available_gib"]
    # the first takes most of the RAM that is free; while it starts, the second cannot have it
    big = int(ram - 2.5 - 1)
    first = service.launch(model=str(model), gpus=0, cpu_kv_gib=big, max_model_len=256)
    assert first.status_code == 202, first.text
    try:
        second = service.launch(model=str(model), **TINY)
        assert second.status_code == 422 and "free now" in second.json()["detail"]
    finally:
        service.http.delete(f"/api/deployments/{first.json()['id']}")
        service.wait_state(first.json()["id"], {"stopped"}, timeout=60)


def test_the_service_restarted_while_an_engine_runs_re_attaches_it(tmp_path: Path,
                                                                   model: Path) -> None:
    home, ports = tmp_path / "home", free_port_range(3)
    first = Service(home, ports, "--keep-engines")
    d = first.launch(model=str(model), **TINY).json()
    d = first.wait_state(d["id"], {"ready", "failed"})
    assert d["state"] == "ready", d["cause"]
    first.stop()  # SIGTERM with --keep-engines: the engine outlives the service
    assert group_alive(d["pid"])
    second = Service(home, ports)
    try:
        again = second.deployment(d["id"])
        assert again["state"] == "ready"
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key=KEY)
        reply = client.chat.completions.create(model="tiny", max_tokens=4,
                                               messages=[{"role": "user", "content": "again"}])
        assert reply.choices[0].message.content is not None
    finally:
        second.stop()  # without --keep-engines, the engine stops with the service
    deadline = time.monotonic() + 30
    while group_alive(d["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(d["pid"]), "nothing is left running when the service stops"
    third = Service(home, ports)
    try:
        assert third.deployment(d["id"])["state"] == "stopped"
    finally:
        third.stop()
