"""The host profile: each GPU through NVML, CPU, RAM and disk through psutil.

The only importer of pynvml and psutil. No GPU, no driver, or one failing NVML call is a
normal case: the profile says so in `notes` and carries on with what it could read.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import psutil

from advisor.config import hf_cache_dir
from advisor.hardware import UNOWNED_NOTE_GIB, cuda_total_gib
from advisor.specs import CpuInfo, DiskInfo, GpuInfo, GpuProcess, HostProfile, RamInfo

GIB = 2**30
T = TypeVar("T")

# CPU flags the CPU engine's kernels care about.
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd")


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Reader:
    """Calls NVML, turning each failure into a note instead of an exception."""

    def __init__(self, nvml: ModuleType, notes: list[str], prefix: str) -> None:
        self.nvml, self.notes, self.prefix = nvml, notes, prefix

    def __call__(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except self.nvml.NVMLError as exc:
            self.notes.append(f"{self.prefix}could not read {what} (NVML: {exc})")
        except (AttributeError, TypeError) as exc:  # an older driver or binding lacks the call
            self.notes.append(f"{self.prefix}could not read {what} ({exc})")
        return None


def _gpu(nvml: ModuleType, index: int, driver: str | None, cuda: str | None) -> GpuInfo:
    notes: list[str] = []
    read = _Reader(nvml, notes, f"GPU {index}: ")
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(read("name", lambda: nvml.nvmlDeviceGetName(h)) or "unknown GPU")
    uuid = _text(read("UUID", lambda: nvml.nvmlDeviceGetUUID(h)) or "")
    mem = read("memory", lambda: nvml.nvmlDeviceGetMemoryInfo(h))
    reserved = None
    try:  # v2 memory info separates what the driver reserves
        v2 = nvml.nvmlDeviceGetMemoryInfo(h, version=nvml.nvmlMemory_v2)
        reserved = int(v2.reserved)
    except Exception:  # noqa: BLE001 - v2 is optional; v1 figures stand
        pass
    total = int(mem.total) if mem else 0
    cuda_gib, how = cuda_total_gib(name, total, reserved)
    if mem:
        notes.append(f"GPU {index}: CUDA's total memory derived from NVML's by the {how}")
    cc = read("compute capability", lambda: nvml.nvmlDeviceGetCudaComputeCapability(h))
    util = read("utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(h))
    temp = read("temperature", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
    power = read("power draw", lambda: nvml.nvmlDeviceGetPowerUsage(h))
    limit = read("power limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h))
    bus = read("memory bus width", lambda: nvml.nvmlDeviceGetMemoryBusWidth(h))
    clock = read("memory clock", lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM))
    mig = read("MIG mode", lambda: nvml.nvmlDeviceGetMigMode(h))
    nvlink = _nvlink(nvml, h)
    if nvlink is None:
        notes.append(f"GPU {index}: NVLink state unknown (NVML answers for no link); "
                     "planned as no NVLink")
    procs: list[GpuProcess] = []
    for kind, call in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                       ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        getter: Callable[[], list[Any]] = partial(getattr(nvml, call), h)
        found = read(f"{kind} processes", getter) or []
        for p in found:
            if any(q.pid == p.pid for q in procs):
                continue
            used = getattr(p, "usedGpuMemory", None)
            procs.append(GpuProcess(pid=int(p.pid), name=_process_name(int(p.pid)),
                                    used_memory_gib=_gib(used) if isinstance(used, int) else None))
    unowned = _unowned_gib(mem, procs, cuda_gib)
    if unowned is not None and unowned > UNOWNED_NOTE_GIB:
        notes.append(_unowned_note(index, unowned, cuda_gib))
    return GpuInfo(
        index=index,
        name=name,
        uuid=uuid,
        memory_total_gib=_gib(total),
        memory_cuda_gib=cuda_gib,
        memory_used_gib=_gib(int(mem.used)) if mem else 0.0,
        memory_free_gib=_gib(int(mem.free)) if mem else 0.0,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        driver_version=driver,
        cuda_version=cuda,
        utilization_gpu_pct=int(util.gpu) if util else None,
        utilization_memory_pct=int(util.memory) if util else None,
        temperature_c=int(temp) if temp is not None else None,
        power_draw_w=round(power / 1000, 1) if power is not None else None,
        power_limit_w=round(limit / 1000, 1) if limit is not None else None,
        memory_bus_width_bits=int(bus) if bus else None,
        memory_clock_mhz=int(clock) if clock else None,
        # double data rate: two transfers per clock, bus width in bits
        memory_bandwidth_gbps=round(clock * 2 * bus / 8 / 1000, 1) if bus and clock else None,
        mig_mode=bool(mig[0]) if mig else None,
        nvlink=nvlink,
        processes=procs,
        memory_unowned_gib=unowned,
        notes=notes,
    )


def _nvlink(nvml: ModuleType, h: Any) -> bool | None:
    """Whether any NVLink of the GPU is active (nvmlDeviceGetNvLinkState per link, up to
    NVML_NVLINK_MAX_LINKS); False when links answer and none is active, None when no link
    answers (a card without NVLink says Not Supported, as does an old driver)."""
    answered = False
    for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(h, link)
        except nvml.NVMLError:
            continue
        except (AttributeError, TypeError):  # a binding without the call
            return None
        answered = True
        if state == getattr(nvml, "NVML_FEATURE_ENABLED", 1):
            return True
    return False if answered else None


def _unowned_note(index: int, unowned: float, cuda_gib: float) -> str:
    return (f"GPU {index}: {unowned:.2f} GiB of GPU memory is held by no listed process "
            "(another container's processes NVML cannot name, memory a dead process left, or "
            "the driver's own); it is taken off the budget: vLLM starts only where free memory "
            "covers gpu_memory_utilization × the total, so a plan for this card counts on "
            f"{max(0.0, cuda_gib - unowned):.2f} GiB of its {cuda_gib:.2f}")


def _unowned_gib(mem: Any, procs: list[GpuProcess], cuda_gib: float) -> float | None:
    """Memory in use that no listed process owns: CUDA's total less NVML's free less what
    the listed processes hold. Not NVML's used less the processes: v1's used counts the
    driver's reservation, which CUDA's total (what vLLM and the budget read) already
    leaves out, and taking it off again would count it twice. None when one process's
    figure is missing (NVML gives none under some containers and vGPUs)."""
    if not mem or any(p.used_memory_gib is None for p in procs):
        return None
    owned = sum(p.used_memory_gib or 0.0 for p in procs)
    return round(max(0.0, cuda_gib - int(mem.free) / GIB - owned), 2)


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return "?"  # another container's process, or one that just exited


def read_gpus(nvml_module: ModuleType | None, notes: list[str]) -> list[GpuInfo]:
    if nvml_module is None:
        try:
            import pynvml
        except ImportError:
            notes.append("nvidia-ml-py is not installed: GPUs cannot be read")
            return []
        nvml_module = pynvml
    nvml: ModuleType = nvml_module
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        notes.append(f"No NVIDIA GPU can be used: NVML did not start ({exc}). "
                     "Planning for vLLM's CPU engine, with RAM as the memory budget.")
        return []
    gpus: list[GpuInfo] = []
    try:
        read = _Reader(nvml, notes, "")
        driver = read("the driver version", lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        cuda_raw = read("the CUDA version", nvml.nvmlSystemGetCudaDriverVersion_v2)
        cuda = f"{cuda_raw // 1000}.{cuda_raw % 1000 // 10}" if cuda_raw else None
        count = read("the GPU count", nvml.nvmlDeviceGetCount) or 0
        for i in range(count):
            try:
                gpu = _gpu(nvml, i, driver, cuda)
            except nvml.NVMLError as exc:
                notes.append(f"GPU {i}: could not be opened (NVML: {exc}); left out")
                continue
            notes.extend(gpu.notes)
            gpus.append(gpu)
        if count == 0:
            notes.append("NVML found no GPU: planning for vLLM's CPU engine.")
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    return gpus


def read_cpu() -> CpuInfo:
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    rate, how = measure_core_rate()
    return CpuInfo(
        model=model or "unknown CPU",
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        architecture=platform.machine(),
        flags=[f for f in _CPU_FLAGS if f in flags],
        core_rate_gops=rate, core_rate_method=how,
    )


# Memory bandwidth, measured: each thread copies its own buffer with libc's memmove
# (ctypes releases the GIL for the call, so the copies run in parallel), STREAM's "Copy"
# counting read plus written bytes. Buffers are far beyond any last-level cache. Other
# work on the host only ever slows a round, so the figure is the best of many rounds a
# short pause apart, as STREAM reports its best: the memory's, not the neighbours'.
_COPY_MIB = 64  # per thread; 2 × 64 MiB per thread is well past a 32 MiB L3
_COPY_ROUNDS = 12  # one thread (what a small host's engine decodes with); all: half
_COPY_PAUSE_S = 0.01
_COPY_MAX_THREADS = 16  # enough to saturate a socket's channels; bounds the memory used

_Buffers = list[tuple["ctypes.Array[ctypes.c_char]", "ctypes.Array[ctypes.c_char]"]]
_measured: dict[int, tuple[float, float, str]] = {}
_measuring = threading.Lock()  # one measurement at a time: concurrent requests wait for it


def _copy_rounds(start: threading.Barrier, done: threading.Barrier,
                 src: ctypes.Array[ctypes.c_char], dst: ctypes.Array[ctypes.c_char], size: int,
                 rounds: int) -> None:
    for _ in range(rounds):
        start.wait()
        ctypes.memmove(dst, src, size)
        done.wait()


def _one_core_gbps(src: ctypes.Array[ctypes.c_char], dst: ctypes.Array[ctypes.c_char],
                   size: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):  # in this thread: memmove lets go of the GIL while it copies
        t0 = time.perf_counter()
        ctypes.memmove(dst, src, size)
        best = max(best, 2 * size / (time.perf_counter() - t0) / 1e9)
        time.sleep(_COPY_PAUSE_S)
    return round(best, 1)


def _all_cores_gbps(bufs: _Buffers, size: int, rounds: int) -> float:
    start, done = threading.Barrier(len(bufs) + 1), threading.Barrier(len(bufs) + 1)
    workers = [threading.Thread(target=_copy_rounds, args=(start, done, src, dst, size, rounds),
                                daemon=True) for src, dst in bufs]
    for w in workers:
        w.start()
    best = 0.0
    for _ in range(rounds):
        start.wait()
        t0 = time.perf_counter()
        done.wait()
        best = max(best, 2 * size * len(bufs) / (time.perf_counter() - t0) / 1e9)
        time.sleep(_COPY_PAUSE_S)
    for w in workers:
        w.join()
    return round(best, 1)


def measure_bandwidth(cores: int) -> tuple[float, float, str]:
    """(all cores GB/s, one core GB/s, how): measured once per process, in well under a
    second on an idle host; callers that come while it runs wait for it."""
    with _measuring:
        if cores not in _measured:
            _measured[cores] = _measure(cores)
        return _measured[cores]


def _measure(cores: int) -> tuple[float, float, str]:
    threads = max(1, min(cores, _COPY_MAX_THREADS))
    size = _COPY_MIB * 2**20
    bufs = [(ctypes.create_string_buffer(size), ctypes.create_string_buffer(size))
            for _ in range(threads)]
    for src, dst in bufs:  # touch every page first: the page faults are not bandwidth
        ctypes.memmove(dst, src, size)
    one = _one_core_gbps(*bufs[0], size, _COPY_ROUNDS)
    every = max(one, _all_cores_gbps(bufs, size, _COPY_ROUNDS // 2)) if threads > 1 else one
    return every, one, (f"measured: memmove of {_COPY_MIB} MiB buffers on 1 and {threads} "
                        f"threads, read + written bytes, best of {_COPY_ROUNDS} and "
                        f"{_COPY_ROUNDS // 2} rounds (STREAM Copy)")


# Core speed, measured: the CPU engine's fixed costs per step (the scheduler, sampling,
# PyTorch's dispatch of each eager layer) and its 4-bit and INT8 kernels' arithmetic run at
# the speed of one core, not of the memory, and hosts differ in it by 2x and more (seen
# here: two VMs of one kind, 805 and 374 tokens/s for one overhead-bound model). The probe
# does on one core what those do: small numpy calls (a dispatch each) that unpack 4-bit
# weights, convert, scale and accumulate them in float32, inside the L2 cache. Best of
# rounds, as for the bandwidth: the core's speed, not its neighbours'.
_CORE_WEIGHTS = 16384  # 8 KiB of packed nibbles and 64 KiB of float32: inside any L2
_CORE_CALLS = 20  # unpack passes per round (about 1 ms)
# rounds back to back for this long: a shared host's speed moves over seconds (seen here:
# 1.0 and 1.7 G weights/s a few seconds apart), and a round after a sleep runs cold
_CORE_SPAN_S = 0.5
_core: list[tuple[float, str]] = []


def measure_core_rate() -> tuple[float, str]:
    """(G weights/s one core unpacks, scales and adds, how): measured once per process,
    in half a second."""
    with _measuring:
        if not _core:
            _core.append(_measure_core())
        return _core[0]


def _measure_core() -> tuple[float, str]:
    import numpy as np  # here, not at import: the profile's other readers don't need it

    packed = np.random.default_rng(0).integers(0, 256, _CORE_WEIGHTS // 2, dtype=np.uint8)
    nibble = np.empty_like(packed)
    weights = np.empty(packed.size, np.float32)
    acc = np.zeros(packed.size, np.float32)
    scale = np.float32(0.01)
    best, rounds, end = float("inf"), 0, time.perf_counter() + _CORE_SPAN_S
    while time.perf_counter() < end:
        rounds += 1
        t0 = time.perf_counter()
        for _ in range(_CORE_CALLS):
            for shift in (0, 4):  # the low nibble, then the high one
                np.right_shift(packed, shift, out=nibble)
                np.bitwise_and(nibble, 15, out=nibble)
                weights[:] = nibble
                np.multiply(weights, scale, out=weights)
                np.add(acc, weights, out=acc)
        best = min(best, time.perf_counter() - t0)
    rate = _CORE_CALLS * _CORE_WEIGHTS / best / 1e9
    return round(rate, 3), (f"measured: 4-bit unpack, scale and add of {_CORE_WEIGHTS:,} weights "
                            f"in numpy on one core, best of {rounds} rounds in {_CORE_SPAN_S:g} s")


def read_ram() -> RamInfo:
    vm = psutil.virtual_memory()
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count(logical=True) or 1
    every, one, how = measure_bandwidth(cores)
    return RamInfo(total_gib=_gib(vm.total), available_gib=_gib(vm.available),
                   bandwidth_gbps=every, bandwidth_per_core_gbps=one, bandwidth_method=how)


def read_disk(cache: Path) -> DiskInfo:
    path = cache
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = psutil.disk_usage(str(path))
    return DiskInfo(path=str(cache), total_gib=_gib(usage.total), free_gib=_gib(usage.free))


def read_host(nvml: ModuleType | None = None, env: Mapping[str, str] | None = None) -> HostProfile:
    """Everything the estimator needs to know about this machine; never raises for a missing GPU."""
    env = os.environ if env is None else env
    notes: list[str] = []
    gpus = read_gpus(nvml, notes)
    return HostProfile(
        gpus=gpus,
        cpu=read_cpu(),
        ram=read_ram(),
        disk=read_disk(hf_cache_dir(env)),
        notes=notes,
        engine="vllm" if gpus else "vllm-cpu",
    )


class EnergyMeter:
    """Joules the given GPUs drew over an interval: NVML's energy counter (millijoules since
    the driver loaded; Volta and newer), else power samples integrated over time (call
    `sample` every fraction of a second). Opens NVML for its own lifetime."""

    def __init__(self, indexes: list[int], nvml: ModuleType | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.indexes, self.clock = indexes, clock or time.monotonic
        self.nvml: Any = nvml
        self.handles: list[Any] = []
        self.why = ""  # why no figure, when none
        self.start_mj: list[int] | None = None
        self.samples: list[tuple[float, float]] = []  # (time, watts summed over the GPUs)
        if self.nvml is None:
            try:
                import pynvml
            except ImportError:
                self.why = "nvidia-ml-py is not installed"
                return
            self.nvml = pynvml
        try:
            self.nvml.nvmlInit()
            self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in indexes]
        except self.nvml.NVMLError as exc:
            self.why = f"NVML could not be read ({exc})"
            self.handles = []

    def _energy(self) -> list[int] | None:
        try:
            return [int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]
        except (self.nvml.NVMLError, AttributeError):  # pre-Volta, or an older binding
            return None

    def start(self) -> None:
        if not self.handles:
            return
        self.start_mj = self._energy()
        self.sample()

    def sample(self) -> None:
        if not self.handles or self.start_mj is not None:
            return  # the counter needs no samples
        try:
            watts = sum(self.nvml.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1000
        except self.nvml.NVMLError as exc:
            self.why = f"NVML's power draw could not be read ({exc})"
            return
        self.samples.append((self.clock(), watts))

    def stop(self) -> tuple[float | None, str]:
        """The joules since `start` and how they were read (or why there is no figure)."""
        try:
            if not self.handles:
                return None, self.why or "no GPU"
            if self.start_mj is not None:
                end = self._energy()
                if end is not None:
                    return round(sum(e - s for e, s in zip(end, self.start_mj, strict=True)) / 1000,
                                 1), "NVML energy counter"
            self.sample()
            if len(self.samples) < 2:
                return None, self.why or "too few power samples"
            joules = sum((t1 - t0) * (w0 + w1) / 2
                         for (t0, w0), (t1, w1) in zip(self.samples, self.samples[1:], strict=False))
            return round(joules, 1), f"NVML power samples ({len(self.samples)}, trapezoid)"
        finally:
            if self.handles:
                with contextlib.suppress(self.nvml.NVMLError):
                    self.nvml.nvmlShutdown()
                self.handles = []
