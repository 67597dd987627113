"""This host's own launches refine later estimates of the same checkpoint (DESIGN.md: the
activation and non-torch memory are "refined by this host's own launches").

vLLM takes from its reservation the weights, the KV cache, and the rest; the estimator
models the rest. Once an engine on this GPU has logged its "Available KV cache memory",
an estimate for that checkpoint with the same flags takes the difference into account and
says where it came from. Shown with a published vLLM log kept in a real SQLite store, and
with the supervisor launching a scripted GPU engine (the real GPU engine cannot run here).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from fake_engine import until_state
from litestar.testing import TestClient
from tinymodels import build_model

from advisor.advice import estimate_for, plan_for
from advisor.catalog import load_catalog, load_gpus
from advisor.cli import cli, render_estimate
from advisor.config import load_settings
from advisor.enginelog import summarize
from advisor.estimate import INSTALLED_VLLM, Estimate
from advisor.history import from_deployments
from advisor.profile import read_host
from advisor.specs import Deployment, GpuInfo, HostProfile, PlanRequest
from advisor.store import Store
from advisor.supervisor import Supervisor
from advisor.web.app import create_app

CATALOG, GPUS = load_catalog(), load_gpus()
LOGS = Path(__file__).parent / "data" / "vllm_logs"
H100 = "NVIDIA H100 80GB HBM3"


def gpu_host() -> HostProfile:
    """This machine's profile with one H100 in it, as NVML would report it."""
    gpu = GpuInfo(index=0, name=H100, uuid="GPU-0", memory_total_gib=79.65,
                  memory_cuda_gib=79.19, memory_used_gib=0.5, memory_free_gib=79.0,
                  memory_bandwidth_gbps=3352.3)
    return msgspec.structs.replace(read_host(), gpus=[gpu])


# the flags of llm-d-planner's v0.19 Llama 3.1 8B run on an H100 (header of the log)
LLAMA = PlanRequest(model="llama-3.1-8b", gpu_mem_util=0.95, max_model_len=8192,
                    max_num_batched_tokens=8192, vllm_version="0.19")


def _launched(store: Store, req: PlanRequest, est: Estimate, log: str) -> Deployment:
    """A deployment record as the supervisor leaves one: planned, then what the engine logged."""
    d = Deployment(id="d0001", model="llama-3.1-8b", repo=est.repo, quant=est.quant,
                   state="stopped", engine="vllm", gpu_name=H100,
                   command=["vllm", "serve", est.repo], request=msgspec.to_builtins(req),
                   predicted=msgspec.to_builtins(est),
                   measured=summarize(log.splitlines()).measured.as_dict(),
                   created_at=time.time(), engine_ready_at=time.time())
    store.save(d)
    return d


def test_a_published_launch_in_the_store_makes_the_next_estimate_equal_it(tmp_path: Path) -> None:
    host = gpu_host()
    log = (LOGS / "planner-v0190-llama31-8b-h100-tp1.log").read_text()
    before = estimate_for(LLAMA, CATALOG, host, GPUS)
    assert before.host_correction_gib is None
    assert abs(before.kv_cache_gib - 58.11) < 0.25  # the model alone: close, not exact

    store = Store(tmp_path / "advisor.db")
    d = _launched(store, LLAMA, before, log)
    history = from_deployments(store.all(), INSTALLED_VLLM)
    after = estimate_for(LLAMA, CATALOG, host, GPUS, history=history)

    assert after.kv_cache_gib == pytest.approx(58.11, abs=0.01)  # "Available KV cache memory"
    assert after.kv_cache_tokens == pytest.approx(476016, rel=0.001)  # "GPU KV cache size"
    assert after.host_correction_gib == pytest.approx(before.kv_cache_gib - 58.11, abs=0.01)
    assert f"deployment {d.id}" in after.provenance["kv_cache_gib"]
    # the rest is the model's, unchanged
    assert after.weights_gib == before.weights_gib
    assert after.activation_gib == before.activation_gib
    # and the CLI says so beside the figures
    assert f"KV cache refined on this host: deployment {d.id}" in render_estimate(after)


def test_the_cli_reads_the_history_without_ever_creating_a_database(advisor_home: Path) -> None:
    result = CliRunner().invoke(cli, ["estimate", "qwen2.5-0.5b", "--gpus", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert msgspec.json.decode(result.output)["host_correction_gib"] is None
    assert not (advisor_home / "advisor.db").exists()


def test_the_correction_applies_only_where_the_launch_says_something(tmp_path: Path) -> None:
    host = gpu_host()
    log = (LOGS / "planner-v0190-llama31-8b-h100-tp1.log").read_text()
    store = Store(tmp_path / "advisor.db")
    _launched(store, LLAMA, estimate_for(LLAMA, CATALOG, host, GPUS), log)
    history = from_deployments(store.all(), INSTALLED_VLLM)

    def correction(**change: object) -> float | None:
        req = msgspec.structs.replace(LLAMA, **change)
        return estimate_for(req, CATALOG, host, GPUS, history=history).host_correction_gib

    assert correction() is not None
    # the utilization and the context length do not change what vLLM takes besides KV
    assert correction(gpu_mem_util=0.9) == correction()
    assert correction(max_model_len=4096) == correction()
    # other flags, another checkpoint, another vLLM, another GPU, the CPU engine: the model
    assert correction(max_num_batched_tokens=2048) is None
    assert correction(quant="fp8") is None
    assert correction(vllm_version="0.32") is None
    assert correction(gpu="H100 80GB") is None  # a named GPU is not this host's
    assert correction(gpus=0) is None
    # a ranking uses it for that checkpoint alone
    rec = [r for r in _recommend(host, history) if r.repo == "meta-llama/Llama-3.1-8B-Instruct"
           and r.quant == "none"]
    assert rec and rec[0].estimate.host_correction_gib is not None


def _recommend(host: HostProfile, history: object) -> list:  # type: ignore[type-arg]
    from advisor.advice import recommend_for

    req = msgspec.structs.replace(LLAMA, model=None, use_case="chat")
    return recommend_for(req, CATALOG, host, GPUS, history=history).results  # type: ignore[arg-type]


def test_a_record_without_the_kv_figure_or_from_the_cpu_engine_refines_nothing(
        tmp_path: Path) -> None:
    host = gpu_host()
    store = Store(tmp_path / "advisor.db")
    est = estimate_for(LLAMA, CATALOG, host, GPUS)
    _launched(store, LLAMA, est, "a log that never reached its memory figures")
    cpu = Deployment(id="c1", model="x", repo=est.repo, quant="none", state="stopped",
                     engine="vllm-cpu", predicted={"kv_cache_gib": 1.0, "tp": 1,
                                                   "max_num_batched_tokens": 2048},
                     measured={"kv_cache_gib": 1.0}, engine_ready_at=time.time())
    store.save(cpu)
    assert from_deployments(store.all(), INSTALLED_VLLM) == ()


def test_the_supervisor_records_a_gpu_launch_and_plans_the_next_one_with_it(
        tmp_path: Path, python: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = gpu_host()
    model = build_model(tmp_path / "tiny")
    req = PlanRequest(model=str(model), max_model_len=256)
    modelled = plan_for(req, CATALOG, host, GPUS).estimate.kv_cache_gib
    logged = round(modelled - 1.25, 2)  # this GPU gives the engine 1.25 GiB less than modelled
    monkeypatch.setenv("ADVISOR_VLLM_PYTHON", str(python))
    monkeypatch.setenv("FAKE_ENGINE", "gpu")
    monkeypatch.setenv("FAKE_KV_GIB", f"{logged:.2f}")

    async def go() -> None:
        settings = load_settings()
        sup = Supervisor(settings, Store(settings.home / "advisor.db"), CATALOG, GPUS,
                         lambda: host, poll=0.05)
        await sup.start()
        try:
            first = await until_state(sup, (await sup.launch(req)).id, {"ready", "failed"})
            assert first.state == "ready" and first.gpu_name == H100
            assert first.measured["kv_cache_gib"] == logged
            assert first.predicted["host_correction_gib"] is None

            refined = plan_for(req, CATALOG, host, GPUS, history=sup.history()).estimate
            assert refined.kv_cache_gib == pytest.approx(logged, abs=0.01)
            assert refined.host_correction_gib == pytest.approx(1.25, abs=0.01)
            assert f"deployment {first.id}" in refined.provenance["kv_cache_gib"]
            await sup.stop(first.id)

            # the next launch is planned with it; its own record says the same again
            second = await until_state(sup, (await sup.launch(req)).id, {"ready", "failed"})
            assert second.predicted["kv_cache_gib"] == pytest.approx(logged, abs=0.01)
            assert second.predicted["host_correction_gib"] == pytest.approx(1.25, abs=0.01)
            (latest,) = sup.history()  # the older launch of the same says nothing more
            assert latest.deployment == second.id
            assert latest.shortfall_gib == pytest.approx(1.25, abs=0.01)
        finally:
            await sup.shutdown(keep_engines=False)

    asyncio.run(go())


def test_the_service_answers_with_the_history_and_the_page_says_so() -> None:
    """The same record as the supervisor leaves, in the service's own database: the JSON
    answer carries the correction and the recommendation page marks the refined bar."""
    settings = load_settings()
    host = gpu_host()
    plain = PlanRequest(model="llama-3.1-8b")  # the form's defaults, the installed vLLM
    est = estimate_for(plain, CATALOG, host, GPUS)
    store = Store(settings.home / "advisor.db")
    logged = round(est.kv_cache_gib - 0.5, 2)
    d = _launched(store, plain, est,
                  f"INFO [gpu_worker.py:436] Available KV cache memory: {logged} GiB")
    store.close()

    with TestClient(app=create_app(settings, profiler=gpu_host)) as client:
        answer = client.post("/api/estimate", json={"model": "llama-3.1-8b"}).json()
        assert answer["kv_cache_gib"] == pytest.approx(logged, abs=0.01)
        assert f"deployment {d.id}" in answer["provenance"]["kv_cache_gib"]

        token = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/").text)
        assert token
        page = client.post("/", data={"_csrf_token": token[1], "use_case": "chat",
                                      "model": "llama-3.1-8b"})
        assert page.status_code == 200, page.text
        assert "refined on this host" in page.text


@pytest.mark.parametrize(("printed", "read"), [
    ("v0.9.2", (0, 9)), ("0.10.1.1", (0, 10)), ("0.13.0+cu126", (0, 13)),
    ("0.6.4.post1", (0, 6)), (" 0.32.0\n", (0, 32)), ("unknown", None), ("", None), (None, None)])
def test_a_launch_records_version_is_read_as_vllm_version_prints_it(printed: object,
                                                                     read: object) -> None:
    from advisor.history import version_of
    assert version_of(printed) == read
