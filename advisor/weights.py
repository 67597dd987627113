"""Exact checkpoint sizes from a model's architecture and its quantization scheme's tensor layout.

No hub is needed: every tensor a checkpoint stores is listed from config.json's figures,
then each linear layer is expanded into what the scheme writes to disk (packed weights,
scales, zero points, group indices), while embeddings, norms and the LM head stay in the
model dtype, as AutoAWQ, GPTQModel and llm-compressor leave them. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from advisor.specs import Architecture, Checkpoint

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1, "int8": 1, "int32": 4}


@dataclass(frozen=True)
class Linear:
    """One kind of linear layer, `count` times in the model (layers, or layers × experts)."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    count: int


def linear_layers(arch: Architecture) -> list[Linear]:
    """The quantizable linear layers of a decoder: attention and MLP (or MoE experts)."""
    q_out = arch.attention_heads * arch.head_dim
    kv_out = arch.kv_heads * arch.head_dim
    n = arch.layers
    out = [
        Linear("q_proj", arch.hidden_size, q_out, arch.qkv_bias, n),
        Linear("k_proj", arch.hidden_size, kv_out, arch.qkv_bias, n),
        Linear("v_proj", arch.hidden_size, kv_out, arch.qkv_bias, n),
        Linear("o_proj", q_out, arch.hidden_size, False, n),
    ]
    if arch.experts:
        inter, count = arch.expert_intermediate_size, n * arch.experts
    else:
        inter, count = arch.intermediate_size, n
    out += [
        Linear("gate_proj", arch.hidden_size, inter, False, count),
        Linear("up_proj", arch.hidden_size, inter, False, count),
        Linear("down_proj", inter, arch.hidden_size, False, count),
    ]
    return out


def plain_params(arch: Architecture) -> int:
    """Parameters that no weight-quantization scheme touches: embeddings, norms, LM head, router."""
    params = arch.vocab_size * arch.hidden_size  # embed_tokens
    if not arch.tied_embeddings:
        params += arch.vocab_size * arch.hidden_size  # lm_head
    params += arch.layers * arch.norms_per_layer * arch.hidden_size
    if arch.qk_norm:
        params += arch.layers * 2 * arch.head_dim
    params += arch.hidden_size  # final norm
    if arch.experts:
        params += arch.layers * arch.hidden_size * arch.experts  # router
    return params + arch.extra_params


@lru_cache(maxsize=1024)
def param_count(arch: Architecture) -> int:
    """Every parameter the checkpoint stores, as a model card counts them."""
    linear = sum(
        (lin.in_features * lin.out_features + (lin.out_features if lin.bias else 0)) * lin.count
        for lin in linear_layers(arch)
    )
    return linear + plain_params(arch)


@lru_cache(maxsize=1024)
def active_param_count(arch: Architecture) -> int:
    """Parameters one token passes through (all of them for a dense model): decode's bytes."""
    if not arch.experts:
        return param_count(arch)
    share = arch.experts_per_token / arch.experts
    expert_params = sum(
        lin.in_features * lin.out_features * lin.count
        for lin in linear_layers(arch)
        if lin.name in ("gate_proj", "up_proj", "down_proj")
    )
    return param_count(arch) - expert_params + int(expert_params * share)


def _quantized_linear_bytes(lin: Linear, ckpt: Checkpoint, plain: int) -> int:
    """Bytes one linear layer takes on disk under the checkpoint's scheme."""
    i, o, bits = lin.in_features, lin.out_features, ckpt.bits
    g = ckpt.group_size or i  # 0 means one group over the whole input (per channel)
    groups = -(-i // g)
    bias = o * plain if lin.bias else 0
    packed = i * o * bits // 8
    if ckpt.quant == "awq":
        # AutoAWQ GEMM: qweight int32[in, out/8], qzeros int32[groups, out/8], scales fp16[groups, out]
        return packed + groups * (o * bits // 32) * 4 + groups * o * 2 + bias
    if ckpt.quant == "gptq":
        # GPTQ: qweight int32[in/8, out], qzeros int32[groups, out/8], scales fp16[groups, out],
        # g_idx int32[in]
        return packed + groups * (o * bits // 32) * 4 + groups * o * 2 + i * 4 + bias
    if ckpt.quant == "compressed-tensors":
        if bits == 8:
            # W8A8 (FP8 or INT8) per channel: weight 1 byte each, weight_scale[out, 1]
            return i * o + o * plain + bias
        # W4A16 pack-quantized, symmetric: weight_packed int32[out, in/8],
        # weight_scale[out, groups], weight_shape int64[2]
        return packed + o * groups * plain + 16 + bias
    if ckpt.quant == "fp8":
        if ckpt.group_size:
            # block-wise fp8 (Qwen3-*-FP8, DeepSeek style): weight_scale_inv fp32 per
            # group_size × group_size block
            blocks = -(-o // ckpt.group_size) * -(-i // ckpt.group_size)
            return i * o + blocks * 4 + bias
        # fp8 weights with one fp32 scale per tensor (vLLM's Fp8LinearMethod at load, or an
        # fp8 checkpoint's per-tensor weight_scale)
        return i * o + 4 + bias
    if ckpt.quant == "bitsandbytes":
        # NF4 quantized at load: two weights a byte and one fp32 absmax per block of 64
        return i * o // 2 + -(-i * o // 64) * 4 + bias
    raise ValueError(f"unknown quantization {ckpt.quant!r}")


def checkpoint_bytes(arch: Architecture, ckpt: Checkpoint) -> int:
    """Bytes of every tensor the checkpoint stores (or vLLM holds, for quantize-at-load)."""
    plain = DTYPE_BYTES.get(ckpt.dtype, 2)
    if ckpt.quant == "none":
        return param_count(arch) * plain
    total = plain_params(arch) * plain
    for lin in linear_layers(arch):
        total += _quantized_linear_bytes(lin, ckpt, plain) * lin.count
    return total


def describe_computation(ckpt: Checkpoint) -> str:
    """The provenance line for a computed size."""
    if ckpt.quant == "none":
        return f"computed: parameters from the architecture × {ckpt.dtype}"
    layout = f"{ckpt.bits}-bit"
    if ckpt.group_size:
        layout += f", group {ckpt.group_size}"
    return f"computed: {ckpt.quant} tensor layout ({layout}), other tensors in {ckpt.dtype}"


# The quantization state bitsandbytes saves beside each 4-bit weight (Params4bit.quant_state
# as_dict(packed=True)): `absmax` is one uint8 per block of 64 when double-quantized,
# `nested_absmax` and `nested_quant_map` quantize it, `quant_map` is the NF4 code book and
# `quant_state.bitsandbytes__nf4` the rest, packed into bytes.
BNB_STATE_SUFFIXES = (".absmax", ".nested_absmax", ".nested_quant_map", ".quant_map",
                      ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4")


def bnb_held_bytes(tensors: dict[str, tuple[int, int]]) -> int:
    """What vLLM holds of a pre-quantized bitsandbytes 4-bit checkpoint, from its tensors'
    {name: (bytes, elements)}: every tensor as stored, except that each double-quantized
    `absmax` becomes one fp32 per block and its nested state goes, as the loader's
    _dequantize_dq does (vllm-bnb-plugin, bitsandbytes_loader.py). The NF4 code book stays."""
    held = 0
    for name, (nbytes, elements) in tensors.items():
        if name.endswith(".absmax"):
            held += elements * 4
        elif name.endswith(".quant_map") or not name.endswith(BNB_STATE_SUFFIXES):
            held += nbytes
    return held
