"""Local or API, in numbers: what a million generated tokens cost on this deployment.

From the throughput a load test measured (or, before one, the estimate, labelled so), the
power drawn (measured by NVML over the test, or the figure the user gives), and the
user's prices (electricity per kWh; the card per hour, or its price over its lifetime),
beside published API prices kept as sourced data (catalog/pricing/api_prices.toml).
Pure: figures in, a Cost out.
"""

from __future__ import annotations

import msgspec

HOURS_PER_YEAR = 24 * 365


class ApiPrice(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One published API price, USD per million tokens, with where it was read."""

    model: str
    provider: str
    input_per_m: float
    output_per_m: float
    date: str  # the date the source gives for the figures
    source: str  # the page read
    primary: str = ""  # the page the source quotes, where it names one
    note: str = ""


class ApiPrices(msgspec.Struct, forbid_unknown_fields=True):
    price: list[ApiPrice]


class Prices(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the user pays, USD; each unset figure leaves its share of the cost out (and says so)."""

    kwh_price: float | None = None  # electricity per kWh
    card_per_hour: float | None = None  # the machine's cost per hour (rented, or written down)
    card_price: float | None = None  # or its purchase price ...
    card_years: float | None = None  # ... over this many years of use
    watts: float | None = None  # power draw where NVML measured none (the CPU engine)


class Throughput(msgspec.Struct, kw_only=True):
    tokens_per_s: float  # generated tokens per second, all streams together
    source: str  # "measured: ..." or "estimate: ..."
    measured: bool
    joules_per_token: float | None = None  # measured by NVML over a load test
    watts: float | None = None  # mean power over the load test


class Cost(msgspec.Struct, kw_only=True):
    """The cost of a million generated tokens here, its parts, and the API prices beside it."""

    tokens_per_s: float | None
    throughput_source: str
    measured: bool
    hours_per_m: float | None  # hours of this deployment to generate a million tokens
    energy_kwh_per_m: float | None
    energy_per_m: float | None  # USD
    energy_source: str
    card_per_m: float | None  # USD
    card_source: str
    total_per_m: float | None  # USD: the parts that are known; `missing` names the rest
    missing: list[str]
    apis: list[ApiPrice]
    reasons_for_local: list[str]


# The seed article's answer to "a local SLM or the GPT-4o API?" (its FAQ): a price is one of
# four reasons, and the API keeps the tasks past a small model's reach.
REASONS_FOR_LOCAL = [
    "privacy: the data cannot leave your infrastructure (HIPAA, GDPR, trade secrets)",
    "volume: thousands of calls an hour, where the cost per token decides; a busy card "
    "costs less per token, an API bills every token alike",
    "offline: it answers without a network or a provider's quota",
    "latency: no network round trip; the time to first token is this machine's own",
    "the API instead: nuanced world knowledge, the best creative writing, long multi-step "
    "reasoning, or a task past a 14B model",
]


def throughput_of(deployment: dict[str, object]) -> Throughput | None:
    """The latest load test's throughput, or the plan's estimate (per stream times
    concurrency) when there is none; None when neither says."""
    benches = deployment.get("benches")
    if isinstance(benches, list) and benches:
        b = benches[-1]
        if isinstance(b, dict) and _pos(b.get("decode_tokens_per_s")):
            tps = float(b["decode_tokens_per_s"])
            energy, tokens, dur = b.get("energy_j"), b.get("output_tokens"), b.get("duration_s")
            jpt = _f(energy) / _f(tokens) if _pos(energy) and _pos(tokens) else None
            watts = _f(energy) / _f(dur) if _pos(energy) and _pos(dur) else None
            return Throughput(tokens_per_s=tps, measured=True, joules_per_token=jpt, watts=watts,
                              source=f"measured: {b.get('client', 'load test')}, "
                                     f"{b.get('num_prompts')} requests at concurrency "
                                     f"{b.get('concurrency')}")
    predicted = deployment.get("predicted")
    request = deployment.get("request")
    if isinstance(predicted, dict):
        each = predicted.get("decode_tokens_per_s_at_concurrency") or predicted.get("decode_tokens_per_s")
        n = request.get("concurrency") if isinstance(request, dict) else None
        n = n if isinstance(n, int) and n > 0 else 1
        if _pos(each):
            return Throughput(tokens_per_s=float(each) * n, measured=False,  # type: ignore[arg-type]
                              source=f"estimate (no load test yet): the plan's roofline, "
                                     f"{each} tokens/s per stream x {n}")
    return None


def _sig(v: float, digits: int = 4) -> float:
    """Rounded to significant digits: a cent per million tokens keeps its figures."""
    return float(f"{v:.{digits}g}")


def _f(v: object) -> float:
    return float(v) if isinstance(v, int | float) else 0.0


def _pos(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def cost_of(throughput: Throughput | None, prices: Prices, apis: list[ApiPrice]) -> Cost:
    """A million generated tokens: hours of this deployment, the energy, the card's share."""
    missing: list[str] = []
    if throughput is None:
        return Cost(tokens_per_s=None, throughput_source="no throughput: run a load test",
                    measured=False, hours_per_m=None, energy_kwh_per_m=None, energy_per_m=None,
                    energy_source="", card_per_m=None, card_source="", total_per_m=None,
                    missing=["throughput"], apis=apis, reasons_for_local=REASONS_FOR_LOCAL)
    hours = 1e6 / throughput.tokens_per_s / 3600
    kwh: float | None = None
    if throughput.joules_per_token is not None:
        kwh = throughput.joules_per_token * 1e6 / 3.6e6
        e_source = f"measured: {throughput.joules_per_token:.3g} J per token (NVML)"
    elif prices.watts:
        kwh = prices.watts * hours / 1000
        e_source = f"given: {prices.watts:g} W for {hours:.3g} h"
    else:
        e_source = "no power figure: NVML measured none; give watts"
    energy = _sig(kwh * prices.kwh_price) if kwh is not None and prices.kwh_price is not None else None
    if energy is None:
        missing.append("electricity" if kwh is not None else "power draw")
    per_hour = prices.card_per_hour
    c_source = f"given: {per_hour:g} per hour" if per_hour is not None else ""
    if per_hour is None and prices.card_price and prices.card_years:
        per_hour = prices.card_price / (prices.card_years * HOURS_PER_YEAR)
        c_source = (f"{prices.card_price:g} over {prices.card_years:g} years, busy every hour "
                    "(idle hours raise it)")
    card = _sig(per_hour * hours) if per_hour is not None else None
    if card is None:
        missing.append("card cost")
    parts = [p for p in (energy, card) if p is not None]
    return Cost(tokens_per_s=round(throughput.tokens_per_s, 2), throughput_source=throughput.source,
                measured=throughput.measured, hours_per_m=_sig(hours),
                energy_kwh_per_m=_sig(kwh) if kwh is not None else None, energy_per_m=energy,
                energy_source=e_source, card_per_m=card, card_source=c_source,
                total_per_m=_sig(sum(parts)) if parts else None, missing=missing, apis=apis,
                reasons_for_local=REASONS_FOR_LOCAL)
