"""The faults of the real graph that the reliability test and benchmarks/chaos.py inflict: a camera
driver (image_source as its own process) that is killed and started again, and subscribers of the
hands node's outputs as their own processes, connecting and disconnecting or never reading.

    python test/support/graph_faults.py churn --node acr_hands --count 50 --seconds 60
    python test/support/graph_faults.py slow --node acr_hands
    python test/support/graph_faults.py steady --node acr_hands

`churn`: `count` subscribers, each a participant of its own (as a tool started and closed), to the
node's ~/hands, ~/markers and ~/overlay in turn, reliable or best effort, each living a random part
of `seconds`; it prints one JSON line (subscribers made, messages read) when done.
`slow`: one reliable subscriber to each of the three that never reads (its executor never spins),
until stopped; `steady`: the same, reading (a visualisation tool left open).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/, for `support` when run as a script
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from support.processes import LoggedProcess  # noqa: E402
from support.ros_harness import MEDIA, REPO, NodeProcess  # noqa: E402

OUTPUTS = ("hands", "markers", "overlay")


class CameraDriver(NodeProcess):
    """image_source publishing a photo at `rate` Hz with its CameraInfo (focal length fx) on
    <namespace>/image_raw and <namespace>/camera_info, as the node named `camera` each time it starts
    (a restarted driver). width: the photo resized to that width first (another resolution)."""

    def __init__(self, namespace: str, tmp_path: Path, reliable: bool, fx: float, rate: float = 30.0,
                 width: int | None = None, photo: Path = MEDIA / "magic.jpg"):
        tmp_path.mkdir(parents=True, exist_ok=True)
        if width is not None:
            image = cv2.imread(str(photo))
            photo = tmp_path / f"{photo.stem}_{width}.png"
            cv2.imwrite(str(photo), cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1]))))
        params = dict(input=str(photo), rate=float(rate), reliable=reliable, fx=float(fx))
        super().__init__("acr_ros.image_source", params, tmp_path, name="camera",
                         remaps={"image_raw": f"{namespace}/image_raw", "camera_info": f"{namespace}/camera_info"})

    def first_stamp(self, timeout: float = 60.0) -> float:
        """The stamp (s) of the driver's first frame, as it logs it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"the first stamped (\d+)\.(\d+)", self.log())
            if found:
                return int(found.group(1)) + int(found.group(2)) * 1e-9
            assert self.alive(), f"the camera driver exited:\n{self.log()}"
            time.sleep(0.02)
        raise AssertionError(f"the camera driver published nothing in {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: a crash. Its writers stay in discovery until their lease ends."""
        self.stop(signal.SIGKILL)


class Subscribers(LoggedProcess):
    """This script as its own process (`churn`, `slow` or `steady`)."""

    def __init__(self, mode: str, node: str, tmp_path: Path, *options: str):
        self.mode = mode
        super().__init__([sys.executable, __file__, mode, "--node", node, *options], tmp_path / f"{mode}.log",
                         cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def stop(self, timeout: float = 30.0) -> dict:
        """Stops it (churn: waits for its end) and returns what it printed last as JSON ({} if nothing)."""
        if self.process.poll() is None:
            if self.mode != "churn":  # the others run until stopped
                self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout)
        lines = [line for line in self.log().splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def _types():
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    from acr_ros.msg import Hands
    return {"hands": Hands, "markers": MarkerArray, "overlay": Image}


def churn(node: str, count: int, seconds: float, seed: int = 0) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    types, rng = _types(), random.Random(seed)
    plan = sorted((rng.uniform(0, 0.8 * seconds), i) for i in range(count))  # (start, index)
    live: list[tuple[float, rclpy.Context, SingleThreadedExecutor, object]] = []
    read = {name: 0 for name in OUTPUTS}
    made = 0
    print("churning", flush=True)  # from here on: the process's own start-up is over
    start = time.monotonic()

    def close(entry):
        _, context, executor, ros_node = entry
        executor.shutdown()
        ros_node.destroy_node()
        rclpy.shutdown(context=context)

    while plan or live:
        now = time.monotonic() - start
        while plan and plan[0][0] <= now:
            _, index = plan.pop(0)
            output = OUTPUTS[index % 3]
            context = rclpy.Context()
            rclpy.init(context=context)
            ros_node = rclpy.create_node(f"churn_{index}", context=context)
            reliability = ReliabilityPolicy.RELIABLE if index % 2 else ReliabilityPolicy.BEST_EFFORT
            ros_node.create_subscription(types[output], f"/{node}/{output}",
                                         lambda _msg, output=output: read.__setitem__(output, read[output] + 1),
                                         QoSProfile(depth=rng.randint(1, 10), reliability=reliability))
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(ros_node)
            live.append((now + rng.uniform(1.0, 0.3 * seconds), context, executor, ros_node))
            made += 1
        for entry in [entry for entry in live if entry[0] <= now or not plan and now > seconds]:
            live.remove(entry)
            close(entry)
        for _, _, executor, _ in live:
            executor.spin_once(timeout_sec=0.005)
        if not live:
            time.sleep(0.02)
    return {"subscribers": made, "read": read}


def readers(node: str, read: bool) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from acr_ros.ros_runtime import start_ros

    stop = start_ros("readers", [])
    ros_node = rclpy.create_node("steady_reader" if read else "slow_reader")
    for output, msg_type in _types().items():
        ros_node.create_subscription(msg_type, f"/{node}/{output}", lambda _msg: None,
                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    print("subscribed, " + ("reading" if read else "never reading"), flush=True)
    while not stop.requested:
        if read:
            rclpy.spin_once(ros_node, timeout_sec=0.1)
        else:
            stop.wait(0.5)
    ros_node.destroy_node()
    rclpy.try_shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("churn", "slow", "steady"))
    parser.add_argument("--node", default="acr_hands")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if args.mode in ("slow", "steady"):
        readers(args.node, read=args.mode == "steady")
    else:
        import rclpy

        rclpy.init()  # the default context, for rclpy's logging; every subscriber has its own
        print(json.dumps(churn(args.node, args.count, args.seconds)), flush=True)
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
