"""Shared fixtures. Everything here is synthetic: random weights in the official key layout and
MANO-format pickles of random arrays. Their outputs are not hand reconstructions."""
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from acr_ros.acr.runtime import tune_cpu_allocator


# DDS must stay on this machine, and concurrent runs must not hear each other.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
# Each pytest-xdist worker (scripts/test.sh runs several) is a run of its own: its own domain, a
# fixed distance from the run's, within the 1-232 that Fast DDS's port numbering allows.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...; unset without xdist
if XDIST_WORKER:
    os.environ["ROS_DOMAIN_ID"] = str(
        1 + (int(os.environ["ROS_DOMAIN_ID"]) - 1 + 50 * (int(XDIST_WORKER[2:]) + 1)) % 230)
# Idle OpenMP threads sleep instead of spinning (read when torch loads, after this): spinning
# threads starve the node processes the tests run, and on a busy machine a torch op whose threads
# wait for a descheduled one takes several times longer (the engine tests ~7x on 2 shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The workers run the engine as the node and the CLIs do (acr_ros.acr.runtime): its large activations
# come from the heap, not from a fresh mmap and its page faults each time.
tune_cpu_allocator()


def pytest_collection_modifyitems(items):
    """Modules with a test marked slow run first, the longest first (the marker's `seconds`: about what
    the module takes in the parallel run): spread over the xdist workers (scripts/test.sh), they start
    early instead of ending the run alone, and their waits overlap the rest."""
    seconds: dict = {}
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is not None:
            seconds[item.path] = max(seconds.get(item.path, 0), marker.kwargs.get("seconds", 0))
    items.sort(key=lambda item: -seconds.get(item.path, -1))  # stable: collection order otherwise


def pytest_configure(config):
    """scripts/test.sh sets ACR_ROS_EXPECT_LAUNCH where set-up installed the launch stack: there, a
    missing ros2 is an error, not a reason to skip the launch tests."""
    if os.environ.get("ACR_ROS_EXPECT_LAUNCH") == "1":
        import shutil
        import sys

        if not (shutil.which("ros2", path=str(Path(sys.executable).parent)) or shutil.which("ros2")):
            raise pytest.UsageError("ACR_ROS_EXPECT_LAUNCH=1 but there is no ros2 command: the launch tests "
                                    "would skip (run scripts/setup.sh; it installs ../shared/ros/launch_stack)")


def run_temp(tmp_path_factory) -> Path:
    """A folder shared by the run's xdist workers (their basetemps share a parent only under xdist)."""
    return tmp_path_factory.getbasetemp().parent if XDIST_WORKER else tmp_path_factory.getbasetemp()


@contextmanager
def once_per_run(tmp_path_factory, name: str):
    """(path, done): `path` in the run's shared folder (run_temp), and whether it was already made.
    The first worker to come makes it; the others wait here until it has. Read-only fixtures only:
    the workers share them."""
    import fcntl

    shared = run_temp(tmp_path_factory)
    made = shared / f"{name}.made"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared / name, made.exists()
        made.touch()


@pytest.fixture(scope="session", autouse=True)
def onnx_export_cache(tmp_path_factory) -> Path:
    """The runtime's ONNX export cache (acr_ros.acr.onnx_export) in the run's shared folder, for the
    workers and the processes they start: never the user's ~/.cache, one export per set of weights."""
    path = run_temp(tmp_path_factory) / "acr_ros_cache"
    os.environ["ACR_ROS_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def mano_dir(tmp_path_factory) -> Path:
    """A folder with MANO_LEFT.pkl / MANO_RIGHT.pkl of random arrays (plain numpy pickles)."""
    from support.synthetic_mano import write_synthetic_mano

    with once_per_run(tmp_path_factory, "mano") as (path, done):
        return path if done else write_synthetic_mano(path, seed=0)


@pytest.fixture(scope="session")
def acr_checkpoint(tmp_path_factory) -> Path:
    """Random ACR weights in the official checkpoint layout ('module.' keys), biased so that
    both center maps fire: every pipeline stage runs. Not a hand model."""
    from support.random_weights import write_random_checkpoint

    with once_per_run(tmp_path_factory, "ckpt") as (folder, done):
        folder.mkdir(exist_ok=True)
        return folder / "wild.pkl" if done else write_random_checkpoint(folder / "wild.pkl", seed=0, detect="both")


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory) -> Path:
    """The repository built by colcon once per test run (test/support/colcon.py): the install space
    that `ros2 launch acr_ros ...`, `ros2 run` and `colcon test` use."""
    from support.colcon import build_workspace

    with once_per_run(tmp_path_factory, "colcon_ws") as (ws, done):
        return ws if done else build_workspace(ws)
