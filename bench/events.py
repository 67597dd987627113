"""What ten open dashboards cost the service at idle (target: under 5 % of one core).

Run: .venv/bin/python bench/events.py [--seconds 30] [--dashboards 10]
Starts `advisor serve` with the tiny model on the real CPU engine, waits for `ready`, then
measures the service process's CPU time over the window with no client and with the
dashboards' event streams open (each gets `gpu` and `metrics` every two seconds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from service import launched  # noqa: E402
from tinymodels import build_servable_model  # noqa: E402


def cpu_share(pid: int, seconds: float) -> float:
    proc = psutil.Process(pid)
    before = sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    return (sum(proc.cpu_times()[:2]) - before) / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--dashboards", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_servable_model(Path(tmp) / "tiny")
        stop = threading.Event()
        with launched(Path(tmp) / "home", model) as (svc, d):
            try:
                svc.wait_state(d["id"], {"ready"})
                idle = cpu_share(svc.proc.pid, args.seconds)
                received = [0] * args.dashboards

                def dashboard(i: int) -> None:
                    with httpx.stream("GET", f"{svc.url}/api/events",
                                      params={"deployment": d["id"]}, timeout=None) as s:
                        for line in s.iter_lines():
                            if line.startswith("event:"):
                                received[i] += 1
                            if stop.is_set():
                                return

                threads = [threading.Thread(target=dashboard, args=(i,), daemon=True)
                           for i in range(args.dashboards)]
                for t in threads:
                    t.start()
                time.sleep(3)
                watched = cpu_share(svc.proc.pid, args.seconds)
                print(f"service CPU at idle: {100 * idle:.2f} % of one core with no dashboard, "
                      f"{100 * watched:.2f} % with {args.dashboards} open (target < 5 %); "
                      f"events received per dashboard: {min(received)}–{max(received)} "
                      f"over {args.seconds:.0f} s")
            finally:
                stop.set()


if __name__ == "__main__":
    main()
