"""Decode speed on vLLM's real CPU engine against the estimator's: shared by
tests/test_cpu_speed.py and bench/cpu_speed.py.

Each case is a random Llama built here (tests/tinymodels.py) at a size that puts it in
one regime: overhead-bound (a few MB, inside the caches), between, and bandwidth-bound
(hundreds of MB, far beyond any L3), plus a 4-bit AWQ one whose kernel dequantizes as it
reads. The engine serves it; decode tokens/s is measured with real completion requests:
non-streamed requests of two lengths (`ignore_eos`, greedy) and the difference of
their times, so that the prompt's prefill and the HTTP round trip cancel out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from engine import ENGINE_MODULE, free_port, stop_group
from tinymodels import build_servable_model

READY = "Application startup complete"
SHORT, LONG = 16, 112  # generated tokens of the two requests whose difference is timed
CONTEXT = 128  # the context the estimate assumes: the timed requests' (prompt + generated)
REPEATS = 8  # runs of each length; the fastest counts


@dataclass(frozen=True)
class SpeedCase:
    name: str
    quant: str  # tinymodels' layout: none, awq
    shape: dict[str, Any]  # overrides of TINY_LLAMA


# hidden/intermediate multiples of 128 (the AWQ group) and head_dim 64 (the CPU kernels')
MID = dict(num_hidden_layers=8, hidden_size=1024, intermediate_size=2816, num_attention_heads=16,
           num_key_value_heads=4)
LARGE = dict(num_hidden_layers=8, hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
             num_key_value_heads=4)
DEEP = dict(num_hidden_layers=32)
CASES = [
    SpeedCase("tiny-2L-256", "none", {}),
    SpeedCase("tiny-32L-256", "none", DEEP),
    SpeedCase("mid-8L-1024", "none", MID),
    SpeedCase("large-8L-2048", "none", LARGE),
    SpeedCase("mid-8L-1024-awq", "awq", MID),
    SpeedCase("large-8L-2048-awq", "awq", LARGE),
    SpeedCase("large-8L-2048-gptq", "gptq", LARGE),
    SpeedCase("large-8L-2048-w8a8", "w8a8", LARGE),
]
BY_NAME = {c.name: c for c in CASES}



def build(case: SpeedCase, root: Path) -> Path:
    folder = root / case.name
    if not (folder / "config.json").exists():
        build_servable_model(folder, quant=case.quant, **case.shape)
    return folder


def predicted(model: Path) -> dict[str, Any]:
    """The advisor's own estimate for the folder on this host's CPU engine (the CLI, as a
    user runs it: the profile's bandwidth and cores, measured in that process). The
    context asked is about what the timed requests hold (a 4-token prompt, 16 to 112
    generated), so that the estimate's KV reads are theirs."""
    out = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(model), "--gpus", "0",
                          "--cpu-kv-gib", "1", "--max-model-len", str(CONTEXT), "--json"],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@contextmanager
def serving(model: Path, log: Path, timeout: float = 420) -> Iterator[str]:
    """The CPU engine serving `model`, as the supervisor starts it; yields its base URL."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    argv = [sys.executable, "-m", ENGINE_MODULE, "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--enforce-eager", "--max-model-len", "1024",
            "--served-model-name", "m"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"engine did not come up (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


def _timed(client: httpx.Client, url: str, tokens: int) -> float:
    body = {"model": "m", "prompt": "The quick brown fox", "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True}
    start = time.perf_counter()
    r = client.post(f"{url}/v1/completions", json=body, timeout=300)
    took = time.perf_counter() - start
    r.raise_for_status()
    assert r.json()["usage"]["completion_tokens"] == tokens
    return took


def measure_decode(url: str) -> float:
    """Decode tokens/s of one stream: (LONG - SHORT) tokens over the extra time they took,
    each length's fastest of REPEATS runs (other work on the host only ever slows a run
    down, so the fastest is the engine's own speed, as STREAM takes the best of its runs)."""
    with httpx.Client() as client:
        _timed(client, url, 4)  # warm-up: first-request costs stay out of the figure
        short = min(_timed(client, url, SHORT) for _ in range(REPEATS))
        long = min(_timed(client, url, LONG) for _ in range(REPEATS))
    return (LONG - SHORT) / max(long - short, 1e-6)
