"""How many published camera frames reach the hands node over DDS, per QoS pairing and size.

    python test/support/frame_delivery.py [--seconds 5] [--rate 30]
    FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA python test/support/frame_delivery.py   # both ends inherit it
    FASTRTPS_DEFAULT_PROFILES_FILE=config/fastdds_large_frames.xml python test/support/frame_delivery.py

The node runs as its own process with its real (MediaPipe) backend; a probe publishes frames at a
fixed rate and the node's `frames received` diagnostic (its image callback) counts what arrived.
test_frame_delivery.py asserts the reliable case; the table in docs/reliability.md comes from this
script.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/, for `support` when run as a script
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from support.ros_harness import NodeProcess, Probe, image_msg, magic_bgr  # noqa: E402

SIZES = ((640, 480), (1920, 1080))


def node_status(diagnostics: list, name: str) -> dict[str, str]:
    statuses = [s for array in diagnostics for s in array.status if s.name.startswith(f"{name}: ")]
    return {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}


def deliver(tmp_path: Path, publisher_reliability: str, node_reliability: str = "auto",
            sizes=SIZES, seconds: float = 3.0, rate: float = 30.0, name: str = "delivery_hands",
            queue: int | None = None, drain: float = 5.0) -> list[dict]:
    """For each size: frames published at `rate` for `seconds`, and frames the node received within
    `drain` seconds after the last. queue: the depth of the publisher's and the node's queues
    (default: the publisher 10, the node its default qos_depth)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    topic = f"/{name}_cam/image_raw"
    parameters = dict(backend="mediapipe", image_topics=[topic], qos_reliability=node_reliability,
                      diagnostics_period=0.2)
    if queue is not None:
        parameters["qos_depth"] = queue
    process = NodeProcess("acr_ros.hands_node", parameters, tmp_path, name=name)
    probe = Probe(f"{name}_probe")
    results = []
    try:
        diagnostics = probe.record(DiagnosticArray, "/diagnostics", 50)
        policy = ReliabilityPolicy.RELIABLE if publisher_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        publisher = probe.publisher(Image, topic, QoSProfile(depth=queue or 10, reliability=policy))
        probe.wait_for_subscribers(publisher, timeout=60, process=process)
        expected = publisher_reliability if node_reliability == "auto" else node_reliability
        settled = lambda: node_status(diagnostics, name).get(f"input {topic}", "").startswith(expected)  # noqa: E731
        assert probe.spin_until(settled, 30, process), f"the node did not subscribe {expected}:\n{process.log()}"
        probe.spin_until(lambda: False, 0.5)  # the (re-created) subscription matched
        for width, height in sizes:
            msg = image_msg(cv2.resize(magic_bgr(), (width, height)), stamp=(0, 0))
            before = int(node_status(diagnostics, name).get("frames received", 0))
            count = int(seconds * rate)
            start = time.monotonic()
            for index in range(count):
                msg.header.stamp.sec, msg.header.stamp.nanosec = 1700003000 + index // 30, index % 30
                publisher.publish(msg)
                while (wait := start + (index + 1) / rate - time.monotonic()) > 0:
                    probe.executor.spin_once(timeout_sec=wait)
            received = lambda: int(node_status(diagnostics, name).get("frames received", 0)) - before  # noqa: E731
            probe.spin_until(lambda: received() >= count, drain, process)  # reliable frames still in flight
            probe.spin_until(lambda: False, 0.5)                       # a report after the last frame
            results.append(dict(size=f"{width}x{height}", published=count, received=received(),
                                publisher=publisher_reliability, node=node_reliability,
                                seconds_publishing=round(time.monotonic() - start, 2)))
    finally:
        probe.close()
        process.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args()
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    transports = Path(profile).name if profile else os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT")
    print("| Fast DDS transports | publisher | node qos_reliability | size | published | received |")
    print("|---|---|---|---|---|---|")
    for publisher, node in (("reliable", "auto"), ("reliable", "best_effort"), ("best_effort", "auto")):
        for row in deliver(Path(tempfile.mkdtemp(prefix="acr_delivery_")), publisher, node,
                           seconds=args.seconds, rate=args.rate):
            print(f"| {transports} | {row['publisher']} | {row['node']} | {row['size']} | {row['published']} "
                  f"| {row['received']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
