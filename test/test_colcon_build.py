"""The real ROS 2 path: `colcon build` of this repository in a workspace against the (pip-installed)
Jazzy, then the node run from the install space, talking over DDS."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from acr_ros.msg import Hands
from support.colcon import environment
from support.ros_harness import RELIABLE, Probe, image_msg, magic_bgr


REPO = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)  # the environment holding ROS 2 (a venv here, /opt/ros/jazzy elsewhere)

pytestmark = pytest.mark.slow(seconds=15)


@pytest.fixture(scope="module")
def workspace(colcon_workspace) -> Path:
    return colcon_workspace


def test_colcon_installs_interfaces_nodes_launch_and_config(workspace):
    install = workspace / "install" / "acr_ros"
    assert (install / "include" / "acr_ros" / "acr_ros" / "msg" / "hands.hpp").exists()
    for executable in ("hands_node", "image_source", "hands_recorder", "acr_offline", "acr_ros_demo"):
        assert os.access(install / "lib" / "acr_ros" / executable, os.X_OK), executable
    for name in ("launch/hands.launch.py", "config/hands.yaml", "config/hands.rviz", "package.xml"):
        assert (install / "share" / "acr_ros" / name).exists(), name
    site = next((install / "lib").glob("python3*/site-packages/acr_ros"))
    assert (site / "hands_node.py").exists() and (site / "msg" / "_hands.py").exists()
    assert (workspace / "install" / "share" / "ament_index" / "resource_index" / "packages" / "acr_ros").exists() \
        or (install / "share" / "ament_index" / "resource_index" / "packages" / "acr_ros").exists()
    # `colcon test` would run the suite: the pytest test is registered with CTest.
    ctest = (workspace / "build" / "acr_ros" / "CTestTestfile.cmake").read_text()
    assert "add_test(acr_ros_tests" in ctest


def test_node_runs_from_the_install_space(workspace, tmp_path):
    install = workspace / "install"
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    backend: mediapipe\n    qos_reliability: reliable\n"
                      "    image_topics: ['/colcon_cam/image_raw']\n")
    # What a user does: source the workspace, then run the installed executable.
    command = (f"source {install}/setup.bash && exec {install}/acr_ros/lib/acr_ros/hands_node "
               f"--ros-args -r __node:=acr_hands --params-file {params}")
    log = open(tmp_path / "node.log", "w")
    process = subprocess.Popen(["bash", "-c", command], stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PATH=f"{PREFIX / 'bin'}:{os.environ['PATH']}"))
    probe = Probe("colcon_probe")
    try:
        hands = probe.record(Hands, "/acr_hands/hands")
        publisher = probe.publisher(type(image_msg(magic_bgr())), "/colcon_cam/image_raw", RELIABLE)
        probe.wait_for_subscribers(publisher, timeout=60)
        publisher.publish(image_msg(magic_bgr(), stamp=(1700002000, 7), frame_id="colcon_frame"))
        assert probe.spin_until(lambda: bool(hands), 60), (tmp_path / "node.log").read_text()
        assert hands[0].header.frame_id == "colcon_frame" and hands[0].header.stamp.nanosec == 7
    finally:
        process.send_signal(2)
        process.wait(10)
        probe.close()
    assert process.returncode == 0, (tmp_path / "node.log").read_text()


def test_sourced_workspace_imports_its_own_copy(workspace, tmp_path):
    install = workspace / "install"
    command = (f"source {install}/setup.bash && cd {tmp_path} && python3 -c "
               "'import acr_ros.hands_node, acr_ros.msg; print(acr_ros.hands_node.__file__); "
               "print(acr_ros.msg.__file__)'")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PATH=f"{PREFIX / 'bin'}:{os.environ['PATH']}"))
    assert result.returncode == 0, result.stderr
    node_file, msg_file = result.stdout.split()
    assert node_file.startswith(str(install)) and msg_file.startswith(str(install))


def test_colcon_test_runs_the_registered_tests(workspace):
    """`colcon test` runs the package's registered pytest test against the colcon build. A small
    selection (PYTEST_ADDOPTS, which ament's pytest runner passes on): the whole suite is what
    scripts/test.sh runs, and running it twice would double CI's time. The selection ignores the
    other files rather than deselecting their tests, so that pytest does not import them (torch
    among them) only to run none of their tests: test_interfaces.py, test_lint.py (ruff over the
    package) and test_tracks.py remain."""
    tests = workspace / "src" / "acr_ros" / "test"  # absolute: pytest reads the globs from its working folder
    ignored = ("test_[!ilt]*.py", "test_im*.py", "test_la*.py", "test_lif*.py")
    env = dict(environment(), PYTEST_ADDOPTS=" ".join(f"--ignore-glob={tests}/{glob}" for glob in ignored))
    result = subprocess.run([str(PREFIX / "bin" / "colcon"), "test", "--packages-select", "acr_ros",
                             "--event-handlers", "console_direct-"],
                            cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = ElementTree.parse(workspace / "build" / "acr_ros" / "test_results" / "acr_ros"
                               / "acr_ros_tests.xunit.xml").getroot()
    suite = report if report.tag == "testsuite" else report.find("testsuite")
    assert int(suite.get("tests")) >= 5, result.stdout[-4000:]
    assert suite.get("failures") == "0" and suite.get("errors") == "0", result.stdout[-4000:]
    ran = {(case.get("classname").rsplit(".", 1)[-1], case.get("name")) for case in suite.iter("testcase")}
    assert ("test_lint", "test_the_tree_is_clean") in ran, sorted(ran)
