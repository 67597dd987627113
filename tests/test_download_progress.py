"""Launch progress while a Hub model downloads: the bytes so far, read from the Hugging Face
cache, through a real `advisor serve` and, in the slow test, its deployment page in Debian's
Chromium. The engine is the scripted one (tests/fake_engine.py) printing what vLLM 0.32
prints while it downloads, so that the launch sits there while the test writes the bytes
into `$HF_HOME/hub/models--ORG--NAME/` itself, as huggingface_hub does (`.incomplete` blobs).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_engine import interpreter
from service import TINY, Service, free_port_range
from tinymodels import build_model

REPO = "HuggingFaceTB/SmolLM2-360M-Instruct"  # the checkpoint of catalog id smollm2-360m
MODEL = "smollm2-360m"
GIB = 2**30


def serve(tmp: Path, mode: str) -> Service:
    """`advisor serve` whose engines are the scripted one in `mode`, with its own HF cache
    (passed in: a module-scoped service starts before the per-test HF_HOME is set)."""
    return Service(tmp / "home", free_port_range(4), env={
        "HF_HOME": str(tmp / "hf"), "ADVISOR_VLLM_PYTHON": str(interpreter(tmp)),
        "FAKE_ENGINE": mode})


def blobs(tmp: Path) -> Path:
    """Where huggingface_hub writes the repo's files (settings.hf_cache is $HF_HOME/hub)."""
    folder = tmp / "hf" / "hub" / ("models--" + REPO.replace("/", "--")) / "blobs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def grow(path: Path, n: int) -> None:
    with path.open("ab") as fh:
        fh.write(os.urandom(n))


def hub_launch(svc: Service) -> dict[str, Any]:
    r = svc.launch(model=MODEL, **TINY)
    assert r.status_code == 202, r.text
    d: dict[str, Any] = r.json()
    assert d["repo"] == REPO and not Path(d["repo"]).exists()
    return d


def stop(svc: Service, dep_id: str) -> None:
    svc.http.delete(f"/api/deployments/{dep_id}")
    svc.wait_state(dep_id, {"stopped"}, timeout=60)


@pytest.fixture(scope="module", name="fast")
def fx_fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    tmp = tmp_path_factory.mktemp("download")
    svc = serve(tmp, "download")
    yield svc, tmp
    svc.stop()


def test_the_download_endpoint_follows_the_cache_on_disk(fast: tuple[Service, Path]) -> None:
    svc, tmp = fast
    d = hub_launch(svc)
    try:
        seen: list[str] = []
        svc.wait_state(d["id"], {"starting"}, timeout=30)
        while "downloading" not in seen:  # the engine has printed its download line
            svc.wait_state(d["id"], {"starting"}, timeout=30, seen=seen)
        url = f"/api/deployments/{d['id']}/download"
        record = svc.deployment(d["id"])
        stored = record["weight_bytes"]  # the checkpoint's files, not the plan's share on a GPU

        first = svc.http.get(url).json()
        assert first == {"bytes": 0, "expected_bytes": stored, "local": False}
        assert 0.5 * GIB < stored < 1 * GIB  # 362 M parameters in bf16
        # the plan's weights are what the allocator holds: the files and a little rounding
        assert abs(record["predicted"]["weights_gib"] - stored / GIB) < 0.05

        # as huggingface_hub writes them: a finished blob, its snapshot link, a partial one
        cache = blobs(tmp)
        grow(cache / "a1b2c3", 3_000)
        snap = cache.parent / "snapshots" / "0123abcd"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").symlink_to(cache / "a1b2c3")
        (cache.parent / "refs").mkdir(exist_ok=True)
        (cache.parent / "refs" / "main").write_text("0123abcd")
        partial = cache / "d4e5f6.incomplete"
        grow(partial, 5 * 2**20)
        second = svc.http.get(url).json()
        assert second["bytes"] == 3_000 + 5 * 2**20 + len("0123abcd")  # the link counted once

        grow(partial, 7 * 2**20)
        third = svc.http.get(url).json()
        assert third["bytes"] == second["bytes"] + 7 * 2**20
        assert third["expected_bytes"] == first["expected_bytes"] and not third["local"]
    finally:
        stop(svc, d["id"])
        shutil.rmtree(tmp / "hf" / "hub", ignore_errors=True)


def test_a_local_folder_has_nothing_to_download(fast: tuple[Service, Path]) -> None:
    svc, tmp = fast
    folder = build_model(tmp / "tiny")
    r = svc.launch(model=str(folder), **TINY)
    assert r.status_code == 202, r.text
    d = r.json()
    try:
        got = svc.http.get(f"/api/deployments/{d['id']}/download").json()
        assert got["local"] is True and got["bytes"] == 0
    finally:
        stop(svc, d["id"])


def test_an_unknown_deployment_is_a_404(fast: tuple[Service, Path]) -> None:
    svc, _ = fast
    assert svc.http.get("/api/deployments/nosuch/download").status_code == 404


# ---------------------------------------------------------------- the page, in Chromium


def figure(page) -> float:  # type: ignore[no-untyped-def]
    """The GiB so far that the current phase's line shows."""
    text = page.inner_text("#phases li.current")
    m = re.search(r"([0-9.]+) of ([0-9.]+) GiB downloaded", text)
    assert m, text
    return float(m.group(1))


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "phase"), [("download", "downloading"),
                                             # 0.32 fetches the weights after this line, silently
                                             ("download-weights", "loading_weights")])
def test_the_deployment_page_shows_the_bytes_so_far_and_they_grow(tmp_path: Path, mode: str,
                                                                   phase: str) -> None:
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, FLAGS

    svc = serve(tmp_path, mode)
    try:
        d = hub_launch(svc)
        partial = blobs(tmp_path) / "0ab1.incomplete"
        grow(partial, 300 * 2**20)  # 0.29 GiB
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page()
            page.goto(svc.url + f"/deployments/{d['id']}")
            current = f"#phases li.current[data-phase={phase}]"
            page.wait_for_selector(current, timeout=30_000)
            page.wait_for_function(f"document.querySelector('{current}').textContent"
                                   ".includes('GiB downloaded')", timeout=15_000)
            expected = svc.http.get(f"/api/deployments/{d['id']}/download").json()["expected_bytes"]
            assert f"of {expected / GIB:.2f} GiB downloaded" in page.inner_text(current)
            assert figure(page) == pytest.approx(300 / 1024, abs=0.006)
            # only the phase under way carries the figure
            done = page.eval_on_selector_all("#phases li.done", "els => els.map(e => e.textContent)")
            assert done and not any("downloaded" in x for x in done), done

            grow(partial, 200 * 2**20)
            page.wait_for_function(f"document.querySelector('{current}').textContent"
                                   ".includes('0.49 of')", timeout=15_000)
            assert figure(page) == pytest.approx(500 / 1024, abs=0.006)
            browser.close()
        stop(svc, d["id"])
    finally:
        svc.stop()
