"""Every quantization the CPU ranking offers, started for real on vLLM's CPU engine.

The ranker offers a CPU host plain checkpoints and 4-bit AWQ and GPTQ ones (and
compressed-tensors W4A16 / INT8 W8A8; advisor.estimate.cpu_engine_refuses). Here the
engine loads a tiny random Llama built in each 4-bit layout and must come up: its start-up
runs the model's forward pass through the CPU's 4-bit kernel. Slow: a minute per start.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine import run_engine_until
from tinymodels import build_servable_model

from advisor.catalog import load_catalog
from advisor.estimate import cpu_engine_refuses

pytestmark = pytest.mark.slow

READY = "Application startup complete"


@pytest.mark.parametrize("quant", ["awq", "gptq"])
def test_the_cpu_engine_serves_the_4_bit_layouts_the_ranking_offers(tmp_path: Path,
                                                                    quant: str) -> None:
    # the scheme is one the estimator lets the CPU ranking offer
    offered = [c for m in load_catalog().models for c in m.checkpoints
               if c.quant == quant and c.bits == 4 and not cpu_engine_refuses(c)]
    assert offered
    model = build_servable_model(tmp_path / f"tiny-{quant}", quant=quant)
    lines, code = run_engine_until(model, ["--max-model-len", "1024"], 1, tmp_path / "engine.log",
                                   lambda line: READY in line)
    assert code is None and any(READY in line for line in lines), "\n".join(lines[-30:])
