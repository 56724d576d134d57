"""Small rosbag2 recordings made by the tests, and reading bags back.

write_bag() records frames of the bundled clip (downscaled) the way a robot's camera driver and
`ros2 bag record` would: images (raw or compressed) stamped on a 2023 clock, their camera_info
recorded just after each image, the camera's static transforms on /tf_static, optionally a
dynamic /tf; in sqlite3 or MCAP storage, or as a single .mcap file. read_bag() returns what a bag
holds, as rclpy messages, in record order.
"""
from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image
from tf2_msgs.msg import TFMessage

from acr_ros.media import SAMPLES_DIR
from support.ros_harness import camera_info_msg, image_msg

CLOCK0 = 1_690_000_000            # s: 2023-07-22, the recording's clock, years before any test run
CAMERA_FRAME = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
RECORD_DELAY_NS = 3_000_000       # an image is recorded 3 ms after its stamp, its camera_info 1 ms later
FOCAL = 300.0                     # px, of the downscaled frames

_STORE = get_typestore(Stores.ROS2_JAZZY)
_INFINITE = QosTime(9223372036, 854775807)
# What rosbag2 records of a camera driver's publishers and of a static transform broadcaster.
SENSOR_QOS = Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE, _INFINITE, _INFINITE,
                 QosLiveliness.AUTOMATIC, _INFINITE, False)
STATIC_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _INFINITE,
                 _INFINITE, QosLiveliness.AUTOMATIC, _INFINITE, False)


def clip_frames(count: int, size=(320, 180), start: int = 0) -> list[np.ndarray]:
    """count frames of the bundled clip (a left hand, then a right hand) from frame `start`, resized."""
    capture = cv2.VideoCapture(str(SAMPLES_DIR / "magic_clip.mp4"))
    frames = []
    index = 0
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            raise ValueError(f"the clip has fewer than {start + count} frames")
        if index >= start:
            frames.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        index += 1
    capture.release()
    return frames


def stamp(index: int, rate: float = 10.0) -> tuple[int, int]:
    ns = CLOCK0 * 1_000_000_000 + round(index * 1e9 / rate)
    return ns // 1_000_000_000, ns % 1_000_000_000


def to_ns(stamp_) -> int:
    sec, nanosec = (stamp_.sec, stamp_.nanosec) if hasattr(stamp_, "sec") else stamp_
    return sec * 1_000_000_000 + nanosec


def _static_transforms() -> TFMessage:
    transforms = []
    for parent, child, xyz in (("base_link", "camera_link", (0.1, 0.0, 0.5)),
                               ("camera_link", CAMERA_FRAME, (0.0, 0.0, 0.0))):
        t = TransformStamped()
        t.header.stamp.sec, t.header.stamp.nanosec = stamp(0)
        t.header.frame_id, t.child_frame_id = parent, child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
        if child == CAMERA_FRAME:  # optical frame: z forward, x right, y down
            t.transform.rotation.x, t.transform.rotation.y = -0.5, 0.5
            t.transform.rotation.z, t.transform.rotation.w = -0.5, 0.5
        else:
            t.transform.rotation.w = 1.0
        transforms.append(t)
    return TFMessage(transforms=transforms)


def _odometry(index: int) -> TFMessage:
    t = TransformStamped()
    t.header.stamp.sec, t.header.stamp.nanosec = stamp(index)
    t.header.frame_id, t.child_frame_id = "odom", "base_link"
    t.transform.translation.x = 0.01 * index
    t.transform.rotation.w = 1.0
    return TFMessage(transforms=[t])


def _depth_like(bgr: np.ndarray) -> Image:
    """A 32FC1 image: what a misconfigured recording might hold on its colour topic."""
    depth = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0)
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="32FC1", is_bigendian=0, step=depth.strides[0])
    msg.data = depth.tobytes()
    return msg


@dataclass
class Recorded:
    path: Path                          # what to give acr_offline: the bag directory or the .mcap file
    stamps: list[tuple[int, int]]       # of the images, in order
    record_times: list[int]             # ns, of the images


def write_bag(path: Path, frames: Sequence[np.ndarray], storage: str = "mcap", *, compressed: bool = False,
              image_topic: str = IMAGE_TOPIC, camera_info: bool = True, tf_static: bool = True,
              odometry: bool = False, bad_frames: Sequence[int] = (), rate: float = 10.0,
              extra_image_topic: Optional[str] = None, info_size: Optional[tuple[int, int]] = None,
              depth_mm: Optional[int] = None) -> Recorded:
    """A recording of frames at `rate` Hz. storage: "mcap" or "sqlite3" (bag directories) or
    "mcap-file" (the .mcap file alone). bad_frames: indices recorded as 32FC1 images. info_size:
    (width, height) the camera_info claims (default: the image's). depth_mm: also record an aligned
    16UC1 depth image of each frame on DEPTH_TOPIC, every pixel that far."""
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    topic = image_topic + "/compressed" if compressed else image_topic
    stamps, times = [], []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection(topic, image_type, typestore=_STORE, offered_qos_profiles=[SENSOR_QOS])
        extra = (writer.add_connection(extra_image_topic, "sensor_msgs/msg/Image", typestore=_STORE)
                 if extra_image_topic else None)
        infos = writer.add_connection(INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=_STORE) \
            if camera_info else None
        static = (writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=_STORE,
                                        offered_qos_profiles=[STATIC_QOS]) if tf_static else None)
        tf = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=_STORE) if odometry else None
        depths = (writer.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=_STORE)
                  if depth_mm is not None else None)
        if static is not None:
            writer.write(static, to_ns(stamp(0, rate)), serialize_message(_static_transforms()))
        for index, bgr in enumerate(frames):
            when = stamp(index, rate)
            record_time = to_ns(when) + RECORD_DELAY_NS
            if compressed:
                msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
                msg.data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            elif index in bad_frames:
                msg = _depth_like(bgr)
            else:
                msg = image_msg(bgr, frame_id=CAMERA_FRAME)
            msg.header.stamp.sec, msg.header.stamp.nanosec = when
            msg.header.frame_id = CAMERA_FRAME
            writer.write(images, record_time, serialize_message(msg))
            if extra is not None:
                writer.write(extra, record_time, serialize_message(msg))
            if infos is not None:
                width, height = info_size or (bgr.shape[1], bgr.shape[0])
                info = camera_info_msg(width, height, FOCAL, stamp=when, frame_id=CAMERA_FRAME)
                writer.write(infos, record_time + 1_000_000, serialize_message(info))
            if tf is not None:
                writer.write(tf, record_time + 2_000_000, serialize_message(_odometry(index)))
            if depths is not None:  # recorded after the colour image: the pairing waits for it
                writer.write(depths, record_time + 5_000_000, serialize_message(
                    depth_image(bgr.shape[1], bgr.shape[0], depth_mm, when)))
            stamps.append(when)
            times.append(record_time)
    if storage == "mcap-file":
        single = path.parent / f"{path.name}.mcap"
        shutil.move(str(path / f"{path.name}.mcap"), single)
        shutil.rmtree(path)
        path = single
    return Recorded(path, stamps, times)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class sensor_msgs.msg.Image."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


@dataclass
class Message:
    topic: str
    time: int           # record time, ns
    msg: object         # the rclpy message
    raw: bytes


def read_bag(path: Path) -> list[Message]:
    """Every message of a bag (directory or .mcap file), in record order."""
    out = []
    with Reader(path) as reader:
        types = {c.id: message_class(c.msgtype) for c in reader.connections}
        for connection, time, raw in reader.messages():
            out.append(Message(connection.topic, time, deserialize_message(raw, types[connection.id]), bytes(raw)))
    return out


def topic_metadata(path: Path) -> dict[str, dict]:
    """topic -> {type, hash, count, qos} as the bag's index records them."""
    with Reader(path) as reader:
        return {c.topic: {"type": c.msgtype, "hash": c.digest, "count": c.msgcount,
                          "qos": c.ext.offered_qos_profiles} for c in reader.connections}



def depth_image(width: int, height: int, millimetres: int, stamp_, frame_id: str = CAMERA_FRAME) -> Image:
    """A 16UC1 depth image, every pixel at the same distance: a wall behind nothing."""
    depth = np.full((height, width), millimetres, np.uint16)
    msg = Image(height=height, width=width, encoding="16UC1", is_bigendian=0, step=depth.strides[0])
    msg.data = depth.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_
    msg.header.frame_id = frame_id
    return msg
