"""Every quantization the CPU ranking offers, started for real on vLLM's CPU engine.

The ranker offers a CPU host plain checkpoints, 4-bit AWQ and GPTQ ones, and
compressed-tensors W4A16 and INT8 W8A8 (advisor.estimate.cpu_engine_refuses). Here the
engine loads a tiny random Llama built in each layout and must come up: its start-up runs
the model's forward pass through the CPU's kernel for it. Slow: about 35 s per start.
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


# each layout the tiny model is built in: the catalog's quant and bits it stands for
LAYOUTS = {"awq": ("awq", 4), "gptq": ("gptq", 4), "w4a16": ("compressed-tensors", 4),
           "w8a8": ("compressed-tensors", 8)}


@pytest.mark.parametrize("quant", list(LAYOUTS))
def test_the_cpu_engine_serves_the_layouts_the_ranking_offers(tmp_path: Path, quant: str) -> None:
    # the scheme is one the estimator lets the CPU ranking offer
    scheme, bits = LAYOUTS[quant]
    offered = [c for m in load_catalog().models for c in m.checkpoints
               if c.quant == scheme and c.bits == bits and not cpu_engine_refuses(c)]
    assert offered
    model = build_servable_model(tmp_path / f"tiny-{quant}", quant=quant)
    lines, code = run_engine_until(model, ["--max-model-len", "1024"], 1, tmp_path / "engine.log",
                                   lambda line: READY in line)
    assert code is None and any(READY in line for line in lines), "\n".join(lines[-30:])


@pytest.mark.parametrize(("quant", "flags"), [("gptq8", []), ("none", ["--quantization", "fp8"])])
def test_what_the_cpu_engine_is_refused_it_cannot_start(tmp_path: Path, quant: str,
                                                        flags: list[str]) -> None:
    """The refusals' other side: an 8-bit GPTQ checkpoint (no CPU kernel takes 8-bit
    weight-only layers) and fp8 quantized at load both fail to start."""
    model = build_servable_model(tmp_path / f"tiny-{quant}", quant=quant)
    lines, code = run_engine_until(model, ["--max-model-len", "1024", *flags], 1,
                                   tmp_path / "engine.log", lambda line: READY in line)
    assert code not in (None, 0) and not any(READY in line for line in lines)
    scheme = "gptq" if quant == "gptq8" else "fp8"
    refused = [c for m in load_catalog().models for c in m.checkpoints
               if c.quant == scheme and (c.bits == 8 if quant == "gptq8" else c.at_load)]
    assert refused and all(cpu_engine_refuses(c) for c in refused)
