"""bitsandbytes NF4 (the seed's BitsAndBytesConfig path): vLLM's in-flight layout, checked
against a measured vLLM log, and the CPU engine's refusal."""

from __future__ import annotations

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
