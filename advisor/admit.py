"""Admission: plan a launch against the memory free now, less what launches still loading hold.

Engines that are pending or starting have not taken their memory yet, so NVML (or the
free RAM) does not show it: it is counted as taken here. A refusal names the estimator's
reason, and a checkpoint to download must fit on the disk that holds the Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from advisor.advice import Plan, plan_for
from advisor.catalog import Catalog
from advisor.errors import AdvisorError
from advisor.estimate import CPU_PROCESS_OVERHEAD_GIB
from advisor.history import LoadTest, Measurement
from advisor.specs import Deployment, GpuInfo, GpuSpec, HostProfile, PlanRequest

GIB = 2**30


class Refused(AdvisorError):
    """A launch that will not fit in the memory free now (HTTP 422)."""


def admit(req: PlanRequest, host: HostProfile, active: list[Deployment], catalog: Catalog,
          gpus: list[GpuSpec], history: tuple[Measurement, ...], hf_cache: Path, *,
          tests: tuple[LoadTest, ...] = ()) -> Plan:
    """The plan a launch starts, against the memory free now; `tests`: this host's load
    tests, which calibrate its decode speed (advisor.calibrate)."""
    loading = [d for d in active if d.state in ("pending", "starting")]
    held = sum(d.reserved_gib for d in loading)
    if req.gpus == 0 or not host.gpus:
        budget = host.ram.available_gib - held
        req = msgspec.structs.replace(req, gpus=0, ram_gib=min(req.ram_gib or budget, budget))
    else:
        # per GPU: a launch pinned to GPUs holds its reservation on each of them; one
        # recorded without its GPUs (an older record, the CPU engine's RAM) on every GPU
        def on(g: GpuInfo) -> float:
            return sum(d.reserved_gib for d in loading
                       if d.engine != "vllm-cpu" and (not d.gpus or g.index in d.gpus))
        free = [msgspec.structs.replace(g, memory_free_gib=g.memory_free_gib - on(g))
                for g in host.gpus]
        host = msgspec.structs.replace(host, gpus=free)
    chosen = plan_for(req, catalog, host, gpus, check_free=True, history=history, tests=tests)
    if not chosen.estimate.fits:
        raise Refused(f"will not fit in the memory free now: {chosen.estimate.reason}")
    if chosen.ckpt.quant == "gguf" and not chosen.ckpt.tokenizer:
        # served through vllm-gguf-plugin with its base repo's tokenizer (launch.gguf_flags)
        raise Refused(f"{chosen.ckpt.repo}: no base repo for its tokenizer: "
                      f"{chosen.ckpt.tokenizer_source}; a GGUF file converted with its source "
                      "named (general.source.repo_url or general.base_model.0.repo_url) is served")
    _check_disk(chosen.ckpt.repo, chosen.ckpt.weight_bytes, host, hf_cache)
    return chosen


def reserved_gib(chosen: Plan) -> float:
    """What this launch holds against others until it has taken its memory."""
    est = chosen.estimate
    if est.engine == "vllm-cpu":
        # the pool is VLLM_CPU_KVCACHE_SPACE, or under --kv-cache-memory-bytes (no space
        # set) the pool as given
        pool = est.cpu_kv_space_gib if est.cpu_kv_space_gib is not None else est.kv_cache_gib
        return round(est.weights_gib + pool + CPU_PROCESS_OVERHEAD_GIB, 2)
    return round(est.reservation_gib, 2)


def _check_disk(repo: str, weight_bytes: int, host: HostProfile, hf_cache: Path) -> None:
    if Path(repo).is_dir() or Path(repo).is_file():
        return  # a local folder or GGUF file: nothing to download beyond a tokenizer
    cached = hf_cache / ("models--" + repo.replace("/", "--"))
    need = weight_bytes / GIB * 1.05  # a little for the tokenizer and configs
    if not cached.exists() and host.disk.free_gib < need:
        raise Refused(f"the download of {repo} needs {need:.1f} GiB; {host.disk.free_gib:.1f} GiB "
                      f"is free at {host.disk.path}")
