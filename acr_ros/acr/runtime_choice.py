"""What runtime "auto" picks: the faster of torch and onnxruntime for the loaded weights on this
machine, measured once and remembered.

Which is faster depends on the CPU, the thread count and how busy the machine is (on a quiet 2-core
Zen 5 they are within 3 %; under load onnxruntime's thread pool holds up far better than torch's
OpenMP: 531 against 869 ms on a 2-core AMD EPYC; docs/benchmarks.md), so neither is a safe default.

Once the network's ONNX export is in the cache (acr_ros.acr.onnx_export: made by the first start
with runtime onnxruntime, 10-30 s, which auto does not spend at configure), the next start times
both on a bundled photo, alternately (a few seconds); the choice and its figures are written
to the cache folder under a key of the CPU (model, instruction sets), the thread count, the torch
and onnxruntime versions and the export's own key (the weights and the engine's code), so that later
starts read it and build only the chosen runtime. Without the export, on CUDA, with a half
precision, with torch.compile, or without onnxruntime, auto is torch without measuring, and says why.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from acr_ros.acr import hardware
from acr_ros.acr.network import ACRNet
from acr_ros.acr.onnx_export import cached_export_path, export_cache_dir, export_form
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline, resolve_device

TIMED_RUNS = 3  # per runtime, alternating, after one untimed run each


def decision_path(net: ACRNet, options: EngineOptions, export: Optional[Path] = None) -> Path:
    """Where the choice for these weights on this machine is remembered (``export``: their
    cached_export_path, when known)."""
    digest = hashlib.blake2b(digest_size=16)
    versions = [importlib.metadata.version(name) for name in ("onnxruntime",)
                if importlib.util.find_spec(name) is not None]
    digest.update(f"{hardware.cpu_model()} {sorted(hardware.cpu_flags())} {torch.get_num_threads()} "
                  f"{torch.__version__} {versions} {list(options.onnx_providers)}".encode())
    digest.update((export or cached_export_path(export_form(net))).name.encode())  # the weights' export key
    return export_cache_dir().parent / "runtime" / f"{digest.hexdigest()}.json"


def _timed(pipelines: dict, image: np.ndarray) -> dict:
    """Median seconds per frame of each pipeline on ``image``, the pipelines taking turns."""
    times = {name: [] for name in pipelines}
    for run in range(1 + TIMED_RUNS):
        for name, pipe in pipelines.items():
            start = time.perf_counter()
            pipe([image])
            if run:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def _remembered(path: Path) -> Optional[dict]:
    try:
        decision = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return decision if isinstance(decision, dict) and decision.get("runtime") in ("torch", "onnxruntime") else None


def auto_runtime(net: ACRNet, mano, options: EngineOptions, images: Sequence[np.ndarray],
                 torch_pipeline: Optional[ACRPipeline] = None) -> tuple[ACRPipeline, str]:
    """The pipeline for runtime "auto" (see the module docstring) and why. ``torch_pipeline``: the
    torch pipeline already built for these options (precision auto builds one), reused."""
    device = resolve_device(options.device)
    on_torch = dataclasses.replace(options, runtime="torch", onnx_providers=())
    torch_pipeline = torch_pipeline or ACRPipeline(net, mano, on_torch)
    precision = torch_pipeline.dtype
    why_torch = ("CUDA (CUDA graphs)" if device.type == "cuda" else
                 f"the network runs in {str(precision).split('.')[-1]}, which the fp32 export does not"
                 if precision != torch.float32 else "torch.compile is on" if options.compile else
                 "an aot_package is given" if options.aot_package else
                 "onnxruntime is not installed" if importlib.util.find_spec("onnxruntime") is None else
                 "no image to measure on" if not images else "")
    if why_torch:
        return torch_pipeline, f"auto: torch ({why_torch})"
    export = cached_export_path(export_form(net))
    path = decision_path(net, options, export)
    decision = _remembered(path)
    on_onnx = dataclasses.replace(options, runtime="onnxruntime", precision="fp32")
    if decision is None and not export.is_file():
        return torch_pipeline, ("auto: torch (not measured against onnxruntime: no ONNX export of these weights "
                                f"in {export.parent}; one start with runtime onnxruntime makes it, and the start "
                                "after that measures both)")
    if decision is None:
        try:
            onnx_pipeline = ACRPipeline(net, mano, on_onnx)
        except Exception as error:  # no export possible here (onnx, onnxscript missing; a failed export)
            return torch_pipeline, f"auto: torch (onnxruntime could not be set up: {type(error).__name__}: {error})"
        seconds = _timed({"torch": torch_pipeline, "onnxruntime": onnx_pipeline}, images[0])
        decision = {"runtime": min(seconds, key=seconds.get),
                    **{f"{name}_ms": round(s * 1e3, 1) for name, s in seconds.items()},
                    "cpu": hardware.describe_cpu(), "threads": torch.get_num_threads(),
                    "measured": datetime.datetime.now().isoformat(timespec="seconds")}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.partial")
            partial.write_text(json.dumps(decision, indent=1))
            partial.replace(path)
        except OSError as error:
            warnings.warn(f"cannot remember the runtime choice in {path.parent} ({error.strerror or error}): it is "
                          "measured again at every start; set ACR_ROS_CACHE_DIR to a writable folder",
                          RuntimeWarning, stacklevel=2)
        how = f"measured now on this CPU, {decision['threads']} threads"
        chosen = onnx_pipeline if decision["runtime"] == "onnxruntime" else torch_pipeline
    else:
        how = f"measured {decision.get('measured', 'earlier')} on this CPU, {decision.get('threads')} threads, {path}"
        chosen = ACRPipeline(net, mano, on_onnx) if decision["runtime"] == "onnxruntime" else torch_pipeline
    figures = f"onnxruntime {decision.get('onnxruntime_ms')} ms, torch {decision.get('torch_ms')} ms a frame"
    return chosen, f"auto: {decision['runtime']} ({figures}; {how})"
