"""Throughput of bag-to-bag processing against the engine alone on the same frames.

    python benchmarks/recordings.py [--backend mediapipe acr] [--frames 120] [--size 640x360]
                                    [--batch 1] [--device auto] [--storage mcap] [--repeat 3]

Writes a bag of the bundled clip's frames (cycled, resized; camera_info and /tf_static beside
them, as test/support/bags.py records them), then alternates, --repeat times:
  engine   backend.reconstruct on those frames, already decoded in memory, in batches of --batch;
  read     the reading stage alone: read, deserialize, convert and pair every image;
  write    the writing stage alone: the engine's results as hands, TF and markers into an MCAP bag
           (these two without opening and closing the bags: their rate per frame);
  bag      acr_offline's process_recording on the bag with the same backend, the three stages
           overlapping (--no-render: the bag and the npz); and once more with the overlay video.
Reports the median frames/s of each, the median of the runs' ratios of bag to bag to the engine
(each run's engine and bag passes are adjacent: on a shared machine they see the same load), and
how much of the bag-to-bag time the backend was busy (100 %: reading and writing never made it
wait; less: it waited, or contended with them for the cores or the GIL), and the CPU time per
frame of the engine alone and of bag to bag (their difference is what reading and writing cost;
on a machine whose cores are all busy it comes off the throughput). ACR runs random
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
from acr_ros.acr.runtime import tune_cpu_allocator  # noqa: E402
from acr_ros.backends import create_backend, faces_by_side  # noqa: E402
from acr_ros.offline_unit import process_recording  # noqa: E402
from acr_ros.frame_processor import ProcessedFrame  # noqa: E402
from acr_ros.hand_outputs import HandOutputs, OutputSettings  # noqa: E402
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
    """frames/s of the reading stage alone (opening the bag not counted), and the frames it read."""
    with Recording(bag) as recording:
        selection = recording.select()
        start = time.perf_counter()
        frames = [item for item in read_frames(recording, selection) if isinstance(item, RecordedFrame)]
        return len(frames) / (time.perf_counter() - start), frames


def write_rate(bag: Path, out: Path, backend, frames: list, results: list) -> float:
    """frames/s of the writing stage alone: hands, TF, markers into an MCAP bag (opening and closing
    it not counted)."""
    faces = faces_by_side(backend)
    outputs, settings = HandOutputs(backend, faces), OutputSettings()
    with Recording(bag) as recording, HandsBag(out, recording, recording.select(), faces) as output:
        start = time.perf_counter()
        for frame, result in zip(frames, results):
            messages = outputs.build(ProcessedFrame(frame.input, result), settings, points_as_arrays=True)
            output.add(frame.time, frame.input.header, messages)
        return len(frames) / (time.perf_counter() - start)


class TimedBackend:
    """The backend, with the time spent in reconstruct added up."""

    def __init__(self, backend):
        self.__dict__.update(_backend=backend, busy=0.0)

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def __setattr__(self, name, value):
        setattr(self._backend, name, value)

    def reconstruct(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._backend.reconstruct(*args, **kwargs)
        finally:
            self.__dict__["busy"] += time.perf_counter() - start


def bag_rate(backend, bag: Path, out: Path, batch: int, render: bool) -> tuple[float, float]:
    """frames/s of bag-to-bag processing, and the fraction of that time the backend was busy."""
    out.mkdir()
    timed = TimedBackend(backend)
    start = time.perf_counter()
    summary = process_recording(timed, str(bag), out, batch_size=batch, render=render, quiet=True)
    elapsed = time.perf_counter() - start
    return summary["frames"] / elapsed, timed.busy / elapsed


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
    tune_cpu_allocator()  # as acr_offline does for recordings (the engine alone runs with it too)
    width, height = map(int, args.size.split("x"))
    clip = clip_frames(30, (width, height))
    frames = [clip[i % len(clip)] for i in range(args.frames)]
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"{args.frames} frames {args.size}, {args.storage} storage, batch {args.batch}\n")
    print("| backend | device | engine | reading alone | writing alone | bag to bag | ratio | engine busy "
          "| CPU ms/frame engine / bag to bag | bag to bag + mp4 | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bag = write_bag(tmp / "recording", frames, args.storage).path
        for name in args.backend:
            backend = make_backend(name, args.device, tmp)
            engine_rate(backend, frames[:min(8, len(frames))], args.batch)  # warm-up
            engine, read, write, plain, rendered, busy, engine_cpu, plain_cpu = ([] for _ in range(8))
            for run in range(args.repeat):
                cpu = time.process_time()
                rate, results = engine_rate(backend, frames, args.batch)
                engine_cpu.append((time.process_time() - cpu) / len(frames) * 1e3)
                engine.append(rate)
                rate, recorded = read_rate(bag)
                read.append(rate)
                write.append(write_rate(bag, tmp / f"{name}_write_{run}", backend, recorded, results))
                del recorded
                cpu = time.process_time()
                rate, fraction = bag_rate(backend, bag, tmp / f"{name}_plain_{run}", args.batch, False)
                plain_cpu.append((time.process_time() - cpu) / len(frames) * 1e3)
                plain.append(rate)
                busy.append(fraction)
                rendered.append(bag_rate(backend, bag, tmp / f"{name}_mp4_{run}", args.batch, True)[0])
            e, r, w, p, m, b, ec, pc = (statistics.median(x) for x in (engine, read, write, plain, rendered, busy,
                                                                       engine_cpu, plain_cpu))
            plain_ratio = statistics.median(b / a for a, b in zip(engine, plain))
            rendered_ratio = statistics.median(b / a for a, b in zip(engine, rendered))
            print(f"| {name} | {backend.device} | {e:.1f} | {r:.0f} | {w:.0f} | {p:.1f} | {plain_ratio:.0%} "
                  f"| {b:.0%} | {ec:.1f} / {pc:.1f} | {m:.1f} | {rendered_ratio:.0%} |")
            backend.close()
    print("\nframes/s, medians of interleaved runs; engine busy: the share of bag-to-bag time spent in "
          "backend.reconstruct; CPU ms/frame: this process's CPU time (all threads) per frame")


if __name__ == "__main__":
    main()
