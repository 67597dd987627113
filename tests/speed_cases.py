"""Published vLLM speed measurements (tests/data/speed_measurements.toml) as roofline cases.

Shared by tests/test_speed.py and bench/speed.py. `FIT` entries set the constants in
advisor/speed.py; the rest check them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.catalog import load_catalog, load_gpus
from advisor.estimate import kv_bytes_per_token, weights_bytes_per_gpu
from advisor.hardware import find_gpu
from advisor.plan import checkpoint_for
from advisor.speed import Roofline, decode_step_s, ttft_s
from advisor.weights import active_param_count

DATA = Path(__file__).parent / "data" / "speed_measurements.toml"
# same shapes as a catalog model
ALIASES = {"meta-llama/Meta-Llama-3-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
           "casperhansen/llama-3-8b-instruct-awq": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
           "Qwen/Qwen3-4B-Instruct-2507": "Qwen/Qwen3-4B"}
# Qwen2.5-0.5B and 7B on the A100 (vLLM 0.6.3): the per-layer cost and the bandwidth share;
# Qwen3-8B bf16 on the H100 (vLLM 0.30; one run, read as ITL and as tokens/s): the newer
# engines' per-layer cost
FIT = {0, 3, 10, 11}


@dataclass
class SpeedCase:
    index: int
    raw: dict[str, Any]
    predicted: float | None
    measured: float
    unit: str
    skip: str = ""

    @property
    def split(self) -> str:
        return "fit" if self.index in FIT else "check"

    @property
    def error(self) -> float:
        assert self.predicted is not None
        return (self.predicted - self.measured) / self.measured


def load_speed_cases() -> list[SpeedCase]:
    catalog = load_catalog()
    gpus = load_gpus()
    out = []
    for i, raw in enumerate(tomllib.loads(DATA.read_text())["measurement"]):
        metric, value = raw["metric"], float(raw["value"])
        unit = "ms" if metric == "ttft_ms" else "tok/s"
        measured = value if metric in ("decode_tokens_per_s", "ttft_ms") else 1000 / value
        case = SpeedCase(i, raw, None, measured, unit)
        out.append(case)
        repo = ALIASES.get(raw["model"], raw["model"])
        hit = catalog.by_repo(repo)
        spec = find_gpu(gpus, raw["gpu"])
        if not hit:
            case.skip = f"{raw['model']} is not in the catalog"
            continue
        if not spec:
            case.skip = f"{raw['gpu']} is not in the GPU table"
            continue
        if raw.get("concurrency", 1) != 1:
            case.skip = "concurrency above 1"
            continue
        model, ckpts = hit
        ckpt = ckpts[0]
        if raw["quant"] != "none" and ckpt.quant == "none":
            found = checkpoint_for(model, raw["quant"])
            if not found:
                case.skip = f"no {raw['quant']} checkpoint"
                continue
            ckpt = found
        tp = int(raw.get("tp", 1))
        hw = Roofline(spec.bandwidth_gbps, spec.bf16_tflops or None)
        kv = kv_bytes_per_token(model.arch, 2, tp)
        context = int(raw.get("input_tokens") or 0) + int(raw.get("output_tokens") or 0) // 2
        major, minor = (int(x) for x in str(raw["vllm_version"]).split(".")[:2])
        step = decode_step_s(weights_bytes_per_gpu(ckpt, tp), kv, model.arch.layers, hw, 1,
                             active_param_count(model.arch), tp, context=context,
                             version=(major, minor))
        if metric == "ttft_ms":
            t = ttft_s(active_param_count(model.arch), tp, hw, step,
                       prompt_tokens=int(raw.get("input_tokens") or 0))
            if t is None or not raw.get("input_tokens"):
                case.skip = "no sourced tensor throughput or prompt length"
                continue
            case.predicted = t * 1000
        else:
            case.predicted = 1 / step
    return out
