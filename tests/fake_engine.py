"""A scripted stand-in for `python -m vllm.entrypoints.openai.api_server` (a seam for the
supervisor's unit tests): prints captured vLLM lines, then behaves as FAKE_ENGINE says.

ok: serves /health; kv: refuses with vLLM's KV error; hang: never becomes ready;
stubborn: serves /health and ignores SIGTERM; gpu: prints a GPU engine's memory lines
(its KV cache memory from FAKE_KV_GIB) and serves /health; download: prints what vLLM 0.32
prints while a Hub model's non-weight files download and waits there (a test writes the
bytes); download-weights: goes on to "Starting to load model", after which 0.32 fetches the
weights silently, and waits there.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import socket
import socketserver
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine itself never imports the advisor
    from advisor.specs import Deployment
    from advisor.supervisor import Supervisor

LINES = [
    "(APIServer pid=1) INFO 11-29 20:39:01 [api_utils.py:347]  version 0.32.0",
    "(EngineCore pid=2) INFO 11-29 20:39:40 [gpu_model_runner.py:1] Starting to load model /m...",
    "(EngineCore pid=2) INFO 11-29 20:39:45 [default_loader.py:1] Model loading took 0.01 GiB memory",
    "(Worker pid=3) INFO 11-29 20:39:52 [cpu_worker.py:260] Explicitly set (1.0/7.59) GiB for KV "
    "cache on node 0.",
    "(EngineCore pid=2) INFO 11-29 20:39:52 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens, "
    "Maximum concurrency for 256 tokens per request: 4096.00x",
]
GPU_LINES = [
    "(APIServer pid=1) INFO 11-29 20:39:01 [api_utils.py:347]  version 0.32.0",
    "(EngineCore pid=2) INFO 11-29 20:39:45 [gpu_model_runner.py:1] Model loading took 0.01 GiB "
    "memory and 0.5 seconds",
    "(EngineCore pid=2) INFO 11-29 20:39:52 [gpu_worker.py:436] Available KV cache memory: {kv} GiB",
]
# vLLM 0.32 on a Hub id: huggingface_hub's bar for the non-weight files (transformers_utils/
# repo_utils.py), then the weights, downloaded with tqdm disabled (weight_utils.py)
# (the lines of tests/data/cpu_engine_logs/tiny-2L-256-v0320-cpu.log, on a Hub id)
DOWNLOAD_LINES = [
    "(APIServer pid=1) INFO 12-02 04:24:39 [api_utils.py:286] non-default args: {'model': "
    "'HuggingFaceTB/SmolLM2-360M-Instruct', 'max_model_len': 256, 'enforce_eager': True}",
    "Fetching 7 files:   0%|          | 0/7 [00:00<?, ?it/s]",
    "(Worker pid=3) INFO 12-02 04:25:48 [cpu_model_runner.py:68] Starting to load model "
    "HuggingFaceTB/SmolLM2-360M-Instruct...",
]
KV_ERROR = ("ValueError: To serve at least one request with the model's max seq len (65536), (2.0 GiB "
            "KV cache is needed, which is larger than the available KV cache memory (1.0 GiB). Based on "
            "the available memory, the estimated maximum model length is 32640. Try increasing "
            "`gpu_memory_utilization`")


KEY = ""


async def until_state(sup: Supervisor, dep_id: str, states: set[str],
                      timeout: float = 20) -> Deployment:
    """The deployment once the supervisor puts it in one of `states`."""
    for _ in range(int(timeout / 0.05)):
        d = sup.get(dep_id)
        if d.state in states:
            return d
        await asyncio.sleep(0.05)
    raise TimeoutError(sup.get(dep_id))


def interpreter(folder: Path) -> Path:
    """An 'interpreter' that runs this script whatever module it is asked for: what
    ADVISOR_VLLM_PYTHON names to put the scripted engine behind the supervisor."""
    exe = folder / "fake-python"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


class Health(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:  # as uvicorn does: no Nagle delay on small writes
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802 - a stand-in for one tiny completion
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if self.path.endswith("/"):  # as vLLM (Starlette) does: redirect to the slash-less path
            self.send_response(307)
            self.send_header("location", self.path.rstrip("/"))
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.headers.get("authorization") != f"Bearer {KEY}":  # as vLLM's --api-key does
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = b'{"id":"x","object":"text_completion","choices":[{"index":0,"text":"!"}]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """http.server over a Unix socket, where the supervisor's engines listen (--uds)."""

    daemon_threads = True


class UnixHealth(Health):
    def setup(self) -> None:  # no TCP options on a Unix socket
        socketserver.StreamRequestHandler.setup(self)

    def address_string(self) -> str:
        return "unix"


def main() -> None:
    mode = os.environ.get("FAKE_ENGINE", "ok")
    global KEY
    uds = sys.argv[sys.argv.index("--uds") + 1] if "--uds" in sys.argv else None
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    # as vLLM: --api-key wins over VLLM_API_KEY
    KEY = sys.argv[sys.argv.index("--api-key") + 1] if "--api-key" in sys.argv else \
        os.environ.get("VLLM_API_KEY", "")
    lines = [line.format(kv=os.environ.get("FAKE_KV_GIB", "1.0")) for line in GPU_LINES] \
        if mode == "gpu" else DOWNLOAD_LINES[:2] if mode == "download" else \
        DOWNLOAD_LINES if mode == "download-weights" else \
        LINES[: 3 if mode == "hang" else None]
    for line in lines:
        print(line, flush=True)
        time.sleep(0.05)
    if mode == "kv":
        print(KV_ERROR, flush=True)
        sys.exit(1)
    if mode in ("hang", "download", "download-weights"):
        while True:
            time.sleep(1)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server: socketserver.BaseServer = UnixHTTPServer(uds, UnixHealth) if uds else \
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Health)
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
