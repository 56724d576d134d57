"""The chaos run: the real graph through the faults a robot meets, with figures (docs/reliability.md,
"Chaos run").

    python benchmarks/chaos.py [--scenario restarts churn starvation neighbour] [--backend mediapipe|acr]

The hands node runs as its own process (MediaPipe, or ACR with random weights in the official layout
and synthetic MANO files: the real model's cost, not hand reconstructions), fed by image_source as a
camera driver of its own (a real photo at 30 Hz with its CameraInfo, reliable), and a probe in this
process measures what comes out. Each scenario is a function in SCENARIOS taking the graph and the
arguments and returning its figures; `--scenario` picks some (default: all).

restarts: the driver is killed with SIGKILL mid-stream and started again 3 s later, in turn reliable at
  960x540, reliable again, and best effort at 640x360 with another calibration; per restart, the time
  from the driver's first frame to the first Hands of its frames, split into what the transport lost
  (frames published before the driver's writer matched the node) and the node's own part; QoS, size,
  intrinsics, tracks and /diagnostics after each.
churn: 50 subscribers to ~/hands, ~/markers and ~/overlay connecting and disconnecting over 60 s, and a
  reliable one that never reads, against the same graph before and after them (a steady subscriber to
  each output, reading, is there throughout, so that the overlay is drawn in every phase): output rate
  and stamp-to-Hands latency p95.
starvation, neighbour: benchmarks/load_scenarios.py's, with nodes of their own (MediaPipe; ACR with
  random weights): two CPU burners beside a 30 Hz camera; the idle node's CPU and what it costs
  CPU-bound neighbours. The 30-minute soak through `ros2 launch` stays there
  (`load_scenarios.py --scenario soak`).
"""
from __future__ import annotations

import argparse
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

from support.graph_faults import CameraDriver, Subscribers  # noqa: E402
from support.ros_harness import NodeProcess, Probe  # noqa: E402

from load_scenarios import good_neighbour, starved  # noqa: E402  (beside this script)

NODE = "chaos_hands"
CAMERA = "/chaos_camera"


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class Graph:
    """The hands node as its own process, and a probe recording its Hands (with their arrival time)
    and /diagnostics."""

    def __init__(self, tmp: Path, backend: str):
        from diagnostic_msgs.msg import DiagnosticArray

        from acr_ros.msg import Hands

        params = dict(backend=backend, image_topics=[f"{CAMERA}/image_raw"], qos_reliability="auto",
                      diagnostics_period=0.5, publish_overlay=True)
        if backend == "acr":
            from support.random_weights import write_random_checkpoint
            from support.synthetic_mano import write_synthetic_mano

            params.update(checkpoint=str(write_random_checkpoint(tmp / "wild.pkl", detect="both")),
                          mano_dir=str(write_synthetic_mano(tmp / "mano")))
        self.tmp = tmp
        self.process = NodeProcess("acr_ros.hands_node", params, tmp, name=NODE)
        self.probe = Probe("chaos_probe")
        self.hands: list[tuple[float, object]] = []  # (arrival, Hands)
        self.probe.node.create_subscription(Hands, f"/{NODE}/hands", lambda m: self.hands.append((time.time(), m)),
                                            100)
        self.diagnostics = self.probe.record(DiagnosticArray, "/diagnostics", 50)
        assert self.probe.spin_until(lambda: self.probe.node.count_publishers(f"/{NODE}/hands") > 0, 180,
                                     self.process), "the node did not start"

    def spin(self, seconds: float) -> None:
        self.probe.spin_until(lambda: False, seconds, self.process)

    def status(self) -> tuple[int, str, dict]:
        """(level, message, values) of the node's latest /diagnostics report."""
        reports = [s for array in self.diagnostics for s in array.status if s.name.startswith(f"{NODE}: ")]
        latest = reports[-1]
        return latest.level, latest.message, {kv.key: kv.value for kv in latest.values}

    def answered(self, since: float, timeout: float = 60.0):
        """(arrival, Hands) of the first frame stamped at or after `since`, or None."""
        newer = lambda: [item for item in self.hands if stamp_s(item[1]) >= since - 1e-6]  # noqa: E731
        self.probe.spin_until(lambda: bool(newer()), timeout, self.process)
        return newer()[0] if newer() else None

    def resubscribed(self, since: float):
        """When (its log's wall-clock time) the node first re-subscribed the camera after `since`, or None."""
        pattern = re.compile(rf"\[INFO\] \[([0-9.]+)\] \[{NODE}\]: {CAMERA}/image_raw: .*re-subscribed")
        for line in self.process.log().splitlines():
            found = pattern.match(line)
            if found and float(found.group(1)) >= since:
                return float(found.group(1))
        return None

    def close(self) -> int:
        self.probe.close()
        return self.process.stop()


def percentiles(values, *qs) -> str:
    return " / ".join(f"{np.percentile(values, q):.2f}" for q in qs) if len(values) else "-"


# ---- scenario 1: driver crash and restart --------------------------------------------------------
RESTART_KINDS = (dict(name="reliable 960x540", reliable=True, fx=700.0, width=None),
                 dict(name="reliable 960x540", reliable=True, fx=700.0, width=None),
                 dict(name="best effort 640x360", reliable=False, fx=450.0, width=640))


def restarts(graph: Graph, args) -> dict:
    from diagnostic_msgs.msg import DiagnosticStatus

    rows = []
    kind = RESTART_KINDS[0]
    driver = CameraDriver(CAMERA, graph.tmp / "driver_0", kind["reliable"], kind["fx"], args.rate, kind["width"])
    assert graph.answered(driver.first_stamp(), timeout=120), driver.log()
    for index in range(1, args.restarts + 1):
        graph.spin(2.0)  # mid-stream
        last_track = max((h.track_id for _, m in graph.hands for h in m.hands), default=0)
        driver.kill()
        graph.spin(3.0)
        previous, kind = kind, RESTART_KINDS[index % len(RESTART_KINDS)]
        topic = f"{CAMERA}/image_raw"
        known = {bytes(p.endpoint_gid) for p in graph.probe.node.get_publishers_info_by_topic(topic)}
        driver = CameraDriver(CAMERA, graph.tmp / f"driver_{index}", kind["reliable"], kind["fx"], args.rate,
                              kind["width"])
        # When this process (idle, not the node) first lists the driver's writer: discovery's own time.
        graph.probe.spin_until(lambda: any(bytes(p.endpoint_gid) not in known
                                           for p in graph.probe.node.get_publishers_info_by_topic(topic)), 30)
        listed = time.time()
        first = driver.first_stamp()
        found = graph.answered(first, timeout=30)
        if found is None:
            rows.append(dict(change=f"{previous['name']} -> {kind['name']}", resumed=None, listed=listed - first))
            continue
        arrival, hands = found
        graph.spin(1.5)  # reports after it
        level, message, values = graph.status()
        width = kind["width"] or 960
        rows.append(dict(
            change=f"{previous['name']} -> {kind['name']}", first=first, listed=listed - first,
            resumed=arrival - first,                 # the driver's first frame to the first Hands
            transport=stamp_s(hands) - first,        # frames before it were lost before the match
            node=arrival - stamp_s(hands),           # its frame through the node
            resubscribed=graph.resubscribed(first - 0.5),
            qos=values[f"input {CAMERA}/image_raw"].split(",")[0],
            size_ok=(hands.image_width, hands.image_height) == (width, width * 9 // 16),
            calibrated=not hands.default_intrinsics,
            new_track=all(h.track_id > last_track for h in hands.hands) if hands.hands else None,
            diagnostics_ok=level == DiagnosticStatus.OK, message=message))
    driver.kill()
    print("| restart | resumed after (s) | frames lost before the match (s) | node (s) | writer listed at the probe "
          "after (s) | re-subscribed after (s) | subscribed | size, calibration | new track | /diagnostics |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row["resumed"] is None:
            print(f"| {row['change']} | not within 30 s | | | | | | | | |")
            continue
        resubscribed = "-" if row["resubscribed"] is None else f"{row['resubscribed'] - row['first']:.2f}"
        print(f"| {row['change']} | {row['resumed']:.2f} | {row['transport']:.2f} | {row['node']:.3f} | "
              f"{row['listed']:.2f} | {resubscribed} | {row['qos']} | "
              f"{'ok' if row['size_ok'] and row['calibrated'] else 'WRONG'} | "
              f"{ {True: 'yes', False: 'NO', None: 'no hand'}[row['new_track']]} | "
              f"{'OK' if row['diagnostics_ok'] else row['message']} |", flush=True)
    resumed = [row["resumed"] for row in rows if row["resumed"] is not None]
    node = [row["node"] for row in rows if row["resumed"] is not None]
    summary = dict(restarts=len(rows), resumed=len(resumed), within_1s=sum(r <= 1.0 for r in resumed),
                   resumed_p50_p90_max=percentiles(resumed, 50, 90, 100),
                   node_p50_p90_max=percentiles(node, 50, 90, 100),
                   writer_listed_p50_p90_max=percentiles([r["listed"] for r in rows if "listed" in r], 50, 90, 100),
                   all_ok=all(row.get("size_ok") and row.get("calibrated") and row.get("diagnostics_ok")
                              and row.get("new_track") is not False for row in rows))
    print(summary, flush=True)
    return summary


# ---- scenario 6: subscriber churn and a slow reader --------------------------------------------
def churn(graph: Graph, args) -> dict:
    """Phases: before (steady subscribers only), churn (+ 50 coming and going, + one never reading),
    after (steady only again); rate and latency per phase, from the probe's Hands."""
    driver = CameraDriver(CAMERA, graph.tmp / "driver_churn", True, 700.0, args.rate)
    steady = Subscribers("steady", NODE, graph.tmp)
    try:
        assert graph.answered(driver.first_stamp(), timeout=120), driver.log()
        graph.spin(5.0)  # the steady subscribers matched, the overlay drawn
        phases = {}

        def measure(name: str, seconds: float):
            """The Hands of the frames stamped in the phase (the output rate, not the delivery's bunching)."""
            start = time.time()
            graph.spin(seconds + 1.0)  # the last frames' Hands arrive
            window = [(arrival, msg) for arrival, msg in graph.hands if start <= stamp_s(msg) < start + seconds]
            latency = np.array([arrival - stamp_s(msg) for arrival, msg in window]) * 1e3
            phases[name] = dict(seconds=seconds, hands=len(window), rate_hz=len(window) / seconds,
                                latency_p50_ms=float(np.percentile(latency, 50)),
                                latency_p95_ms=float(np.percentile(latency, 95)))
            print(name, phases[name], flush=True)

        measure("before", args.churn_seconds / 3)
        # The phase starts once the helper processes have started (a Python process's imports are a
        # second or two of CPU on 2 cores: the machine's load, not the subscribers' effect on the node).
        slow = Subscribers("slow", NODE, graph.tmp)
        graph.probe.spin_until(lambda: "never reading" in slow.log(), 60, graph.process)
        churning = Subscribers("churn", NODE, graph.tmp, "--count", str(args.subscribers),
                               "--seconds", str(args.churn_seconds))
        graph.probe.spin_until(lambda: "churning" in churning.log(), 60, graph.process)
        measure("churn", args.churn_seconds)
        churned = churning.stop(timeout=120)
        slow.stop()
        graph.spin(2.0)  # their exits
        measure("after", args.churn_seconds / 3)
        driver.kill()
        graph.spin(2.0)  # a report after the last frame
        _, _, values = graph.status()
    finally:
        driver.kill()
        steady.stop()
    baseline_rate = (phases["before"]["hands"] + phases["after"]["hands"]) / (phases["before"]["seconds"]
                                                                              + phases["after"]["seconds"])
    baseline_p95 = max(phases["before"]["latency_p95_ms"], phases["after"]["latency_p95_ms"])
    counts = {key: int(values[key]) for key in ("frames received", "frames published", "frames dropped",
                                                "bad input frames", "inference errors", "internal errors")}
    summary = dict(phases=phases, subscribers=churned.get("subscribers"), read_by_churn=churned.get("read"),
                   rate_ratio=phases["churn"]["rate_hz"] / baseline_rate,
                   p95_ratio=phases["churn"]["latency_p95_ms"] / baseline_p95, counters=counts,
                   accounted=counts["frames received"] == sum(v for k, v in counts.items() if k != "frames received"))
    print(summary, flush=True)
    return summary


# ---- scenarios 4 and 5, with nodes of their own (benchmarks/load_scenarios.py) -------------------------
def starvation(graph, args) -> dict:
    """Two CPU burners for --starvation-seconds beside a 30 Hz camera (10 s alone before and after)."""
    summary = starved(args.starvation_seconds)
    print(summary, flush=True)
    return summary


def neighbour(graph, args) -> dict:
    """The idle node's CPU, and CPU-bound neighbours' work beside a node that answers frames."""
    summary = good_neighbour()
    print(summary, flush=True)
    return summary


SCENARIOS = {"restarts": restarts, "churn": churn, "starvation": starvation, "neighbour": neighbour}
ON_THE_GRAPH = {"restarts", "churn"}  # the others start nodes of their own


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--backend", default="mediapipe", choices=("mediapipe", "acr"))
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--restarts", type=int, default=12)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--churn-seconds", type=float, default=60.0)
    parser.add_argument("--starvation-seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    print(f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, backend {args.backend}, camera {args.rate:g} Hz, scenarios {args.scenario}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="acr_chaos_") as tmp:
        graph = Graph(Path(tmp), args.backend) if ON_THE_GRAPH & set(args.scenario) else None
        try:
            for name in args.scenario:
                print(f"\n## {name}", flush=True)
                SCENARIOS[name](graph, args)
        finally:
            code = graph.close() if graph is not None else 0
        if graph is not None:
            print(f"\nthe node exited {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
