"""Shared fixtures. Everything here is synthetic: random weights in the official key layout and
MANO-format pickles of random arrays. Their outputs are not hand reconstructions."""
import os
from pathlib import Path

import pytest


# DDS must stay on this machine, and concurrent runs must not hear each other.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
# Idle OpenMP threads sleep instead of spinning (read when torch loads, after this): spinning
# threads starve the node processes the tests run, and on a busy machine a torch op whose threads
# wait for a descheduled one takes several times longer (the engine tests ~7x on 2 shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

def pytest_configure(config):
    """scripts/test.sh sets ACR_ROS_EXPECT_LAUNCH where set-up installed the launch stack: there, a
    missing ros2 is an error, not a reason to skip the launch tests."""
    if os.environ.get("ACR_ROS_EXPECT_LAUNCH") == "1":
        import shutil
        import sys

        if not (shutil.which("ros2", path=str(Path(sys.executable).parent)) or shutil.which("ros2")):
            raise pytest.UsageError("ACR_ROS_EXPECT_LAUNCH=1 but there is no ros2 command: the launch tests "
                                    "would skip (run scripts/setup.sh; it installs ../shared/ros/launch_stack)")



@pytest.fixture(scope="session")
def mano_dir(tmp_path_factory) -> Path:
    """A folder with MANO_LEFT.pkl / MANO_RIGHT.pkl of random arrays (plain numpy pickles)."""
    from support.synthetic_mano import write_synthetic_mano

    return write_synthetic_mano(tmp_path_factory.mktemp("mano"), seed=0)


@pytest.fixture(scope="session")
def acr_checkpoint(tmp_path_factory) -> Path:
    """Random ACR weights in the official checkpoint layout ('module.' keys), biased so that
    both center maps fire: every pipeline stage runs. Not a hand model."""
    from support.random_weights import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "wild.pkl", seed=0, detect="both")


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory) -> Path:
    """The repository built by colcon once per session (test/support/colcon.py): the install space that
    `ros2 launch acr_ros ...`, `ros2 run` and `colcon test` use."""
    from support.colcon import build_workspace

    return build_workspace(tmp_path_factory.mktemp("ws"))
