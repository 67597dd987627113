"""Predicted against measured: a load test's figures set beside the plan's, and the lines
`advisor bench` prints. Pure: records in, rows and text out.
"""

from __future__ import annotations

from typing import Any

from advisor.specs import BenchResult, Comparison


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _sig(v: float | None, digits: int = 4) -> float | None:
    """Rounded to significant digits: a KV share of 0.04 % keeps its figures."""
    return None if v is None else float(f"{v:.{digits}g}")


def _row(figure: str, unit: str, predicted: float | None, measured: float | None,
         note: str = "") -> Comparison:
    ratio = _sig(measured / predicted, 3) if predicted and measured is not None else None
    return Comparison(figure=figure, unit=unit, predicted=_sig(predicted), measured=_sig(measured),
                      ratio=ratio, note=note)


def compare(predicted: dict[str, object], b: BenchResult) -> list[Comparison]:
    """The plan's speed and KV figures beside the load test's. The roofline's speed assumes a
    1,000-token context and prompt; the KV use is the test's own tokens over the pool."""
    each = _num(predicted.get("decode_tokens_per_s_at_concurrency")) or _num(
        predicted.get("decode_tokens_per_s"))
    speed_note = "" if each else "the plan has no speed estimate for this hardware (no sourced bandwidth)"
    ttft = _num(predicted.get("ttft_s"))
    pool = _num(predicted.get("kv_cache_tokens"))
    block = _num(predicted.get("block_size")) or 16
    # each running sequence holds whole blocks for its prompt and what it has decoded
    per_seq = -(-(b.input_len + b.output_len) // block) * block
    kv = 100 * min(b.concurrency, b.num_prompts) * per_seq / pool if pool else None
    return [
        _row("decode tokens/s per stream", "tok/s", each, b.decode_tokens_per_s_per_stream, speed_note),
        _row("decode tokens/s, all streams", "tok/s", each * b.concurrency if each else None,
             b.decode_tokens_per_s, speed_note),
        _row("time to first token, P50", "ms", ttft * 1000 if ttft else None, b.ttft_p50_ms,
             f"predicted for a 1,000-token prompt; the test sent {b.input_len}" if ttft else
             "no sourced tensor throughput to predict it"),
        _row("KV-cache use, peak", "%", kv, b.kv_cache_peak_pct,
             f"{min(b.concurrency, b.num_prompts)} sequences of {per_seq} tokens in a pool of "
             f"{int(pool):,}" if pool else ""),
    ]


def _fmt(v: object, digits: int = 3) -> str:
    n = _num(v)
    return "–" if n is None else f"{n:.{digits}g}" if abs(n) < 1000 else f"{n:,.0f}"


def render(d: dict[str, Any], cost: dict[str, Any]) -> list[str]:
    """What `advisor bench` prints: the latest load test beside the plan, then the cost."""
    benches = d.get("benches") or []
    lines = [f"{d['id']}  {d['state']}  {d['model']}"]
    if not benches:
        lines.append("  no load test yet: `advisor bench ID` runs one")
    else:
        b = benches[-1]
        lines.append(f"  load test: {b['client']}, {b['completed']}/{b['num_prompts']} requests "
                     f"at concurrency {b['concurrency']}, {b['input_len']} in / {b['output_len']} "
                     f"out, {b['duration_s']:.1f} s")
        lines.append(f"  {'':32} {'predicted':>10} {'measured':>10} {'ratio':>7}")
        for r in b.get("versus") or []:
            lines.append(f"  {r['figure'] + ' (' + r['unit'] + ')':32} {_fmt(r['predicted']):>10} "
                         f"{_fmt(r['measured']):>10} {_fmt(r['ratio']):>7}")
        lines.append(f"  TTFT P50/P95/P99 {_fmt(b['ttft_p50_ms'])}/{_fmt(b['ttft_p95_ms'])}/"
                     f"{_fmt(b['ttft_p99_ms'])} ms; inter-token P50/P95/P99 {_fmt(b['itl_p50_ms'])}/"
                     f"{_fmt(b['itl_p95_ms'])}/{_fmt(b['itl_p99_ms'])} ms")
        energy = (f"{b['energy_j']:.0f} J, {b['tokens_per_joule']:.3g} tokens/J"
                  if b.get("energy_j") else "none")
        lines.append(f"  energy: {energy} ({b['energy_source']})")
    lines.append("")
    lines.append("  cost of a million generated tokens, USD:")
    if cost.get("tokens_per_s") is None:
        lines.append(f"    {cost['throughput_source']}")
    else:
        lines.append(f"    {cost['tokens_per_s']:g} tokens/s ({cost['throughput_source']}): "
                     f"{cost['hours_per_m']:.3g} h per million")
        lines.append(f"    electricity {_money(cost['energy_per_m'])} ({cost['energy_source']}), "
                     f"card {_money(cost['card_per_m'])} ({cost['card_source'] or 'no card price given'})")
        total = _money(cost["total_per_m"])
        lines.append(f"    here: {total}" + (f" without {', '.join(cost['missing'])} (give "
                                               "--kwh-price, --card-per-hour or --card-price "
                                               "and --card-years, --watts)" if cost["missing"] else ""))
    for a in cost.get("apis") or []:
        lines.append(f"    {a['provider']} {a['model']}: {a['input_per_m']:g} in / {a['output_per_m']:g} "
                     f"out ({a['date']}, {a['source']})")
    lines.append("  beyond the price, local means: " + "; ".join(cost.get("reasons_for_local") or []))
    return lines


def _money(v: object) -> str:
    n = _num(v)
    return "–" if n is None else f"${n:.4g}"
