"""The real-ROS install path (docs/launch.md) keeps the system numpy (Ubuntu 24.04: 1.26): the run-time
requirements, and the retargeting stack documented for it (docs/teleoperation.md), resolve with numpy
pinned to 1.26.4, for Jazzy's Python 3.12."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

pytestmark = pytest.mark.slow(seconds=12)  # pip resolving the requirements

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def resolved_with_the_system_numpy(tmp_path, *requirements: str, deps: bool = True) -> dict[str, dict]:
    """name -> metadata of what pip picks beside Jazzy's numpy 1.26.4 (Python 3.12 wheels)."""
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", str(report), "--target", str(tmp_path / "t"),
               "--python-version", "3.12", "--only-binary=:all:",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "-c", str(SCRIPTS / "constraints-system-ros.txt"), *requirements, "numpy==1.26.4"]
    result = subprocess.run(command + ([] if deps else ["--no-deps"]), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]
            for item in json.loads(report.read_text())["install"]}


def test_runtime_requirements_resolve_with_the_system_numpy(tmp_path):
    chosen = resolved_with_the_system_numpy(tmp_path, "-r", str(SCRIPTS / "requirements.txt"))
    assert chosen["numpy"]["version"] == "1.26.4"
    assert "opencv-contrib-python-headless" in chosen


def test_the_retargeting_stack_for_a_ros_install_keeps_the_system_numpy(tmp_path):
    """dex-retargeting 0.5.0 and today's nlopt and pin need numpy 2; the documented older stack does not.
    Its compiled parts resolve with numpy 1.26.4, and dex-retargeting 0.4.6 accepts it (its torch, which
    the stage does not use, is left out of the resolution: a CPU build of any version does)."""
    pinned = [line for line in (SCRIPTS / "requirements-retargeting-ros.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    compiled = resolved_with_the_system_numpy(tmp_path, *[p for p in pinned if p.startswith(("nlopt", "pin"))])
    assert compiled["numpy"]["version"] == "1.26.4"
    assert (compiled["nlopt"]["version"], compiled["pin"]["version"]) == ("2.7.1", "2.7.0")
    dex = resolved_with_the_system_numpy(tmp_path, "dex-retargeting==0.4.6", deps=False)["dex-retargeting"]
    numpy_bound = next(r for r in dex["requires_dist"] if r.startswith("numpy"))
    assert SpecifierSet(numpy_bound.removeprefix("numpy").split(";")[0].strip()).contains("1.26.4"), numpy_bound
