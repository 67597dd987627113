"""This host's load tests in the ranking: measured speed in place of the roofline's, and
tokens per joule for `edge` (docs/ranking.md, "Measured on this host").

A load test (advisor.loadtest) measured one checkpoint's decode speed per stream at its
concurrency and context. Against the roofline of that checkpoint at the same shape it
gives a ratio; that checkpoint's ranked speed is its roofline times the ratio (exactly what
was measured, where the ranking asks the test's shape). The other checkpoints of the same
engine and hardware take the geometric mean of the measured ratios as the host's factor,
bounded to HOST_FACTOR_BOUNDS: what one test says about the host (its bandwidth shared,
its clocks) carries over; what it says about one model's own departure from the roofline
should not rescale every other by more than that. Pure: the tests come in from the
adapters (advisor.advice), which keep only this host's and this target's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from advisor.estimate import EngineSettings, Estimate, Target, estimate
from advisor.history import LoadTest
from advisor.plan import with_speed
from advisor.specs import Checkpoint, Model

# the host factor a test carries over to other checkpoints: at most a factor 2 either way,
# about the roofline's spread over the published and CPU measurements (docs/speed.md)
HOST_FACTOR_BOUNDS = (0.5, 2.0)


@dataclass(frozen=True)
class Measured:
    """One checkpoint's load test and its ratio to the roofline at the test's shape."""

    test: LoadTest
    ratio: float  # measured tokens/s per stream over the roofline's

    def said(self) -> str:
        t = self.test
        return (f"measured on this host: {t.tokens_per_s:g} tokens/s per stream at concurrency "
                f"{t.concurrency} (load test of {t.day}, deployment {t.deployment}; the "
                f"roofline × {self.ratio:.2f})")

    def efficiency(self) -> str:
        t = self.test
        return (f"{t.tokens_per_joule:g} tokens per joule measured on this host (load test of "
                f"{t.day} at concurrency {t.concurrency}, {t.energy_source})")


@dataclass(frozen=True)
class Calibration:
    """What this host's load tests say to one ranking."""

    own: dict[tuple[str, str], Measured]  # (repo, quant) → its own test
    factor: float | None  # for the checkpoints not tested here; None when none is known
    factor_said: str

    @property
    def energy(self) -> bool:
        """Whether any test measured tokens per joule (edge ranks by it then)."""
        return any(m.test.tokens_per_joule for m in self.own.values())

    def apply(self, ckpt: Checkpoint, est: Estimate) -> tuple[Estimate, str, Measured | None]:
        """The row's estimate with its speed calibrated (a copy: estimates are kept between
        rankings), what its speed rests on, and its own test, if it had one."""
        mine = self.own.get((ckpt.repo, ckpt.quant))
        ratio, said = (mine.ratio, mine.said()) if mine else (self.factor, self.factor_said)
        if ratio is None or not est.decode_tokens_per_s:
            return est, "estimate", mine
        each = est.decode_tokens_per_s_at_concurrency
        return msgspec.structs.replace(
            est, decode_tokens_per_s=round(est.decode_tokens_per_s * ratio, 1),
            decode_tokens_per_s_at_concurrency=round(each * ratio, 1) if each else each,
            provenance={**est.provenance, "decode_tokens_per_s": said}), said, mine


def roofline_at(model: Model, ckpt: Checkpoint, target: Target, settings: EngineSettings,
                test: LoadTest) -> float | None:
    """The roofline's tokens/s per stream at the test's tp, concurrency and context."""
    s = msgspec.structs.replace(settings, tp=test.tp, pp=1, concurrency=test.concurrency,
                                max_model_len=test.context)
    e = with_speed(estimate(model, ckpt, target, s), model, ckpt, target, s)
    return e.decode_tokens_per_s if test.concurrency == 1 else e.decode_tokens_per_s_at_concurrency


def calibration(models: list[Model], target: Target, settings: EngineSettings,
                tests: tuple[LoadTest, ...]) -> Calibration | None:
    """`tests`: this host's, on the target's engine and hardware (latest first). None when
    none is of a checkpoint ranked under the vLLM version asked."""
    wanted: dict[tuple[str, str], LoadTest] = {}
    for t in tests:
        if t.version == settings.vllm_version:
            wanted.setdefault((t.repo, t.quant), t)
    if not wanted:
        return None
    own: dict[tuple[str, str], Measured] = {}
    for m in models:
        for c in m.checkpoints:
            got = wanted.get((c.repo, c.quant))
            if got is None or (c.repo, c.quant) in own:
                continue
            roof = roofline_at(m, c, target, settings, got)
            if roof:
                own[c.repo, c.quant] = Measured(test=got, ratio=got.tokens_per_s / roof)
    if not own:
        return None
    mean = math.exp(sum(math.log(m.ratio) for m in own.values()) / len(own))
    lo, hi = HOST_FACTOR_BOUNDS
    factor = min(hi, max(lo, mean))
    n = len(own)
    bounded = "" if factor == mean else f", bounded from {mean:.2f}"
    said = (f"estimate, × {factor:.2f} from this host's load test{'s' if n > 1 else ''} of "
            f"{n} other checkpoint{'s' if n > 1 else ''}{bounded}")
    return Calibration(own=own, factor=factor, factor_said=said)
