"""The import rules of STYLE.md, checked by parsing every module of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "advisor"

# no I/O, only each other
PURE = {"errors", "specs", "weights", "estimate", "speed", "plan", "hardware", "enginelog", "rank",
        "cost", "proof", "article", "calibrate",
        "launch", "history", "cluster", "manifests", "placement"}
# each third-party I/O library has one home module
HOMES = {"pynvml": "profile", "psutil": "profile", "huggingface_hub": "hfmeta", "sqlite3": "store",
         "subprocess": "procs", "gguf": "gguf_file"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


MODULES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_import_rules(path: Path) -> None:
    name = path.relative_to(PKG).with_suffix("").as_posix().replace("/", ".")
    imports = _imports(path)
    ours = {i.removeprefix("advisor.") for i in imports if i.startswith("advisor.")}
    if name in PURE:
        assert ours <= PURE, f"{name} is pure and may import only {PURE}, not {ours - PURE}"
    if not name.startswith("web") and name not in ("cli", "__main__"):
        assert not {o for o in ours if o.startswith("web") or o == "cli"}, f"{name} imports a shell"
    for lib, home in HOMES.items():
        if any(i == lib or i.startswith(lib + ".") for i in imports):
            assert name in (home, "cli") or name.startswith("web."), (
                f"{name} imports {lib}, whose home is {home}")
