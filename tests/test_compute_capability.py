"""What a GPU's compute capability changes in the advice: whether vLLM's build runs on it at
all, whether a quantization's kernels do, and whether FP8 weights go through Marlin's
repacking (which holds memory the KV pool loses: weights.py::repack_held_bytes)."""

from __future__ import annotations

from typing import Any

import pytest
from test_profile import GIB, FakeNvml

from advisor.advice import recommend_for
from advisor.catalog import load_catalog, load_gpus
from advisor.estimate import EngineSettings, Target, estimate, marlin_repacks
from advisor.hardware import capability_of
from advisor.plan import target_for
from advisor.profile import read_host
from advisor.specs import PlanRequest

CATALOG = load_catalog()
GPUS = load_gpus()


class OldCardNvml(FakeNvml):
    """NVML on a host with one older card: its name, memory and compute capability."""

    def __init__(self, name: bytes, total_gib: float, capability: tuple[int, int]) -> None:
        super().__init__()
        self.card, self.total, self.capability = name, int(total_gib * GIB), capability

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.card

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        if version:
            raise self.NVMLError("Function Not Found")
        used = int(0.3 * GIB)
        return type("Memory", (), {"total": self.total, "used": used, "free": self.total - used})

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return self.capability


def _ckpt(model_id: str, pick: Any) -> tuple[Any, Any]:
    model = CATALOG.by_id(model_id)
    assert model
    return model, next(c for c in model.checkpoints if pick(c))


def test_the_gpu_table_and_nvml_give_the_capability_the_plan_reads() -> None:
    assert capability_of("8.6") == (8, 6) and capability_of("12.0") == (12, 0)
    assert capability_of("") is None and capability_of("eight") is None and capability_of(None) is None
    named = target_for(PlanRequest(use_case="chat", gpu="A100 40GB"), read_host(nvml=FakeNvml()),  # type: ignore[arg-type]
                       GPUS)
    assert named.compute_capability == (8, 0)
    # this host's own card: what NVML read (FakeNvml is an H100, 9.0)
    own = target_for(PlanRequest(use_case="chat"), read_host(nvml=FakeNvml()), GPUS)  # type: ignore[arg-type]
    assert own.compute_capability == (9, 0)
    assert all(g.compute_capability for g in GPUS), "every card in the table has one"


def test_a_card_older_than_vllms_build_is_told_so_for_every_checkpoint_through_the_profile() -> None:
    # a GTX 1080 Ti (Pascal, 6.1) read through the profile's NVML path: vLLM's CUDA build
    # does not run on it, whatever fits in its 11 GiB
    host = read_host(nvml=OldCardNvml(b"NVIDIA GeForce GTX 1080 Ti", 11.0, (6, 1)))  # type: ignore[arg-type]
    assert host.gpus[0].compute_capability == "6.1"
    rec = recommend_for(PlanRequest(use_case="edge"), CATALOG, host, GPUS)
    rows = [r for r in rec.results if r.estimate.engine == "vllm"]
    assert rows and not any(r.estimate.fits for r in rows)
    assert all("compute capability 7.5 or newer" in r.estimate.reason and "6.1" in r.estimate.reason
               for r in rows)
    assert all("gpus 0" in r.estimate.reason for r in rows), "the way out is named"


def test_a_v100_runs_plain_checkpoints_on_older_vllm_but_not_awq_or_fp8() -> None:
    v100 = Target(engine="vllm", gpu_name="Tesla V100-SXM2-32GB", gpu_gib=31.73, gpus=1,
                  compute_capability=(7, 0))
    old = EngineSettings(max_model_len=8192, vllm_version=(0, 19))
    plain = _ckpt("qwen2.5-7b", lambda c: c.quant == "none")
    awq = _ckpt("qwen2.5-7b", lambda c: c.quant == "awq")
    fp8 = _ckpt("qwen3-8b", lambda c: c.quant == "fp8" and not c.at_load)
    assert estimate(*plain, v100, old).fits
    for model, ckpt in (awq, fp8):
        e = estimate(model, ckpt, v100, old)
        assert not e.fits and f"{ckpt.quant} kernels need compute capability 7.5" in e.reason
    # from 0.21 vLLM's build needs 7.5 itself
    new = estimate(*plain, v100, EngineSettings(max_model_len=8192, vllm_version=(0, 32)))
    assert not new.fits and "vLLM 0.32 runs on GPUs of compute capability 7.5" in new.reason
    # a card whose capability is not known is planned as before
    unknown = Target(engine="vllm", gpu_gib=31.73, gpus=1)
    assert estimate(*awq, unknown, EngineSettings(max_model_len=8192)).fits


@pytest.mark.parametrize(("capability", "repacked"), [((7, 5), True), ((8, 0), True),
                                                      ((8, 6), True), ((8, 9), False),
                                                      ((9, 0), False), (None, False)])
def test_fp8_weights_go_through_marlin_below_native_fp8_and_hold_what_it_replaced(
        capability: tuple[int, int] | None, repacked: bool) -> None:
    model, fp8 = _ckpt("qwen3-4b", lambda c: c.quant == "fp8" and not c.at_load)
    card = Target(engine="vllm", gpu_gib=39.38, gpus=1, compute_capability=capability)
    assert marlin_repacks(fp8, card) is repacked
    e = estimate(model, fp8, card, EngineSettings(max_model_len=8192, vllm_version=(0, 32)))
    assert ("non_torch_gib_repack" in e.provenance) is repacked
    native = estimate(model, fp8, Target(engine="vllm", gpu_gib=39.38, gpus=1,
                                         compute_capability=(9, 0)),
                      EngineSettings(max_model_len=8192, vllm_version=(0, 32)))
    if repacked:
        # Qwen3-4B's fused qkv (2560 x 6144) and o_proj (4096 x 2560) FP8 tensors are under
        # 20 MiB, gate_up and down are not: 36 layers x about 25 MiB
        assert e.non_torch_gib - native.non_torch_gib == pytest.approx(0.88, abs=0.02)
        assert e.kv_cache_gib == pytest.approx(native.kv_cache_gib - 0.88, abs=0.02)
    else:
        assert e.kv_cache_gib == native.kv_cache_gib


def test_4bit_marlin_needs_turing_and_fp8_at_load_is_not_charged() -> None:
    model, awq = _ckpt("qwen2.5-7b", lambda c: c.quant == "awq")
    _, at_load = _ckpt("qwen2.5-7b", lambda c: c.quant == "fp8" and c.at_load)
    assert marlin_repacks(awq, Target(engine="vllm", gpu_gib=14.74, compute_capability=(7, 5)))
    assert marlin_repacks(awq, Target(engine="vllm", gpu_gib=14.74))  # unknown: as recent
    assert not marlin_repacks(awq, Target(engine="vllm", gpu_gib=31.73, compute_capability=(7, 0)))
    assert not marlin_repacks(at_load, Target(engine="vllm", gpu_gib=39.38,
                                              compute_capability=(8, 0)))
