"""NVML at its seam (the fake of tests/test_profile.py): the energy a load test drew, and
GPU memory that no listed process owns."""

from __future__ import annotations

import re
import types
from typing import Any

import msgspec
from test_profile import FakeNvml

from advisor.profile import EnergyMeter, read_host
from advisor.specs import PlanRequest

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
    """An H100 with `used` GiB in use (NVML v1: the driver's reservation counted in it) of
    which its one listed process holds 2."""

    def __init__(self, used: float = 6.0) -> None:
        super().__init__()
        self.used = used

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        if version:
            raise self.NVMLError("Function Not Found")
        total = int(79.65 * GIB)
        return types.SimpleNamespace(total=total, used=int(self.used * GIB),
                                     free=total - int(self.used * GIB))


def test_gpu_memory_no_listed_process_owns_is_shown_with_a_note() -> None:
    host = read_host(nvml=HiddenNvml())  # type: ignore[arg-type]
    gpu = host.gpus[0]
    # 6 GiB used, 2 listed; of the other 4, the 0.46 GiB by which NVML's total (79.65)
    # exceeds CUDA's (79.19, the published pair) is the driver's reservation: CUDA's total
    # already lacks it, so it is not counted again
    assert gpu.memory_unowned_gib == 3.54
    (note,) = [n for n in host.notes if "held by no listed process" in n]
    assert "3.54 GiB" in note and "taken off the budget" in note
    assert "75.65 GiB of its 79.19" in note
    # the plain fake: 2.5 GiB used, 2 of them listed, the rest the reservation: no note
    plain = read_host(nvml=FakeNvml())  # type: ignore[arg-type]
    assert plain.gpus[0].memory_unowned_gib == 0.04
    assert not [n for n in plain.notes if "held by no listed process" in n]


class ReservedNvml(HiddenNvml):
    """A card outside the published pairs whose NVML v2 names the driver's reservation."""

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        total, reserved = int(143.77 * GIB), int(0.56 * GIB)
        used = int(self.used * GIB)  # v1: the reservation inside
        if version:
            return types.SimpleNamespace(total=total, reserved=reserved, used=used - reserved,
                                         free=total - used)
        return types.SimpleNamespace(total=total, used=used, free=total - used)


def test_the_unowned_figure_leaves_out_the_reservation_v2_names() -> None:
    host = read_host(nvml=ReservedNvml(used=0.56 + 2 + 20))  # type: ignore[arg-type]
    gpu = host.gpus[0]
    assert gpu.memory_cuda_gib == 143.21
    assert gpu.memory_unowned_gib == 20.0


# ---------------------------------------------------------------- the budget


def _h100_with(unowned: float) -> Any:
    """The profile of an H100 on which `unowned` GiB is held by no listed process, read
    through the NVML seam (its one listed process holds 2, the reservation 0.46)."""
    return read_host(nvml=HiddenNvml(used=unowned + 2 + 0.46))  # type: ignore[arg-type]


def test_a_recommendation_takes_unowned_memory_off_the_budget() -> None:
    from advisor.advice import estimate_for, recommend_for
    from advisor.catalog import load_catalog, load_gpus
    from advisor.cli import render_estimate

    cat, gpus = load_catalog(), load_gpus()
    host = _h100_with(12.0)
    assert host.gpus[0].memory_unowned_gib == 12.0
    req = PlanRequest(model="llama-3.1-8b")
    # vLLM asks 0.9 × 79.19 = 71.27 GiB free at start (request_memory); stopping the listed
    # process leaves 79.19 − 12 = 67.19 free, so it would refuse, whatever runs here stops
    est = estimate_for(req, cat, host, gpus)
    assert not est.fits
    assert "only 67.19 GiB of the card's 79.19 is there to reserve (12.00 GiB is held by no " \
           "listed process)" in est.reason
    assert "--gpu-memory-utilization 0.84 (what the memory no listed process holds leaves)" \
        in est.reason
    (note,) = est.notes
    assert note.startswith("GPU 0: 12.00 GiB") and "taken off the budget" in note
    assert f"  note: {note}" in render_estimate(est).splitlines()
    lower = estimate_for(msgspec.structs.replace(req, gpu_mem_util=0.84), cat, host, gpus)
    assert lower.fits and lower.notes == [note]
    # the same card with nothing unowned: the card's budget, no note
    clean = estimate_for(req, cat, _h100_with(0.0), gpus)
    assert clean.fits and not clean.notes
    rec = recommend_for(PlanRequest(use_case="chat"), cat, host, gpus)
    assert all(r.estimate.notes == [note] for r in rec.results)
    assert not any(r.fits for r in rec.results if r.estimate.gpu_mem_util == 0.9)


def test_a_launch_checks_nvmls_free_which_already_leaves_unowned_memory_out() -> None:
    from advisor.advice import estimate_for
    from advisor.catalog import load_catalog, load_gpus

    cat, gpus = load_catalog(), load_gpus()
    host = _h100_with(12.0)
    assert host.gpus[0].memory_free_gib == 65.19  # 79.65 − 14.46 used
    # 0.8 × 79.19 = 63.35 GiB, + 0.5 for the CUDA context, is within the 65.19 free now;
    # taking the 12 GiB off that free figure again (53.19) would refuse it
    req = PlanRequest(model="llama-3.1-8b", gpu_mem_util=0.8)
    est = estimate_for(req, cat, host, gpus, check_free=True)
    assert est.fits, est.reason
    (note,) = est.notes
    assert "outside the free memory this plan is checked against" in note
    over = estimate_for(msgspec.structs.replace(req, gpu_mem_util=0.85), cat, host, gpus,
                        check_free=True)
    assert "only 65.19 GiB is free on the GPU" in over.reason


def test_the_api_and_the_profile_page_say_the_unowned_memory_is_taken_off() -> None:
    from litestar.testing import TestClient

    from advisor.config import load_settings
    from advisor.web.app import create_app

    with TestClient(app=create_app(load_settings(), profiler=lambda: _h100_with(12.0))) as c:
        body = c.post("/api/recommend", json={"use_case": "chat", "gpu_mem_util": 0.84}).json()
        first = body["results"][0]
        assert first["fits"], first["reasons"]
        assert first["estimate"]["notes"][0].startswith("GPU 0: 12.00 GiB of GPU memory is held")
        assert body["host"]["gpus"][0]["memory_unowned_gib"] == 12.0
        asked = c.post("/api/recommend", json={"use_case": "chat"}).json()["results"]
        assert not asked[0]["fits"] and "held by no listed process" in asked[0]["estimate"]["reason"]
        page = c.get("/").text
        assert "12.00 GiB of GPU memory is held by no listed process; it is taken off the " \
               "budget" in page
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page)
        assert token
        ranked = c.post("/", data={"_csrf_token": token[1], "use_case": "chat"})
        assert ranked.status_code == 200, ranked.text
        assert ranked.text.count("GPU 0: 12.00 GiB of GPU memory is held by no listed process; "
                                 "it is taken off the budget") == 1
