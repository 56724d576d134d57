"""Process-wide settings that make inference faster or exact, for entry points to opt into.

The library never changes them by itself (importing or constructing anything leaves the process as
it was); the node, the offline CLI and the benchmark call :func:`tune_process` once they know the
device and precision, and every executable calls :func:`passive_openmp_waits` before torch loads.
torch is imported by tune_process only: tune_cpu_allocator serves callers
without it too (acr_offline reading recordings with the embedded backend).
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def tune_cpu_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """glibc only: serve the network's multi-megabyte activations from the heap instead of a fresh
    mmap (and page faults) for every one of them. On a 2-core CPU this removes about half of the
    non-convolution time. Off with ACR_ROS_MALLOC_TUNING=0. Returns whether the setting is in effect."""
    if os.environ.get("ACR_ROS_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")  # feature probe: glibc's mallopt
        m_trim_threshold, m_mmap_threshold = -1, -3
        return (libc.mallopt(m_mmap_threshold, int(mmap_threshold)) == 1
                and libc.mallopt(m_trim_threshold, int(trim_threshold)) == 1)
    except (OSError, AttributeError):
        return False


def freeze_collector() -> None:
    """Collect once, then move every object alive now (the model's modules, the imported libraries,
    an ONNX exporter's registries: 200 000 to 600 000 objects) out of the cyclic garbage
    collector's generations (gc.freeze). Its full collections otherwise walk all of them, and the
    frame that triggers one waits: 0.13 s with the torch pipeline loaded, 0.52 s after the ONNX
    export, on a loaded 2-core CPU (benchmarks/ort_beside_torch.py); the p95 stalls of MANO +
    camera beside onnxruntime on a GPU. Objects frozen stay out of cyclic collection (reference
    counting still frees them)."""
    gc.collect()
    gc.freeze()


def passive_openmp_waits() -> bool:
    """Idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless the
    environment sets a policy of its own). Spinning is libgomp's default (GOMP_SPINCOUNT 300000
    after every parallel region): torch's threads then burn the CPU between the network's layers
    and after each frame, which on a shared robot computer slows every other process (and the
    node's own other threads). The OpenMP runtime reads the variable once, when torch loads it: the
    executables call this first thing, before torch is imported. Returns whether it can still take
    effect (False when torch is loaded already)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def tune_process(device: torch.device, dtype: torch.dtype) -> None:
    """Process-wide settings for running the engine on ``device`` in ``dtype``, once it is loaded:

    * every device: the garbage collector frozen (:func:`freeze_collector`);
    * CPU: the glibc allocator tuning above;
    * CUDA: cuDNN autotuning (the input is always 512x512: the fastest kernels are picked once);
      fp32 means fp32, so TF32 is switched off for convolutions and matmuls.
    """
    import torch

    freeze_collector()
    if device.type == "cpu":
        tune_cpu_allocator()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if dtype == torch.float32:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
