"""The ACR :class:`~acr_ros.backends.base.HandBackend`: the engine (``acr_ros.acr``) behind the
backend protocol."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch

from acr_ros.acr.checkpoint import checkpoint_id, load_acr_network
from acr_ros.acr.hands import SIDES, CameraIntrinsics, FrameResult, HandResult, default_intrinsics
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import EngineOptions
from acr_ros.acr import runtime
from acr_ros.acr.pipeline import PRECISION_NAMES, ACRPipeline, HandRows, resolve_device
from acr_ros.acr.precision import auto_pipeline
from acr_ros.acr.runtime_choice import auto_runtime
from acr_ros.acr.smoothing import HandSmoother
from acr_ros.backends.base import ACR_THRESHOLD, BackendOutOfMemoryError, check_batch

# Bundled photos (acr_ros/data/samples: both sides, and a close-up) on which precision "auto"
# measures bf16 against fp32 on a CPU with native bf16.
CALIBRATION_PHOTOS = tuple(Path(__file__).resolve().parents[1] / "data" / "samples" / name
                           for name in ("two_hands.jpg", "portrait.jpg"))


def calibration_images() -> list[np.ndarray]:
    return [image for image in (cv2.imread(str(path)) for path in CALIBRATION_PHOTOS) if image is not None]


def _precision_reason(options: EngineOptions) -> str:
    """Why the precision is what it is, where nothing was measured."""
    return "requested" if options.precision != "auto" else "auto: the onnxruntime export is fp32"


def _hand(rows: HandRows[np.ndarray], i: int, s: int) -> HandResult:
    t = rows.translation[i, s]
    return HandResult(
        side=SIDES[s],
        score=float(rows.scores[i, s]),
        joints=(rows.joints[i, s] + t).astype(np.float32),
        keypoints=rows.keypoints[i, s].astype(np.float32),
        wrist_rotation=rows.orient_matrix[i, s].astype(np.float32),
        global_orient=rows.global_orient[i, s].astype(np.float32),
        finger_pose=rows.finger_pose[i, s].astype(np.float32),
        shape=rows.betas[i, s].astype(np.float32),
        weak_camera=rows.cam[i, s].astype(np.float32),
        vertices=(rows.vertices[i, s] + t).astype(np.float32),
        joint_rotations=rows.joint_rotations[i, s].astype(np.float32),
    )


class ACRBackend:
    """ACR from the official checkpoint and the MANO files.

    checkpoint: path of the official wild.pkl; mano_dir: folder with MANO_LEFT.pkl / MANO_RIGHT.pkl.
    options: how the engine runs (EngineOptions: device, precision, runtime, threshold, ...). With
    precision "auto", fp16 on CUDA, or bf16 on a CPU with native bf16, is measured against fp32 on
    the bundled photos and kept only when close enough (acr_ros.acr.precision); ``precision`` says
    what runs ("fp32", ...) and ``precision_reason`` why. With runtime "auto" (CPU, fp32) torch and
    onnxruntime are measured once per machine and weights and the faster kept
    (acr_ros.acr.runtime_choice); ``runtime`` says which runs and ``runtime_reason`` why; with
    onnxruntime ``onnx_export`` says whether the network's export was read from the cache or made anew,
    with an aot_package ``aot`` whether it was loaded (or why not: then a warning, and the network runs
    without it).
    smoothing: a SmoothingConfig turns on One-Euro smoothing per (stream, side); None keeps the raw
    per-frame results. tune_process: apply the engine's process-wide settings for its device
    (acr_ros.acr.runtime; entry points opt in, libraries leave it off). On CUDA a blank frame runs
    once while loading, so that the first camera frame does not pay for cuDNN autotuning and the
    capture of the CUDA graphs.
    Raises CheckpointError / ManoFileError (ValueError) for bad model files.
    """

    name = "acr"
    model = "ACR HRNet-W32 + MANO"
    threshold = ACR_THRESHOLD
    static_image_mode = False  # each image is reconstructed on its own either way

    def __init__(self, checkpoint: Union[str, Path], mano_dir: Union[str, Path],
                 options: EngineOptions = EngineOptions(), smoothing: Optional[SmoothingConfig] = None,
                 tune_process: bool = False):
        resolve_device(options.device)  # a device that is not there fails before the model loads
        net = load_acr_network(checkpoint)
        mano = ManoLayer.from_directory(mano_dir)
        self.checkpoint = checkpoint_id(checkpoint)
        pipeline, self.precision_reason = None, _precision_reason(options)
        if options.precision == "auto" and options.runtime != "onnxruntime":
            on_torch = dataclasses.replace(options, runtime="torch", onnx_providers=())
            pipeline, self.precision_reason = auto_pipeline(net, mano, on_torch, calibration_images())
        if options.runtime == "auto":
            self.pipeline, self.runtime_reason = auto_runtime(net, mano, options, calibration_images(), pipeline)
        else:
            self.pipeline, self.runtime_reason = pipeline or ACRPipeline(net, mano, options), "requested"
        self.runtime = "onnxruntime" if self.pipeline.providers else "torch"
        self.precision = PRECISION_NAMES[self.pipeline.dtype]
        if self.pipeline.providers:
            self.model = f"{self.model} (onnxruntime: {', '.join(self.pipeline.providers)})"
        self.onnx_export = self.pipeline.onnx_export  # where the runtime's export came from; "" with torch
        self.aot = self.pipeline.aot  # the aot_package loaded, or why not; "" without one
        if tune_process:
            runtime.tune_process(self.pipeline.device, self.pipeline.dtype)
        self.device = str(self.pipeline.device)
        if self.pipeline.device.type == "cuda":
            # The one-time work of a GPU (cuDNN autotuning, capturing the CUDA graphs of batch 1)
            # happens here, while the model loads, not on the first camera frame.
            self.pipeline([np.full((480, 640, 3), 128, np.uint8)])
        self.smoother = HandSmoother(smoothing) if smoothing is not None else None
        self._lock = threading.Lock()

    @property
    def detection_threshold(self) -> float:
        return self.pipeline.detection_threshold

    @detection_threshold.setter
    def detection_threshold(self, value: float) -> None:
        self.pipeline.detection_threshold = value

    def faces(self, side: str) -> Optional[np.ndarray]:
        return self.pipeline.mano_layer.faces(side)

    def set_smoothing(self, config: Optional[SmoothingConfig]) -> None:
        """Switch smoothing on (a new config, fresh filter state) or off (None)."""
        with self._lock:
            self.smoother = HandSmoother(config) if config is not None else None

    def reset(self) -> None:
        """Forget the smoothing state of every stream."""
        with self._lock:
            if self.smoother is not None:
                self.smoother.reset()

    def reset_side(self, stream: str, side: str) -> None:
        with self._lock:
            if self.smoother is not None:
                self.smoother.reset_side(stream, SIDES.index(side))

    def close(self) -> None:
        """Drops the network, MANO and the smoothing state and, on CUDA, hands the cached GPU memory
        back to the driver; the backend cannot reconstruct afterwards."""
        with self._lock:
            self.pipeline = self.smoother = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def reconstruct(self, images: Sequence[np.ndarray], intrinsics: Sequence[Optional[CameraIntrinsics]],
                    timestamps: Sequence[float], streams: Sequence[str]) -> list[FrameResult]:
        check_batch(images, intrinsics, timestamps, streams)
        if not images:
            return []
        # The K that places each image's hands: the given one or ACR's default for its size.
        used = [k if k is not None else default_intrinsics(img.shape[1], img.shape[0])
                for img, k in zip(images, intrinsics)]
        with self._lock:
            try:
                rows, _ = self.pipeline(list(images), used, self.smoother, list(streams), list(timestamps))
            except torch.OutOfMemoryError as error:  # PyTorch freed its cache and retried already
                raise BackendOutOfMemoryError(str(error)) from error
        frames = []
        for i, k in enumerate(intrinsics):
            hands = [_hand(rows, i, s) for s in range(len(SIDES)) if rows.detected[i, s]]
            frames.append(FrameResult(hands=hands, default_intrinsics=k is None, intrinsics=used[i]))
        return frames
