"""What retargeting adds to the hands node's latency: image stamp to `~/hands` and to
`~/left|right/joint_states` received in another process, two hands at 30 Hz.

    python benchmarks/teleop_latency.py --urdf-dir ../dex-urdf/hands [--robot leap] [--type vector]
                                        [--seconds 10] [--rate 30]

The node runs as its own process with the MediaPipe backend on the bundled two_hands.jpg (a left and a
right hand), resized to 640x480; a probe publishes it RELIABLE at --rate with the current time as
stamp, first with retargeting off, then on. Both runs have the same number of reliable per-side
subscribers (the wrist poses without retargeting, the joint states with it): each reliable subscriber in
the probe's process delays the images it sends by about 10 ms on a 2-core machine (measured: the
node's image callback, not its work), so runs with different subscriber sets do not compare. Prints a
markdown table (docs/benchmarks.md): latency p50 and p95 of each topic, and the p50 of each stage the
node reports on /diagnostics.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the ROS test helpers
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from support.ros_harness import REPO, RELIABLE, NodeProcess, Probe, image_msg  # noqa: E402


def measure(retarget: dict, seconds: float, rate: float, tmp: Path) -> dict[str, list[float]]:
    """topic -> latencies (s) of the frames published over `seconds` at `rate`, after a warm-up."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image, JointState

    from acr_ros.msg import Hands

    name = "bench_teleop" if retarget else "bench_hands"
    params = dict(backend="mediapipe", image_topics=["/bench/image_raw"], qos_reliability="reliable",
                  publish_overlay=False, diagnostics_period=0.5, **retarget)
    image = cv2.resize(cv2.imread(str(REPO / "acr_ros" / "data" / "samples" / "two_hands.jpg")), (640, 480))
    process = NodeProcess("acr_ros.hands_node", params, tmp, name=name)
    probe = Probe("teleop_latency_probe")
    per_side, msg_type = ("joint_states", JointState) if retarget else ("wrist_pose", PoseStamped)
    latencies: dict[str, list[float]] = {"hands": [], **{f"{side} {per_side}": [] for side in ("left", "right")}}

    def arrival(key):
        return lambda m: latencies[key].append(time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))

    probe.node.create_subscription(Hands, f"/{name}/hands", arrival("hands"), 10)
    for side in ("left", "right"):
        probe.node.create_subscription(msg_type, f"/{name}/{side}/{per_side}", arrival(f"{side} {per_side}"),
                                       RELIABLE)
    publisher = probe.publisher(Image, "/bench/image_raw", RELIABLE)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    try:
        probe.wait_for_subscribers(publisher, timeout=120, process=process)
        start = time.time()
        warm_up = 2.0
        sent = 0
        while time.time() - start < warm_up + seconds:
            now = time.time()
            if sent == 0 or now >= start + sent / rate:
                publisher.publish(image_msg(image, stamp=(int(now), int((now % 1) * 1e9))))
                sent += 1
                if now - start < warm_up:
                    for values in latencies.values():
                        values.clear()
            probe.spin_until(lambda: False, 0.002)
        probe.spin_until(lambda: False, 1.0)
        reports = [status for array in diagnostics for status in array.status if status.name.startswith(f"{name}:")]
    finally:
        process.stop()
        probe.close()
    values = {kv.key: kv.value for kv in reports[-1].values} if reports else {}
    latencies["node"] = [f"{key.removesuffix(' p50 (ms)')} {value}" for key, value in values.items()
                         if key.endswith(" p50 (ms)")]
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urdf-dir", required=True, help="the hands/ folder of a dex-urdf checkout")
    parser.add_argument("--robot", default="leap")
    parser.add_argument("--type", default="vector", choices=("vector", "dexpilot"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"two hands at {args.rate:g} Hz for {args.seconds:g} s, MediaPipe, 640x480")
    print("| retargeting | topic | messages | latency p50 (ms) | p95 (ms) |\n|---|---|---|---|---|")
    for retarget in ({}, {"retarget.robot": args.robot, "retarget.type": args.type,
                          "retarget.urdf_dir": str(Path(args.urdf_dir).resolve())}):
        with tempfile.TemporaryDirectory() as tmp:
            latencies = measure(retarget, args.seconds, args.rate, Path(tmp))
        label = f"{args.robot} {args.type}" if retarget else "off"
        for topic, values in latencies.items():
            if topic == "node" or not values:
                continue
            ms = np.array(values) * 1e3
            print(f"| {label} | {topic} | {len(ms)} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} |",
                  flush=True)
        print(f"\nthe node's stages, p50 (ms), retargeting {label}: {', '.join(latencies['node'])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
