"""Proves and measures the GPU path in one command (issue 15); run through scripts/gpu_check.sh.

    scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--sections NAME ...] [--box NAME=SECONDS]

Sections, each in its own process with a time box so that a slow one cannot eat the rest (what a
section finished before its box ran out is kept; a dry run runs them in its own process, see below):

    tests      the engine's CUDA tests: pytest -m gpu on the test files that need no ROS
    fidelity   CUDA fp32 (TF32 off) against CPU fp32 within the suite's tolerances, then fp16 and
               bf16 against CUDA fp32 (largest keypoint, joint, vertex deviation; detections, sides)
    bench      the ACR backend's loading and first frames in a fresh process; then
               fp16 / fp32 / bf16, eager and CUDA graphs, batch 1 and 8, 640x480 and 1920x1080:
               per-stage p50/p95, images/s, GPU memory after warm-up and after a few hundred frames
    onnx       the onnxruntime runtime against torch (suite's tolerances) and timed side by side
    cpu        the CPU's model and instruction sets, fp32 against bf16 (time, deviation), what
               precision "auto" picks there
    ros        the node itself (ROS in, ROS out): 1920x1080 images published at 30 Hz, image stamp
               to ~/hands p50/p95 (benchmarks/latency.py --rate 30). ROS comes from this Python
               when it has it, else from the wheels in .gpu_carry/ros (scripts/prepare_gpu_carry.sh,
               carried to the device machine), installed offline into a venv beside this Python's
               packages, with the interfaces built there (scripts/interfaces.sh: cmake, a compiler);
               skipped with one line when neither is there
    aot        acr_export --aot's package built here (fp16; its compile time), loaded by the pipeline
               (aot_package), timed batch 1 and 8 (a dry run builds none: the missing package's
               warning and the fallback)
    compile    torch.compile (fp16), batch 1 and 8, its compile time

Writes gpu_check.md and gpu_check.json (and the sections' logs) to --out (default: $OUT, else a
new temporary folder) after every section, and prints the report. Every run uses RANDOM weights in
the official layout and SYNTHETIC MANO files: the cost of every stage is the real model's, the
outputs are not hands. --dry-run (what CI runs): the CPU, tiny inputs, one or two iterations,
every code path that can run without CUDA (torch.compile replaced by a no-op); its figures measure
nothing. Its sections run one after another in its own process (six fresh interpreters, each
importing torch and loading the fixtures, would cost more than the sections themselves) and keep
their time boxes by the checks of their deadline between measurements; test/test_gpu_check.py
runs a section in a process of its own past its box. Exit status: 0 when every section ran and
passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import functools
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
TEST_DIR = REPO / "test"
# (name, time box in seconds on a GPU): compile is last and gets what is left of the budget.
SECTIONS = (("tests", 50), ("fidelity", 50), ("bench", 100), ("onnx", 75), ("cpu", 30), ("ros", 120),
            ("aot", 120), ("compile", None))
DEFAULT_BUDGET = 570           # seconds for all sections on a GPU: the whole run stays under 10 minutes
ROS_CARRY = REPO / ".gpu_carry" / "ros"
DRY_RUN_BOX = 240              # a dry-run section that takes this long is broken
ROS_MODULES = {"rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "geometry_msgs", "visualization_msgs",
               "diagnostic_msgs", "tf2_msgs", "tf2_ros", "launch", "launch_ros", "builtin_interfaces",
               "support.ros_harness", "acr_ros.msg"}
FIXTURE_SHAPES = ((480, 640), (640, 360), (301, 211), (211, 301), (1080, 1920))  # test_pipeline's, plus 1080p
PHOTOS = ("magic.jpg", "magic_flip.jpg", "two_hands.jpg", "portrait.jpg")
TARGETS = {"fp16 batch-1 total p50 (ms)": 3.0, "fp16 batch-8 images/s": 1000.0,
           "fp16 vs fp32 on the photos (px / mm)": 1.0, "ROS stamp to ~/hands p50, 1080p at 30 Hz (ms)": 12.0}


# ------------------------------------------------------------------------------------------------
# Results: each section writes one JSON file, rewritten after every row.


class Recorder:
    """A section's status, notes and tables, saved to ``path`` whenever they change."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {"status": "running", "notes": [], "tables": []}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def table(self, title: str, columns: list[str]) -> "Table":
        table = {"title": title, "columns": columns, "rows": []}
        self.data["tables"].append(table)
        self.save()
        return Table(self, table)

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.save()


class Table:
    def __init__(self, recorder: Recorder, table: dict):
        self.recorder, self.table = recorder, table

    def add(self, *cells) -> None:
        self.table["rows"].append(list(cells))
        self.recorder.save()


def fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


# ------------------------------------------------------------------------------------------------
# What a run measures: the GPU run and its CPU rehearsal differ here only, not in code.


@dataclass(frozen=True)
class Plan:
    device: str                  # the device under test
    dry_run: bool
    fixture_shapes: tuple        # (height, width) of the smooth synthetic images
    photos: tuple                # bundled photos (acr_ros/data/samples)
    half_precisions: tuple       # fidelity: each against fp32 on the device
    graphs: bool                 # fidelity: CUDA graphs against eager
    bench_precisions: tuple
    bench_modes: tuple           # of BENCH_MODES
    batches: tuple
    sizes: tuple                 # (width, height) of the benchmark's input images
    iterations: int              # timed runs per benchmark row (by stage, then end to end)
    warmup: int
    memory_frames: int           # fp16 rows run on to this many frames before the last memory reading
    runtime_iterations: int      # onnx and cpu sections
    ros_size: tuple              # (width, height) of the ros section's images
    ros_frames: int              # published at 30 Hz
    real_compile: bool           # False: torch.compile replaced by a no-op
    compile_precision: str
    cpu_bf16: str                # "always", or "native": only on a CPU with native bf16 (emulated: seconds a frame)
    all_cpu_threads: bool


# "unfused": the plain BatchNorm-folded graph (EngineOptions.fused False), what the fused one gains on.
BENCH_MODES = {"eager": {"cuda_graphs": False}, "CUDA graphs": {"cuda_graphs": True},
               "CUDA graphs, unfused": {"cuda_graphs": True, "fused": False}}
GPU_PLAN = Plan(device="cuda", dry_run=False, fixture_shapes=FIXTURE_SHAPES, photos=PHOTOS,
                half_precisions=("fp16", "bf16"), graphs=True, bench_precisions=("fp16", "fp32", "bf16"),
                bench_modes=tuple(BENCH_MODES), batches=(1, 8), sizes=((640, 480), (1920, 1080)), iterations=30,
                warmup=5, memory_frames=300, runtime_iterations=10, ros_size=(1920, 1080), ros_frames=150,
                real_compile=True, compile_precision="fp16",
                cpu_bf16="always", all_cpu_threads=True)
DRY_RUN_PLAN = Plan(device="cpu", dry_run=True, fixture_shapes=(), photos=PHOTOS[2:3],
                    half_precisions=(), graphs=False, bench_precisions=("fp32",), bench_modes=("eager",),
                    batches=(1,), sizes=((64, 48),), iterations=1, warmup=0, memory_frames=0,
                    runtime_iterations=1, ros_size=(64, 48), ros_frames=2, real_compile=False,
                    compile_precision="fp32", cpu_bf16="native",
                    all_cpu_threads=False)


@functools.lru_cache(maxsize=None)
def fixtures(work: Path):
    """The random networks (both: detects both hands, prior on; far: corner cells, prior off; only
    "both" in a dry run) and synthetic MANO, loaded once per process: a dry run's sections share
    them (the engine copies what it moves or changes)."""
    from acr_ros.acr.checkpoint import load_acr_network
    from acr_ros.acr.mano import ManoLayer

    nets = {path.stem: load_acr_network(path) for path in sorted(work.glob("*.pkl"))}
    return nets, ManoLayer.from_directory(work / "mano")


def photos(plan: Plan) -> list:
    import cv2

    from acr_ros.media import SAMPLES_DIR

    return [cv2.imread(str(SAMPLES_DIR / name)) for name in plan.photos]


def image_sets(plan: Plan) -> dict:
    """Named image sets: smooth synthetic images of the suite's shapes, and the bundled photos (a
    dry run has only its one photo)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    smooth = [cv2.resize(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
              for h, w in plan.fixture_shapes]
    sets = {"fixtures": smooth, "photos": photos(plan)}
    return {name: images for name, images in sets.items() if images}


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_mib(device) -> tuple:
    """(allocated, reserved, peak allocated) MiB on a CUDA device; n/a elsewhere."""
    import torch

    if device.type != "cuda":
        return ("n/a",) * 3
    mib = 2 ** 20
    return (torch.cuda.memory_allocated(device) / mib, torch.cuda.memory_reserved(device) / mib,
            torch.cuda.max_memory_allocated(device) / mib)


def time_left(deadline: float) -> float:
    return deadline - time.time()


# ------------------------------------------------------------------------------------------------
# Section: tests


def engine_test_files(test_dir: Path = TEST_DIR) -> tuple[list[str], dict[str, str]]:
    """Test files with tests marked gpu that import no ROS and whose imports are all installed,
    and the others with the reason they are left out."""
    chosen, left_out = [], {}
    for path in sorted(test_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        if not any(isinstance(node, ast.Attribute) and node.attr == "gpu" and isinstance(node.value, ast.Attribute)
                   and node.value.attr == "mark" for node in ast.walk(tree)):
            continue  # no pytest.mark.gpu
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
        ros = sorted(name for name in imported if name in ROS_MODULES or name.split(".")[0] in ROS_MODULES)
        missing = sorted({name.split(".")[0] for name in imported if name.split(".")[0] not in ("support", "acr_ros")
                          and importlib.util.find_spec(name.split(".")[0]) is None})
        if ros:
            left_out[path.name] = f"needs ROS ({', '.join(ros)})"
        elif missing:
            left_out[path.name] = (f"{', '.join(missing)} not installed (carry the wheel: scripts/gpu_check.sh "
                                   "--fetch-wheels, then carry .whl)")
        else:
            chosen.append(path.name)
    return chosen, left_out


# pytest in-process, then whether anything it ran imported rclpy.
PYTEST_RUNNER = """
import json, sys
import pytest
code = int(pytest.main(sys.argv[2:]))
with open(sys.argv[1], "w") as f:
    json.dump({"exit_code": code, "rclpy_loaded": "rclpy" in sys.modules}, f)
sys.exit(code)
"""


def section_tests(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import xml.etree.ElementTree as ElementTree

    files, left_out = engine_test_files()
    for name, why in left_out.items():
        rec.note(f"{name} not run: {why}")
    xml_path, summary_path = work / "tests.xml", work / "tests_summary.json"
    # The summary of the whole run comes back from the device machine as pytest.log.
    with open(work / "pytest.log", "w") as log:
        subprocess.run([sys.executable, "-c", PYTEST_RUNNER, str(summary_path), "-m", "gpu", "-q", "-rfEs",
                        "-p", "no:cacheprovider", f"--junitxml={xml_path}", *[f"test/{f}" for f in files]],
                       cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=max(5.0, time_left(deadline) - 5))
    summary = json.loads(summary_path.read_text())
    rec.note(f"pytest -m gpu on {', '.join(files)}: exit code {summary['exit_code']}; rclpy imported during the "
             f"run: {fmt(summary['rclpy_loaded']).replace('NO', 'no')}")
    table = rec.table("CUDA tests (pytest -m gpu)", ["test", "outcome", "message"])
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ElementTree.parse(xml_path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = "skipped" if kind == "skipped" else "failed"
                message = (element.get("message") or "").splitlines()[0][:160] if element.get("message") else kind
        counts[outcome] += 1
        table.add(f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}", outcome, message)
    rec.note(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    if summary["rclpy_loaded"] or counts["failed"] or summary["exit_code"] not in (0, 5):
        return "failed"
    return "ok"


# ------------------------------------------------------------------------------------------------
# Section: fidelity


# Relative input noise of each half precision's rounding (its unit roundoff): how far this RANDOM
# network moves when its input is rounded that finely says how far that precision can move it.
UNIT_ROUNDOFF = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8}


def staged_run(pipe, x, lp, k):
    """The pipeline's stages after preprocessing, read back, on the pipeline's device."""
    return pipe.readback(pipe.run(x.to(pipe.device), lp.to(pipe.device), k.to(pipe.device)))


def section_fidelity(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import torch

    from acr_ros.acr.camera import intrinsics_tensor
    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from acr_ros.acr.precision import HALF_PRECISION_TOLERANCE, auto_pipeline, deviation, fp32_without_tf32
    from acr_ros.acr.preprocess import letterbox_tensor
    from support.tolerances import describe_failures, suite_comparison

    nets, mano = fixtures(work)
    images = image_sets(plan)
    # fp32 means fp32 in the comparisons (what tune_process does for fp32); no cuDNN autotuning for
    # these few runs.
    rec.note("TF32 off (cuDNN and matmul), cuDNN autotuning off" if plan.device == "cuda" else
             f"{plan.device} fp32 stands in for CUDA fp32")
    rec.note("fp32 is compared on the same network input (the CPU's preprocessing): device preprocessing "
             "rounds to uint8 levels like OpenCV, and a value that lands one level off moves this random "
             "network by tenths of a pixel; the preprocessing is compared on its own")
    status = "ok"
    prep = rec.table("device preprocessing against the CPU's (both pad + bicubic in torch, rounded to uint8 "
                     "levels; the promise: within one level)", ["images", "values", "values differing",
                                                                "largest difference (levels)", "within"])
    suite = rec.table("fp32 on the device against CPU fp32 on the same input (the suite's tolerances)",
                      ["network", "images", "hands", "keypoints px", "joints m", "vertices m", "translation m",
                       "cam", "finger pose", "betas", "within", "outside"])
    half = rec.table("half precision against fp32 on the device (target: within 1 px and 1 mm)",
                     ["network", "images", "precision", "keypoints px", "joints mm", "vertices mm",
                      "translation mm", "detections agree", "sides agree", "within 1 px / 1 mm"])
    noise = rec.table("what rounding does to this random network: CPU fp32 with relative input noise of each "
                      "precision's unit roundoff (a half-precision row far above this one would be the engine's)",
                      ["network", "images", "noise", "keypoints px", "joints mm", "vertices mm", "translation mm"])
    graphs = rec.table("CUDA graphs against eager (fp16, largest keypoint difference, px)",
                       ["network", "images", "keypoints px", "detections equal"])
    with fp32_without_tf32(torch.device(plan.device)):
        for net_name, net in nets.items():
            if time_left(deadline) < 10:
                rec.note(f"time box: network {net_name} not compared")
                status = "partial"
                break
            reference = ACRPipeline(net, mano, EngineOptions(device="cpu", precision="fp32", preprocess="device"))
            on_device = ACRPipeline(net, mano, EngineOptions(device=plan.device, precision="fp32", preprocess="device"))
            halves = {p: ACRPipeline(net, mano, EngineOptions(device=plan.device, precision=p))
                      for p in plan.half_precisions}
            graphed = eager = None
            if plan.graphs:
                eager = ACRPipeline(net, mano, EngineOptions(device=plan.device, precision="fp16", cuda_graphs=False))
                graphed = ACRPipeline(net, mano, EngineOptions(device=plan.device, precision="fp16", cuda_graphs=True))
            for set_name, imgs in images.items():
                label = f"{set_name} ({len(imgs)})"
                x, lbs = reference.preprocess(imgs)
                lp = letterbox_tensor(lbs)
                k = intrinsics_tensor([None] * len(imgs), lbs, torch.device("cpu"))
                if net_name == next(iter(nets)):
                    levels = ((on_device.preprocess(imgs)[0].cpu() - x).abs() * 127.5).round()
                    within = int(levels.max()) <= 1
                    prep.add(label, levels.numel(), int((levels > 0).sum()), int(levels.max()), within)
                    status = status if within else "failed"
                expected = staged_run(reference, x, lp, k)
                fp32 = staged_run(on_device, x, lp, k)
                c = suite_comparison(expected, fp32)
                f = {field: v["max"] for field, v in c["fields"].items()}
                suite.add(net_name, label, c["hands"], f["keypoints"], f["joints"], f["vertices"], f["translation"],
                          f["cam"], f["finger_pose"], f["betas"], c["within"], describe_failures(c))
                status = status if c["within"] else "failed"
                for name, pipe in halves.items():
                    d = deviation(fp32, staged_run(pipe, x, lp, k))
                    half.add(net_name, label, name, d.keypoints_px, d.joints_mm, d.vertices_mm, d.translation_mm,
                             d.detections_agree, d.sides_agree, d.within(HALF_PRECISION_TOLERANCE))
                for name in plan.half_precisions or ("fp16",):
                    rounding = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
                    noisy = x * (1.0 + UNIT_ROUNDOFF[name] * rounding)
                    d = deviation(expected, staged_run(reference, noisy, lp, k))
                    noise.add(net_name, label, f"{name} ({UNIT_ROUNDOFF[name]:.2g})", d.keypoints_px, d.joints_mm,
                              d.vertices_mm, d.translation_mm)
                if graphed is not None:
                    eager_rows = eager(imgs)[0]
                    for _ in range(2):  # the capture, then a replay
                        replay = graphed(imgs)[0]
                    graphs.add(net_name, label, float(abs(replay.keypoints - eager_rows.keypoints).max()),
                               bool((replay.detected == eager_rows.detected).all()))
    if plan.device == "cuda":  # what the ACR backend decides on this GPU (on the CPU: section cpu)
        from acr_ros.backends.acr import calibration_images

        _, why = auto_pipeline(nets["both"], mano, EngineOptions(device=plan.device), calibration_images())
        rec.note(f"precision auto on this GPU: {why}")
    return status


# ------------------------------------------------------------------------------------------------
# Section: bench


MEASURE_COLUMNS = ["batch", "input", "preprocess", "network", "parser", "MANO+camera", "readback",
                   "total p50 ms", "total p95 ms", "images/s", "MiB allocated after warm-up",
                   "MiB reserved after warm-up", "frames", "MiB allocated after", "MiB reserved after",
                   "MiB peak allocated"]
BENCH_COLUMNS = ["precision", "mode"] + MEASURE_COLUMNS


def bench_pipeline(table: Table, pipe, label: list, batch: int, size: tuple, iterations: int, warmup: int,
                   memory_frames: int = 0) -> None:
    """One row: the label cells, then MEASURE_COLUMNS: per-stage p50/p95, total, images/s, memory
    after warm-up and after the frames (run on to memory_frames)."""
    from engine import STAGES, test_images, time_pipeline

    images = test_images(size, batch)
    frames = 0
    for _ in range(warmup):
        pipe(images)
        frames += batch
    synchronize(pipe.device)
    warm_memory = memory_mib(pipe.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One untimed run by stages: its network graph is not the end-to-end one (that holds the preprocessing).
        r = time_pipeline(pipe, images, iterations, 1 if warmup else 0)
    frames += 2 * iterations * batch
    while frames < memory_frames:
        pipe(images)
        frames += batch
    synchronize(pipe.device)
    after = memory_mib(pipe.device)
    stages = [f"{r['stages'][s][0]:.2f} / {r['stages'][s][1]:.2f}" for s in STAGES]
    p50, p95 = r["total"]
    table.add(*label, batch, f"{size[0]}x{size[1]}", *stages, round(p50, 3), round(p95, 3),
              round(batch * 1000.0 / p50, 1), *[fmt(m) for m in warm_memory[:2]], frames,
              *[fmt(m) for m in after])


def first_frames(rec: Recorder, work: Path, plan: Plan) -> None:
    """What the node sees after configure: loading the ACR backend (on CUDA with its warm-up frame)
    in a fresh process, then its first frames one by one."""
    from engine import test_images

    from acr_ros.acr.options import EngineOptions
    from acr_ros.backends.acr import ACRBackend

    precision = plan.bench_precisions[0]
    started = time.perf_counter()
    backend = ACRBackend(work / "both.pkl", work / "mano", EngineOptions(device=plan.device, precision=precision),
                         tune_process=True)
    loaded = time.perf_counter() - started
    frame = test_images((640, 480), 1)[0]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        backend.reconstruct([frame], [None], [0.0], ["cam"])
        times.append((time.perf_counter() - started) * 1e3)
    backend.close()
    rec.table("ACRBackend in a fresh process: loading, then the first frames (batch 1, 640x480)",
              ["precision", "device", "load s", "frame 1 ms", "frame 2 ms", "frame 3 ms"]
              ).add(precision, plan.device, round(loaded, 2), *(round(t, 2) for t in times))


def bench_grid(rec: Recorder, table: Table, pipe, label: list, plan: Plan, deadline: float, warmup: int,
               memory_frames: int = 0) -> bool:
    """bench_pipeline for every batch and size of the plan while the time box lasts; False when some
    were left out (each said in a note)."""
    complete = True
    for batch in plan.batches:
        for size in plan.sizes:
            if time_left(deadline) < 8:
                rec.note(f"time box: {' '.join(label)} batch {batch} {size[0]}x{size[1]} not measured")
                complete = False
                continue
            bench_pipeline(table, pipe, label, batch, size, plan.iterations, warmup, memory_frames)
    return complete


def section_bench(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import torch

    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from acr_ros.acr.runtime import tune_process

    nets, mano = fixtures(work)
    device = torch.device(plan.device)
    rec.note("per stage p50 / p95 ms with a synchronisation between stages; total end to end; "
             f"{plan.iterations} timed iterations (each twice: by stage, end to end) after {plan.warmup} warm-up "
             f"runs; memory through torch.cuda; fp16 rows run on to {plan.memory_frames} frames before the last "
             "reading")
    first_frames(rec, work, plan)
    table = rec.table(f"{plan.device} stages and throughput", BENCH_COLUMNS)
    status = "ok"
    for precision in plan.bench_precisions:
        for mode in plan.bench_modes:
            pipe = ACRPipeline(nets["both"], mano, EngineOptions(device=plan.device, precision=precision,
                                                                 **BENCH_MODES[mode]))
            tune_process(pipe.device, pipe.dtype)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if not bench_grid(rec, table, pipe, [precision, mode], plan, deadline, plan.warmup,
                              plan.memory_frames if precision == "fp16" else 0):
                status = "partial"
            del pipe
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return status


# ------------------------------------------------------------------------------------------------
# Section: onnx


def section_onnx(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import onnxruntime

    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from support.tolerances import describe_failures, suite_comparison

    nets, mano = fixtures(work)
    available = onnxruntime.get_available_providers()
    rec.note(f"onnxruntime {onnxruntime.__version__}, providers: {', '.join(available)}")
    # First, before any export in this process: the stalls of MANO + camera beside onnxruntime.
    from ort_beside_torch import COLUMNS, measure

    beside = rec.table(f"MANO + camera on {plan.device} beside onnxruntime (benchmarks/ort_beside_torch.py; fp32, "
                       "batch 1)", COLUMNS)
    measure(beside.add, nets["both"], mano, plan.device, 4 * plan.iterations if not plan.dry_run else 2)
    started = time.perf_counter()
    ort_cpu = ACRPipeline(nets["both"], mano, EngineOptions(device="cpu", runtime="onnxruntime"))
    rec.note(f"export (dynamic batch) and session: {time.perf_counter() - started:.1f} s ({ort_cpu.onnx_export})")
    torch_cpu = ACRPipeline(nets["both"], mano, EngineOptions(device="cpu", precision="fp32"))
    status = "ok"
    same = rec.table("onnxruntime (CPU provider) against torch CPU fp32, the suite's tolerances",
                     ["images", "hands", "keypoints px", "joints m", "vertices m", "within", "outside"])
    for set_name, imgs in image_sets(plan).items():
        c = suite_comparison(torch_cpu(imgs)[0], ort_cpu(imgs)[0])
        same.add(f"{set_name} ({len(imgs)})", c["hands"], c["fields"]["keypoints"]["max"],
                 c["fields"]["joints"]["max"], c["fields"]["vertices"]["max"], c["within"], describe_failures(c))
        status = status if c["within"] else "failed"
    runs = [("torch", torch_cpu), ("onnxruntime", ort_cpu)]
    if plan.device == "cuda":
        runs.append(("torch", ACRPipeline(nets["both"], mano, EngineOptions(device="cuda", precision="fp32"))))
        if "CUDAExecutionProvider" in available:
            runs.append(("onnxruntime", ACRPipeline(nets["both"], mano, EngineOptions(
                device="cuda", runtime="onnxruntime"))))
        else:
            rec.note("no CUDAExecutionProvider in this onnxruntime (the CPU build): the CUDA and TensorRT "
                     "providers were not measured (they come with onnxruntime-gpu)")
    table = rec.table("torch and onnxruntime side by side (fp32, batch 1)",
                      ["runtime", "providers", "device"] + MEASURE_COLUMNS)
    for runtime_name, pipe in runs:
        if time_left(deadline) < 10:
            rec.note(f"time box: {runtime_name} on {pipe.device} not timed")
            status = "partial"
            continue
        bench_pipeline(table, pipe, [runtime_name, ", ".join(pipe.providers) or "-", str(pipe.device)], 1,
                       (640, 480), plan.runtime_iterations, min(plan.warmup, 2))
    return status


# ------------------------------------------------------------------------------------------------
# Section: cpu


def section_cpu(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import torch

    from acr_ros.acr import hardware
    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from acr_ros.acr.precision import auto_pipeline, deviation
    from acr_ros.backends.acr import calibration_images

    nets, mano = fixtures(work)
    if plan.all_cpu_threads:
        torch.set_num_threads(os.cpu_count() or 1)
    rec.note(f"CPU: {hardware.describe_cpu()}; torch threads {torch.get_num_threads()}")
    precisions = ["fp32"]
    if plan.cpu_bf16 == "always" or hardware.has_native_bf16():
        precisions.append("bf16")
    else:
        rec.note("bf16 skipped: no native bf16 on this CPU (emulated, several seconds per frame)")
    pipes = {p: ACRPipeline(nets["both"], mano, EngineOptions(device="cpu", precision=p)) for p in precisions}
    images = photos(plan)
    results = {p: pipe(images)[0] for p, pipe in pipes.items()}
    if "bf16" in results:
        measured = deviation(results["fp32"], results["bf16"])
        rec.note(f"bf16 against fp32 on {len(images)} photo(s): {measured.summary()}")
    table = rec.table("CPU: fp32 and bf16 side by side (batch 1, 640x480)", BENCH_COLUMNS)
    status = "ok"
    for p, pipe in pipes.items():
        if time_left(deadline) < 10:
            rec.note(f"time box: CPU {p} not timed")
            status = "partial"
            continue
        bench_pipeline(table, pipe, [p, "eager"], 1, (640, 480), plan.runtime_iterations, min(plan.warmup, 1))
    # What the ACR backend decides here (the dry run measures on its one photo).
    calibration = images if plan.dry_run else calibration_images()
    _, why = auto_pipeline(nets["both"], mano, EngineOptions(device="cpu"), calibration)
    rec.note(f"precision auto on this CPU: {why}")
    return status


# ------------------------------------------------------------------------------------------------
# Section: ros


ROS_RATE = 30.0


def ros_python(rec: Recorder, work: Path, deadline: float) -> Optional[str]:
    """A Python with ROS 2 and this package's interfaces: this one when it has them, else a venv
    made from the carried wheels (None, with a note saying why, when neither can be had)."""
    import shutil

    if all(importlib.util.find_spec(name) for name in ("rclpy", "acr_ros.msg", "tf2_msgs")):
        rec.note(f"ROS 2 from this Python ({sys.executable}): no carry needed")
        return sys.executable
    wheels = sorted(ROS_CARRY.glob("*.whl"))
    if not wheels:
        rec.note(f"skipped: no ROS 2 in this Python and no wheels in {ROS_CARRY.relative_to(REPO)} (run "
                 "scripts/prepare_gpu_carry.sh before the device call and carry .gpu_carry)")
        return None
    missing = [tool for tool in ("cmake", "c++", "make") if shutil.which(tool) is None]
    if missing:
        rec.note(f"skipped: {', '.join(missing)} not on this machine: the interfaces cannot be built (a cmake wheel "
                 "is 29 MiB, more than the carry has room for beside the ROS wheels)")
        return None
    venv = work / "ros_venv"
    steps = [([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "venv"),
             ([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
               "--no-compile", *map(str, wheels)], f"{len(wheels)} carried wheels installed"),
             (["bash", str(REPO / "scripts" / "interfaces.sh"), str(venv)], "interfaces built")]
    for command, done in steps:
        started = time.perf_counter()
        with open(work / "ros_setup.log", "a") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                    timeout=max(5.0, time_left(deadline) - 30))
        if result.returncode:
            rec.note(f"failed: {' '.join(command[:3])}... exit {result.returncode} (see ros_setup.log)")
            return None
        rec.note(f"{done} in {time.perf_counter() - started:.0f} s")
    return str(venv / "bin" / "python")


def section_ros(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    python = ros_python(rec, work, deadline)
    if python is None:
        return "skipped"
    width, height = plan.ros_size
    result_path = work / "ros_latency.json"
    command = [python, "benchmarks/latency.py", "--backend", "acr", "--device", plan.device, "--precision",
               plan.compile_precision, "--sizes", f"{width}x{height}", "--frames", str(plan.ros_frames), "--warmup",
               str(min(plan.warmup, 3) or 1), "--rate", f"{ROS_RATE:g}", "--json", str(result_path)]
    rec.note("command: " + " ".join(["python", *command[1:-2]]))
    env = {"ROS_DOMAIN_ID": str(1 + os.getpid() % 100), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", **os.environ}
    with open(work / "ros_latency.log", "w") as log:
        try:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                    timeout=max(5.0, time_left(deadline) - 5))
        except subprocess.TimeoutExpired:
            rec.note("stopped at its time box")
            return "partial"
    if result.returncode or not result_path.exists():
        rec.note(f"latency.py exit code {result.returncode}: "
                 + " | ".join((work / "ros_latency.log").read_text().strip().splitlines()[-3:])[:400])
        return "failed"
    table = rec.table(f"the node on {plan.device}: image stamp to ~/hands, {width}x{height} published at "
                      f"{ROS_RATE:g} Hz (target p50 at most 12 ms)",
                      ["input", "sent", "answered", "p50 ms", "p95 ms", "conversion / inference / publish p50 ms"])
    for row in json.loads(result_path.read_text()):
        table.add(row["input"], row["sent"], row["answered"], round(row["p50 ms"], 2), round(row["p95 ms"], 2),
                  " / ".join(str(row[f"{stage} p50 ms"]) for stage in ("conversion", "inference", "publish")))
    return "ok"


# ------------------------------------------------------------------------------------------------
# Section: aot


def section_aot(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import torch

    from acr_ros.acr.aot import build_network_package
    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline, resolve_precision
    from acr_ros.acr.runtime import tune_process

    nets, mano = fixtures(work)
    precision = plan.compile_precision
    package = work / "acr.pt2"
    if plan.real_compile:
        device = torch.device(plan.device)
        seconds = build_network_package(nets["both"], package, device, resolve_precision(precision, device))
        rec.note(f"acr_export --aot's build ({precision}, dynamic batch): {seconds:.0f} s, "
                 f"{package.stat().st_size / 2 ** 20:.0f} MiB")
    else:
        rec.note("dry run: no package built (test_aot.py builds a small one); the pipeline's path with a missing one")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        pipe = ACRPipeline(nets["both"], mano, EngineOptions(device=plan.device, precision=precision,
                                                             aot_package=str(package)))
        loading = time.perf_counter() - started
    rec.note(f"pipeline with aot_package built in {loading:.1f} s: {pipe.aot}")
    refused = [str(w.message) for w in caught if "acr_export --aot" in str(w.message)]
    if plan.real_compile and refused:
        rec.note(f"refused: {refused[0]}")
        return "failed"
    if not plan.real_compile and len(refused) != 1:
        rec.note(f"expected one warning for the missing package, got {refused}")
        return "failed"
    tune_process(pipe.device, pipe.dtype)
    table = rec.table(f"AOTInductor package ({precision})", ["precision", "mode"] + MEASURE_COLUMNS)
    status = "ok"
    if not bench_grid(rec, table, pipe, [precision, "AOT" if plan.real_compile else "eager (no package)"], plan,
                      deadline, min(plan.warmup, 2)):
        status = "partial"
    return status


# ------------------------------------------------------------------------------------------------
# Section: compile


def section_compile(rec: Recorder, work: Path, plan: Plan, deadline: float) -> str:
    import torch

    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from acr_ros.acr.runtime import tune_process
    from engine import test_images

    nets, mano = fixtures(work)
    if not plan.real_compile:
        torch.compile = lambda model, **kwargs: model  # the code path, not the compiler
        rec.note("torch.compile replaced by a no-op (dry run)")
    precision = plan.compile_precision
    pipe = ACRPipeline(nets["both"], mano, EngineOptions(device=plan.device, precision=precision, compile=True))
    tune_process(pipe.device, pipe.dtype)
    table = rec.table(f"torch.compile ({precision}, inductor defaults)",
                      ["precision", "mode", "first call s (compiles)"] + MEASURE_COLUMNS)
    status = "ok"
    for batch in plan.batches:
        if time_left(deadline) < 15:
            rec.note(f"time box: batch {batch} not compiled")
            status = "partial"
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.perf_counter()
            pipe(test_images(plan.sizes[0], batch))
            synchronize(pipe.device)
            first = time.perf_counter() - started
        for w in caught:
            if "torch.compile" in str(w.message):
                rec.note(f"batch {batch}: {w.message}")
                status = "failed"
        for size in plan.sizes:
            bench_pipeline(table, pipe, [precision, "compiled", round(first, 1)], batch, size, plan.iterations,
                           min(plan.warmup, 2))
    return status


RUNNERS = {"tests": section_tests, "fidelity": section_fidelity, "bench": section_bench, "onnx": section_onnx,
           "cpu": section_cpu, "ros": section_ros, "aot": section_aot, "compile": section_compile}


def run_section(name: str, work: Path, plan: Plan, deadline: float) -> int:
    rec = Recorder(work / f"{name}.json")
    try:
        rec.finish(RUNNERS[name](rec, work, plan, deadline))
    except Exception as error:  # reported in the section, the other sections still run
        import traceback

        traceback.print_exc()
        rec.note(f"error: {type(error).__name__}: {str(error)[:300]}")
        rec.finish("failed")
    return 0


# ------------------------------------------------------------------------------------------------
# The orchestrator


def environment(dry_run: bool) -> dict:
    import torch

    from acr_ros.acr import hardware

    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "command": "scripts/gpu_check.sh " + " ".join(sys.argv[1:]), "dry_run": dry_run,
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
           "cpu": hardware.describe_cpu(), "weights": "RANDOM (official layout) + SYNTHETIC MANO: not hands"}
    for module in ("onnxruntime", "onnx"):
        with contextlib.suppress(ImportError):
            env[module] = __import__(module).__version__
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            env["nvidia-smi"] = smi.stdout.strip()
    return env


def write_fixtures(work: Path, dry_run: bool) -> None:
    from support.random_weights import write_random_checkpoint
    from support.synthetic_mano import write_synthetic_mano

    write_random_checkpoint(work / "both.pkl", seed=0, detect="both")
    if not dry_run:
        write_random_checkpoint(work / "far.pkl", seed=0, detect="both", cells={"left": (0, 63), "right": (63, 0)})
    write_synthetic_mano(work / "mano", seed=0)


def targets(sections: dict) -> list[list]:
    """The issue's targets against what was measured (None where not measured)."""
    rows = {t["title"]: t["rows"] for s in sections.values() for t in s.get("tables", [])}
    bench = rows.get("cuda stages and throughput", [])
    col = BENCH_COLUMNS.index
    p50 = [r[col("total p50 ms")] for r in bench if r[0] == "fp16" and r[2] == 1]
    ips = [r[col("images/s")] for r in bench if r[0] == "fp16" and r[2] == 8]
    half = [r for r in rows.get("half precision against fp32 on the device (target: within 1 px and 1 mm)", [])
            if r[2] == "fp16" and str(r[1]).startswith("photos")]
    worst = max((max(r[3], r[4], r[5]) for r in half), default=None)
    ros = [r[3] for title, table in rows.items() if title.startswith("the node on cuda") for r in table]
    measured = [min(p50, default=None), max(ips, default=None), worst, min(ros, default=None)]
    met = [None if measured[0] is None else measured[0] <= TARGETS["fp16 batch-1 total p50 (ms)"],
           None if measured[1] is None else measured[1] >= TARGETS["fp16 batch-8 images/s"],
           None if worst is None else all(r[9] for r in half),
           None if measured[3] is None else measured[3] <= TARGETS["ROS stamp to ~/hands p50, 1080p at 30 Hz (ms)"]]
    return [[name, target, measured[i], met[i]] for i, (name, target) in enumerate(TARGETS.items())]


def render(env: dict, sections: dict) -> str:
    lines = [f"# GPU check{' (DRY RUN: CPU, tiny inputs, measures nothing)' if env['dry_run'] else ''}", ""]
    lines += [f"- {key}: {value}" for key, value in env.items() if key != "dry_run"]
    lines += ["", "## Targets (benchmarks, not tests; best mode each)", "", "| target | goal | measured | met |",
              "|---|---|---|---|"]
    lines += ["| " + " | ".join(fmt(v) if v is not None else "not measured" for v in row) + " |"
              for row in targets(sections)]
    for name, section in sections.items():
        took = f"{section.get('seconds', 0):.0f} s of {section.get('box', 0):.0f}"
        lines += ["", f"## {name}: {section['status']} ({took})", ""]
        lines += [f"- {note}" for note in section.get("notes", [])]
        for table in section.get("tables", []):
            lines += ["", f"{table['title']}:", "", "| " + " | ".join(table["columns"]) + " |",
                      "|" + "---|" * len(table["columns"])]
            lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def run_in_process(name: str, timeout: float, work: Path, log, dry_run: bool) -> dict:
    """One section in its own process group, killed at its time box; what it saved is kept (a GPU
    run; a dry run runs its sections with run_here)."""
    log.write(f"===== {name} (box {timeout:.0f} s)\n")
    log.flush()
    process = subprocess.Popen([sys.executable, __file__, "--section", name, "--work", str(work), "--deadline",
                                str(time.time() + timeout)] + (["--dry-run"] if dry_run else []),
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    path = work / f"{name}.json"
    section = json.loads(path.read_text()) if path.exists() else {"status": "running", "notes": [], "tables": []}
    if section["status"] == "running":
        killed = process.returncode == -signal.SIGKILL
        section["status"] = "partial" if killed else "failed"
        section["notes"].append(f"stopped at its time box of {timeout:.0f} s" if killed
                                else f"exit code {process.returncode} (see sections.log)")
    return section


def run_here(name: str, timeout: float, work: Path, log) -> dict:
    """One dry-run section in this process, its output in the log; it keeps its box by itself."""
    log.write(f"===== {name} (box {timeout:.0f} s, in this process)\n")
    log.flush()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        run_section(name, work, DRY_RUN_PLAN, time.time() + timeout)
    log.flush()
    return json.loads((work / f"{name}.json").read_text())


def write_report(out: Path, env: dict, sections: dict) -> str:
    report = render(env, sections)
    (out / "gpu_check.md").write_text(report)
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "sections": sections,
                                                    "targets": targets(sections)}, indent=1, default=str))
    return report


def orchestrate(args) -> int:
    import torch

    out = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    started = time.time()
    boxes = {name: DRY_RUN_BOX if args.dry_run else box for name, box in SECTIONS}
    boxes.update(args.box)
    chosen = [name for name, _ in SECTIONS if not args.sections or name in args.sections]
    deadline = started + (args.budget or (len(SECTIONS) * DRY_RUN_BOX if args.dry_run else DEFAULT_BUDGET))
    env = environment(args.dry_run)
    if args.dry_run:
        # One thread (here and in the processes the sections start): on a small shared machine, idle
        # OpenMP threads spinning against other jobs cost more than a second thread gains. The dry
        # run measures nothing anyway.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    sections: dict = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_work_") as tmp, open(out / "sections.log", "w") as log:
        work = Path(tmp)

        def time_box(index: int, name: str) -> float:
            # What the later sections are promised stays theirs; None: whatever is left.
            remaining = deadline - time.time() - sum(boxes[n] or 0 for n in chosen[index + 1:])
            return max(0.0, min(boxes[name] if boxes[name] is not None else remaining, remaining))

        for index, name in enumerate(chosen):
            timeout = time_box(index, name)
            if timeout >= 1 and "fixtures (s)" not in env:  # made for the first section that runs
                t0 = time.time()
                write_fixtures(work, args.dry_run)
                env["fixtures (s)"] = round(time.time() - t0, 1)
                timeout = time_box(index, name)
            t0 = time.time()
            if timeout < 1:
                sections[name] = {"status": "skipped", "notes": ["no time left in the budget"], "tables": []}
            elif args.dry_run:
                sections[name] = run_here(name, timeout, work, log)
            else:
                sections[name] = run_in_process(name, timeout, work, log, dry_run=False)
            sections[name].update(seconds=time.time() - t0, box=timeout)
            if (work / "pytest.log").exists():
                (out / "pytest.log").write_text((work / "pytest.log").read_text())
            report = write_report(out, env, sections)
            print(f"[gpu_check] {name}: {sections[name]['status']} in {time.time() - t0:.0f} s", flush=True)
    print(report)
    print(f"[gpu_check] {time.time() - started:.0f} s; report: {out / 'gpu_check.md'}, {out / 'gpu_check.json'}")
    return 0 if all(s["status"] == "ok" for s in sections.values()) else 1


def parse_box(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    if name not in RUNNERS:
        raise argparse.ArgumentTypeError(f"unknown section {name!r}: one of {', '.join(RUNNERS)}")
    return name, float(seconds)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU rehearsal with tiny inputs (CI)")
    ap.add_argument("--out", help="where the report goes (default: $OUT, else a temporary folder)")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds for all sections (GPU default {DEFAULT_BUDGET})")
    ap.add_argument("--sections", nargs="+", choices=list(RUNNERS), help="run only these (default: all)")
    ap.add_argument("--box", type=parse_box, action="append", default=[], metavar="SECTION=SECONDS",
                    help="another time box for a section")
    ap.add_argument("--section", choices=list(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section:
        return run_section(args.section, args.work, DRY_RUN_PLAN if args.dry_run else GPU_PLAN, args.deadline)
    args.box = dict(args.box)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
