"""ACR hand reconstruction: images in, :class:`~acr_ros.hands.FrameResult` out.

Two levels:

* :class:`ACRPipeline`, the tensor API (also what the benchmark times stage by stage):
  ``preprocess`` -> ``network`` -> ``decode`` -> (smoothing) -> ``mano`` -> ``readback``.
  Everything between the upload and the single readback stays on the device with fixed shapes
  (two rows [left, right] per image and a ``detected`` mask): no GPU->CPU synchronisation.
* :class:`ACRBackend`, the :class:`~acr_ros.hands.HandBackend` the node and the CLI use.

Results follow the official ACR demo (SPEC §2-§6): the weak-perspective keypoints in the original
image (``pj2d_org``), MANO joints and vertices root-aligned on the middle MCP plus the closed-form
translation (official camera f = 1265 at 512 unless intrinsics are given).
"""
from __future__ import annotations

import copy
import ctypes
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from acr_ros.acr import parser
from acr_ros.acr.camera import camera_translation, estimate_translation, intrinsics_tensor, project_to_original
from acr_ros.acr.checkpoint import checkpoint_id, load_acr_network
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.network import ACRNet, FastACR
from acr_ros.acr.preprocess import Letterbox, letterbox_tensor, preprocess_batch, preprocess_exact, upload
from acr_ros.acr.rotation import axis_angle_to_matrix, matrix_to_axis_angle
from acr_ros.acr.smoothing import HandSmoother, SmoothingConfig
from acr_ros.backends import PRECISIONS
from acr_ros.hands import LEFT, RIGHT, CameraIntrinsics, FrameResult, HandResult, check_batch, default_intrinsics

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TRANSLATIONS = ("closed_form", "least_squares")
PREPROCESS = ("auto", "exact", "device")
SIDES = (LEFT, RIGHT)


_ALLOCATOR_TUNED = False


def tune_cpu_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """glibc only, process-wide, once: serve the network's multi-megabyte activations from the
    heap instead of a fresh mmap (and page faults) for every one of them. On a 2-core CPU this
    removes about half of the non-convolution time. Off with ACR_ROS_MALLOC_TUNING=0.
    Returns whether the setting is in effect."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("ACR_ROS_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, int(mmap_threshold)) == 1
        ok = ok and libc.mallopt(m_trim_threshold, int(trim_threshold)) == 1
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[precision]


class _CudaGraphNetwork:
    """Replays a captured CUDA graph of FastACR.forward per batch size (static input buffer)."""

    def __init__(self, fast: FastACR):
        self.fast = fast
        self.graphs: dict = {}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # The threshold and the suppression switch are constants inside a captured graph.
        key = (tuple(x.shape), x.dtype, self.fast.detection_threshold, self.fast.suppress_duplicate_hands,
               self.fast.duplicate_distance)
        if key not in self.graphs:
            static_x = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self.fast(static_x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fast(static_x)
            self.graphs[key] = (graph, static_x, static_out)
        graph, static_x, static_out = self.graphs[key]
        static_x.copy_(x)
        graph.replay()
        return {k: v.clone() for k, v in static_out.items()}


class ACRPipeline:
    """The tensor-level ACR inference engine (see the module docstring).

    ``net`` is a loaded :class:`ACRNet` (eval mode, fp32); ``mano`` a :class:`ManoLayer`.
    ``compile``: False, True (torch.compile; on CPU with inductor freezing) or a torch.compile
    mode string; it falls back to eager (with a warning) if compilation fails.
    ``cuda_graphs``: capture the network stage in CUDA graphs (CUDA only; one per batch size).
    """

    def __init__(self, net: ACRNet, mano: ManoLayer, device: Union[str, torch.device] = "auto",
                 precision: str = "auto", detection_threshold: float = parser.CENTER_THRESHOLD,
                 suppress_duplicate_hands: bool = False, duplicate_distance: float = parser.DUPLICATE_DISTANCE,
                 translation: str = "closed_form", preprocess: str = "auto",
                 compile: Union[bool, str] = False, cuda_graphs: bool = False, channels_last: bool = True,
                 tune_allocator: bool = True):
        self.device = resolve_device(device)
        if self.device.type == "cpu" and tune_allocator:
            tune_cpu_allocator()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed 512x512 input: pick the fastest kernels once
        self.dtype = resolve_precision(precision, self.device)
        if self.device.type == "cuda" and self.dtype == torch.float32:
            # "fp32" means fp32: cuDNN would otherwise run the convolutions in TF32 (process-wide).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if translation not in TRANSLATIONS:
            raise ValueError(f"translation must be one of {TRANSLATIONS}, got {translation!r}")
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        self.translation = translation
        # CPU: OpenCV's letterbox + bicubic is the official input bit for bit and fast on the CPU;
        # CUDA: pad + bicubic on the device (within one intensity level of OpenCV).
        self.preprocess_mode = ("exact" if self.device.type == "cpu" else "device") if preprocess == "auto" else preprocess
        self.fast = FastACR(net, dtype=self.dtype, channels_last=channels_last,
                            detection_threshold=detection_threshold,
                            suppress_duplicate_hands=suppress_duplicate_hands,
                            duplicate_distance=duplicate_distance).to(self.device)
        self.mano_layer = copy.deepcopy(mano).to(self.device)  # .to() moves in place: keep the caller's
        self._network = self.fast
        self._compiled = False
        if compile:
            self._network = self._compile(compile)
        if cuda_graphs:
            if self.device.type != "cuda":
                warnings.warn("cuda_graphs needs a CUDA device; ignored", RuntimeWarning, stacklevel=2)
            else:
                self._network = _CudaGraphNetwork(self._network if not self._compiled else self.fast)

    # -- configuration ------------------------------------------------------------------------------

    @property
    def detection_threshold(self) -> float:
        return self.fast.detection_threshold

    @detection_threshold.setter
    def detection_threshold(self, value: float) -> None:
        self.fast.detection_threshold = float(value)

    def _compile(self, mode):
        try:
            options = {"freezing": True} if self.device.type == "cpu" else None
            kwargs = {"mode": mode} if isinstance(mode, str) else {}
            if options and "mode" not in kwargs:
                kwargs["options"] = options
            compiled = torch.compile(self.fast, dynamic=False, **kwargs)
        except Exception as e:  # no compiler / unsupported platform
            warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running eagerly",
                          RuntimeWarning, stacklevel=3)
            return self.fast
        self._compiled = True
        return compiled

    # -- stages -------------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        """BGR uint8 images (any sizes) -> normalised (B, 3, 512, 512) float32 on the device."""
        if self.preprocess_mode == "device":
            return preprocess_batch(images, self.device)
        rgbs, lbs = zip(*(preprocess_exact(img) for img in images))
        x = upload(np.stack(rgbs), self.device).permute(0, 3, 1, 2).float()
        return (x / 255.0 * 2.0 - 1.0).contiguous(), list(lbs)

    def network(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """FastACR on normalised images: detection and the 109 parameters per [left, right] row."""
        with torch.inference_mode():
            if self._compiled:
                try:
                    return self._network(x)
                except Exception as e:  # compilation happens lazily, on the first call
                    warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); running eagerly",
                                  RuntimeWarning, stacklevel=2)
                    self._network, self._compiled = self.fast, False
            return self._network(x)

    @staticmethod
    def decode(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Split and decode the parameters (6D -> matrices / axis-angle), rows (B, 2, ...)."""
        with torch.inference_mode():
            d = parser.decode_params(out["params"])
            d.update(detected=out["detected"], scores=out["scores"], cells=out["cells"],
                     prior_applied=out["prior_applied"])
            return d

    def mano(self, d: dict[str, torch.Tensor], letterbox_params: torch.Tensor,
             intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batched MANO for both sides of all images in one call, weak-perspective keypoints in the
        original image, and the translation. letterbox_params (B, 3) [S, pad_left, pad_top];
        intrinsics (B, 4) [fx, fy, cx, cy] in original pixels (official defaults where none)."""
        with torch.inference_mode():
            b = d["cam"].shape[0]
            n = 2 * b
            side = torch.arange(2, device=self.device).repeat(b)                       # 0,1,0,1,...
            orient = d["orient_matrix"].reshape(n, 3, 3)
            out = self.mano_layer(side, orient, d["finger_pose"].reshape(n, 45), d["betas"].reshape(n, 10))
            cam = d["cam"].reshape(n, 3)
            lp = letterbox_params.to(self.device, torch.float32).repeat_interleave(2, 0)
            k = intrinsics.to(self.device, torch.float32).repeat_interleave(2, 0)
            keypoints = project_to_original(out.joints, cam, lp)
            if self.translation == "closed_form":
                trans = camera_translation(cam, lp, k)
            else:
                trans = estimate_translation(out.joints, keypoints, k)
            res = dict(d)
            res.update(
                joints=out.joints.reshape(b, 2, 21, 3),
                vertices=out.vertices.reshape(b, 2, -1, 3),
                joint_rotations=out.joint_rotations.reshape(b, 2, 21, 3, 3),
                keypoints=keypoints.reshape(b, 2, 21, 2),
                translation=trans.reshape(b, 2, 3),
            )
            return res

    @staticmethod
    def readback(res: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The one device->host transfer (this is where a CUDA run synchronises)."""
        return {k: v.detach().cpu().numpy() for k, v in res.items()}

    # -- all together ---------------------------------------------------------------------------------

    def run(self, x: torch.Tensor, letterbox_params: torch.Tensor, intrinsics: torch.Tensor,
            smoother: Optional[HandSmoother] = None, streams: Sequence = (), timestamps: Sequence[float] = ()
            ) -> dict[str, torch.Tensor]:
        """Device tensors for a preprocessed batch (no host synchronisation)."""
        d = self.decode(self.network(x))
        if smoother is not None:
            with torch.inference_mode():
                orient, fingers, betas = smoother(list(streams), list(timestamps), d["orient_matrix"],
                                                  d["finger_pose"], d["betas"], d["detected"])
                # As official: the smoothed matrix goes back to axis-angle (then MANO's Rodrigues).
                aa = matrix_to_axis_angle(orient)
                d.update(global_orient=aa, orient_matrix=axis_angle_to_matrix(aa), finger_pose=fingers, betas=betas)
        return self.mano(d, letterbox_params, intrinsics)

    def __call__(self, images: Sequence[np.ndarray], intrinsics: Optional[Sequence[Optional[CameraIntrinsics]]] = None,
                 smoother: Optional[HandSmoother] = None, streams: Sequence = (),
                 timestamps: Sequence[float] = ()) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
        """Images -> host arrays (rows [left, right] per image) and the letterboxes."""
        x, lbs = self.preprocess(images)
        intr = list(intrinsics) if intrinsics is not None else [None] * len(images)
        lp = letterbox_tensor(lbs, self.device)
        k = intrinsics_tensor(intr, lbs, self.device)
        res = self.run(x, lp, k, smoother, streams, timestamps)
        return self.readback(res), lbs


def _hand(arr: dict[str, np.ndarray], i: int, s: int) -> HandResult:
    t = arr["translation"][i, s]
    return HandResult(
        side=SIDES[s],
        score=float(arr["scores"][i, s]),
        joints=(arr["joints"][i, s] + t).astype(np.float32),
        keypoints=arr["keypoints"][i, s].astype(np.float32),
        wrist_rotation=arr["orient_matrix"][i, s].astype(np.float32),
        global_orient=arr["global_orient"][i, s].astype(np.float32),
        finger_pose=arr["finger_pose"][i, s].astype(np.float32),
        shape=arr["betas"][i, s].astype(np.float32),
        weak_camera=arr["cam"][i, s].astype(np.float32),
        vertices=(arr["vertices"][i, s] + t).astype(np.float32),
        joint_rotations=arr["joint_rotations"][i, s].astype(np.float32),
    )


class ACRBackend:
    """The ACR :class:`~acr_ros.hands.HandBackend`.

    checkpoint: path of the official wild.pkl; mano_dir: folder with MANO_LEFT.pkl / MANO_RIGHT.pkl.
    device "auto" (CUDA when available), precision "auto" (fp16 on CUDA, fp32 on CPU).
    detection_threshold: raw center-map peak (official 0.35). smoothing: a SmoothingConfig turns on
    One-Euro smoothing per (stream, side); None keeps the raw per-frame results.
    suppress_duplicate_hands (off: official behaviour): when both sides fire within
    ``duplicate_distance`` cells (64 grid), keep only the higher score (upstream issue #22).
    translation "closed_form" (official weak-perspective conversion) or "least_squares" (batched
    linear fit of the joints to the keypoints). compile: torch.compile (see ACRPipeline).
    Raises CheckpointError / ManoFileError (ValueError) for bad model files.
    """

    name = "acr"
    model = "ACR HRNet-W32 + MANO"

    def __init__(self, checkpoint: Union[str, Path], mano_dir: Union[str, Path], device: str = "auto",
                 precision: str = "auto", detection_threshold: float = parser.CENTER_THRESHOLD,
                 smoothing: Optional[SmoothingConfig] = None, suppress_duplicate_hands: bool = False,
                 translation: str = "closed_form", compile: Union[bool, str] = False,
                 duplicate_distance: float = parser.DUPLICATE_DISTANCE, preprocess: str = "auto",
                 cuda_graphs: bool = False):
        dev = resolve_device(device)
        resolve_precision(precision, dev)  # fail early on a bad value
        net = load_acr_network(checkpoint)
        mano = ManoLayer.from_directory(mano_dir)
        self.checkpoint = checkpoint_id(checkpoint)
        self.pipeline = ACRPipeline(net, mano, dev, precision, detection_threshold, suppress_duplicate_hands,
                                    duplicate_distance, translation, preprocess, compile, cuda_graphs)
        self.device = self.pipeline.device
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

    def close(self) -> None:
        """Drops the network, MANO and the smoothing state and, on CUDA, hands the cached GPU memory
        back to the driver; the backend cannot reconstruct afterwards."""
        with self._lock:
            self.pipeline = self.smoother = None
        if self.device.type == "cuda":
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
            arr, _ = self.pipeline(list(images), used, self.smoother, list(streams), list(timestamps))
        frames = []
        for i, k in enumerate(intrinsics):
            hands = [_hand(arr, i, s) for s in (0, 1) if arr["detected"][i, s]]
            frames.append(FrameResult(hands=hands, default_intrinsics=k is None, intrinsics=used[i]))
        return frames
