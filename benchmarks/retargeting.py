"""Time of one retarget of one hand (acr_ros/retargeting.py), per robot and retargeting type, on this CPU.

    python benchmarks/retargeting.py [--frames 300] [--robots leap allegro ...] [--types vector dexpilot]
                                     [--urdf-dir ../shared/robots/dex-urdf/hands]

Each side of each robot retargets one track of a moving hand: the synthetic open hand, fist and pinch
(test/support/hand_poses.py) blended into one another over 30 frames each, with 2 mm of noise per joint,
stamped at 30 Hz. The first 20 frames of each track are a warm-up and not counted. Per robot and type it
prints p50 / p95 of HandRetargeter.retarget (the whole stage: the hand's wrist frame, the optimisation, the
limits) over both sides' frames, and the time to build the two sides. The target: 3 ms p50 (vector).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from acr_ros.retargeting import ROBOTS, TYPES, HandRetargeter, RetargetSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the synthetic hands
from support.hand_poses import POSES, hand_pose  # noqa: E402

HANDS = Path(__file__).resolve().parents[2] / "shared" / "robots" / "dex-urdf" / "hands"
WARMUP = 20
FRAME_NS = 33_333_333
BLEND_FRAMES = 30


def hand_stream(side: str, frames: int, seed: int) -> list[np.ndarray]:
    """(21, 3) joints of a hand going open -> fist -> pinch -> open ..., with noise."""
    rng = np.random.default_rng(seed)
    poses = [hand_pose(name, side).astype(np.float64) for name in POSES]
    stream = []
    for frame in range(frames):
        leg, step = divmod(frame, BLEND_FRAMES)
        start, end = poses[leg % len(poses)], poses[(leg + 1) % len(poses)]
        stream.append(start + (end - start) * step / BLEND_FRAMES + rng.normal(0, 0.002, (21, 3)))
    return stream


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(robot: str, kind: str, frames: int, urdf_dir: Path) -> tuple[float, np.ndarray]:
    """(build seconds, per-hand retarget seconds after the warm-up, both sides)."""
    tic = time.perf_counter()
    retargeter = HandRetargeter.create(RetargetSettings(robot=robot, type=kind, urdf_dir=str(urdf_dir)))
    build = time.perf_counter() - tic
    seconds = []
    for seed, side in enumerate(retargeter.sides):
        for frame, joints in enumerate(hand_stream(side, frames + WARMUP, seed)):
            tic = time.perf_counter()
            retargeter.retarget(side, joints, frame * FRAME_NS, new_track=frame == 0)
            if frame >= WARMUP:
                seconds.append(time.perf_counter() - tic)
    return build, np.array(seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="timed frames per side (after the warm-up)")
    parser.add_argument("--robots", nargs="+", choices=ROBOTS, default=list(ROBOTS))
    parser.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    parser.add_argument("--urdf-dir", type=Path, default=HANDS, help="dex-urdf's hands/ folder")
    args = parser.parse_args(argv)

    import torch

    print(f"# retargeting, one hand per call, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{cpu_model()} ({platform.machine()}), Python {platform.python_version()}, dex-retargeting "
          f"{importlib.metadata.version('dex-retargeting')}, numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"# command: python benchmarks/retargeting.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {args.frames} timed frames per side after {WARMUP} of warm-up, both sides")
    print("| robot | type | p50 (ms) | p95 (ms) | build, 2 sides (s) |")
    print("|---|---|---|---|---|")
    for robot in args.robots:
        for kind in args.types:
            build, seconds = measure(robot, kind, args.frames, args.urdf_dir)
            p50, p95 = np.percentile(seconds, [50, 95]) * 1e3
            print(f"| {robot} | {kind} | {p50:.2f} | {p95:.2f} | {build:.2f} |", flush=True)


if __name__ == "__main__":
    main()
