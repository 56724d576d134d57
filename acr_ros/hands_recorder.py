"""Records what the hands node publishes: overlay images or an mp4, and a JSON summary.

    ros2 run acr_ros hands_recorder --ros-args -p output_dir:=out -p name:=clip -p video:=true \
        -r hands:=/acr_hands/hands -r overlay:=/acr_hands/overlay

Stops on Ctrl-C, after max_frames hands messages, or idle_timeout seconds after the last one,
then writes <output_dir>/<name>_summary.json (one entry per hands message) and, with video,
<name>_output.mp4 (else one overlay JPEG per frame).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import cv2
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image

from acr_ros.image_conversion import ImageConversionError, image_to_bgr
from acr_ros.msg import Hand, Hands
from acr_ros.ros_runtime import spin_until_stopped, start_ros, warn_unknown_parameters

SIDE_NAMES = {Hand.LEFT: "left", Hand.RIGHT: "right"}


def hands_summary(msg: Hands) -> dict:
    """The JSON-friendly gist of one Hands message."""
    return {
        "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
        "frame_id": msg.header.frame_id,
        "backend": msg.backend,
        "default_intrinsics": msg.default_intrinsics,
        "hands": [{
            "side": SIDE_NAMES.get(hand.side, "unknown"),
            "score": round(float(hand.score), 4),
            "wrist_m": [round(v, 4) for v in (hand.wrist_pose.position.x, hand.wrist_pose.position.y,
                                               hand.wrist_pose.position.z)],
            "box_px": [hand.box.x_offset, hand.box.y_offset, hand.box.width, hand.box.height],
            "mesh": len(hand.vertices) > 0,
        } for hand in msg.hands],
    }


class HandsRecorder(Node):
    def __init__(self, **node_options):
        super().__init__("hands_recorder", **node_options)
        describe = lambda text: ParameterDescriptor(description=text, read_only=True)  # noqa: E731
        self.output_dir = Path(self.declare_parameter("output_dir", "hands_output", describe(
            "folder the recording goes to")).value)
        self.name = self.declare_parameter("name", "hands", describe("prefix of the files written")).value
        self.video = self.declare_parameter("video", False, describe(
            "write <name>_output.mp4 instead of one JPEG per overlay frame")).value
        self.fps = self.declare_parameter("fps", 10.0, describe(
            "frame rate of the mp4: the source's (acr_ros_demo passes a clip's own)")).value
        self.max_frames = self.declare_parameter("max_frames", 0, describe(
            "stop after this many hands messages (0: no limit)")).value
        self.idle_timeout = self.declare_parameter("idle_timeout", 0.0, describe(
            "stop this many seconds after the last hands message (0: never)")).value
        self.output_dir.mkdir(parents=True, exist_ok=True)

        self.summaries: list[dict] = []
        self._writer = None
        self.overlays_written = 0
        self._last_message = None
        self.done = threading.Event()
        overridable = QoSOverridingOptions.with_default_policies()  # the standard qos_overrides parameters
        self.hands_subscription = self.create_subscription(Hands, "hands", self._on_hands, 50,
                                                           qos_overriding_options=overridable)
        self.overlay_subscription = self.create_subscription(Image, "overlay", self._on_overlay, 50,
                                                             qos_overriding_options=overridable)
        self.create_timer(0.2, self._check_idle)

    def _on_hands(self, msg: Hands) -> None:
        self.summaries.append(hands_summary(msg))
        self._last_message = time.monotonic()
        if self.max_frames and len(self.summaries) >= self.max_frames:
            self.done.set()

    def _on_overlay(self, msg: Image) -> None:
        try:
            bgr = image_to_bgr(msg)
        except ImageConversionError as error:
            self.get_logger().warning(f"overlay not recorded: {error}", throttle_duration_sec=5.0)
            return
        if not self.video:
            cv2.imwrite(str(self.output_dir / f"{self.name}_{self.overlays_written:05d}.jpg"), bgr)
        else:
            size = (bgr.shape[1], bgr.shape[0])
            if self._writer is None:
                path = self.output_dir / f"{self.name}_output.mp4"
                self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
                self._video_size = size
                if not self._writer.isOpened():
                    raise RuntimeError(f"cannot write {path}")
            if size != self._video_size:  # an mp4 has one frame size
                self.get_logger().warning("overlay of another size not recorded", throttle_duration_sec=5.0)
                return
            self._writer.write(bgr)
        self.overlays_written += 1

    def _check_idle(self) -> None:
        if (self.idle_timeout and self._last_message is not None
                and time.monotonic() - self._last_message > self.idle_timeout):
            self.done.set()

    def finish(self) -> Path:
        if self._writer is not None:
            self._writer.release()
        path = self.output_dir / f"{self.name}_summary.json"
        path.write_text(json.dumps({"frames": self.summaries, "overlays_written": self.overlays_written}, indent=1))
        return path


def main(args=None) -> int:
    stop = start_ros("hands_recorder", args)
    if stop is None:
        return 1
    node = HandsRecorder()
    warn_unknown_parameters(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin_until_stopped(executor, stop, node.done.is_set)
    for _ in range(20):  # overlays may trail their hands message: take what is already queued
        executor.spin_once(timeout_sec=0.05)
    path = node.finish()
    node.get_logger().info(f"{len(node.summaries)} frames recorded: {path}")
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
