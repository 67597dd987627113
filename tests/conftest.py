from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fake_engine import interpreter


@pytest.fixture(autouse=True)
def advisor_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own ADVISOR_HOME and HF cache, and never reaches a hub."""
    home = tmp_path / "advisor-home"
    monkeypatch.setenv("ADVISOR_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ADVISOR_API_KEY", raising=False)
    monkeypatch.delenv("ADVISOR_CATALOG_DIR", raising=False)
    return home


@pytest.fixture(name="python")
def fx_python(tmp_path: Path) -> Path:
    """An 'interpreter' that runs the scripted engine (tests/fake_engine.py) whatever module
    it is asked for: ADVISOR_VLLM_PYTHON for the supervisor's tests at the engine seam."""
    return interpreter(tmp_path)


# Engines, services and browsers a module started must be gone when it ends: one left
# running takes a core from every test after it (on a 2-core host the CPU engine's decode,
# and so tests/test_cpu_speed.py's estimate check, slows by half). Whatever outlives its
# module is killed here and named in the run's summary.
_STRAYS = ("vllm", "VLLM::", "advisor", "chromium", "chrome", "headless_shell")
_killed: list[str] = []


def _ours(proc: psutil.Process) -> bool:
    try:
        line = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(s in line for s in _STRAYS)


@pytest.fixture(scope="module", autouse=True)
def no_stray_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    me = psutil.Process()
    keep = {p.pid for p in psutil.process_iter()} | {me.pid} | {p.pid for p in me.parents()}
    yield
    deadline = time.monotonic() + 15  # a process told to stop may still be on its way out
    while True:
        strays = [p for p in psutil.process_iter() if p.pid not in keep and _ours(p)]
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for p in strays:
        with contextlib.suppress(psutil.Error):
            _killed.append(f"{request.module.__name__}: {p.pid} {' '.join(p.cmdline())[:160]}")
            p.kill()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _killed:
        terminalreporter.section("processes left running by a test module, killed")
        for line in _killed:
            terminalreporter.write_line(line)
