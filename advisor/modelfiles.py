"""A model folder read as untrusted input: names and paths checked before any filesystem
call, files opened only when they are regular files, config.json parsed within limits, and
each safetensors tensor's range checked against its shape and the file. No hub, no torch:
a safetensors file opens with an 8-byte header length and a JSON header naming every
tensor's dtype, shape and byte range, which is all the size of a checkpoint needs.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path
from typing import IO, Any

import msgspec

from advisor.errors import ModelDirError, ModelNotFound

# Limits checked on a name before any filesystem call (Linux's PATH_MAX and NAME_MAX).
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_CONFIG_BYTES = 16 * 2**20  # the largest config.json seen is a few hundred kB
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
MAX_WEIGHT_FILES = 10_000

# Bits per element of each safetensors dtype (the format's own list; F4 and F6 pack).
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
              "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64,
              "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


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
        method = str(qc.get("quant_method", "none")).lower() if isinstance(qc, dict) else "none"
        return {"compressed_tensors": "compressed-tensors"}.get(method, method)


def short(value: object) -> str:
    """A value for a message: a hostile 100 kB name must not become a 100 kB message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- files, checked first


def check_name(name: str) -> None:
    """Refuse a name no catalog id, repo id or path can be, before anything looks it up."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ModelNotFound(f"model: {short(name)} is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise ModelNotFound(f"model: a name of {size} bytes is too long (a catalog id, repo id or "
                            f"path has at most {MAX_PATH_BYTES})")
    if "\0" in name:
        raise ModelNotFound(f"model: {short(name)} contains a NUL byte")


def check_path(path: Path) -> None:
    """The OS's own length limits, checked by us: an OSError here would be a 500."""
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise ModelDirError(f"{short(part)}: a path component has at most "
                                f"{MAX_COMPONENT_BYTES} bytes")


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "not a regular file"


def stat_of(path: Path) -> os.stat_result | None:
    """os.stat, None where nothing is there; symlinks are followed (the HF cache is made of them)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{path} cannot be read ({exc})") from None


def _open_regular(path: Path) -> IO[bytes]:
    """Open a regular file for reading, and nothing else: a FIFO or a device would block a
    worker forever. O_NONBLOCK makes the open itself return at once whatever the path is,
    and fstat on the open file leaves no window for a swap after a check."""
    st = stat_of(path)
    if st is None:
        raise ModelDirError(f"{path} does not exist")
    if not stat.S_ISREG(st.st_mode):
        raise ModelDirError(f"{path} is {_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ModelDirError(f"{path} cannot be opened ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ModelDirError(f"{path} is {_kind(mode)}, not a regular file")
    return os.fdopen(fd, "rb")


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[…" nested too deep
        raise ModelDirError(f"{where} is not valid JSON ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None


def read_config(path: Path) -> dict[str, Any]:
    """A config.json as an object, from a regular file of a sane size."""
    with _open_regular(path) as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelDirError(f"{path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a config.json")
    config = _json(raw, str(path))
    if not isinstance(config, dict):
        raise ModelDirError(f"{path} holds a JSON {type(config).__name__}, not an object")
    return config


def _tensor(name: str, info: Any, where: str, data_size: int | None) -> tuple[TensorInfo, int, int]:
    """One header entry, checked: its dtype, shape and byte range must agree with each other
    and with the file (reversed offsets once gave negative weights and `fits: true`)."""
    what = f"{where}: tensor {short(name)}"
    if not isinstance(info, dict):
        raise ModelDirError(f"{what} is {type(info).__name__}, not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise ModelDirError(f"{what}: dtype {short(dtype)} is not a safetensors dtype")
    if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ModelDirError(f"{what}: shape {short(shape)} is not a list of non-negative integers")
    if not isinstance(offsets, list | tuple) or len(offsets) != 2 or not all(
            isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        raise ModelDirError(f"{what}: data_offsets {short(offsets)} is not a pair of integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise ModelDirError(f"{what}: data_offsets [{begin}, {end}] are not 0 <= begin <= end")
    if data_size is not None and end > data_size:
        raise ModelDirError(f"{what}: data_offsets end at {end}, past the {data_size} bytes of data "
                            "the file holds (truncated?)")
    span_bits, bits = (end - begin) * 8, DTYPE_BITS[dtype]
    elements = 0 if 0 in shape else 1
    for d in shape if elements else ():
        elements *= d
        if elements * bits > span_bits:  # stop early: a hostile shape's product could be vast
            break
    if elements * bits != span_bits:
        raise ModelDirError(f"{what}: shape {short(shape)} of {dtype} does not take the "
                            f"{end - begin} bytes its data_offsets span")
    return TensorInfo(dtype=dtype, shape=list(shape), nbytes=end - begin), begin, end


def tensors_from_header(header: Any, where: str, data_size: int | None) -> dict[str, TensorInfo]:
    """Every tensor of one safetensors header, each checked, none overlapping another."""
    if not isinstance(header, dict):
        raise ModelDirError(f"{where}: the header is a JSON {type(header).__name__}, not an object")
    out: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        out[name], begin, end = _tensor(name, info, where, data_size)
        spans.append((begin, end, name))
    spans.sort()
    for (_b, end, first), (begin, _e, second) in zip(spans, spans[1:], strict=False):
        if begin < end:
            raise ModelDirError(f"{where}: tensors {short(first)} and {short(second)} overlap "
                                f"(one ends at {end}, the other begins at {begin})")
    return out


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    with _open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise ModelDirError(f"{path.name} is not a safetensors file: {len(head)} bytes, "
                                "shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ModelDirError(f"{path.name} is not a readable safetensors file: its header "
                                f"length says {length} bytes, the file has {size - 8} after it")
        raw = fh.read(length)
    return tensors_from_header(_json(raw, f"{path.name} header"), path.name, size - 8 - length)


def read_local(folder: Path) -> Metadata:
    """config.json plus every *.safetensors header of a model folder."""
    check_path(folder)
    st = stat_of(folder)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise ModelDirError(f"{folder} is not a folder")
    config_path = folder / "config.json"
    if stat_of(config_path) is None:
        raise ModelDirError(f"{folder} has no config.json: not a Hugging Face model folder")
    config = read_config(config_path)
    try:
        files = sorted(folder.glob("*.safetensors"))
    except OSError as exc:
        raise ModelDirError(f"{folder} cannot be listed ({exc.strerror})") from None
    if not files:
        raise ModelDirError(f"{folder} has no *.safetensors weights (vLLM needs safetensors here)")
    if len(files) > MAX_WEIGHT_FILES:
        raise ModelDirError(f"{folder} has {len(files)} *.safetensors files, more than "
                            f"{MAX_WEIGHT_FILES}: not a model folder")
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        header = read_safetensors_header(f)
        twice = next((name for name in header if name in tensors), None)
        if twice is not None:  # counted once, it would understate the weights
            raise ModelDirError(f"{f.name}: tensor {short(twice)} is also in another *.safetensors file")
        tensors.update(header)
    return Metadata(source=str(folder), config=config, tensors=tensors)
