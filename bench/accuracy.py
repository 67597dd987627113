"""The estimator against published vLLM start-up logs: predicted, measured, error.

Run: .venv/bin/python bench/accuracy.py [--markdown docs/accuracy.md]
Cases come from tests/data/vllm_logs (sources in its README); `fit` cases set the
constants in advisor/estimate.py, `check` cases are kept aside to test them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from vllm_cases import load_cases  # noqa: E402


def rows() -> list[dict[str, object]]:
    out = []
    for c in load_cases():
        row: dict[str, object] = {"case": c.name, "split": c.split, "skip": c.skip,
                                  "family": c.family, "card": c.card}
        if c.skip:
            out.append(row)
            continue
        e = c.predict()
        m = c.measured
        row.update(
            model=e.model, quant=e.quant, tp=e.tp,
            weights=(e.weights_gib, m.weights_gib),
            activation=(e.activation_gib, m.activation_gib),
            non_torch=(e.non_torch_gib, m.non_torch_gib),
            kv_gib=(e.kv_cache_gib, m.kv_cache_gib),
            kv_tokens=(e.kv_cache_tokens, m.kv_cache_tokens),
            fits=(e.fits, not c.failed), reason=e.reason,
            band=e.kv_cache_gib_range, version=c.settings.vllm_version if c.settings else None,
        )
        out.append(row)
    return out


def _err(pair: object, pct: bool = False) -> str:
    p, m = pair  # type: ignore[misc]
    if m is None:
        return f"{p} / –"
    if pct:
        return f"{p:,} / {m:,} ({100 * (p - m) / m:+.1f} %)" if m else f"{p} / {m}"
    return f"{p:.2f} / {m:.2f} ({p - m:+.2f})"


FAMILIES = ["<0.11", "0.11-0.19", "0.20-0.23", "0.24+", "unknown"]
CARDS = ["<=16 GB", "16-32 GB", ">32 GB", "unknown"]


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def group_table(table: list[dict[str, object]], key: str, groups: list[str]) -> list[str]:
    """Check-split figures per group: n, KV pool error, KV tokens error, weights, verdict."""
    lines = [f"| {key} | n (skipped) | KV pool abs err median / P90 / max GiB | within 0.25 / 0.5 GiB "
             "| KV tokens err median / max % | weights err max % | verdict right |",
             "|---|---|---|---|---|---|---|"]
    for g in groups:
        rows = [r for r in table if r[key] == g and r["split"] == "check"]
        if not rows:
            continue
        live = [r for r in rows if not r["skip"]]
        kv = [abs(r["kv_gib"][0] - r["kv_gib"][1]) for r in live  # type: ignore[index]
              if r["kv_gib"][1] is not None and r["fits"][1]]  # type: ignore[index]
        tok = [100 * abs(r["kv_tokens"][0] - r["kv_tokens"][1]) / r["kv_tokens"][1]  # type: ignore[index]
               for r in live if r["kv_tokens"][1] and r["fits"][1]]  # type: ignore[index]
        w = [100 * abs(r["weights"][0] - r["weights"][1]) / r["weights"][1]  # type: ignore[index]
             for r in live if r["weights"][1]]  # type: ignore[index]
        right = sum(r["fits"][0] == r["fits"][1] for r in live)  # type: ignore[index]
        kv_cell = (f"{statistics.median(kv):.2f} / {_pct(kv, 0.9):.2f} / {max(kv):.2f} (n={len(kv)})"
                   if kv else "–")
        share = (f"{sum(e <= 0.25 for e in kv)}/{len(kv)} / {sum(e <= 0.5 for e in kv)}/{len(kv)}"
                 if kv else "–")
        tok_cell = f"{statistics.median(tok):.1f} / {max(tok):.1f} (n={len(tok)})" if tok else "–"
        w_cell = f"{max(w):.2f} (n={len(w)})" if w else "–"
        lines.append(f"| {g} | {len(live)} ({len(rows) - len(live)}) | {kv_cell} | {share} | {tok_cell} "
                     f"| {w_cell} | {right}/{len(live)} |")
    return lines


def coverage(table: list[dict[str, object]]) -> list[str]:
    """How often the P95 band holds what vLLM printed, on the check split: with the shipped
    widths (set from these same cases), and left-one-out (each case against the width the
    other cases of its version group give), which is the honest figure."""
    from advisor.estimate import KV_POOL_SPREAD_GIB

    def group(version: tuple[int, int]) -> tuple[int, int]:
        return next(since for since, _w, _why in KV_POOL_SPREAD_GIB if version >= since)

    cases = []
    for r in table:
        if r["skip"] or r["split"] != "check" or not r.get("band"):
            continue
        kp, km = r["kv_gib"]  # type: ignore[misc]
        if km is None or not r["fits"][1]:  # type: ignore[index]
            continue
        cases.append((r["case"], group(r["version"]), kp, km, r["band"]))  # type: ignore[arg-type]
    shipped = sum(lo <= km <= hi for _n, _g, _kp, km, (lo, hi) in cases)
    loo = 0
    for name, g, kp, km, _band in cases:
        others = [abs(b - c) for n2, g2, b, c, _ in cases if g2 == g and n2 != name]
        width = math.ceil(max(others) / 0.05 - 1e-9) * 0.05 if others else 0.0
        loo += abs(kp - km) <= width + 1e-9
    n = len(cases)
    return ["", "## How sure: the KV pool's P95 band", "",
            f"Check cases with a printed pool: {n}. Inside the shipped band: {shipped} of {n}; "
            f"inside the band their version group's other cases give (left one out): {loo} of {n} "
            "(target: at least 95 %)."]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    args = ap.parse_args()
    table = rows()
    lines = ["| case | split | weights GiB pred / meas | activation | KV pool GiB | KV tokens | "
             "fits pred / real |", "|---|---|---|---|---|---|---|"]
    kv_err, w_err, tok_err, verdicts = [], [], [], []
    for r in table:
        if r["skip"]:
            lines.append(f"| {r['case']} | skipped | {r['skip']} | | | | |")
            continue
        wp, wm = r["weights"]  # type: ignore[misc]
        kp, km = r["kv_gib"]  # type: ignore[misc]
        tp_, tm = r["kv_tokens"]  # type: ignore[misc]
        fp, fm = r["fits"]  # type: ignore[misc]
        if r["split"] == "check":
            verdicts.append(fp == fm)
            if wm:
                w_err.append(abs(wp - wm) / wm)
            if km is not None and fm:
                kv_err.append(abs(kp - km))
            if tm and fm:
                tok_err.append(abs(tp_ - tm) / tm)
        lines.append(f"| {r['case']} | {r['split']} | {_err(r['weights'])} | {_err(r['activation'])} "
                     f"| {_err(r['kv_gib'])} | {_err(r['kv_tokens'], pct=True)} | {fp} / {fm} |")
    summary = [
        "",
        f"Held-out cases: {len(verdicts)}; fit verdict right in {sum(verdicts)} of {len(verdicts)}.",
        f"Weights: max error {100 * max(w_err, default=0):.2f} % (target 2 %).",
        f"KV pool: max error {max(kv_err, default=0):.2f} GiB, median "
        f"{statistics.median(kv_err) if kv_err else 0:.2f} GiB (target 0.25 GiB).",
        f"KV tokens: max error {100 * max(tok_err, default=0):.1f} % (target 5 %).",
    ]
    breakdown = [
        "", "## Check split by vLLM version family", "",
        *group_table(table, "family", FAMILIES),
        "", "## Check split by card size (CUDA total: <=16 GB, 16-32 GB, >32 GB)", "",
        *group_table(table, "card", CARDS),
        "", "n counts check cases the estimator ran on; skipped ones (no catalog model, no version, "
        "V0 engine, no card total) are in brackets. KV errors are over cases that started and "
        "printed the figure.",
    ]
    text = "\n".join(lines + summary + breakdown + coverage(table))
    print(text)
    if args.markdown:
        args.markdown.write_text("# Estimator accuracy against published vLLM logs\n\n"
                                 "Produced by `.venv/bin/python bench/accuracy.py --markdown "
                                 "docs/accuracy.md`. Each cell: predicted / measured (error).\n\n"
                                 + text + "\n")


if __name__ == "__main__":
    main()
