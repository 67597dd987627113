"""`/v1` in front of an engine: routing by model, keys, errors. The engine here is the
scripted stand-in (tests/fake_engine.py), which checks its own key as vLLM does; the real
engine is behind /v1 in test_deployments_engine.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from fake_engine import interpreter
from service import KEY, Service, launched
from tinymodels import build_model


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
