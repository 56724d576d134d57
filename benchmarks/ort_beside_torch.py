"""onnxruntime beside torch in one process: the MANO + camera stage's p50/p95 alternating with
onnxruntime network runs, and Python's cyclic garbage collector, which explains its stalls.

    python benchmarks/ort_beside_torch.py [--device cpu|cuda] [--iterations 40]

Measured on a GPU machine, MANO + camera (p50 2 ms) had a p95 of 47 ms after an onnxruntime run.
What this shows: the ONNX export (and onnxscript's op registry it imports) leaves about three times
as many objects alive as the torch pipeline alone (630 000 against 212 000), and every full
collection of the cyclic garbage collector walks all of them: a frame that happens to trigger one
waits for it. runtime.tune_process (what the node and acr_offline call after loading) collects
once and freezes what is alive then (gc.freeze), so that later collections walk only what frames
allocate. Phases, in this order (a frozen collector is unfrozen at the end):

    torch alone          the stage on its own
    after torch's network  each timed stage right after torch's own network run (the control:
                         any heavy run before, not onnxruntime's)
    with onnxruntime     each timed stage right after an onnxruntime network run
    ... collector frozen the same after runtime.tune_process

Each row: the stage's p50 / p95 / max, the full (generation 2) collections that ran during the
timed loop and the longest, and what one full collection costs at that point (gc.collect, timed).
Random weights and synthetic MANO files, as every benchmark here.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # support: random weights, MANO

COLUMNS = ["phase", "MANO+camera p50 ms", "p95 ms", "max ms", "full collections in the loop",
           "longest collection ms", "one full collection ms", "objects tracked"]


class CollectorLog:
    """The durations of the collector's runs of generation 2 while installed (gc.callbacks)."""

    def __init__(self):
        self.pauses: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info["generation"] == 2:
            self.pauses.append((time.perf_counter() - self._started) * 1e3)

    def __enter__(self) -> "CollectorLog":
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


def full_collection_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1e3


def measure(table_add, net, mano, device: str, iterations: int) -> None:
    """The three phases (module docstring) for a loaded network and MANO on ``device``, each row
    passed to ``table_add(*cells)`` (COLUMNS). Call it before anything in the process exported the
    network to ONNX: the first phase is torch alone."""
    from acr_ros.acr.camera import intrinsics_tensor
    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from acr_ros.acr.preprocess import letterbox_tensor
    from acr_ros.acr.runtime import tune_process

    pipe = ACRPipeline(net, mano, EngineOptions(device=device, precision="fp32"))
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    x, lbs = pipe.preprocess([image])
    lp, k = letterbox_tensor(lbs, pipe.device), intrinsics_tensor([None], lbs, pipe.device)
    out = pipe.network(x)
    params = pipe.decode(out)

    def sync():
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)

    def phase(name: str, before=None) -> None:
        times = []
        with CollectorLog() as log:
            for _ in range(iterations):
                if before is not None:
                    before()
                sync()
                started = time.perf_counter()
                pipe.readback(pipe.mano(out, params, lp, k))
                times.append((time.perf_counter() - started) * 1e3)
        table_add(name, *(round(float(v), 3) for v in (np.percentile(times, 50), np.percentile(times, 95),
                                                         max(times))),
                  len(log.pauses), round(max(log.pauses, default=0.0), 1), round(full_collection_ms(), 1),
                  len(gc.get_objects()))

    for _ in range(3):  # warm-up (and the CUDA graphs' captures)
        pipe.readback(pipe.mano(out, params, lp, k))
    phase("torch alone")
    phase("after torch's network", lambda: pipe.network(x))
    ort = ACRPipeline(net, mano, EngineOptions(device=device, runtime="onnxruntime"))
    ort_input = x

    def ort_run():
        ort.network(ort_input)

    phase("with onnxruntime", ort_run)
    tune_process(pipe.device, pipe.dtype)
    try:
        phase("with onnxruntime, collector frozen (runtime.tune_process)", ort_run)
    finally:
        gc.unfreeze()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d')}, device {args.device}, torch {torch.__version__}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, Python {sys.version.split()[0]}, {args.iterations} iterations")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    from support.random_weights import random_acr_network
    from support.synthetic_mano import write_synthetic_mano

    from acr_ros.acr.mano import ManoLayer

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ACR_ROS_CACHE_DIR", str(Path(tmp) / "cache"))  # a fresh export, as at a first start
        mano = ManoLayer.from_directory(write_synthetic_mano(Path(tmp) / "mano"))
        measure(lambda *cells: print("| " + " | ".join(str(c) for c in cells) + " |", flush=True),
                random_acr_network(0, "both"), mano, args.device, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
