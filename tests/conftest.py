from __future__ import annotations

from pathlib import Path

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
