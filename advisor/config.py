"""Settings from the environment, built once by `load_settings()` and passed in (no globals)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec
import platformdirs


class Settings(msgspec.Struct, kw_only=True):
    home: Path  # ADVISOR_HOME: SQLite, engine logs, the key file
    api_key: str | None  # ADVISOR_API_KEY; None until ensure_api_key() reads or makes the file
    vllm_python: str  # ADVISOR_VLLM_PYTHON: the interpreter that has vLLM
    hf_cache: Path  # where Hugging Face keeps downloaded models
    catalog_dir: Path | None = None  # ADVISOR_CATALOG_DIR: another catalog/ folder (default: shipped)


def hf_cache_dir(env: Mapping[str, str]) -> Path:
    """Hugging Face's hub cache, as huggingface_hub resolves it."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    hf_home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(hf_home) / "hub"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("ADVISOR_HOME") or platformdirs.user_data_dir("slm-advisor"))
    return Settings(
        home=home,
        api_key=env.get("ADVISOR_API_KEY") or None,
        vllm_python=env.get("ADVISOR_VLLM_PYTHON") or _default_python(),
        hf_cache=hf_cache_dir(env),
        catalog_dir=Path(env["ADVISOR_CATALOG_DIR"]) if env.get("ADVISOR_CATALOG_DIR") else None,
    )


def _default_python() -> str:
    import sys

    return sys.executable


def ensure_api_key(settings: Settings) -> tuple[str, bool]:
    """The API key, from the environment or `ADVISOR_HOME/api-key` (made 0600 on first use).

    Returns the key and whether it was just generated (so the caller prints it once).
    """
    if settings.api_key:
        return settings.api_key, False
    path = settings.home / "api-key"
    if path.exists():
        return path.read_text().strip(), False
    settings.home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True
