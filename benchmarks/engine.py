"""Latency and throughput of the ACR pipeline, stage by stage, with a reference-style baseline.

    python benchmarks/engine.py [--device cpu cuda] [--batch 1 8] [--precision fp32 fp16]
                                    [--sizes 640x480 1920x1080] [--iterations 20] [--compile]
                                    [--runtime torch onnxruntime] [--interleave]

Uses RANDOM weights in the official layout and SYNTHETIC MANO files (the cost of every stage is
the same as with the real files; the outputs are not hands). Per stage (preprocess, network,
parser, MANO + camera, readback) the p50/p95 latency comes from runs with a device
synchronisation between stages; "total" is timed separately end to end, without the extra
synchronisations, and gives the throughput. The baseline is our own model run the plain way
(test/support/reference.py, the official flow transcribed): fp32, eager, unfolded BatchNorm, contiguous
layout, every head map dense, the official parser on the dense maps, one MANO call per side and the
translation in numpy (batch 1, as the official demo), run before the benchmark opts into the
engine's process-wide settings (acr_ros.acr.runtime: glibc malloc thresholds on the CPU, cuDNN
autotuning on CUDA), as a plain user script would.
Prints a markdown table.

--interleave compares the engine (fp32, batch 1, each --runtime) with the baseline frame by frame
instead: baseline, engine, baseline, engine, ... on the same image, so that whatever else loads the
machine weighs on both alike (the process is tuned for the engine before, which the baseline
profits from too). It prints both p50s, their ratio, and the median and range of the ratio of each
pair of frames.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import warnings
from typing import Optional

from pathlib import Path

import numpy as np
import torch

from acr_ros.acr.hardware import describe_cpu
from acr_ros.acr.options import PRECISIONS, RUNTIMES, EngineOptions
from acr_ros.acr.pipeline import ACRPipeline
from acr_ros.acr.runtime import tune_process

# The random weights, the synthetic MANO files and the reference transcription live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

STAGES = ("preprocess", "network", "parser", "mano", "readback")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{describe_cpu()}; {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pct(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def test_images(size: tuple[int, int], batch: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
            for _ in range(batch)]


def time_pipeline(pipe, images, iterations: int, warmup: int) -> dict:
    """Per-stage times (synchronised between stages) and end-to-end times (not)."""
    from acr_ros.acr.camera import intrinsics_tensor
    from acr_ros.acr.preprocess import letterbox_tensor

    dev = pipe.device
    stages = {s: [] for s in STAGES}
    totals = []
    for it in range(warmup + iterations):
        t0 = time.perf_counter()
        x, lbs = pipe.preprocess(images)
        lp = letterbox_tensor(lbs, dev)
        k = intrinsics_tensor([None] * len(images), lbs, dev)
        _sync(dev)
        t1 = time.perf_counter()
        out = pipe.network(x)
        _sync(dev)
        t2 = time.perf_counter()
        params = pipe.decode(out)
        _sync(dev)
        t3 = time.perf_counter()
        res = pipe.mano(out, params, lp, k)
        _sync(dev)
        t4 = time.perf_counter()
        pipe.readback(res)
        t5 = time.perf_counter()
        if it >= warmup:
            for name, a, b in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                stages[name].append(b - a)
    for it in range(warmup // 2 + iterations):
        _sync(dev)
        t0 = time.perf_counter()
        pipe(images)
        totals.append(time.perf_counter() - t0)
    totals = totals[warmup // 2:]
    return {"stages": {k: _pct(v) for k, v in stages.items()}, "total": _pct(totals)}


# ------------------------------------------------------------------------------------------------
# Baseline: the plain, reference-style flow on our own model


class Baseline:
    """fp32 eager dense ACR, the way the official demo runs it (one image at a time): the stages of
    acr_ros.acr.reference, the transcription the tests check the pipeline against."""

    def __init__(self, net, mano, device: torch.device):
        import copy

        self.net = copy.deepcopy(net).float().to(device).eval()
        self.mano = copy.deepcopy(mano).to(device)
        self.device = device

    def stages(self, image: np.ndarray) -> dict:
        from support import reference

        dev = self.device
        t = [time.perf_counter()]
        x, lb = reference.preprocess(image, dev)
        _sync(dev)
        t.append(time.perf_counter())
        maps = reference.dense_maps(self.net, x)
        _sync(dev)
        t.append(time.perf_counter())
        parsed = reference.parse(maps)
        _sync(dev)
        t.append(time.perf_counter())
        reference.place_hands(self.mano, parsed["rows"], lb)
        t.append(time.perf_counter())
        t.append(time.perf_counter())  # the numpy copies happened inside the MANO stage
        return dict(zip(STAGES, np.diff(t)))

    def time(self, image: np.ndarray, iterations: int, warmup: int) -> dict:
        stages = {s: [] for s in STAGES}
        totals = []
        for it in range(warmup + iterations):
            _sync(self.device)
            t0 = time.perf_counter()
            st = self.stages(image)
            total = time.perf_counter() - t0
            if it >= warmup:
                for k, v in st.items():
                    stages[k].append(v)
                totals.append(total)
        return {"stages": {k: _pct(v) for k, v in stages.items()}, "total": _pct(totals)}


def interleaved(net, mano, device: torch.device, size: tuple[int, int], runtime: str, iterations: int,
                warmup: int) -> dict:
    """The baseline and the engine (fp32, batch 1) alternately on one image, end to end."""
    pipe = ACRPipeline(net, mano, EngineOptions(device=str(device), precision="fp32", runtime=runtime,
                                               cuda_graphs=False))
    tune_process(pipe.device, pipe.dtype)
    base = Baseline(net, mano, device)
    image = test_images(size, 1)[0]
    baseline, engine = [], []
    for it in range(warmup + iterations):
        for run, times in ((lambda: base.stages(image), baseline), (lambda: pipe([image]), engine)):
            _sync(device)
            t0 = time.perf_counter()
            run()
            _sync(device)
            if it >= warmup:
                times.append(time.perf_counter() - t0)
    pairs = np.asarray(baseline) / np.asarray(engine)
    return {"baseline": float(np.median(baseline)) * 1e3, "engine": float(np.median(engine)) * 1e3,
            "ratio": float(np.median(baseline) / np.median(engine)), "pair_median": float(np.median(pairs)),
            "pair_min": float(pairs.min()), "pair_max": float(pairs.max()), "frames": iterations}


INTERLEAVED_HEADER = ("| device | input | runtime | baseline p50 (ms) | engine p50 (ms) | **ratio of p50s** "
                      "| pair ratios: median (min-max) | pairs |\n|---|---|---|---|---|---|---|---|")


# ------------------------------------------------------------------------------------------------


def _row(device, precision, batch, size, mode, r) -> str:
    st = r["stages"]
    cells = [f"{st[s][0]:.1f} / {st[s][1]:.1f}" for s in STAGES]
    p50, p95 = r["total"]
    return (f"| {device} | {precision} | {batch} | {size[0]}x{size[1]} | {mode} | " + " | ".join(cells)
            + f" | **{p50:.1f}** / {p95:.1f} | {batch * 1000.0 / p50:.1f} |")


HEADER = ("| device | precision | batch | input | mode | preprocess | network | parser | MANO+camera | readback "
          "| total p50 / p95 | img/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", nargs="+", default=None,
                    help="cpu and/or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--precision", nargs="+", default=None, choices=PRECISIONS,
                    help="fp32 / fp16 / bf16 (default: fp32 on CPU; fp32 and fp16 on CUDA)")
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[(640, 480), (1920, 1080)],
                    help="input sizes WxH (default 640x480 1920x1080)")
    ap.add_argument("--iterations", type=int, default=None, help="timed runs (default 50 CUDA, 10 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 CUDA, 2 CPU)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd network")
    ap.add_argument("--only-compiled", action="store_true", help="with --compile: skip the eager runs")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="also time the stages as CUDA graphs (what the engine runs on CUDA)")
    ap.add_argument("--runtime", nargs="+", default=["torch"], choices=RUNTIMES,
                    help="what runs the network (onnxruntime: fp32 only, its default providers for the device)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the reference-style baseline")
    ap.add_argument("--baseline-iterations", type=int, default=None)
    ap.add_argument("--interleave", action="store_true",
                    help="baseline and engine (fp32, batch 1) frame by frame, their ratio (see above)")
    args = ap.parse_args(argv)

    from acr_ros.acr.mano import ManoLayer
    from support.random_weights import random_acr_network
    from support.synthetic_mano import write_synthetic_mano

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print("# ACR benchmark\n")
    print(f"- date: {datetime.date.today().isoformat()}; torch {torch.__version__}; python {platform.python_version()}")
    print("- weights: RANDOM (official layout) + SYNTHETIC MANO: timings only, the outputs are not hands")
    print("- per stage: p50 / p95 ms with a synchronisation between stages; total: end to end, p50 / p95 ms;"
          " img/s = batch / total p50")
    print(f"- command: python benchmarks/engine.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")

    net = random_acr_network(0, "both")
    with tempfile.TemporaryDirectory() as tmp:
        mano = ManoLayer.from_directory(write_synthetic_mano(tmp, seed=0))
    rows = []
    if args.interleave:
        print(INTERLEAVED_HEADER)
        for dev_name in devices:
            device = torch.device(dev_name)
            for size in args.sizes:
                for runtime in args.runtime:
                    r = interleaved(net, mano, device, size, runtime, args.iterations or 10,
                                    args.warmup if args.warmup is not None else 2)
                    print(f"| {device_name(device)} | {size[0]}x{size[1]} | {runtime} | {r['baseline']:.1f} | "
                          f"{r['engine']:.1f} | **{r['ratio']:.2f}** | {r['pair_median']:.2f} "
                          f"({r['pair_min']:.2f}-{r['pair_max']:.2f}) | {r['frames']} |", flush=True)
        return 0
    for dev_name in devices:
        device = torch.device(dev_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"(skipping {dev_name}: CUDA not available)")
            continue
        label = device_name(device)
        print(f"- {dev_name}: {label}")
        precisions = args.precision or (["fp32", "fp16"] if device.type == "cuda" else ["fp32"])
        iters = args.iterations or (50 if device.type == "cuda" else 10)
        warm = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
        if not args.no_baseline:  # first: before the process is tuned
            base = Baseline(net, mano, device)
            b_iters = args.baseline_iterations or max(3, iters // 2)
            for size in args.sizes:
                r = base.time(test_images(size, 1)[0], b_iters, 1)
                rows.append(_row(dev_name, "fp32", 1, size, "baseline (dense eager)", r))
                print(rows[-1], flush=True)
        modes = [] if args.only_compiled or "torch" not in args.runtime else [("eager", {"cuda_graphs": False})]
        if args.compile:
            modes.append(("compiled", {"compile": True}))
        if args.cuda_graphs and device.type == "cuda":
            modes.append(("CUDA graphs", {"cuda_graphs": True}))
        if "onnxruntime" in args.runtime:
            modes.append(("onnxruntime", {"runtime": "onnxruntime"}))
        for precision in precisions:
            for mode, opts in modes:
                if mode == "onnxruntime" and precision != "fp32":
                    continue  # the export is fp32
                t0 = time.perf_counter()
                pipe = ACRPipeline(net, mano, EngineOptions(device=dev_name, precision=precision, **opts))
                tune_process(pipe.device, pipe.dtype)
                if pipe.providers:
                    mode = f"onnxruntime ({', '.join(p.replace('ExecutionProvider', '') for p in pipe.providers)})"
                for batch in args.batch:
                    for size in args.sizes:
                        images = test_images(size, batch)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            r = time_pipeline(pipe, images, iters, warm)
                        rows.append(_row(dev_name, precision, batch, size, mode, r))
                        print(rows[-1], flush=True)
                if mode == "compiled":
                    print(f"  (compiled {precision} set-up and runs took {time.perf_counter() - t0:.0f} s)")
    print("\n" + HEADER)
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
