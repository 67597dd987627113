"""The seed article's "VRAM (Q4)" beside what vLLM needs for the same model and context.

The article rounds a 4-bit file's size (llama.cpp-style: the weights, about 4.5 bits each).
vLLM needs more of the card: within `gpu_memory_utilization` it holds the weights, the
activation peak of its profiling pass, non-torch memory and a KV pool for at least one
sequence of `max_model_len`; CUDA graphs come on top. The figure here is the smallest card
(CUDA's total) on which the estimator says vLLM starts the catalog's smallest 4-bit
checkpoint at the context below. Pure.
"""

from __future__ import annotations

from advisor.estimate import EngineSettings, Estimate, Target, fits
from advisor.specs import Checkpoint, Model

CONTEXT = 4096  # tokens: a modest chat context, as the article's figures assume none
UTIL = 0.9  # vLLM's default gpu_memory_utilization
GIB = 2**30


def four_bit(model: Model) -> Checkpoint | None:
    """The smallest published 4-bit checkpoint (quantized at load does not count: no file)."""
    found = [c for c in model.checkpoints if c.bits == 4 and not c.at_load]
    return min(found, key=lambda c: c.weight_bytes) if found else None


def smallest_card_gib(model: Model, ckpt: Checkpoint, context: int = CONTEXT) -> float | None:
    """The least CUDA total, to 0.25 GiB, on which vLLM starts `ckpt` at `context` tokens."""
    settings = EngineSettings(gpu_mem_util=UTIL, max_model_len=min(context, model.arch.native_context))

    def ok(gib: float) -> bool:
        return fits(model, ckpt, Target(engine="vllm", gpu_gib=gib, gpus=1), settings)

    lo, hi = 0.25, 256.0
    if not ok(hi):
        return None
    while hi - lo > 0.25:
        mid = round((lo + hi) / 2 * 4) / 4
        if mid in (lo, hi):
            break
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def beside(model: Model) -> tuple[str, float | None, str]:
    """(our checkpoint, the card vLLM needs, why the two differ) for a model the article sizes."""
    ckpt = four_bit(model)
    if ckpt is None:
        return "", None, "the catalog lists no 4-bit checkpoint of this model to set beside it"
    card = smallest_card_gib(model, ckpt)
    weights = ckpt.weight_bytes / GIB
    why = (f"the article rounds a Q4 file's size; vLLM holds {ckpt.label} weights of "
           f"{weights:.2f} GiB plus the profiling pass's activations, non-torch memory and a KV "
           f"pool for one {CONTEXT:,}-token sequence within {UTIL:g} of the card, and CUDA graphs "
           "besides")
    return ckpt.repo, card, why


def on_row(model: Model, ckpt: Checkpoint, est: Estimate) -> tuple[str | None, str]:
    """(the article's "VRAM (Q4)" as it writes it, a line on why it differs from what vLLM
    takes for this row) for a result row; (None, "") where the article sizes no such model.
    Ours is the estimate's own accounting at the row's context, not a rounded file size."""
    if model.article is None or not model.article.vram_q4:
        return None, ""
    kind = "" if ckpt.bits == 4 and ckpt.quant != "none" else f" ({ckpt.label}, not Q4)"
    if est.engine == "vllm-cpu":
        ours = (f"vLLM's CPU engine holds {est.weights_gib:.2f} GiB of weights{kind} and "
                f"{est.cpu_kv_space_gib or 0} GiB of KV cache in RAM")
    else:
        other = est.activation_gib + est.non_torch_gib + est.cuda_graph_gib + \
            (est.host_correction_gib or 0)
        ours = (f"vLLM here: {est.weights_gib:.2f} GiB of weights{kind}, {max(other, 0):.2f} "
                f"of engine overhead and a {max(est.kv_cache_gib, 0):.2f} GiB KV pool")
        if est.max_model_len and est.max_concurrency:
            ours += f", {est.max_concurrency:g}× a {est.max_model_len:,}-token context"
    return model.article.vram_q4, f"the article: a Q4 file's size plus a rough overhead; {ours}"
