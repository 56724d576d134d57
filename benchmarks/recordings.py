"""Throughput of bag-to-bag processing against the engine alone on the same frames.

    python benchmarks/recordings.py [--backend mediapipe acr] [--frames 120] [--size 640x360]
                                    [--batch 1] [--device auto] [--storage mcap] [--repeat 3]

Writes a bag of the bundled clip's frames (cycled, resized; camera_info and /tf_static beside
them, as test/support/bags.py records them), then alternates, --repeat times:
  engine   backend.reconstruct on those frames, already decoded in memory, in batches of --batch;
  read     the reading stage alone: read, deserialize, convert and pair every image;
  write    the writing stage alone: the engine's results as hands, TF and markers into an MCAP bag;
  bag      acr_offline's process_recording on the bag with the same backend, the three stages
           overlapping (--no-render: the bag and the npz); and once more with the overlay video.
Reports the median frames/s of each and the median of the runs' ratios of bag to bag to the engine
(each run's engine and bag passes are adjacent: on a shared machine they see the same load). ACR runs random
weights with synthetic MANO files (the real model's cost and output sizes, not hand
reconstructions). Prints a markdown table (docs/benchmarks.md).
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
from acr_ros.backends import create_backend, faces_by_side  # noqa: E402
from acr_ros.offline import process_recording  # noqa: E402
from acr_ros.recordings import HandsBag, RecordedFrame, Recording, read_frames  # noqa: E402


def make_backend(name: str, device: str, tmp: Path):
    if name == "acr":
        from support.random_weights import write_random_checkpoint
        from support.synthetic_mano import write_synthetic_mano

        return create_backend("acr", checkpoint=str(write_random_checkpoint(tmp / "wild.pkl", detect="both")),
                              mano_dir=str(write_synthetic_mano(tmp / "mano")),
                              options=EngineOptions(device=device), tune_process=True)[0]
    return create_backend("mediapipe")[0]


def engine_rate(backend, frames, batch: int) -> tuple[float, list]:
    """frames/s of the backend alone, and its results."""
    height, width = frames[0].shape[:2]
    k = CameraIntrinsics(FOCAL, FOCAL, width / 2, height / 2)
    backend.static_image_mode = False
    backend.reset()
    results = []
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        results += backend.reconstruct(chunk, [k] * len(chunk), [(i + j) / 10 for j in range(len(chunk))],
                                       ["cam"] * len(chunk))
    return len(frames) / (time.perf_counter() - start), results


def read_rate(bag: Path) -> tuple[float, list]:
    """frames/s of the reading stage alone, and the frames it read."""
    start = time.perf_counter()
    with Recording(bag) as recording:
        frames = [item for item in read_frames(recording, recording.select()) if isinstance(item, RecordedFrame)]
    return len(frames) / (time.perf_counter() - start), frames


def write_rate(bag: Path, out: Path, backend, frames: list, results: list) -> float:
    """frames/s of the writing stage alone (hands, TF, markers into an MCAP bag)."""
    start = time.perf_counter()
    with Recording(bag) as recording, HandsBag(out, recording, recording.select(), backend,
                                               faces_by_side(backend)) as output:
        for frame, result in zip(frames, results):
            output.add(frame, result)
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
    print("| backend | device | engine | reading alone | writing alone | bag to bag | ratio | bag to bag + mp4 "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bag = write_bag(tmp / "recording", frames, args.storage).path
        for name in args.backend:
            backend = make_backend(name, args.device, tmp)
            engine_rate(backend, frames[:min(8, len(frames))], args.batch)  # warm-up
            engine, read, write, plain, rendered = [], [], [], [], []
            for run in range(args.repeat):
                rate, results = engine_rate(backend, frames, args.batch)
                engine.append(rate)
                rate, recorded = read_rate(bag)
                read.append(rate)
                write.append(write_rate(bag, tmp / f"{name}_write_{run}", backend, recorded, results))
                del recorded
                plain.append(bag_rate(backend, bag, tmp / f"{name}_plain_{run}", args.batch, False))
                rendered.append(bag_rate(backend, bag, tmp / f"{name}_mp4_{run}", args.batch, True))
            e, r, w, p, m = (statistics.median(x) for x in (engine, read, write, plain, rendered))
            plain_ratio = statistics.median(b / a for a, b in zip(engine, plain))
            rendered_ratio = statistics.median(b / a for a, b in zip(engine, rendered))
            print(f"| {name} | {backend.device} | {e:.1f} | {r:.0f} | {w:.0f} | {p:.1f} | {plain_ratio:.0%} "
                  f"| {m:.1f} | {rendered_ratio:.0%} |")
            backend.close()
    print("\nframes/s, medians of interleaved runs")


if __name__ == "__main__":
    main()
