"""The quality evidence: every figure sourced and set, compared only within its evidence set."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from advisor.advice import recommend_for
from advisor.catalog import load_catalog, load_gpus
from advisor.profile import read_host
from advisor.rank import USE_CASE_WEIGHTS, EvidenceSet, best_scores, lacking_evidence, model_score
from advisor.specs import USE_CASES, Model, PlanRequest, Score

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
EVIDENCE = best_scores(CATALOG.models)


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_every_score_has_a_source_and_a_setting(model: Model) -> None:
    for s in model.scores:
        assert s.source.startswith("https://"), (model.id, s.benchmark)
        assert s.harness.strip() and s.metric.strip(), (model.id, s.benchmark)


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_no_model_has_two_scores_in_one_evidence_set(model: Model) -> None:
    keys = [s.evidence_set for s in model.scores]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_thinking_and_non_thinking_figures_are_separate_sets() -> None:
    qwen3 = CATALOG.by_id("qwen3-8b")
    assert qwen3 is not None
    ifeval = [s for s in qwen3.scores if s.benchmark == "IFEval"]
    assert {s.reasoning for s in ifeval} == {"on", "off"}
    assert len({s.evidence_set for s in ifeval}) == 2


def test_the_distills_count_aime_once() -> None:
    for m in CATALOG.models:
        if m.id.startswith("deepseek-r1-distill"):
            assert sum(s.benchmark == "AIME 2024" for s in m.scores) == 1, m.id


def _model(mid: str, *scores: Score) -> Model:
    base = CATALOG.models[0]
    return msgspec.structs.replace(base, id=mid, name=mid, scores=list(scores), strengths=["chat"])


def _score(bench: str, value: float, harness: str, metric: str = "accuracy") -> Score:
    return Score(benchmark=bench, value=value, source="https://example.invalid", harness=harness,
                 metric=metric)


def test_figures_from_different_harnesses_are_never_compared() -> None:
    # each model's IFEval comes from its own vendor's table: nothing comparable, whatever the values
    a = _model("a", _score("IFEval", 90.0, "vendor A card"))
    b = _model("b", _score("IFEval", 40.0, "vendor B card"))
    ev = best_scores([a, b])
    for m in (a, b):
        reasons = model_score(m, "chat", ev).reasons
        assert reasons[0].startswith("no comparable chat evidence"), reasons
    assert model_score(a, "chat", ev).points == model_score(b, "chat", ev).points


def test_within_one_set_the_better_figure_scores_higher_and_the_reasons_show_it() -> None:
    a = _model("a", _score("IFEval", 80.0, "one harness"))
    b = _model("b", _score("IFEval", 60.0, "one harness"))
    ev = best_scores([a, b])
    sa, sb = model_score(a, "chat", ev), model_score(b, "chat", ev)
    assert sa.points > sb.points
    assert "IFEval 60 (best 80 of 2 models, one harness)" in sb.reasons[0]
    assert any("a: IFEval 80 vs 60 (one harness)" in r for r in sb.reasons)


def test_a_rating_counts_by_its_expected_score_against_the_best() -> None:
    es = EvidenceSet(key="k", benchmark="Arena Elo", harness="h", rating=True,
                     values={"a": 1200.0, "b": 1100.0})
    assert es.normalised(1200.0) == 1.0
    assert es.normalised(1100.0) == pytest.approx(2 / (1 + 10 ** 0.25))
    pct = EvidenceSet(key="k", benchmark="MMLU", harness="h", rating=False, values={"a": 80.0, "b": 60.0})
    assert pct.normalised(60.0) == pytest.approx(0.75)


def test_every_rating_comes_from_one_leaderboard_snapshot() -> None:
    # Elo ratings of two snapshots are not on one scale: a later snapshot's 1200 is not an
    # earlier one's, so every catalog rating must come from the same one
    snapshots = {s.evidence_set for m in CATALOG.models for s in m.scores if s.is_rating}
    assert len(snapshots) == 1, snapshots


def test_every_claimed_use_case_has_comparable_evidence_or_the_model_is_listed_as_lacking_it() -> None:
    lacking = lacking_evidence(CATALOG.models)
    doc = (ROOT / "docs" / "ranking.md").read_text()
    for m in CATALOG.models:
        for use_case in m.strengths:
            if use_case not in USE_CASES:
                continue
            used = EVIDENCE.used(m, USE_CASE_WEIGHTS[use_case])
            if used:
                continue
            assert use_case in lacking.get(m.id, []), (m.id, use_case)
            assert f"| {m.id} | " in doc.split("no comparable evidence", 1)[1], m.id
            reasons = model_score(m, use_case, EVIDENCE).reasons
            assert reasons[0].startswith(f"no comparable {use_case} evidence"), (m.id, reasons)


def test_a_results_page_says_so_when_a_model_has_no_comparable_evidence() -> None:
    # a claimed use case without comparable evidence: one the catalog still lacks, or, once
    # the catalog has none, the first model with its figures taken away
    catalog = CATALOG
    lacking = sorted((uses[0], mid) for mid, uses in lacking_evidence(catalog.models).items())
    if not lacking:
        bare = msgspec.structs.replace(catalog.models[0], scores=[])
        catalog = dataclasses.replace(catalog, models=[bare, *catalog.models[1:]])
        lacking = [(bare.strengths[0], bare.id)]
    use_case, model = lacking[0]
    req = msgspec.convert({"use_case": use_case, "gpu": "RTX 4090"}, PlanRequest)
    results = recommend_for(req, catalog, read_host(), load_gpus()).results
    row = next(r for r in results if r.model == model)
    assert any(r.startswith(f"no comparable {use_case} evidence") for r in row.reasons), row.reasons


def test_the_evidence_table_in_docs_is_current() -> None:
    out = subprocess.run([sys.executable, "bench/evidence_table.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_head_to_head_win_carries_across_sets() -> None:
    # B tops a broad table; A beats B in a second table they share with three others. Ratios
    # to each table's best alone would score B 1.0 in the first and A no higher: the fit,
    # comparing them through the table they share, must put A above B.
    broad = [_model(f"w{i}", _score("IFEval", 50.0 + i, "broad table")) for i in range(4)]
    small = [_model(f"s{i}", _score("Arena-Hard", 20.0 + i, "second table")) for i in range(3)]
    b = _model("b", _score("IFEval", 80.0, "broad table"), _score("Arena-Hard", 40.0, "second table"))
    a = _model("a", _score("Arena-Hard", 50.0, "second table"))
    q = best_scores([a, b, *broad, *small]).quality["chat"]
    assert q["a"] > q["b"] > q["w3"], q
