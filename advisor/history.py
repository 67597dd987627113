"""What this host's own launches measured, for the estimator to use in place of its model.

From its reservation vLLM takes the weights, the KV cache, and the rest: the activation peak
of its profiling pass, non-torch memory and (from 0.21 on) CUDA graphs. The estimator
models the rest from published logs (bench/accuracy.py); a launch of the same checkpoint
with the same flags on this host measured it. A later estimate for that checkpoint, on
this host's GPU, takes the measured figure and says so in its provenance.

The CPU engine has nothing to refine: its KV cache is the size it is told
(VLLM_CPU_KVCACHE_SPACE), and the estimate equals what it logs.

A load test of a launch (advisor.loadtest) measures its decode speed (and on a GPU its
tokens per joule); the latest one of each checkpoint on this host's engine and hardware
calibrates later rankings and estimates (advisor.calibrate), and says so.
Pure: deployments in, measurements out (the store reads them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import msgspec

from advisor.specs import Deployment


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    """How far one launch's KV cache fell short of the estimate made for it."""

    deployment: str
    repo: str
    quant: str  # with the repo, the checkpoint (fp8 at load is another one than the plain)
    gpu_name: str
    tp: int
    max_num_batched_tokens: int
    enforce_eager: bool
    version: tuple[int, int]
    predicted_kv_gib: float
    measured_kv_gib: float  # "Available KV cache memory", as the engine logged it
    at: float  # when the engine reported ready

    @property
    def shortfall_gib(self) -> float:
        """What vLLM took besides weights and KV beyond the model's figure (negative: less)."""
        return round(self.predicted_kv_gib - self.measured_kv_gib, 2)

    @property
    def note(self) -> str:
        day = time.strftime("%Y-%m-%d", time.localtime(self.at))
        return (f"refined on this host: deployment {self.deployment} of this checkpoint with "
                f"these flags ({day}) had {self.measured_kv_gib:.2f} GiB of KV cache where "
                f"{self.predicted_kv_gib:.2f} was predicted; the difference is applied")


def _number(record: dict[str, object], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def measurement(d: Deployment, installed: tuple[int, int]) -> Measurement | None:
    """The measurement a GPU launch left, if its engine logged its KV cache memory.
    `installed`: the vLLM version the advisor launches, where the log does not say."""
    if d.engine != "vllm" or not d.gpu_name or d.engine_ready_at is None:
        return None
    m, p = d.measured, d.predicted
    version = version_of(m.get("version")) or version_of(d.request.get("vllm_version")) or installed
    measured, predicted = _number(m, "kv_cache_gib"), _number(p, "kv_cache_gib")
    tp, batched = _number(p, "tp"), _number(p, "max_num_batched_tokens")
    if measured is None or predicted is None or tp is None or batched is None:
        return None
    # the model's own figure: a launch planned with history had the correction taken off
    predicted = round(predicted + (_number(p, "host_correction_gib") or 0.0), 2)
    return Measurement(
        deployment=d.id, repo=d.repo, quant=d.quant, gpu_name=d.gpu_name, tp=int(tp),
        max_num_batched_tokens=int(batched), enforce_eager="--enforce-eager" in d.command,
        version=version, predicted_kv_gib=predicted, measured_kv_gib=measured,
        at=d.engine_ready_at)


def version_of(text: object) -> tuple[int, int] | None:
    """(major, minor) of what `vllm --version` prints ("v0.9.2", "0.10.1.1", "0.13.0+cu126"),
    None for anything else: the accounting changes between minor releases, never within one."""
    found = re.match(r"\s*v?(\d+)\.(\d+)", text) if isinstance(text, str) else None
    return (int(found[1]), int(found[2])) if found else None


def from_deployments(deployments: Iterable[Deployment],
                     installed: tuple[int, int]) -> tuple[Measurement, ...]:
    """The latest usable measurement of each checkpoint and set of flags, the latest first
    (an older launch of the same says nothing the latest does not)."""
    latest: dict[tuple[object, ...], Measurement] = {}
    for d in deployments:
        m = measurement(d, installed)
        if m is None:
            continue
        key = (m.repo, m.quant, m.gpu_name, m.tp, m.max_num_batched_tokens, m.enforce_eager,
               m.version)
        if key not in latest or latest[key].at < m.at:
            latest[key] = m
    return tuple(sorted(latest.values(), key=lambda m: -m.at))


def find(measurements: tuple[Measurement, ...], repo: str, quant: str, gpu_name: str, tp: int,
         max_num_batched_tokens: int, enforce_eager: bool,
         version: tuple[int, int]) -> Measurement | None:
    """The latest launch of this checkpoint on this GPU with the flags that decide what
    vLLM takes besides weights and KV (the utilization and context length do not)."""
    for m in measurements:
        if (m.repo == repo and m.quant == quant and m.gpu_name == gpu_name and m.tp == tp
                and m.max_num_batched_tokens == max_num_batched_tokens
                and m.enforce_eager == enforce_eager and m.version == version):
            return m
    return None


# ------------------------------------------------------- load tests, for the ranking's speed


class LoadTest(msgspec.Struct, frozen=True, kw_only=True):
    """The latest load test of one checkpoint on this host's engine and hardware: what the
    ranking calibrates its roofline by (advisor.calibrate) and `edge` ranks efficiency by."""

    deployment: str
    repo: str
    quant: str
    engine: str  # "vllm" (a GPU) or "vllm-cpu"
    gpu_name: str  # as NVML names it; "" on the CPU engine
    tp: int
    version: tuple[int, int]  # the vLLM that served it
    concurrency: int
    context: int  # mean tokens of context per decode step: the prompt and half the output
    tokens_per_s: float  # per stream: 1000 / the client's mean time per output token
    tokens_per_joule: float | None = None  # output tokens over the GPUs' energy (NVML)
    energy_source: str = ""
    at: float

    @property
    def day(self) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(self.at))


def load_test(d: Deployment, installed: tuple[int, int]) -> LoadTest | None:
    """The latest load test of a launch that completed requests and timed its tokens."""
    good = [b for b in d.benches if not b.failed and b.completed and b.decode_tokens_per_s_per_stream]
    if not good:
        return None
    b = good[-1]
    tp = _number(d.predicted, "tp")
    version = version_of(d.measured.get("version")) or version_of(d.request.get("vllm_version")) \
        or installed
    return LoadTest(deployment=d.id, repo=d.repo, quant=d.quant, engine=d.engine,
                    gpu_name=d.gpu_name, tp=int(tp) if tp else 1, version=version,
                    concurrency=b.concurrency, context=b.input_len + b.output_len // 2,
                    tokens_per_s=float(b.decode_tokens_per_s_per_stream or 0.0),
                    tokens_per_joule=b.tokens_per_joule, energy_source=b.energy_source, at=b.at)


def load_tests(deployments: Iterable[Deployment], installed: tuple[int, int]) -> tuple[LoadTest, ...]:
    """The latest load test of each checkpoint on each engine, GPU, tp and vLLM version,
    the latest first (an older test of the same says nothing the latest does not)."""
    latest: dict[tuple[object, ...], LoadTest] = {}
    for d in deployments:
        t = load_test(d, installed) if d.benches else None
        if t is None:
            continue
        key = (t.repo, t.quant, t.engine, t.gpu_name, t.tp, t.version)
        if key not in latest or latest[key].at < t.at:
            latest[key] = t
    return tuple(sorted(latest.values(), key=lambda t: -t.at))
