"""The shipped catalog loads, is complete, and every figure carries its source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tinymodels import TINY_FAMILY

from advisor.catalog import load_catalog
from advisor.errors import CatalogError
from advisor.specs import USE_CASES
from advisor.weights import param_count

CATALOG = load_catalog()

# The models the seed article names, by repo.
SEED_MODELS = ["microsoft/phi-4", "google/gemma-2-9b-it", "meta-llama/Llama-3.1-8B-Instruct",
               "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
               "mistralai/Mistral-Nemo-Instruct-2407", "Qwen/Qwen2.5-Coder-7B-Instruct"]


def test_catalog_holds_at_least_30_models_from_half_a_billion_to_15b() -> None:
    sizes = [m.params_b for m in CATALOG.models]
    assert len(CATALOG.models) >= 30
    assert min(sizes) <= 0.6 and max(sizes) <= 15.5


@pytest.mark.parametrize("repo", SEED_MODELS)
def test_every_model_of_the_seed_article_is_in_the_catalog(repo: str) -> None:
    assert CATALOG.by_repo(repo), f"{repo} missing"


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_architecture_reproduces_the_parameter_count_the_card_states(model) -> None:  # type: ignore[no-untyped-def]
    computed = param_count(model.arch) / 1e9
    assert computed == pytest.approx(model.params_b, rel=0.025), (
        f"{model.id}: config figures give {computed:.3f}B, card says {model.params_b}B"
    )


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_every_model_has_a_plain_checkpoint_and_sourced_figures(model) -> None:  # type: ignore[no-untyped-def]
    assert any(c.quant == "none" for c in model.checkpoints)
    assert model.arch.source.startswith("https://")
    for s in model.scores:
        assert s.source.startswith(("https://", "http://")), f"{model.id} {s.benchmark}"
    for c in model.checkpoints:
        assert c.weight_bytes > 0
        assert c.weight_bytes_source.startswith(("computed:", "read:"))


def test_every_use_case_has_models_that_claim_it() -> None:
    for use in USE_CASES:
        assert any(use in m.strengths for m in CATALOG.models), use


def test_quantized_checkpoints_are_smaller_than_the_plain_one() -> None:
    for m in CATALOG.models:
        plain = next(c for c in m.checkpoints if c.quant == "none")
        for c in m.checkpoints:
            if c.quant != "none":
                assert c.weight_bytes < plain.weight_bytes, (m.id, c.repo, c.quant)


def test_repo_lookup_is_case_insensitive_and_finds_quantized_repos() -> None:
    hit = CATALOG.by_repo("qwen/qwen2.5-7b-instruct-awq")
    assert hit and hit[0].id == "qwen2.5-7b" and hit[1][0].quant == "awq"


# --------------------------------------------------------------------- broken files


@pytest.fixture(name="broken")
def fx_broken(tmp_path: Path) -> Path:
    """A one-model family file, to break."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "tiny.toml").write_text(TINY_FAMILY.format(repo="tiny/llama", layers=2))
    return folder


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_wrong_type_names_the_file_the_field_and_the_expected_type(broken: Path) -> None:
    _replace(broken / "tiny.toml", "layers = 2", 'layers = "two"')
    with pytest.raises(CatalogError) as err:
        load_catalog(broken)
    assert str(err.value).startswith("tiny.toml: field models[0].arch.layers:")
    assert "Expected `int`, got `str`" in str(err.value)


def test_a_missing_field_is_named(broken: Path) -> None:
    _replace(broken / "tiny.toml", "kv_heads = 2\n", "")
    with pytest.raises(CatalogError, match=r"tiny.toml: .*kv_heads"):
        load_catalog(broken)


def test_an_unknown_field_is_refused_rather_than_ignored(broken: Path) -> None:
    _replace(broken / "tiny.toml", "layers = 2", "layers = 2\nlayer_count = 2")
    with pytest.raises(CatalogError, match=r"layer_count"):
        load_catalog(broken)


def test_invalid_toml_names_the_file(broken: Path) -> None:
    (broken / "tiny.toml").write_text("family = \n")
    with pytest.raises(CatalogError, match=r"^tiny.toml: not valid TOML"):
        load_catalog(broken)


def test_kv_heads_must_divide_attention_heads(broken: Path) -> None:
    _replace(broken / "tiny.toml", "kv_heads = 2", "kv_heads = 3")
    with pytest.raises(CatalogError, match=r"arch.kv_heads .*expected a divisor of attention_heads"):
        load_catalog(broken)


def test_a_score_without_a_source_is_refused(broken: Path) -> None:
    text = (broken / "tiny.toml").read_text()
    start = text.index("[[models.scores]]")
    src_line = text.index("source", start)
    end = text.index("\n", src_line)
    (broken / "tiny.toml").write_text(text[:src_line] + 'source = ""' + text[end:])
    with pytest.raises(CatalogError, match=r"scores\[0\].source"):
        load_catalog(broken)


def test_a_duplicate_id_across_files_is_refused(broken: Path) -> None:
    shutil.copy(broken / "tiny.toml", broken / "again.toml")
    with pytest.raises(CatalogError, match=r"also in"):
        load_catalog(broken)


def test_a_score_without_its_harness_is_refused(broken: Path) -> None:
    _replace(broken / "tiny.toml", 'harness = "example card"\n', "")
    with pytest.raises(CatalogError, match=r"scores\[0\].harness .*who ran the evaluation"):
        load_catalog(broken)


def test_a_second_score_in_one_evidence_set_is_refused(broken: Path) -> None:
    # the same benchmark, harness and setting twice would count the model twice
    block = ('[[models.scores]]\nbenchmark = "MMLU"\nvalue = 26.0\nsource = "https://example.invalid/card"\n'
             'harness = "example card"\nmetric = "accuracy"\n\n')
    _replace(broken / "tiny.toml", "[[models.checkpoints]]", block + "[[models.checkpoints]]")
    with pytest.raises(CatalogError, match=r"scores\[1\].*one score per evidence set"):
        load_catalog(broken)


def test_a_rating_is_accepted_outside_0_100_and_a_percentage_is_not(broken: Path) -> None:
    _replace(broken / "tiny.toml", "value = 25.0", "value = 1180.0")
    with pytest.raises(CatalogError, match=r"scores\[0\].value .*percentage"):
        load_catalog(broken)
    _replace(broken / "tiny.toml", 'metric = "accuracy"', 'metric = "Elo (elo_rating_final)"')
    assert load_catalog(broken).models[0].scores[0].is_rating


@pytest.mark.parametrize(("nvml_name", "card"), [
    ("NVIDIA A40", "A40 48GB"), ("NVIDIA RTX A4000", None), ("NVIDIA L40", None),
    ("NVIDIA L4", "L4 24GB"), ("NVIDIA L40S", "L40S 48GB"), ("NVIDIA A10", "A10 24GB"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"), ("NVIDIA H100 PCIe", "H100 PCIe 80GB"),
    ("NVIDIA RTX A6000", "RTX A6000 48GB"), ("NVIDIA GeForce RTX 5060 Ti", "RTX 5060 Ti 16GB"),
    ("NVIDIA GeForce RTX 5060", None), ("NVIDIA GeForce RTX 4080 SUPER", "RTX 4080 SUPER 16GB"),
    ("NVIDIA GeForce RTX 4080", None)])
def test_a_card_is_matched_by_a_whole_word_of_its_nvml_name(nvml_name: str, card: str | None) -> None:
    # a 16 GB RTX A4000 planned as a 48 GB A40 would be advice that does not start
    from advisor.catalog import load_gpus
    from advisor.hardware import find_gpu
    found = find_gpu(load_gpus(), nvml_name)
    assert (found.name if found else None) == card
