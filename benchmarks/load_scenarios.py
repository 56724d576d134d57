"""The hands node under load and at rest, as its own process over DDS (docs/reliability.md, "Load and
idle"): a long soak through `ros2 launch`, CPU starvation while a camera plays, and what the node
costs its neighbours while idle.

    python benchmarks/load_scenarios.py --scenario soak --minutes 30       # ros2 launch, the clip at 30 Hz
    python benchmarks/load_scenarios.py --scenario starvation --seconds 60 # two CPU burners beside a 30 Hz camera
    python benchmarks/load_scenarios.py --scenario neighbour               # idle CPU, a neighbour's throughput

Each scenario is a function returning its figures as a dict (printed as JSON; --json also writes
them): soak_through_launch, starvation, good_neighbour. test/test_load.py runs short versions of
the last two in CI.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the ROS test helpers
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from support import process_stats  # noqa: E402
from support.load import (accounted, answer_frames, camera_frame, counters, cpu_burners, idle_cpu,  # noqa: E402
                          starvation)
from support.ros_harness import RELIABLE, NodeProcess, Probe, image_msg  # noqa: E402


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return f"{model}, {os.cpu_count()} cores"


def percentile_ms(values, q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if len(values) else float("nan")


# ---- 8: the soak through ros2 launch -----------------------------------------------------------------

def soak_through_launch(seconds: float, warmup: float = 60.0, rate: float = 30.0, sample_every: float = 10.0) -> dict:
    """`ros2 launch acr_ros hands.launch.py source:=video` with the bundled clip looping at `rate`
    (MediaPipe), watched from another process: the hands node's memory, threads and open files every
    `sample_every` s, the stamp-to-Hands latency of every answer; at the end the node is deactivated
    (its unprocessed frames are then counted) and its counters must account for every frame."""
    from diagnostic_msgs.msg import DiagnosticArray

    from acr_ros.media import SAMPLES_DIR
    from acr_ros.msg import Hands
    from support.colcon import build_workspace
    from support.launch import Launch
    from support.lifecycle import LifecycleClient

    tmp = Path(tempfile.mkdtemp(prefix="acr_soak_launch_"))
    workspace = build_workspace(tmp / "ws")
    running = Launch(workspace, tmp / "launch.log", "backend:=mediapipe", "source:=video",
                     f"input:={SAMPLES_DIR / 'magic_clip.mp4'}", f"rate:={rate}",
                     "image:=/soak/image_raw", "camera_info:=/soak/camera_info")
    probe = Probe("soak_launch_probe")
    answers: list[tuple[float, float]] = []  # (receive time, stamp-to-receive latency)
    probe.node.create_subscription(Hands, "/acr_hands/hands", lambda m: answers.append(
        (time.time(), time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))), 100)
    reports: list[tuple[float, dict]] = []
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: reports.extend(
        (time.monotonic(), {kv.key: kv.value for kv in status.values}) for status in m.status
        if status.name.startswith("acr_hands")), 10)
    samples: list[dict] = []
    try:
        assert running.wait_for_output("active: subscribed to", 180), running.log()
        pid = int(re.search(r"\[hands_node-1\]: process started with pid \[(\d+)\]", running.log()).group(1))
        assert probe.spin_until(lambda: bool(answers), 60), running.log()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            samples.append({"t": time.monotonic() - start, "rss": process_stats.rss_bytes(pid),
                            "threads": process_stats.thread_count(pid), "fds": process_stats.open_fds(pid),
                            "cpu": process_stats.cpu_seconds(pid), "load": os.getloadavg()[0]})
            assert running.alive(), running.log()[-4000:]
            probe.spin_until(lambda: False, min(sample_every, seconds - (time.monotonic() - start)))
        t_end = time.time()
        lifecycle = LifecycleClient(probe, "acr_hands")
        lifecycle.wait_for_services(timeout=30)
        assert lifecycle.change("deactivate"), running.log()[-4000:]
        deactivated = time.monotonic()
        assert probe.spin_until(lambda: reports and reports[-1][0] > deactivated + 0.5, 30), "no report after it"
        final = counters(reports[-1][1])
        running.ctrl_c()
        code = running.wait(60)
    finally:
        probe.close()
        running.kill()
    log = running.log()
    t0 = t_end - seconds
    measured = [latency for received, latency in answers if t0 + warmup <= received <= t_end]
    third = max(1, len(measured) // 3)
    steady = [s for s in samples if s["t"] >= warmup]
    first, last = steady[0], steady[-1]
    shutdown = re.findall(r"shut down in ([0-9.]+) s", log)
    return {
        "scenario": "soak", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "seconds": seconds, "warmup_s": warmup, "rate_hz": rate, "backend": "mediapipe",
        "counters": final, "accounted": accounted(final), "hands_messages": len(answers),
        "rss_after_warmup_mb": first["rss"] / 2**20, "rss_end_mb": last["rss"] / 2**20,
        "rss_max_mb": max(s["rss"] for s in steady) / 2**20, "rss_growth": last["rss"] / first["rss"] - 1.0,
        "threads": sorted({s["threads"] for s in steady}), "fds": sorted({s["fds"] for s in steady}),
        "cpu_percent_of_a_core": 100.0 * (last["cpu"] - first["cpu"]) / max(1e-9, last["t"] - first["t"]),
        # the machine's 1-minute load average over the run (other work shares the cores)
        "load_average_min_median_max": [float(f([s["load"] for s in steady])) for f in (np.min, np.median, np.max)],
        "latency_p50_ms": percentile_ms(measured, 50), "latency_p95_ms": percentile_ms(measured, 95),
        "latency_p95_first_third_ms": percentile_ms(measured[:third], 95),
        "latency_p95_last_third_ms": percentile_ms(measured[-third:], 95),
        "latency_p95_drift": percentile_ms(measured[-third:], 95) / percentile_ms(measured[:third], 95) - 1.0,
        "launch_exit_code": code, "node_shutdown_s": float(shutdown[-1]) if shutdown else None,
        "failure_signs": running.failure_signs(), "log": str(tmp / "launch.log"),
    }


# ---- 4: starvation ----------------------------------------------------------------------------------

def starved(seconds: float, burners: int = 2) -> dict:
    """10 s with the 30 Hz camera alone, `seconds` beside `burners` CPU-bound processes, 10 s after."""
    with tempfile.TemporaryDirectory() as tmp:
        result = starvation(Path(tmp), 10.0, seconds, 10.0, burners=burners)
    return {"scenario": "starvation", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), **result}


# ---- 5: a good neighbour ----------------------------------------------------------------------------

def acr_params(tmp: Path, name: str) -> dict:
    """The ACR backend (torch, fp32 on the CPU) on random weights in the official layout and synthetic
    MANO: the real model's cost, not hand reconstructions."""
    from support.random_weights import write_random_checkpoint
    from support.synthetic_mano import write_synthetic_mano

    checkpoint, mano = tmp / "wild.pkl", tmp / "mano"
    if not checkpoint.exists():
        write_random_checkpoint(checkpoint, detect="both")
        write_synthetic_mano(mano)
    return dict(backend="acr", checkpoint=str(checkpoint), mano_dir=str(mano), device="cpu", precision="fp32",
                image_topics=[f"/{name}/image_raw"])


# The node's environment as a user's shell gives it (no policy of the test suite's), and libgomp's
# own default spin (3 ms after every parallel region) for the node as it was before
# passive_openmp_waits.
NODE_ENV = {name: value for name, value in os.environ.items() if name != "OMP_WAIT_POLICY"}
SPINNING = {"passive (the node's default)": NODE_ENV, "spinning (libgomp's default)": dict(NODE_ENV,
                                                                                            GOMP_SPINCOUNT="300000")}


def good_neighbour(seconds: float = 20.0, rate: float = 2.0, rounds: int = 2, burners: int = 2) -> dict:
    """What the node costs other processes: its CPU use while active without frames (ACR on torch and
    MediaPipe) and between frames, then the work of `burners` CPU-bound neighbours over `seconds`
    without the node, and beside the ACR node answering a camera at `rate`, its OpenMP threads
    passive or spinning; `rounds` times, interleaved."""
    from sensor_msgs.msg import Image

    from acr_ros.msg import Hands

    frame = camera_frame()
    result: dict = {"scenario": "neighbour", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": machine(), "idle_cpu_percent": {}, "neighbour_rounds": {}, "node_latency_p50_ms": {}}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for backend in ("acr", "mediapipe"):
            name = f"idle_{backend}"
            params = acr_params(tmp, name) if backend == "acr" else dict(backend="mediapipe",
                                                                         image_topics=[f"/{name}/image_raw"])
            process, probe = NodeProcess("acr_ros.hands_node", params, tmp, name, env=NODE_ENV), Probe(f"{name}_probe")
            try:
                answers = probe.record(Hands, f"/{name}/hands")
                publisher = probe.publisher(Image, f"/{name}/image_raw", RELIABLE)
                probe.wait_for_subscribers(publisher, 300, process)
                probe.spin_until(lambda: False, 3.0)  # start-up done
                result["idle_cpu_percent"][f"{backend}, no frames yet"] = idle_cpu(process.process.pid, 10.0)
                answer_frames(probe, publisher, answers, 3, process)
                probe.spin_until(lambda: False, 1.0)
                result["idle_cpu_percent"][f"{backend}, after 3 frames"] = idle_cpu(process.process.pid, 10.0)
            finally:
                process.stop()
                probe.close()
        for round_ in range(rounds):
            with cpu_burners(burners, seconds) as burned:
                result["neighbour_rounds"].setdefault("no node", []).append(sum(burned()))
            for label, env in SPINNING.items():
                name = f"neighbour_{round_}_{len(result['neighbour_rounds'])}"
                process = NodeProcess("acr_ros.hands_node", acr_params(tmp, name), tmp, name, env=env)
                probe = Probe(f"{name}_probe")
                latencies: list[float] = []
                probe.node.create_subscription(Hands, f"/{name}/hands", lambda m: latencies.append(
                    time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)), 10)
                publisher = probe.publisher(Image, f"/{name}/image_raw")
                try:
                    probe.wait_for_subscribers(publisher, 300, process)
                    probe.spin_until(lambda: False, 3.0)
                    with cpu_burners(burners, seconds) as burned:
                        start, sent = time.time(), 0
                        while time.time() - start < seconds:
                            now = time.time()
                            publisher.publish(image_msg(frame, stamp=(int(now), int((now % 1) * 1e9))))
                            sent += 1
                            probe.spin_until(lambda: time.time() >= start + sent / rate, seconds, process)
                        result["neighbour_rounds"].setdefault(label, []).append(sum(burned()))
                    result["node_latency_p50_ms"].setdefault(label, []).append(
                        float(np.median(latencies)) * 1e3 if latencies else None)
                finally:
                    process.stop()
                    probe.close()
    baseline = np.mean(result["neighbour_rounds"]["no node"])
    result["neighbour_work_vs_no_node"] = {label: float(np.mean(values) / baseline)
                                           for label, values in result["neighbour_rounds"].items()}
    result.update(seconds=seconds, rate_hz=rate, burners=burners)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["soak", "starvation", "neighbour"], required=True)
    parser.add_argument("--minutes", type=float, default=30.0, help="soak: how long")
    parser.add_argument("--seconds", type=float, help="starvation: how long the load lasts (60); neighbour: "
                        "how long the neighbours work per run (20)")
    parser.add_argument("--rate", type=float, default=2.0, help="neighbour: the camera's rate to the ACR node")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    if args.scenario == "soak":
        result = soak_through_launch(args.minutes * 60, warmup=min(60.0, args.minutes * 60 / 5))
    elif args.scenario == "starvation":
        result = starved(args.seconds or 60.0)
    else:
        result = good_neighbour(args.seconds or 20.0, args.rate)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
