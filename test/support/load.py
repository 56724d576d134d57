"""The hands node beside CPU-bound neighbours, as its own process over DDS: what it costs them while
idle, and how it holds a 30 Hz camera while they starve it (test_load.py runs short versions;
benchmarks/load_scenarios.py the long ones, with the figures in docs/reliability.md)."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from support import process_stats
from support.ros_harness import REPO, NodeProcess, Probe, image_msg

# A CPU-bound process (plain Python arithmetic: no OpenMP, no I/O) that works for argv[1] seconds
# and prints how many rounds it did.
BURNER = """
import sys, time
end, rounds = time.monotonic() + float(sys.argv[1]), 0
while time.monotonic() < end:
    sum(i * i for i in range(2000))
    rounds += 1
print(rounds)
"""


@contextmanager
def cpu_burners(count: int, seconds: float):
    """`count` CPU-bound processes, each working `seconds`; yields a function that waits for them and
    returns the rounds each did (more rounds: the node left them more of the CPU)."""
    burners = [subprocess.Popen([sys.executable, "-c", BURNER, str(seconds)], stdout=subprocess.PIPE, text=True)
               for _ in range(count)]

    def rounds() -> list[int]:
        return [int(burner.communicate(timeout=seconds + 60)[0]) for burner in burners]
    try:
        yield rounds
    finally:
        for burner in burners:
            if burner.poll() is None:
                burner.kill()
                burner.wait()


def idle_cpu(pid: int, seconds: float) -> float:
    """The process's CPU use over `seconds`, in % of one core (its own CPU time: another process's
    load does not inflate it)."""
    before, start = process_stats.cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (process_stats.cpu_seconds(pid) - before) / (time.monotonic() - start)


def counters(values: dict[str, str]) -> dict[str, int]:
    """The node's frame counters from one /diagnostics report."""
    names = {"received": "frames received", "published": "frames published", "dropped": "frames dropped",
             "bad_input": "bad input frames", "inference_errors": "inference errors",
             "internal_errors": "internal errors"}
    return {name: int(values[key]) for name, key in names.items()}


def accounted(count: dict[str, int]) -> bool:
    """Every frame the node received is published, dropped or refused (bad input, errors)."""
    return count["received"] == sum(value for name, value in count.items() if name != "received")


def camera_frame() -> np.ndarray:
    """The bundled photo at 640x480."""
    return cv2.resize(cv2.imread(str(REPO / "acr_ros" / "data" / "samples" / "magic.jpg")), (640, 480))


def answer_frames(probe: Probe, publisher, answers: list, count: int, process: NodeProcess,
                  timeout: float = 120.0) -> None:
    """`count` frames answered one after another (each sent again every 5 s until its answer: the
    first frames can be lost while the node's subscription is matched or re-chosen)."""
    deadline = time.monotonic() + timeout
    for index in range(count):
        while True:
            publisher.publish(image_msg(camera_frame(), stamp=(1700000000 + index, 0)))
            if probe.spin_until(lambda: len(answers) > index, 5.0, process):
                break
            assert time.monotonic() < deadline, f"frame {index} unanswered after {timeout} s:\n{process.log()}"


def starvation(tmp: Path, unloaded_s: float, loaded_s: float, after_s: float, burners: int = 2, rate: float = 30.0,
               idle_s: float = 0.0, backend: str = "mediapipe", name: str = "starved_hands") -> dict:
    """A camera at `rate` (640x480, best effort like a camera driver) to the node: `unloaded_s`, then
    `loaded_s` beside `burners` CPU-bound processes, then `after_s` without them. Before the camera
    starts, the active node's CPU use over `idle_s` (0: not measured). Returns the stamp-to-Hands
    latencies per phase, the time until they are back after the load, memory and the node's counters."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from acr_ros.msg import Hands

    frame = camera_frame()
    process = NodeProcess("acr_ros.hands_node", dict(backend=backend, image_topics=[f"/{name}/image_raw"]), tmp, name)
    probe = Probe(f"{name}_probe")
    answers: list[tuple[float, float]] = []  # (receive time, stamp-to-receive latency), time.time()
    probe.node.create_subscription(Hands, f"/{name}/hands", lambda m: answers.append(
        (time.time(), time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))), 100)
    reports: list[tuple[float, dict]] = []  # (receive time, values) of the node's /diagnostics
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: reports.extend(
        (time.monotonic(), {kv.key: kv.value for kv in status.values}) for status in m.status
        if status.name.startswith(f"{name}:")), 10)
    publisher = probe.publisher(Image, f"/{name}/image_raw")
    pid = process.process.pid
    try:
        probe.wait_for_subscribers(publisher, timeout=120, process=process)
        assert probe.spin_until(lambda: bool(reports), 60, process), process.log()  # configured and reporting
        idle = idle_cpu(pid, idle_s) if idle_s else None
        start = time.time()
        phases = {"unloaded": start + unloaded_s, "loaded": start + unloaded_s + loaded_s,
                  "after": start + unloaded_s + loaded_s + after_s}
        memory: list[tuple[float, int]] = []
        sent = 0

        def play(until: float) -> None:
            nonlocal sent
            while time.time() < until:
                now = time.time()
                publisher.publish(image_msg(frame, stamp=(int(now), int((now % 1) * 1e9))))
                sent += 1
                if not memory or now - memory[-1][0] >= 0.5:
                    memory.append((now, process_stats.rss_bytes(pid)))
                next_frame = start + sent / rate
                probe.spin_until(lambda: time.time() >= next_frame, max(0.0, next_frame - time.time()), process)

        play(phases["unloaded"])
        with cpu_burners(burners, loaded_s) as burned:
            play(phases["loaded"])
            rounds = burned()
        play(phases["after"])
        sent_until = time.monotonic()
        # Until a report after the last frame accounts for every frame received, and its hands are in.
        probe.spin_until(lambda: reports[-1][0] > sent_until + 1.0 and accounted(counters(reports[-1][1]))
                         and len(answers) >= counters(reports[-1][1])["published"], 30.0, process)
        final = counters(reports[-1][1])
    finally:
        code = process.stop()
        probe.close()

    def latencies(begin: float, end: float) -> np.ndarray:
        return np.array([latency for received, latency in answers if begin <= received < end]) * 1e3

    unloaded = latencies(start + 1.0, phases["unloaded"])  # after a 1 s warm-up
    loaded = latencies(phases["unloaded"], phases["loaded"])
    unloaded_p95 = float(np.percentile(unloaded, 95))
    # Back to unloaded: the first answer after the load from which the median of every 5 answers in
    # a row stays within the unloaded p95.
    after = [(received, latency * 1e3) for received, latency in answers if received >= phases["loaded"]]
    back = next((received - phases["loaded"] for index, (received, _) in enumerate(after)
                 if all(np.median([lat for _, lat in after[j:j + 5]]) <= unloaded_p95
                        for j in range(index, max(index + 1, len(after) - 4)))), None)
    rss = lambda begin, end: [value for t, value in memory if begin <= t < end]  # noqa: E731
    return {
        "rate_hz": rate, "burners": burners, "backend": backend, "seconds": [unloaded_s, loaded_s, after_s],
        "idle_cpu_percent": idle, "frames_sent": sent, "hands_messages": len(answers), "counters": final,
        "accounted": accounted(final), "burner_rounds": rounds,
        **{f"{phase}_latency_p{q}_ms": float(np.percentile(values, q)) if len(values) else float("nan")
           for phase, values in (("unloaded", unloaded), ("loaded", loaded),
                                 ("after", latencies(phases["loaded"] + 2.0, phases["after"])))
           for q in (50, 95)},
        "answers_per_s": {phase: len(values) / seconds for phase, values, seconds in (
            ("unloaded", unloaded, unloaded_s - 1.0), ("loaded", loaded, loaded_s))},
        "latency_back_after_s": back,
        "rss_unloaded_mb": max(rss(start, phases["unloaded"])) / 2**20,
        "rss_loaded_max_mb": max(rss(phases["unloaded"], phases["loaded"])) / 2**20,
        "rss_end_mb": memory[-1][1] / 2**20,
        "exit_code": code,
    }
