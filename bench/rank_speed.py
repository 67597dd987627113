"""How long ranking the whole catalog takes in-process (target: under 10 ms at p50).

Run: .venv/bin/python bench/rank_speed.py [--runs 300]

Four requests, from "everything fits" to "most checkpoints refused, each refusal searched
for its cheapest fix". The requests take turns, run by run, so a slow spell of a shared
machine falls on all of them alike. Two figures per request:
- warm: as a running service answers a request it has seen the hardware of (the
  estimator's small per-model caches filled);
- cold: every cache of the estimator and the ranker emptied before each run, as for the
  first request about new hardware or new flags.
A fixed pure-Python loop is timed alongside: its spread is the machine's, not ours.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from advisor import estimate, launch, plan, weights
from advisor.advice import recommend_for
from advisor.catalog import load_catalog, load_gpus
from advisor.profile import read_host
from advisor.specs import PlanRequest

REQUESTS = {
    "edge, this host": PlanRequest(use_case="edge"),
    "code, RTX 3060 12GB": PlanRequest(use_case="code", gpu="RTX 3060"),
    "chat, H100 80GB": PlanRequest(use_case="chat", gpu="H100 80GB"),
    "long-context, 2 × L4, 32k": PlanRequest(use_case="long-context", gpu="L4", gpus=2,
                                             max_model_len=32768),
}
CACHES = [estimate._shared, estimate.kv_layout, estimate.activation_gib, plan._provenance,
          launch._plan_flags, launch._flags_line,
          launch._head_line, weights.param_count, weights.active_param_count]


def _ms(f: Callable[[], object]) -> float:
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def _loop() -> int:
    return sum(i * i for i in range(100_000))


def _row(name: str, times: list[float]) -> str:
    times = sorted(times)
    p90 = times[int(0.9 * (len(times) - 1))]
    return (f"{name:28} p50 {statistics.median(times):6.2f} ms   p90 {p90:6.2f} ms   "
            f"min {times[0]:6.2f} ms")


def main(runs: int) -> None:
    catalog, gpus, host = load_catalog(), load_gpus(), read_host()
    n = sum(len(m.checkpoints) for m in catalog.models)
    print(f"{n} checkpoints of {len(catalog.models)} models, {runs} runs per request; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    warm: dict[str, list[float]] = {k: [] for k in REQUESTS}
    cold: dict[str, list[float]] = {k: [] for k in REQUESTS}
    loop: list[float] = []
    for req in REQUESTS.values():
        recommend_for(req, catalog, host, gpus)
    for _ in range(runs):
        for name, req in REQUESTS.items():
            warm[name].append(_ms(lambda: recommend_for(req, catalog, host, gpus)))  # noqa: B023
            for cache in CACHES:
                cache.cache_clear()
            cold[name].append(_ms(lambda: recommend_for(req, catalog, host, gpus)))  # noqa: B023
        loop.append(_ms(_loop))
    print("warm (a running service)")
    for name in REQUESTS:
        print("  " + _row(name, warm[name]))
    print("cold (caches emptied before each run)")
    for name in REQUESTS:
        print("  " + _row(name, cold[name]))
    print("  " + _row("machine: fixed Python loop", loop))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    main(parser.parse_args().runs)
