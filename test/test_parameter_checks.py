"""Parameters the executables were given but do not have are named, with the closest known name; a
parameters file rclpy cannot parse is one line and exit code 1, not a traceback."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import rclpy
from rclpy.parameter import Parameter

from acr_ros.media import SAMPLES_DIR
from acr_ros.ros_runtime import warn_unknown_parameters
from support.signals import REPO, Program


class PublicNodeApi:
    """A node seen through its public rclpy API only (private attributes may change in any rclpy
    release), except the overrides it was given, which rclpy exposes no other way; its logger's
    warnings go to a list."""

    def __init__(self, node, warnings: list[str]):
        self._node, self._warnings = node, warnings

    def __getattr__(self, name):
        if name.startswith("_") and name != "_parameter_overrides":
            raise AttributeError(f"{name} is private to rclpy")
        return getattr(self._node, name)

    def get_logger(self):
        return SimpleNamespace(warning=self._warnings.append)


def test_unknown_overrides_are_warned_with_the_closest_declared_name():
    from acr_ros.image_source import ImageSource

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ImageSource(context=context, parameter_overrides=[
            Parameter("frame_idd", value="x"), Parameter("rate", value=5.0), Parameter("zzz_nothing_alike", value=1)])
        try:
            warnings = []
            public = PublicNodeApi(node, warnings)
            assert warn_unknown_parameters(public) == ["frame_idd", "zzz_nothing_alike"]
            assert warnings == [
                "unknown parameter 'frame_idd' ignored (this node has no such parameter); did you mean 'frame_id'?",
                "unknown parameter 'zzz_nothing_alike' ignored (this node has no such parameter)"]
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_qos_overrides_for_topics_the_node_does_not_use_are_named_once_its_topics_exist():
    from acr_ros.hands_node import HandsNode
    from support.fake_backend import FakeBackend

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = HandsNode(backend_factory=lambda: (FakeBackend(), "test"), context=context, parameter_overrides=[
            Parameter("qos_overrides./image_raw.subscription.depth", value=2),        # used
            Parameter("qos_overrides./imag_raw.subscription.depth", value=2)])        # a typo
        try:
            warnings = []
            public = PublicNodeApi(node, warnings)
            assert warn_unknown_parameters(public) == []  # before the topics exist, nothing to judge
            assert node.start()
            assert warn_unknown_parameters(public, qos=True) == ["qos_overrides./imag_raw.subscription.depth"]
            assert "did you mean 'qos_overrides./image_raw.subscription.depth'?" in warnings[0]
            assert node.cameras[0].image_input.subscription.qos_profile.depth == 2
        finally:
            node.shutdown()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_an_unknown_command_line_parameter_is_named(tmp_path):
    program = Program(["-m", "acr_ros.image_source", "--ros-args", "-r", "image_raw:=/param_check/image_raw",
                       "-p", "source:=image", "-p", f"input:={SAMPLES_DIR / 'magic.jpg'}", "-p", "depth_topic:=/d",
                       "-p", "frame_idd:=cam"], tmp_path / "source.log")
    try:
        program.wait_for_output("unknown parameter 'frame_idd'", 60)
        code, _ = program.stop([2], 20)
    finally:
        program.kill()
    log = program.log()
    assert code == 0, log
    assert "unknown parameter 'frame_idd' ignored (this node has no such parameter); did you mean 'frame_id'?" in log
    assert "unknown parameter 'depth_topic' ignored" in log


@pytest.mark.parametrize("module", ["acr_ros.hands_node", "acr_ros.image_source", "acr_ros.hands_recorder"])
def test_a_parameters_file_that_does_not_parse_is_one_line(tmp_path, module):
    params = tmp_path / "broken.yaml"
    params.write_text("acr_hands:\n  ros__parameters: [backend: mediapipe\n")
    result = subprocess.run([sys.executable, "-m", module, "--ros-args", "--params-file", str(params)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert f"cannot start: Couldn't parse params file: '--params-file {params}'" in result.stderr


def test_an_integer_for_a_float_parameter_says_to_write_a_float():
    result = subprocess.run([sys.executable, "-m", "acr_ros.hands_node", "--ros-args", "-p", "detection_threshold:=-1"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if "detection_threshold" in line]
    assert len(lines) == 1 and "parameter detection_threshold is a float: write -1.0, not -1" in lines[0], result.stderr
