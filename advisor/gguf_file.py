"""GGUF files (the seed's llama.cpp path): a model read from its header alone.

The `gguf` package (llama.cpp's own reader) maps the file and parses its header: the
metadata (architecture, layers, heads, context) and every tensor's type and shape. Tensor
data is never read, so a 5 GB file costs a header's worth of I/O. The weights are the exact
bytes of its tensors (Q4_K blocks with their scales, the F32 norms, whatever the file holds);
the KV cache follows from the heads, as for any checkpoint.

vLLM 0.24 moved its GGUF loader into the `vllm-gguf-plugin` package, CUDA only: the CPU
engine refuses it, and the refusal names the nearest catalog checkpoint that does run there.
The only home of the `gguf` package.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from advisor.catalog import Catalog
from advisor.config import hf_cache_dir
from advisor.errors import ModelDirError, ModelNotFound
from advisor.estimate import cpu_engine_refuses
from advisor.specs import Architecture, Checkpoint, Model

GIB = 2**30
# llama.cpp's architecture names, as vLLM's GGUF loader maps them back to transformers'
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM",
                 "phi3": "Phi3ForCausalLM", "mistral": "MistralForCausalLM",
                 "granite": "GraniteForCausalLM"}


class GgufFile(msgspec.Struct, kw_only=True):
    """What a GGUF header says about its model and its tensors."""

    path: str
    architecture: str  # general.architecture, llama.cpp's name ("llama", "qwen2")
    name: str  # general.name
    file_type: str  # general.file_type as llama.cpp names it: "MOSTLY_Q4_K_M"
    tensor_count: int
    tensor_types: dict[str, int]  # GGML type -> tensors of it
    type_bytes: dict[str, int]  # GGML type -> bytes of them
    weight_bytes: int  # every tensor's bytes
    params: int  # every tensor's elements
    arch: Architecture
    # Hugging Face repos the header names, with their keys: general.source.repo_url (what
    # the file was converted from) first, then general.base_model.N.repo_url in order
    named_repos: list[tuple[str, str]] = []


def is_gguf_name(name: str) -> bool:
    """A GGUF file path, or `repo:QUANT` (a GGUF repo with the quantization to pick)."""
    return name.lower().endswith(".gguf") or (":" in name and "/" in name.split(":", 1)[0]
                                              and not name.startswith(("/", ".", "~")))


def find_cached(name: str, env: Mapping[str, str] | None = None) -> Path:
    """`repo:QUANT` as a file in the local Hugging Face cache (never the network: a GGUF repo
    holds one file per quantization, and the header is all that is read)."""
    repo, _, quant = name.partition(":")
    if not quant or repo.count("/") != 1:
        raise ModelNotFound(f"model: {name!r} is not a GGUF file or repo:QUANT "
                            "(e.g. Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M)")
    root = hf_cache_dir(os.environ if env is None else env) / ("models--" + repo.replace("/", "--"))
    want = quant.lower().replace("-", "_")
    hits = sorted(p for p in root.glob("snapshots/*/**/*.gguf")
                  if want in p.name.lower().replace("-", "_"))
    if not hits:
        raise ModelNotFound(f"model: no {quant} GGUF file of {repo} in the Hugging Face cache "
                            f"({root}); fetch it first, e.g. `hf download {repo} --include "
                            f"'*{quant}*.gguf'`, or name the file's path")
    return hits[0]


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HF_URL = re.compile(r"https?://huggingface\.co/([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)")


def hf_repo_of(value: object) -> str | None:
    """A Hugging Face repo id from a header's repo_url ("https://huggingface.co/Org/Name"
    or "Org/Name"), as vllm-gguf-plugin reads them; None for anything else."""
    if not isinstance(value, str):
        return None
    text = value.strip().removesuffix(".git")
    if _REPO_ID.fullmatch(text):
        return text
    found = _HF_URL.match(text)
    return found[1].removesuffix(".git") if found else None


def _named_repos(reader: Any) -> list[tuple[str, str]]:
    keys = ["general.source.repo_url"] + sorted(
        (k for k in reader.fields if k.startswith("general.base_model.") and k.endswith(".repo_url")),
        key=lambda k: int(k.split(".")[2]) if k.split(".")[2].isdigit() else 1 << 30)
    out: list[tuple[str, str]] = []
    for key in keys:
        repo = hf_repo_of(_field(reader, key))
        if repo and repo not in {r for _, r in out}:
            out.append((key, repo))
    return out


def read_gguf(path: Path) -> GgufFile:
    """The header of a GGUF file; ModelDirError naming the file when it is not one."""
    import gguf

    try:
        return _read(gguf, path)
    except ModelDirError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, struct.error) as exc:
        # a damaged or hostile header: the reader's own exceptions, in words
        raise ModelDirError(f"{path}: not a readable GGUF file ({exc})") from None


def _read(gguf: Any, path: Path) -> GgufFile:
    reader = gguf.GGUFReader(path, "r")
    arch_name = str(_field(reader, "general.architecture") or "")

    def num(key: str, default: int | None = None) -> int:
        v = _field(reader, f"{arch_name}.{key}")
        if v is None:
            if default is None:
                raise ModelDirError(f"{path}: the GGUF header has no {arch_name}.{key}")
            return default
        return int(v)

    types: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    names = set()
    params = 0
    for t in reader.tensors:
        kind = gguf.GGMLQuantizationType(t.tensor_type).name
        types[kind] += 1
        sizes[kind] += int(t.n_bytes)
        params += int(t.n_elements)
        names.add(t.name)
    hidden, heads = num("embedding_length"), num("attention.head_count")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = num("vocab_size", len(tokens) if tokens else int(embd.shape[-1]) if embd is not None else 0)
    file_type = _field(reader, "general.file_type")
    arch = Architecture(
        architecture=ARCHITECTURES.get(arch_name, arch_name),
        layers=num("block_count"), hidden_size=hidden, intermediate_size=num("feed_forward_length"),
        attention_heads=heads, kv_heads=num("attention.head_count_kv", heads),
        head_dim=num("attention.key_length", hidden // heads), vocab_size=vocab,
        tied_embeddings="output.weight" not in names, native_context=num("context_length"),
        qkv_bias="blk.0.attn_q.bias" in names, qk_norm="blk.0.attn_q_norm.weight" in names,
        source=f"GGUF header of {path}")
    return GgufFile(
        path=str(path), architecture=arch_name, name=str(_field(reader, "general.name") or path.stem),
        file_type=gguf.LlamaFileType(int(file_type)).name if file_type is not None else "",
        tensor_count=len(reader.tensors), tensor_types=dict(types), type_bytes=dict(sizes),
        weight_bytes=sum(sizes.values()), params=params, arch=arch,
        named_repos=_named_repos(reader))


def _same_model(a: Architecture, b: Architecture) -> bool:
    return (a.layers, a.hidden_size, a.attention_heads, a.kv_heads, a.vocab_size) == (
        b.layers, b.hidden_size, b.attention_heads, b.kv_heads, b.vocab_size)


def nearest_cpu_checkpoint(arch: Architecture, catalog: Catalog) -> str:
    """The smallest catalog checkpoint of the same model that the CPU engine runs, in words."""
    found = [(c.weight_bytes, m, c) for m in catalog.models if _same_model(m.arch, arch)
             for c in m.checkpoints if not cpu_engine_refuses(c)]
    if not found:
        return ("no catalog model has this architecture; a safetensors checkpoint of the same "
                "model (AWQ or GPTQ 4-bit, or the plain one) runs there")
    size, m, c = min(found, key=lambda f: f[0])
    return f"the nearest that runs there: {c.repo} ({m.id}, {c.label}, {size / GIB:.2f} GiB)"


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def tokenizer_repo(g: GgufFile, catalog: Catalog) -> tuple[str, str]:
    """(the repo whose tokenizer and config the engine should read, where it came from);
    ("", why none) when neither the header nor the catalog names one.

    The header first: the repo the file was converted from, else its first base model, as
    vllm-gguf-plugin itself follows general.base_model.N.repo_url for the config. Else the
    catalog model of the same architecture, the one the header's general.name names where
    several share it. vLLM's own conversion of a GGUF's tokenizer is slow and unreliable
    for large vocabularies (its GGUF docs), so a base repo is asked for, not guessed."""
    if g.named_repos:
        key, repo = g.named_repos[0]
        why = f"GGUF header {key}"
        if key != "general.source.repo_url":
            why += (" (the model it was made from: the same vocabulary; its chat template is "
                    "that repo's)")
        return repo, why
    same = [m for m in catalog.models if _same_model(m.arch, g.arch)]
    how = "the same architecture"
    if len(same) > 1:
        named = _words(g.name)
        same = sorted((m for m in same if _words(m.name) in named or _words(m.id) in named),
                      key=lambda m: -len(_words(m.name)))[:1]
        how += f", named in the header's {g.name!r}"
    if len(same) == 1:
        return same[0].repo, f"the catalog's {same[0].id}: {how}"
    return "", ("the GGUF header names no source or base model (general.source.repo_url, "
                "general.base_model.0.repo_url) and no single catalog model has its "
                "architecture")


def model_from_gguf(name: str, catalog: Catalog, env: Mapping[str, str] | None = None) -> Model:
    """A catalog-shaped Model for a GGUF file (a path, or repo:QUANT in the HF cache)."""
    path = Path(name).expanduser() if name.lower().endswith(".gguf") else find_cached(name, env)
    if not path.is_file():
        raise ModelNotFound(f"model: {name!r}: no such GGUF file (or not a regular file)")
    g = read_gguf(path)
    label = g.file_type.removeprefix("MOSTLY_") or "GGUF"
    bits = 16 if label in ("F16", "BF16", "ALL_F32") else 8 if label.startswith("Q8") else \
        int(label[1]) if label[:1] in "QI" and label[1:2].isdigit() else 4
    tokenizer, source = tokenizer_repo(g, catalog)
    ckpt = Checkpoint(repo=str(path), quant="gguf", bits=bits, dtype="bfloat16",
                      weight_bytes=g.weight_bytes,
                      weight_bytes_source=f"read: GGUF header of {path} ({g.tensor_count} tensors: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(g.tensor_types.items())) + ")",
                      note=nearest_cpu_checkpoint(g.arch, catalog),
                      tokenizer=tokenizer, tokenizer_source=source)
    return Model(id=path.stem.lower(), name=f"{g.name} ({label})", repo=str(path), license="unknown",
                 released="", params_b=round(g.params / 1e9, 3), params_source="GGUF header",
                 languages=[], strengths=[], summary=f"GGUF {label}: not in the catalog, no sourced "
                 "scores", arch=g.arch, checkpoints=[ckpt])
