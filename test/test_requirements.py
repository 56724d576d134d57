"""The real-ROS install path (docs/launch.md) keeps the system numpy (Ubuntu 24.04: 1.26): the run-time
requirements resolve with numpy pinned to 1.26.4, for Jazzy's Python 3.12."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow(seconds=8)  # pip resolving the requirements

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_runtime_requirements_resolve_with_the_system_numpy(tmp_path):
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", str(report), "--target", str(tmp_path / "t"),
               "--python-version", "3.12", "--only-binary=:all:",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "-c", str(SCRIPTS / "constraints-system-ros.txt"), "-r", str(SCRIPTS / "requirements.txt"),
               "numpy==1.26.4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen["numpy"] == "1.26.4"
    assert "opencv-contrib-python-headless" in chosen
