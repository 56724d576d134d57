"""This repository built by colcon into a workspace against the test environment's ROS 2 (a venv here,
/opt/ros/jazzy elsewhere), once per test session, and commands run in that workspace as a user runs
them: `source install/setup.bash` first, so the install space comes before the environment in
AMENT_PREFIX_PATH (the other order finds no launch file) and its Python package wins."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = Path(sys.prefix)


def environment() -> dict:
    """The environment's ROS 2 first on PATH and in AMENT_PREFIX_PATH, nothing of another workspace."""
    return dict(os.environ, AMENT_PREFIX_PATH=str(PREFIX), CMAKE_PREFIX_PATH=str(PREFIX),
                PATH=f"{PREFIX / 'bin'}:{os.environ['PATH']}", PYTHONUNBUFFERED="1")


def build_workspace(ws: Path) -> Path:
    """colcon build of the repository's tracked files in ws/src/acr_ros; returns ws."""
    colcon = shutil.which("colcon", path=str(PREFIX / "bin")) or shutil.which("colcon")
    if colcon is None:
        raise RuntimeError("colcon is not installed (scripts/setup.sh installs it)")
    (ws / "src").mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in files.split():
        target = ws / "src" / "acr_ros" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).exists():
            shutil.copy2(REPO / name, target)
    result = subprocess.run(
        [colcon, "build", "--packages-select", "acr_ros", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=ws, env=environment(), capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError("colcon build failed:\n" + result.stdout[-4000:] + result.stderr[-4000:])
    return ws


def sourced(ws: Path, command: list[str]) -> list[str]:
    """`command` run after `source install/setup.bash`, as bash; exec keeps its process id and signals."""
    return ["bash", "-c", f"source {ws / 'install' / 'setup.bash'} && exec {shlex.join(command)}"]
