"""The seed article's "VRAM (Q4)" beside the card vLLM needs, on the models page."""

from __future__ import annotations

import html
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from advisor.article import CONTEXT, UTIL, four_bit, smallest_card_gib
from advisor.catalog import load_catalog
from advisor.config import load_settings
from advisor.estimate import EngineSettings, Target, estimate
from advisor.web.app import create_app


def test_the_card_found_is_the_smallest_on_which_the_estimator_starts_the_4bit_checkpoint() -> None:
    model = load_catalog().by_id("qwen2.5-7b")
    assert model is not None
    ckpt = four_bit(model)
    assert ckpt is not None and ckpt.quant == "awq"
    card = smallest_card_gib(model, ckpt)
    assert card is not None
    settings = EngineSettings(gpu_mem_util=UTIL, max_model_len=CONTEXT)
    at = estimate(model, ckpt, Target(engine="vllm", gpu_gib=card, gpus=1), settings)
    below = estimate(model, ckpt, Target(engine="vllm", gpu_gib=card - 0.25, gpus=1), settings)
    assert at.fits and not below.fits, below.reason
    # what the card holds beside the weights is why it is larger than a Q4 file
    assert card > at.weights_gib + at.activation_gib


@pytest.fixture(name="client")
def fx_client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(app=create_app(load_settings())) as client:
        yield client


def test_the_models_page_sets_the_articles_figure_beside_ours(client: TestClient) -> None:  # type: ignore[type-arg]
    page = html.unescape(client.get("/models").text)
    table = page[page.index('id="vram-beside"'):]
    row = table[table.index("Qwen2.5 7B"):][:600] if "Qwen2.5 7B" in table else table[:0]
    qwen = next(m for m in client.get("/api/models").json() if m["id"] == "qwen2.5-7b")
    art = qwen["article"]
    assert art["vram_q4"] == "~5 GB" and art["ours_checkpoint"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    assert row and f"{art['ours_card_gib']:.2f} GiB" in row and "~5 GB" in row
    assert "the article rounds a Q4 file's size" in row
    # a model the catalog holds no 4-bit checkpoint of says so instead of a figure
    assert "lists no 4-bit checkpoint" in table


def test_each_result_row_carries_the_articles_figure_beside_its_own_accounting() -> None:
    from advisor.advice import recommend_for
    from advisor.catalog import load_gpus
    from advisor.profile import read_host
    from advisor.specs import PlanRequest

    cat = load_catalog()
    req = PlanRequest(use_case="chat", gpu="RTX 4090", max_model_len=8192)
    rows = recommend_for(req, cat, read_host(), load_gpus()).results
    sized = {m.id: m.article.vram_q4 for m in cat.models if m.article and m.article.vram_q4}
    assert sized  # the catalog keeps the article's figures for some models
    for r in rows:
        assert r.article_vram_q4 == sized.get(r.model)
        assert bool(r.article_vram_note) == (r.model in sized)
    awq = next(r for r in rows if r.repo == "Qwen/Qwen2.5-7B-Instruct-AWQ")
    e = awq.estimate
    assert awq.fits and awq.article_vram_q4 == "~5 GB"
    # our side is this row's own accounting at its context, figure by figure
    assert f"{e.weights_gib:.2f} GiB of weights," in awq.article_vram_note
    assert f"a {e.kv_cache_gib:.2f} GiB KV pool" in awq.article_vram_note
    assert f"{e.max_concurrency:g}× a 8,192-token context" in awq.article_vram_note
    plain = next(r for r in rows if r.model == "qwen2.5-7b" and r.quant == "none")
    assert "(bfloat16, not Q4)" in plain.article_vram_note
    # the CPU engine: what it holds in RAM
    cpu = recommend_for(PlanRequest(use_case="chat", gpus=0, ram_gib=64), cat, read_host(),
                        load_gpus()).results
    row = next(r for r in cpu if r.repo == "Qwen/Qwen2.5-7B-Instruct-AWQ")
    assert "vLLM's CPU engine holds" in row.article_vram_note and "GiB of KV cache in RAM" in \
        row.article_vram_note


def test_the_results_page_the_api_and_the_cli_show_it(client: TestClient) -> None:  # type: ignore[type-arg]
    import re
    import subprocess
    import sys

    body = {"use_case": "chat", "gpu": "RTX 4090", "max_model_len": 8192}
    rows = client.post("/api/recommend", json=body).json()["results"]
    awq = next(r for r in rows if r["repo"] == "Qwen/Qwen2.5-7B-Instruct-AWQ")
    assert awq["article_vram_q4"] == "~5 GB" and awq["article_vram_note"]
    assert all(r["article_vram_q4"] is None for r in rows if r["model"] == "qwen3-8b")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/").text)
    assert token
    page = client.post("/", data={"_csrf_token": token[1], **{k: str(v) for k, v in body.items()}})
    assert page.status_code == 200
    text = html.unescape(page.text)
    chosen = next(r for r in rows if r["model"] == "qwen2.5-7b" and r["chosen"])
    assert f"Seed article, VRAM (Q4): <strong>~5 GB</strong>. Why not ours: " \
           f"{chosen['article_vram_note']}" in text
    out = subprocess.run([sys.executable, "-m", "advisor", "recommend", "--use-case", "chat",
                          "--gpu", "RTX 4090", "--max-model-len", "8192", "--limit", "100"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"seed article, VRAM (Q4): ~5 GB; {chosen['article_vram_note']}" in out.stdout
