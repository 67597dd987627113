"""Fuzz the JSON API from its own OpenAPI schema with schemathesis: no 5xx, ever.

A real `advisor serve` runs with ADVISOR_VLLM_PYTHON pointing at an interpreter without
vLLM, so every launch the fuzzer makes goes through the real supervisor and fails fast
into a classified failure; at the end no engine is left starting or ready.

The schema is the one the service serves, plus request examples that name small catalog
models: without them no generated launch would name a model the supervisor can start.
Schemathesis runs as its CLI (`st run`) with a fixed seed, one worker and only the
`not_a_server_error` check; its HAR report is the record of every request it sent.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from service import KEY, Service, free_port_range

from advisor.procs import group_alive

pytestmark = pytest.mark.slow

SEED = 20261129
MAX_EXAMPLES = 100  # per operation and phase: ~14 operations
MIN_REQUESTS = 1000
TERMINAL = {"failed", "stopped", "lost"}


def python_without_vllm(tmp_path: Path) -> Path:
    """A real interpreter that cannot import vLLM: this one, isolated from its site-packages."""
    exe = tmp_path / "python-without-vllm"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    probe = subprocess.run([str(exe), "-c", "import vllm"], capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'vllm'" in probe.stderr, probe
    return exe


def schemathesis_cli() -> list[str]:
    st = Path(sys.executable).parent / "st"
    return [str(st)] if st.exists() else [sys.executable, "-m", "schemathesis.cli"]


def with_launch_examples(schema: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """The schema with request examples naming catalog models, on every PlanRequest body."""
    bodies = [{"model": m, "gpus": 0, "cpu_kv_gib": 1, "max_model_len": 512} for m in models]
    bodies.append({"model": models[0]})
    for item in schema["paths"].values():
        for op in item.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if media.get("schema", {}).get("$ref", "").endswith("/PlanRequest"):
                media["examples"] = {f"example{i}": {"value": b} for i, b in enumerate(bodies)}
    schema["components"]["schemas"]["PlanRequest"]["properties"]["model"]["examples"] = models
    return schema


def active(svc: Service) -> list[dict[str, Any]]:
    r = svc.http.get("/api/deployments")
    r.raise_for_status()
    return [d for d in r.json() if d["state"] not in TERMINAL]


def wait_settled(svc: Service, timeout: float = 30) -> list[dict[str, Any]]:
    """The deployments still pending, starting, ready or stopping after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    left = active(svc)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = active(svc)
    return left


def server_errors(har: dict[str, Any]) -> list[str]:
    out = []
    for e in har["log"]["entries"]:
        if e["response"]["status"] >= 500:
            req = e["request"]
            body = req.get("postData", {}).get("text", "")
            out.append(f"{req['method']} {req['url']} body={body!r} -> {e['response']['status']} "
                       f"{e['response'].get('content', {}).get('text', '')!r}")
    return out


def test_the_api_never_answers_5xx(tmp_path: Path, advisor_home: Path) -> None:
    python = python_without_vllm(tmp_path)
    svc = Service(advisor_home, free_port_range(8), env={"ADVISOR_VLLM_PYTHON": str(python)})
    try:
        # The smallest catalog models: they fit in RAM, so launches reach the supervisor.
        models = sorted(svc.http.get("/api/models").json(), key=lambda m: m["params_b"])
        small = [m["id"] for m in models[:3]]

        # One launch by hand first: it must fail fast, with a cause, through the real supervisor.
        r = svc.launch(model=small[0], gpus=0, cpu_kv_gib=1, max_model_len=512)
        assert r.status_code == 202, r.text
        d = svc.wait_state(r.json()["id"], TERMINAL, timeout=60)
        assert d["state"] == "failed" and d["cause"], d

        schema = httpx.get(f"{svc.url}/schema/openapi.json", timeout=30).raise_for_status().json()
        schema_file = tmp_path / "openapi.json"
        schema_file.write_text(json.dumps(with_launch_examples(schema, small)))
        har_file = tmp_path / "fuzz.har"
        argv = [*schemathesis_cli(), "run", str(schema_file), "--url", svc.url,
                "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
                "--checks", "not_a_server_error", "--header", f"Authorization: Bearer {KEY}",
                "--request-timeout", "30", "--generation-database", "none", "--no-color",
                "--report", "har", "--report-har-path", str(har_file),
                # an event stream never ends: its own test is in test_proxy.py
                "--exclude-path", "/api/events"]
        started = time.monotonic()
        run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
        took = time.monotonic() - started
        output = run.stdout[-6000:] + run.stderr[-3000:]
        assert har_file.exists(), output
        har = json.loads(har_file.read_text())

        n = len(har["log"]["entries"])
        launches = sum(1 for e in har["log"]["entries"] if e["request"]["method"] == "POST"
                       and e["request"]["url"].endswith("/api/deployments")
                       and e["response"]["status"] == 202)
        print(f"schemathesis: {n} requests, {launches} launches accepted, {took:.0f} s, rc={run.returncode}")
        errors = server_errors(har)
        assert not errors, output + f"\n{len(errors)} responses with 5xx:\n" + "\n".join(errors)
        assert run.returncode == 0, output
        assert n >= MIN_REQUESTS, output
        assert svc.proc.poll() is None, svc.log.read_text()[-3000:]

        # No engine left behind: every launch ended in a classified failure (or was stopped).
        left = wait_settled(svc)
        assert not left, left
        deployments = svc.http.get("/api/deployments").json()
        assert launches > 0 and len(deployments) == launches + 1, (launches, len(deployments))
        for dep in deployments:
            assert dep["state"] in TERMINAL, dep
            assert not (dep["pid"] and group_alive(dep["pid"])), dep
            if dep["state"] == "failed":
                assert dep["cause"] and dep["fix"], dep
    finally:
        svc.stop()
