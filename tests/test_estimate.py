"""The estimator's verdicts and figures, as a user would check them."""

from __future__ import annotations

import msgspec
import pytest

from advisor.advice import estimate_for
from advisor.catalog import load_catalog, load_gpus
from advisor.errors import AdvisorError, ModelNotFound
from advisor.estimate import EngineSettings, Target, estimate
from advisor.plan import checkpoint_for, plan
from advisor.profile import read_host
from advisor.specs import PlanRequest
from advisor.weights import load_overhead_bytes

CATALOG, GPUS, HOST = load_catalog(), load_gpus(), read_host()


def est(**kw: object):  # type: ignore[no-untyped-def]
    return estimate_for(msgspec.convert(kw, PlanRequest), CATALOG, HOST, GPUS)


def test_phi4_in_bf16_does_not_fit_one_24_gib_gpu_but_4_bit_phi4_does() -> None:
    bf16 = est(model="phi-4", gpu_gib=24)
    assert not bf16.fits and "weights alone" in bf16.reason
    assert "Cheapest change that fits: use " in bf16.reason
    four = est(model="phi-4", gpu_gib=24, quant="compressed-tensors")
    assert four.fits and four.weights_gib < 9
    assert four.max_model_len == 16384  # the model's native context fits


def test_fp8_kv_cache_doubles_the_tokens_of_the_same_pool() -> None:
    auto = est(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192)
    fp8 = est(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token * 2 == auto.kv_bytes_per_token
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, rel=0.001)


def test_without_a_length_the_longest_that_fits_is_capped_at_native_context() -> None:
    roomy = est(model="qwen2.5-7b", gpu="H100 80GB")
    assert roomy.max_model_len == 32768
    tight = est(model="llama-3.1-8b", gpu="RTX 3090", quant="awq")
    assert tight.fits and tight.max_model_len is not None and tight.max_model_len < 131072


def test_a_context_too_long_for_the_pool_names_the_cheapest_fix() -> None:
    e = est(model="llama-3.1-8b", gpu="L4", max_model_len=131072)
    assert not e.fits and "KV cache" in e.reason
    assert "Cheapest change that fits:" in e.reason


def test_heads_that_do_not_divide_across_gpus_are_refused() -> None:
    e = est(model="qwen2.5-7b", gpu="L4", gpus=8, tp=8, max_model_len=4096)  # 28 heads
    assert not e.fits and "28 attention heads do not divide across 8 GPUs" in e.reason


def test_a_second_gpu_is_the_fix_when_nothing_smaller_fits() -> None:
    model = CATALOG.by_id("qwen2.5-14b")
    assert model
    plain = checkpoint_for(model, None)
    assert plain
    e = plan(model, plain, Target(engine="vllm", gpu_gib=22.16, gpus=2), EngineSettings())
    assert not e.fits
    e2 = plan(model, plain, Target(engine="vllm", gpu_gib=22.16, gpus=2), EngineSettings(tp=2))
    # half the checkpoint per GPU, and what torch's allocator rounds each shard up to
    held = load_overhead_bytes(model.arch, "none", 16, 0, plain.dtype, 2) / 2**30
    assert held > 0.1
    assert e2.fits and e2.weights_gib == pytest.approx(27.51 / 2 + held, abs=0.01)


def test_free_memory_below_the_reservation_is_refused_with_a_lower_utilization() -> None:
    model = CATALOG.by_id("qwen2.5-1.5b")
    assert model
    ckpt = checkpoint_for(model, None)
    assert ckpt
    busy = Target(engine="vllm", gpu_gib=79.19, gpus=1, free_gib=40.0)
    e = plan(model, ckpt, busy, EngineSettings(max_model_len=8192))
    assert not e.fits and "only 40.00 GiB is free" in e.reason
    assert "--gpu-memory-utilization 0.49" in e.reason


def test_concurrency_beyond_the_pool_fits_but_does_not_meet_the_request() -> None:
    e = est(model="llama-3.1-8b", gpu="RTX 3090", quant="awq", max_model_len=32768, concurrency=64)
    assert e.fits and not e.meets_request and e.max_concurrency < 64


def test_cuda_graphs_sit_inside_the_reservation_from_vllm_021() -> None:
    # 0.21 against 0.20: the same version row for every other term
    new = est(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192, vllm_version="0.21")
    old = est(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192, vllm_version="0.20")
    assert new.kv_cache_gib == pytest.approx(old.kv_cache_gib - new.cuda_graph_gib, abs=0.02)
    assert "inside" in new.provenance["cuda_graph_gib"]
    assert "outside" in old.provenance["cuda_graph_gib"]


def test_every_figure_says_where_it_came_from() -> None:
    e = est(model="qwen2.5-7b", gpu="A100 80GB")
    for key in ("weights_gib", "activation_gib", "kv_cache_gib", "kv_bytes_per_token",
                "decode_tokens_per_s", "ttft_s"):
        assert e.provenance[key], key
    assert e.decode_tokens_per_s and e.ttft_s and "estimate" in e.provenance["decode_tokens_per_s"]


def test_the_cpu_engine_plans_with_ram_and_a_whole_gib_kv_space() -> None:
    e = est(model="qwen2.5-0.5b", gpus=0, ram_gib=8)
    assert e.engine == "vllm-cpu" and e.fits
    assert isinstance(e.cpu_kv_space_gib, int) and e.cpu_kv_space_gib >= 1
    too_small = est(model="qwen2.5-14b", gpus=0, ram_gib=8)
    assert not too_small.fits and "RAM" in too_small.reason


def test_an_unknown_repo_offline_is_refused_by_name() -> None:
    with pytest.raises(ModelNotFound, match="model: someone/unknown-7b is not in the catalog"):
        est(model="someone/unknown-7b")


def test_a_quantization_the_model_lacks_is_refused_by_name() -> None:
    with pytest.raises(AdvisorError, match="quant: gemma-3-1b has no awq checkpoint"):
        est(model="gemma-3-1b", quant="awq")


def test_hybrid_sliding_window_models_need_fewer_kv_blocks() -> None:
    gemma = CATALOG.by_id("gemma-3-12b")
    assert gemma
    ckpt = checkpoint_for(gemma, None)
    assert ckpt
    e = estimate(gemma, ckpt, Target(engine="vllm", gpu_gib=79.19, gpus=1),
                 EngineSettings(max_model_len=32768))
    all_full = e.kv_cache_gib * 2**30 / (e.kv_bytes_per_token * 32768)
    # five layers in six keep only a 1,024-token window plus the 8,192 tokens in flight:
    # (8 × 32,768 + 40 × 9,232) token-layers a sequence instead of 48 × 32,768
    assert e.max_concurrency == pytest.approx(all_full * 48 * 32768 / (8 * 32768 + 40 * 9232),
                                              rel=0.01)


def test_the_closed_form_longest_context_equals_vllms_binary_search() -> None:
    """vLLM binary-searches max_model_len; the estimator solves it in closed form. Both must
    agree for every layout in the catalog (full attention, hybrid sliding-window, and an
    all-sliding one), batch size, block size, native length and pool, small pools above all
    (where a sequence barely fits)."""
    import random

    from advisor.estimate import KvLayout, _longest_fitting, kv_layout

    def vllm_search(available: int, layout: KvLayout, native: int) -> int:
        usable = available - layout.bytes_per_block

        def fits(n: int) -> bool:
            return layout.blocks_per_request(n) * layout.bytes_per_block <= usable

        if not fits(1):
            return 0
        lo, hi, best = 1, native, 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if fits(mid):
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

    rng = random.Random(7)
    archs = {m.arch for m in CATALOG.models}
    hybrid = [a for a in archs if a.sliding_window]
    assert hybrid and len(hybrid) < len(archs)
    archs.add(msgspec.structs.replace(hybrid[0], sliding_window_pattern=1))  # every layer slides
    for arch in archs:
        for tp, batched, block in ((1, 2048, 16), (2, 8192, 16), (1, 2048, 128)):
            layout = kv_layout(arch, 2, tp, block, batched)
            for native in (arch.native_context, 1000, 3 * arch.native_context):
                for _ in range(40):
                    available = int(layout.bytes_per_block * 2 ** rng.uniform(0, 20))
                    available = min(available, 80 * 2**30)
                    assert _longest_fitting(available, layout, native) == \
                        vllm_search(available, layout, native), arch


def test_the_cpu_engine_refuses_what_it_cannot_load() -> None:
    """vLLM's CPU build (0.32) dies on fp8 (`_C::static_scaled_fp8_quant() expected at most 0
    argument(s)`), does not quantize at load, and has weight-only kernels for 4 bits only."""
    from advisor.catalog import load_catalog
    from advisor.estimate import EngineSettings, Target, cpu_engine_refuses, estimate

    catalog = load_catalog()
    m = catalog.by_id("llama-3.1-8b")
    assert m
    cpu = Target(engine="vllm-cpu", ram_gib=64)
    seen = set()
    for c in m.checkpoints:
        e = estimate(m, c, cpu, EngineSettings(max_model_len=4096))
        refused = cpu_engine_refuses(c)
        loadable = not c.at_load and (
            c.quant == "none" or (c.quant in ("awq", "gptq") and c.bits == 4)
            or (c.quant == "compressed-tensors" and (c.bits == 4 or (
                c.bits == 8 and "fp8" not in c.repo.lower()))))
        assert bool(refused) != loadable, c.repo
        assert e.fits == loadable, (c.repo, e.reason)
        if refused:
            assert refused in e.reason and "CPU engine" in e.reason
        seen.add((c.quant, c.at_load, loadable))
    # the sample covers an at-load fp8, a published FP8 and an INT8 compressed-tensors one
    assert ("fp8", True, False) in seen and ("compressed-tensors", False, True) in seen
    assert ("compressed-tensors", False, False) in seen
    # GPTQ at 8 bits has no CPU kernel (CPUWNA16 takes uint4 and uint4b8 only)
    qwen = catalog.by_id("qwen2.5-3b")
    assert qwen
    int8 = next(c for c in qwen.checkpoints if c.repo == "Qwen/Qwen2.5-3B-Instruct-GPTQ-Int8")
    assert "4-bit weights only" in estimate(qwen, int8, cpu, EngineSettings()).reason


def test_no_cpu_ranking_offers_a_checkpoint_the_cpu_engine_cannot_load() -> None:
    from advisor.advice import recommend_for
    from advisor.catalog import load_catalog, load_gpus
    from advisor.estimate import cpu_engine_refuses
    from advisor.profile import read_host
    from advisor.specs import PlanRequest

    catalog, gpus, host = load_catalog(), load_gpus(), read_host()
    for use_case in ("code", "chat", "edge"):
        rows = recommend_for(PlanRequest(use_case=use_case, gpus=0, ram_gib=16), catalog, host,
                             gpus).results
        fitting = [r for r in rows if r.estimate.fits]
        assert fitting
        for r in fitting:
            ckpt = next(c for m in catalog.models for c in m.checkpoints
                        if c.repo == r.estimate.repo and c.quant == r.estimate.quant)
            assert not cpu_engine_refuses(ckpt), r.estimate.repo


def test_a_pool_too_small_for_one_block_is_refused_not_called_a_fit() -> None:
    """A card where what is left after weights, activation, non-torch and graphs is positive
    but under two KV blocks (vLLM's null block and one more): no context starts. The
    estimate once said `fits` with 0 tokens and no length, and the home page gave a 500."""
    # the smallest card it fits, bisected (the overhead is the same on any card under 70 GiB,
    # but the figures an estimate prints are rounded to 0.01 GiB, a thousand blocks): just
    # below it the pool is positive and under the two blocks needed
    lo, hi = 1.0, 16.0  # its weights alone exceed 1 GiB
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if est(model="llama-3.2-1b", gpu_gib=mid).fits else (mid, hi)
    e = est(model="llama-3.2-1b", gpu_gib=lo)
    assert e.kv_cache_gib < 0.01
    assert not e.fits and e.max_concurrency == 0.0
    assert "too little for one 16-token block" in e.reason
