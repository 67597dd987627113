"""Read a vLLM engine's log: the figures it prints at start-up, its phases, and its failures.

Pure: one line in, what it says out. The patterns are the lines vLLM 0.6 to 0.32 print
(examples in tests/data/vllm_logs/); the log tail is kept verbatim elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUM = r"([0-9][0-9,]*\.?[0-9]*)"


def _f(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass
class Measured:
    """The start-up figures one engine printed (None where it printed nothing)."""

    weights_gib: float | None = None
    activation_gib: float | None = None
    non_torch_gib: float | None = None
    cuda_graph_gib: float | None = None
    cuda_graph_estimate_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_model_len: int | None = None
    max_concurrency: float | None = None
    total_gib: float | None = None
    consumed_gib: float | None = None  # weights + non-torch, as 0.26+ prints them together
    requested_gib: float | None = None
    auto_fit_from: int | None = None
    version: str | None = None
    compile_s: float | None = None  # "torch.compile took … s in total"
    # whether vLLM's compile cache held the graphs: True where it loaded them and compiled
    # none ("Directly load the compiled graph(s) …"), False where it compiled one
    compile_cache_hit: bool | None = None
    gpu_mem_util: float | None = None  # "Desired GPU memory utilization is (0.92, …)"

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Failure:
    kind: str  # kv_too_small, no_kv_memory, free_below_reservation, oom, gated, missing_repo, …
    line: str
    suggested_max_model_len: int | None = None


PHASES: list[tuple[re.Pattern[str], str]] = [
    # the first lines of any start: before them a launch shows the bare state
    # (0.32 prints its version inside an ASCII-art banner: "█  version 0.32.0")
    (re.compile(r"vLLM API server version|█\s+version \d|Initializing a V1 LLM engine"
                r"|non-default args"),
     "initializing"),
    # huggingface_hub's "Fetching 4 files", vLLM's own download lines; never the engine
    # config's `download_dir=None`, which every start prints
    (re.compile(r"\bDownloading\b|Fetching \d+ files|Downloaded .* in [0-9.]+ ?s"), "downloading"),
    (re.compile(r"Starting to load model|Loading weights|Loading safetensors"), "loading_weights"),
    (re.compile(r"Memory profiling|profile_run|Model loading took"), "profiling"),
    (re.compile(r"KV cache size|Available KV cache memory|for KV cache on node"),
     "allocating_kv_cache"),
    (re.compile(r"Capturing CUDA graph|Capturing cudagraphs|Graph capturing"), "capturing_graphs"),
    # torch.compile at work: not the lines that say it is off ("disabling torch.compile",
    # "compilation was disabled"), nor the config dump that names compilation_config
    (re.compile(r"Dynamo bytecode transform|Compiling a graph|Start compiling|"
                r"for vLLM's torch\.compile|torch\.compile take"), "compiling"),
]
_NOT_A_PHASE = re.compile(r"disabl|compilation_config=|download_dir=")
READY = re.compile(r"Application startup complete|Uvicorn running on")

_FIGURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"Model loading took " + _NUM + r" ?GiB"), "weights_gib"),
    (re.compile(r"model weights take " + _NUM + r" ?GiB"), "weights_gib"),
    (re.compile(r"non_torch_memory takes " + _NUM + r" ?GiB"), "non_torch_gib"),
    (re.compile(r"PyTorch activation peak memory takes " + _NUM + r" ?GiB"), "activation_gib"),
    (re.compile(r"the rest of the memory reserved for KV Cache is " + _NUM + r" ?GiB"),
     "kv_cache_gib"),
    (re.compile(r"Actual usage is " + _NUM + r" GiB for weight, " + _NUM
                + r" GiB for peak activation, " + _NUM + r" GiB for non-torch memory"),
     "usage"),
    (re.compile(r"Available KV cache memory: " + _NUM + r" ?GiB"), "kv_cache_gib"),
    (re.compile(r"Explicitly set \(" + _NUM + r"/" + _NUM + r"\) GiB for KV cache"), "cpu_kv"),
    (re.compile(r"(?:GPU|CPU|XPU|TPU) KV cache size: " + _NUM + " tokens"), "kv_cache_tokens"),
    (re.compile(r"Maximum concurrency for " + _NUM + r" tokens per request: " + _NUM + "x"),
     "concurrency"),
    (re.compile(r"Graph capturing finished in \d+ secs?, took " + _NUM + r" ?GiB"), "cuda_graph_gib"),
    (re.compile(r"Estimated CUDA graph memory: " + _NUM + r" GiB"), "cuda_graph_estimate_gib"),
    (re.compile(r"Auto-fit max_model_len: reduced from " + _NUM + " to " + _NUM), "autofit"),
    (re.compile(r"Auto-fit max_model_len: full model context length " + _NUM), "autofit_full"),
    (re.compile(r"total_gpu_memory \(" + _NUM + r" ?GiB\) x gpu_memory_utilization \(" + _NUM
                + r"\) = " + _NUM), "reservation"),
    (re.compile(r"Requested memory: [0-9.]+ \(util\), " + _NUM + " GiB"), "requested_gib"),
    (re.compile(r"total_memory=" + _NUM + "GiB"), "total_gib"),
    # the engine's line, the API server's (before 0.11), and the banner's (0.11 on:
    # "█ ▀▄▀ █  version 0.27.1")
    (re.compile(r"V1 LLM engine \(v([0-9][^)]*)\)|vLLM API server version ([0-9][^\s]*)"
                r"|█\s+version v?([0-9][^\s]*)"), "version"),
    # 0.26+: the breakdown vLLM prints beside its --kv-cache-memory-bytes hint
    (re.compile(r"Actual usage is " + _NUM + r" GiB for consumed memory \(weights \+ non-torch\), "
                + _NUM + r" GiB for peak activation, and " + _NUM + r" GiB for CUDAGraph memory"),
     "usage_consumed"),
    (re.compile(r"Free memory on device \(" + _NUM + r"/" + _NUM + r" GiB\) on startup"), "free_total"),
    (re.compile(r"Desired GPU memory utilization is \(" + _NUM + r","), "gpu_mem_util"),
    (re.compile(r"CUDA graph pool memory: " + _NUM + r" GiB \(actual\), " + _NUM
                + r" GiB \(estimated\)"), "graph_pool"),
    # how long torch.compile took: seconds on a cold cache, under one on a warm one
    # ("takes" before 0.12)
    (re.compile(r"torch\.compile t(?:ook|akes) " + _NUM + r" ?s in total"), "compile_s"),
    # the same total on the engine's init line, where a run skipped the line above
    # ("init engine (profile, create kv cache, warmup model) took 4.68 s (compilation: 0.11 s)")
    (re.compile(r"\(compilation: " + _NUM + r" ?s\)"), "compile_s_init"),
    # the compile cache, said outright: a hit can take seconds (graphs read from disk), so
    # these outrank the total's length (compilation/backends.py, decorators.py)
    (re.compile(r"Directly load (?:the compiled graph\(s\)|AOT compilation)"), "compile_hit"),
    (re.compile(r"Compiling a graph for (?:dynamic shape|compile range|shape)"), "compile_miss"),
]

_FAILURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"To serve at least one request with the model's max seq len"), "kv_too_small"),
    (re.compile(r"No available memory for the cache blocks|Cannot auto-fit max_model_len"),
     "no_kv_memory"),
    (re.compile(r"is less than desired (?:GPU|CPU) memory utilization"), "free_below_reservation"),
    (re.compile(r"CUDA out of memory|OutOfMemoryError|Cannot allocate memory"), "oom"),
    (re.compile(r"GatedRepoError|gated repo|Access to model .* is restricted"), "gated"),
    (re.compile(r"RepositoryNotFoundError|is not a local folder and is not a valid model identifier"
                r"|Repository Not Found|does not appear to have a file named config.json"),
     "missing_repo"),
    (re.compile(r"Model architectures? \[.*\] (?:are|is) not supported|not supported for now"
                r"|No model architectures are specified"),
     "unsupported_architecture"),
    (re.compile(r"Address already in use|\[Errno 98\]"), "port_taken"),
    # no network for a download: huggingface_hub's offline and connection errors
    (re.compile(r"couldn't connect to 'https://huggingface\.co'|LocalEntryNotFoundError:"
                r"|outgoing traffic has been disabled|Temporary failure in name "
                r"resolution|Network is unreachable|Max retries exceeded with url"), "offline"),
    # argparse's own refusal of the command line (exit code 2): the line names the flag
    (re.compile(r": error: (?:argument |unrecognized arguments|the following arguments)"),
     "bad_argument"),
    (re.compile(r"EngineCore encountered an issue|Engine core initialization failed"
                r"|EngineDeadError|EngineCore failed to start"), "engine_died"),
]
_SUGGESTED = re.compile(r"estimated maximum model length is " + _NUM)


def read_figure(line: str, into: Measured) -> bool:
    """Update `into` with the figures this line prints; True if it printed one (0.26+
    prints several on one line)."""
    found = False
    for pattern, name in _FIGURES:
        m = pattern.search(line)
        if not m:
            continue
        found = True
        g = m.groups()
        if name == "usage":
            into.weights_gib, into.activation_gib, into.non_torch_gib = _f(g[0]), _f(g[1]), _f(g[2])
        elif name == "usage_consumed":
            # peak activation as printed includes the CUDA-graph estimate it applied; the
            # third figure is the graphs as captured (gpu_worker.py::compile_or_warm_up_model)
            into.consumed_gib, into.activation_gib = _f(g[0]), _f(g[1])
            into.cuda_graph_gib = _f(g[2])
        elif name == "graph_pool":
            into.cuda_graph_gib, into.cuda_graph_estimate_gib = _f(g[0]), _f(g[1])
        elif name == "compile_s":
            into.compile_s = _f(g[0])
        elif name == "gpu_mem_util":
            into.gpu_mem_util = _f(g[0])
        elif name == "compile_s_init":
            if into.compile_s is None:
                into.compile_s = _f(g[0])
        elif name == "compile_hit":
            if into.compile_cache_hit is None:
                into.compile_cache_hit = True
        elif name == "compile_miss":  # one graph compiled: Inductor ran, whatever else loaded
            into.compile_cache_hit = False
        elif name == "free_total":
            into.total_gib = _f(g[1])
        elif name == "cpu_kv":
            into.kv_cache_gib, into.total_gib = _f(g[0]), _f(g[1])
        elif name == "kv_cache_tokens":
            into.kv_cache_tokens = int(_f(g[0]))
            extra = _FIGURES[9][0].search(line)  # 0.32 prints concurrency on the same line
            if extra:
                into.max_model_len, into.max_concurrency = int(_f(extra[1])), _f(extra[2])
        elif name == "concurrency":
            into.max_model_len, into.max_concurrency = int(_f(g[0])), _f(g[1])
        elif name == "autofit":
            into.auto_fit_from, into.max_model_len = int(_f(g[0])), int(_f(g[1]))
        elif name == "autofit_full":
            into.max_model_len = int(_f(g[0]))
        elif name == "reservation":
            into.total_gib, into.requested_gib = _f(g[0]), _f(g[2])
        elif name == "version":
            into.version = g[0] or g[1] or g[2]
        elif name in ("requested_gib", "total_gib"):
            if getattr(into, name) is None:
                setattr(into, name, _f(g[0]))
        else:
            setattr(into, name, _f(g[0]))
    return found


def read_failure(line: str) -> Failure | None:
    for pattern, kind in _FAILURES:
        if pattern.search(line):
            m = _SUGGESTED.search(line)
            return Failure(kind=kind, line=line.strip()[-600:],
                           suggested_max_model_len=int(_f(m[1])) if m else None)
    return None


def read_phase(line: str) -> str | None:
    """The start-up phase a line announces, 'ready' when serving, or None."""
    if READY.search(line):
        return "ready"
    if _NOT_A_PHASE.search(line):
        return None
    for pattern, phase in PHASES:
        if pattern.search(line):
            return phase
    return None


@dataclass
class LogSummary:
    measured: Measured = field(default_factory=Measured)
    failures: list[Failure] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)


def summarize(lines: list[str]) -> LogSummary:
    out = LogSummary()
    for line in lines:
        read_figure(line, out.measured)
        failure = read_failure(line)
        if failure:
            out.failures.append(failure)
        phase = read_phase(line)
        if phase and (not out.phases or out.phases[-1] != phase):
            out.phases.append(phase)
    return out


# "INFO 12-02 04:25:48 [core.py:133] …": vLLM's month-day and time on every line it logs
_STAMP = re.compile(r"\b(?:INFO|WARNING|ERROR|DEBUG) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)")


def stamp_s(line: str) -> int | None:
    """The line's time as seconds into its year (vLLM prints no year), or None."""
    m = _STAMP.search(line)
    if not m:
        return None
    month, day, h, mi, sec = (int(x) for x in m.groups())
    return (((month * 31 + day) * 24 + h) * 60 + mi) * 60 + sec


@dataclass
class PhaseSpan:
    phase: str
    started_s: float  # seconds after the log's first timestamped line
    took_s: float | None  # None for the phase still running


def phase_spans(lines: list[str]) -> list[PhaseSpan]:
    """The start-up phases in order, each with when it began and how long it took, by the
    timestamps vLLM prints. A phase seen again later (a second compile) is a new span."""
    spans: list[PhaseSpan] = []
    first = last = None
    for line in lines:
        t = stamp_s(line)
        if t is not None:
            first = t if first is None else first
            last = t
        phase = read_phase(line)
        if phase and (not spans or spans[-1].phase != phase) and first is not None:
            at = float((t if t is not None else last or first) - first)
            if spans:
                spans[-1].took_s = at - spans[-1].started_s
            spans.append(PhaseSpan(phase=phase, started_s=at, took_s=None))
        if phase == "ready":
            spans[-1].took_s = 0.0
            break
    return spans


# the advisor's own probes of the engine, which fill its access log every second
_PROBE = re.compile(r'"(?:GET|HEAD) /(?:health|metrics|v1/models|ping|version)\b[^"]*" \d{3}')


def is_probe(line: str) -> bool:
    return bool(_PROBE.search(line))
