"""Start the real CPU vLLM engine on a model folder and collect its log until it says enough.

Tests use this to compare the estimator with what the engine itself prints. The engine
runs in its own process group and is always stopped (TERM, then KILL) when done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_engine_until(model: Path, args: list[str], kv_space_gib: int, log: Path,
                     done: Callable[[str], bool], timeout: float = 420) -> tuple[list[str], int | None]:
    """Run the engine until a line satisfies `done`, it exits, or the timeout passes.

    Returns the log lines and the exit code (None if we stopped it)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_space_gib), "HF_HUB_OFFLINE": "1",
           "VLLM_LOGGING_LEVEL": "INFO", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    argv = [sys.executable, "-m", ENGINE_MODULE, "--model", str(model), "--host", "127.0.0.1",
            "--port", str(free_port()), "--enforce-eager", *args]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    code: int | None = None
    try:
        while time.monotonic() < deadline:
            lines = log.read_text(errors="replace").splitlines()
            if any(done(line) for line in lines):
                break
            code = proc.poll()
            if code is not None:
                lines = log.read_text(errors="replace").splitlines()
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"engine said nothing conclusive in {timeout:.0f} s; log: {log}")
    finally:
        if proc.poll() is None:
            stop_group(proc)
    return lines, code


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
