"""Hypothesis over the model-folder reader (issue 14): random config.json values and
safetensors files that the test writes into a folder of its own.

Whatever is written, the reader either returns a sane model (weights of non-negative
bytes that fit in the files' data, each tensor as large as its shape says) that the
estimator then answers for, or refuses with an AdvisorError whose message starts with
the field it names ("model: …"); never any other exception, which the service would
answer with a 500. safetensors' own reader is the oracle for the headers: a file it
accepts must be read with the same tensors and sizes.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError, safe_open
from tinymodels import TINY_LLAMA

from advisor.advice import estimate_for
from advisor.catalog import load_catalog, load_gpus
from advisor.errors import AdvisorError
from advisor.hfmeta import resolve
from advisor.modelfiles import DTYPE_BITS, read_safetensors_header
from advisor.profile import read_host
from advisor.specs import PlanRequest

CATALOG, GPUS, HOST = load_catalog(), load_gpus(), read_host()
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# every config.json key the reader looks at
CONFIG_KEYS = ["architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
               "max_position_embeddings", "sliding_window", "use_sliding_window",
               "sliding_window_pattern", "num_experts", "num_local_experts", "num_experts_per_tok",
               "moe_intermediate_size", "torch_dtype", "dtype", "tie_word_embeddings",
               "attention_bias", "text_config", "quantization_config"]

weird = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
near_real = st.integers(-2, 70_000) | st.sampled_from([0.5, 64.0, 1e999, -1e999, 10**30, 2**63])


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["as is"] * 3 + ["tweaked"] * 5 + ["not an object", "not JSON"]))
    if kind == "not JSON":
        return draw(st.binary(max_size=40) | st.just(b"[" * 100_000))
    if kind == "not an object":
        return json.dumps(draw(weird)).encode()
    config: dict[str, Any] = dict(TINY_LLAMA)
    for key in draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=4 if kind == "tweaked" else 0,
                             unique=True)):
        how = draw(st.sampled_from(["delete", "weird", "near real"]))
        if how == "delete":
            config.pop(key, None)
        elif key == "quantization_config" and how == "near real":
            config[key] = {"quant_method": draw(st.sampled_from(["awq", "gptq", "fp8", "x"])),
                           "bits": draw(near_real), "group_size": draw(near_real)}
        elif key == "text_config" and how == "near real":
            config[key] = {k: v for k, v in TINY_LLAMA.items() if k != "architectures"}
        else:
            config[key] = draw(weird if how == "weird" else near_real)
    return json.dumps(config).encode()  # NaN, Infinity and 1e999 (inf) are written as JSON has them


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """A header laid out as safetensors writes one, then perhaps broken in a few ways."""
    tensors: dict[str, Any] = {}
    at = 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(["F32", "BF16", "F16", "I8", "U8", "F4", "I64"]))
        shape = draw(st.lists(st.integers(0, 6), max_size=3))
        size = math.prod(shape) * DTYPE_BITS[dtype] // 8
        tensors[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
    header: Any = tensors
    intact = sorted(tensors)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        breakage = draw(st.sampled_from(["reverse", "shift", "grow", "dtype", "shape", "field",
                                         "drop", "not an object", "metadata"]))
        if breakage == "not an object":
            header = draw(weird)
            break
        if breakage == "metadata":
            tensors["__metadata__"] = {"format": "pt"}
            continue
        if not intact:
            continue
        t = tensors[intact.pop(draw(st.integers(0, len(intact) - 1)))]  # each broken once at most
        begin, end = t["data_offsets"]
        if breakage == "reverse":
            t["data_offsets"] = [end, begin]
        elif breakage == "shift":
            delta = draw(st.integers(-8, 8))
            t["data_offsets"] = [begin + delta, end + delta]
        elif breakage == "grow":
            t["data_offsets"] = [begin, end + draw(st.integers(1, 2**70))]
        elif breakage == "dtype":
            t["dtype"] = draw(st.sampled_from(["Q4", "", "f32", 7]))
        elif breakage == "shape":
            t["shape"] = draw(weird | st.lists(st.integers(-3, 2**40), max_size=3))
        elif breakage == "field":
            t[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(weird)
        else:
            del t[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))]
    raw = draw(st.binary(max_size=30)) if draw(st.integers(0, 19)) == 0 else json.dumps(header).encode()
    length = draw(st.sampled_from([len(raw)] * 12 + [len(raw) + 3, max(0, len(raw) - 3), 0, 2**64 - 1]))
    data = bytes(max(0, at + draw(st.sampled_from([0] * 6 + [-1, -at, 5]))))
    whole = struct.pack("<Q", length) + raw + data
    return whole[:draw(st.sampled_from([len(whole)] * 12 + [4, 8 + len(raw) // 2]))]


def _written(folder: Path, config: bytes, files: list[bytes]) -> None:
    folder.mkdir()
    (folder / "config.json").write_bytes(config)
    for i, body in enumerate(files):
        (folder / f"model-{i:05d}.safetensors").write_bytes(body)


def _data_bytes(path: Path) -> int:
    raw = path.read_bytes()
    return len(raw) - 8 - struct.unpack("<Q", raw[:8])[0]


@SETTINGS
@given(config=config_files(), files=st.lists(safetensors_files(), min_size=1, max_size=2))
def test_the_reader_returns_a_sane_model_or_a_message(config: bytes, files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        _written(folder, config, files)
        try:
            model, ckpt = resolve(str(folder), CATALOG)
        except AdvisorError as exc:
            assert str(exc).startswith("model: ") and len(str(exc)) < 2000, str(exc)
            event("refused")
            return
        event("read")
        assert ckpt is not None
        data = sum(_data_bytes(p) for p in folder.glob("*.safetensors"))
        assert 0 <= ckpt.weight_bytes <= data
        assert model.arch.layers >= 1 and model.arch.attention_heads % model.arch.kv_heads == 0
        # what was read can be planned: the estimator answers, or refuses with a message
        try:
            est = estimate_for(PlanRequest(model=str(folder), gpus=0, ram_gib=16, cpu_kv_gib=1),
                               CATALOG, HOST, GPUS)
        except AdvisorError as exc:
            assert str(exc), exc
            return
        assert est.weights_gib >= 0 and (est.fits or est.reason)


def _library_view(path: Path) -> dict[str, tuple[str, list[int]]] | None:
    """The tensors safetensors' own reader sees, or None where it refuses the file."""
    try:
        with safe_open(str(path), "pt") as f:  # type: ignore[no-untyped-call]
            return {name: (f.get_slice(name).get_dtype(), list(f.get_slice(name).get_shape()))
                    for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, ValueError, TypeError, OSError, RuntimeError):
        return None


@SETTINGS
@given(body=safetensors_files())
def test_a_header_is_read_as_safetensors_reads_it_or_refused_by_name(body: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(body)
        expected = _library_view(path)
        try:
            ours = read_safetensors_header(path)
        except AdvisorError as exc:
            assert "model.safetensors" in str(exc), str(exc)
            assert expected is None, f"safetensors reads what we refused: {exc}"
            event("refused")
            return
        event("read, and safetensors agrees" if expected is not None else "read, safetensors refuses")
        assert sum(t.nbytes for t in ours.values()) <= _data_bytes(path)
        for t in ours.values():
            assert t.nbytes * 8 == math.prod(t.shape) * DTYPE_BITS[t.dtype] >= 0
        if expected is not None:
            assert {name: (t.dtype, t.shape) for name, t in ours.items()} == expected


@pytest.mark.parametrize("text", ['{"num_hidden_layers": 1e999}', "[" * 100_000, '"a string"'])
def test_the_worst_configs_named_are_refused_by_name(tmp_path: Path, text: str) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    _written(tmp_path / "m", text.encode(), [struct.pack("<Q", len(header)) + header + bytes(8)])
    with pytest.raises(AdvisorError, match=r"^model: .*config\.json"):
        resolve(str(tmp_path / "m"), CATALOG)
