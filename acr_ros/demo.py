"""The README's main command: the real ROS 2 graph on the bundled sample media.

    acr_ros_demo [-o OUTPUT_DIR] [--backend auto|acr|mediapipe] [--checkpoint wild.pkl --mano-dir DIR]

Starts the hands node as its own process and, in this one, plays each sample (a clip and still
photos) through an image source node publishing Image + CameraInfo over DDS; records what the node
publishes (overlays, `<name>_output.mp4` for the clip, a JSON summary per sample) and prints where
it went. Equivalent on a ROS 2 install:
`ros2 launch acr_ros hands.launch.py source:=video input:=<clip> rviz:=true`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from acr_ros.backends import BACKENDS
from acr_ros.media import VIDEO_SUFFIXES, VideoSource, sample_inputs

CAMERA_NAMESPACE = "/demo_camera"  # the source publishes image_raw and camera_info in it


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output-dir", default="acr_ros_demo_output", type=Path)
    parser.add_argument("--inputs", nargs="*", type=Path,
                        help="media to play (default: the bundled samples)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--checkpoint", default="", help="ACR checkpoint wild.pkl")
    parser.add_argument("--mano-dir", default="", help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rate", type=float, default=2.0, help="frames per second for still images")
    return parser.parse_args(argv)


def start(module: str, params: dict, log_path: Path, name: str) -> subprocess.Popen:
    params_file = log_path.with_suffix(".yaml")
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}", "--params-file", str(params_file)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


class Interrupted(Exception):
    """SIGINT or SIGTERM: the demo stops its nodes and ends early."""


def spin_until(executor, predicate, timeout: float, stop) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        if stop.requested:
            raise Interrupted
        executor.spin_once(timeout_sec=0.1)
    return predicate()


def play(executor, media: Path, args, stop) -> dict:
    """Publishes one input through the graph and records the node's output; returns its summary."""
    from rclpy.parameter import Parameter

    from acr_ros.hands_recorder import HandsRecorder
    from acr_ros.image_source import ImageSource

    video = media.suffix.lower() in VIDEO_SUFFIXES
    recording = [Parameter("output_dir", value=str(args.output_dir)), Parameter("name", value=media.stem),
                 Parameter("video", value=video)]
    if video:  # the mp4 plays at the clip's own rate
        clip = VideoSource(media)
        recording.append(Parameter("fps", value=float(clip.fps)))
        clip.close()
    recorder = HandsRecorder(
        parameter_overrides=recording,
        cli_args=["--ros-args", "-r", "hands:=/acr_hands/hands", "-r", "overlay:=/acr_hands/overlay"])
    executor.add_node(recorder)
    assert spin_until(executor, lambda: recorder.hands_subscription.get_publisher_count() > 0
                      and recorder.overlay_subscription.get_publisher_count() > 0, 30, stop), \
        "the recorder did not match the hands node's publishers"
    source = ImageSource(stop=stop, namespace=CAMERA_NAMESPACE, parameter_overrides=[
        Parameter(name, value=value) for name, value in {
            "source": "video" if video else "image", "input": str(media), "loop": False,
            "rate": 0.0 if video else args.rate, "repeat": 1 if video else 3,
            "frame_id": "demo_camera_optical_frame", "wait_for_subscribers": 1, "reliable": True,
        }.items()])

    # The source paces its frames in a thread of its own while this one records what comes back.
    try:
        with ThreadPoolExecutor(1) as thread:
            playing = thread.submit(source.run)
            spin_until(executor, playing.done, 600, stop)
        playing.result()  # raises what stopped the source (e.g. unreadable media)
        if stop.requested:  # the source ended early for it
            raise Interrupted
        if source.last_stamp is not None:
            # The newest frame is never dropped (older ones may be, newest wins): once its hands are
            # in, so are all the others' (one ordered topic), and only their overlays can trail. The
            # source lives until then: its reliable writer resends what was lost on the way (a flush
            # would wait for the writer's next heartbeat instead, up to 3 s an input).
            last = source.last_stamp.sec + source.last_stamp.nanosec * 1e-9  # as the recorder keeps it
            if not spin_until(executor, lambda: any(frame["stamp"] == last for frame in recorder.summaries),
                              120, stop):
                print(f"acr_ros_demo: {media.name}: the hands of its last frame did not come back within 120 s; "
                      f"the results have {len(recorder.summaries)} frame(s)", file=sys.stderr)
            spin_until(executor, lambda: recorder.overlays_written >= len(recorder.summaries), 5, stop)
    finally:
        source.destroy_node()
    path = recorder.finish()
    executor.remove_node(recorder)
    recorder.destroy_node()
    return json.loads(path.read_text()) | {"summary_file": str(path)}


def describe(name: str, summary: dict) -> str:
    frames = summary["frames"]
    found = [frame["hands"] for frame in frames if frame["hands"]]
    sides = sorted({hand["side"] for hands in found for hand in hands})
    best = max((hand["score"] for hands in found for hand in hands), default=0.0)
    return (f"  {name}: {len(frames)} frames out, {len(found)} with hands"
            + (f" ({', '.join(sides)}; best score {best:.2f})" if found else ""))


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    inputs = args.inputs or sample_inputs()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logs = args.output_dir / "logs"
    logs.mkdir(exist_ok=True)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from acr_ros.ros_runtime import start_ros

    stop = start_ros("acr_ros_demo", [])
    if stop is None:
        return 1
    executor = SingleThreadedExecutor()
    probe = rclpy.create_node("acr_ros_demo")
    executor.add_node(probe)
    reports = []  # the node's /diagnostics: it is up once it reports
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: reports.extend(
        status for status in msg.status if status.name.startswith("acr_hands")), 10)
    node = start("acr_ros.hands_node", {
        "backend": args.backend, "checkpoint": args.checkpoint, "mano_dir": args.mano_dir,
        "device": args.device, "image_topics": [f"{CAMERA_NAMESPACE}/image_raw"], "qos_reliability": "reliable",
    }, logs / "hands_node.log", "acr_hands")
    summaries = {}
    try:
        if not spin_until(executor, lambda: node.poll() is not None or bool(reports), 300, stop):
            raise RuntimeError("the hands node did not come up")
        if node.poll() is not None:
            print((logs / "hands_node.log").read_text(), file=sys.stderr)
            return 1
        for media in inputs:
            print(f"playing {media.name} ...", flush=True)
            summaries[media.name] = play(executor, media, args, stop)
    except Interrupted:
        print(f"acr_ros_demo: stopped by {stop.name}; outputs so far in {args.output_dir.resolve()}", file=sys.stderr)
        return 128 + stop.signal  # the shell's convention for a program ended by a signal
    finally:
        stop_process(node)
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    backend_line = next((line for line in (logs / "hands_node.log").read_text().splitlines()
                         if "hand backend:" in line), "")
    report = {"backend": backend_line.split("hand backend:", 1)[-1].strip(), "inputs": summaries}
    (args.output_dir / "summary.json").write_text(json.dumps(report, indent=1))
    print(f"\nhand backend: {report['backend']}")
    for name, summary in summaries.items():
        print(describe(name, summary))
    print(f"\noutputs (overlays, <name>_output.mp4, <name>_summary.json, logs): {args.output_dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
