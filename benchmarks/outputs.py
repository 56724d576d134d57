"""What the hands node spends per frame on its outputs: the Hands message, TF, the RViz markers and
the overlay image, for two synthetic hands with MANO-sized meshes; and the markers as the recording
writer builds them (points as arrays: no Point objects).

    python benchmarks/outputs.py [--repeat 20]

Best of --repeat runs per output, in ms. Synthetic hands
(test/support/hands.py): random values for the messages, an ellipsoid of MANO's size for the
overlay. Prints a markdown table (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from acr_ros import ros_messages
from acr_ros.cdr import CdrEncoder, typestore
from acr_ros.acr.hands import LEFT, RIGHT, FrameResult
from acr_ros.render import draw_hands

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the synthetic hands
from support.hands import CAMERA_1080P, FACES_BY_SIDE, make_hand, mesh_hand  # noqa: E402


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def timings(repeat: int) -> dict[str, float]:
    header = Header(stamp=Time(sec=1700000000, nanosec=0), frame_id="camera_optical_frame")
    frame = FrameResult(hands=[make_hand(LEFT, 0), make_hand(RIGHT, 1, score=0.7)], default_intrinsics=False)
    mesh, faces = mesh_hand(RIGHT)
    overlay = FrameResult(hands=[mesh], default_intrinsics=False, intrinsics=CAMERA_1080P)
    image = np.full((1080, 1920, 3), 30, np.uint8)
    encoder = CdrEncoder(typestore())
    return {
        "Hands message (2 hands)": best_ms(lambda: ros_messages.frame_to_msg(
            frame, header, 640, 480, "acr", "model", "checkpoint"), repeat),
        "TF (42 frames)": best_ms(lambda: ros_messages.hand_transforms(frame, header), repeat),
        "markers (2 hands, mesh)": best_ms(lambda: ros_messages.hand_markers(frame, header, FACES_BY_SIDE), repeat),
        "markers, points as arrays (recording writer)": best_ms(lambda: ros_messages.hand_markers(
            frame, header, FACES_BY_SIDE, points_as_arrays=True), repeat),
        # What publishing them costs before DDS: rclpy serializes Point objects; the node sends CdrEncoder's bytes.
        "markers as Point objects, serialized by rclpy": best_ms(lambda: serialize_message(
            ros_messages.hand_markers(frame, header, FACES_BY_SIDE)), repeat),
        "markers as CDR bytes (the node)": best_ms(lambda: bytes(encoder.encode(ros_messages.hand_markers(
            frame, header, FACES_BY_SIDE, points_as_arrays=True), "visualization_msgs/msg/MarkerArray")), repeat),
        "overlay (1 mesh, 1080p)": best_ms(lambda: draw_hands(image, overlay, {RIGHT: faces}), repeat),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    print("| output | best of %d (ms) |\n|---|---|" % args.repeat)
    for name, ms in timings(args.repeat).items():
        print(f"| {name} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
