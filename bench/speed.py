"""The speed roofline against published vLLM measurements: predicted, measured, error.

Run: .venv/bin/python bench/speed.py [--markdown docs/speed.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from speed_cases import load_speed_cases  # noqa: E402

CPU_SECTION = "## The CPU engine"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    lines = ["| # | model | quant | GPU | metric | predicted | measured | error | split |",
             "|---|---|---|---|---|---|---|---|---|"]
    errs = []
    for c in load_speed_cases():
        r = c.raw
        if c.skip:
            lines.append(f"| {c.index} | {r['model']} | {r['quant']} | {r['gpu']} | {r['metric']} "
                         f"| | {c.measured:.1f} {c.unit} | skipped: {c.skip} | |")
            continue
        assert c.predicted is not None
        if c.split == "check":
            errs.append(abs(c.error))
        lines.append(f"| {c.index} | {r['model']} | {r['quant']} | {r['gpu']} | {r['metric']} | "
                     f"{c.predicted:.1f} {c.unit} | {c.measured:.1f} {c.unit} | {100 * c.error:+.0f} % "
                     f"| {c.split} |")
    summary = (f"\nHeld-out measurements: {len(errs)}; median absolute error "
               f"{100 * statistics.median(errs):.0f} % (target 25 %), "
               f"90th percentile {100 * sorted(errs)[int(0.9 * (len(errs) - 1))]:.0f} %.")
    text = "\n".join(lines) + "\n" + summary
    print(text)
    if args.markdown:
        # bench/cpu_speed.py writes the CPU engine's section of the same page: keep it
        old = args.markdown.read_text() if args.markdown.exists() else ""
        cpu = old[old.index(CPU_SECTION):] if CPU_SECTION in old else ""
        args.markdown.write_text("# Speed estimates against published vLLM measurements\n\n"
                                 "Produced by `.venv/bin/python bench/speed.py --markdown docs/speed.md`. "
                                 "Sources: tests/data/speed_measurements.toml.\n\n" + text + "\n"
                                 + ("\n" + cpu if cpu else ""))


if __name__ == "__main__":
    main()
