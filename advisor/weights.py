"""Exact checkpoint sizes from a model's architecture and its quantization scheme's tensor layout.

No hub is needed: every tensor a checkpoint stores is listed from config.json's figures,
then each linear layer is expanded into what the scheme writes to disk (packed weights,
scales, zero points, group indices), while embeddings, norms and the LM head stay in the
model dtype, as AutoAWQ, GPTQModel and llm-compressor leave them. Pure functions, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, insort
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


# ----------------------------------------------------------------- what vLLM holds after loading
# vLLM prints as the weights what torch's allocator counts as allocated once the model is
# built and loaded (vllm/utils/mem_utils.py::DeviceMemoryProfiler, memory_allocated after
# empty_cache). That is more than the tensors' bytes, by two things of the code, none fitted:
# - PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp) rounds a request to
#   512 bytes, serves those above 1 MiB (kSmallSize) from the large pool: a new segment of
#   20 MiB (kLargeBuffer) below 10 MiB (kMinLargeAlloc), else the size rounded up to 2 MiB
#   (kRoundLarge); it takes the smallest free block that holds the request and splits it only
#   when more than 1 MiB would be left (should_split), so a tensor given a block up to 1 MiB
#   larger than itself is counted at the block's size. vLLM's fused tensors (qkv_proj,
#   gate_up_proj) decide which: Qwen2.5-7B's 259 MiB gate_up gets a 260 MiB segment.
# - the rotary embedding's cos/sin cache, max_position × head_dim in the model dtype, built
#   on the GPU in the first layer from fp32 temporaries (rotary_embedding/base.py), one per
#   distinct rope (Gemma 3: a local and a global one); get_rope caches it for the others.
# The model is built in vLLM's order (embeddings, then per layer attention, MLP and norms, the
# LM head last, freed again when tied to the embeddings), each linear layer with the tensors
# its scheme registers. A quantized checkpoint's repacking at load (AWQ and GPTQ to Marlin)
# allocates each tensor again at the same size and frees the old: not simulated.
_KIB512, _SMALL, _MIN_LARGE, _LARGE_BUFFER, _ROUND_LARGE = 512, 2**20, 10 * 2**20, 20 * 2**20, 2 * 2**20


class _Allocator:
    """The large pool of torch's CUDA caching allocator, as far as a fresh model build uses it:
    best fit, split above 1 MiB of remainder, freed blocks merged with free neighbours."""

    def __init__(self) -> None:
        self.allocated = 0
        self.stored = 0
        # a block: [size, free, prev, next]; free blocks sorted by (size, serial)
        self._free: list[tuple[int, int]] = []
        self._blocks: dict[int, list] = {}  # type: ignore[type-arg]
        self._serial = 0

    def _new(self, size: int, free: bool, prev: int, nxt: int) -> int:
        self._serial += 1
        self._blocks[self._serial] = [size, free, prev, nxt]
        if free:
            insort(self._free, (size, self._serial))
        return self._serial

    def malloc(self, nbytes: int, stored: bool = True) -> int:
        """Allocate; `stored`: one of the checkpoint's tensors (counted in `stored`)."""
        size = _KIB512 * max(1, -(-nbytes // _KIB512))
        self.stored += nbytes if stored else 0
        if size <= _SMALL:  # the small pool splits down to 512 bytes: counted as rounded
            self.allocated += size
            return 0
        i = bisect_left(self._free, (size, 0))
        if i < len(self._free):
            have, key = self._free.pop(i)
            block = self._blocks[key]
        else:
            have = _LARGE_BUFFER if size < _MIN_LARGE else _ROUND_LARGE * -(-size // _ROUND_LARGE)
            key = self._new(have, False, 0, 0)
            block = self._blocks[key]
        block[1] = False
        if have - size > _SMALL:
            rest = self._new(have - size, True, key, block[3])
            if block[3]:
                self._blocks[block[3]][2] = rest
            block[0], block[3] = size, rest
        self.allocated += block[0]
        return key

    def free(self, key: int) -> None:
        if not key:
            return
        block = self._blocks[key]
        self.allocated -= block[0]
        for side in (2, 3):  # merge with a free neighbour of the same segment
            other = block[side]
            if other and self._blocks[other][1]:
                o = self._blocks.pop(other)
                self._free.remove((o[0], other))
                block[0] += o[0]
                block[side] = o[side]
                if o[side]:
                    self._blocks[o[side]][5 - side] = key
        block[1] = True
        insort(self._free, (block[0], key))


def _registered(quant: str, bits: int, group_size: int, i: int, o: int, bias: bool,
                plain: int) -> list[int]:
    """The bytes of each tensor one linear layer registers under the scheme, in its order."""
    g = group_size or i
    groups = -(-i // g)
    if quant == "none":
        out = [i * o * plain]
    elif quant == "awq":  # qweight, qzeros, scales
        out = [i * o * bits // 8, groups * o * bits // 8, groups * o * 2]
    elif quant == "gptq":  # qweight, g_idx, qzeros, scales
        out = [i * o * bits // 8, i * 4, groups * o * bits // 8, groups * o * 2]
    elif quant == "compressed-tensors":
        out = [i * o, o * 4] if bits == 8 else [i * o * bits // 8, o * groups * plain, 16]
    elif quant == "bitsandbytes":
        out = [i * o // 2, -(-i * o // 64) * 4]
    elif quant == "gguf":  # the quantized blocks as one byte tensor
        out = [i * o * bits // 8]
    else:  # fp8: weights of a byte and their scales
        out = [i * o, -(-o // g) * -(-i // g) * 4 if group_size else 4]
    return out + ([o * plain] if bias else [])


@lru_cache(maxsize=2048)
def load_overhead_bytes(arch: Architecture, quant: str, bits: int, group_size: int, dtype: str,
                        tp: int = 1, pp: int = 1) -> int:
    """What vLLM holds on one GPU after loading beyond the checkpoint's tensors (see above):
    the allocator's rounding of one rank's tensors (one stage's layers, with the embeddings
    and the LM head) and the rotary caches."""
    plain = DTYPE_BYTES.get(dtype, 2)
    a = _Allocator()
    h = arch.hidden_size
    vocab = -(-arch.vocab_size // tp)
    q_out = arch.attention_heads * arch.head_dim // tp
    kv_out = max(1, arch.kv_heads // tp) * arch.head_dim
    experts = arch.experts
    inter = (arch.expert_intermediate_size if experts else arch.intermediate_size) // tp
    a.malloc(vocab * h * plain)
    ropes = 2 if arch.architecture.startswith("Gemma3") else 1
    for layer in range(-(-arch.layers // pp)):
        for t in _registered(quant, bits, group_size, h, q_out + 2 * kv_out, arch.qkv_bias, plain):
            a.malloc(t)
        for t in _registered(quant, bits, group_size, q_out, h, False, plain):
            a.malloc(t)
        if layer == 0:
            positions, dim = arch.native_context, arch.head_dim
            for _ in range(ropes):
                # freqs, cos and sin in fp32, their concatenation, and the cache in the dtype
                temps = [a.malloc(positions * dim // 2 * 4, False) for _ in range(3)]
                both = a.malloc(positions * dim * 4, False)
                for t in temps:
                    a.free(t)
                a.malloc(positions * dim * plain, False)
                a.free(both)
        if experts:  # FusedMoE: one w13 and one w2 for all experts, and the router
            a.malloc(h * experts * plain)
            for t in _registered(quant, bits, group_size, h, 2 * inter, False, plain):
                a.malloc(t * experts)
            for t in _registered(quant, bits, group_size, inter, h, False, plain):
                a.malloc(t * experts)
        else:
            for t in _registered(quant, bits, group_size, h, 2 * inter, False, plain):
                a.malloc(t)
            for t in _registered(quant, bits, group_size, inter, h, False, plain):
                a.malloc(t)
        for _ in range(arch.norms_per_layer):
            a.malloc(h * plain)
    a.malloc(h * plain)
    # vLLM builds the head, then points it at the embeddings where they are tied
    head = a.malloc(vocab * h * plain, not arch.tied_embeddings)
    if arch.tied_embeddings:
        a.free(head)
    return a.allocated - a.stored


# What a 4-bit weight-only checkpoint's repacking leaves behind on the GPU. vLLM loads AWQ,
# GPTQ and compressed-tensors W4A16 through its Marlin kernel on any GPU of compute
# capability 7.5 or more (kernels/linear/mixed_precision/marlin.py, marlin_utils.py), whose
# process_weights_after_loading replaces every quantized tensor of a linear layer by a
# repacked copy (ops.gptq_marlin_repack, the scales and zeros permuted; AWQ's first through
# quantization/auto_awq.py::_convert_awq_to_standard_format). Loading runs under
# max_split_size_mb=20 (0.32: v1/worker/gpu_worker.py::load_model), so the allocator splits
# and shares blocks under 20 MiB: an original freed there stays in a segment that live
# tensors pin, and empty_cache cannot hand it back. "Model loading took" counts allocated
# bytes, so none of it is in the weights vLLM prints; from 0.27 the start-up's consumed
# memory is read from free memory (utils/mem_utils.py::memory_profiling, total_consumed),
# so all of it is in what the profile takes from the KV pool. Charged as the bytes of the
# replaced tensors under the split size: not fitted (the T4 0.28 AWQ and GPTQ rows and the
# RTX 5090 0.28 Qwen3-14B-AWQ log, 0.6-0.7 and about 1.6-1.8 GiB short, agree with the
# 0.63 and 1.41 GiB it gives); tensors the allocator happens to reuse would make it less.
REPACK_SPLIT_BYTES = 20 * 2**20
REPACK_COUNTED_SINCE = (0, 27)


@lru_cache(maxsize=2048)
def repack_held_bytes(arch: Architecture, quant: str, bits: int, group_size: int, dtype: str,
                      tp: int = 1, pp: int = 1) -> int:
    """The bytes of the quantized tensors Marlin's repacking replaces that sit in split
    blocks (under REPACK_SPLIT_BYTES), on one GPU: 0 for schemes Marlin does not take.
    Whether the GPU loads them through Marlin is the caller's (estimate.marlin_repacks):
    8-bit FP8 weights are repacked only below native FP8."""
    four = quant in ("awq", "gptq", "compressed-tensors") and bits == 4
    eight = quant in ("fp8", "compressed-tensors") and bits == 8
    if not (four or eight):
        return 0
    plain = DTYPE_BYTES.get(dtype, 2)
    h = arch.hidden_size
    q_out = arch.attention_heads * arch.head_dim // tp
    kv_out = max(1, arch.kv_heads // tp) * arch.head_dim
    experts = arch.experts
    inter = (arch.expert_intermediate_size if experts else arch.intermediate_size) // tp
    shapes = [(h, q_out + 2 * kv_out, 1), (q_out, h, 1), (h, 2 * inter, max(experts, 1)),
              (inter, h, max(experts, 1))]
    per_layer = sum(t * n for i, o, n in shapes
                    for t in _registered(quant, bits, group_size, i, o, False, plain)
                    if t * n < REPACK_SPLIT_BYTES)
    return per_layer * -(-arch.layers // pp)
