"""Model folders the tests build: config.json plus safetensors, with real tensor layouts.

Tensor names and shapes follow Hugging Face's Llama/Qwen2 modules and, for quantized
folders, the layouts AutoAWQ (GEMM) and GPTQ write, so that sizes read from the files'
headers can be checked against sizes computed from the architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

TINY_LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 512,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


# A catalog family file for the tiny model; `{repo}` and `{layers}` are filled in.
TINY_FAMILY = """
family = "Tiny"
vendor = "the tests"

[[models]]
id = "tiny"
name = "Tiny Llama"
repo = "{repo}"
license = "apache-2.0"
released = "2026-11-29"
params_b = 0.0027
params_source = "built by tests/tinymodels.py"
languages = ["en"]
strengths = ["edge"]

[models.arch]
architecture = "LlamaForCausalLM"
layers = {layers}
hidden_size = 256
intermediate_size = 512
attention_heads = 4
kv_heads = 2
head_dim = 64
vocab_size = 512
tied_embeddings = false
native_context = 2048
source = "https://example.invalid/config.json"

[[models.scores]]
benchmark = "MMLU"
value = 25.0
source = "https://example.invalid/card"
harness = "example card"
metric = "accuracy"

[[models.checkpoints]]
repo = "{repo}"

[[models.checkpoints]]
repo = "{repo}-AWQ"
quant = "awq"
bits = 4
group_size = 128
dtype = "float16"

[[models.checkpoints]]
repo = "{repo}-GPTQ-Int4"
quant = "gptq"
bits = 4
group_size = 128
dtype = "float16"

[[models.checkpoints]]
repo = "{repo}"
quant = "fp8"
bits = 8
"""


def _linears(c: dict[str, Any]) -> list[tuple[str, int, int, bool]]:
    h, hd = c["hidden_size"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    q, kv, inter = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd, c["intermediate_size"]
    bias = c["model_type"] == "qwen2"
    return [("self_attn.q_proj", h, q, bias), ("self_attn.k_proj", h, kv, bias),
            ("self_attn.v_proj", h, kv, bias), ("self_attn.o_proj", q, h, False),
            ("mlp.gate_proj", h, inter, False), ("mlp.up_proj", h, inter, False),
            ("mlp.down_proj", inter, h, False)]


def build_model(folder: Path, config: dict[str, Any] | None = None, quant: str = "none",
                group_size: int = 128, seed: int = 0) -> Path:
    """Write a random model of `config`'s shape: plain bf16, or in the layout of a 4-bit AWQ or
    GPTQ (gptq8: 8-bit GPTQ) or an llm-compressor W4A16 or INT8 W8A8 checkpoint."""
    c = dict(TINY_LLAMA if config is None else config)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    plain = torch.float16 if quant != "none" else torch.bfloat16
    h, vocab = c["hidden_size"], c["vocab_size"]
    t: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": (torch.randn(vocab, h, generator=g) * 0.02).to(plain),
        "model.norm.weight": torch.ones(h, dtype=plain),
    }
    if not c.get("tie_word_embeddings"):
        t["lm_head.weight"] = (torch.randn(vocab, h, generator=g) * 0.02).to(plain)
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        t[p + "input_layernorm.weight"] = torch.ones(h, dtype=plain)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=plain)
        for name, fan_in, fan_out, bias in _linears(c):
            if bias:
                t[p + name + ".bias"] = torch.zeros(fan_out, dtype=plain)
            if quant == "none":
                t[p + name + ".weight"] = (torch.randn(fan_out, fan_in, generator=g) * 0.02).to(plain)
                continue
            groups = fan_in // group_size
            rand = lambda *shape: torch.randint(0, 2**31 - 1, shape, generator=g, dtype=torch.int32)  # noqa: E731
            if quant == "awq":  # AutoAWQ GEMM
                t[p + name + ".qweight"] = rand(fan_in, fan_out // 8)
                t[p + name + ".qzeros"] = rand(groups, fan_out // 8)
                t[p + name + ".scales"] = torch.rand(groups, fan_out, generator=g).to(torch.float16)
            elif quant in ("gptq", "gptq8"):
                per_int = 8 if quant == "gptq" else 4  # weights packed in one int32
                t[p + name + ".qweight"] = rand(fan_in // per_int, fan_out)
                t[p + name + ".qzeros"] = rand(groups, fan_out // per_int)
                t[p + name + ".scales"] = torch.rand(groups, fan_out, generator=g).to(torch.float16)
                t[p + name + ".g_idx"] = torch.arange(fan_in, dtype=torch.int32) // group_size
            elif quant == "w8a8":  # compressed-tensors int-quantized, per channel
                t[p + name + ".weight"] = torch.randint(-127, 128, (fan_out, fan_in), generator=g,
                                                        dtype=torch.int8)
                t[p + name + ".weight_scale"] = (torch.rand(fan_out, 1, generator=g) * 1e-3).to(plain)
            elif quant == "w4a16":  # compressed-tensors pack-quantized, symmetric groups
                t[p + name + ".weight_packed"] = rand(fan_out, fan_in // 8)
                t[p + name + ".weight_scale"] = torch.rand(fan_out, groups, generator=g).to(plain)
                t[p + name + ".weight_shape"] = torch.tensor([fan_out, fan_in], dtype=torch.int64)
            else:
                raise ValueError(quant)
    if quant in ("w8a8", "w4a16"):
        c["quantization_config"] = _compressed_tensors(quant, group_size)
        c["torch_dtype"] = "float16"
    elif quant != "none":
        # as AutoAWQ (GEMM, with zero points) and AutoGPTQ (symmetric, no act-order) write it
        c["quantization_config"] = {"quant_method": quant.rstrip("8"),
                                    "bits": 8 if quant == "gptq8" else 4, "group_size": group_size,
                                    **({"zero_point": True, "version": "gemm"} if quant == "awq"
                                       else {"desc_act": False, "sym": True})}
        c["torch_dtype"] = "float16"
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(c, indent=2))
    return folder


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    """A byte-level BPE tokenizer trained here on a few sentences, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["The quick brown fox jumps over the lazy dog. Small language models run at the edge.",
            "Hello! How are you today? I am a tiny model built by a test, and I say random things.",
            "vLLM serves an OpenAI-compatible API; the advisor supervises it and shows its metrics."]
    tok.train_from_iterator(text * 50, trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "model_max_length": 1_000_000, "chat_template": CHAT_TEMPLATE,
    }, indent=2))


def _compressed_tensors(quant: str, group_size: int) -> dict[str, Any]:
    """The quantization_config llm-compressor writes for INT8 W8A8 (RedHatAI's
    …-quantized.w8a8) and for W4A16 (…-quantized.w4a16)."""
    int8 = quant == "w8a8"
    weights = {"num_bits": 8 if int8 else 4, "type": "int", "symmetric": True, "dynamic": False,
               "strategy": "channel" if int8 else "group",
               "group_size": None if int8 else group_size, "actorder": None,
               "block_structure": None, "observer": "minmax", "observer_kwargs": {}}
    inputs = {"num_bits": 8, "type": "int", "symmetric": True, "dynamic": True,
              "strategy": "token", "group_size": None, "actorder": None,
              "block_structure": None, "observer": None, "observer_kwargs": {}} if int8 else None
    return {"quant_method": "compressed-tensors", "quantization_status": "compressed",
            "format": "int-quantized" if int8 else "pack-quantized", "ignore": ["lm_head"],
            "kv_cache_scheme": None,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": inputs,
                                          "output_activations": None}}}


def build_servable_model(folder: Path, quant: str = "none", **overrides: Any) -> Path:
    """The tiny Llama (or a variant of it) with a tokenizer: something vLLM's CPU engine serves;
    `quant`: plain, or its 4-bit AWQ or GPTQ layout."""
    build_model(folder, {**TINY_LLAMA, **overrides}, quant=quant)
    build_tokenizer(folder, vocab_size=int(overrides.get("vocab_size", TINY_LLAMA["vocab_size"])))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return folder
