"""The web service: in-process for the routes, and a real `advisor serve` for binding and start-up."""

from __future__ import annotations

import html
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from litestar.testing import TestClient

from advisor.config import load_settings
from advisor.web.app import create_app


@pytest.fixture(name="client")
def fx_client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(app=create_app(load_settings())) as client:
        yield client


def test_healthz(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_api_profile_is_the_no_gpu_profile_of_this_host(client: TestClient) -> None:  # type: ignore[type-arg]
    data = client.get("/api/profile").json()
    assert data["gpus"] == [] and data["engine"] == "vllm-cpu" and data["ram"]["total_gib"] > 0


def test_api_models_lists_the_catalog_with_sources(client: TestClient) -> None:  # type: ignore[type-arg]
    models = client.get("/api/models").json()
    phi4 = next(m for m in models if m["id"] == "phi-4")
    assert phi4["arch"]["source"].startswith("https://")
    assert all(s["source"] for m in models for s in m["scores"])


@pytest.mark.parametrize(("page", "twin", "text"), [
    ("/", "/api/profile", "No GPU: CPU engine"),
    ("/models", "/api/models", "Phi-4"),
])
def test_each_page_names_its_json_twin(client: TestClient, page: str, twin: str, text: str) -> None:  # type: ignore[type-arg]
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["link"] == f'<{twin}>; rel="alternate"; type="application/json"'
    assert text in r.text
    assert client.get(twin).status_code == 200


def test_openapi_schema_lists_the_api(client: TestClient) -> None:  # type: ignore[type-arg]
    spec = client.get("/schema/openapi.json").json()
    assert {"/healthz", "/api/profile", "/api/models"} <= set(spec["paths"])
    assert client.get("/schema").status_code == 200


def test_an_unknown_route_is_a_404_not_a_500(client: TestClient) -> None:  # type: ignore[type-arg]
    assert client.get("/api/nothing-here").status_code == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_advisor_serve_binds_localhost_makes_a_private_key_and_answers(advisor_home: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "advisor", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "advisor serve did not answer in 60 s"
                time.sleep(0.3)
        assert r.json()["status"] == "ok"
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        assert httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=10).status_code == 200
        key_file = advisor_home / "api-key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"API key (saved in {key_file}, shown once): {key_file.read_text().strip()}" in out


def test_api_estimate_answers_with_the_contracts_fields(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/api/estimate", json={"model": "phi-4", "gpu_gib": 24})
    assert r.status_code == 200
    body = r.json()
    for key in ("model", "repo", "quant", "dtype", "weights_gib", "activation_gib", "non_torch_gib",
                "cuda_graph_gib", "kv_cache_gib", "kv_bytes_per_token", "kv_cache_tokens",
                "max_model_len", "max_concurrency", "fits", "reason", "decode_tokens_per_s",
                "ttft_s", "provenance", "meets_request"):
        assert key in body, key
    assert body["fits"] is False and "Cheapest change that fits" in body["reason"]


@pytest.mark.parametrize(("body", "field"), [
    ({"model": "phi-4", "gpu_gib": -1}, "gpu_gib"),
    ({"model": "phi-4", "gpu_gib": "lots"}, "gpu_gib"),
    ({"model": "phi-4", "concurrency": 0}, "concurrency"),
    ({"model": "phi-4", "kv_cache_dtype": "int3"}, "kv_cache_dtype"),
    ({"model": "phi-4", "bogus": 1}, "bogus"),
    ({"model": "phi-4", "max_num_seqs": 0}, "max_num_seqs"),
    ({"model": "phi-4", "kv_cache_memory_bytes": "8G"}, "kv_cache_memory_bytes"),
    ({"model": "phi-4", "enforce_eager": "maybe"}, "enforce_eager"),
    ({"model": "phi-4", "text_only": [1]}, "text_only"),
    ({"model": "phi-4", "vllm_version": "latest"}, "vllm_version"),
    ({"use_case": "gaming"}, "use_case"),
])
def test_bad_bodies_are_400s_that_name_the_field(client: TestClient, body: dict[str, object],  # type: ignore[type-arg]
                                                 field: str) -> None:
    route = "/api/recommend" if "use_case" in body else "/api/estimate"
    r = client.post(route, json=body)
    assert r.status_code == 400
    assert field in r.text


def test_requests_that_cannot_be_planned_are_422s_that_say_why(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/api/estimate", json={"model": "someone/unknown-7b"})
    assert r.status_code == 422 and r.json()["detail"].startswith("model: someone/unknown-7b")
    r = client.post("/api/estimate", json={"model": "gemma-3-1b", "quant": "awq"})
    assert r.status_code == 422 and r.json()["detail"].startswith("quant:")
    r = client.post("/api/estimate", json={})
    assert r.status_code == 422 and r.json()["detail"].startswith("model:")
    r = client.post("/api/recommend", content=b"{not json")
    assert r.status_code == 400


def test_api_recommend_ranks_every_checkpoint(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/api/recommend", json={"use_case": "edge", "gpus": 0, "ram_gib": 16})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == sum(len(m["checkpoints"]) for m in client.get("/api/models").json())
    assert results[0]["fits"] and results[0]["estimate"]["engine"] == "vllm-cpu"


def test_an_unknown_page_or_deployment_is_a_helpful_page_and_a_json_404(client: TestClient) -> None:  # type: ignore[type-arg]
    page = client.get("/deployments/nope")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "no deployment &#39;nope&#39;" in page.text and "Back to the recommendations" in page.text
    api = client.get("/api/deployments/nope")
    assert api.status_code == 404 and api.json()["detail"] == "no deployment 'nope'"
    assert "Back to the recommendations" in client.get("/no/such/page").text


def _token(client: TestClient) -> str:  # type: ignore[type-arg]
    found = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/").text)
    assert found
    return found[1]


def _errors(page: str) -> dict[str, str]:
    return dict(re.findall(r'<span class="error" id="([a-z_]+)-err">([^<]*)</span>', page))


def test_the_form_refuses_bad_engine_flags_beside_each_field(client: TestClient) -> None:  # type: ignore[type-arg]
    page = client.post("/", data={"_csrf_token": _token(client), "use_case": "chat", "gpu": "L4",
                                  "max_num_seqs": "many", "kv_cache_memory_bytes": "8GiB",
                                  "vllm_version": "latest", "enforce_eager": "maybe"})
    assert page.status_code == 400
    errors = _errors(page.text)
    assert set(errors) == {"max_num_seqs", "kv_cache_memory_bytes", "vllm_version", "enforce_eager"}
    assert "is not a byte count" in errors["kv_cache_memory_bytes"]
    assert "is not a vLLM version" in errors["vllm_version"]
    assert '<details id="engine-flags" open>' in page.text  # the errors are in view
    page = client.post("/", data={"_csrf_token": _token(client), "use_case": "chat", "gpu": "L4",
                                  "max_num_seqs": "0", "kv_cache_memory_bytes": "1.5G"})
    assert page.status_code == 400 and set(_errors(page.text)) == {"max_num_seqs",
                                                                  "kv_cache_memory_bytes"}


def test_the_form_plans_with_the_engine_flags_and_the_launch_carries_them(client: TestClient) -> None:  # type: ignore[type-arg]
    page = client.post("/", data={"_csrf_token": _token(client), "use_case": "chat",
                                  "gpu": "H100 80GB", "max_num_seqs": "32",
                                  "kv_cache_memory_bytes": "8G", "vllm_version": "0.13.0+cu126",
                                  "enforce_eager": "1", "text_only": "1"})
    assert page.status_code == 200, _errors(page.text)
    assert ("--max-num-seqs 32 --enforce-eager --kv-cache-memory-bytes 8589934592 "
            "--limit-mm-per-prompt") in html.unescape(page.text)
    # planned for an H100 this GPU-less host lacks: no Launch, so nothing to carry
    assert 'action="/launch"' not in page.text
    # planned for this host (the CPU engine), the Launch forms carry the flags
    page = client.post("/", data={"_csrf_token": _token(client), "use_case": "edge", "gpus": "0",
                                  "max_num_seqs": "32", "kv_cache_memory_bytes": "1G",
                                  "vllm_version": "0.32.0", "enforce_eager": "1", "text_only": "1"})
    assert page.status_code == 200, _errors(page.text)
    carried = set(re.findall(r'type="hidden" name="([a-z_]+)" value="([^"]*)"', page.text))
    assert {("max_num_seqs", "32"), ("kv_cache_memory_bytes", "1G"), ("enforce_eager", "1"),
            ("text_only", "1"), ("vllm_version", "0.32.0"), ("gpus", "0")} <= carried
    # the form's labels name vLLM's flags
    blank = client.get("/").text
    for label in ("--max-num-seqs", "--kv-cache-memory-bytes", "--enforce-eager",
                  "--limit-mm-per-prompt", "vllm --version"):
        assert label in blank


@pytest.mark.parametrize("use_case", ["chat", "code", "edge"])
def test_this_host_with_a_consumer_card_budget_answers_a_page(client: TestClient, use_case: str) -> None:  # type: ignore[type-arg]
    """"this host" with a memory budget of 6 to 16 GiB (issue 11 found a 500 at 8 GiB: a
    missing concurrency formatted with :g)."""
    for budget in ("6", "8", "10", "12", "16", "7.5"):
        page = client.post("/", data={"_csrf_token": _token(client), "use_case": use_case,
                                      "gpu": "", "gpu_gib": budget})
        assert page.status_code == 200, (budget, page.text[:300])


# ----------------------------------------------------------------- the results page's pieces


def test_figures_are_written_for_people() -> None:
    from advisor.web.pages import seconds, times

    assert (times(1.0), times(1.02), times(3.23), times(4096.0), times(None)) == (
        "1×", "1×", "3.2×", "4096×", "–")
    assert (seconds(0.5982), seconds(2.44), seconds(185)) == ("598 ms", "2.4 s", "3 min 5 s")


def test_results_group_one_per_model_and_the_first_in_rank_order_is_chosen(client: TestClient) -> None:  # type: ignore[type-arg]
    import msgspec

    from advisor.catalog import load_catalog
    from advisor.rank import Result
    from advisor.web.pages import group_results

    rows = client.post("/api/recommend",
                       json={"use_case": "chat", "gpu": "RTX 4090 24GB"}).json()["results"]
    results = [msgspec.convert(r, Result) for r in rows]
    groups = group_results(results, load_catalog(), launchable=False)
    assert [g.chosen.model for g in groups] == list(dict.fromkeys(r.model for r in results))
    for g in groups:
        mine = [r for r in results if r.model == g.chosen.model]
        assert [g.chosen, *g.others] == mine and g.license
        assert g.quants == sorted({r.quant for r in mine})


def test_launch_appears_only_for_a_plan_of_this_host() -> None:
    from advisor.catalog import load_gpus
    from advisor.profile import read_host
    from advisor.web.pages import runs_here

    host, gpus = read_host(), load_gpus()
    assert not host.gpus  # this CI host: the CPU engine
    assert runs_here({}, host, gpus) and runs_here({"gpus": "0"}, host, gpus)
    assert not runs_here({"gpu": "RTX 4090 24GB"}, host, gpus)


def test_a_gpu_plan_on_a_gpu_less_host_has_no_launch_button(client: TestClient) -> None:  # type: ignore[type-arg]
    page = client.post("/", data={"_csrf_token": _token(client), "use_case": "chat", "gpus": "1",
                                  "gpu_gib": "8"})
    assert page.status_code == 200 and "Ranked for chat" in page.text
    assert 'action="/launch"' not in page.text and "cannot run these plans" in page.text
    page = client.post("/", data={"_csrf_token": _token(client), "use_case": "chat"})
    assert 'action="/launch"' in page.text and "cannot run these plans" not in page.text


def test_the_shown_command_names_the_interpreter_that_runs_it() -> None:
    from advisor.web.pages import shown_command

    line = "VLLM_CPU_KVCACHE_SPACE=4 python -m vllm.entrypoints.openai.api_server --model m"
    assert shown_command(line, "/opt/venv/bin/python") == (
        "VLLM_CPU_KVCACHE_SPACE=4 /opt/venv/bin/python -m vllm.entrypoints.openai.api_server --model m")
    assert shown_command("vllm serve m --host 127.0.0.1", "/x/python") == "vllm serve m --host 127.0.0.1"


def test_the_confirmation_asks_for_the_key_and_keeps_every_field(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/launch", params={"model": "qwen2.5-0.5b", "gpus": "0", "max_model_len": "512"},
                   follow_redirects=False)
    assert r.status_code == 303
    target = r.headers["location"]
    assert target.startswith("/signin?next=%2Flaunch%3F") and "qwen2.5-0.5b" in target


def test_the_api_viewer_is_served_here_without_a_cdn(client: TestClient) -> None:  # type: ignore[type-arg]
    page = client.get("/schema").text
    assert "POST /api/recommend" in page and "cdn." not in page and "unpkg" not in page
    assert client.get("/static/vendor/uplot-1.6.32/uPlot.iife.min.js").status_code == 200
