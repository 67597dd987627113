"""`/v1` in front of an engine: routing by model, keys, errors. Most tests here use the
scripted stand-in (tests/fake_engine.py), which checks its own key as vLLM does; the faults
that only the real engine shows (paths outside /v1 it would answer, work it goes on doing
for clients that left, its own headers) are tested on one real CPU engine (`real`)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fake_engine import interpreter
from service import KEY, Service, free_port_range, launched
from tinymodels import build_model, build_servable_model

MIB = 1 << 20


@pytest.fixture(scope="module", name="svc")
def fx_svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, object]]]:
    tmp = tmp_path_factory.mktemp("proxy")
    env = {"ADVISOR_VLLM_PYTHON": str(interpreter(tmp)), "FAKE_ENGINE": "ok"}
    with launched(tmp / "home", build_model(tmp / "tiny"), env=env) as (svc, d):
        d = svc.wait_state(d["id"], {"ready", "failed"}, timeout=60)
        assert d["state"] == "ready", d["cause"]
        yield svc, d


def test_calls_reach_the_engine_with_its_own_key(svc: tuple[Service, dict[str, object]]) -> None:
    service, _d = svc
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=KEY, max_retries=0)
    assert client.completions.create(model="tiny", prompt="x", max_tokens=1).choices[0].text == "!"
    assert "tiny" in [m.id for m in client.models.list().data]


def test_without_the_advisors_key_it_is_a_401(svc: tuple[Service, dict[str, object]]) -> None:
    service, _d = svc
    assert httpx.post(f"{service.url}/v1/completions", json={"model": "tiny"}).status_code == 401
    bad = httpx.post(f"{service.url}/v1/completions", json={"model": "tiny"},
                     headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


@pytest.mark.parametrize(("body", "status", "text"), [
    ({"model": "nobody"}, 404, "no ready engine serves 'nobody'"),
    ({}, 400, "model: name the model"),
    ([1, 2], 400, "not a JSON object"),
])
def test_requests_it_cannot_route_say_why(svc: tuple[Service, dict[str, object]], body: object,
                                          status: int, text: str) -> None:
    service, _d = svc
    r = service.http.post("/v1/completions", json=body)
    assert r.status_code == status and text in r.text


def test_the_event_stream_survives_clients_that_disconnect_and_reconnect(
        svc: tuple[Service, dict[str, object]]) -> None:
    service, d = svc
    for _ in range(3):  # connect, read the first event, drop the connection; again
        with httpx.stream("GET", f"{service.url}/api/events", params={"deployment": d["id"]},
                          timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: deployment"
            assert '"state":"ready"' in next(lines)
    with httpx.stream("GET", f"{service.url}/api/events", timeout=10) as stream:
        first = [line for _, line in zip(range(6), stream.iter_lines(), strict=False)]
    events = [line for line in first if line.startswith("event:")]
    assert "event: gpu" in events
    assert service.http.get("/healthz").status_code == 200


def test_events_for_an_unknown_deployment_are_a_404_and_log_no_traceback(
        svc: tuple[Service, dict[str, object]]) -> None:
    service, _d = svc
    logged = len(service.log.read_text())
    for _ in range(3):
        with httpx.stream("GET", f"{service.url}/api/events", params={"deployment": "nope"},
                          timeout=10) as r:
            r.read()
        assert r.status_code == 404 and "no deployment 'nope'" in r.json()["detail"]
    assert service.http.get("/healthz").status_code == 200
    after = service.log.read_text()[logged:]
    assert "Traceback" not in after and "ERROR" not in after, after


def test_a_body_over_the_limit_is_a_413_and_the_service_stays_up(
        svc: tuple[Service, dict[str, object]]) -> None:
    service, _d = svc
    big = json.dumps({"model": "tiny", "prompt": "x" * (16 * MIB + 1)}).encode()
    r = service.http.post("/v1/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "16 MiB" in r.json()["error"]["message"], r.text

    def chunks() -> Iterator[bytes]:  # no content-length: the limit holds while reading too
        for i in range(0, len(big), MIB):
            yield big[i:i + MIB]
    r = service.http.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "16 MiB" in r.json()["error"]["message"], r.text
    assert service.http.get("/healthz").status_code == 200
    ok = service.http.post("/v1/completions", json={"model": "tiny", "prompt": "x" * 1000})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "!"


# ---------------------------------------------------------------- on the real engine

LONG = 32768  # tokens a sequence may reach: eight of them keep the tiny engine busy for a
# minute or more (it made 1,000 to 6,000 tokens a second here, over TCP and the Unix socket)


@pytest.fixture(scope="module", name="real")
def fx_real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, object]]]:
    """One real CPU engine behind the advisor, shared by the tests below (a start is a minute)."""
    tmp = tmp_path_factory.mktemp("proxy-real")
    model: Path = build_servable_model(tmp / "tiny", max_position_embeddings=LONG)
    service = Service(tmp / "home", free_port_range(3))
    try:
        r = service.launch(model=str(model), gpus=0, cpu_kv_gib=1, max_model_len=LONG)
        assert r.status_code == 202, r.text
        d = service.wait_state(r.json()["id"], {"ready", "failed"})
        assert d["state"] == "ready", d["cause"]
        yield service, d
        service.http.delete(f"/api/deployments/{d['id']}")
        service.wait_state(d["id"], {"stopped"}, timeout=60)
    finally:
        service.stop()


def _raw(service: Service, method: str, path: str,
         body: object = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request with `path` sent as it is written (httpx would resolve `..` first)."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Authorization": f"Bearer {KEY}",
                                                   "Content-Type": "application/json"})
    reply = conn.getresponse()
    content = reply.read()
    conn.close()
    return reply.status, reply.getheaders(), content


@pytest.mark.slow
@pytest.mark.parametrize("path", [
    "/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/%2E%2E/metrics", "/v1/models/../../metrics",
    "/v1/./../metrics", "/v1%2f..%2fmetrics", "/v1/..%2fmetrics", "/v1/..\\metrics",
    "/v1//metrics", "/v1/%2e./metrics",
])
def test_paths_that_leave_v1_are_refused_and_never_reach_the_engine(
        real: tuple[Service, dict[str, object]], path: str) -> None:
    service, _d = real
    for method, target, body in (("GET", f"{path}?model=tiny", None),
                                 ("POST", path, {"model": "tiny"})):
        status, _headers, content = _raw(service, method, target, body)
        assert status == 400 and b"vllm:" not in content, (method, target, status, content[:200])
        error = json.loads(content)["error"]
        assert "path" in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.slow
def test_a_proxied_reply_has_one_date_and_one_server_header(
        real: tuple[Service, dict[str, object]]) -> None:
    service, _d = real
    for stream in (False, True):
        status, headers, _content = _raw(service, "POST", "/v1/completions", {
            "model": "tiny", "prompt": "hi", "max_tokens": 2, "stream": stream})
        assert status == 200
        names = [k.lower() for k, _v in headers]
        assert names.count("date") == 1 and names.count("server") == 1, headers


def _metrics(service: Service, dep_id: object) -> dict[str, float]:
    return service.http.get(f"/api/deployments/{dep_id}/metrics").json()  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_engine_stops_generating_for_clients_that_disconnect(
        real: tuple[Service, dict[str, object]]) -> None:
    service, d = real
    before = _metrics(service, d["id"])["vllm:generation_tokens_total"]
    asked, clients = 0, []
    for stream in (True, False) * 4:  # four streaming, four waiting for a whole answer
        body = json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": LONG - 64,
                           "ignore_eos": True, "stream": stream}).encode()
        asked += LONG - 64
        s = socket.create_connection(("127.0.0.1", service.port), timeout=30)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: advisor\r\n"
                  + f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode() + body)
        clients.append(s)
    time.sleep(1.0)
    assert clients[0].recv(4096).startswith(b"HTTP/1.1 200"), "the stream had started"
    at_close = _metrics(service, d["id"])["vllm:generation_tokens_total"] - before  # (cached <= 1.5 s)
    for s in clients:  # the clients leave
        s.close()
    left = time.monotonic()
    running = 8.0
    while time.monotonic() - left < 30:
        time.sleep(0.5)
        m = _metrics(service, d["id"])
        running = m["vllm:num_requests_running"] + m.get("vllm:num_requests_waiting", 0)
        if running == 0:
            break
    made = m["vllm:generation_tokens_total"] - before
    print(f"asked {asked} tokens, the engine made {made:.0f} ({at_close:.0f} when they left); "
          f"idle {time.monotonic() - left:.1f} s after the clients left")
    assert running == 0, "the engine still works for clients that left"
    assert made < asked / 5, (made, asked)
