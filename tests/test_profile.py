"""The host profile: the real no-GPU path here, and NVML's GPU path through a fake at the seam."""

from __future__ import annotations

import types
from typing import Any

import pytest

from advisor.hardware import cuda_total_gib
from advisor.profile import read_host

GIB = 2**30


def test_a_host_without_nvidia_driver_is_profiled_for_the_cpu_engine() -> None:
    # The real pynvml: this machine has no NVIDIA driver, so nvmlInit fails for real.
    host = read_host()
    assert host.gpus == []
    assert host.engine == "vllm-cpu"
    assert any("NVML" in n and "CPU engine" in n for n in host.notes)
    assert host.ram.total_gib > 0 and 0 < host.ram.available_gib <= host.ram.total_gib
    assert host.cpu.logical_cores >= 1
    assert host.disk.free_gib > 0


class FakeNvml(types.SimpleNamespace):
    """pynvml's surface, with one H100 and one call that fails as old drivers do."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_MEM = 2
    nvmlMemory_v2 = 2

    def __init__(self, failing: str = "") -> None:
        super().__init__()
        self.failing = failing
        self.shutdown = False

    def _maybe_fail(self, name: str) -> None:
        if name == self.failing:
            raise self.NVMLError("Not Supported")

    def nvmlInit(self) -> None:
        self._maybe_fail("init")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return "GPU-00000000-1111-2222-3333-444444444444"

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        if version:
            raise self.NVMLError("Function Not Found")
        total = int(79.65 * GIB)
        return types.SimpleNamespace(total=total, used=int(2.5 * GIB), free=total - int(2.5 * GIB))

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return (9, 0)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return types.SimpleNamespace(gpu=12, memory=3)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._maybe_fail("temperature")
        return 41

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 71_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return 700_000

    def nvmlDeviceGetMemoryBusWidth(self, h: int) -> int:
        return 5120

    def nvmlDeviceGetMaxClockInfo(self, h: int, clock: int) -> int:
        return 2619

    def nvmlDeviceGetMigMode(self, h: int) -> tuple[int, int]:
        return (0, 0)

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [types.SimpleNamespace(pid=999_999_999, usedGpuMemory=2 * GIB)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Any]:
        return []


def test_a_gpu_is_read_through_nvml_with_cuda_total_and_bandwidth() -> None:
    nvml = FakeNvml()
    host = read_host(nvml=nvml)  # type: ignore[arg-type]
    (gpu,) = host.gpus
    assert host.engine == "vllm"
    assert gpu.memory_total_gib == 79.65
    assert gpu.memory_cuda_gib == 79.19  # DESIGN.md: an H100 80GB HBM3 reads 79.19 GiB in CUDA
    assert gpu.memory_free_gib == pytest.approx(77.15, abs=0.01)
    assert gpu.compute_capability == "9.0" and gpu.cuda_version == "12.4"
    assert gpu.memory_bandwidth_gbps == pytest.approx(3352, rel=0.001)  # H100 SXM: 3.35 TB/s
    assert gpu.power_limit_w == 700.0 and gpu.mig_mode is False
    assert gpu.processes[0].used_memory_gib == 2.0 and gpu.processes[0].name == "?"
    assert nvml.shutdown


def test_one_failing_nvml_call_becomes_a_note_and_the_rest_is_read() -> None:
    host = read_host(nvml=FakeNvml(failing="temperature"))  # type: ignore[arg-type]
    assert host.gpus[0].temperature_c is None
    assert host.gpus[0].memory_total_gib == 79.65
    assert "GPU 0: could not read temperature (NVML: Not Supported)" in host.notes


def test_nvml_that_will_not_start_is_the_cpu_case_in_plain_words() -> None:
    host = read_host(nvml=FakeNvml(failing="init"))  # type: ignore[arg-type]
    assert host.gpus == [] and host.engine == "vllm-cpu"
    assert "NVML did not start (Not Supported)" in host.notes[0]


@pytest.mark.parametrize(("name", "nvml", "cuda"), [
    ("NVIDIA A100-SXM4-80GB", 80.00, 79.15),
    ("NVIDIA L4", 22.49, 22.16),
    ("Tesla T4", 15.00, 14.74),
    ("NVIDIA GeForce RTX 3060", 12.00, 11.63),
])
def test_cuda_total_follows_the_published_pairs(name: str, nvml: float, cuda: float) -> None:
    got, how = cuda_total_gib(name, int(nvml * GIB), None)
    assert got == pytest.approx(cuda, abs=0.01)
    assert "published" in how


def test_an_unknown_card_uses_the_reserved_figure_then_a_typical_ratio() -> None:
    assert cuda_total_gib("Mystery", 48 * GIB, GIB // 2)[0] == 47.5
    got, how = cuda_total_gib("Mystery", 48 * GIB, None)
    assert 46.5 < got < 48 and "estimate" in how
