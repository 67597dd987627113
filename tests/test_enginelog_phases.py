"""Start-up phases read from real logs: the vLLM 0.32 CPU engine's own (tests/data/
cpu_engine_logs) and published GPU logs (tests/data/vllm_logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.enginelog import is_probe, phase_spans, read_failure, read_phase, summarize
from advisor.watch import failure_of

DATA = Path(__file__).parent / "data"
CPU_LOG = DATA / "cpu_engine_logs" / "tiny-2L-256-v0320-cpu.log"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_the_cpu_engine_log_goes_through_its_phases_in_order_without_a_false_compile() -> None:
    log = lines(CPU_LOG)
    # the lines that once read as compiling and downloading are in this very log
    assert any("disabling torch.compile" in x for x in log)
    assert any("download_dir=None" in x for x in log)
    assert summarize(log).phases == ["initializing", "loading_weights", "allocating_kv_cache", "ready"]


def test_phase_spans_carry_the_time_each_took_by_the_logs_own_timestamps() -> None:
    spans = phase_spans(lines(CPU_LOG))
    assert [s.phase for s in spans] == ["initializing", "loading_weights", "allocating_kv_cache", "ready"]
    # 04:24:39 banner … 04:25:48 "Starting to load model" … 04:25:50 KV cache … 04:25:52 ready
    assert spans[0].took_s == 69 and spans[1].started_s == 69
    assert sum(s.took_s or 0 for s in spans) == spans[-1].started_s


@pytest.mark.parametrize("line", [
    "WARNING 12-02 04:24:59 [vllm.py:1703] Enforce eager set, disabling torch.compile, CUDAGraphs",
    "WARNING 12-02 04:24:59 [vllm.py:1727] Inductor compilation was disabled by user settings",
    "INFO [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: model='m', "
    "download_dir=None, load_format=auto",
])
def test_lines_that_say_compilation_is_off_or_name_download_dir_are_no_such_phase(line: str) -> None:
    assert read_phase(line) not in ("compiling", "downloading")


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA / "vllm_logs").glob("*.log")))
def test_no_published_gpu_log_reads_downloading_from_its_config_line(name: str) -> None:
    phases = summarize(lines(DATA / "vllm_logs" / name)).phases
    assert "downloading" not in phases  # none of them downloads: every one printed download_dir


def test_a_published_gpu_log_with_torch_compile_reads_compiling_after_loading() -> None:
    phases = summarize(lines(DATA / "vllm_logs" / "rtx2000ada-qwen25-1p5b-v0112.log")).phases
    assert phases.index("loading_weights") < phases.index("compiling")


def test_real_download_lines_are_downloading() -> None:
    assert read_phase("Fetching 4 files:  25%|██▌       | 1/4 [00:02<00:06,  2.10s/it]") == "downloading"
    assert read_phase("INFO 12-02 04:25:48 [weight_utils.py:450] Downloading weights") == "downloading"


def test_no_network_for_a_download_is_named_in_one_sentence() -> None:
    tail = ["Traceback (most recent call last):",
            "huggingface_hub.errors.LocalEntryNotFoundError: An error happened while trying to "
            "locate the files on the Hub and we cannot find the requested files in the local cache.",
            "RuntimeError: Engine core initialization failed. See root cause above."]
    cause, fix = failure_of(tail, 1)
    assert cause.startswith("The model could not be downloaded: the Hugging Face Hub cannot be reached.")
    assert "huggingface.co" in fix
    assert read_failure(tail[1]) is not None and read_failure(tail[1]).kind == "offline"  # type: ignore[union-attr]


def test_the_advisors_own_probes_are_told_apart_from_the_engines_lines() -> None:
    assert is_probe('INFO:     127.0.0.1:0 - "GET /health HTTP/1.1" 200 OK')
    assert is_probe('(APIServer pid=1) INFO:     - "GET /metrics HTTP/1.1" 200 OK')
    assert not is_probe('INFO:     - "POST /v1/chat/completions HTTP/1.1" 200 OK')
    assert not any(is_probe(x) for x in lines(CPU_LOG) if "Route:" in x)


def test_a_real_offline_launch_is_named_by_its_error_line_not_the_traceback() -> None:
    tail = lines(DATA / "cpu_engine_logs" / "smollm2-360m-offline-FAILED-v0320-cpu.log")[-400:]
    cause, _ = failure_of(tail, 1)
    assert cause.startswith("The model could not be downloaded")
    assert "outgoing traffic has been disabled" in cause and "raise " not in cause


def test_the_0_32_banner_with_its_version_is_the_first_initializing_line() -> None:
    log = lines(CPU_LOG)
    banner = next(i for i, line in enumerate(log) if "version 0.32.0" in line)
    assert read_phase(log[banner]) == "initializing"
    assert all(read_phase(line) is None for line in log[:banner])
