"""The tree passes ruff with ruff.toml (pyflakes and pycodestyle), here and under `colcon test`,
which runs this folder from the workspace's copy of the package."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff() -> list[str]:
    """ruff from this interpreter's environment (scripts/requirements-dev.txt), else from PATH."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (scripts/requirements-dev.txt pins it)")
    return [found]


def check(*args: str) -> subprocess.CompletedProcess:
    # No cache: nothing is written into the source tree (or colcon's copy of it).
    return subprocess.run([*ruff(), "check", "--no-cache", "--output-format", "concise", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_the_tree_is_clean():
    result = check(str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_configuration_reports_pyflakes_and_pycodestyle_findings(tmp_path):
    """What ruff.toml selects is in effect: an unused import (F401), a name never defined (F821), a
    line over the repository's 120 columns (E501), trailing whitespace (W291)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\nx = undefined_name\ny = 1 \n" + f"z = '{'a' * 120}'\n")
    result = check("--config", str(REPO / "ruff.toml"), str(sample))
    assert result.returncode == 1, result.stdout + result.stderr
    found = {line.split()[1] for line in result.stdout.splitlines() if line.startswith(str(sample))}
    assert found == {"F401", "F821", "E501", "W291"}, result.stdout
    # 120 columns are allowed.
    sample.write_text(f"z = '{'a' * 114}'\n")
    assert check("--config", str(REPO / "ruff.toml"), str(sample)).returncode == 0
