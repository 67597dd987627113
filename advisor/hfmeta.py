"""Model metadata from the Hugging Face Hub and from config.json: what a name resolves to.

The only importer of huggingface_hub. Local folders are read by advisor.modelfiles (names,
paths, files and headers checked there); the Hub is asked through a gate (HubGate) that
bounds how long and how many look-ups at once; each config figure is checked here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from advisor.catalog import SIZES_FILE, Catalog, SizeRecord, load_sizes
from advisor.errors import HubUnavailable, ModelDirError, ModelNotFound, NeedsKey
from advisor.gguf_file import is_gguf_name, model_from_gguf
from advisor.modelfiles import (
    Metadata,
    TensorInfo,
    check_name,
    check_path,
    read_config,
    read_local,
    short,
    stat_of,
    tensors_from_header,
)
from advisor.specs import Architecture, Checkpoint, Model
from advisor.weights import bnb_held_bytes, checkpoint_bytes, param_count

# --------------------------------------------------------------------------- the Hub, bounded

# A caller must never wait on the Hub for long, nor may callers pile up: huggingface_hub
# retries an unreachable Hub 5 times over 23 s, and 45 such estimates once starved every
# route for three minutes.
HUB_AT_ONCE = 4  # look-ups under way at once; one more is refused at once
HUB_TIMEOUT_S = 20.0  # one look-up, config.json and headers together
PROBE_TIMEOUT_S = 1.5  # is the Hub's host reachable at all?
REMEMBER_S = 60.0  # how long an unreachable (or reachable) Hub is taken as such
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.-]{1,96}")


def is_repo_id(name: str) -> bool:
    """`owner/name` as the Hub spells repo ids (no '--' or '..', nothing path-like)."""
    return bool(REPO_ID.fullmatch(name)) and "--" not in name and ".." not in name \
        and not name.endswith(".")


def _hub_address() -> tuple[str, int]:
    """The host and port a Hub request first reaches: the proxy where one is set."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(v)), "")
    url = urllib.parse.urlsplit(proxy if proxy and "://" in proxy else endpoint)
    try:
        port = url.port
    except ValueError:
        port = None
    return url.hostname or "huggingface.co", port or (443 if url.scheme == "https" else 80)


def probe_hub(timeout: float = PROBE_TIMEOUT_S) -> str:
    """"" if a TCP connection to the Hub (or the proxy) opens within `timeout`, else why not.
    Name resolution cannot be given a timeout, so the probe runs in a thread of its own."""
    host, port = _hub_address()
    answer: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append("")
        except OSError as exc:
            answer.append(f"{host}:{port}: {exc.strerror or exc}")

    worker = threading.Thread(target=connect, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return answer[0] if answer else f"{host}:{port}: no answer within {timeout:g} s"


class HubGate:
    """At most `at_once` Hub look-ups at a time, each bounded by `timeout`, and a Hub found
    unreachable remembered for `remember` seconds so that callers are refused at once."""

    def __init__(self, at_once: int = HUB_AT_ONCE, timeout: float = HUB_TIMEOUT_S,
                 remember: float = REMEMBER_S, probe: Callable[[], str] = probe_hub,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.at_once, self.timeout, self.remember = at_once, timeout, remember
        self.probe, self.clock = probe, clock
        self._slots = threading.BoundedSemaphore(at_once)
        self._lock = threading.Lock()
        self._checked_at = -math.inf
        self._unreachable = ""  # why, when the last probe failed

    def _reachable(self) -> str:
        """"" or why the Hub is unreachable; probes at most once per `remember` seconds."""
        with self._lock:  # one probe at a time; the others wait for its answer
            if self.clock() - self._checked_at >= self.remember:
                self._unreachable = self.probe()
                self._checked_at = self.clock()
            return self._unreachable

    def run(self, repo: str, fetch: Callable[[], Metadata]) -> Metadata:
        if self._unreachable and self.clock() - self._checked_at < self.remember:
            raise self._offline(repo)
        if not self._slots.acquire(blocking=False):
            raise HubUnavailable(
                f"model: {repo} is not in the catalog, and the Hub is busy: {self.at_once} look-ups "
                "are already under way. Try again in a moment, or name a catalog model.")
        try:
            if self._reachable():
                raise self._offline(repo)
        except BaseException:
            self._slots.release()
            raise
        result: list[Metadata] = []
        error: list[BaseException] = []

        def work() -> None:
            try:
                result.append(fetch())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                error.append(exc)
            finally:  # a look-up that outlives its caller still holds its slot
                self._slots.release()

        worker = threading.Thread(target=work, name=f"hub {repo}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if not result:
            with self._lock:  # a failure may mean the network went away: probe again next time
                self._checked_at = -math.inf
        if error:
            raise error[0]
        if not result:
            raise HubUnavailable(f"model: {repo} is not in the catalog, and the Hugging Face Hub "
                                 f"did not answer within {self.timeout:g} s. Try again later.")
        return result[0]

    def _offline(self, repo: str) -> HubUnavailable:
        return HubUnavailable(
            f"model: {repo} is not in the catalog, and the Hugging Face Hub is unreachable, so it "
            f"cannot be read ({self._unreachable}; asked again after {self.remember:g} s). "
            "Name a catalog model or a local folder, or set HF_HUB_OFFLINE=1.")


GATE = HubGate()


def _fetch_hub(repo: str, revision: str | None) -> Metadata:
    """The two huggingface_hub calls: config.json, then the safetensors headers (ranged requests)."""
    try:
        from huggingface_hub import get_safetensors_metadata, hf_hub_download

        config = read_config(Path(hf_hub_download(repo, "config.json", revision=revision)))
        meta = get_safetensors_metadata(repo, revision=revision)
    except ModelDirError as exc:
        raise ModelNotFound(f"model: {repo}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all reach the user as one message
        raise ModelNotFound(
            f"model: {repo} is not in the catalog, and it could not be read from the Hugging Face "
            f"Hub ({type(exc).__name__}: {str(exc)[:300]}). "
            "Check the name, your network, and HF_TOKEN for gated repos."
        ) from None
    tensors: dict[str, TensorInfo] = {}
    for file_name, file_meta in meta.files_metadata.items():
        header = {name: {"dtype": t.dtype, "shape": t.shape, "data_offsets": t.data_offsets}
                  for name, t in file_meta.tensors.items()}
        try:
            tensors.update(tensors_from_header(header, f"{repo}/{file_name}", None))
        except ModelDirError as exc:
            raise ModelNotFound(f"model: {exc}") from None
    return Metadata(source=f"{repo}@{revision or 'main'}", config=config, tensors=tensors)


def read_hub(repo: str, revision: str | None = None) -> Metadata:
    """The same from the Hub, through huggingface_hub, bounded in time and in number (GATE)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ModelNotFound(f"model: {repo} is not in the catalog, and HF_HUB_OFFLINE is set, so it "
                            "cannot be read from the Hub")
    if not is_repo_id(repo):
        raise ModelNotFound(f"model: {short(repo)} is not a Hugging Face repo id (owner/name)")
    return GATE.run(repo, lambda: _fetch_hub(repo, revision))


# --------------------------------------------------------------------------- config.json

# (smallest, largest) of each figure the estimator reads; far beyond any real model, small
# enough that no product of them overflows a float or stalls a loop.
BOUNDS = {"num_hidden_layers": (1, 4096), "hidden_size": (1, 2**20), "intermediate_size": (1, 2**22),
          "num_attention_heads": (1, 2**14), "num_key_value_heads": (1, 2**14), "head_dim": (1, 2**14),
          "vocab_size": (1, 2**24), "max_position_embeddings": (1, 2**24),
          "sliding_window": (0, 2**24), "sliding_window_pattern": (1, 4096), "num_experts": (0, 2**14),
          "num_local_experts": (0, 2**14), "num_experts_per_tok": (0, 2**14),
          "moe_intermediate_size": (0, 2**22), "bits": (1, 32), "group_size": (-1, 2**20)}


def _int(c: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    """c[key] as a whole number within BOUNDS; `default` where it is absent or null."""
    value = c.get(key)
    if value is None:
        if default is None:
            raise ModelDirError(f"{where}: {key} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise ModelDirError(f"{where}: {key} is {short(value)}, not a whole number")
    low, high = BOUNDS[key]
    if not low <= value <= high:
        raise ModelDirError(f"{where}: {key} is {short(value)}, outside {low}..{high}")
    return int(value)


def _text(c: dict[str, Any], key: str, where: str, default: str) -> str:
    value = c.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 200:
        raise ModelDirError(f"{where}: {key} is {short(value)}, not a short string")
    return value


def arch_from_config(config: dict[str, Any], source: str) -> Architecture:
    """Architecture figures from a config.json (multimodal configs: their text_config), each
    checked: a whole number within BOUNDS, heads that divide, names that are strings."""
    if not isinstance(config, dict):
        raise ModelDirError(f"{source}: a JSON {type(config).__name__}, not an object")
    text_config = config.get("text_config")
    if text_config is not None and not isinstance(text_config, dict):
        raise ModelDirError(f"{source}: text_config is {short(text_config)}, not an object")
    c = dict(text_config or config)
    if text_config:
        c.setdefault("architectures", config.get("architectures"))
    names = c.get("architectures") or ["unknown"]
    if not isinstance(names, list) or not isinstance(names[0], str) or len(names[0]) > 200:
        raise ModelDirError(f"{source}: architectures is {short(names)}, not a list of class names")
    arch = names[0]
    hidden = _int(c, "hidden_size", source)
    heads = _int(c, "num_attention_heads", source)
    kv_heads = _int(c, "num_key_value_heads", source, heads)
    if heads % kv_heads:
        raise ModelDirError(f"{source}: num_attention_heads ({heads}) is not a multiple of "
                            f"num_key_value_heads ({kv_heads})")
    if c.get("head_dim") is None and not arch.startswith("Gemma3") and hidden < heads:
        raise ModelDirError(f"{source}: head_dim is missing and hidden_size ({hidden}) is less than "
                            f"num_attention_heads ({heads})")
    # transformers' Gemma 3 config defaults head_dim to 256 where config.json omits it
    head_dim = _int(c, "head_dim", source, 256 if arch.startswith("Gemma3") else hidden // heads)
    window = _int(c, "sliding_window", source, 0) if c.get("use_sliding_window", True) else 0
    pattern = _int(c, "sliding_window_pattern", source, 2 if "Gemma2" in arch else 1) if window else 0
    experts = _int(c, "num_experts", source, 0) or _int(c, "num_local_experts", source, 0)
    per_token = _int(c, "num_experts_per_tok", source, 0)
    if per_token > experts:
        raise ModelDirError(f"{source}: num_experts_per_tok ({per_token}) is more than the "
                            f"{experts} experts")
    return Architecture(
        architecture=arch,
        layers=_int(c, "num_hidden_layers", source),
        hidden_size=hidden,
        intermediate_size=_int(c, "intermediate_size", source,
                               min(4 * hidden, BOUNDS["intermediate_size"][1])),
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_int(c, "vocab_size", source),
        tied_embeddings=bool(c.get("tie_word_embeddings", False)),
        native_context=_int(c, "max_position_embeddings", source, 2048),
        qkv_bias=bool(c.get("attention_bias", False)) or arch.startswith("Qwen2"),
        qk_norm=arch.startswith(("Qwen3", "Gemma3")),
        norms_per_layer=4 if arch.startswith(("Gemma2", "Gemma3")) else 2,
        sliding_window=window,
        sliding_window_pattern=pattern,
        experts=experts,
        experts_per_token=per_token,
        expert_intermediate_size=_int(c, "moe_intermediate_size", source, 0),
        torch_dtype=_text(c, "torch_dtype", source, "") or _text(c, "dtype", source, "bfloat16"),
        source=source,
    )


# --------------------------------------------------------------------------- refresh

ARCH_FIELDS = ("layers", "hidden_size", "intermediate_size", "attention_heads", "kv_heads",
               "head_dim", "vocab_size", "tied_embeddings", "native_context")


class Drift(msgspec.Struct, kw_only=True):
    """One checkpoint checked against what its metadata says."""

    model: str
    repo: str
    quant: str
    status: str  # "ok", "drift", "unreachable"
    computed_bytes: int
    read_bytes: int | None = None
    drift_pct: float | None = None
    arch_changes: list[str] = []
    message: str = ""


def _read(repo: str, mirror: Path | None) -> Metadata:
    if mirror is None:
        return read_hub(repo)
    for candidate in (mirror / repo, mirror / repo.replace("/", "--")):
        if candidate.is_dir():
            return read_local(candidate)
    raise ModelNotFound(f"{repo}: no copy under {mirror}")


def refresh(catalog: Catalog, mirror: Path | None = None, tolerance_pct: float = 0.5) -> list[Drift]:
    """Check every on-disk checkpoint's size and architecture against its metadata.

    `mirror` is a folder of local copies (`org/name` or `org--name`), used instead of the Hub.
    """
    report: list[Drift] = []
    for m in catalog.models:
        for c in m.checkpoints:
            if c.at_load:
                continue
            computed = checkpoint_bytes(m.arch, c)
            try:
                meta = _read(c.repo, mirror)
            except (ModelNotFound, ModelDirError) as exc:
                report.append(Drift(model=m.id, repo=c.repo, quant=c.quant, status="unreachable",
                                    computed_bytes=computed, message=str(exc)))
                continue
            report.append(_compare(m, c, computed, meta, tolerance_pct))
    return report


def _compare(m: Model, c: Checkpoint, computed: int, meta: Metadata, tol: float) -> Drift:
    read = meta.weight_bytes
    pct = round(100 * (read - computed) / computed, 3) if computed else None
    changes = []
    try:
        live = arch_from_config(meta.config, meta.source)
        changes = [f"{f}: catalog {getattr(m.arch, f)}, config.json {getattr(live, f)}"
                   for f in ARCH_FIELDS if getattr(m.arch, f) != getattr(live, f)]
    except ModelDirError as exc:
        changes = [str(exc)]
    status = "drift" if changes or (pct is not None and abs(pct) > tol) else "ok"
    return Drift(model=m.id, repo=c.repo, quant=c.quant, status=status, computed_bytes=computed,
                 read_bytes=read, drift_pct=pct, arch_changes=changes, message=meta.source)


def write_sizes(directory: Path, report: list[Drift]) -> Path:
    """Record the sizes read, so the catalog says 'read' for them from now on."""
    records = load_sizes(directory)
    today = dt.date.today().isoformat()
    for d in report:
        if d.read_bytes is not None:
            records[d.repo] = SizeRecord(weight_bytes=d.read_bytes, read_from=d.message,
                                         read_on=today)
    lines = ["# Checkpoint sizes read from safetensors metadata by `advisor catalog refresh --write`.",
             "# Checkpoints not listed here have their sizes computed from the architecture.", ""]
    for repo in sorted(records):
        r = records[repo]
        lines += [f"[{json.dumps(repo)}]", f"weight_bytes = {r.weight_bytes}",
                  f"read_from = {json.dumps(r.read_from)}", f"read_on = {json.dumps(r.read_on)}", ""]
    path = directory / SIZES_FILE
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------- resolving a name


def model_from_metadata(meta: Metadata, repo: str, local: bool) -> Model:
    """A catalog-shaped Model for a checkpoint outside the catalog (no scores: none sourced)."""
    where = f"{meta.source}/config.json"
    arch = arch_from_config(meta.config, where)
    qc = meta.config.get("quantization_config") or {}
    if not isinstance(qc, dict):
        raise ModelDirError(f"{where}: quantization_config is {short(qc)}, not an object")
    quant = meta.quant if meta.quant in ("awq", "gptq", "fp8", "compressed-tensors",
                                         "bitsandbytes") else "none"
    bits = _int(qc, "bits", f"{where} quantization_config", 16 if quant == "none" else 8)
    held, held_source = meta.weight_bytes, f"read: safetensors headers of {meta.source}"
    if quant == "bitsandbytes" and qc.get("load_in_4bit") is True:
        # bitsandbytes' config says 4-bit by a flag, not "bits"; vLLM holds its absmax as fp32
        bits = 4
        held = bnb_held_bytes({n: (t.nbytes, math.prod(t.shape)) for n, t in meta.tensors.items()})
        held_source += ", absmax as fp32 (vLLM dequantizes the double quantization at load)"
    ckpt = Checkpoint(repo=repo, quant=quant,  # type: ignore[arg-type]
                      bits=bits,
                      # GPTQ writes -1 for "no groups": one group per channel, our 0
                      group_size=max(0, _int(qc, "group_size", f"{where} quantization_config", 0)),
                      dtype=arch.torch_dtype, weight_bytes=held, weight_bytes_source=held_source)
    name = Path(repo).name if local else repo.split("/")[-1]
    return Model(id=name.lower(), name=name, repo=repo, license="unknown", released="",
                 params_b=round(param_count(arch) / 1e9, 3),
                 params_source="computed from config.json", languages=[], strengths=[],
                 summary="not in the catalog: no sourced scores", arch=arch, checkpoints=[ckpt])


def looks_like_path(name: str) -> bool:
    """What a caller without the key may not have looked up: anything that could be a path
    and is not an `owner/name` repo id."""
    return name.startswith((".", "/", "~")) or (("/" in name or "\\" in name) and not is_repo_id(name))


def resolve(name: str, catalog: Catalog, *, local_ok: bool = True) -> tuple[Model, Checkpoint | None]:
    """A catalog id, a listed repo, a local model folder, or (online) any Hub repo.

    With `local_ok` False (a caller without the API key) the filesystem is never touched, so
    that an answer cannot tell whether a path exists."""
    check_name(name)
    model = catalog.by_id(name)
    if model:
        return model, None
    hit = catalog.by_repo(name)
    if hit:
        return hit[0], hit[1][0]
    if not local_ok:
        if is_repo_id(name):
            m = model_from_metadata(read_hub(name), name, local=False)
            return m, m.checkpoints[0]
        if looks_like_path(name):
            raise NeedsKey("model: a local model folder needs the API key (Authorization: Bearer "
                           "<key>, or sign in); without it, name a catalog id or a Hub repo id")
        raise ModelNotFound(f"model: {short(name)} is not a catalog id or a Hugging Face repo id "
                            "(see `advisor models`; a local folder needs the API key)")
    if is_gguf_name(name):  # a GGUF file, or repo:QUANT in the cache: read from its header
        m = model_from_gguf(name, catalog)
        return m, m.checkpoints[0]
    try:
        path = Path(name).expanduser()
    except RuntimeError:  # "~nobody": no such user
        raise ModelDirError(f"model: {short(name)}: its home folder is unknown") from None
    try:
        check_path(path)
        if stat_of(path) is not None or looks_like_path(name):
            folder = path.resolve(strict=False)
            m = model_from_metadata(read_local(folder), str(folder), local=True)
            return m, m.checkpoints[0]
    except (OSError, RuntimeError) as exc:  # resolve() on a symlink loop
        raise ModelDirError(f"model: {short(name)} cannot be read ({exc})") from None
    except ModelDirError as exc:
        raise ModelDirError(f"model: {exc}") from None
    if is_repo_id(name):
        m = model_from_metadata(read_hub(name), name, local=False)
        return m, m.checkpoints[0]
    raise ModelNotFound(f"model: {short(name)} is not a catalog id, a repo the catalog lists, or a "
                        "model folder (see `advisor models`)")
