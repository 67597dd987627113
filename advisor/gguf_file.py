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
        weight_bytes=sum(sizes.values()), params=params, arch=arch)


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


def model_from_gguf(name: str, catalog: Catalog, env: Mapping[str, str] | None = None) -> Model:
    """A catalog-shaped Model for a GGUF file (a path, or repo:QUANT in the HF cache)."""
    path = Path(name).expanduser() if name.lower().endswith(".gguf") else find_cached(name, env)
    if not path.is_file():
        raise ModelNotFound(f"model: {name!r}: no such GGUF file (or not a regular file)")
    g = read_gguf(path)
    label = g.file_type.removeprefix("MOSTLY_") or "GGUF"
    bits = 16 if label in ("F16", "BF16", "ALL_F32") else 8 if label.startswith("Q8") else \
        int(label[1]) if label[:1] in "QI" and label[1:2].isdigit() else 4
    ckpt = Checkpoint(repo=str(path), quant="gguf", bits=bits, dtype="bfloat16",
                      weight_bytes=g.weight_bytes,
                      weight_bytes_source=f"read: GGUF header of {path} ({g.tensor_count} tensors: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(g.tensor_types.items())) + ")",
                      note=nearest_cpu_checkpoint(g.arch, catalog))
    return Model(id=path.stem.lower(), name=f"{g.name} ({label})", repo=str(path), license="unknown",
                 released="", params_b=round(g.params / 1e9, 3), params_source="GGUF header",
                 languages=[], strengths=[], summary=f"GGUF {label}: not in the catalog, no sourced "
                 "scores", arch=g.arch, checkpoints=[ckpt])
