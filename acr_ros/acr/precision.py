"""How far a lower precision moves the results, and what precision "auto" picks.

Half precision runs the network faster (fp16 on CUDA about twice as fast as fp32; bf16 two to three
times on a CPU with native bf16 arithmetic, AMX or AVX512-BF16), but how far it moves the hands
depends on the weights. So precision "auto" runs the loaded weights in fp32 and in the half
precision on a few calibration images (the backend's bundled photos) and keeps the half precision
only when every detection agrees and the deviations stay within HALF_PRECISION_TOLERANCE: fp16 on
CUDA, bf16 on a CPU with native bf16; on any other CPU it is fp32 without measuring.

Why measure rather than decide by device (benchmarks/half_precision.py, docs/benchmarks.md): on weights
calibrated like a trained network's (test/support/calibrated_weights.py) bf16 moves keypoints by
0.5-1.6 px and joints by 0.1-0.4 mm on the bundled photos, right at the tolerance (whether it passes
depends on the weights), fp16 by 0.05 px; on plain random weights bf16 moves them 70 px, fp16 6 px.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from acr_ros.acr import hardware
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline, HandRows, resolve_device, uses_cuda_graphs


@dataclass(frozen=True)
class Tolerance:
    keypoints_px: float
    joints_mm: float
    vertices_mm: float


# fp16/bf16 against fp32 (issue 15): within 1 px and 1 mm.
HALF_PRECISION_TOLERANCE = Tolerance(keypoints_px=1.0, joints_mm=1.0, vertices_mm=1.0)


@dataclass(frozen=True)
class Deviation:
    """The largest coordinate difference between two runs over the hands both detected: keypoints
    in pixels of the original image, root-aligned joints and vertices and the translation in mm."""

    keypoints_px: float
    joints_mm: float
    vertices_mm: float
    translation_mm: float
    detections_agree: bool  # the same number of hands in every image
    sides_agree: bool       # the same sides in every image
    compared_hands: int

    def within(self, tolerance: Tolerance) -> bool:
        return (self.detections_agree and self.sides_agree and self.compared_hands > 0
                and self.keypoints_px <= tolerance.keypoints_px and self.joints_mm <= tolerance.joints_mm
                and self.vertices_mm <= tolerance.vertices_mm)

    def summary(self) -> str:
        if not self.compared_hands:
            return "no hand detected by both"
        agree = "detections agree" if self.sides_agree else "DETECTIONS OR SIDES DIFFER"
        return (f"keypoints {self.keypoints_px:.3g} px, joints {self.joints_mm:.3g} mm, vertices "
                f"{self.vertices_mm:.3g} mm, translation {self.translation_mm:.3g} mm over "
                f"{self.compared_hands} hands, {agree}")


def deviation(reference: HandRows[np.ndarray], other: HandRows[np.ndarray]) -> Deviation:
    """How far ``other`` is from ``reference`` (two readbacks of the same images)."""
    both = reference.detected & other.detected

    def worst(field: str, scale: float = 1.0) -> float:
        if not both.any():
            return 0.0
        a = np.asarray(getattr(reference, field), np.float64)[both]
        b = np.asarray(getattr(other, field), np.float64)[both]
        return float(np.abs(a - b).max() * scale)

    return Deviation(
        keypoints_px=worst("keypoints"), joints_mm=worst("joints", 1e3), vertices_mm=worst("vertices", 1e3),
        translation_mm=worst("translation", 1e3),
        detections_agree=bool(np.array_equal(reference.detected.sum(1), other.detected.sum(1))),
        sides_agree=bool(np.array_equal(reference.detected, other.detected)),
        compared_hands=int(both.sum()))


@contextlib.contextmanager
def fp32_without_tf32(device: torch.device = torch.device("cuda")):
    """fp32 on CUDA as real fp32 inside the block (what runtime.tune_process sets for fp32): cuDNN's
    default TF32 convolutions round like fp16. The flags are restored afterwards."""
    if device.type != "cuda":
        yield
        return
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def auto_pipeline(net, mano, options: EngineOptions, calibration_images: Sequence[np.ndarray],
                  tolerance: Tolerance = HALF_PRECISION_TOLERANCE) -> tuple[ACRPipeline, str]:
    """The pipeline for precision "auto" with runtime torch (see the module docstring), and why its
    precision was chosen."""
    device = resolve_device(options.device)
    half = "fp16" if device.type == "cuda" else "bf16"
    graphs = uses_cuda_graphs(options, device)
    # With CUDA graphs the one-off calibration runs are eager and the chosen pipeline is built anew
    # (no graphs captured for them); without, the measured pipeline is the one that runs.
    measuring = dataclasses.replace(options, cuda_graphs=False) if graphs else options

    def pipeline(name: str, runs: EngineOptions = options) -> ACRPipeline:
        return ACRPipeline(net, mano, dataclasses.replace(runs, precision=name))

    if device.type == "cpu" and not hardware.has_native_bf16():
        return pipeline("fp32"), "auto: this CPU has no native bf16 (AMX or AVX512-BF16)"
    if not calibration_images:
        return pipeline("fp32"), f"auto: no calibration images to measure {half} on"
    images = list(calibration_images)
    fp32, candidate = pipeline("fp32", measuring), pipeline(half, measuring)
    with fp32_without_tf32(device):
        reference = fp32(images)[0]
    measured = deviation(reference, candidate(images)[0])
    where = f"on {len(images)} calibration image(s)"
    if not measured.compared_hands:
        chosen, why = fp32, f"auto: no hand detected {where}, {half} not measured"
    elif measured.within(tolerance):
        native = "native bf16" if half == "bf16" else "fp16 on CUDA"
        chosen, why = candidate, f"auto: {native}, against fp32 {where}: {measured.summary()}"
    else:
        chosen, why = fp32, (f"auto: {half} would move the results beyond {tolerance.keypoints_px:g} px / "
                             f"{tolerance.joints_mm:g} mm {where}: {measured.summary()}")
    return (pipeline(chosen.options.precision) if graphs else chosen), why
