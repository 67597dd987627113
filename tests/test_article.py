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
