"""A real `advisor serve` in a subprocess, and a few helpers to drive it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from engine import free_port

KEY = "test-key-0123456789"
# the tiny test model on the CPU engine: 1 GiB of KV cache, short sequences
TINY = {"gpus": 0, "cpu_kv_gib": 1, "max_model_len": 256}


def port_free(port: int) -> bool:
    """Whether nothing listens on the port or has touched it lately."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(n: int) -> tuple[int, int]:
    """n consecutive ports that are free now (best effort)."""
    for _ in range(50):
        start = free_port()
        if start + n < 65000 and all(port_free(p)
                                     for p in range(start, start + n)):
            return start, start + n - 1
    raise RuntimeError("no free port range")


class Service:
    def __init__(self, home: Path, ports: tuple[int, int], *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.home, self.ports = home, ports
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"service-{self.port}.log"
        full_env = {**os.environ, "ADVISOR_HOME": str(home), "ADVISOR_API_KEY": KEY,
                    "HF_HUB_OFFLINE": "1",
                    "ADVISOR_START_TIMEOUT": "600", **(env or {})}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "advisor", "serve", "--port",
                                          str(self.port), *extra], stdout=out,
                                         stderr=subprocess.STDOUT, env=full_env)
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {KEY}"})
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"advisor serve did not start:\n{self.log.read_text()}")
            time.sleep(0.3)

    def launch(self, **body: Any) -> httpx.Response:
        return self.http.post("/api/deployments", json=body)

    def deployment(self, dep_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/deployments/{dep_id}")
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def wait_state(self, dep_id: str, states: set[str], timeout: float = 420,
                   seen: list[str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            d = self.deployment(dep_id)
            if seen is not None and d["phase"] and (not seen or seen[-1] != d["phase"]):
                seen.append(d["phase"])
            if d["state"] in states:
                return d
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dep_id} stayed {d['state']} ({d['phase']}):\n"
                                   + self.http.get(f"/api/deployments/{dep_id}/logs").text[-3000:])
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()


@contextmanager
def launched(home: Path, model: Path, ports: int = 3,
             env: dict[str, str] | None = None) -> Iterator[tuple[Service, dict[str, Any]]]:
    """`advisor serve` with `model` launched as TINY (just started, not yet ready). On the
    way out the deployment is stopped, then the service."""
    svc = Service(home, free_port_range(ports), env=env)
    try:
        d = svc.launch(model=str(model), **TINY).json()
        yield svc, d
        svc.http.delete(f"/api/deployments/{d['id']}")
        svc.wait_state(d["id"], {"stopped"}, timeout=60)
    finally:
        svc.stop()
