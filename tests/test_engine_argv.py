"""The engine's command line as vLLM's own parser reads it (the real parser, no engine start)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinymodels import build_model

from advisor.enginelog import read_failure
from advisor.supervisor import served_names
from advisor.watch import failure_of


def _parse(argv: list[str]) -> object:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="api_server.py")).parse_args(argv)


def test_a_folder_named_like_a_flag_is_served_by_its_path(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = build_model(tmp_path / "-H")
    # what the first release passed: the folder's name read as the flag -h, exit code 2
    with pytest.raises(SystemExit) as exited:
        _parse(["--model", str(folder), "--served-model-name", "-h", str(folder)])
    assert exited.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    failure = read_failure(said)
    assert failure and failure.kind == "bad_argument", said
    cause, fix = failure_of([said], 2)
    assert "--served-model-name" in cause and "refused its command line" in fix

    names = served_names("-h", str(folder))
    assert names == [str(folder)]
    args = _parse(["--model", str(folder), "--uds", str(tmp_path / "e.sock"), "--served-model-name", *names])
    assert args.served_model_name == names and args.uds == str(tmp_path / "e.sock")  # type: ignore[attr-defined]
