"""Soak run: the hands node fed 640x480 frames at 30 Hz, watched for crashes, memory growth, queueing
and latency drift.

    python test/support/soak.py --minutes 30 [--backend mediapipe] [--json out.json]

test_soak.py runs it for 30 s in CI; the 30-minute figures are in docs/reliability.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/, for `support` when run as a script
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from support.process_stats import rss_bytes  # noqa: E402
from support.ros_harness import REPO, NodeProcess, Probe, image_msg  # noqa: E402


def soak(seconds: float, warmup: float, backend: str = "mediapipe", rate: float = 30.0, params=None) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from acr_ros.msg import Hands

    frame = cv2.resize(cv2.imread(str(REPO / "acr_ros" / "data" / "samples" / "magic.jpg")), (640, 480))
    tmp = Path(tempfile.mkdtemp(prefix="acr_soak_"))
    process = NodeProcess("acr_ros.hands_node", dict(backend=backend, image_topics=["/soak/image_raw"],
                                                     **(params or {})), tmp)
    probe = Probe("soak_probe")
    latencies: list[tuple[float, float]] = []  # (receive time, stamp-to-receive latency)
    probe.node.create_subscription(Hands, "/acr_hands/hands", lambda m: latencies.append(
        (time.time(), time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))), 100)
    reports: list[tuple[float, dict]] = []  # (receive time, values) of the node's /diagnostics
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: reports.append(
        (time.monotonic(), {kv.key: kv.value for kv in m.status[0].values})), 10)
    publisher = probe.publisher(Image, "/soak/image_raw")
    try:
        probe.wait_for_subscribers(publisher, timeout=120, process=process)
        start = time.monotonic()
        memory: list[tuple[float, int]] = []
        sent = 0
        while time.monotonic() - start < seconds:
            now = time.time()
            msg = image_msg(frame, stamp=(int(now), int((now % 1) * 1e9)))
            publisher.publish(msg)
            sent += 1
            if not memory or time.monotonic() - start - memory[-1][0] >= 2.0:
                memory.append((time.monotonic() - start, rss_bytes(process.process.pid)))
            next_frame = start + sent / rate
            probe.spin_until(lambda: time.monotonic() >= next_frame, max(0.0, next_frame - time.monotonic()),
                             process)
        # Until a report after the last frame accounts for every frame received, and its hands are in.
        sent_until = time.monotonic()
        probe.spin_until(lambda: reports[-1][0] > sent_until and _accounted(reports[-1][1])
                         and len(latencies) >= int(reports[-1][1]["frames published"]), 10.0, process)
        values = reports[-1][1]
    finally:
        code = process.stop()
        probe.close()
    after_warmup = [rss for t, rss in memory if t >= warmup]
    t0 = time.time() - (time.monotonic() - start)
    measured = [lat for received, lat in latencies if received - t0 >= warmup]
    third = max(1, len(measured) // 3)
    return {
        "seconds": seconds, "rate_hz": rate, "backend": backend, "frames_sent": sent,
        "hands_messages": len(latencies),
        "frames_received": int(values["frames received"]), "frames_dropped": int(values["frames dropped"]),
        "rss_after_warmup_mb": after_warmup[0] / 2**20, "rss_end_mb": after_warmup[-1] / 2**20,
        "rss_growth": after_warmup[-1] / after_warmup[0] - 1.0,
        "latency_p50_first_third_ms": float(np.median(measured[:third])) * 1e3,
        "latency_p50_last_third_ms": float(np.median(measured[-third:])) * 1e3,
        "latency_p95_ms": float(np.percentile(measured, 95)) * 1e3,
        "exit_code": code, "shutdown_seconds": process.shutdown_seconds() if code == 0 else None,
    }


def _accounted(values: dict[str, str]) -> bool:
    """Every frame the node received is published, dropped or refused."""
    count = lambda key: int(values[key])  # noqa: E731
    return count("frames received") == sum(count(key) for key in (
        "frames published", "frames dropped", "bad input frames", "inference errors", "internal errors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--backend", default="mediapipe")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    result = soak(args.minutes * 60, warmup=60.0, backend=args.backend)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
