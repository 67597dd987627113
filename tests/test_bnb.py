"""bitsandbytes NF4 (the seed's BitsAndBytesConfig path): vLLM's in-flight layout, checked
against a measured vLLM log, and the CPU engine's refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.advice import estimate_for
from advisor.catalog import load_catalog
from advisor.estimate import cpu_engine_refuses
from advisor.profile import read_host
from advisor.specs import Checkpoint, PlanRequest
from advisor.weights import linear_layers

GIB = 2**30


def test_nf4_in_flight_weights_follow_vllms_layout_anchored_on_a_measured_log() -> None:
    catalog = load_catalog()
    req = PlanRequest(model="qwen2.5-7b", quant="bitsandbytes", gpu_gib=22.16, gpus=1,
                      max_model_len=4096)
    est = estimate_for(req, catalog, read_host(), [])
    assert est.quant == "bitsandbytes"
    # tests/data/vllm_logs/rtx4060-qwen25-7b-bnb4-FAILED-v0engine.log: vLLM 0.7.3 loaded a
    # Qwen2.5-7B-Instruct bnb-4bit in 5.20 GiB, its absmax still double-quantized (one uint8
    # per block of 64, one fp32 per 256 blocks). vLLM's loader now (vllm-bnb-plugin,
    # bitsandbytes_loader.py::_dequantize_dq) turns every absmax into fp32 at load: 3 more
    # bytes per block, less the nested fp32. Embeddings and the head stay bf16 either way.
    model = catalog.by_id("qwen2.5-7b")
    assert model is not None
    blocks = sum(lin.in_features * lin.out_features * lin.count for lin in linear_layers(model.arch)) / 64
    dequantized = 5.20 + blocks * (4 - 1 - 4 / 256) / GIB
    assert est.weights_gib == pytest.approx(dequantized, abs=0.05), "measured 5.20 (0.7.3, nested absmax)"
    assert est.weights_gib < 0.4 * estimate_for(PlanRequest(model="qwen2.5-7b", quant="none", gpu_gib=22.16,
                                                            gpus=1, max_model_len=4096),
                                                catalog, read_host(), []).weights_gib


def test_the_cpu_engine_refuses_nf4_with_the_reason() -> None:
    est = estimate_for(PlanRequest(model="qwen2.5-0.5b", quant="bitsandbytes", gpus=0,
                                   max_model_len=2048), load_catalog(), read_host(), [])
    assert not est.fits
    assert "does not quantize at load (bitsandbytes)" in est.reason
    assert "AWQ or GPTQ" in est.reason


def test_a_prequantized_bnb_checkpoint_is_refused_on_the_cpu_engine_with_the_plugins_reason() -> None:
    why = cpu_engine_refuses(Checkpoint(repo="unsloth/Qwen2.5-7B-Instruct-bnb-4bit",
                                        quant="bitsandbytes", bits=4))
    assert "vllm-bnb-plugin" in why and "CUDA" in why and "AWQ or GPTQ" in why


def _bnb_folder(folder: Path) -> int:
    """A Llama of TINY_LLAMA's shape saved as transformers saves a bnb-4bit NF4 model with
    double quantization; returns the bytes vLLM holds of it (absmax as fp32 per block)."""
    import json

    import torch
    from safetensors.torch import save_file
    from tinymodels import TINY_LLAMA

    c = TINY_LLAMA
    h, inter, n, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.zeros(vocab, h, dtype=torch.bfloat16),
                                  "lm_head.weight": torch.zeros(vocab, h, dtype=torch.bfloat16),
                                  "model.norm.weight": torch.zeros(h, dtype=torch.bfloat16)}
    held = 2 * (2 * vocab * h + h)
    for i in range(n):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = torch.zeros(h, dtype=torch.bfloat16)
        t[p + "post_attention_layernorm.weight"] = torch.zeros(h, dtype=torch.bfloat16)
        held += 2 * 2 * h
        for name, out, inp in (("self_attn.q_proj", h, h), ("self_attn.k_proj", kv, h),
                               ("self_attn.v_proj", kv, h), ("self_attn.o_proj", h, h),
                               ("mlp.gate_proj", inter, h), ("mlp.up_proj", inter, h),
                               ("mlp.down_proj", h, inter)):
            w, blocks = p + name + ".weight", out * inp // 64
            t[w] = torch.zeros(out * inp // 2, 1, dtype=torch.uint8)
            t[w + ".absmax"] = torch.zeros(blocks, dtype=torch.uint8)
            t[w + ".nested_absmax"] = torch.zeros(-(-blocks // 256), dtype=torch.float32)
            t[w + ".nested_quant_map"] = torch.zeros(256, dtype=torch.float32)
            t[w + ".quant_map"] = torch.zeros(16, dtype=torch.float32)
            t[w + ".quant_state.bitsandbytes__nf4"] = torch.zeros(120, dtype=torch.uint8)
            held += out * inp // 2 + blocks * 4 + 16 * 4
    folder.mkdir(parents=True)
    save_file(t, str(folder / "model.safetensors"))
    config = {**c, "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
        "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16"}}
    (folder / "config.json").write_text(json.dumps(config))
    return held


def test_a_prequantized_bnb_4bit_folder_is_estimated_as_vllm_holds_it_and_refused_on_cpu(
        tmp_path: Path) -> None:
    folder = tmp_path / "tiny-bnb-4bit"
    held = _bnb_folder(folder)
    catalog, host = load_catalog(), read_host()
    gpu = estimate_for(PlanRequest(model=str(folder), gpu_gib=15.0, gpus=1, max_model_len=1024),
                       catalog, host, [])
    assert gpu.quant == "bitsandbytes" and gpu.fits, gpu.reason
    assert gpu.weights_gib == pytest.approx(held / GIB, abs=0.005)
    assert "absmax as fp32" in gpu.provenance["weights_gib"]
    cpu = estimate_for(PlanRequest(model=str(folder), gpus=0, max_model_len=1024), catalog, host, [])
    assert not cpu.fits and "vllm-bnb-plugin" in cpu.reason
