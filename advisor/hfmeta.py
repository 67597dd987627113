"""Model metadata from config.json and safetensors headers: local folders and the Hugging Face Hub.

The only importer of huggingface_hub. Tensors are never loaded: a safetensors file opens
with an 8-byte header length and a JSON header naming every tensor's dtype, shape and
byte range, which is all the size of a checkpoint needs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
from pathlib import Path
from typing import Any

import msgspec

from advisor.catalog import SIZES_FILE, Catalog, SizeRecord, load_sizes
from advisor.errors import ModelDirError, ModelNotFound
from advisor.specs import Architecture, Checkpoint, Model
from advisor.weights import checkpoint_bytes, param_count


class TensorInfo(msgspec.Struct):
    dtype: str
    shape: list[int]
    nbytes: int


class Metadata(msgspec.Struct, kw_only=True):
    """What a checkpoint holds, read without loading a tensor."""

    source: str  # a folder, or repo@revision
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def quant(self) -> str:
        qc = self.config.get("quantization_config") or {}
        method = str(qc.get("quant_method", "none")).lower()
        return {"compressed_tensors": "compressed-tensors"}.get(method, method)


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelDirError(f"{path.name} is not a readable safetensors file ({exc})") from None
    out: dict[str, TensorInfo] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = TensorInfo(dtype=info["dtype"], shape=list(info["shape"]), nbytes=end - begin)
    return out


def read_local(folder: Path) -> Metadata:
    """config.json plus every *.safetensors header of a model folder."""
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise ModelDirError(f"{folder} is not a folder")
    if not config_path.is_file():
        raise ModelDirError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{config_path} is not valid JSON ({exc})") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelDirError(f"{folder} has no *.safetensors weights (vLLM needs safetensors here)")
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        tensors.update(read_safetensors_header(f))
    return Metadata(source=str(folder), config=config, tensors=tensors)


def read_hub(repo: str, revision: str | None = None) -> Metadata:
    """The same from the Hub, through huggingface_hub (headers only, ranged requests)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ModelNotFound(f"model: {repo} is not in the catalog, and HF_HUB_OFFLINE is set, so it "
                            "cannot be read from the Hub")
    try:
        from huggingface_hub import get_safetensors_metadata, hf_hub_download

        config = json.loads(Path(hf_hub_download(repo, "config.json", revision=revision)).read_text())
        meta = get_safetensors_metadata(repo, revision=revision)
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all reach the user as one message
        raise ModelNotFound(
            f"model: {repo} is not in the catalog, and it could not be read from the Hugging Face "
            f"Hub ({type(exc).__name__}: {exc}). "
            "Check the name, your network, and HF_TOKEN for gated repos."
        ) from None
    tensors: dict[str, TensorInfo] = {}
    for file_meta in meta.files_metadata.values():
        for name, t in file_meta.tensors.items():
            begin, end = t.data_offsets
            tensors[name] = TensorInfo(dtype=t.dtype, shape=list(t.shape), nbytes=end - begin)
    return Metadata(source=f"{repo}@{revision or 'main'}", config=config, tensors=tensors)


def arch_from_config(config: dict[str, Any], source: str) -> Architecture:
    """Architecture figures from a config.json (multimodal configs: their text_config)."""
    c = dict(config.get("text_config") or config)
    if "text_config" in config:
        c.setdefault("architectures", config.get("architectures"))
    try:
        hidden = int(c["hidden_size"])
        heads = int(c["num_attention_heads"])
        arch = (c.get("architectures") or ["unknown"])[0]
        window = c.get("sliding_window") if c.get("use_sliding_window", True) else None
        pattern = int(c.get("sliding_window_pattern") or (2 if "Gemma2" in arch else 1)) if window else 0
        return Architecture(
            architecture=arch,
            layers=int(c["num_hidden_layers"]),
            hidden_size=hidden,
            intermediate_size=int(c.get("intermediate_size") or 4 * hidden),
            attention_heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            # transformers' Gemma 3 config defaults head_dim to 256 where config.json omits it
            head_dim=int(c.get("head_dim") or (256 if arch.startswith("Gemma3") else hidden // heads)),
            vocab_size=int(c["vocab_size"]),
            tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            native_context=int(c.get("max_position_embeddings") or 2048),
            qkv_bias=bool(c.get("attention_bias", False)) or arch.startswith("Qwen2"),
            qk_norm=arch.startswith(("Qwen3", "Gemma3")),
            norms_per_layer=4 if arch.startswith(("Gemma2", "Gemma3")) else 2,
            sliding_window=int(window or 0),
            sliding_window_pattern=pattern,
            experts=int(c.get("num_experts") or c.get("num_local_experts") or 0),
            experts_per_token=int(c.get("num_experts_per_tok") or 0),
            expert_intermediate_size=int(c.get("moe_intermediate_size") or 0),
            torch_dtype=str(c.get("torch_dtype") or c.get("dtype") or "bfloat16"),
            source=source,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{source}: config.json lacks or garbles {exc}") from None


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
    arch = arch_from_config(meta.config, f"{meta.source}/config.json")
    qc = meta.config.get("quantization_config") or {}
    quant = meta.quant if meta.quant in ("awq", "gptq", "fp8", "compressed-tensors",
                                         "bitsandbytes") else "none"
    ckpt = Checkpoint(repo=repo, quant=quant,  # type: ignore[arg-type]
                      bits=int(qc.get("bits", 16 if quant == "none" else 8)),
                      group_size=int(qc.get("group_size", 0) or 0), dtype=arch.torch_dtype,
                      weight_bytes=meta.weight_bytes,
                      weight_bytes_source=f"read: safetensors headers of {meta.source}")
    name = Path(repo).name if local else repo.split("/")[-1]
    return Model(id=name.lower(), name=name, repo=repo, license="unknown", released="",
                 params_b=round(param_count(arch) / 1e9, 3),
                 params_source="computed from config.json", languages=[], strengths=[],
                 summary="not in the catalog: no sourced scores", arch=arch, checkpoints=[ckpt])


def resolve(name: str, catalog: Catalog) -> tuple[Model, Checkpoint | None]:
    """A catalog id, a listed repo, a local model folder, or (online) any Hub repo."""
    model = catalog.by_id(name)
    if model:
        return model, None
    hit = catalog.by_repo(name)
    if hit:
        return hit[0], hit[1][0]
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        folder = path.resolve()
        m = model_from_metadata(read_local(folder), str(folder), local=True)
        return m, m.checkpoints[0]
    if name.count("/") == 1:
        m = model_from_metadata(read_hub(name), name, local=False)
        return m, m.checkpoints[0]
    raise ModelNotFound(f"model: {name!r} is not a catalog id, a repo the catalog lists, or a "
                        "model folder (see `advisor models`)")
