"""NVML at its seam (the fake of tests/test_profile.py): the energy a load test drew, and
GPU memory that no listed process owns."""

from __future__ import annotations

import types
from typing import Any

from test_profile import FakeNvml

from advisor.profile import EnergyMeter, read_host

GIB = 2**30


class EnergyNvml(FakeNvml):
    """NVML with an energy counter (millijoules since the driver loaded) that a test advances."""

    def __init__(self, counter: bool = True) -> None:
        super().__init__()
        self.mj, self.watts, self.counter = 1_000_000, 200.0, counter

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.counter:
            raise self.NVMLError("Not Supported")
        return self.mj

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return int(self.watts * 1000)


def test_energy_comes_from_nvmls_counter_over_the_load_test() -> None:
    nvml = EnergyNvml()
    meter = EnergyMeter([0], nvml=nvml)  # type: ignore[arg-type]
    meter.start()
    nvml.mj += 4_500_000  # 4.5 kJ drawn while it ran
    meter.sample()
    assert meter.stop() == (4500.0, "NVML energy counter")
    assert nvml.shutdown


def test_energy_falls_back_to_sampled_power_where_the_counter_is_not_supported() -> None:
    nvml, now = EnergyNvml(counter=False), [0.0]
    meter = EnergyMeter([0], nvml=nvml, clock=lambda: now[0])  # type: ignore[arg-type]
    meter.start()  # 200 W at t=0
    now[0], nvml.watts = 10.0, 300.0
    meter.sample()
    now[0] = 20.0
    joules, how = meter.stop()  # 300 W at t=20: the trapezoid gives 2500 + 3000
    assert joules == 5500.0 and how.startswith("NVML power samples (3")


class HiddenNvml(FakeNvml):
    """A card with 6 GiB used of which its one listed process holds 2."""

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        if version:
            raise self.NVMLError("Function Not Found")
        total = int(79.65 * GIB)
        return types.SimpleNamespace(total=total, used=6 * GIB, free=total - 6 * GIB)


def test_gpu_memory_no_listed_process_owns_is_shown_with_a_note() -> None:
    host = read_host(nvml=HiddenNvml())  # type: ignore[arg-type]
    gpu = host.gpus[0]
    assert gpu.memory_unowned_gib == 4.0
    (note,) = [n for n in host.notes if "no listed process owns" in n]
    assert "4.00 GiB" in note and "75.19 GiB of its 79.19" in note
    # the plain fake: 2.5 GiB used, 2 of them listed, 0.5 left: the driver's share, no note
    plain = read_host(nvml=FakeNvml())  # type: ignore[arg-type]
    assert plain.gpus[0].memory_unowned_gib == 0.5
    assert not [n for n in plain.notes if "no listed process owns" in n]
