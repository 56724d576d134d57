"""CDR in the recordings: what acr_ros.cdr.CdrEncoder saves the bag writer per 1080p frame against
rosbags' serializer, and what rosbags' deserializer costs the reader.

    python benchmarks/cdr.py [--repeat 20]

Writing: one frame's outputs with two MANO hands, as recordings.HandsBag writes them (markers with
their points as arrays, a 1080p overlay; the mesh message is written once per bag). "rosbags" is
what the writer would pay to use rosbags' Typestore.serialize_cdr: converting the message to
rosbags' message classes (numbers as numpy arrays, every Point an object), then serializing.
Reading: a 1080p frame's messages decoded with rosbags' deserialize_cdr as recordings.read_frames
does: an image from a fresh bytearray (its pixels then writable views of it), CameraInfo from the
bytes as read. Best of --repeat runs, in ms. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from rosbags.interfaces import Nodetype
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from acr_ros import ros_messages
from acr_ros.acr.hands import LEFT, RIGHT, FrameResult
from acr_ros.cdr import CdrEncoder
from acr_ros.image_conversion import bgr_to_image
from acr_ros.recordings import typestore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the synthetic hands
sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import best_ms  # noqa: E402
from support.hands import FACES_BY_SIDE, make_hand  # noqa: E402

_DTYPES = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
           "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
           "uint64": np.uint64, "float32": np.float32, "float64": np.float64}


def to_rosbags(store, msg, typename: str):
    """msg (an rclpy message, marker points possibly an (N, 3) array) as rosbags' message class."""
    values = {}
    for field, (node, info) in store.fielddefs[typename][1]:
        value = getattr(msg, field)
        if node == Nodetype.NAME:
            values[field] = to_rosbags(store, value, info)
        elif node == Nodetype.BASE:
            values[field] = value[0] if isinstance(value, bytes) else value
        else:
            (element_node, element), _ = info
            if element_node == Nodetype.NAME:
                if isinstance(value, np.ndarray):  # rows of a struct of numbers (marker points)
                    cls = store.types[element]
                    values[field] = [cls(*row) for row in value.tolist()]
                else:
                    values[field] = [to_rosbags(store, item, element) for item in value]
            elif element[0] == "string":
                values[field] = list(value)
            else:
                values[field] = np.asarray(value, _DTYPES[element[0]])
    return store.types[typename](**values)


def frame_outputs() -> list[tuple[str, str, object]]:
    """(name, type, message) of what HandsBag writes for one 1080p frame with two hands."""
    header = Header(stamp=Time(sec=1700000000, nanosec=0), frame_id="camera_color_optical_frame")
    frame = FrameResult(hands=[make_hand(LEFT, 0), make_hand(RIGHT, 1, score=0.7)], default_intrinsics=False)
    hands = ros_messages.frame_to_msg(frame, header, 1920, 1080, "acr", "model", "checkpoint")
    markers = ros_messages.frame_markers(frame, header, FACES_BY_SIDE, {}, points_as_arrays=True)
    overlay = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    return [("Hands (2 hands)", "acr_ros/msg/Hands", hands),
            *((f"PoseStamped ({ros_messages.SIDE_NAMES[hand.side]} wrist)", "geometry_msgs/msg/PoseStamped",
               ros_messages.wrist_pose_msg(hands, hand)) for hand in hands.hands),
            ("TFMessage (42 joints)", "tf2_msgs/msg/TFMessage",
             TFMessage(transforms=ros_messages.hand_transforms(frame, header))),
            ("MarkerArray (2 meshes)", "visualization_msgs/msg/MarkerArray", markers),
            ("Image (1080p overlay)", "sensor_msgs/msg/Image", bgr_to_image(overlay, header))]


def writing(repeat: int) -> list[tuple[str, int, float, float, float]]:
    """(name, bytes, CdrEncoder ms, rosbags conversion ms, rosbags serialize_cdr ms) per message."""
    store = typestore()
    encoder = CdrEncoder(store)
    rows = []
    header = Header(frame_id="camera_color_optical_frame")
    mesh = ros_messages.mesh_msg(FACES_BY_SIDE[LEFT], FACES_BY_SIDE[RIGHT], header.stamp)
    for name, msgtype, msg in [*frame_outputs(), ("HandMesh (once per bag)", "acr_ros/msg/HandMesh", mesh)]:
        converted = to_rosbags(store, msg, msgtype)
        size = len(encoder.encode(msg, msgtype))
        rows.append((name, size, best_ms(lambda: encoder.encode(msg, msgtype), repeat),
                     best_ms(lambda: to_rosbags(store, msg, msgtype), repeat),
                     best_ms(lambda: store.serialize_cdr(converted, msgtype), repeat)))
    return rows


def reading(repeat: int) -> list[tuple[str, int, float, float]]:
    """(name, bytes, deserialize_cdr ms as read_frames calls it, of which the bytearray copy ms)."""
    store = typestore()
    header = Header(stamp=Time(sec=1700000000, nanosec=0), frame_id="camera_color_optical_frame")
    bgr = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    jpeg = CompressedImage(header=header, format="jpeg")
    jpeg.data = cv2.imencode(".jpg", bgr)[1].tobytes()
    info = CameraInfo(header=header, width=1920, height=1080, distortion_model="plumb_bob", d=[0.0] * 5)
    rows = []
    for name, msgtype, msg, writable in (
            ("Image (1080p bgr8)", "sensor_msgs/msg/Image", bgr_to_image(bgr, header), True),
            ("CompressedImage (1080p JPEG)", "sensor_msgs/msg/CompressedImage", jpeg, True),
            ("CameraInfo", "sensor_msgs/msg/CameraInfo", info, False)):
        raw = serialize_message(msg)

        def decode(raw=raw, msgtype=msgtype, writable=writable):
            return store.deserialize_cdr(memoryview(bytearray(raw) if writable else raw), msgtype)

        copy = best_ms(lambda raw=raw: bytearray(raw), repeat) if writable else 0.0
        rows.append((name, len(raw), best_ms(decode, repeat), copy))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"best of {args.repeat} (ms)\n")
    print("| written | bytes | CdrEncoder | rosbags: convert + serialize_cdr | (convert, serialize_cdr) |")
    print("|---|---|---|---|---|")
    rows = writing(args.repeat)
    for name, size, ours, convert, serialize in rows:
        print(f"| {name} | {size} | {ours:.3f} | {convert + serialize:.3f} | ({convert:.3f}, {serialize:.3f}) |")
    per_frame = [row for row in rows if "once" not in row[0]]
    ours, convert, serialize = (sum(row[i] for row in per_frame) for i in (2, 3, 4))
    print(f"| **per frame** | {sum(row[1] for row in per_frame)} | **{ours:.3f}** | **{convert + serialize:.3f}** "
          f"| ({convert:.3f}, {serialize:.3f}) |")
    print("\n| read | bytes | deserialize_cdr | of which copying into a bytearray |\n|---|---|---|---|")
    for name, size, decode, copy in reading(args.repeat):
        print(f"| {name} | {size} | {decode:.3f} | {copy:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
