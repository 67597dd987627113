"""How long ranking the whole catalog takes in-process (target: under 10 ms at p50).

Run: .venv/bin/python bench/rank_speed.py   (prints p50/p90 per request over 200 runs)
"""

from __future__ import annotations

import statistics
import time

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


def main(runs: int = 200) -> None:
    catalog, gpus, host = load_catalog(), load_gpus(), read_host()
    n = sum(len(m.checkpoints) for m in catalog.models)
    print(f"{n} checkpoints of {len(catalog.models)} models, {runs} runs each")
    for name, req in REQUESTS.items():
        recommend_for(req, catalog, host, gpus)  # warm
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            recommend_for(req, catalog, host, gpus)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        print(f"{name:28} p50 {statistics.median(times):6.2f} ms   p90 {times[int(0.9 * runs)]:6.2f} ms")


if __name__ == "__main__":
    main()
