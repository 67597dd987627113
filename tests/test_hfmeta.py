"""Reading a repo the catalog does not hold, through huggingface_hub's safetensors metadata.

No hub is reachable here, so huggingface_hub's two calls are replaced at the seam by
functions that answer with its own types, built from a model folder the test makes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from huggingface_hub.utils._safetensors import (
    SafetensorsFileMetadata,
    SafetensorsRepoMetadata,
)
from huggingface_hub.utils._safetensors import TensorInfo as HubTensor
from tinymodels import build_model

from advisor import hfmeta
from advisor.catalog import load_catalog
from advisor.errors import HubUnavailable, ModelNotFound
from advisor.hfmeta import HubGate, resolve
from advisor.modelfiles import Metadata, read_local, read_safetensors_header


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
    monkeypatch.setattr(hfmeta, "GATE", HubGate(probe=lambda: ""))  # the Hub as reachable
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", get_metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    model, ckpt = resolve("someone/remote-awq", load_catalog())
    assert asked == ["someone/remote-awq"]
    assert ckpt is not None and ckpt.quant == "awq" and ckpt.bits == 4
    assert ckpt.weight_bytes == read_local(folder).weight_bytes
    assert ckpt.weight_bytes_source.startswith("read: safetensors headers of someone/remote-awq")
    assert model.arch.layers == 2 and model.scores == []


def test_offline_a_repo_the_catalog_does_not_hold_is_refused_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probe() -> str:
        raise AssertionError("HF_HUB_OFFLINE=1 must refuse before any network call")

    monkeypatch.setattr(hfmeta, "GATE", HubGate(probe=no_probe))
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE is set"):
        resolve("someone/elsewhere-7b", load_catalog())


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: a connection is refused at once
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_hub_is_refused_at_once_and_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14, finding 7: huggingface_hub retried an unreachable Hub for 23 s per repo."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    probes: list[str] = []

    def probe() -> str:
        probes.append(answer := hfmeta.probe_hub())
        return answer

    monkeypatch.setattr(hfmeta, "GATE", HubGate(probe=probe))
    started = time.monotonic()
    with pytest.raises(HubUnavailable, match="Hub is unreachable") as refused:
        resolve("someone/elsewhere-7b", load_catalog())
    took = time.monotonic() - started
    assert "someone/elsewhere-7b" in str(refused.value) and "refused" in str(refused.value).lower()
    with pytest.raises(HubUnavailable, match="Hub is unreachable"):
        resolve("someone/other-7b", load_catalog())
    assert len(probes) == 1, "a Hub found unreachable is remembered, not probed per request"
    print(f"unreachable Hub refused in {took * 1000:.0f} ms")
    assert took < 10, took  # (the old retries took 23 s; the target is well under 2 s)


def _tiny_metadata(tmp_path: Path) -> Metadata:
    return read_local(build_model(tmp_path / "tiny"))


def test_hub_look_ups_beyond_the_limit_are_refused_at_once_not_queued(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = _tiny_metadata(tmp_path)
    release, inside = threading.Event(), threading.Semaphore(0)

    def slow_fetch(repo: str, revision: str | None) -> Metadata:
        inside.release()
        release.wait(30)
        return meta

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hfmeta, "GATE", HubGate(at_once=2, probe=lambda: ""))
    monkeypatch.setattr(hfmeta, "_fetch_hub", slow_fetch)
    answers: list[object] = []
    callers = [threading.Thread(target=lambda n=n: answers.append(hfmeta.read_hub(f"someone/m{n}")))
               for n in range(2)]
    for t in callers:
        t.start()
    assert inside.acquire(timeout=10) and inside.acquire(timeout=10)
    started = time.monotonic()
    with pytest.raises(HubUnavailable, match="the Hub is busy: 2 look-ups are already under way"):
        hfmeta.read_hub("someone/third")
    assert time.monotonic() - started < 5  # refused, not queued behind the two
    release.set()
    for t in callers:
        t.join(10)
    assert answers == [meta, meta]
    assert hfmeta.read_hub("someone/fourth") == meta  # the slots came back


def test_a_hub_that_does_not_answer_is_given_up_and_keeps_its_slot_until_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = _tiny_metadata(tmp_path)
    release = threading.Event()

    def hung_fetch(repo: str, revision: str | None) -> Metadata:
        release.wait(30)
        return meta

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hfmeta, "GATE", HubGate(at_once=1, timeout=0.2, probe=lambda: ""))
    monkeypatch.setattr(hfmeta, "_fetch_hub", hung_fetch)
    with pytest.raises(HubUnavailable, match="did not answer within 0.2 s"):
        hfmeta.read_hub("someone/slow")
    # the look-up still runs in its thread, so it still counts against the limit
    with pytest.raises(HubUnavailable, match="busy"):
        hfmeta.read_hub("someone/next")
    release.set()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert hfmeta.read_hub("someone/after") == meta
            break
        except HubUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_folder_without_config_or_weights_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    from advisor.errors import ModelDirError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="no config.json"):
        resolve(str(tmp_path / "empty"), load_catalog())
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ModelDirError, match="no \\*.safetensors"):
        resolve(str(tmp_path / "empty"), load_catalog())
