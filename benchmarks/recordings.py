"""Throughput of bag-to-bag processing against the engine alone on the same frames.

    python benchmarks/recordings.py [--backend mediapipe acr] [--frames 120] [--size 640x360]
                                    [--batch 1] [--device auto] [--storage mcap] [--repeat 3]

Writes a bag of the bundled clip's frames (cycled, resized; camera_info and /tf_static beside
them, as test/support/bags.py records them), then alternates, --repeat times:
  engine   backend.reconstruct on those frames, already decoded in memory, in batches of --batch;
  bag      acr_offline's process_recording on the bag with the same backend: read, convert, pair,
           infer, build and write the hands, TF and markers into an MCAP bag, and the npz
           (--no-render); and once more with the overlay video (the default outputs).
Reports the median frames/s of each and the ratio to the engine. ACR runs random weights with
synthetic MANO files (the real model's cost, not hand reconstructions). Prints a markdown table
(docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the bag-making test helpers

from support.bags import FOCAL, clip_frames, write_bag  # noqa: E402

from acr_ros.acr.hands import CameraIntrinsics  # noqa: E402
from acr_ros.acr.options import EngineOptions  # noqa: E402
from acr_ros.backends import create_backend  # noqa: E402
from acr_ros.offline import process_recording  # noqa: E402


def make_backend(name: str, device: str, tmp: Path):
    if name == "acr":
        from support.random_weights import write_random_checkpoint
        from support.synthetic_mano import write_synthetic_mano

        return create_backend("acr", checkpoint=str(write_random_checkpoint(tmp / "wild.pkl", detect="both")),
                              mano_dir=str(write_synthetic_mano(tmp / "mano")),
                              options=EngineOptions(device=device), tune_process=True)[0]
    return create_backend("mediapipe")[0]


def engine_rate(backend, frames, batch: int) -> float:
    height, width = frames[0].shape[:2]
    k = CameraIntrinsics(FOCAL * width / 320, FOCAL * width / 320, width / 2, height / 2)
    backend.static_image_mode = False
    backend.reset()
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        backend.reconstruct(chunk, [k] * len(chunk), [(i + j) / 10 for j in range(len(chunk))], ["cam"] * len(chunk))
    return len(frames) / (time.perf_counter() - start)


def bag_rate(backend, bag: Path, out: Path, batch: int, render: bool) -> float:
    out.mkdir()
    start = time.perf_counter()
    summary = process_recording(backend, str(bag), out, batch_size=batch, render=render, quiet=True)
    return summary["frames"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=["mediapipe"], choices=("mediapipe", "acr"))
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    clip = clip_frames(30, (width, height))
    frames = [clip[i % len(clip)] for i in range(args.frames)]
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"{args.frames} frames {args.size}, {args.storage} storage, batch {args.batch}\n")
    print("| backend | device | engine (frames/s) | bag to bag (frames/s) | ratio | bag to bag + mp4 (frames/s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bag = write_bag(tmp / "recording", frames, args.storage).path
        for name in args.backend:
            backend = make_backend(name, args.device, tmp)
            engine_rate(backend, frames[:min(8, len(frames))], args.batch)  # warm-up
            engine, plain, rendered = [], [], []
            for run in range(args.repeat):
                engine.append(engine_rate(backend, frames, args.batch))
                plain.append(bag_rate(backend, bag, tmp / f"{name}_plain_{run}", args.batch, False))
                rendered.append(bag_rate(backend, bag, tmp / f"{name}_mp4_{run}", args.batch, True))
            e, p, r = (statistics.median(x) for x in (engine, plain, rendered))
            print(f"| {name} | {backend.device} | {e:.1f} | {p:.1f} | {p / e:.0%} | {r:.1f} | {r / e:.0%} |")
            backend.close()


if __name__ == "__main__":
    main()
