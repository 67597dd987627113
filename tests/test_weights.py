"""Checkpoint sizes computed from the architecture equal what the safetensors files hold."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from tinymodels import TINY_LLAMA, build_model

from advisor.hfmeta import arch_from_config
from advisor.modelfiles import read_local
from advisor.specs import Checkpoint
from advisor.weights import active_param_count, checkpoint_bytes, load_overhead_bytes, param_count

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


MIB = 2**20
# Llama-3.1-8B's config.json: every tensor vLLM builds (fused qkv 48 MiB, o 32, gate_up 224,
# down 112, embeddings 1002) is a whole number of 2 MiB
LLAMA_8B = arch_from_config({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 32,
    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
    "tie_word_embeddings": False, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16"}, "x")


def test_a_model_of_whole_2mib_tensors_holds_only_its_rotary_cache_beside_them() -> None:
    # the cos/sin cache: max_position × head_dim in bf16
    assert load_overhead_bytes(LLAMA_8B, "none", 16, 0, "bfloat16") == 131072 * 128 * 2


def test_a_tensor_that_leaves_at_most_1mib_of_its_segment_is_counted_at_the_segment() -> None:
    # Qwen2.5-7B: qkv 31.5 MiB (32 MiB segment), gate_up 259 (260), down 129.5 (130) are
    # not split; o_proj 24.5 MiB leaves 1.5 MiB of a 26 MiB segment, which is split off
    qwen = msgspec.structs.replace(LLAMA_8B, layers=28, hidden_size=3584, intermediate_size=18944,
                                   attention_heads=28, kv_heads=4, vocab_size=152064,
                                   native_context=32768, qkv_bias=True)
    over = load_overhead_bytes(qwen, "none", 16, 0, "bfloat16")
    rope = 32768 * 128 * 2
    assert over - rope == pytest.approx(28 * 2 * MIB + 2 * MIB // 2, abs=MIB // 8)
    # vLLM 0.19 printed "Model loading took 14.25 GiB" for Qwen2.5-7B-Instruct on an H100
    # (tests/data/vllm_logs/planner-v0190-qwen25-7b-h100.log), whose tensors are 14.185 GiB
    assert (checkpoint_bytes(qwen, Checkpoint(repo="q")) + over) / 2**30 == pytest.approx(14.25, abs=0.005)


def test_a_tied_head_is_built_then_dropped_and_tensor_parallel_splits_the_tensors() -> None:
    tied = msgspec.structs.replace(LLAMA_8B, tied_embeddings=True)
    assert load_overhead_bytes(tied, "none", 16, 0, "bfloat16") == 131072 * 128 * 2
    # tp 2: the layers' shards are still whole 2 MiB; the embeddings' and the head's 501 MiB
    # each take a 502 MiB segment
    assert load_overhead_bytes(LLAMA_8B, "none", 16, 0, "bfloat16", 2) == 131072 * 128 * 2 + 2 * MIB


def test_marlins_repacking_holds_the_replaced_tensors_under_the_split_size() -> None:
    # weights.py::repack_held_bytes: per layer, the 4-bit tensors under 20 MiB that Marlin's
    # repacking replaces. Qwen2.5-1.5B-AWQ: every one of them (gate_up's qweight is 13.8 MB);
    # Qwen3-14B-AWQ: all but gate_up's and down's qweights (89 and 45 MB)
    from advisor.catalog import load_catalog
    from advisor.estimate import EngineSettings, Target, estimate, marlin_repacks
    from advisor.weights import REPACK_SPLIT_BYTES, repack_held_bytes

    catalog = load_catalog()
    small = catalog.by_id("qwen2.5-1.5b")
    big = catalog.by_id("qwen3-14b")
    assert small and big
    a = small.arch
    per_layer = 0
    for i, o in [(a.hidden_size, (a.attention_heads + 2 * a.kv_heads) * a.head_dim),
                 (a.attention_heads * a.head_dim, a.hidden_size),
                 (a.hidden_size, 2 * a.intermediate_size), (a.intermediate_size, a.hidden_size)]:
        groups = i // 128
        per_layer += i * o // 2 + groups * o // 2 + groups * o * 2  # qweight, qzeros, scales
        assert i * o // 2 < REPACK_SPLIT_BYTES
    assert repack_held_bytes(a, "awq", 4, 128, "float16") == per_layer * a.layers
    assert repack_held_bytes(a, "awq", 4, 128, "float16") / 2**30 == pytest.approx(0.63, abs=0.01)
    assert repack_held_bytes(big.arch, "awq", 4, 128, "float16") / 2**30 == pytest.approx(1.41, abs=0.01)
    # no repacking: plain checkpoints, and 8-bit ones where Marlin does not take them (INT8
    # W8A8 anywhere, FP8 on native FP8: estimate.marlin_repacks decides, tests/
    # test_compute_capability.py); each rank holds its share at tp 2
    assert repack_held_bytes(a, "none", 16, 0, "bfloat16") == 0
    int8 = next(c for c in catalog.by_id("llama-3.2-1b").checkpoints  # type: ignore[union-attr]
                if c.repo.endswith("quantized.w8a8"))
    assert not marlin_repacks(int8, Target(engine="vllm", gpu_gib=39.38, compute_capability=(8, 0)))
    assert repack_held_bytes(big.arch, "awq", 4, 128, "float16", tp=2) < \
        repack_held_bytes(big.arch, "awq", 4, 128, "float16")
    # charged from 0.27, when vLLM reads consumed memory from free memory; shown as non-torch
    awq = next(c for c in big.checkpoints if c.quant == "awq")
    card = Target(engine="vllm", gpu_gib=31.36, gpus=1)
    old = estimate(big, awq, card, EngineSettings(max_model_len=16384, vllm_version=(0, 26)))
    new = estimate(big, awq, card, EngineSettings(max_model_len=16384, vllm_version=(0, 28)))
    assert "non_torch_gib_repack" in new.provenance and "non_torch_gib_repack" not in old.provenance
    plain = next(c for c in big.checkpoints if c.quant == "none")
    same = EngineSettings(max_model_len=16384, vllm_version=(0, 28))
    assert new.non_torch_gib == pytest.approx(
        estimate(big, plain, card, same).non_torch_gib + 1.41, abs=0.011)
    assert old.non_torch_gib == pytest.approx(
        estimate(big, plain, card, EngineSettings(max_model_len=16384,
                                                  vllm_version=(0, 26))).non_torch_gib)
