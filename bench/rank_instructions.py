"""CPU instructions per ranking of the whole catalog: a figure that does not move with the
machine's load, to compare two versions of the code (wall-clock time on a shared VM moves
by up to 2× between spells; see bench/rank_speed.py).

Run: .venv/bin/python bench/rank_instructions.py   (needs valgrind: apt-get install valgrind)

Each request runs under `valgrind --tool=callgrind` twice, with 0 and with 10 rankings
after the same warm-up; the difference over 10 is one ranking. `--cold` empties the caches
keyed on the request's hardware and flags before each ranking. `--scores-once` works out
rank.best_scores (the catalog's quality fit: the same for every request, about 1.1 G
instructions a call since 3ef52b9) once before the rankings, so that what a request costs
can be told apart from it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

RUNS = 10
SCORES_ONCE = """
import advisor.rank as _rank
_rank.best_scores = (lambda best: (lambda models: best))(_rank.best_scores(catalog.models))
"""
CHILD = """
import sys
sys.path.insert(0, {bench!r})
from rank_speed import CACHES, REQUESTS
from advisor.advice import recommend_for
from advisor.catalog import load_catalog, load_gpus
import advisor.profile
from advisor.speed import CPU_CORE_RATE_REF
# the core probe runs for a set time, so its instructions vary from run to run; the
# ranking's cost is what is counted here, not the profile's: the fitting host's speed
advisor.profile._measure_core = lambda: (CPU_CORE_RATE_REF, "fixed for the count")
from advisor.profile import read_host
catalog, gpus, host = load_catalog(), load_gpus(), read_host()
req = REQUESTS[sys.argv[1]]
for _ in range(3):
    recommend_for(req, catalog, host, gpus)
for _ in range(int(sys.argv[2])):
    if sys.argv[3] == "cold":
        for cache in CACHES:
            cache.cache_clear()
    recommend_for(req, catalog, host, gpus)
"""


def _instructions(name: str, runs: int, mode: str, scores_once: bool = False) -> int:
    code = CHILD.format(bench=str(Path(__file__).parent))
    if scores_once:
        loaded = "catalog, gpus, host = load_catalog(), load_gpus(), read_host()\n"
        code = code.replace(loaded, loaded + SCORES_ONCE)
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, "-c", code, name, str(runs), mode],
                         capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise SystemExit(f"valgrind printed no count for {name}:\n{out.stderr[-2000:]}")
    return int(found[1])


def main(cold: bool, scores_once: bool = False) -> None:
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    sys.path.insert(0, str(Path(__file__).parent))
    from rank_speed import REQUESTS

    mode = "cold" if cold else "warm"
    print(f"instructions per ranking of the whole catalog ({mode}"
          + (", best_scores once" if scores_once else "") + ")")
    for name in REQUESTS:
        per = (_instructions(name, RUNS, mode, scores_once)
               - _instructions(name, 0, mode, scores_once)) / RUNS
        print(f"  {name:28} {per / 1e6:6.2f} M")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--scores-once", action="store_true")
    args = parser.parse_args()
    main(args.cold, args.scores_once)
