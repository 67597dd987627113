"""GPU facts that need no I/O: CUDA's view of a card's memory, and naming a card."""

from __future__ import annotations

import re
import statistics

from advisor.specs import GpuSpec

GIB = 2**30


def _gib(n: float) -> float:
    return round(n / GIB, 2)


# What CUDA reports as a card's total against NVML's, from published logs (DESIGN.md):
# (NVML GiB, CUDA GiB). Used where NVML's v2 memory info gives no reserved figure.
KNOWN_CUDA_TOTALS: dict[str, tuple[float, float]] = {
    "H100 80GB HBM3": (79.65, 79.19),
    "A100-SXM4-80GB": (80.00, 79.15),
    "A100 80GB PCIe": (80.00, 79.15),
    "L4": (22.49, 22.16),
    "Tesla T4": (15.00, 14.74),
    "GeForce RTX 3060": (12.00, 11.63),
    # Linux; under WSL2 CUDA reports the 4090's full 23.99 (tests/data/vllm_logs/*4090*)
    "GeForce RTX 4090": (23.99, 23.52),
    "GeForce RTX 5090": (31.84, 31.36),
}
# The median CUDA/NVML ratio of the cards above, for a card we have no figure for.
FALLBACK_CUDA_RATIO = statistics.median(cu / nv for nv, cu in KNOWN_CUDA_TOTALS.values())

# GPU memory held by no listed process, up to this, is within the error of CUDA's total as
# derived from NVML's (a published pair, or the fallback ratio): neither noted in the
# profile nor taken off a plan's budget (advisor.plan.target_for).
UNOWNED_NOTE_GIB = 0.5

def capability_of(text: str | None) -> tuple[int, int] | None:
    """(major, minor) of a compute capability as NVML or the GPU table writes it ("8.6")."""
    found = re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\s*", text or "")
    return (int(found[1]), int(found[2])) if found else None


def cuda_total_gib(name: str, nvml_total: int, reserved: int | None) -> tuple[float, str]:
    """What CUDA will call the total, and how it was derived.

    Published pairs win; then NVML v2's reserved figure; then the typical ratio.
    """
    for key, (nv, cu) in KNOWN_CUDA_TOTALS.items():
        if key.lower() in name.lower():
            return round(_gib(nvml_total) * cu / nv, 2), f"published CUDA/NVML ratio of {key}"
    if reserved:
        return _gib(nvml_total - reserved), "NVML total less the driver's reserved memory"
    return round(_gib(nvml_total) * FALLBACK_CUDA_RATIO, 2), "typical CUDA/NVML ratio (estimate)"


def find_gpu(gpus: list[GpuSpec], name: str) -> GpuSpec | None:
    """The table's card for an NVML name or a user's words ("H100 80GB", "rtx 3060")."""
    low = name.lower()
    for g in gpus:
        if g.name.lower() == low:
            return g
    # longest match first, so "A100-SXM4-80GB" is not taken for "A10"; and a match is a
    # whole word, so an "RTX A4000" is not an A40, nor an "L40" an L4
    pairs = sorted(((m, g) for g in gpus for m in g.match), key=lambda p: -len(p[0]))
    return next((g for m, g in pairs if _word_in(m.lower(), low)), None)


def _word_in(word: str, text: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text) is not None


def cuda_gib(spec: GpuSpec) -> float:
    """A table card's total as CUDA reports it: published, or derived from NVML's."""
    return spec.memory_cuda_gib or cuda_total_gib(spec.name, int(spec.memory_nvml_gib * GIB), None)[0]
