"""Domain types, shared by the catalog, the JSON API, the CLI's --json and the templates.

No I/O here. Units are in the field names: `_gib` is 2**30 bytes, `_b` is billions.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

UseCase = Literal["code", "math", "chat", "edge", "long-context", "multilingual"]
USE_CASES: tuple[str, ...] = ("code", "math", "chat", "edge", "long-context", "multilingual")

# vLLM's --quantization names that the catalog knows, plus "none" for the plain checkpoint
# and "gguf" for a GGUF file named by path (the catalog lists none).
Quant = Literal["none", "awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes", "gguf"]
QUANTS: tuple[str, ...] = ("none", "awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes")


# --------------------------------------------------------------------------- catalog


class Architecture(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True,
                   cache_hash=True):  # a key of the estimator's caches
    """The figures from a checkpoint's config.json that memory depends on."""

    architecture: str  # config.json "architectures"[0], e.g. "Qwen2ForCausalLM"
    layers: int  # num_hidden_layers
    hidden_size: int
    intermediate_size: int
    attention_heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int
    vocab_size: int
    tied_embeddings: bool  # tie_word_embeddings
    native_context: int  # max_position_embeddings (or the card's stated context where it differs)
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v
    qk_norm: bool = False  # Qwen3 and Gemma 3 normalise q and k per head
    norms_per_layer: int = 2  # Gemma 2/3 add pre/post feed-forward norms: 4
    # Sliding-window attention: the window in tokens and which layers use it.
    # `sliding_window_pattern` N means every Nth layer is global (Gemma 2: 2, Gemma 3: 6);
    # 1 means all layers slide (Mistral 7B v0.1); 0 means no sliding window.
    sliding_window: int = 0
    sliding_window_pattern: int = 0
    experts: int = 0  # MoE: routed experts per layer (0 for dense)
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    # Parameters outside the language model that the checkpoint still stores (a vision tower).
    extra_params: int = 0
    extra_params_note: str = ""
    # A multimodal tower that vLLM's start-up profiles (gpu_model_runner.py::profile_run): its
    # width, MLP width and positions per item (patches of one image), and the tokens one item
    # becomes in the language model (config.json's vision_config and mm_tokens_per_image).
    mm_encoder_hidden: int = 0
    mm_encoder_intermediate: int = 0
    mm_encoder_positions: int = 0
    mm_tokens_per_item: int = 0
    torch_dtype: str = "bfloat16"
    source: str  # where these figures were read (the config.json's address)


class Score(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One published benchmark figure with its source and the setting it was measured in.

    Figures are compared only within one evidence set: the same harness (who ran it, in
    which table or leaderboard), benchmark, metric, shots, tuning and reasoning mode.
    """

    benchmark: str  # e.g. "MMLU-Pro", "HumanEval", "IFEval", "MGSM", "RULER", "Arena Elo"
    value: float  # percent as published; a rating (metric "Elo ...") as published
    source: str  # the address it was read from
    harness: str = ""  # who ran it: "Qwen2.5 blog, instruction-tuned model tables"; required
    metric: str = ""  # "pass@1", "strict-prompt", "0-shot CoT", "Elo (elo_rating_final)"
    shots: int | None = None  # None: the source does not say
    tuned: Literal["instruct", "base"] = "instruct"
    reasoning: Literal["off", "on"] = "off"  # thinking / long chain-of-thought mode
    revision: str = ""  # a model card's revision or the date it was read, where known
    setting: str = ""  # anything else of the setting, as the source words it
    note: str = ""

    @property
    def is_rating(self) -> bool:
        return self.metric.lower().startswith("elo")

    @property
    def evidence_set(self) -> str:
        """The key under which figures are comparable with each other."""
        parts = [self.harness, self.benchmark, self.metric]
        if self.shots is not None:
            parts.append(f"{self.shots}-shot")
        if self.tuned != "instruct":
            parts.append(self.tuned)
        if self.reasoning == "on":
            parts.append("reasoning on")
        return " | ".join(parts)


class Checkpoint(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A deployable checkpoint of a model: the plain one or a published quantized repo."""

    repo: str  # Hugging Face repo id
    quant: Quant = "none"
    dtype: str = "bfloat16"  # the dtype of the unquantized tensors
    bits: int = 16  # weight bits of the quantized linear layers
    group_size: int = 0  # quantization group size (AWQ/GPTQ/W4A16: 128); 0 = per channel/tensor
    publisher: str = ""  # who published the quantized repo, if not the model's authors
    # Read from the checkpoint's safetensors metadata where a copy was at hand; otherwise
    # the loader computes it from the architecture and the scheme's tensor layout.
    weight_bytes: int = 0
    weight_bytes_source: str = ""  # "read: …" or "computed: …"; filled in by the loader
    at_load: bool = False  # the plain repo quantized by vLLM at load; derived by the loader
    note: str = ""
    # the repo whose tokenizer and config.json the engine reads instead of the checkpoint's
    # own ("" = its own): a GGUF file's base model (vllm-gguf-plugin, --tokenizer), with
    # where that name came from
    tokenizer: str = ""
    tokenizer_source: str = ""

    @property
    def label(self) -> str:
        """A short name for people: "bfloat16", "awq 4-bit", "fp8 8-bit at load"."""
        if self.quant == "none":
            return self.dtype
        return f"{self.quant} {self.bits}-bit" + (" at load" if self.at_load else "")


class ArticleFigure(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the seed article says, kept beside our sourced figure where they differ."""

    mmlu: float | None = None
    math: float | None = None
    vram_q4: str = ""
    note: str = ""
    # filled by the loader (advisor.article), never by the file: our figure beside vram_q4
    ours_checkpoint: str = ""
    ours_card_gib: float | None = None
    ours_note: str = ""


class Model(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One instruction-tuned model of the catalog with its deployable checkpoints."""

    id: str  # short catalog id, e.g. "qwen2.5-7b"
    name: str
    family: str = ""  # filled from the file's `family`
    repo: str  # the main (unquantized) repo
    license: str
    released: str  # ISO date
    params_b: float  # the parameter count the model card states, in billions
    params_source: str
    languages: list[str]
    strengths: list[str]  # subset of USE_CASES plus free words
    summary: str = ""
    gated: bool = False  # needs HF_TOKEN and an accepted license
    reasoning: bool = False  # thinks before answering (R1 distills, Qwen3)
    arch: Architecture
    scores: list[Score] = []
    checkpoints: list[Checkpoint]
    article: ArticleFigure | None = None


class CatalogFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One TOML file of `catalog/`: a model family."""

    family: str
    vendor: str
    models: list[Model]


# --------------------------------------------------------------------------- host


class GpuProcess(msgspec.Struct, kw_only=True):
    pid: int
    name: str
    used_memory_gib: float | None


class GpuInfo(msgspec.Struct, kw_only=True):
    index: int
    name: str
    uuid: str
    memory_total_gib: float  # NVML's memory.total
    memory_cuda_gib: float  # what CUDA (and so vLLM) will call the total
    memory_used_gib: float
    memory_free_gib: float
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    memory_bus_width_bits: int | None = None
    memory_clock_mhz: int | None = None
    memory_bandwidth_gbps: float | None = None  # GB/s, from bus width and memory clock
    mig_mode: bool | None = None
    # any NVLink of this GPU active (NVML nvmlDeviceGetNvLinkState); None: NVML could not say,
    # which the planner reads as no NVLink
    nvlink: bool | None = None
    processes: list[GpuProcess] = []
    # GPU memory in use that no listed process owns (another container's processes that
    # NVML cannot name, memory a dead process leaked, the driver's own beyond its
    # reservation): CUDA's total less NVML's free less the listed processes' memory, so
    # the reservation NVML's used counts, which CUDA's total already lacks, is not in it.
    # None: not every process's figure could be read
    memory_unowned_gib: float | None = None
    notes: list[str] = []


class CpuInfo(msgspec.Struct, kw_only=True):
    model: str
    physical_cores: int | None
    logical_cores: int
    architecture: str
    flags: list[str] = []  # the instruction-set extensions the CPU engine cares about
    # one core's speed at what the CPU engine computes (advisor.profile.measure_core_rate):
    # G weights/s unpacked, scaled and added; None where not measured
    core_rate_gops: float | None = None
    core_rate_method: str = ""


class RamInfo(msgspec.Struct, kw_only=True):
    total_gib: float
    available_gib: float
    # memory bandwidth, GB/s (10^9 bytes): all cores, and one core alone (what the CPU
    # engine's decode reads weights with); None where not measured. `bandwidth_method`
    # says how the figures were obtained.
    bandwidth_gbps: float | None = None
    bandwidth_per_core_gbps: float | None = None
    bandwidth_method: str = ""


class DiskInfo(msgspec.Struct, kw_only=True):
    path: str  # the model cache folder (HF_HOME's hub), or its nearest existing parent
    total_gib: float
    free_gib: float


class HostProfile(msgspec.Struct, kw_only=True):
    gpus: list[GpuInfo]
    cpu: CpuInfo
    ram: RamInfo
    disk: DiskInfo
    notes: list[str]
    engine: Literal["vllm", "vllm-cpu"]  # which engine this host runs


# --------------------------------------------------------------------------- hardware data


class GpuSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A GPU model from catalog/hardware/gpus.toml."""

    name: str
    match: list[str]  # substrings of NVML's name that mean this card
    memory_nvml_gib: float
    memory_cuda_gib: float = 0.0  # 0: derive from NVML's figure
    bandwidth_gbps: float
    bf16_tflops: float = 0.0  # 0: not sourced
    compute_capability: str = ""  # "8.6", NVIDIA's table; "": not known
    source: str


class GpuTable(msgspec.Struct, forbid_unknown_fields=True):
    gpu: list[GpuSpec]


# --------------------------------------------------------------------------- requests

Gib = Annotated[float, msgspec.Meta(gt=0, le=65536)]
# What `vllm --version` prints, in any of the forms its releases and builds have used
# (0.32.0, 0.10.1.1, 0.6.4.post1, 0.11.0rc1, 0.13.0+cu126, 0.7.3.dev233+gad5a35c2, v0.9.2);
# the estimator reads only major.minor. Bounded in length so no digit string reaches int()
# past Python's limit.
VLLM_VERSION_PATTERN = (r"^v?\d+\.\d+(\.\d+)*([.-]?(a|b|c|rc|alpha|beta|pre|preview|post|dev)\d*)*"
                        r"(\+[0-9A-Za-z]+([._-][0-9A-Za-z]+)*)?$")


class PlanRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a user asks of `estimate`, `recommend` and `launch`: the CLI's options in snake_case."""

    model: str | None = None  # catalog id, listed repo, or local folder (estimate, launch)
    use_case: UseCase | None = None  # recommend
    gpu: str | None = None  # a GPU from the hardware table, to plan for a machine you lack
    gpu_gib: Gib | None = None  # per GPU, as CUDA reports it
    gpus: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None
    ram_gib: Gib | None = None
    gpu_mem_util: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    max_model_len: Annotated[int, msgspec.Meta(ge=16, le=16_777_216)] | None = None
    tp: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    max_num_batched_tokens: Annotated[int, msgspec.Meta(ge=16, le=1_048_576)] | None = None
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 1
    quant: Quant | None = None
    # as `vllm --version` prints it; kept as given (the request is echoed), read as major.minor
    vllm_version: Annotated[str, msgspec.Meta(pattern=VLLM_VERSION_PATTERN, max_length=64)] | None = None
    cpu_kv_gib: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None = None  # VLLM_CPU_KVCACHE_SPACE
    # the flags users lower memory with (vLLM's names in snake_case)
    max_num_seqs: Annotated[int, msgspec.Meta(ge=1, le=1_048_576)] | None = None
    enforce_eager: bool = False  # no CUDA graphs: their memory goes to the KV pool
    # vLLM's exact KV pool per GPU, in bytes: it skips the memory profile and the utilization
    kv_cache_memory_bytes: Annotated[int, msgspec.Meta(ge=1, le=65536 * 2**30)] | None = None
    # a multimodal model served for text only: --limit-mm-per-prompt with every modality at 0,
    # so vLLM skips its vision/audio tower and the encoder's profiling pass
    text_only: bool = False
    # several GPUs of one host (docs/gpus.md): pipeline stages, data-parallel replicas, and
    # which GPUs (NVML indexes) a launch may take; None: the planner chooses
    pp: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    replicas: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    # gpu_memory_utilization from the predicted need of max_model_len × concurrency, so that
    # another model can share the GPU (a GPU already shared gets it without asking)
    fit_to_need: bool = False
    gpu_ids: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=63)]],
                       msgspec.Meta(max_length=64)] | None = None


class GpuShare(msgspec.Struct, kw_only=True):
    """One GPU of a plan: what is free on it now, what the plan takes, what is left."""

    index: int  # NVML's index, as CUDA_VISIBLE_DEVICES names it
    free_gib: float
    planned_gib: float  # the reservation (or the exact figures with --kv-cache-memory-bytes)
    left_gib: float
    replica: int = 0


class Layout(msgspec.Struct, kw_only=True):
    """How a plan spreads over the GPUs of one host: tp × pp GPUs per replica, dp replicas."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    # how the replicas run: one engine per replica behind the advisor's /v1 ("engines"), or
    # one engine with --data-parallel-size ("data-parallel-size", mixture-of-experts models)
    dp_mode: Literal["engines", "data-parallel-size"] = "engines"
    replicas: list[list[int]] = []  # the GPU indexes of each replica
    gpus: list[GpuShare] = []  # every GPU the plan looked at, with what is left on it
    nvlink: bool | None = None
    reasons: list[str] = []


# --------------------------------------------------------------------------- deployments

DeploymentState = Literal["pending", "starting", "ready", "stopping", "stopped", "failed", "lost"]
ACTIVE_STATES: tuple[str, ...] = ("pending", "starting", "ready", "stopping")


class Deployment(msgspec.Struct, kw_only=True):
    """One launch of an engine, as the store keeps it and the API shows it."""

    id: str
    model: str  # catalog id (or the folder/repo name)
    repo: str
    quant: str
    state: DeploymentState
    phase: str | None = None
    port: int | None = None
    pid: int | None = None  # the engine's process group leader
    pid_start: int | None = None  # its start time (clock ticks after boot): a reused PID differs
    pid_cmdline: list[str] = []  # its command line as /proc shows it, checked with pid_start
    socket: str = ""  # the Unix socket the engine listens on (0700 folder): only the advisor reaches it
    endpoint: str = ""  # the advisor's /v1, where the OpenAI API reaches this engine
    served_names: list[str] = []  # the model names /v1 routes to this engine
    command: list[str] = []
    env: dict[str, str] = {}  # the engine's own environment additions (no secrets)
    request: dict[str, object] = {}  # the launch request as given
    predicted: dict[str, object] = {}  # the estimate made before launch
    measured: dict[str, object] = {}  # what the engine printed
    cause: str | None = None
    fix: str | None = None
    log_path: str = ""
    reserved_gib: float = 0.0  # memory this launch holds against others (GPU, or RAM on CPU)
    # the checkpoint's weights as stored, all of them: what a download fetches (the plan's
    # weights_gib is one GPU's share as the allocator holds it)
    weight_bytes: int = 0
    engine: str = "vllm"
    gpu_name: str = ""  # the GPU it was planned for, as NVML names it ("" on the CPU engine)
    gpus: list[int] = []  # the GPUs it is pinned to (CUDA_VISIBLE_DEVICES), NVML's indexes
    replica_of: str = ""  # the first replica's id, for every replica of one launch
    replica: int = 0  # this one's rank among them
    created_at: float = 0.0
    started_at: float | None = None
    ready_at: float | None = None
    stopped_at: float | None = None
    engine_ready_at: float | None = None  # when the engine's own log said it was serving
    # the load tests run against it, oldest first (the store keeps them in a table of their
    # own, so a watch saving the record cannot drop one)
    benches: list[BenchResult] = []


class BenchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A bounded load test of a ready deployment; omitted lengths and concurrency come
    from its plan."""

    num_prompts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 200
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    input_len: Annotated[int, msgspec.Meta(ge=1, le=32768)] | None = None
    output_len: Annotated[int, msgspec.Meta(ge=1, le=8192)] | None = None


class BenchResult(msgspec.Struct, kw_only=True):
    """What vLLM's benchmark client (`vllm bench serve`) measured against one deployment,
    with the KV-cache peak read from the engine's /metrics and, on a GPU, the energy."""

    at: float  # when it finished
    client: str  # the client and its version, e.g. "vllm bench serve 0.32.0"
    num_prompts: int
    concurrency: int
    input_len: int
    output_len: int
    completed: int
    failed: int
    duration_s: float
    output_tokens: int
    decode_tokens_per_s: float  # all streams together (the client's output_throughput)
    decode_tokens_per_s_per_stream: float | None  # 1000 / mean time per output token
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None
    itl_p99_ms: float | None = None
    kv_cache_peak_pct: float | None = None  # vllm:kv_cache_usage_perc, highest sample, in %
    energy_j: float | None = None  # GPUs of the plan, over the test
    energy_source: str = ""  # "NVML energy counter", "NVML power samples", or why none
    tokens_per_joule: float | None = None
    result_file: str = ""  # the client's --save-result JSON, under ADVISOR_HOME
    versus: list[Comparison] = []  # predicted against measured (advisor.proof)


class Comparison(msgspec.Struct, kw_only=True):
    """One figure the plan predicted beside what a load test measured."""

    figure: str
    unit: str
    predicted: float | None
    measured: float | None
    ratio: float | None  # measured / predicted
    note: str = ""
