"""acr_offline --ray on this machine: 1 against 2 local workers, and the serial run beside them.

    python benchmarks/cluster.py [--recordings 6] [--frames 40] [--size 640x360] [--repeat 2]
                                 [--backend mediapipe] [--render]

Writes --recordings bags of the bundled clip's frames (cycled; as test/support/bags.py records them), starts
a local Ray instance with as many CPUs as this machine has, then alternates, --repeat times:
  serial   acr_offline without Ray, --threads 1 (what one worker does, one input after the other);
  1 worker acr_offline --ray --workers 1;
  2 workers acr_offline --ray --workers 2.
Each is timed whole, from the command to its exit (Ray's workers start and load the model in it;
Ray itself is started once, before). Reports each run's frames/s and the median speed-up of 2
workers over 1 (each repeat's runs are adjacent: on a shared machine they see the same load).
Prints a markdown table (docs/cluster.md). --no-render by default: an archive run's results.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the bag-making test helpers

from support.bags import clip_frames, write_bag  # noqa: E402

from acr_ros import offline  # noqa: E402


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    status = offline.main(argv)
    if status != 0:
        raise SystemExit(f"acr_offline {' '.join(argv)}: exit code {status}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=6)
    parser.add_argument("--frames", type=int, default=40, help="frames per recording")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backend", default="mediapipe", choices=("mediapipe",))
    parser.add_argument("--render", action="store_true", help="also the overlay videos")
    args = parser.parse_args(argv)
    import ray

    width, height = map(int, args.size.split("x"))
    total = args.recordings * args.frames
    with tempfile.TemporaryDirectory(prefix="acr_cluster_") as tmp:
        root = Path(tmp)
        clip = clip_frames(min(args.frames, 30), size=(width, height))  # the clip's 30 frames, cycled
        frames = [clip[i % len(clip)] for i in range(args.frames)]
        inputs = [str(write_bag(root / f"take_{i:02d}", frames, "mcap").path) for i in range(args.recordings)]
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports to Ray's servers from a benchmark
        ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=ray_temp, logging_level="warning")
        common = ["--backend", args.backend, "-q", "--inputs", *inputs] + ([] if args.render else ["--no-render"])
        runs: dict[str, list[float]] = {"serial": [], "1 worker": [], "2 workers": []}
        for repeat in range(args.repeat):
            for name, extra in (("serial", ["--threads", "1"]), ("1 worker", ["--ray", "--workers", "1"]),
                                ("2 workers", ["--ray", "--workers", "2"])):
                out = root / f"out_{repeat}_{name.replace(' ', '_')}"
                runs[name].append(timed(common + extra + ["-o", str(out)]))
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    speedups = [one / two for one, two in zip(runs["1 worker"], runs["2 workers"])]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.recordings} recordings x {args.frames} frames at {args.size}, "
          f"{args.backend}, {'with' if args.render else 'no'} overlay video\n")
    print("| run | seconds (each repeat) | frames/s (median) |")
    print("|---|---|---|")
    for name, seconds in runs.items():
        print(f"| {name} | {' / '.join(f'{s:.1f}' for s in seconds)} | {total / statistics.median(seconds):.1f} |")
    print(f"\n2 workers over 1: {statistics.median(speedups):.2f}x (median of {len(speedups)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
