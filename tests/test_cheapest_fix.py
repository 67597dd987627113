"""The cheapest change that makes a "does not fit" fit: searched over combinations, each
checked with the estimator, and cheapest by the order docs/fixes.md gives."""

from __future__ import annotations

import itertools
import random
import re

import msgspec
import pytest

from advisor.advice import estimate_for
from advisor.catalog import load_catalog, load_gpus
from advisor.estimate import EngineSettings, Target, estimate, fits
from advisor.plan import CHECKPOINT, CONTEXT, FLAG, GPUS, KV_DTYPE, FitChecks, find_fix
from advisor.profile import read_host
from advisor.specs import Checkpoint, Model, PlanRequest

CATALOG, GPUS_TABLE, HOST = load_catalog(), load_gpus(), read_host()
RTX_3060, T4, L4 = 11.63, 14.74, 22.16  # CUDA's totals (DESIGN.md)


def model(model_id: str) -> Model:
    m = CATALOG.by_id(model_id)
    assert m
    return m


def ckpt(m: Model, repo: str) -> Checkpoint:
    return next(c for c in m.checkpoints if c.repo == repo and not c.at_load)


def gpu(gib: float, gpus: int = 1) -> Target:
    # NVLinked, so that tp is the layout placement plans: without NVLink (or where the heads
    # do not divide) the fix names pp (tests/test_multi_gpu.py)
    return Target(engine="vllm", gpu_gib=gib, gpus=gpus, nvlink=True)


def test_on_the_cpu_engine_another_checkpoint_is_tried() -> None:
    """Qwen2.5-7B on 12 GiB of RAM: bf16 needs 17.7 GiB; its 4-bit checkpoints fit. The CPU
    engine loads AWQ and GPTQ as published; the fp8 one would be quantized at load, which it
    does not do, so that one (8.1 GiB, bigger) is passed over."""
    e = estimate_for(msgspec.convert({"model": "qwen2.5-7b", "gpus": 0, "ram_gib": 12},
                                     PlanRequest), CATALOG, HOST, GPUS_TABLE)
    assert not e.fits
    assert "Cheapest change that fits: use Qwen/Qwen2.5-7B-Instruct-" in e.reason
    assert "4-bit" in e.reason and "fp8" not in e.reason
    m = model("qwen2.5-7b")
    fix = find_fix(m, ckpt(m, "Qwen/Qwen2.5-7B-Instruct"), Target(engine="vllm-cpu", ram_gib=12),
                   EngineSettings())
    assert fix and fix.ckpt.quant in ("awq", "gptq") and fix.ckpt.bits == 4
    assert estimate(m, fix.ckpt, fix.target, fix.settings).fits


def test_the_cpu_engine_is_never_offered_an_fp8_checkpoint() -> None:
    m = model("llama-3.1-8b")
    fix = find_fix(m, ckpt(m, "meta-llama/Llama-3.1-8B-Instruct"),
                   Target(engine="vllm-cpu", ram_gib=12), EngineSettings())
    # the INT8 (w8a8) checkpoint, not the FP8-dynamic one of the same size
    assert fix and fix.ckpt.repo == "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8"


def _first(values, ok):  # type: ignore[no-untyped-def]
    """The first value the estimator itself puts at the edge the test is about: the scenarios
    below follow the fitted terms instead of pinning numbers they happen to give today."""
    found = next((v for v in values if ok(v)), None)
    assert found is not None, "no scenario shows the behaviour under today's terms"
    return found


def test_a_fix_that_needs_two_changes_is_found() -> None:
    """Gemma 3 12B at a longer context than fits on a T4: neither a 4-bit checkpoint nor a higher
    utilization fits alone; both together do (the one-change-at-a-time search said tp 4 on
    GPUs not given)."""
    m = model("gemma-3-12b")
    plain, target = ckpt(m, "google/gemma-3-12b-it"), gpu(T4)
    four_bit = ckpt(m, "ISTA-DASLab/gemma-3-12b-it-GPTQ-4b-128g")

    def both_needed(length: int) -> bool:
        s = EngineSettings(max_model_len=length)
        high = msgspec.structs.replace(s, gpu_mem_util=0.95)
        return (not fits(m, four_bit, target, s) and not fits(m, plain, target, high)
                and fits(m, four_bit, target, high))

    settings = EngineSettings(max_model_len=_first(range(4096, 131073, 1024), both_needed))
    fix = find_fix(m, plain, target, settings)
    weights = four_bit.weight_bytes / 2**30  # the checkpoint's tensors, as the fix names it
    assert fix and fix.text == (f"use ISTA-DASLab/gemma-3-12b-it-GPTQ-4b-128g (gptq 4-bit, "
                                f"{weights:.2f} GiB of weights) with --gpu-memory-utilization 0.95")
    assert fix.ckpt is four_bit and fix.settings.gpu_mem_util == 0.95
    assert estimate(m, fix.ckpt, fix.target, fix.settings).fits


def _one_card_is_too_small(m: Model, c: Checkpoint, gib: float) -> bool:
    """Nothing on one such card holds the checkpoint, even at 0.95, the shortest context
    and an fp8 KV cache; two of them do."""
    least = EngineSettings(gpu_mem_util=0.95, max_model_len=2048, kv_cache_dtype="fp8")
    return (not fits(m, c, gpu(gib, 1), least)
            and fits(m, c, gpu(gib, 2), EngineSettings(tp=2, gpu_mem_util=0.95)))


DEEPSEEK_14B = "deepseek-r1-distill-qwen-14b"
DEEPSEEK_AWQ = "casperhansen/deepseek-r1-distill-qwen-14b-awq"


def _card_for_awq_14b() -> float:
    m = model(DEEPSEEK_14B)
    return float(_first([g / 100 for g in range(800, 1400, 5)],
                        lambda g: _one_card_is_too_small(m, ckpt(m, DEEPSEEK_AWQ), g)))


def test_tp_2_is_preferred_over_tp_4() -> None:
    m = model(DEEPSEEK_14B)
    awq = ckpt(m, DEEPSEEK_AWQ)
    target = gpu(_card_for_awq_14b(), 4)
    assert fits(m, awq, target, EngineSettings(tp=4))
    fix = find_fix(m, awq, target, EngineSettings())
    assert fix and fix.text.startswith("--tensor-parallel-size 2") and fix.settings.tp == 2


def test_a_second_gpu_the_host_has_is_used() -> None:
    """DeepSeek-R1-Distill-Qwen-14B on two cards where nothing fits one: its AWQ checkpoint
    on both (the old search asked for eight GPUs)."""
    m = model(DEEPSEEK_14B)
    fix = find_fix(m, ckpt(m, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"),
                   gpu(_card_for_awq_14b(), 2), EngineSettings())
    weights = ckpt(m, DEEPSEEK_AWQ).weight_bytes / 2**30
    assert fix and fix.text.startswith(f"use {DEEPSEEK_AWQ} (awq 4-bit, {weights:.2f} GiB of "
                                       "weights) with --tensor-parallel-size 2")
    assert "needs" not in fix.text and fix.target.gpus == 2


def test_gpus_not_given_only_when_nothing_on_the_given_ones_fits() -> None:
    m = model("qwen2.5-14b")
    plain = ckpt(m, "Qwen/Qwen2.5-14B-Instruct")
    four = ckpt(m, "Qwen/Qwen2.5-14B-Instruct-GPTQ-Int4")
    card = _first([g / 100 for g in range(800, 1400, 5)],
                  lambda g: _one_card_is_too_small(m, four, g))
    one = find_fix(m, plain, gpu(card, 1), EngineSettings())
    assert one and "with --tensor-parallel-size 2 (needs 2 GPUs)" in one.text
    assert one.target.gpus == 2
    # on two L4s an 8-bit checkpoint on one of them is cheaper than both
    two = find_fix(m, plain, gpu(L4, 2), EngineSettings())
    assert two and two.settings.tp == 1 and two.ckpt.bits == 8


def test_a_flag_is_cheaper_than_a_shorter_context_and_that_than_a_checkpoint() -> None:
    m = model("llama-3.1-8b")
    plain = ckpt(m, "meta-llama/Llama-3.1-8B-Instruct")
    fix = find_fix(m, plain, gpu(L4), EngineSettings(max_model_len=131072))
    assert fix and fix.text.startswith("--max-model-len ") and fix.ckpt is plain
    at_8k = EngineSettings(max_model_len=8192)
    busy = find_fix(m, plain, Target(engine="vllm", gpu_gib=L4, gpus=1, free_gib=20.0), at_8k)
    assert busy and busy.text == "--gpu-memory-utilization 0.87 (what is free now)"

    def cut_needed(free: float) -> bool:  # what is free no longer holds 8k at any utilization
        f = find_fix(m, plain, Target(engine="vllm", gpu_gib=L4, gpus=1, free_gib=free), at_8k)
        return bool(f) and "--max-model-len" in f.text  # type: ignore[union-attr]

    free = _first([f / 4 for f in range(80, 40, -1)], cut_needed)
    busier = find_fix(m, plain, Target(engine="vllm", gpu_gib=L4, gpus=1, free_gib=free), at_8k)
    assert busier and re.fullmatch(r"--gpu-memory-utilization 0\.\d\d \(what is free now\) and "
                                   r"--max-model-len \d+", busier.text)
    assert busier.ckpt is plain and busier.settings.max_model_len < 8192
    assert estimate(m, busier.ckpt, busier.target, busier.settings).fits


def test_the_order_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "fixes.md").read_text()
    for kind in (FLAG, CONTEXT, KV_DTYPE, CHECKPOINT, GPUS):
        assert f"{kind}." in doc
    assert "costliest change first" in doc


def _named(fix_text: str, m: Model, c: Checkpoint, target: Target, settings: EngineSettings,
           fix_settings: EngineSettings, fix_target: Target, fix_ckpt: Checkpoint) -> None:
    """Every change the fix makes is in its words."""
    if fix_ckpt is not c:
        assert fix_ckpt.repo in fix_text or f"--quantization {fix_ckpt.quant}" in fix_text
    if fix_settings.tp != settings.tp:
        assert f"--tensor-parallel-size {fix_settings.tp}" in fix_text
    if fix_settings.pp != settings.pp:
        assert f"--pipeline-parallel-size {fix_settings.pp}" in fix_text
    if fix_settings.gpu_mem_util != settings.gpu_mem_util:
        assert f"--gpu-memory-utilization {fix_settings.gpu_mem_util:.2f}" in fix_text
    if fix_settings.kv_cache_dtype != settings.kv_cache_dtype:
        assert "--kv-cache-dtype fp8" in fix_text
    if fix_settings.max_model_len != settings.max_model_len:
        assert f"--max-model-len {fix_settings.max_model_len}" in fix_text
    if fix_target.cpu_kv_gib != target.cpu_kv_gib:
        assert f"VLLM_CPU_KVCACHE_SPACE={fix_target.cpu_kv_gib}" in fix_text
    unchanged = msgspec.structs.replace(fix_settings, tp=settings.tp, pp=settings.pp,
                                        gpu_mem_util=settings.gpu_mem_util,
                                        kv_cache_dtype=settings.kv_cache_dtype,
                                        max_model_len=settings.max_model_len)
    assert unchanged == settings, "a fix changed a setting it does not name"


def test_every_fix_suggested_fits_when_applied_and_names_every_change() -> None:
    """A sample of catalog checkpoints on cards from 12 to 80 GiB, one to four of them, with
    and without a context, busy or not, and on the CPU engine: each refusal's fix, applied,
    fits, and its words name each change it makes."""
    rng = random.Random(9)
    cards = (RTX_3060, T4, L4, 39.4, 79.19)
    refused = found = 0
    ckpts = [(m, c) for m in CATALOG.models for c in m.checkpoints]
    for m, c in rng.sample(ckpts, 40):
        checks = FitChecks(m)
        cases: list[tuple[Target, EngineSettings]] = [
            (Target(engine="vllm", gpu_gib=gib, gpus=n, free_gib=free), EngineSettings(
                tp=tp, max_model_len=ctx, gpu_mem_util=util, kv_cache_dtype=kv))
            for gib, n, tp, ctx, util, kv, free in itertools.product(
                cards, (1, 2, 4), (1, 2), (None, 32768), (0.9, 0.7), ("auto",), (None,))
            if tp <= n]
        cases += [(Target(engine="vllm", gpu_gib=gib, gpus=1, free_gib=gib * 0.6),
                   EngineSettings(max_model_len=8192)) for gib in cards]
        cases += [(Target(engine="vllm", gpu_gib=RTX_3060, gpus=1), EngineSettings(
            max_model_len=16384, kv_cache_dtype="fp8", vllm_version=(0, 19)))]
        cases += [(Target(engine="vllm-cpu", ram_gib=ram, cpu_kv_gib=kv_gib),
                   EngineSettings(max_model_len=ctx))
                  for ram, kv_gib, ctx in itertools.product((8, 12, 16, 32), (None, 4, 40),
                                                           (None, 32768))]
        for target, settings in cases:
            if fits(m, c, target, settings):
                continue
            refused += 1
            fix = find_fix(m, c, target, settings, checks)
            if fix is None:
                continue
            found += 1
            assert estimate(m, fix.ckpt, fix.target, fix.settings).fits, (m.id, c.repo, fix.text)
            assert fix.ckpt in m.checkpoints
            if target.engine == "vllm-cpu" and fix.ckpt is not c:
                assert not fix.ckpt.at_load and fix.ckpt.quant not in ("fp8", "bitsandbytes")
            if fix.target.gpus != target.gpus:
                assert f"(needs {fix.target.gpus} GPUs)" in fix.text
            _named(fix.text, m, c, target, settings, fix.settings, fix.target, fix.ckpt)
    assert refused > 300 and found > refused / 2, (refused, found)


@pytest.mark.parametrize("use_case", ["code", "long-context"])
def test_the_ranker_gives_each_refusal_the_same_fix_as_a_search_of_its_own(use_case: str) -> None:
    """The ranker keeps one FitChecks per model and request across refusals and requests;
    what it says must be what a fresh search says."""
    from advisor.advice import recommend_for
    from advisor.plan import cheapest_fix, settings_for, target_for

    req = msgspec.convert({"use_case": use_case, "gpu": "RTX 3060", "max_model_len": 32768},
                          PlanRequest)
    target, settings = target_for(req, HOST, GPUS_TABLE), settings_for(req)
    for _ in range(2):  # the second answers from what the first kept
        results = recommend_for(req, CATALOG, HOST, GPUS_TABLE).results
        for r in results:
            if r.fits or r.estimate.tp != 1:
                continue
            m = model(r.model)
            c = next(c for c in m.checkpoints if c.repo == r.repo and c.quant == r.quant)
            fix = cheapest_fix(m, c, target, settings)
            assert (f"Cheapest change that fits: {fix}" in r.estimate.reason) if fix else \
                "Nothing in the catalog" in r.estimate.reason, (r.repo, r.estimate.reason)


@pytest.mark.parametrize("ram", [4, 8, 12, 24, 48])
def test_a_cpu_refusal_gets_the_answer_of_the_full_search(ram: int) -> None:
    """The short way for a checkpoint the CPU engine refuses (its biggest loadable sibling,
    when that fits as asked) answers what the whole search does, for every such refusal."""
    from advisor.estimate import cpu_engine_refuses
    from advisor.plan import _search

    target, settings = Target(engine="vllm-cpu", ram_gib=ram), EngineSettings(max_model_len=8192)
    compared = 0
    for m in load_catalog().models:
        for c in m.checkpoints:
            if not cpu_engine_refuses(c):
                continue
            checks = FitChecks(m)
            full = _search(checks, c, checks.space(target, settings, more_gpus=False))
            short = find_fix(m, c, target, settings, FitChecks(m))
            assert (short and (short.ckpt.repo, short.ckpt.quant, short.text)) == \
                (full and (full.ckpt.repo, full.ckpt.quant, full.text)), (m.id, c.repo, c.quant)
            compared += 1
    assert compared >= 30


def test_the_kept_accounting_gives_the_estimators_own_answer_each_time_anew() -> None:
    # the ranker builds its rows and the fix search its checks from FitChecks' kept
    # accounting: it must be the estimator's answer, and a new Estimate per call, since the
    # ranker fills each one in (speed, provenance, the fix's words)
    cpu = Target(engine="vllm-cpu", ram_gib=12.0, cpu_cores=2)
    for target, settings in [(gpu(RTX_3060), EngineSettings()), (cpu, EngineSettings()),
                             (gpu(T4, 2), EngineSettings(tp=2, max_model_len=32768))]:
        for m in CATALOG.models:
            checks = FitChecks(m)
            for c in m.checkpoints:
                kept = checks.estimate(c, target, settings)
                again = checks.estimate(c, target, settings)
                assert kept is not again
                assert msgspec.json.encode(kept) == msgspec.json.encode(
                    estimate(m, c, target, settings))
                assert checks.fits(c, target, settings) is fits(m, c, target, settings)
                kept.reason += "changed by a caller"
                assert "changed" not in checks.estimate(c, target, settings).reason
