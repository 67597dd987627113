"""`pip install .` (not only editable) ships the catalog and the templates inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_ships_catalog_and_templates_and_finds_them_installed(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("slm_advisor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("advisor/_data/catalog/") for n in names
               if n.startswith("advisor/_data/catalog/")}
    assert shipped == {str(p.relative_to(ROOT / "catalog")) for p in (ROOT / "catalog").rglob("*.toml")}
    assert "advisor/_data/templates/base.html" in names

    # Installed without the checkout on the path, the package finds its own data.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    code = ("import advisor.catalog as c; d = c.data_dir('catalog'); "
            "print(d); print(len(c.load_catalog().models))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    where, count = out.stdout.split()
    assert where.startswith(str(target)) and int(count) >= 30
