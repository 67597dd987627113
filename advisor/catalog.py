"""The model catalog: `catalog/*.toml`, one file per family, decoded into typed structs.

A broken file fails with the file, the field and what was expected, never a traceback.
Checkpoint sizes come from `checkpoint-sizes.toml` where `advisor catalog refresh` read
them from safetensors metadata, and are otherwise computed from the architecture.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from advisor.article import beside
from advisor.cost import ApiPrice, ApiPrices
from advisor.errors import CatalogError
from advisor.specs import QUANTS, USE_CASES, CatalogFile, Checkpoint, GpuSpec, GpuTable, Model
from advisor.weights import checkpoint_bytes, describe_computation

SIZES_FILE = "checkpoint-sizes.toml"
_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_WORDS = re.compile(r"^[a-z][a-z0-9 \-]*$")


def data_dir(name: str) -> Path:
    """A data folder shipped with the package (wheel) or beside it (a checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise CatalogError(f"the {name}/ folder is missing from this installation (looked beside {here})")


class SizeRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A checkpoint's weight bytes as read from its safetensors metadata."""

    weight_bytes: int
    read_from: str
    read_on: str = ""


@dataclass
class Catalog:
    models: list[Model]
    files: list[Path] = field(default_factory=list)

    def by_id(self, model_id: str) -> Model | None:
        return next((m for m in self.models if m.id == model_id), None)

    def by_repo(self, repo: str) -> tuple[Model, list[Checkpoint]] | None:
        """The model a repo id belongs to, and that repo's checkpoints (case-insensitive)."""
        for m in self.models:
            hits = [c for c in m.checkpoints if c.repo.lower() == repo.lower()]
            if hits:
                return m, hits
        return None


def _where(path: Path, err: msgspec.ValidationError) -> str:
    # msgspec says e.g. "Expected `int`, got `str` - at `$.models[0].arch.layers`"
    text = str(err)
    if " - at `" in text:
        what, at = text.rsplit(" - at `", 1)
        return f"{path.name}: field {at.rstrip('`').removeprefix('$.')}: {what}"
    return f"{path.name}: {text}"


def load_file(path: Path) -> CatalogFile:
    """Decode and check one family file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path.name}: not valid TOML: {exc}") from None
    try:
        family = msgspec.convert(raw, CatalogFile)
    except msgspec.ValidationError as exc:
        raise CatalogError(_where(path, exc)) from None
    for i, model in enumerate(family.models):
        _check_model(path, i, model)
    return family


def _check_model(path: Path, i: int, m: Model) -> None:
    def fail(fieldname: str, expected: str) -> CatalogError:
        return CatalogError(f"{path.name}: field models[{i}].{fieldname} ({m.id}): expected {expected}")

    if not _ID.match(m.id):
        raise fail("id", "lower-case letters, digits, '.' and '-'")
    a = m.arch
    for name in ("layers", "hidden_size", "intermediate_size", "attention_heads", "kv_heads",
                 "head_dim", "vocab_size", "native_context"):
        if getattr(a, name) <= 0:
            raise fail(f"arch.{name}", "a positive integer")
    if a.attention_heads % a.kv_heads:
        raise fail("arch.kv_heads", f"a divisor of attention_heads ({a.attention_heads})")
    if not a.source:
        raise fail("arch.source", "the address the figures were read from")
    if m.params_b <= 0 or not m.params_source:
        raise fail("params_source", "a positive params_b and where it is stated")
    seen: dict[str, int] = {}
    for j, s in enumerate(m.scores):
        if not s.source.strip():
            raise fail(f"scores[{j}].source", "the address where the score is published")
        if not s.harness.strip() or not s.metric.strip():
            raise fail(f"scores[{j}].harness", "who ran the evaluation (harness) and its metric")
        if s.is_rating and not 0 < s.value < 4000:
            raise fail(f"scores[{j}].value", "a rating between 0 and 4000")
        if not s.is_rating and not 0 <= s.value <= 100:
            raise fail(f"scores[{j}].value", "a percentage between 0 and 100")
        # one figure per evidence set: a second would count the model twice
        if s.evidence_set in seen:
            raise fail(f"scores[{j}]", f"one score per evidence set; scores[{seen[s.evidence_set]}] "
                                       f"is already in {s.evidence_set!r}")
        seen[s.evidence_set] = j
    if not m.checkpoints:
        raise fail("checkpoints", "at least one deployable checkpoint")
    for j, c in enumerate(m.checkpoints):
        if c.quant not in QUANTS:
            raise fail(f"checkpoints[{j}].quant", f"one of {', '.join(QUANTS)}")
        if c.quant != "none" and c.bits not in (4, 8):
            raise fail(f"checkpoints[{j}].bits", "4 or 8 for a quantized checkpoint")
    unknown = [s for s in m.strengths if s not in USE_CASES and not _WORDS.match(s)]
    if unknown:
        raise fail("strengths", f"use cases ({', '.join(USE_CASES)}) or plain words, not {unknown}")


def load_sizes(directory: Path) -> dict[str, SizeRecord]:
    path = directory / SIZES_FILE
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return msgspec.convert(raw, dict[str, SizeRecord])
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{SIZES_FILE}: not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise CatalogError(_where(path, exc)) from None


def load_catalog(directory: Path | None = None) -> Catalog:
    """Every family file of the folder, checked; ids and checkpoints unique across files."""
    directory = directory or data_dir("catalog")
    files = sorted(p for p in directory.glob("*.toml") if p.name != SIZES_FILE)
    if not files:
        raise CatalogError(f"no catalog files (*.toml) in {directory}")
    sizes = load_sizes(directory)
    models: list[Model] = []
    seen: dict[str, str] = {}
    for path in files:
        family = load_file(path)
        for m in family.models:
            if m.id in seen:
                raise CatalogError(f"{path.name}: model id {m.id!r} is also in {seen[m.id]}")
            seen[m.id] = path.name
            m.family = family.family
            plain_repos = {c.repo for c in m.checkpoints if c.quant == "none"}
            for c in m.checkpoints:
                # the plain repo listed again with a quantization: vLLM quantizes it at load
                c.at_load = c.quant != "none" and c.repo in plain_repos
                record = None if c.at_load else sizes.get(c.repo)
                if record:
                    c.weight_bytes = record.weight_bytes
                    c.weight_bytes_source = f"read: safetensors metadata of {record.read_from}"
                else:
                    c.weight_bytes = checkpoint_bytes(m.arch, c)
                    c.weight_bytes_source = describe_computation(c)
            if m.article and m.article.vram_q4:
                m.article.ours_checkpoint, m.article.ours_card_gib, m.article.ours_note = beside(m)
            models.append(m)
    return Catalog(models=models, files=files)


T = TypeVar("T")


def _load_table(directory: Path | None, name: str, kind: type[T]) -> T:
    """A data table of the catalog folder (`name` relative to it), or a CatalogError that
    names the file and what is wrong with it."""
    path = (directory or data_dir("catalog")) / name
    try:
        return msgspec.convert(tomllib.loads(path.read_text(encoding="utf-8")), kind)
    except OSError as exc:
        raise CatalogError(f"{name}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{name}: not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise CatalogError(_where(path, exc)) from None


def load_gpus(directory: Path | None = None) -> list[GpuSpec]:
    """The GPU table (catalog/hardware/gpus.toml): memory, bandwidth and compute per card."""
    return _load_table(directory, "hardware/gpus.toml", GpuTable).gpu


def load_api_prices(directory: Path | None = None) -> list[ApiPrice]:
    """Published API prices (catalog/pricing/api_prices.toml), each with its source."""
    return _load_table(directory, "pricing/api_prices.toml", ApiPrices).price
