"""ACR hand reconstruction on tensors: images in, fixed-size rows [left, right] per image out.

:class:`ACRPipeline` runs the stages ``preprocess`` -> ``network`` -> ``decode`` -> (smoothing)
-> ``mano`` -> ``readback`` (also what the benchmark times stage by stage). Everything between the
upload and the single readback stays on the device with fixed shapes (two rows [left, right] per
image and a ``detected`` mask): no GPU->CPU synchronisation. Stages hand each other small
dataclasses of tensors: :class:`~acr_ros.acr.network.NetworkOutput`,
:class:`~acr_ros.acr.parser.HandParams` and :class:`HandRows`.

Results follow the official ACR demo (docs/architecture.md, "The engine"): the weak-perspective
keypoints in the original image (``pj2d_org``), MANO joints and vertices root-aligned on the middle
MCP plus the closed-form translation (official camera f = 1265 at 512 unless intrinsics are given).
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Generic, Optional, Sequence, TypeVar, Union

import numpy as np
import torch

from acr_ros.acr import parser
from acr_ros.acr.camera import camera_translation, intrinsics_tensor, project_to_original
from acr_ros.acr.hands import CameraIntrinsics
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.network import ACRNet, FastACR, NetworkOutput
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.preprocess import Letterbox, letterbox_tensor, preprocess_batch, preprocess_exact, upload
from acr_ros.acr.rotation import axis_angle_to_matrix, matrix_to_axis_angle
from acr_ros.acr.smoothing import HandSmoother

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_NAMES = {dtype: name for name, dtype in _DTYPES.items()}

Array = TypeVar("Array", torch.Tensor, np.ndarray)


@dataclass
class HandRows(Generic[Array]):
    """Everything the engine computes, rows [left, right] per image (B images): tensors on the
    device until :meth:`ACRPipeline.readback` turns them into numpy arrays."""

    detected: Array         # (B, 2) bool
    scores: Array           # (B, 2) raw center-map peak
    cells: Array            # (B, 2) int64 flat 64-grid cell of each side's peak
    prior_applied: Array    # (B,) bool: the cross-hand prior was added
    cam: Array              # (B, 2, 3) weak-perspective (s, tx, ty)
    orient_matrix: Array    # (B, 2, 3, 3) MANO root rotation
    global_orient: Array    # (B, 2, 3) the same as axis-angle
    finger_pose: Array      # (B, 2, 45) axis-angle relative to the MANO mean pose
    betas: Array            # (B, 2, 10)
    joints: Array           # (B, 2, 21, 3) metres, root-aligned on the middle MCP
    vertices: Array         # (B, 2, 778, 3) metres, root-aligned
    joint_rotations: Array  # (B, 2, 21, 3, 3)
    keypoints: Array        # (B, 2, 21, 2) pixels of the original image
    translation: Array      # (B, 2, 3) metres: add to joints and vertices for the camera frame


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device, runtime: str = "torch") -> torch.dtype:
    """The network dtype of a precision choice (options.PRECISIONS) on ``device``: auto is fp16 on
    CUDA and fp32 otherwise (ACRBackend may pick bf16 on a CPU after measuring it,
    acr_ros.acr.precision); the onnxruntime runtime runs fp32."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" and runtime == "torch" else torch.float32
    return _DTYPES[precision]


class _CudaGraphNetwork:
    """Replays a captured CUDA graph of FastACR.forward per batch shape (static input buffer)."""

    def __init__(self, fast: FastACR):
        self.fast = fast
        self.graphs: dict = {}

    def __call__(self, x: torch.Tensor) -> NetworkOutput:
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
        return NetworkOutput(**{f.name: getattr(static_out, f.name).clone()
                                for f in dataclasses.fields(NetworkOutput)})


class ACRPipeline:
    """The tensor-level ACR inference engine (see the module docstring).

    ``net`` is a loaded :class:`ACRNet` (eval mode, fp32); ``mano`` a :class:`ManoLayer` (copied
    to the device; the caller's is left where it is); ``options`` how to run (EngineOptions).
    Constructing one changes no process-wide setting (see ``acr_ros.acr.runtime``).
    ``providers``: the onnxruntime execution providers in use (empty with runtime torch).
    """

    def __init__(self, net: ACRNet, mano: ManoLayer, options: EngineOptions = EngineOptions()):
        self.options = options
        self.device = resolve_device(options.device)
        self.dtype = resolve_precision(options.precision, self.device, options.runtime)
        # CPU: OpenCV's letterbox + bicubic is the official input bit for bit and fast on the CPU;
        # CUDA: pad + bicubic on the device (within one intensity level of OpenCV).
        self.preprocess_mode = options.preprocess
        if self.preprocess_mode == "auto":
            self.preprocess_mode = "exact" if self.device.type == "cpu" else "device"
        detection = dict(detection_threshold=options.detection_threshold,
                         suppress_duplicate_hands=options.suppress_duplicate_hands,
                         duplicate_distance=options.duplicate_distance)
        self.mano_layer = copy.deepcopy(mano).to(self.device)
        self._compiled = False
        if options.runtime == "onnxruntime":
            from acr_ros.acr.onnx_export import export_form
            from acr_ros.acr.ort_network import OnnxRuntimeNetwork

            # Stays on the CPU: exported once, then only its detection settings are read.
            self.fast = export_form(net, **detection)
            self._network = OnnxRuntimeNetwork(self.fast, self.device, options.onnx_providers)
            self.providers = tuple(self._network.providers)
        else:
            self.fast = FastACR(net, dtype=self.dtype, channels_last=options.channels_last, **detection).to(self.device)
            self._network = self._torch_network(options)
            self.providers = ()

    def _torch_network(self, options: EngineOptions):
        network = self.fast
        if options.compile:
            network = self._compile(options.compile)
        if options.cuda_graphs:
            if self.device.type != "cuda":
                warnings.warn("cuda_graphs needs a CUDA device; ignored", RuntimeWarning, stacklevel=3)
            else:
                network = _CudaGraphNetwork(network if not self._compiled else self.fast)
        return network

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
                          RuntimeWarning, stacklevel=4)
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

    def network(self, x: torch.Tensor) -> NetworkOutput:
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
    def decode(out: NetworkOutput) -> parser.HandParams:
        """Decode the 109 parameters of every row (6D -> matrices / axis-angle), rows (B, 2, ...)."""
        with torch.inference_mode():
            return parser.decode_params(out.params)

    def mano(self, out: NetworkOutput, params: parser.HandParams, letterbox_params: torch.Tensor,
             intrinsics: torch.Tensor) -> HandRows[torch.Tensor]:
        """Batched MANO for both sides of all images in one call, weak-perspective keypoints in the
        original image, and the translation. letterbox_params (B, 3) [S, pad_left, pad_top];
        intrinsics (B, 4) [fx, fy, cx, cy] in original pixels (official defaults where none)."""
        with torch.inference_mode():
            b = params.cam.shape[0]
            n = 2 * b
            side = torch.arange(2, device=self.device).repeat(b)                       # 0,1,0,1,...
            orient = params.orient_matrix.reshape(n, 3, 3)
            mano = self.mano_layer(side, orient, params.finger_pose.reshape(n, 45), params.betas.reshape(n, 10))
            cam = params.cam.reshape(n, 3)
            lp = letterbox_params.to(self.device, torch.float32).repeat_interleave(2, 0)
            k = intrinsics.to(self.device, torch.float32).repeat_interleave(2, 0)
            keypoints = project_to_original(mano.joints, cam, lp)
            return HandRows(
                detected=out.detected, scores=out.scores, cells=out.cells, prior_applied=out.prior_applied,
                cam=params.cam, orient_matrix=params.orient_matrix, global_orient=params.global_orient,
                finger_pose=params.finger_pose, betas=params.betas,
                joints=mano.joints.reshape(b, 2, 21, 3),
                vertices=mano.vertices.reshape(b, 2, -1, 3),
                joint_rotations=mano.joint_rotations.reshape(b, 2, 21, 3, 3),
                keypoints=keypoints.reshape(b, 2, 21, 2),
                translation=camera_translation(cam, lp, k).reshape(b, 2, 3),
            )

    @staticmethod
    def readback(rows: HandRows[torch.Tensor]) -> HandRows[np.ndarray]:
        """The one device->host transfer (this is where a CUDA run synchronises)."""
        return HandRows(**{f.name: getattr(rows, f.name).detach().cpu().numpy()
                           for f in dataclasses.fields(HandRows)})

    # -- all together ---------------------------------------------------------------------------------

    def run(self, x: torch.Tensor, letterbox_params: torch.Tensor, intrinsics: torch.Tensor,
            smoother: Optional[HandSmoother] = None, streams: Sequence = (), timestamps: Sequence[float] = ()
            ) -> HandRows[torch.Tensor]:
        """Device tensors for a preprocessed batch (no host synchronisation)."""
        out = self.network(x)
        params = self.decode(out)
        if smoother is not None:
            with torch.inference_mode():
                orient, fingers, betas = smoother(list(streams), list(timestamps), params.orient_matrix,
                                                  params.finger_pose, params.betas, out.detected)
                # As official: the smoothed matrix goes back to axis-angle (then MANO's Rodrigues).
                aa = matrix_to_axis_angle(orient)
                params = dataclasses.replace(params, global_orient=aa, orient_matrix=axis_angle_to_matrix(aa),
                                             finger_pose=fingers, betas=betas)
        return self.mano(out, params, letterbox_params, intrinsics)

    def __call__(self, images: Sequence[np.ndarray], intrinsics: Optional[Sequence[Optional[CameraIntrinsics]]] = None,
                 smoother: Optional[HandSmoother] = None, streams: Sequence = (),
                 timestamps: Sequence[float] = ()) -> tuple[HandRows[np.ndarray], list[Letterbox]]:
        """Images -> host arrays (rows [left, right] per image) and the letterboxes."""
        x, lbs = self.preprocess(images)
        intr = list(intrinsics) if intrinsics is not None else [None] * len(images)
        lp = letterbox_tensor(lbs, self.device)
        k = intrinsics_tensor(intr, lbs, self.device)
        return self.readback(self.run(x, lp, k, smoother, streams, timestamps)), lbs
