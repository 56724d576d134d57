"""Running acr_ros executables as their own processes and talking to them over real DDS."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from acr_ros.media import SAMPLES_DIR as MEDIA
from acr_ros.msg import Hands
from support.processes import LoggedProcess

REPO = Path(__file__).resolve().parents[2]


class NodeProcess(LoggedProcess):
    """An acr_ros module's main() run as `python -m`, with its parameters from a YAML file."""

    def __init__(self, module: str, params: dict, tmp_path: Path, name: str = "acr_hands",
                 remaps: dict | None = None, env: dict | None = None):
        """env: the process's environment (default: this process's)."""
        params_file = tmp_path / f"{name}_params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        command = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}",
                   "--params-file", str(params_file)]
        for source, target in (remaps or {}).items():
            command += ["-r", f"{source}:={target}"]
        super().__init__(command, tmp_path / f"{name}.log", cwd=REPO,
                         env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"))

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        """Sends sig; returns the exit code (killed after timeout: negative)."""
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def shutdown_seconds(self) -> float:
        """How long the hands node's own shutdown took, as it logged it (not the interpreter's exit)."""
        found = re.findall(r"shut down in ([0-9.]+) s", self.log())
        assert found, f"the node logged no shutdown time:\n{self.log()}"
        return float(found[-1])


class Probe:
    """A test-side ROS node in its own context: publishers, recorded subscriptions, spinning."""

    def __init__(self, name: str = "acr_test_probe"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}

    def record(self, msg_type, topic: str, qos=10) -> list:
        """The messages on topic from now on, in a list. One subscription per topic: a second call
        returns the same list (a second subscription would append every message twice)."""
        if topic not in self.received:
            self.received[topic] = []
            self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)
        return self.received[topic]

    def publisher(self, msg_type, topic: str, qos=qos_profile_sensor_data):
        return self.node.create_publisher(msg_type, topic, qos)

    def spin_until(self, predicate: Callable[[], bool], timeout: float, process: NodeProcess | None = None
                   ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if process is not None and not process.alive():
                raise AssertionError(f"the node exited ({process.process.returncode}):\n{process.log()}")
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def wait_for_subscribers(self, publisher, timeout: float = 20.0, process: NodeProcess | None = None):
        """Discovery, not a blind sleep: until the node's subscription matches ours."""
        assert self.spin_until(lambda: publisher.get_subscription_count() > 0, timeout, process), \
            f"no subscriber on {publisher.topic_name} after {timeout} s"

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def image_msg(bgr: np.ndarray, encoding: str = "bgr8", stamp=(1700000000, 123456789),
              frame_id: str = "camera_optical_frame") -> Image:
    """A sensor_msgs/Image of a BGR picture in one of the common encodings."""
    import cv2

    conversions = {
        "bgr8": lambda im: im,
        "rgb8": lambda im: im[..., ::-1],
        "bgra8": lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA),
        "rgba8": lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2RGBA),
        "mono8": lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY),
        "yuv422_yuy2": lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2YUV_YUY2),
        "uyvy": lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2YUV_UYVY),
    }
    data = np.ascontiguousarray(conversions[encoding](bgr))
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding=encoding, is_bigendian=0,
                step=data.strides[0])
    msg.data = data.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg


def camera_info_msg(width: int, height: int, fx: float, fy: float | None = None, stamp=(1700000000, 123456789),
                    frame_id: str = "camera_optical_frame") -> CameraInfo:
    fy = fx if fy is None else fy
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.k = [fx, 0.0, width / 2, 0.0, fy, height / 2, 0.0, 0.0, 1.0]
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg


RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def magic_bgr() -> np.ndarray:
    """A real photo of a LEFT hand (see acr_ros/data/samples/README.md), downscaled to 640x360."""
    return cv2.resize(cv2.imread(str(MEDIA / "magic.jpg")), (640, 360), interpolation=cv2.INTER_AREA)


class Session:
    """A hands node plus a probe wired to all its inputs and outputs.

    The node runs as its own process, or, given a backend (e.g. support.fake_backend.FakeBackend),
    in this process with that backend: the same HandsNode over real rclpy and DDS, spun with the
    probe, for tests of the node's own logic that a process start would only slow down.
    """

    def __init__(self, tmp_path, params: dict, topics=("cam0",), name="acr_hands", backend=None):
        """name: the node's name, so that sessions alive at the same time keep to their own topics."""
        self.name = name
        self.camera_topics = {t: f"/{name}_{t}" for t in topics}  # short name -> camera namespace
        params = {"image_topics": [f"{ns}/image_raw" for ns in self.camera_topics.values()],
                  "qos_reliability": "reliable", **params}
        self.process = None if backend is not None else NodeProcess("acr_ros.hands_node", params, tmp_path, name=name)
        self.probe = Probe()
        self.node = None
        if backend is not None:
            from rclpy.parameter import Parameter

            from acr_ros.hands_node import HandsNode

            self.node = HandsNode(backend_factory=lambda: (backend, "test backend"), context=self.probe.context,
                                  cli_args=["--ros-args", "-r", f"__node:={name}"],
                                  parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
            self.probe.executor.add_node(self.node)
            assert self.node.start(), "the node did not configure and activate"  # what main() does with autostart
        self.hands = self.probe.record(Hands, f"/{name}/hands")
        self.markers = self.probe.record(MarkerArray, f"/{name}/markers")
        self.overlays = self.probe.record(Image, f"/{name}/overlay", 2)
        self.tf = self.probe.record(TFMessage, "/tf", 100)
        self.diagnostics = self.probe.record(DiagnosticArray, "/diagnostics")
        compressed = params.get("compressed", False)
        self.images = {t: self.probe.publisher(CompressedImage if compressed else Image,
                                               f"{ns}/image_raw" + ("/compressed" if compressed else ""),
                                               RELIABLE) for t, ns in self.camera_topics.items()}
        self.infos = {t: self.probe.publisher(CameraInfo, f"{ns}/camera_info", RELIABLE)
                      for t, ns in self.camera_topics.items()}
        for publisher in self.images.values():
            self.probe.wait_for_subscribers(publisher, timeout=60, process=self.process)
        for publisher in self.infos.values():
            self.probe.wait_for_subscribers(publisher, timeout=60, process=self.process)
        # The node's output publishers exist once its inputs do; wait until ours are matched too.
        assert self.probe.spin_until(lambda: self.probe.node.count_publishers(f"/{name}/hands") > 0, 10)

    def send(self, msg, topic="cam0", info=None):
        """Publishes an image on a camera's topic; with info, that CameraInfo first (a separate
        topic): the image follows once the node has it (in this process) or after 50 ms, for it
        to arrive (a process; the node takes a waiting CameraInfo before a waiting image)."""
        if info is not None:
            self.infos[topic].publish(info)
            if self.node is not None:
                camera = self.node.cameras[list(self.camera_topics).index(topic)]
                stamp = info.header.stamp.sec * 1_000_000_000 + info.header.stamp.nanosec
                assert self.probe.spin_until(lambda: camera.infos.has(stamp), 10)
            else:
                self.probe.spin_until(lambda: False, 0.05)
        self.images[topic].publish(msg)

    def answer(self, stamp, timeout=60.0) -> Hands:
        """The Hands message carrying this stamp."""
        sec, nanosec = stamp
        match = lambda: [m for m in self.hands  # noqa: E731
                         if (m.header.stamp.sec, m.header.stamp.nanosec) == (sec, nanosec)]
        assert self.probe.spin_until(lambda: bool(match()), timeout, self.process), \
            f"no hands message with stamp {stamp}" + (f"; node log:\n{self.process.log()}" if self.process else "")
        return match()[0]

    def reports(self) -> list:
        """This node's /diagnostics statuses so far (other nodes report on the same topic)."""
        return [status for array in self.diagnostics for status in array.status
                if status.name.startswith(f"{self.name}: ")]

    def status(self) -> dict[str, str]:
        """The values of this node's latest /diagnostics report ({} before the first)."""
        reports = self.reports()
        return {kv.key: kv.value for kv in reports[-1].values} if reports else {}

    def close(self, sig=signal.SIGINT):
        """Stops the node: a process with sig, returning its exit code; one in this process as its
        main() does."""
        code = None
        if self.process is not None:
            code = self.process.stop(sig)
        else:
            self.node.shutdown()
            self.node.destroy_node()
        self.probe.close()
        return code
