"""The layout of one model on a cluster: tensor parallelism inside a node, pipeline
parallelism across nodes (or where tp cannot divide, or the GPUs lack NVLink), and
data-parallel replicas for throughput, each split sized by the estimator.

Pure: the model, its checkpoint and the GPU's figures come in as arguments. The rules are
vLLM's own (docs/serving/parallelism_scaling.md): tp = the GPUs of a node and pp = the
nodes when a model outgrows one node; tp = 1 and pp = the GPUs where the GPU count does
not divide the model; pp instead of tp on GPUs without NVLink. Which split, and how many
replicas, is chosen here by the estimator's per-GPU KV pool (docs/cluster.md).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, NamedTuple

import msgspec

from advisor.errors import AdvisorError
from advisor.estimate import INSTALLED_VLLM, EngineSettings, Estimate, Target, estimate
from advisor.placement import largest_tp, tp_divides
from advisor.specs import Checkpoint, Gib, Model, Quant
from advisor.speed import CONTEXT_TOKENS, Roofline, decode_step_s, ttft_s
from advisor.weights import active_param_count

GIB = 2**30
Interconnect = Literal["nvlink", "pcie"]
Network = Literal["infiniband", "roce", "ethernet"]
# a Kubernetes object name (DNS-1035 label): the manifests name everything after it
NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$"
EMBEDDING_BYTES = 2  # embeddings and lm_head stay bf16 in the quantized checkpoints vLLM loads


class ClusterRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What `advisor plan` and POST /api/plan take: a cluster shape, a model and a target."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    nodes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    gpus_per_node: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    gpu: Annotated[str, msgspec.Meta(max_length=100)] | None = None  # a card of gpus.toml
    gpu_gib: Gib | None = None  # per GPU, as CUDA reports it (default: the card's)
    # between the GPUs of a node; None: NVLink assumed, and the reasoning says so
    interconnect: Interconnect | None = None
    network: Network = "ethernet"  # between nodes
    max_model_len: Annotated[int, msgspec.Meta(ge=16, le=16_777_216)] | None = None
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    requests_per_s: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] | None = None
    output_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 256  # per request, for requests_per_s
    quant: Quant | None = None
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    gpu_mem_util: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    name: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)] | None = None  # of the deployment


class ClusterShape(msgspec.Struct, kw_only=True, frozen=True):
    """The hardware as the plan counts it."""

    nodes: int
    gpus_per_node: int
    gpu_name: str  # "" when only the memory was given
    gpu_gib: float  # CUDA's total per GPU
    interconnect: Interconnect
    network: Network
    bandwidth_gbps: float | None = None  # per GPU, from the GPU table
    bf16_tflops: float | None = None
    compute_capability: tuple[int, int] | None = None  # from the GPU table

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class Split(NamedTuple):
    """One replica's parallelism: tp × pp GPUs over `nodes` whole nodes (1: part of one)."""

    tp: int
    pp: int
    nodes: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp


class Layout(msgspec.Struct, kw_only=True):
    """The plan: one replica's split, how many replicas, and what each GPU holds."""

    model: str  # catalog id
    model_name: str
    repo: str
    quant: str
    at_load_quantization: str = ""  # vLLM's --quantization where it quantizes the plain repo at load
    served_name: str  # the name clients ask /v1 for
    name: str  # of the deployment (Kubernetes objects)
    tp: int
    pp: int
    replicas: int
    gpus_per_replica: int
    nodes_per_replica: int  # whole nodes a replica spans (1: it fits in one)
    gpus_per_pod: int  # GPUs one node (pod) of a replica takes
    replicas_per_node: int  # replicas packed on one node (1 when a replica spans nodes)
    nodes_used: int
    gpus_used: int
    max_replicas: int  # what the cluster could hold of this split
    max_model_len: int
    gpu_mem_util: float
    kv_cache_dtype: str
    distributed_executor_backend: Literal["mp", "ray"]
    per_gpu: Estimate  # the heaviest pipeline stage's GPU, as vLLM would print it
    replica_concurrency: float  # sequences of max_model_len one replica holds
    total_concurrency: float
    replica_requests_per_s: float | None = None
    meets_target: bool
    reason: str = ""  # why the target is not met, with what would meet it


class ClusterPlan(msgspec.Struct, kw_only=True):
    request: ClusterRequest
    shape: ClusterShape
    fits: bool  # some split starts on this cluster
    layout: Layout | None
    reasoning: list[str]
    reason: str = ""  # why nothing fits, with the cheapest change found


# ----------------------------------------------------------------- which splits


def _in_node(model: Model, gpus: int, interconnect: Interconnect) -> tuple[int, int]:
    """(tp, pp) over `gpus` GPUs of one node: the largest tp that divides the GPUs and the
    heads on NVLink, the rest as pipeline stages; on PCIe all pipeline stages."""
    if interconnect == "pcie":
        return 1, gpus
    tp = largest_tp(model, gpus)
    return tp, gpus // tp


def splits(model: Model, shape: ClusterShape) -> list[Split]:
    """Every replica size tried, smallest first: the divisors of a node's GPUs, then whole
    nodes (a replica spans nodes only with all of their GPUs, pp across them)."""
    out: list[Split] = []
    per_node = shape.gpus_per_node
    for g in (d for d in range(1, per_node + 1) if per_node % d == 0):
        tp, pp = _in_node(model, g, shape.interconnect)
        out.append(Split(tp=tp, pp=pp, nodes=1))
    tp, pp = _in_node(model, per_node, shape.interconnect)
    for n in range(2, shape.nodes + 1):
        out.append(Split(tp=tp, pp=pp * n, nodes=n))
    return [s for s in out if s.pp <= model.arch.layers]


# ----------------------------------------------------------------- sizing one split


def stage_of(model: Model, ckpt: Checkpoint, pp: int) -> tuple[Model, Checkpoint]:
    """The heaviest pipeline stage as a model of its own: ceil(layers / pp) layers and one
    vocabulary matrix (the first stage holds the embeddings, the last lm_head). vLLM
    splits layers evenly (distributed/utils.py::get_pp_indices); every stage then has the
    same KV pool per token, so the pool of this stage is every stage's."""
    if pp == 1:
        return model, ckpt
    a = model.arch
    vocab = a.vocab_size * a.hidden_size * EMBEDDING_BYTES
    body = max(ckpt.weight_bytes - vocab * (1 if a.tied_embeddings else 2), 0)
    layers = math.ceil(a.layers / pp)
    stage_bytes = math.ceil(body / a.layers * layers) + vocab
    arch = msgspec.structs.replace(a, layers=layers)
    return (msgspec.structs.replace(model, arch=arch),
            msgspec.structs.replace(ckpt, weight_bytes=stage_bytes))


def _target(shape: ClusterShape, tp: int) -> Target:
    return Target(engine="vllm", gpu_name=shape.gpu_name, gpu_gib=shape.gpu_gib, gpus=tp,
                  bandwidth_gbps=shape.bandwidth_gbps, bf16_tflops=shape.bf16_tflops,
                  compute_capability=shape.compute_capability)


def size(model: Model, ckpt: Checkpoint, shape: ClusterShape, split: Split,
         req: ClusterRequest, context: int) -> Estimate:
    """The estimator's figures for one GPU of the split's heaviest stage."""
    stage_model, stage_ckpt = stage_of(model, ckpt, split.pp)
    settings = EngineSettings(gpu_mem_util=req.gpu_mem_util, max_model_len=context, tp=split.tp,
                              kv_cache_dtype=req.kv_cache_dtype)
    return estimate(stage_model, stage_ckpt, _target(shape, split.tp), settings)


def replica_requests_per_s(model: Model, ckpt: Checkpoint, shape: ClusterShape, split: Split,
                           est: Estimate, output_tokens: int) -> float | None:
    """Requests per second one replica serves at the concurrency its pool holds, from the
    speed roofline (advisor/speed.py): each decode step passes every stage in turn, so a
    step costs pp × one stage's; overlapping stages (vLLM's virtual engines) is not
    credited. None without the GPU's sourced bandwidth."""
    if not shape.bandwidth_gbps:
        return None
    hw = Roofline(bandwidth_gbps=shape.bandwidth_gbps, bf16_tflops=shape.bf16_tflops)
    seqs = max(int(est.max_concurrency), 1)
    stage_model, stage_ckpt = stage_of(model, ckpt, split.pp)
    active = active_param_count(model.arch)
    step = split.pp * decode_step_s(math.ceil(stage_ckpt.weight_bytes / split.tp),
                                    est.kv_bytes_per_token, stage_model.arch.layers, hw, seqs,
                                    active // split.pp, split.tp, CONTEXT_TOKENS,
                                    INSTALLED_VLLM)
    # prefill passes the stages in turn too: each stage's share of the compute over its tp
    first = ttft_s(active, split.tp, hw, step) or 0.0
    return round(seqs / (first + output_tokens * step), 3)


# ----------------------------------------------------------------- the plan


def shape_of(req: ClusterRequest, gpu_gib: float, gpu_name: str = "",
             bandwidth_gbps: float | None = None, bf16_tflops: float | None = None,
             compute_capability: tuple[int, int] | None = None) -> ClusterShape:
    return ClusterShape(nodes=req.nodes, gpus_per_node=req.gpus_per_node, gpu_name=gpu_name,
                        gpu_gib=gpu_gib, interconnect=req.interconnect or "nvlink",
                        network=req.network, bandwidth_gbps=bandwidth_gbps,
                        bf16_tflops=bf16_tflops, compute_capability=compute_capability)


def _describe_split(s: Split, shape: ClusterShape) -> str:
    where = (f"{s.nodes} nodes × {shape.gpus_per_node} GPUs" if s.nodes > 1
             else f"{s.gpus} GPU{'s' if s.gpus > 1 else ''} of one node")
    return f"tp {s.tp} × pp {s.pp} ({where})"


def _placement(s: Split, shape: ClusterShape) -> tuple[int, int]:
    """(replicas per node, the most replicas the cluster holds) of a split."""
    if s.nodes > 1:
        return 1, shape.nodes // s.nodes
    per_node = shape.gpus_per_node // s.gpus
    return per_node, per_node * shape.nodes


def plan_cluster(req: ClusterRequest, model: Model, ckpt: Checkpoint,
                 shape: ClusterShape) -> ClusterPlan:
    """The smallest total of GPUs that meets the target, from the splits that start."""
    a = model.arch
    context = req.max_model_len or a.native_context
    if context > a.native_context:  # the estimator would refuse every split for it
        raise AdvisorError(f"max_model_len: {context:,} is above {model.id}'s native context "
                           f"({a.native_context:,} tokens)")
    lines = [
        f"Model: {model.name} ({ckpt.repo}, {ckpt.label}): {ckpt.weight_bytes / GIB:.2f} GiB of "
        f"weights, {a.layers} layers, {a.attention_heads} attention heads, {a.kv_heads} KV heads.",
        f"Cluster: {shape.nodes} node{'s' if shape.nodes > 1 else ''} × {shape.gpus_per_node} × "
        f"{shape.gpu_name or 'GPU'} ({shape.gpu_gib:.2f} GiB as CUDA counts it), "
        f"{'NVLink' if shape.interconnect == 'nvlink' else 'PCIe'} inside a node"
        + (f", {shape.network} between nodes." if shape.nodes > 1 else "."),
        "Tensor-parallel sizes that divide the attention heads and divide or evenly replicate "
        "the KV heads: "
        + ", ".join(str(t) for t in (1, 2, 4, 8, 16, 32, 64) if tp_divides(model, t)) + ".",
    ]
    if req.interconnect is None and shape.gpus_per_node > 1:
        lines.append("Interconnect not given: NVLink assumed between the GPUs of a node (give "
                     "interconnect pcie for cards without it, such as L4, L40S or RTX).")
    if shape.interconnect == "pcie":
        lines.append("No NVLink: pipeline stages instead of tensor parallelism inside a node "
                     "(vLLM's docs: less communication over PCIe).")
    if req.max_model_len is None:
        lines.append(f"Context: the model's native {context:,} tokens (give max_model_len for another).")
    else:
        lines.append(f"Context: {context:,} tokens.")
    need = req.concurrency
    target_words = f"{need} sequence{'s' if need > 1 else ''} of {context:,} tokens at once"
    if req.requests_per_s:
        target_words += f" and {req.requests_per_s:g} requests/s of {req.output_tokens} output tokens"
        if not shape.bandwidth_gbps:
            raise AdvisorError("requests_per_s: needs the GPU's memory bandwidth; name a card of "
                               "the GPU table with gpu (e.g. \"H100 80GB\")")
    lines.append(f"Target: {target_words}.")

    best: tuple[tuple[int, int, int], Split, Estimate, int, float | None] | None = None
    fallback: tuple[float, Split, Estimate, float | None] | None = None
    last: tuple[Split, Estimate] | None = None
    for s in splits(model, shape):
        est = size(model, ckpt, shape, s, req, context)
        last = (s, est)
        if not est.fits:
            lines.append(f"{_describe_split(s, shape)}: does not start: {est.reason}.")
            continue
        per_node, most = _placement(s, shape)
        rps = replica_requests_per_s(model, ckpt, shape, s, est, req.output_tokens) \
            if req.requests_per_s else None
        wanted = math.ceil(need / est.max_concurrency) if est.max_concurrency else most + 1
        if req.requests_per_s and rps:
            wanted = max(wanted, math.ceil(req.requests_per_s / rps))
        lines.append(
            f"{_describe_split(s, shape)}: starts; per GPU {est.weights_gib:.2f} GiB of weights, a "
            f"{est.kv_cache_gib:.2f} GiB KV pool ({est.kv_cache_tokens:,} tokens): "
            f"{est.max_concurrency:g} sequences of {context:,} per replica"
            + (f", about {rps:g} requests/s" if rps is not None else "")
            + f"; {wanted} replica{'s' if wanted > 1 else ''} needed, the cluster holds {most}.")
        if wanted <= most:
            key = (wanted * s.gpus, s.gpus, s.nodes)  # fewest GPUs, then the smaller replica
            if best is None or key < best[0]:
                best = (key, s, est, wanted, rps)
        elif fallback is None or most * est.max_concurrency > fallback[0]:
            fallback = (most * est.max_concurrency, s, est, rps)
    if best is None and fallback is None:
        reason = _nothing_fits(req, model, ckpt, shape, last, context)
        lines.append(f"Nothing starts on this cluster: {reason}")
        return ClusterPlan(request=req, shape=shape, fits=False, layout=None, reasoning=lines,
                           reason=reason)
    if best is not None:
        _, s, est, replicas, rps = best
        short = ""
    else:
        assert fallback is not None
        _, s, est, rps = fallback
        replicas = _placement(s, shape)[1]
        held = replicas * est.max_concurrency
        more = math.ceil(need / est.max_concurrency) - replicas
        short = (f"the cluster holds {held:g} sequences of {context:,} with {replicas} "
                 f"replica{'s' if replicas > 1 else ''} of "
                 f"{_describe_split(s, shape)}, not the {need} asked; {more} more replica"
                 f"{'s' if more > 1 else ''} ({more * s.gpus} GPUs) would, or a shorter context, "
                 "or --kv-cache-dtype fp8")
        if req.requests_per_s and rps:
            short += f" (about {replicas * rps:g} requests/s of the {req.requests_per_s:g} asked)"
    layout = _layout(req, model, ckpt, shape, s, est, replicas, rps, context, short)
    lines.append(_why(layout, s, shape))
    return ClusterPlan(request=req, shape=shape, fits=True, layout=layout, reasoning=lines)


def _layout(req: ClusterRequest, model: Model, ckpt: Checkpoint, shape: ClusterShape, s: Split,
            est: Estimate, replicas: int, rps: float | None, context: int, short: str) -> Layout:
    per_node, most = _placement(s, shape)
    nodes_used = replicas * s.nodes if s.nodes > 1 else math.ceil(replicas / per_node)
    return Layout(
        model=model.id, model_name=model.name, repo=ckpt.repo, quant=ckpt.quant,
        at_load_quantization=ckpt.quant if ckpt.at_load else "",
        served_name=model.id, name=req.name or k8s_name(model.id), tp=s.tp, pp=s.pp,
        replicas=replicas, gpus_per_replica=s.gpus, nodes_per_replica=s.nodes,
        gpus_per_pod=s.gpus // s.nodes, replicas_per_node=per_node, nodes_used=nodes_used,
        gpus_used=replicas * s.gpus, max_replicas=most, max_model_len=context,
        gpu_mem_util=req.gpu_mem_util, kv_cache_dtype=req.kv_cache_dtype,
        distributed_executor_backend="ray" if s.nodes > 1 else "mp", per_gpu=est,
        replica_concurrency=est.max_concurrency,
        total_concurrency=round(replicas * est.max_concurrency, 2),
        replica_requests_per_s=rps, meets_target=not short, reason=short)


def _why(lay: Layout, s: Split, shape: ClusterShape) -> str:
    words = [f"Chosen: {lay.replicas} replica{'s' if lay.replicas > 1 else ''} of "
             f"{_describe_split(s, shape)}, {lay.gpus_used} of the cluster's {shape.gpus} GPUs"]
    if lay.meets_target:
        words.append("the fewest GPUs that meet the target (ties: the smaller replica, less "
                     "communication)")
    else:
        words.append(f"short of the target: {lay.reason}")
    if s.nodes > 1:
        words.append(f"tp stays inside a node and pp spans the {s.nodes} nodes (vLLM's rule for "
                     "models larger than a node); Ray runs the stages "
                     f"(--distributed-executor-backend ray) over {shape.network}")
        if shape.network == "ethernet":
            words.append("only activations cross between stages, but InfiniBand or RoCE is "
                         "still advised for multi-node serving (NCCL over TCP sockets is slow)")
    if lay.replicas > 1:
        words.append("replicas are independent engines behind one endpoint (data parallelism "
                     "for a dense model, as vLLM's docs advise)")
    return "; ".join(words) + "."


def _nothing_fits(req: ClusterRequest, model: Model, ckpt: Checkpoint, shape: ClusterShape,
                  last: tuple[Split, Estimate] | None, context: int) -> str:
    if last is None:
        return f"no split of {model.arch.layers} layers over these GPUs"
    s, est = last
    words = f"even {_describe_split(s, shape)} does not start ({est.reason})"
    for other in sorted(model.checkpoints, key=lambda c: -c.weight_bytes):
        if other.weight_bytes >= ckpt.weight_bytes:
            continue
        e = size(model, other, shape, s, req, context)
        if e.fits:
            return words + f"; the {other.label} checkpoint ({other.repo}) would start (quant {other.quant})"
    return words + "; more nodes, a shorter context or a smaller checkpoint might"


def k8s_name(text: str) -> str:
    """A DNS-1035 label from a model id ("llama-3.1-70b" -> "llama-3-1-70b")."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    if not out or not out[0].isalpha():
        out = "m-" + out
    return out[:42].rstrip("-")


def plan_text(plan: ClusterPlan) -> str:
    """The plan for people: the reasoning, then the layout in one paragraph."""
    lines = list(plan.reasoning)
    lay = plan.layout
    if lay is not None:
        lines += ["", f"Layout: {lay.replicas} × (tp {lay.tp} × pp {lay.pp}) = {lay.gpus_used} GPUs "
                  f"on {lay.nodes_used} node{'s' if lay.nodes_used > 1 else ''}; "
                  f"{lay.total_concurrency:g} sequences of {lay.max_model_len:,} tokens in all"
                  + (f", about {lay.replica_requests_per_s * lay.replicas:g} requests/s"
                     if lay.replica_requests_per_s is not None else "")
                  + ("" if lay.meets_target else " (short of the target)") + "."]
    return "\n".join(lines)
