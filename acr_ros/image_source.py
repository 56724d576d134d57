"""Publishes Image + CameraInfo from a webcam, a video file, an image folder or one image.

    ros2 run acr_ros image_source --ros-args -p source:=video -p input:=clip.mp4 \
        -r image_raw:=/camera/image_raw -r camera_info:=/camera/camera_info

The seed demo's input modes as a ROS camera: frames are stamped when they are captured (webcam) or
published (files), and CameraInfo carries the same stamp. The calibration comes from
camera_info_url (the YAML that ROS's camera_calibration writes; scaled when the images are a
resized stream) or from fx/fy/cx/cy; without either the camera is published as uncalibrated (K
all zeros, said once as a warning) and consumers fall back to their default intrinsics.
"""
from __future__ import annotations

import copy
import sys
import time

import cv2
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from acr_ros.calibration import Calibration, CalibrationError, load_calibration
from acr_ros.image_conversion import bgr_to_image
from acr_ros.media import open_media
from acr_ros.node.inputs import camera_info_topic, compressed_topic
from acr_ros.qos import policy_name
from acr_ros.ros_runtime import StopRequest, start_ros, warn_unknown_parameters


FLUSH_S = 5  # see ImageSource.flush


class ImageSource(Node):
    def __init__(self, stop: StopRequest | None = None, **node_options):
        """stop: once set (a stop signal, see acr_ros.ros_runtime), nothing more is published."""
        super().__init__("image_source", **node_options)
        self.stop = stop or StopRequest()
        parameters = {
            "source": ("auto", "auto (from input), webcam, video, folder or image"),
            "input": ("0", "webcam id, video file, image folder or image file"),
            "rate": (10.0, "frames per second (0: a video's own rate)"),
            "loop": (True, "start again at the end (false: exit after the last frame)"),
            "repeat": (1, "publish each image or folder frame this many times"),
            "frame_id": ("camera_optical_frame", "frame_id of the images (the camera optical frame)"),
            "camera_info_url": ("", "camera calibration YAML (camera_calibration's format): a path, "
                                    "file:// or package:// URL; takes precedence over fx/fy/cx/cy"),
            "fx": (0.0, "focal length x in pixels (0 and no camera_info_url: uncalibrated, K all zeros)"),
            "fy": (0.0, "focal length y in pixels (0: same as fx)"),
            "cx": (-1.0, "principal point x in pixels (negative: image centre, width / 2)"),
            "cy": (-1.0, "principal point y in pixels (negative: image centre, height / 2)"),
            "compressed": (False, "also publish image_raw/compressed (JPEG)"),
            "reliable": (False, "publish with reliable QoS (default: sensor data, best effort)"),
            "wait_for_subscribers": (0, "before the first frame, wait until this many subscribers "
                                        "listen on image_raw (and at most 2 s more on camera_info)"),
        }
        for name, (default, description) in parameters.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        qos = QoSProfile(depth=5) if self.param("reliable") else qos_profile_sensor_data

        def publisher(msg_type, topic: str):  # QoS overridable the standard way; rclpy writes into a copy
            return self.create_publisher(msg_type, topic, copy.copy(qos),
                                         qos_overriding_options=QoSOverridingOptions.with_default_policies())

        # the topics a subscriber of image_raw (remapped) expects, by image_transport's rules
        self.image_pub = publisher(Image, "image_raw")
        self.info_pub = publisher(CameraInfo, camera_info_topic(self, "image_raw"))
        self.compressed_pub = (publisher(CompressedImage, compressed_topic(self, "image_raw"))
                               if self.param("compressed") else None)
        url = self.param("camera_info_url")
        self.calibration: Calibration | None = load_calibration(url) if url else None
        self._scaled: dict[tuple[int, int], Calibration] = {}
        if self.calibration is None and self.param("fx") <= 0:
            self.get_logger().warning(
                "no camera calibration (parameters camera_info_url or fx): publishing an uncalibrated "
                "CameraInfo (K all zeros), so consumers place hands with a default focal length and "
                "distances can be off by a large factor")
        self.last_stamp = None  # of the last frame published

    def param(self, name):
        return self.get_parameter(name).value

    def camera_info(self, header, width: int, height: int) -> CameraInfo:
        info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob",
                          d=[0.0] * 5)
        fx = self.param("fx")
        if self.calibration is not None:
            calibration = self._calibration_for(width, height)
            info.k, info.d, info.r, info.p = calibration.k, calibration.d, calibration.r, calibration.p
            info.distortion_model = calibration.distortion_model
        elif fx > 0:
            fy = self.param("fy") or fx
            # Pixel coordinates have their origin at the top-left pixel's corner (as in Hand.msg).
            cx = self.param("cx") if self.param("cx") >= 0 else width / 2
            cy = self.param("cy") if self.param("cy") >= 0 else height / 2
            info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
            info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
            info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        return info

    def _calibration_for(self, width: int, height: int) -> Calibration:
        if (width, height) not in self._scaled:
            self._scaled[(width, height)] = self.calibration.scaled_to(width, height)
            if (width, height) != (self.calibration.width, self.calibration.height):
                self.get_logger().warning(
                    f"{self.calibration.source} is for {self.calibration.width}x{self.calibration.height}; "
                    f"scaled to the {width}x{height} images")
        return self._scaled[(width, height)]

    def publish(self, bgr) -> None:
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = self.param("frame_id")
        self.image_pub.publish(bgr_to_image(bgr, header))
        self.info_pub.publish(self.camera_info(header, bgr.shape[1], bgr.shape[0]))
        if self.compressed_pub is not None:
            ok, jpeg = cv2.imencode(".jpg", bgr)
            if ok:
                self.compressed_pub.publish(CompressedImage(header=header, format="jpeg", data=jpeg.tobytes()))
        if self.last_stamp is None:  # when the camera started, by its own stamps (consumers' restart times)
            reliability = policy_name(self.image_pub.qos_profile.reliability)
            self.get_logger().info(f"publishing {bgr.shape[1]}x{bgr.shape[0]} images on {self.image_pub.topic_name} "
                                   f"({reliability}), the first stamped {header.stamp.sec}.{header.stamp.nanosec:09d}")
        self.last_stamp = header.stamp

    def wait_for_subscribers(self) -> None:
        """Until `wait_for_subscribers` listen on image_raw (at most 60 s), then at most 2 s more until
        as many listen on camera_info: a consumer's two subscriptions are discovered one after the
        other, and without this its first frame could come before any CameraInfo. A consumer of
        images alone costs those 2 s once. Either wait ending short of the count is logged."""
        wanted = self.param("wait_for_subscribers")
        for publisher, seconds in ((self.image_pub, 60.0), (self.info_pub, 2.0)):
            deadline = time.monotonic() + seconds
            while self.running() and publisher.get_subscription_count() < wanted and time.monotonic() < deadline:
                rclpy.spin_once(self, timeout_sec=0.1)
            count = publisher.get_subscription_count()
            if self.running() and count < wanted:
                self.get_logger().warning(
                    f"wait_for_subscribers: {count} of {wanted} subscriber(s) on {publisher.topic_name} after "
                    f"{seconds:g} s; publishing anyway")

    def run(self) -> None:
        """Publishes until the media ends (or forever with loop), pacing frames in real time."""
        self.wait_for_subscribers()
        next_time = time.monotonic()  # kept over the loops: one image looped is paced too
        while self.running():
            with open_media(self.param("input")) as media:
                if self.param("source") not in ("auto", media.kind):
                    raise ValueError(f"source is '{self.param('source')}' but {self.param('input')} is a "
                                     f"{media.kind}")
                next_time = self._play(media, next_time)
            if not self.param("loop"):
                return

    def running(self) -> bool:
        return rclpy.ok(context=self.context) and not self.stop.requested

    def flush(self) -> None:
        """Waits (up to 5 s) until reliable subscribers have acknowledged every frame; says so when
        some did not (the last frames may not reach them). 5 s: a message lost on the way is sent
        again after the writer's next heartbeat, every 3 s in Fast DDS by default."""
        for publisher in (self.image_pub, self.info_pub, self.compressed_pub):
            if publisher is not None and not publisher.wait_for_all_acked(Duration(seconds=FLUSH_S)):
                self.get_logger().warning(f"{publisher.topic_name}: not every subscriber acknowledged the last "
                                          f"messages within {FLUSH_S} s; they may not have received them")

    def _play(self, media, next_time: float) -> float:
        """Plays the media from next_time (monotonic) on; returns when the next frame is due."""
        period = 1.0 / (self.param("rate") or media.fps or 10.0)
        repeat = 1 if media.kind in ("video", "webcam") else self.param("repeat")
        for frame in media:
            for _ in range(repeat):
                if media.kind != "webcam":  # a webcam paces itself
                    self.stop.wait(max(0.0, next_time - time.monotonic()))
                    next_time = max(next_time + period, time.monotonic() - period)
                if not self.running():  # a stop signal may have come during the sleep
                    return next_time
                self.publish(frame.image)
                rclpy.spin_once(self, timeout_sec=0)
        return next_time


def main(args=None) -> int:
    stop = start_ros("image_source", args)
    if stop is None:
        return 1
    code = 0
    try:
        node = ImageSource(stop)
    except CalibrationError as error:
        rclpy.logging.get_logger("image_source").fatal(str(error))
        rclpy.try_shutdown()
        return 1
    warn_unknown_parameters(node)
    try:
        node.run()
        if not stop.requested:  # the media ended: reliable subscribers get the last frames before this process ends
            node.flush()
    except (FileNotFoundError, ValueError) as error:  # bad input path or unreadable media
        node.get_logger().fatal(str(error))
        code = 1
    finally:
        # Publishing has stopped (run() checks the stop request before each frame): only now rclpy goes.
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
