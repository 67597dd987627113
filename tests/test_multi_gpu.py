"""Several GPUs on one host: per-GPU budgets, tp against pp, data-parallel replicas, pinning,
two models on one GPU, and /v1's balance over replicas. Fast: the host profile is faked at
its seam (a HostProfile, or NVML's surface); the real engines are in tests/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import functools
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fake_engine import until_state
from test_profile import FakeNvml
from tinymodels import build_model

from advisor.admit import admit
from advisor.advice import plan_for, recommend_for
from advisor.catalog import load_catalog, load_gpus
from advisor.config import load_settings
from advisor.estimate import EngineSettings, Target, estimate, fits
from advisor.launch import command_line, cpu_binds, engine_argv
from advisor.placement import place, tp_divides
from advisor.plan import checkpoint_for, target_for
from advisor.profile import read_host
from advisor.routes import Routes
from advisor.specs import (
    CpuInfo,
    Deployment,
    DiskInfo,
    GpuInfo,
    HostProfile,
    PlanRequest,
    RamInfo,
)
from advisor.store import Store
from advisor.supervisor import Supervisor
from advisor.weights import load_overhead_bytes

CATALOG = load_catalog()
GPUS = load_gpus()
L4 = ("NVIDIA L4", 22.49, 22.16)  # NVML's and CUDA's totals (DESIGN.md)


def host(used: list[float], nvlink: bool | None = None,
         card: tuple[str, float, float] = L4) -> HostProfile:
    name, total, cuda = card
    gpus = [GpuInfo(index=i, name=name, uuid=f"GPU-{i}", memory_total_gib=total,
                    memory_cuda_gib=cuda, memory_used_gib=u,
                    memory_free_gib=round(total - u, 2), nvlink=nvlink)
            for i, u in enumerate(used)]
    return HostProfile(gpus=gpus, cpu=CpuInfo(model="test", physical_cores=2, logical_cores=2,
                                              architecture="x86_64"),
                       ram=RamInfo(total_gib=64, available_gib=60),
                       disk=DiskInfo(path="/", total_gib=100, free_gib=50),
                       notes=[], engine="vllm")


def launch_plan(h: HostProfile, **req: Any) -> Any:
    return plan_for(PlanRequest(**req), CATALOG, h, GPUS, check_free=True)


# ------------------------------------------------------------------ per-GPU budgets


def test_a_busy_first_gpu_does_not_refuse_a_host_whose_second_is_empty() -> None:
    h = host([20.0, 0.3])
    p = launch_plan(h, model="qwen2.5-1.5b", max_model_len=8192)
    assert p.estimate.fits and p.estimate.layout.replicas == [[1]]
    # the budget the estimator had before: the least free over all GPUs, which refuses
    model = CATALOG.by_id("qwen2.5-1.5b")
    assert model
    ckpt = checkpoint_for(model, None)
    assert ckpt
    least = Target(engine="vllm", gpu_gib=22.16, gpus=2, free_gib=min(g.memory_free_gib for g in h.gpus))
    assert not fits(model, ckpt, least, EngineSettings(max_model_len=8192))
    # what is left on each GPU: GPU 0 untouched, GPU 1 less the reservation and CUDA context
    left = {g.index: g for g in p.estimate.layout.gpus}
    assert left[0].planned_gib == 0 and left[0].left_gib == h.gpus[0].memory_free_gib
    assert left[1].planned_gib == pytest.approx(p.estimate.reservation_gib + 0.51, abs=0.01)
    assert left[1].left_gib == pytest.approx(h.gpus[1].memory_free_gib - left[1].planned_gib, abs=0.01)


def test_budgets_are_not_pooled_two_half_free_gpus_do_not_hold_a_one_gpu_plan() -> None:
    p = launch_plan(host([12.0, 12.0]), model="qwen2.5-7b", max_model_len=8192, tp=1,
                    fit_to_need=False, gpu_mem_util=0.9)
    assert not p.estimate.fits  # 2 × 10.5 GiB free is not 21 GiB on one GPU


def test_a_launch_pending_on_one_gpu_holds_its_memory_on_that_gpu_only() -> None:
    h = host([0.3, 0.3])
    pending = Deployment(id="a", model="m", repo="r", quant="none", state="starting",
                         reserved_gib=20.0, gpus=[1])
    chosen = admit(PlanRequest(model="qwen2.5-1.5b", max_model_len=8192), h, [pending],
                   CATALOG, GPUS, (), Path("/nonexistent"))
    assert chosen.estimate.layout and chosen.estimate.layout.replicas == [[0]]
    free = {g.index: g.free_gib for g in chosen.estimate.layout.gpus}
    assert free[1] == pytest.approx(22.19 - 20.0, abs=0.01) and free[0] == pytest.approx(22.19, abs=0.01)


# ------------------------------------------------------------------ tp against pp


def test_nvlinked_gpus_get_tensor_parallelism_where_the_heads_divide() -> None:
    # two NVLinked L4s hold its bf16 weights at tp 2 (here with 4,096 tokens)
    e = launch_plan(host([0.3, 0.3], nvlink=True), model="qwen2.5-14b", max_model_len=4096).estimate
    assert e.fits and (e.tp, e.pp) == (2, 1) and e.layout.replicas == [[0, 1]]
    assert "tensor parallelism over 2 GPUs (NVLinked" in e.layout.reasons[0]


@pytest.mark.parametrize("nvlink", [False, None])
def test_gpus_without_nvlink_or_unknown_get_pipeline_parallelism(nvlink: bool | None) -> None:
    p = launch_plan(host([0.3, 0.3], nvlink=nvlink), model="qwen2.5-14b", max_model_len=8192)
    e = p.estimate
    assert e.fits and (e.tp, e.pp) == (1, 2)
    assert "pipeline parallelism over 2 GPUs" in e.layout.reasons[0]
    argv, _ = engine_argv(p.ckpt, e, p.settings)
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert "--tensor-parallel-size" not in argv
    # each stage holds half the weights (and what torch's allocator rounds its tensors up
    # to) and its half of the layers' KV cache
    arch = CATALOG.by_id("qwen2.5-14b").arch  # type: ignore[union-attr]
    held = load_overhead_bytes(arch, "none", 16, 0, p.ckpt.dtype, 1, 2) / 2**30
    assert e.weights_gib == pytest.approx(27.51 / 2 + held, abs=0.01)


def test_heads_that_do_not_divide_get_pipeline_stages_even_over_nvlink() -> None:
    t4 = ("Tesla T4", 15.00, 14.74)
    model = CATALOG.by_id("qwen2.5-14b")
    assert model and not tp_divides(model, 3)  # 40 heads, 8 KV heads
    # 1,024 tokens: three T4s hold its bf16 weights with about 0.1 GiB of KV cache to spare
    e = launch_plan(host([0.3] * 3, nvlink=True, card=t4), model="qwen2.5-14b",
                    max_model_len=1024).estimate
    assert e.fits and (e.tp, e.pp) == (1, 3), e.reason
    assert "do not divide by 3" in e.layout.reasons[0]


def test_the_extra_non_torch_memory_of_several_gpus_is_counted_per_gpu() -> None:
    one = launch_plan(host([0.3]), model="qwen2.5-1.5b", max_model_len=4096).estimate
    two = launch_plan(host([0.3, 0.3]), model="qwen2.5-1.5b", max_model_len=4096, tp=2).estimate
    pipe = launch_plan(host([0.3, 0.3]), model="qwen2.5-1.5b", max_model_len=4096, pp=2).estimate
    # published logs: about 0.25 GiB at tp 1, about 2 GiB at tp 2 (estimate.NON_TORCH_GIB)
    assert two.non_torch_gib - one.non_torch_gib == pytest.approx(2.07 - 0.065, abs=0.01)
    assert pipe.non_torch_gib == two.non_torch_gib


# ------------------------------------------------------------------ data-parallel replicas


def test_more_concurrency_than_one_gpu_holds_gets_a_replica_per_gpu() -> None:
    h = host([0.3, 0.3])
    one = launch_plan(host([0.3]), model="qwen2.5-1.5b", max_model_len=32768,
                      concurrency=30).estimate
    assert one.fits and not one.meets_request  # one GPU holds fewer than 30 sequences
    p = launch_plan(h, model="qwen2.5-1.5b", max_model_len=32768, concurrency=30)
    e = p.estimate
    assert e.fits and e.meets_request and e.layout.dp == 2 and e.layout.replicas == [[0], [1]]
    assert e.layout.dp_mode == "engines"  # a dense model: engines of their own behind /v1
    assert any("2 data-parallel replicas" in r for r in e.layout.reasons)
    # the line to paste runs both with vLLM's own balancing
    assert "--data-parallel-size 2" in command_line(p.ckpt, e, p.settings)


def test_a_model_one_gpu_holds_with_the_concurrency_asked_stays_one_replica() -> None:
    e = launch_plan(host([0.3, 0.3]), model="qwen2.5-1.5b", max_model_len=4096).estimate
    assert e.layout.dp == 1 and e.layout.replicas == [[0]]


def test_more_replicas_than_gpus_is_a_no_that_says_why() -> None:
    e = launch_plan(host([0.3, 0.3]), model="qwen2.5-1.5b", max_model_len=4096,
                    replicas=3).estimate
    assert not e.fits and "replicas: 3 replicas of 1 GPU(s) each need 3 GPUs; 2 planned" in e.reason


def test_the_ranker_plans_the_layout_and_says_so() -> None:
    rec = recommend_for(PlanRequest(use_case="chat", gpu="L4", gpus=2, max_model_len=8192),
                        CATALOG, host([0.3, 0.3]), GPUS)
    r = next(r for r in rec.results if r.repo == "Qwen/Qwen2.5-14B-Instruct" and r.quant == "none")
    assert r.fits and r.estimate.pp == 2  # a named GPU: NVLink unknown, planned as none
    assert any("pipeline parallelism over 2 GPUs" in why for why in r.reasons)
    assert "--pipeline-parallel-size 2" in r.command


# ------------------------------------------------------------------ pinning and sharing a GPU


def test_a_launch_is_pinned_to_its_gpus_with_per_gpu_memory_in_its_argv() -> None:
    p = launch_plan(host([20.0, 0.3]), model="qwen2.5-1.5b", max_model_len=8192)
    argv, env = engine_argv(p.ckpt, p.estimate, p.settings, gpus=p.estimate.layout.replicas[0])
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    words = shlex.split(command_line(p.ckpt, p.estimate, p.settings))
    assert words[:2] == ["CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=1"]


def test_a_second_model_shares_a_gpu_with_a_utilization_from_its_need() -> None:
    # the first model, sized to its need, leaves most of the GPU
    first = launch_plan(host([0.3]), model="qwen2.5-1.5b", max_model_len=4096,
                        fit_to_need=True)
    e1 = first.estimate
    assert e1.fits and first.settings.gpu_mem_util < 0.5
    left = e1.layout.gpus[0].left_gib
    assert left > 10
    # the second sees that much free: its utilization comes from its own need, and fits
    used = 22.49 - left
    second = launch_plan(host([used]), model="qwen2.5-0.5b", max_model_len=4096, concurrency=4)
    e2 = second.estimate
    assert e2.fits and e2.meets_request, e2.reason
    assert second.settings.gpu_mem_util < 0.9
    assert any("the GPU is shared" in why for why in e2.layout.reasons)
    assert 0 <= e2.layout.gpus[0].left_gib < left
    # the utilization is the least that holds the request: a hundredth less does not
    model = CATALOG.by_id("qwen2.5-0.5b")
    assert model
    ckpt = checkpoint_for(model, None)
    assert ckpt
    less = second.settings.gpu_mem_util - 0.01
    e = estimate(model, ckpt, second.target,
                 msgspec.structs.replace(second.settings, gpu_mem_util=round(less, 2)))
    assert not (e.fits and e.meets_request)


# ------------------------------------------------------------------ NVLink, CPU tp, balance


class NvlinkNvml(FakeNvml):
    NVML_NVLINK_MAX_LINKS = 4
    NVML_FEATURE_ENABLED = 1

    def __init__(self, states: list[int | None]) -> None:
        super().__init__()
        self.states = states

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        state = self.states[link]
        if state is None:
            raise self.NVMLError("Not Supported")
        return state


@pytest.mark.parametrize(("states", "seen"), [
    ([0, 1, None, None], True), ([0, 0, 0, 0], False), ([None] * 4, None)])
def test_nvlink_state_is_read_through_nvml_and_unknown_is_said(states: list[int | None],
                                                               seen: bool | None) -> None:
    h = read_host(nvml=NvlinkNvml(states))  # type: ignore[arg-type]
    assert h.gpus[0].nvlink is seen
    assert any("NVLink state unknown" in n for n in h.notes) == (seen is None)


def test_the_fake_without_the_call_reads_as_unknown() -> None:
    assert read_host(nvml=FakeNvml()).gpus[0].nvlink is None  # type: ignore[arg-type]


def test_cpu_tensor_parallel_ranks_bind_one_numa_node_or_core_group_each() -> None:
    assert cpu_binds([[0, 1, 2, 3], [4, 5, 6, 7]], 2) == "0-3|4-7"  # a node each
    assert cpu_binds([[0, 1]], 2) == "0|1"  # this machine: one node, two cores
    assert cpu_binds([[0, 1, 2, 3, 4, 5]], 3) == "0-1|2-3|4-5"
    assert cpu_binds([[0]], 2) == "" and cpu_binds([[0, 1]], 1) == ""


def _dep(dep_id: str) -> Deployment:
    return Deployment(id=dep_id, model="tiny", repo="r", quant="none", state="ready",
                      served_names=["tiny"])


def test_v1_routes_to_the_replica_with_the_fewest_outstanding_requests() -> None:
    routes = Routes()
    for d in ("a", "b"):
        routes.add_key(d, f"key-{d}")
        routes.set_ready(_dep(d))
    first = routes.take("tiny")
    second = routes.take("tiny")
    assert first and second and {first[0].id, second[0].id} == {"a", "b"}
    routes.done(first[0].id)
    third = routes.take("tiny")  # the one that answered has none outstanding
    assert third and third[0].id == first[0].id
    # requests one after another alternate (ties go to the one given fewest)
    routes.done(second[0].id)
    routes.done(third[0].id)
    seen = []
    for _ in range(4):
        hit = routes.take("tiny")
        assert hit
        seen.append(hit[0].id)
        routes.done(hit[0].id)
    assert seen.count("a") == seen.count("b") == 2
    routes.remove("a")
    assert all((h := routes.take("tiny")) and h[0].id == "b" for _ in range(3))


def test_the_cli_plans_replicas_and_stages_and_says_what_is_left() -> None:
    from click.testing import CliRunner

    from advisor.cli import cli

    out = CliRunner().invoke(cli, ["estimate", "qwen2.5-14b", "--gpu", "L4", "--gpus", "2",
                                   "--max-model-len", "8192"])
    assert out.exit_code == 0, out.output
    assert "on vllm, pp 2" in out.output and "pipeline parallelism over 2 GPUs" in out.output
    assert "GPUs: 0: 20.45 of 22.16 GiB free, 1.71 left" in out.output
    out = CliRunner().invoke(cli, ["estimate", "qwen2.5-1.5b", "--gpu", "L4", "--gpus", "2",
                                   "--max-model-len", "4096", "--replicas", "2", "--json"])
    assert out.exit_code == 0, out.output
    data = msgspec.json.decode(out.output)
    assert data["layout"]["dp"] == 2 and data["layout"]["replicas"] == [[0], [1]]


# ------------------------------------------------------------------ through the supervisor


def _supervise(python: Path, monkeypatch: pytest.MonkeyPatch, h: HostProfile,
               body: Callable[[Supervisor], Awaitable[None]]) -> None:
    """A real Supervisor over a scripted engine (tests/fake_engine.py) on a faked host."""
    monkeypatch.setenv("ADVISOR_VLLM_PYTHON", str(python))
    monkeypatch.setenv("FAKE_ENGINE", "ok")

    async def go() -> None:
        settings = load_settings()
        sup = Supervisor(settings, Store(settings.home / "a.db"), CATALOG, GPUS, lambda: h,
                         start_timeout=30, grace=5, poll=0.05)
        await sup.start()
        try:
            await body(sup)
        finally:
            await sup.shutdown(keep_engines=False)

    asyncio.run(go())


def test_two_models_share_one_gpu_each_pinned_with_its_own_utilization(
        python: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a, b = build_model(tmp_path / "a"), build_model(tmp_path / "b")

    async def body(sup: Supervisor) -> None:
        # sized to hold 20,000 sequences of 256 tokens (about 5 GiB of KV cache), no more
        first = await sup.launch(PlanRequest(model=str(a), max_model_len=256, concurrency=20_000,
                                             fit_to_need=True))
        # the second is planned while the first still loads: its reservation is held on GPU 0
        second = await sup.launch(PlanRequest(model=str(b), max_model_len=256, concurrency=64))
        for d in (first, second):
            assert d.gpus == [0] and d.env["CUDA_VISIBLE_DEVICES"] == "0"
        util = [float(d.command[d.command.index("--gpu-memory-utilization") + 1])
                for d in (first, second)]
        assert 0.2 < util[0] < 0.5 and util[1] < 0.1, util  # each from its own need
        assert "the GPU is shared" in second.predicted["layout"]["reasons"][0]  # type: ignore[index]
        share = second.predicted["layout"]["gpus"][0]  # type: ignore[index]
        assert share["free_gib"] == pytest.approx(22.19 - first.reserved_gib, abs=0.01)
        assert share["left_gib"] >= 0
        for d in (first, second):
            assert (await until_state(sup, d.id, {"ready", "failed"})).state == "ready"

    _supervise(python, monkeypatch, host([0.3]), body)


def test_replicas_are_engines_of_their_own_each_pinned_to_its_gpu(
        python: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = build_model(tmp_path / "tiny")

    async def body(sup: Supervisor) -> None:
        first = await sup.launch(PlanRequest(model=str(model), max_model_len=256, replicas=2))
        group = sorted((d for d in sup.all() if d.replica_of == first.id), key=lambda d: d.replica)
        assert [d.gpus for d in group] == [[1], [0]]  # the emptier GPU first
        assert [d.env["CUDA_VISIBLE_DEVICES"] for d in group] == ["1", "0"]
        assert all("--data-parallel-size" not in d.command for d in group)
        for d in group:
            assert (await until_state(sup, d.id, {"ready", "failed"})).state == "ready"
        assert len({sup.take("tiny")[0].id for _ in range(2)}) == 2  # type: ignore[index]
        await sup.stop(first.id)  # the launch: every replica
        for d in group:
            assert (await until_state(sup, d.id, {"stopped"})).state == "stopped"

    _supervise(python, monkeypatch, host([6.0, 0.3]), body)


def test_a_mixture_of_experts_runs_its_replicas_in_one_engine() -> None:
    model = CATALOG.by_id("qwen2.5-1.5b")
    assert model
    moe = msgspec.structs.replace(model, arch=msgspec.structs.replace(
        model.arch, experts=8, experts_per_token=2, expert_intermediate_size=1024))
    ckpt = checkpoint_for(moe, None)
    assert ckpt
    h = host([0.3, 0.3])
    target = target_for(PlanRequest(), h, GPUS, check_free=True)
    placed = place(moe, ckpt, target, EngineSettings(max_model_len=4096), replicas=2)
    assert placed.layout.dp == 2 and placed.layout.dp_mode == "data-parallel-size"


def test_replicas_on_a_shared_gpu_take_the_utilization_of_their_need() -> None:
    h = host([12.0, 0.3])  # GPU 0 has 10.49 GiB free: less than 0.9 of the card
    p = launch_plan(h, model="qwen2.5-1.5b", max_model_len=8192, concurrency=8, replicas=2)
    e = p.estimate
    assert e.fits and e.meets_request and e.layout.replicas == [[1], [0]], e.reason
    assert p.settings.gpu_mem_util < 0.45
    assert any("on every replica" in r for r in e.layout.reasons)
    assert all(g.left_gib >= 0 for g in e.layout.gpus)


# ------------------------------------------------ the cheapest fix lays GPUs out as placement
def _fix_on(model_id: str, gib: float, gpus: int, nvlink: bool | None) -> tuple[Any, Target]:
    from advisor.plan import find_fix

    m = CATALOG.by_id(model_id)
    assert m
    c = min(m.checkpoints, key=lambda c: c.weight_bytes)  # no smaller checkpoint to change to
    target = Target(engine="vllm", gpu_gib=gib, gpus=gpus, nvlink=nvlink)
    return find_fix(m, c, target, EngineSettings(max_model_len=8192)), target


@functools.cache
def _too_small_for_one(model_id: str) -> float:
    """The biggest card (in 0.05 GiB) on which the model's smallest checkpoint needs more
    than one GPU whatever the flags: the fix over one GPU asks for more."""
    last = 0.0
    for gib in [g / 20 for g in range(40, 600)]:
        fix, _ = _fix_on(model_id, gib, 1, True)
        if fix is not None and "needs" not in fix.text:
            return last
        last = gib
    raise AssertionError("no card found")


@pytest.mark.parametrize("nvlink, words", [
    (True, "--tensor-parallel-size 2"), (False, "--pipeline-parallel-size 2"),
    (None, "--pipeline-parallel-size 2")])
def test_the_fix_over_the_gpus_given_takes_pp_where_placement_would(
        nvlink: bool | None, words: str) -> None:
    """DeepSeek-R1-Distill-Qwen-14B's AWQ checkpoint on two cards one of which cannot hold
    it: tp 2 where NVLinked, pp 2 where not or unknown, as choose_parallel plans it."""
    from advisor.placement import choose_parallel

    model_id = "deepseek-r1-distill-qwen-14b"
    fix, target = _fix_on(model_id, _too_small_for_one(model_id), 2, nvlink)
    assert fix is not None and fix.text.startswith(words) and "needs" not in fix.text
    m = CATALOG.by_id(model_id)
    assert m and estimate(m, fix.ckpt, fix.target, fix.settings).fits
    base = msgspec.structs.replace(fix.settings, tp=1, pp=1)
    chosen, _ = choose_parallel(m, target, base, lambda s: fits(m, fix.ckpt, target, s))
    assert (chosen.tp, chosen.pp) == (fix.settings.tp, fix.settings.pp)


def test_the_fix_takes_pp_where_tp_cannot_divide_the_heads() -> None:
    """Phi-4 (40 attention heads, 10 KV heads: tp 4 does not divide them) on four NVLinked
    cards that hold it in four pieces but not in three: tp 2 x pp 2, placement's first
    layout of four GPUs where tp 4 cannot divide the heads, here and over one GPU."""
    m = CATALOG.by_id("phi-4")
    assert m and not tp_divides(m, 4)
    c = min(m.checkpoints, key=lambda c: c.weight_bytes)
    s = EngineSettings(max_model_len=8192, gpu_mem_util=0.95)

    def four_not_three(gib: float) -> bool:
        t = Target(engine="vllm", gpu_gib=gib, gpus=4, nvlink=True)
        return fits(m, c, t, msgspec.structs.replace(s, tp=2, pp=2)) and not any(
            fits(m, c, t, msgspec.structs.replace(s, tp=tp, pp=pp))
            for tp, pp in ((2, 1), (1, 2), (1, 3)))

    gib = next(g / 20 for g in range(80, 300) if four_not_three(g / 20))
    fix, _ = _fix_on("phi-4", gib, 4, True)
    assert fix is not None and (fix.settings.tp, fix.settings.pp) == (2, 2)
    assert "--pipeline-parallel-size 2" in fix.text and "needs" not in fix.text
    assert "--tensor-parallel-size 4" not in fix.text
    one, _ = _fix_on("phi-4", gib, 1, True)
    assert one is not None and "--pipeline-parallel-size 2 (needs 4 GPUs)" in one.text
    assert one.target.gpus == 4


# ------------------------------------------------------------ the form's several-GPUs fieldset
def test_the_form_parses_pp_and_replicas_and_says_what_is_wrong_beside_each() -> None:
    from advisor.web.pages import parse_form

    req, errors = parse_form({"use_case": "chat", "pp": "2", "replicas": " 3 "})
    assert req is not None and (req.pp, req.replicas) == (2, 3) and not errors
    req, errors = parse_form({"use_case": "chat", "pp": "", "replicas": ""})
    assert req is not None and (req.pp, req.replicas) == (None, None)
    for bad in ("two", "0", "-1", "1.5", "65"):
        req, errors = parse_form({"use_case": "chat", "pp": bad, "replicas": bad})
        assert req is None and set(errors) == {"pp", "replicas"}, (bad, errors)


def test_the_page_plans_the_replicas_and_stages_asked_and_refuses_bad_ones_beside_them() -> None:
    import html
    import re

    from litestar.testing import TestClient

    from advisor.web.app import create_app

    with TestClient(app=create_app(load_settings())) as client:
        def post(**fields: str) -> Any:
            token = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/").text)
            assert token
            return client.post("/", data={"_csrf_token": token[1], "use_case": "chat",
                                          "gpu": "L4", "gpus": "4", **fields})

        page = post(pp="many", replicas="0")
        assert page.status_code == 400
        errors = dict(re.findall(r'<span class="error" id="([a-z_]+)-err">([^<]*)</span>',
                                 page.text))
        assert set(errors) == {"pp", "replicas"}
        assert "is not a whole number of pipeline stages" in html.unescape(errors["pp"])
        assert '<fieldset id="gpu-layout">' in page.text and 'value="many"' in page.text
        page = post(pp="2", replicas="2", max_model_len="8192")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert "--pipeline-parallel-size 2" in text and "--data-parallel-size 2" in text
    # a plan for GPUs this host lacks gets no Launch button; where one shows, it carries the
    # fieldset's values, and the launch parses them as the form does
    from advisor.web.pages import LAUNCH_FIELDS, _launch_request

    assert {"pp", "replicas"} <= set(LAUNCH_FIELDS)
    req = _launch_request({"model": "qwen2.5-7b", "pp": "2", "replicas": "2"})
    assert (req.pp, req.replicas) == (2, 2)
    with pytest.raises(ValueError, match="whole number of pipeline stages"):
        _launch_request({"model": "qwen2.5-7b", "pp": "many"})


def test_the_ranker_keeps_a_pp_asked_and_plans_the_replicas_asked() -> None:
    req = PlanRequest(use_case="chat", gpu="L4", gpus=4, max_model_len=8192, pp=2, replicas=2)
    rec = recommend_for(req, CATALOG, host([0.3] * 4), GPUS)
    small = next(r for r in rec.results if r.repo == "Qwen/Qwen2.5-1.5B-Instruct")
    # one GPU holds it, yet the two stages and two replicas asked are what is planned
    assert small.fits and small.estimate.pp == 2 and small.estimate.layout
    assert small.estimate.layout.dp == 2 and small.estimate.layout.replicas == [[0, 1], [2, 3]]
    too_many = recommend_for(msgspec.structs.replace(req, replicas=3), CATALOG,
                             host([0.3] * 4), GPUS)
    r = next(r for r in too_many.results if r.repo == "Qwen/Qwen2.5-1.5B-Instruct")
    assert not r.fits and "replicas: 3 replicas of 2 GPU(s) each need 6 GPUs" in r.estimate.reason


# ------------------------------------------------- one rule for tp on one host and on a cluster
def test_the_cluster_planner_and_placement_allow_the_same_tp_sizes() -> None:
    """Qwen2.5-1.5B: 12 attention heads, 2 KV heads. tp 4 divides the attention heads and
    replicates each KV head on two ranks, which vLLM allows: both planners take it (the
    cluster's own rule, KV heads divided only, refused it)."""
    from advisor import cluster
    from advisor.cluster import ClusterShape, Split, splits

    m = CATALOG.by_id("qwen2.5-1.5b")
    assert m and cluster.tp_divides is tp_divides
    assert [t for t in (1, 2, 4, 8) if tp_divides(m, t)] == [1, 2, 4]
    four = ClusterShape(nodes=1, gpus_per_node=4, gpu_name="", gpu_gib=22.16,
                        interconnect="nvlink", network="ethernet")
    assert Split(tp=4, pp=1, nodes=1) in splits(m, four)
    target = Target(engine="vllm", gpu_gib=22.16, gpus=4, nvlink=True)
    assert fits(m, m.checkpoints[0], target, EngineSettings(tp=4, max_model_len=8192))


# ------------------------------------------------------ the speed at concurrency, per replica
def test_with_replicas_the_speed_at_concurrency_is_one_replicas_share() -> None:
    """30 sequences over two replicas: each engine decodes 15 at once, so each stream's
    speed is what one GPU gives 15 sequences, not 30; the reasons say so."""
    p = launch_plan(host([0.3, 0.3]), model="qwen2.5-1.5b", max_model_len=32768,
                    concurrency=30)
    e = p.estimate
    assert e.layout.dp == 2 and e.decode_tokens_per_s_at_concurrency
    fifteen = launch_plan(host([0.3]), model="qwen2.5-1.5b", max_model_len=32768,
                          concurrency=15).estimate
    thirty = launch_plan(host([0.3]), model="qwen2.5-1.5b", max_model_len=32768,
                         concurrency=30).estimate
    assert e.decode_tokens_per_s_at_concurrency == fifteen.decode_tokens_per_s_at_concurrency
    assert e.decode_tokens_per_s_at_concurrency > thirty.decode_tokens_per_s_at_concurrency  # type: ignore[operator]
    assert e.decode_tokens_per_s == thirty.decode_tokens_per_s  # one stream: unchanged
    assert any("per replica: 15 of the 30 sequences on each of 2 replicas" in r
               for r in e.layout.reasons)
    # the ranker says it too, once however often it ranks (its layouts are kept)
    req = PlanRequest(use_case="chat", gpu="L4", gpus=2, max_model_len=32768, concurrency=30)
    for _ in range(2):
        r = next(r for r in recommend_for(req, CATALOG, host([0.3, 0.3]), GPUS).results
                 if r.repo == "Qwen/Qwen2.5-1.5B-Instruct" and r.quant == "none")
        assert r.estimate.layout and r.estimate.layout.dp == 2
        assert sum("speed at concurrency per replica" in why for why in r.reasons) == 1
        assert r.estimate.decode_tokens_per_s_at_concurrency == \
            fifteen.decode_tokens_per_s_at_concurrency


# ------------------------------------------------------------------ tp x pp on one host
def _phi4_needs_four(c_repo: str, s: EngineSettings) -> float:
    """A card (in 0.05 GiB) on which Phi-4's checkpoint needs four GPUs: neither tp 2, pp 2
    nor pp 3 starts with it, tp 2 x pp 2 does."""
    m = CATALOG.by_id("phi-4")
    assert m
    c = next(c for c in m.checkpoints if c.repo == c_repo and not c.at_load)
    for gib in [g / 20 for g in range(60, 400)]:
        t = Target(engine="vllm", gpu_gib=gib, gpus=4, nvlink=True)
        if fits(m, c, t, msgspec.structs.replace(s, tp=2, pp=2)) and not any(
                fits(m, c, t, msgspec.structs.replace(s, tp=tp, pp=pp))
                for tp, pp in ((2, 1), (1, 2), (1, 3))):
            return gib
    raise AssertionError("no card found")


def test_nvlinked_gpus_the_heads_do_not_divide_get_tp_within_and_pp_for_the_rest() -> None:
    """Phi-4 (40 attention heads, 10 KV heads) on four NVLinked GPUs: tp 4 cannot divide the
    10 KV heads, so tp 2 (the largest that divides) × pp 2, as the cluster planner does
    inside a node; without NVLink pp 4. The command carries both flags."""
    from advisor.placement import choose_parallel, layouts

    m = CATALOG.by_id("phi-4")
    assert m and not tp_divides(m, 4) and tp_divides(m, 2)
    assert layouts(m, 4, True) == [(2, 2), (1, 4)] and layouts(m, 4, False) == [(1, 4)]
    c = next(c for c in m.checkpoints if c.repo == "microsoft/phi-4" and not c.at_load)
    s = EngineSettings(max_model_len=8192)
    gib = _phi4_needs_four(c.repo, s)
    for nvlink, want in ((True, (2, 2)), (False, (1, 4)), (None, (1, 4))):
        t = Target(engine="vllm", gpu_gib=gib, gpus=4, nvlink=nvlink)
        chosen, why = choose_parallel(m, t, s, lambda x, t=t: fits(m, c, t, x))
        assert (chosen.tp, chosen.pp) == want, (nvlink, why)
    card = ("test card", gib + 0.3, gib)
    p = launch_plan(host([0.1] * 4, nvlink=True, card=card), model="phi-4", quant="none",
                    max_model_len=8192)
    e = p.estimate
    assert e.fits and (e.layout.tp, e.layout.pp) == (2, 2) and e.layout.replicas == [[0, 1, 2, 3]]
    assert "tensor parallelism 2 × pipeline parallelism 2 over 4 GPUs" in e.layout.reasons[0]
    line = command_line(p.ckpt, e, p.settings)
    assert "--tensor-parallel-size 2" in line and "--pipeline-parallel-size 2" in line


def test_the_fix_names_tp_and_pp_together_where_placement_would() -> None:
    """The smallest Phi-4 checkpoint, asked with every helping flag already set (0.95, an
    fp8 KV cache, vLLM's own context), on a card on which only four GPUs hold it: over four
    NVLinked GPUs the fix is tp 2 × pp 2, and over one it asks for those four."""
    from advisor.plan import find_fix

    m = CATALOG.by_id("phi-4")
    assert m
    c = min(m.checkpoints, key=lambda c: c.weight_bytes)
    s = EngineSettings(gpu_mem_util=0.95, kv_cache_dtype="fp8")
    gib = _phi4_needs_four(c.repo, s)
    fix = find_fix(m, c, Target(engine="vllm", gpu_gib=gib, gpus=4, nvlink=True), s)
    assert fix is not None and (fix.settings.tp, fix.settings.pp) == (2, 2), fix
    assert fix.text == "--tensor-parallel-size 2 and --pipeline-parallel-size 2"
    assert estimate(m, fix.ckpt, fix.target, fix.settings).fits
    one = find_fix(m, c, Target(engine="vllm", gpu_gib=gib, gpus=1, nvlink=True), s)
    assert one is not None and one.target.gpus == 4
    assert one.text == "--tensor-parallel-size 2 and --pipeline-parallel-size 2 (needs 4 GPUs)"
