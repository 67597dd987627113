"""The flags users lower memory with, end to end: --max-num-seqs, --enforce-eager,
--kv-cache-memory-bytes and text-only serving, through the CLI, the API, the engine's argv
(read back by vLLM's own parser) and the pasteable command; and --vllm-version as
`vllm --version` prints it. The real CPU engine's agreement is in test_estimate_cpu_engine.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from fake_engine import until_state
from litestar.testing import TestClient
from tinymodels import build_model

from advisor.advice import plan_for
from advisor.catalog import load_catalog, load_gpus
from advisor.cli import cli
from advisor.config import load_settings
from advisor.errors import AdvisorError
from advisor.estimate import GIB, KV_SUGGESTION_BUFFER, suggested_kv_cache_memory_bytes
from advisor.launch import TEXT_ONLY_LIMITS, command_line, engine_argv, human_readable_int
from advisor.plan import settings_for, vllm_version_of
from advisor.profile import read_host
from advisor.specs import PlanRequest
from advisor.store import Store
from advisor.supervisor import Supervisor
from advisor.web.app import create_app

CATALOG, GPUS, HOST = load_catalog(), load_gpus(), read_host()
LOGS = Path(__file__).parent / "data" / "vllm_logs"
VERSIONS = [("0.10.1.1", (0, 10)), ("0.6.4.post1", (0, 6)), ("0.13.0+cu126", (0, 13)),
            ("0.11.0rc1", (0, 11)), ("0.32.0", (0, 32)), ("v0.9.2", (0, 9)), ("0.19", (0, 19)),
            ("0.7.3.dev233+gad5a35c2", (0, 7))]
JUNK = ["latest", "0.x", "1", "vllm 0.32.0", "0.32.0 (cuda)", "", "9" * 80 + ".1"]
FLAGS = ["--max-num-seqs", "8", "--enforce-eager", "--kv-cache-memory-bytes", "8G", "--text-only"]


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def plan(**kw: object) -> Any:
    return plan_for(msgspec.convert(kw, PlanRequest), CATALOG, HOST, GPUS)


@pytest.fixture(name="client")
def fx_client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(app=create_app(load_settings())) as client:
        yield client


# ------------------------------------------------------------------ --vllm-version


@pytest.mark.parametrize(("text", "read"), VERSIONS)
def test_what_vllm_version_prints_is_read_as_major_minor(text: str, read: tuple[int, int]) -> None:
    assert vllm_version_of(text) == read
    assert settings_for(PlanRequest(vllm_version=text)).vllm_version == read


def test_the_versions_pass_the_cli_and_the_api_and_the_request_is_echoed(client: TestClient) -> None:  # type: ignore[type-arg]
    for text, _ in VERSIONS:
        out = cli_json("estimate", "qwen2.5-0.5b", "--gpu", "L4", "--vllm-version", text)
        assert out["fits"], out
        r = client.post("/api/recommend", json={"use_case": "edge", "gpu": "L4",
                                                "vllm_version": text})
        assert r.status_code == 200, r.text
        assert r.json()["request"]["vllm_version"] == text
    # as pasted from a terminal, with its newline
    assert cli_json("estimate", "qwen2.5-0.5b", "--gpu", "L4", "--vllm-version", "0.32.0\n")["fits"]


def test_an_old_version_changes_the_accounting_it_names() -> None:
    old = plan(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192, vllm_version="0.20.1")
    new = plan(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192, vllm_version="0.21.0+cu129")
    assert old.settings.vllm_version == (0, 20) and new.settings.vllm_version == (0, 21)
    # graphs outside the reservation before 0.21: a bigger pool
    assert old.estimate.kv_cache_gib > new.estimate.kv_cache_gib
    # and 0.24 on: the 0.24+ row of every fitted term, not 0.19's
    late = plan(model="qwen2.5-7b", gpu="H100 80GB", max_model_len=8192, vllm_version="0.32.0")
    assert late.estimate.non_torch_gib != new.estimate.non_torch_gib


@pytest.mark.parametrize("junk", JUNK)
def test_junk_versions_are_refused_naming_the_field(client: TestClient, junk: str) -> None:  # type: ignore[type-arg]
    r = client.post("/api/estimate", json={"model": "phi-4", "vllm_version": junk})
    assert r.status_code == 400 and "vllm_version" in r.text
    result = CliRunner().invoke(cli, ["estimate", "phi-4", "--vllm-version", junk])
    assert result.exit_code == 2 and "--vllm-version" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(AdvisorError, match="^vllm_version:"):
        vllm_version_of(junk.replace("1", "x").replace("0", "x") or "none")


# ------------------------------------------------------------------ the estimator


def test_enforce_eager_gives_the_cuda_graph_memory_to_the_pool() -> None:
    graphs = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192).estimate
    eager = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192, enforce_eager=True).estimate
    assert graphs.cuda_graph_gib > 0 and eager.cuda_graph_gib == 0.0
    # and what torch.compile's first run leaves (non-torch) and benchmarks its kernels on (the
    # peak: a copy of the embedding table), from 0.24
    compiled = graphs.non_torch_gib - eager.non_torch_gib
    scratch = graphs.activation_gib - eager.activation_gib
    assert compiled > 0 and scratch > 0
    assert eager.kv_cache_gib == pytest.approx(
        graphs.kv_cache_gib + graphs.cuda_graph_gib + compiled + scratch, abs=0.02)
    assert eager.kv_cache_tokens > graphs.kv_cache_tokens


def test_max_num_seqs_reaches_vllms_default_batching() -> None:
    default = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192).estimate
    assert (default.max_num_seqs, default.max_num_batched_tokens) == (256, 2048)
    few = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192, max_num_seqs=32).estimate
    assert few.max_num_seqs == 32
    # fewer CUDA graphs to capture (sizes up to 2 × max_num_seqs), so a bigger pool
    assert few.cuda_graph_gib < default.cuda_graph_gib and few.kv_cache_gib > default.kv_cache_gib
    # on 0.19 the sampler's dummy pass over max_num_seqs sequences was the larger peak
    old = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192, vllm_version="0.19").estimate
    old_few = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192, max_num_seqs=32,
                   vllm_version="0.19").estimate
    assert old_few.activation_gib < old.activation_gib
    # vLLM caps a defaulted token budget at max_num_seqs × max_model_len
    tiny = plan(model="llama-3.1-8b", gpu="L4", max_model_len=512, max_num_seqs=2).estimate
    assert tiny.max_num_batched_tokens == 1024
    # and refuses a budget below max_num_seqs (config/scheduler.py)
    many = plan(model="qwen2.5-0.5b", gpu="L4", max_model_len=8192, max_num_seqs=4096).estimate
    assert not many.fits and "below max_num_seqs 4,096" in many.reason
    fixed = plan(model="qwen2.5-0.5b", gpu="L4", max_model_len=8192, max_num_seqs=4096,
                 max_num_batched_tokens=4096).estimate
    assert fixed.fits


def test_kv_cache_memory_bytes_is_the_pool_whatever_the_utilization() -> None:
    pool = 8 * GIB
    a = plan(model="llama-3.1-8b", gpu="H100 80GB", max_model_len=8192, kv_cache_memory_bytes=pool)
    b = plan(model="llama-3.1-8b", gpu="H100 80GB", max_model_len=8192, kv_cache_memory_bytes=pool,
             gpu_mem_util=0.5)
    for e in (a.estimate, b.estimate):
        # 32 layers × 8 KV heads × 128 × 2 (K, V) × 2 bytes × 16 tokens: 2 MiB a block
        assert e.fits and e.kv_cache_gib == 8.0
        assert e.max_concurrency == 8.0 and e.kv_cache_tokens == 65536
        assert e.suggested_kv_cache_memory_bytes is None  # vLLM suggests only after profiling
        assert "--kv-cache-memory-bytes" in e.provenance["kv_cache_gib"]
    # the auto-fit runs against it as vLLM's does: the null block aside, whole blocks
    auto = plan(model="llama-3.1-8b", gpu="H100 80GB", kv_cache_memory_bytes=GIB).estimate
    assert auto.max_model_len == (512 - 1) * 16
    # what the process holds beside the pool must still fit in the card
    big = plan(model="llama-3.1-8b", gpu="L4", max_model_len=8192,
               kv_cache_memory_bytes=human_readable_int("8G")).estimate
    assert not big.fits and "--kv-cache-memory-bytes 8,589,934,592" in big.reason


def test_the_suggested_kv_cache_memory_bytes_follows_vllms_formula_on_its_own_logs() -> None:
    seen = 0
    for path in sorted(LOGS.glob("*.log")):
        text = path.read_text(errors="replace")
        line = re.search(r"for peak activation.*?and ([\d.]+) GiB for CUDAGraph memory\. .*?"
                         r"--kv-cache-memory=(\d+)`.*?Current kv cache memory in use is "
                         r"([\d.]+) GiB", text)
        if not line:
            continue
        graphs, printed, pool = float(line[1]), int(line[2]), float(line[3])
        ours = suggested_kv_cache_memory_bytes(int(pool * GIB), graphs)
        assert abs(ours - printed) < 0.011 * GIB, path.name  # the log's figures are rounded
        seen += 1
    assert seen >= 10


def test_the_estimate_predicts_the_suggestion_and_eager_leaves_only_the_margin() -> None:
    e = plan(model="llama-3.1-8b", gpu="H100 80GB", max_model_len=8192).estimate
    assert e.suggested_kv_cache_memory_bytes is not None
    assert e.suggested_kv_cache_memory_bytes / GIB == pytest.approx(
        e.kv_cache_gib - e.cuda_graph_gib - KV_SUGGESTION_BUFFER / GIB, abs=0.01)
    eager = plan(model="llama-3.1-8b", gpu="H100 80GB", max_model_len=8192,
                 enforce_eager=True).estimate
    assert eager.suggested_kv_cache_memory_bytes is not None
    assert eager.suggested_kv_cache_memory_bytes / GIB == pytest.approx(
        eager.kv_cache_gib - KV_SUGGESTION_BUFFER / GIB, abs=0.01)
    assert plan(model="qwen2.5-0.5b", gpus=0, ram_gib=16).estimate.suggested_kv_cache_memory_bytes is None
    assert plan(model="phi-4", gpu_gib=24).estimate.suggested_kv_cache_memory_bytes is None  # no start


def test_text_only_is_carried_to_the_estimators_settings() -> None:
    p = plan(model="gemma-3-4b", gpu="L4", max_model_len=8192, text_only=True)
    assert p.settings.text_only and p.estimate.fits


def test_the_vision_tower_is_profiled_unless_served_text_only() -> None:
    """vLLM's profile run pushes max_num_batched_tokens // 256 images (Gemma 3) through the
    SigLIP tower before the decoder's pass; text-only serving skips it, and from 0.25 on
    (models/interfaces.py::_mark_tower_model) does not load the tower at all."""
    from advisor.estimate import mm_items_profiled

    catalog = load_catalog()
    gemma = catalog.by_id("gemma-3-4b")
    assert gemma
    assert mm_items_profiled(gemma.arch, 2048, 256, 8192) == 8
    assert mm_items_profiled(gemma.arch, 8192, 256, 8192) == 32
    assert mm_items_profiled(gemma.arch, 2048, 2, 256) == 2  # two prompts of one image each
    text_model = catalog.by_id("llama-3.1-8b")
    assert text_model and mm_items_profiled(text_model.arch, 2048, 256, 8192) == 0
    # at 8,192 batched tokens the 32 images' pass is the peak; at vLLM's 2,048 on an L4 a cold
    # compile's benchmark copy of Gemma's 262,144-entry embedding table (1.27 GiB) is, either way
    flags = {"gpu": "L4", "max_model_len": 8192, "max_num_batched_tokens": 8192}
    images = plan(model="gemma-3-4b", **flags).estimate
    text = plan(model="gemma-3-4b", text_only=True, **flags).estimate
    assert images.activation_gib > text.activation_gib
    tower_gib = gemma.arch.extra_params * 2 / GIB  # SigLIP and its projector, bf16
    assert images.weights_gib - text.weights_gib == pytest.approx(tower_gib, abs=0.01)
    assert "loads none of the multimodal tower" in text.provenance["weights_tower"]
    assert text.kv_cache_gib == pytest.approx(
        images.kv_cache_gib + images.activation_gib - text.activation_gib + tower_gib, abs=0.02)
    # before 0.25 the tower is charged either way (its skipping not checked there)
    old = {"gpu": "L4", "max_model_len": 8192, "vllm_version": "0.24"}
    assert (plan(model="gemma-3-4b", **old).estimate.weights_gib
            == plan(model="gemma-3-4b", text_only=True, **old).estimate.weights_gib)


def test_the_cpu_engine_takes_the_flag_as_its_pool_and_no_kvcache_space() -> None:
    p = plan(model="qwen2.5-0.5b", gpus=0, ram_gib=16, max_model_len=4096,
             kv_cache_memory_bytes=2 * GIB)
    assert p.estimate.fits and p.estimate.kv_cache_gib == 2.0 and p.estimate.cpu_kv_space_gib is None
    argv, env = engine_argv(p.ckpt, p.estimate, p.settings)
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # it would override the flag
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(2 * GIB)
    # while it loads, the launch holds its pool against the next one's RAM, as a
    # VLLM_CPU_KVCACHE_SPACE launch does
    from advisor.admit import reserved_gib
    from advisor.estimate import CPU_PROCESS_OVERHEAD_GIB
    assert reserved_gib(p) == pytest.approx(
        p.estimate.weights_gib + 2.0 + CPU_PROCESS_OVERHEAD_GIB, abs=0.01)
    with pytest.raises(AdvisorError, match="^kv_cache_memory_bytes:"):
        plan(model="qwen2.5-0.5b", gpus=0, cpu_kv_gib=1, kv_cache_memory_bytes=GIB)


# ------------------------------------------------------------------ argv and command


def _vllm_parse(argv: list[str]) -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="api_server.py")).parse_args(argv)


def test_the_engine_argv_carries_every_flag_as_vllm_reads_it() -> None:
    p = plan(model="gemma-3-4b", gpu="H100 80GB", max_model_len=8192, max_num_seqs=8,
             enforce_eager=True, kv_cache_memory_bytes=human_readable_int("8G"), text_only=True)
    argv, _ = engine_argv(p.ckpt, p.estimate, p.settings)
    args = _vllm_parse(argv[3:])  # past `python -m MODULE`
    assert args.max_num_seqs == 8 and args.enforce_eager is True
    assert args.kv_cache_memory_bytes == 8 * GIB
    assert args.limit_mm_per_prompt == {"image": 0, "video": 0, "audio": 0}
    assert args.max_model_len == 8192
    # the pasteable command: the same flags in the same order
    line = command_line(p.ckpt, p.estimate, p.settings)
    words = shlex.split(line)
    assert words[words.index("--max-model-len"):] == argv[argv.index("--max-model-len"):]
    assert f"--limit-mm-per-prompt '{TEXT_ONLY_LIMITS}'" in line


def test_vllms_parser_reads_the_human_forms_as_the_cli_does() -> None:
    for text in ("8G", "512M", "25.6k", "8g", "1073741824"):
        assert _vllm_parse(["--kv-cache-memory-bytes", text]).kv_cache_memory_bytes == \
            human_readable_int(text)
    for text in ("8GiB", "1.5G"):
        with pytest.raises(ValueError):
            human_readable_int(text)


def test_recommend_commands_carry_the_flags() -> None:
    out = cli_json("recommend", "--use-case", "chat", "--gpu", "H100 80GB", *FLAGS)
    assert out["request"]["kv_cache_memory_bytes"] == 8 * GIB
    assert out["request"]["max_num_seqs"] == 8 and out["request"]["enforce_eager"] is True
    for r in out["results"]:
        assert ("--max-num-seqs 8 --enforce-eager --kv-cache-memory-bytes 8589934592 "
                f"--limit-mm-per-prompt '{TEXT_ONLY_LIMITS}'") in r["command"], r["command"]
        assert r["estimate"]["cuda_graph_gib"] == 0.0
        if r["fits"]:
            assert r["estimate"]["kv_cache_gib"] == 8.0


def test_cli_estimate_json_shows_each_flag() -> None:
    out = cli_json("estimate", "llama-3.1-8b", "--gpu", "L4", "--max-model-len", "8192", *FLAGS[:3])
    assert out["max_num_seqs"] == 8 and out["cuda_graph_gib"] == 0.0
    assert out["suggested_kv_cache_memory_bytes"] > 0
    out = cli_json("estimate", "llama-3.1-8b", "--gpu", "H100 80GB", "--max-model-len", "8192",
                   "--kv-cache-memory-bytes", "8G")
    assert out["kv_cache_gib"] == 8.0 and out["suggested_kv_cache_memory_bytes"] is None
    for bad in ("8GiB", "1.5G", "lots"):
        result = CliRunner().invoke(cli, ["estimate", "phi-4", "--kv-cache-memory-bytes", bad])
        assert result.exit_code == 2 and "--kv-cache-memory-bytes" in result.output
    result = CliRunner().invoke(cli, ["estimate", "phi-4", "--max-num-seqs", "0"])
    assert result.exit_code == 2 and "--max-num-seqs" in result.output


def test_cli_launch_sends_the_flags_to_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    class Answer:
        def json(self) -> dict[str, Any]:
            return {"id": "x", "state": "pending", "model": "m", "endpoint": "/v1"}

    def call(url: str, method: str, path: str, **kw: Any) -> Answer:
        sent.append(json.loads(kw["content"]))
        return Answer()

    monkeypatch.setattr("advisor.cli._call", call)
    result = CliRunner().invoke(cli, ["launch", "qwen2.5-0.5b", "--vllm-version", "v0.32.0", *FLAGS])
    assert result.exit_code == 0, result.output
    assert sent[0] | {"model": "qwen2.5-0.5b"} == sent[0]
    assert {k: sent[0][k] for k in ("max_num_seqs", "enforce_eager", "kv_cache_memory_bytes",
                                    "text_only", "vllm_version")} == {
        "max_num_seqs": 8, "enforce_eager": True, "kv_cache_memory_bytes": 8 * GIB,
        "text_only": True, "vllm_version": "v0.32.0"}


def test_a_launch_runs_the_engine_with_the_flags(tmp_path: Path, python: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real supervisor to the engine seam (the scripted child): its argv."""
    monkeypatch.setenv("ADVISOR_VLLM_PYTHON", str(python))
    monkeypatch.setenv("FAKE_ENGINE", "ok")
    model = build_model(tmp_path / "tiny")

    async def go() -> list[str]:
        settings = load_settings()
        sup = Supervisor(settings, Store(settings.home / "a.db"), CATALOG, GPUS, read_host,
                         start_timeout=30, grace=10, poll=0.05)
        await sup.start()
        try:
            d = await sup.launch(PlanRequest(model=str(model), gpus=0, max_model_len=256,
                                             max_num_seqs=4, kv_cache_memory_bytes=GIB))
            await until_state(sup, d.id, {"ready", "failed"})
            return d.command + [f"{k}={v}" for k, v in d.env.items()]
        finally:
            await sup.shutdown(keep_engines=False)

    command = asyncio.run(go())
    assert command[command.index("--max-num-seqs") + 1] == "4"
    assert command[command.index("--kv-cache-memory-bytes") + 1] == str(GIB)
    assert not any(w.startswith("VLLM_CPU_KVCACHE_SPACE=") for w in command)


# ------------------------------------------------------------------ the API


def test_api_estimate_takes_each_new_field(client: TestClient) -> None:  # type: ignore[type-arg]
    base = {"model": "llama-3.1-8b", "gpu": "L4", "max_model_len": 8192}
    plain = client.post("/api/estimate", json=base).json()
    eager = client.post("/api/estimate", json={**base, "enforce_eager": True}).json()
    assert eager["cuda_graph_gib"] == 0.0 < plain["cuda_graph_gib"]
    seqs = client.post("/api/estimate", json={**base, "max_num_seqs": 16}).json()
    assert seqs["max_num_seqs"] == 16 and seqs["cuda_graph_gib"] < plain["cuda_graph_gib"]
    kv = client.post("/api/estimate", json={**base, "gpu": "H100 80GB",
                                            "kv_cache_memory_bytes": 4 * GIB}).json()
    assert kv["kv_cache_gib"] == 4.0 and kv["kv_cache_tokens"] == 32768
    text = client.post("/api/estimate", json={**base, "model": "gemma-3-4b", "text_only": True})
    assert text.status_code == 200
    assert plain["suggested_kv_cache_memory_bytes"] > 0


@pytest.mark.parametrize(("field", "value"), [
    ("max_num_seqs", 0), ("max_num_seqs", "eight"), ("enforce_eager", "yes"), ("text_only", 3),
    ("kv_cache_memory_bytes", "8G"), ("kv_cache_memory_bytes", 0), ("kv_cache_memory_bytes", -1),
    ("kv_cache_memory_bytes", 2**70), ("vllm_version", 32),
])
def test_api_bad_values_are_400s_naming_the_field(client: TestClient, field: str,  # type: ignore[type-arg]
                                                  value: object) -> None:
    r = client.post("/api/estimate", json={"model": "phi-4", field: value})
    assert r.status_code == 400, r.text
    assert field in r.text


def test_api_both_kv_sizes_on_the_cpu_is_a_4xx_naming_the_field(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/api/estimate", json={"model": "qwen2.5-0.5b", "gpus": 0, "cpu_kv_gib": 1,
                                           "kv_cache_memory_bytes": GIB})
    assert r.status_code == 422 and r.json()["detail"].startswith("kv_cache_memory_bytes:")
