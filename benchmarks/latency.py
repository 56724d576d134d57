"""End-to-end latency of the hands node: image stamp to `~/hands` received in another process.

    python benchmarks/latency.py [--backend mediapipe acr] [--sizes 640x480 1920x1080] [--frames 30]
                                 [--rate HZ] [--device cuda] [--precision fp16] [--warmup 3] [--json PATH]

One frame at a time (the next is sent once the previous answer arrived), so this is latency
without queueing: DDS transport both ways, conversion, inference, message building. With --rate,
a camera instead: frames published at that rate whatever the answers (what scripts/gpu_check.sh
measures on the GPU: 1920x1080 at 30 Hz); frames the node dropped are counted. The node's own
per-stage figures (conversion, inference, publish: p50 over the run, from its /diagnostics) are
printed beside it. The ACR
backend runs random weights in the official layout with synthetic MANO files: the same cost as the
real model, not hand reconstructions. Prints a markdown table (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
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


STAGES = ("conversion", "inference", "publish")


def measure(backend: str, size: tuple[int, int], frames: int, device: str, tmp: Path, rate: float = 0.0,
            precision: str = "auto", warmup: int = 3) -> tuple[list[float], dict[str, str]]:
    """Latencies (s) of `frames` frames (one at a time, or published at `rate` Hz), and the node's
    per-stage p50 (ms) as it reports them."""
    from diagnostic_msgs.msg import DiagnosticArray

    from acr_ros.msg import Hands
    from sensor_msgs.msg import Image

    params = dict(backend=backend, image_topics=["/bench/image_raw"], qos_reliability="reliable",
                  device=device, precision=precision, publish_overlay=False)
    if backend == "acr":
        from support.random_weights import write_random_checkpoint
        from support.synthetic_mano import write_synthetic_mano

        params.update(checkpoint=str(write_random_checkpoint(tmp / "wild.pkl", detect="both")),
                      mano_dir=str(write_synthetic_mano(tmp / "mano")))
    image = cv2.resize(cv2.imread(str(REPO / "acr_ros" / "data" / "samples" / "magic.jpg")), size)
    process = NodeProcess("acr_ros.hands_node", params, tmp, name=f"bench_{backend}")
    probe = Probe("latency_probe")
    answers: list[float] = []
    probe.node.create_subscription(Hands, f"/bench_{backend}/hands", lambda m: answers.append(
        time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)), 10)
    publisher = probe.publisher(Image, "/bench/image_raw", RELIABLE)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    try:
        probe.wait_for_subscribers(publisher, timeout=120, process=process)
        for index in range(warmup):  # one at a time
            count = len(answers)
            now = time.time()
            publisher.publish(image_msg(image, stamp=(int(now), int((now % 1) * 1e9))))
            assert probe.spin_until(lambda: len(answers) > count, 120, process), process.log()
        start = time.monotonic()
        for index in range(frames):
            count = len(answers)
            now = time.time()
            publisher.publish(image_msg(image, stamp=(int(now), int((now % 1) * 1e9))))
            if rate:  # the camera's clock: frame i+1 at start + (i+1) / rate, answers taken meanwhile
                while (left := start + (index + 1) / rate - time.monotonic()) > 0:
                    probe.executor.spin_once(timeout_sec=min(left, 0.002))
            else:
                assert probe.spin_until(lambda: len(answers) > count, 120, process), process.log()
        probe.spin_until(lambda: len(answers) >= frames + warmup, 10, process)  # the last answers of a camera
        seen = len(diagnostics)
        assert probe.spin_until(lambda: len(diagnostics) > seen, 10, process)  # a report after the last frame
        reports = [status for array in diagnostics for status in array.status
                   if status.name.startswith(f"bench_{backend}:")]
    finally:
        process.stop()
        probe.close()
    values = {kv.key: kv.value for kv in reports[-1].values}
    return answers[warmup:], {stage: values[f"{stage} p50 (ms)"] for stage in STAGES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=["mediapipe", "acr"])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080"])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rate", type=float, default=0.0, help="publish at this rate (Hz) instead of one at a time")
    parser.add_argument("--precision", default="auto", help="the node's precision parameter")
    parser.add_argument("--warmup", type=int, default=3, help="frames sent one at a time before the measured ones")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"device {args.device}, {f'published at {args.rate:g} Hz' if args.rate else 'one frame at a time'}")
    rows = []
    print("| backend | input | frames | latency p50 (ms) | p95 (ms) | conversion / inference / publish p50 (ms) |\n"
          "|---|---|---|---|---|---|")
    for backend in args.backend:
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            with tempfile.TemporaryDirectory() as tmp:
                latencies, stages = measure(backend, (width, height), args.frames, args.device, Path(tmp), args.rate,
                                            args.precision, args.warmup)
            latencies = np.array(latencies) * 1e3
            rows.append({"backend": backend, "input": size, "sent": args.frames, "answered": len(latencies),
                         "p50 ms": float(np.percentile(latencies, 50)), "p95 ms": float(np.percentile(latencies, 95)),
                         **{f"{stage} p50 ms": stages[stage] for stage in STAGES}})
            print(f"| {backend} | {size} | {len(latencies)} | {rows[-1]['p50 ms']:.1f} | "
                  f"{rows[-1]['p95 ms']:.1f} | {' / '.join(stages[stage] for stage in STAGES)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
