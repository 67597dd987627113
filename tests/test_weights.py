"""Checkpoint sizes computed from the architecture equal what the safetensors files hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinymodels import TINY_LLAMA, build_model

from advisor.hfmeta import arch_from_config
from advisor.modelfiles import read_local
from advisor.specs import Checkpoint
from advisor.weights import active_param_count, checkpoint_bytes, param_count

TINY_QWEN2 = {**TINY_LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "num_hidden_layers": 3, "tie_word_embeddings": True}


@pytest.mark.parametrize("config", [TINY_LLAMA, TINY_QWEN2], ids=["llama", "qwen2-bias-tied"])
@pytest.mark.parametrize("quant", ["none", "awq", "gptq"])
def test_computed_size_equals_the_bytes_in_the_safetensors_file(
    tmp_path: Path, config: dict[str, object], quant: str
) -> None:
    folder = build_model(tmp_path / "m", dict(config), quant=quant)
    meta = read_local(folder)
    arch = arch_from_config(meta.config, str(folder))
    ckpt = Checkpoint(repo="local/m", quant=quant, bits=16 if quant == "none" else 4,  # type: ignore[arg-type]
                      group_size=0 if quant == "none" else 128,
                      dtype="bfloat16" if quant == "none" else "float16")
    assert checkpoint_bytes(arch, ckpt) == meta.weight_bytes
    assert meta.quant == quant


def test_parameter_count_of_the_plain_checkpoint_counts_every_tensor(tmp_path: Path) -> None:
    meta = read_local(build_model(tmp_path / "m"))
    arch = arch_from_config(meta.config, "x")
    stored = sum(t.nbytes for t in meta.tensors.values()) // 2  # bf16
    assert param_count(arch) == stored
    assert active_param_count(arch) == stored  # dense: every parameter is active


def test_a_4bit_checkpoint_is_about_a_quarter_of_bf16_plus_unquantized_layers(tmp_path: Path) -> None:
    big = {**TINY_LLAMA, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
           "num_key_value_heads": 4, "vocab_size": 256}
    arch = arch_from_config(big, "x")
    bf16 = checkpoint_bytes(arch, Checkpoint(repo="a"))
    awq = checkpoint_bytes(arch, Checkpoint(repo="a", quant="awq", bits=4, group_size=128,
                                            dtype="float16"))
    # 4 bits a weight plus a 16-bit scale and a 4-bit zero per group of 128
    assert 0.25 < awq / bf16 < 0.30


def test_moe_active_parameters_are_a_share_of_the_experts() -> None:
    moe = arch_from_config({**TINY_LLAMA, "num_experts": 8, "num_experts_per_tok": 2,
                            "moe_intermediate_size": 128}, "x")
    assert moe.experts == 8
    assert active_param_count(moe) < param_count(moe)
