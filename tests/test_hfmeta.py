"""Reading a repo the catalog does not hold, through huggingface_hub's safetensors metadata.

No hub is reachable here, so huggingface_hub's two calls are replaced at the seam by
functions that answer with its own types, built from a model folder the test makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.utils._safetensors import (
    SafetensorsFileMetadata,
    SafetensorsRepoMetadata,
)
from huggingface_hub.utils._safetensors import TensorInfo as HubTensor
from tinymodels import build_model

from advisor.catalog import load_catalog
from advisor.errors import ModelNotFound
from advisor.hfmeta import read_local, read_safetensors_header, resolve


def test_a_hub_repo_outside_the_catalog_is_read_from_its_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    folder = build_model(tmp_path / "remote", quant="awq")
    header = read_safetensors_header(folder / "model.safetensors")
    offsets, at = {}, 0
    for name, t in header.items():
        offsets[name] = HubTensor(dtype=t.dtype, shape=t.shape, data_offsets=(at, at + t.nbytes))
        at += t.nbytes
    files = {"model.safetensors": SafetensorsFileMetadata(metadata={}, tensors=offsets)}
    meta = SafetensorsRepoMetadata(metadata=None, sharded=False,
                                   weight_map=dict.fromkeys(offsets, "model.safetensors"),
                                   files_metadata=files)
    asked: list[str] = []

    def get_metadata(repo: str, revision: str | None = None) -> SafetensorsRepoMetadata:
        asked.append(repo)
        return meta

    def download(repo: str, filename: str, revision: str | None = None) -> str:
        assert filename == "config.json"
        return str(folder / "config.json")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", get_metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    model, ckpt = resolve("someone/remote-awq", load_catalog())
    assert asked == ["someone/remote-awq"]
    assert ckpt is not None and ckpt.quant == "awq" and ckpt.bits == 4
    assert ckpt.weight_bytes == read_local(folder).weight_bytes
    assert ckpt.weight_bytes_source.startswith("read: safetensors headers of someone/remote-awq")
    assert model.arch.layers == 2 and model.scores == []


def test_offline_a_repo_the_catalog_does_not_hold_is_refused_by_name() -> None:
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE is set"):
        resolve("someone/elsewhere-7b", load_catalog())


def test_a_folder_without_config_or_weights_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    from advisor.errors import ModelDirError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="no config.json"):
        resolve(str(tmp_path / "empty"), load_catalog())
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ModelDirError, match="no \\*.safetensors"):
        resolve(str(tmp_path / "empty"), load_catalog())
