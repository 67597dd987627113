"""Proof after launch: the load test with vLLM's own client against the real CPU engine, and
its parts at their seams (the relay to the engine's socket, NVML's energy, the comparison)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from service import KEY, TINY, Service, free_port_range
from test_profile import FakeNvml
from tinymodels import TINY_FAMILY, build_servable_model

from advisor.advice import estimate_for, recommend_for
from advisor.catalog import data_dir, load_catalog
from advisor.estimate import INSTALLED_VLLM
from advisor.history import load_tests
from advisor.loadtest import BenchRefused, relay, result_of, shape_of
from advisor.procs import owns_tcp_port
from advisor.profile import read_host
from advisor.proof import compare
from advisor.specs import BenchRequest, BenchResult, Deployment, PlanRequest


def _deployment(**kw: Any) -> Deployment:
    base: dict[str, Any] = {"id": "abcd", "model": "tiny", "repo": "/m/tiny", "quant": "none",
                            "state": "ready", "predicted": {"max_model_len": 256},
                            "request": {"concurrency": 3}}
    return Deployment(**{**base, **kw})


def test_the_load_test_takes_the_plans_concurrency_and_lengths_that_fit_its_context() -> None:
    assert shape_of(_deployment(), BenchRequest()) == (3, 184, 64)
    assert shape_of(_deployment(), BenchRequest(concurrency=1, input_len=100, output_len=50)) == (1, 100, 50)
    with pytest.raises(BenchRefused, match="above the deployment's max_model_len 256"):
        shape_of(_deployment(), BenchRequest(input_len=200, output_len=100))
    with pytest.raises(BenchRefused, match="no max_model_len"):
        shape_of(_deployment(predicted={}), BenchRequest())


def test_the_relay_passes_bytes_both_ways_to_the_engines_unix_socket(tmp_path: Path) -> None:
    sock = str(tmp_path / "e.sock")

    async def main() -> bytes:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"engine:" + await r.readexactly(5))
            await w.drain()
            w.close()

        server = await asyncio.start_unix_server(echo, sock)
        async with relay(sock, lambda peer: owns_tcp_port(os.getpid(), peer)) as port:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"hello")
            await w.drain()
            got = await r.read()
            w.close()
        # a connection from any other process is closed unanswered
        async with relay(sock, lambda peer: owns_tcp_port(os.getppid(), peer)) as port:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"hello")
            refused = await r.read()
            w.close()
        server.close()
        return got, refused

    assert asyncio.run(main()) == (b"engine:hello", b"")


def _bench(**kw: Any) -> BenchResult:
    base: dict[str, Any] = {"at": 0.0, "client": "c", "num_prompts": 10, "concurrency": 4,
                            "input_len": 100, "output_len": 28, "completed": 10, "failed": 0,
                            "duration_s": 5.0, "output_tokens": 280, "decode_tokens_per_s": 56.0,
                            "decode_tokens_per_s_per_stream": 20.0, "ttft_p50_ms": 30.0,
                            "kv_cache_peak_pct": 0.05}
    return BenchResult(**{**base, **kw})


def test_the_comparison_sets_each_measured_figure_against_the_plans() -> None:
    predicted = {"decode_tokens_per_s_at_concurrency": 25.0, "ttft_s": 0.02,
                 "kv_cache_tokens": 1_048_576, "block_size": 16}
    rows = {r.figure: r for r in compare(predicted, _bench())}
    assert rows["decode tokens/s per stream"].ratio == 0.8
    assert rows["decode tokens/s, all streams"].predicted == 100.0
    assert rows["time to first token, P50"].ratio == 1.5
    kv = rows["KV-cache use, peak"]  # 4 sequences of 128 tokens in the pool
    assert kv.predicted == pytest.approx(100 * 4 * 128 / 1_048_576, abs=1e-3)
    # the CPU plan has no speed estimate: the row says why instead of a ratio
    cpu = {r.figure: r for r in compare({"kv_cache_tokens": 1_048_576}, _bench())}
    assert cpu["decode tokens/s per stream"].ratio is None
    assert "no speed estimate" in cpu["decode tokens/s per stream"].note


def test_the_result_keeps_the_figures_the_client_saved_under_its_own_names() -> None:
    raw = {"completed": 6, "failed": 0, "duration": 3.25, "total_output_tokens": 96,
           "output_throughput": 29.538, "mean_tpot_ms": 50.0, "p50_ttft_ms": 101.5,
           "p95_ttft_ms": 180.25, "p99_ttft_ms": 190.0, "p50_itl_ms": 48.0, "p95_itl_ms": 70.5,
           "p99_itl_ms": 88.0}
    r = result_of(raw, req=BenchRequest(num_prompts=6), shape=(2, 32, 16), kv_peak=0.0125,
                  energy_j=48.0, energy_source="NVML energy counter", result_file="x.json", at=1.0)
    assert (r.decode_tokens_per_s, r.decode_tokens_per_s_per_stream) == (29.538, 20.0)
    assert (r.ttft_p50_ms, r.ttft_p95_ms, r.itl_p99_ms) == (101.5, 180.25, 88.0)
    assert r.kv_cache_peak_pct == 1.25 and r.tokens_per_joule == 2.0


# ------------------------------------------------------------------ the real engine


@pytest.fixture(scope="module", name="ready")
def fx_ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, Any]]]:
    model = build_servable_model(tmp_path_factory.mktemp("models") / "tiny")
    # a catalog that lists the tiny model by its folder, so that the ranking holds it (with
    # the shipped GPU table and API prices)
    catalog = tmp_path_factory.mktemp("catalog")
    for part in ("hardware", "pricing"):
        shutil.copytree(data_dir("catalog") / part, catalog / part)
    (catalog / "tiny.toml").write_text(TINY_FAMILY.format(repo=model, layers=2))
    svc = Service(tmp_path_factory.mktemp("svc") / "home", free_port_range(3),
                  env={"ADVISOR_CATALOG_DIR": str(catalog)})
    try:
        d = svc.launch(model=str(model), concurrency=2, **TINY).json()
        # asked while it starts: refused in words, nothing run
        early = svc.http.post(f"/api/deployments/{d['id']}/bench", json={"num_prompts": 2})
        assert early.status_code == 422 and "not ready" in early.json()["detail"], early.text
        d = svc.wait_state(d["id"], {"ready", "failed"})
        assert d["state"] == "ready", d["cause"]
        yield svc, d
        svc.http.delete(f"/api/deployments/{d['id']}")
        svc.wait_state(d["id"], {"stopped"}, timeout=60)
    finally:
        svc.stop()


@pytest.mark.slow
def test_a_load_test_on_the_cpu_engine_stores_what_vllms_client_measured(
        ready: tuple[Service, dict[str, Any]]) -> None:
    svc, d = ready
    path = f"/api/deployments/{d['id']}/bench"
    assert httpx.post(svc.url + path, json={}).status_code == 401  # it loads the engine: key only
    bad = svc.http.post(path, json={"num_prompts": 5000})
    assert bad.status_code == 400 and "num_prompts" in bad.text
    # enough decode steps that the engine's KV gauge is sampled mid-run
    # (a run of several seconds even on an idle machine, where 40 prompts ended between the
    # gauge's samples in CI)
    n = 120
    r = svc.http.post(path, json={"num_prompts": n, "input_len": 120, "output_len": 64}, timeout=600)
    assert r.status_code == 200, r.text
    (b,) = r.json()["benches"]
    assert b["concurrency"] == 2, "the plan's concurrency"
    assert b["completed"] == n and b["failed"] == 0 and b["output_tokens"] == n * 64

    saved = json.loads(Path(b["result_file"]).read_text())  # the client's --save-result JSON
    assert b["decode_tokens_per_s"] == saved["output_throughput"]
    assert b["ttft_p50_ms"] == saved["p50_ttft_ms"] and b["ttft_p99_ms"] == saved["p99_ttft_ms"]
    assert b["itl_p95_ms"] == saved["p95_itl_ms"]
    assert b["decode_tokens_per_s_per_stream"] == pytest.approx(1000 / saved["mean_tpot_ms"], abs=0.01)
    printed = Path(b["result_file"]).with_suffix(".log").read_text()  # and what it printed
    shown = float(re.search(r"Output token throughput \(tok/s\):\s+([\d.]+)", printed)[1])  # type: ignore[index]
    assert b["decode_tokens_per_s"] == pytest.approx(shown, abs=0.005)
    shown_ttft = float(re.search(r"P99 TTFT \(ms\):\s+([\d.]+)", printed)[1])  # type: ignore[index]
    assert b["ttft_p99_ms"] == pytest.approx(shown_ttft, abs=0.005)
    # the engine's own gauge, sampled while it ran: some of the pool was held
    assert b["kv_cache_peak_pct"] is not None and 0 < b["kv_cache_peak_pct"] < 100
    assert b["energy_j"] is None and "CPU engine" in b["energy_source"]
    rows = {row["figure"]: row for row in b["versus"]}
    kv = rows["KV-cache use, peak"]
    assert kv["measured"] == pytest.approx(b["kv_cache_peak_pct"], rel=1e-3)
    assert kv["predicted"] and kv["ratio"] == pytest.approx(kv["measured"] / kv["predicted"], rel=1e-2)

    # kept beside the prediction: the deployment's JSON carries it from the store
    again = svc.deployment(d["id"])
    assert again["benches"][0]["decode_tokens_per_s"] == b["decode_tokens_per_s"]
    assert again["predicted"]["kv_cache_tokens"] == 1_048_576

    # the cost of a million tokens from the measured throughput and the prices given
    c = svc.http.get(f"/api/deployments/{d['id']}/cost",
                     params={"kwh_price": 0.3, "watts": 65}).json()
    assert c["measured"] and c["tokens_per_s"] == round(b["decode_tokens_per_s"], 2)
    hours = 1e6 / b["decode_tokens_per_s"] / 3600
    assert c["energy_per_m"] == pytest.approx(65 * hours / 1000 * 0.3, rel=1e-3)
    assert c["missing"] == ["card cost"] and any(a["model"] == "gpt-4o" for a in c["apis"])
    assert svc.http.get(f"/api/deployments/{d['id']}/cost", params={"kwh_price": -1}).status_code == 400

    # the ranking of this host takes the measured speed for that checkpoint, and says so
    ranked = svc.http.post("/api/recommend", json={"use_case": "chat", "concurrency": 2, **TINY})
    assert ranked.status_code == 200, ranked.text
    rows = {r["quant"]: r for r in ranked.json()["results"]}
    mine = rows["none"]
    said = (f"measured on this host: {b['decode_tokens_per_s_per_stream']:g} tokens/s per stream "
            f"at concurrency 2 (load test of ")
    assert any(x.startswith(said) and f"deployment {d['id']}" in x for x in mine["reasons"]), \
        mine["reasons"]
    assert "measured on this host" in mine["estimate"]["provenance"]["decode_tokens_per_s"]
    # and the estimate of it says the same
    est = svc.http.post("/api/estimate", json={"model": d["repo"], "concurrency": 2, **TINY}).json()
    assert est["decode_tokens_per_s"] == mine["estimate"]["decode_tokens_per_s"]
    assert est["provenance"]["decode_tokens_per_s"].startswith(said)
    # its siblings on this engine: the roofline times this host's factor, said so
    assert any("from this host's load test of 1 other checkpoint" in x
               for x in rows["awq"]["reasons"]), rows["awq"]["reasons"]

    # the CLI shows it, and the dashboard shows predicted against measured
    shown_cli = subprocess.run([sys.executable, "-m", "advisor", "bench", d["id"], "--show",
                                "--url", svc.url, "--kwh-price", "0.3", "--watts", "65"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "ADVISOR_API_KEY": KEY})
    assert shown_cli.returncode == 0, shown_cli.stderr
    assert "KV-cache use, peak" in shown_cli.stdout and "gpt-4o" in shown_cli.stdout
    assert f"{b['completed']}/{b['num_prompts']} requests" in shown_cli.stdout
    page = svc.http.get(f"/deployments/{d['id']}").text
    assert 'id="bench-figures"' in page and "measured / predicted" in page
    assert f"{b['kv_cache_peak_pct']:.4g}" in page


def test_a_load_test_on_this_gpu_scales_the_roofline_of_later_estimates() -> None:
    catalog, host = load_catalog(), read_host(nvml=FakeNvml())  # type: ignore[arg-type]
    req = PlanRequest(model="qwen2.5-0.5b", max_model_len=4096)
    before = estimate_for(req, catalog, host, [])
    assert before.decode_tokens_per_s and "roofline" in before.provenance["decode_tokens_per_s"]
    launched = Deployment(
        id="d1", model="qwen2.5-0.5b", repo=before.repo, quant=before.quant, state="stopped",
        engine="vllm", gpu_name=host.gpus[0].name, engine_ready_at=1.0, command=["vllm"],
        predicted=msgspec.to_builtins(before), request=msgspec.to_builtins(req),
        measured={"kv_cache_gib": before.kv_cache_gib},
        benches=[_bench(concurrency=1, decode_tokens_per_s_per_stream=before.decode_tokens_per_s / 2)])
    tests = load_tests([launched], INSTALLED_VLLM)
    assert [(t.deployment, t.concurrency, t.gpu_name) for t in tests] == [("d1", 1, host.gpus[0].name)]
    after = estimate_for(req, catalog, host, [], tests=tests)
    assert after.decode_tokens_per_s == pytest.approx(before.decode_tokens_per_s / 2, abs=0.1)
    said = after.provenance["decode_tokens_per_s"]
    assert said.startswith("measured on this host") and "deployment d1; the roofline × 0.50" in said
    # the ranking says the same of that checkpoint
    rec = recommend_for(msgspec.structs.replace(req, model=None, use_case="chat"), catalog, host,
                        [], tests=tests).results
    row = next(r for r in rec if (r.repo, r.quant) == (before.repo, before.quant))
    assert row.estimate.decode_tokens_per_s == after.decode_tokens_per_s


@pytest.mark.slow
def test_the_dashboards_button_runs_a_load_test_and_shows_it_beside_the_plan_and_its_cost(
        ready: tuple[Service, dict[str, Any]]) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    svc, d = ready
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page()
        page.goto(f"{svc.url}/signin?next=/deployments/{d['id']}")
        page.fill("#key", KEY)
        page.click("button[type=submit]")
        page.wait_for_url(f"{svc.url}/deployments/{d['id']}")
        before = len(svc.deployment(d["id"])["benches"])
        page.fill("#bench-n", "8")
        page.click("#bench-run")  # with the session's CSRF token, as the chat form sends it
        page.wait_for_function(
            "document.querySelector('#bench-summary') && "
            "document.querySelector('#bench-summary').textContent.includes('of 8 requests')",
            timeout=300_000)
        benches = svc.deployment(d["id"])["benches"]
        assert len(benches) == before + 1 and benches[-1]["num_prompts"] == 8
        assert "measured / predicted" in page.text_content("#bench-figures")
        page.fill("input[name=watts]", "65")
        page.click("#cost-form button")
        page.wait_for_function("document.querySelector('#cost-here') && "
                               "document.querySelector('#cost-here').textContent.includes('measured')")
        assert "gpt-4o-mini" in page.text_content("#cost-apis")
        browser.close()
