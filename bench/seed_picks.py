"""Where the seed article's picks land, and how the chat order agrees with LMArena's ratings.

    PYTHONPATH=$PWD .venv/bin/python bench/seed_picks.py

Each pick's place counts distinct models (a model's best-placed checkpoint), as a user reads
the page: the same requests as `advisor recommend --use-case U --gpu 'RTX 4090'`, edge on a
GPU-less host with 16 GiB of RAM, chat on an H200 for the agreement with human preference.
"""

from __future__ import annotations

import msgspec

from advisor.advice import recommend_for
from advisor.catalog import load_catalog, load_gpus
from advisor.profile import read_host
from advisor.specs import PlanRequest

PICKS = [("code", "phi-4"), ("code", "qwen2.5-coder-7b"), ("chat", "gemma-2-9b"),
         ("chat", "llama-3.1-8b"), ("long-context", "mistral-nemo-12b"),
         ("long-context", "llama-3.1-8b"), ("multilingual", "qwen2.5-7b")]


def main() -> None:
    catalog, gpus, host = load_catalog(), load_gpus(), read_host()

    def order(**kw: object) -> list[str]:
        results = recommend_for(msgspec.convert(kw, PlanRequest), catalog, host, gpus).results
        return list(dict.fromkeys(r.model for r in results))

    for use_case, model in PICKS:
        ranked = order(use_case=use_case, gpu="RTX 4090")
        print(f"{use_case} (RTX 4090): {model} -> #{ranked.index(model) + 1} of {len(ranked)}")
    ranked = order(use_case="edge", gpus=0, ram_gib=16)
    print(f"edge (no GPU, 16 GiB): llama-3.2-3b -> #{ranked.index('llama-3.2-3b') + 1} of {len(ranked)}")

    elo = {m.id: s.value for m in catalog.models for s in m.scores if s.is_rating}
    snapshots = {s.harness for m in catalog.models for s in m.scores if s.is_rating}
    rated = [m for m in order(use_case="chat", gpu="H200") if m in elo]
    by_elo = sorted(elo, key=lambda m: -elo[m])
    pairs = [(a, b) for i, a in enumerate(by_elo) for b in by_elo[i + 1:]]
    concordant = sum(rated.index(a) < rated.index(b) for a, b in pairs)
    tau = (2 * concordant - len(pairs)) / len(pairs)
    n = len(rated)
    d2 = sum((rated.index(m) - by_elo.index(m)) ** 2 for m in rated)
    rho = 1 - 6 * d2 / (n * (n * n - 1))
    print(f"chat (H200) vs {' + '.join(sorted(snapshots))}, {n} rated models: "
          f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f}")
    print("  ours:   " + " > ".join(rated))
    print("  LMArena: " + " > ".join(by_elo))


if __name__ == "__main__":
    main()
