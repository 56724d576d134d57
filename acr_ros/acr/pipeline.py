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
import functools
import warnings
from dataclasses import dataclass
from typing import Generic, Optional, Sequence, TypeVar, Union

import numpy as np
import torch

from acr_ros.acr import parser
from acr_ros.acr.camera import camera_translation, intrinsics_tensor, project_to_original
from acr_ros.acr.hands import CameraIntrinsics
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.network import ACRNet, FastACR, NetworkOutput, decide_with_inputs
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.preprocess import (Letterbox, letterbox_tensor, pixels_to_input, preprocess_batch, preprocess_exact,
                                    stack_pixels, upload)
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
    """The device an EngineOptions.device names; a CUDA device with its index ("cuda" -> "cuda:0",
    the current one), so that every report says which GPU."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def uses_cuda_graphs(options: EngineOptions, device: torch.device) -> bool:
    """Whether the torch stages run as CUDA graphs: "auto" where the device is CUDA and torch.compile
    is off; True on a CPU is refused (EngineOptions.cuda_graphs)."""
    if options.runtime == "onnxruntime" or options.cuda_graphs is False:
        return False
    if device.type != "cuda":
        if options.cuda_graphs is True:
            raise ValueError(f"cuda_graphs needs a CUDA device, got device {str(device)!r}")
        return False
    return options.cuda_graphs is True or not options.compile


def resolve_precision(precision: str, device: torch.device, runtime: str = "torch") -> torch.dtype:
    """The network dtype of a precision choice (options.PRECISIONS) on ``device``: auto is fp16 on
    CUDA and fp32 otherwise (ACRBackend measures the half precision against fp32 first and may keep
    fp32 on CUDA or pick bf16 on a CPU, acr_ros.acr.precision); the onnxruntime runtime runs fp32."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" and runtime != "onnxruntime" else torch.float32
    return _DTYPES[precision]


def _tensors(value) -> list[torch.Tensor]:
    """A stage's inputs or outputs (tensors, dataclasses of tensors, tuples of those) as a flat list."""
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    return [t for item in value for t in _tensors(item)]


def _rebuilt(template, tensors):
    """``template``'s structure (see _tensors) filled from the iterator ``tensors``."""
    if isinstance(template, torch.Tensor):
        return next(tensors)
    if dataclasses.is_dataclass(template):
        return type(template)(**{f.name: _rebuilt(getattr(template, f.name), tensors)
                                 for f in dataclasses.fields(template)})
    return type(template)(_rebuilt(item, tensors) for item in template)


class _CudaGraphs:
    """Runs ``stage`` (a function of device tensors without host synchronisation; everything else
    it reads is baked into the graph) by replaying a CUDA graph captured once per input shapes: the
    inputs are copied into the graph's static buffers and the outputs cloned out of its own, so a
    result outlives the next replay. One replay launches what would be hundreds of small kernels."""

    def __init__(self, stage, device: torch.device):
        self.stage, self.device = stage, device
        self.graphs: dict = {}

    def __call__(self, *inputs):
        flat = _tensors(inputs)
        key = tuple((t.shape, t.dtype) for t in flat)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, static_inputs, static_outputs = self.graphs[key]
        for buffer, value in zip(static_inputs, flat):
            buffer.copy_(value)
        graph.replay()
        return _rebuilt(static_outputs, iter([t.clone() for t in _tensors(static_outputs)]))

    def _capture(self, inputs):
        static = _rebuilt(inputs, iter([t.clone() for t in _tensors(inputs)]))
        with torch.cuda.device(self.device):
            # Warm-up runs on a side stream (cuDNN autotuning and workspaces happen outside the capture).
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self.stage(*static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the node's other threads may use CUDA while this one captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = self.stage(*static)
        return graph, _tensors(static), outputs


def _network_from_pixels(fast: FastACR, pixels: torch.Tensor, detection_threshold: torch.Tensor,
                         duplicate_distance: torch.Tensor) -> NetworkOutput:
    """The device preprocessing and the network as one stage: what the fused CUDA graph holds for
    a camera size (the letterbox follows from the shape, which keys the graph)."""
    return decide_with_inputs(fast, pixels_to_input(pixels), detection_threshold, duplicate_distance)


class _GraphedNetwork:
    """FastACR replayed as CUDA graphs, with the detection settings as graph inputs: changing one
    (the node's detection_threshold parameter, say) captures no other graph. ``from_pixels``: the
    graph takes the uint8 pixels of one camera size and holds the preprocessing too."""

    def __init__(self, fast: FastACR, device: torch.device, from_pixels: bool = False):
        self.fast = fast
        stage = _network_from_pixels if from_pixels else decide_with_inputs
        self.graphs = _CudaGraphs(functools.partial(stage, fast), device)

    def __call__(self, x: torch.Tensor) -> NetworkOutput:
        threshold, distance = (torch.full((), value, device=x.device) for value in self.fast.detection_inputs())
        return self.graphs(x, threshold, distance)


def hand_geometry(mano_layer: ManoLayer, orient_matrix: torch.Tensor, finger_pose: torch.Tensor,
                  betas: torch.Tensor, cam: torch.Tensor, letterbox_params: torch.Tensor,
                  intrinsics: torch.Tensor) -> tuple:
    """The MANO and camera part of :meth:`ACRPipeline.mano`, rows (B, 2, ...): joints, vertices,
    joint rotations, keypoints, translation."""
    b = cam.shape[0]
    n = 2 * b
    side = torch.arange(2, device=cam.device).repeat(b)                                # 0,1,0,1,...
    mano = mano_layer(side, orient_matrix.reshape(n, 3, 3), finger_pose.reshape(n, 45), betas.reshape(n, 10))
    cam = cam.reshape(n, 3)
    lp = letterbox_params.repeat_interleave(2, 0)
    k = intrinsics.repeat_interleave(2, 0)
    return (mano.joints.reshape(b, 2, 21, 3), mano.vertices.reshape(b, 2, -1, 3),
            mano.joint_rotations.reshape(b, 2, 21, 3, 3),
            project_to_original(mano.joints, cam, lp).reshape(b, 2, 21, 2),
            camera_translation(cam, lp, k).reshape(b, 2, 3))


class ACRPipeline:
    """The tensor-level ACR inference engine (see the module docstring).

    ``net`` is a loaded :class:`ACRNet` (eval mode, fp32); ``mano`` a :class:`ManoLayer` (copied
    to the device; the caller's is left where it is); ``options`` how to run (EngineOptions).
    Constructing one changes no process-wide setting (see ``acr_ros.acr.runtime``).
    ``providers``: the onnxruntime execution providers in use, and ``onnx_export`` where the ONNX
    export came from (the cache or a new export; both empty with runtime torch); ``aot`` what became
    of options.aot_package (loaded, or why not; "" without one).
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
        self.cuda_graphs = uses_cuda_graphs(options, self.device)
        # The fused graph's pipeline parts (EngineOptions.fused): the device preprocessing of one
        # camera size inside the network's graph, and one device->host copy of every field.
        self.fused = options.fused and options.runtime == "torch"
        self.packed_readback = self.fused and self.device.type == "cuda"
        self._pixels_network = None
        self.aot = ""
        if options.runtime == "onnxruntime":
            from acr_ros.acr.onnx_export import export_form
            from acr_ros.acr.ort_network import OnnxRuntimeNetwork

            # Stays on the CPU: exported once, then only its detection settings are read.
            self.fast = export_form(net, **detection)
            self._network = OnnxRuntimeNetwork(self.fast, self.device, options.onnx_providers)
            self.providers = tuple(self._network.providers)
            self.onnx_export = self._network.export_source
        else:
            self.fast = FastACR(net, dtype=self.dtype, channels_last=options.channels_last, fuse=options.fused,
                                **detection).to(self.device)
            self._network = self._torch_network(options)
            self.providers, self.onnx_export = (), ""
        # Not a bound method: a graph holding the pipeline would keep its GPU memory after close().
        geometry = functools.partial(hand_geometry, self.mano_layer)
        self._decode, self._geometry = parser.decode_params, geometry
        if self.cuda_graphs:
            self._decode = _CudaGraphs(parser.decode_params, self.device)
            self._geometry = _CudaGraphs(geometry, self.device)

    def _torch_network(self, options: EngineOptions):
        network = self.fast
        if options.aot_package:
            from acr_ros.acr.aot import load_network_package

            loaded, self.aot = load_network_package(options.aot_package, self.fast, self.device)
            if loaded is not None:
                return loaded
            instead = "the CUDA graphs" if self.cuda_graphs else "the eager graph"
            warnings.warn(f"{self.aot}; running {instead} (rebuild it on this machine: acr_export --aot)",
                          RuntimeWarning, stacklevel=4)
        if options.compile:
            network = self._compile(options.compile)
        if self.cuda_graphs and not self._compiled:
            network = _GraphedNetwork(self.fast, self.device)
            if self.fused:
                self._pixels_network = _GraphedNetwork(self.fast, self.device, from_pixels=True)
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

    def network_from_pixels(self, pixels: torch.Tensor) -> NetworkOutput:
        """:meth:`network` on uint8 BGR pixels of one size (B, H, W, 3) on the device, preprocessed on
        the device (preprocess.pixels_to_input) in the network's CUDA graph where there is one."""
        with torch.inference_mode():
            if self._pixels_network is not None:
                return self._pixels_network(pixels)
            return self.network(pixels_to_input(pixels))

    def decode(self, out: NetworkOutput) -> parser.HandParams:
        """Decode the 109 parameters of every row (6D -> matrices / axis-angle), rows (B, 2, ...)."""
        with torch.inference_mode():
            return self._decode(out.params)

    def mano(self, out: NetworkOutput, params: parser.HandParams, letterbox_params: torch.Tensor,
             intrinsics: torch.Tensor) -> HandRows[torch.Tensor]:
        """Batched MANO for both sides of all images in one call, weak-perspective keypoints in the
        original image, and the translation. letterbox_params (B, 3) [S, pad_left, pad_top];
        intrinsics (B, 4) [fx, fy, cx, cy] in original pixels (official defaults where none)."""
        with torch.inference_mode():
            joints, vertices, joint_rotations, keypoints, translation = self._geometry(
                params.orient_matrix, params.finger_pose, params.betas, params.cam,
                letterbox_params.to(self.device, torch.float32), intrinsics.to(self.device, torch.float32))
            return HandRows(
                detected=out.detected, scores=out.scores, cells=out.cells, prior_applied=out.prior_applied,
                cam=params.cam, orient_matrix=params.orient_matrix, global_orient=params.global_orient,
                finger_pose=params.finger_pose, betas=params.betas, joints=joints, vertices=vertices,
                joint_rotations=joint_rotations, keypoints=keypoints, translation=translation)

    def readback(self, rows: HandRows[torch.Tensor]) -> HandRows[np.ndarray]:
        """The device->host transfer (this is where a CUDA run synchronises): with packed_readback
        every field in one copy (pack_tensors), else one copy per field (none on the CPU)."""
        names = [f.name for f in dataclasses.fields(HandRows)]
        tensors = [getattr(rows, name).detach() for name in names]
        if self.packed_readback:
            with torch.inference_mode():
                packed, layout = pack_tensors(tensors)
            return HandRows(**dict(zip(names, unpack_arrays(packed.cpu().numpy(), layout))))
        return HandRows(**{name: t.cpu().numpy() for name, t in zip(names, tensors)})

    # -- all together ---------------------------------------------------------------------------------

    def run(self, x: torch.Tensor, letterbox_params: torch.Tensor, intrinsics: torch.Tensor,
            smoother: Optional[HandSmoother] = None, streams: Sequence = (), timestamps: Sequence[float] = ()
            ) -> HandRows[torch.Tensor]:
        """Device tensors for a preprocessed batch (no host synchronisation)."""
        return self._after_network(self.network(x), letterbox_params, intrinsics, smoother, streams, timestamps)

    def _after_network(self, out: NetworkOutput, letterbox_params: torch.Tensor, intrinsics: torch.Tensor,
                       smoother: Optional[HandSmoother], streams: Sequence, timestamps: Sequence[float]
                       ) -> HandRows[torch.Tensor]:
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
        pixels = stack_pixels(images, self.device) if self.fused and self.preprocess_mode == "device" else None
        if pixels is not None:  # one camera size: the preprocessing runs in the network's stage
            pixels, lbs = pixels
        else:
            x, lbs = self.preprocess(images)
        intr = list(intrinsics) if intrinsics is not None else [None] * len(images)
        lp = letterbox_tensor(lbs, self.device)
        k = intrinsics_tensor(intr, lbs, self.device)
        out = self.network_from_pixels(pixels) if pixels is not None else self.network(x)
        return self.readback(self._after_network(out, lp, k, smoother, streams, timestamps)), lbs


def pack_tensors(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple]]:
    """Tensors of any dtypes on one device -> one uint8 buffer there (each part starting at a
    multiple of 8 bytes) and its layout [(offset, numpy dtype, shape)], for one readback copy."""
    parts, layout, offset = [], [], 0
    for t in tensors:
        data = t.contiguous().reshape(-1).view(torch.uint8)
        pad = -data.numel() % 8
        layout.append((offset, torch.empty(0, dtype=t.dtype).numpy().dtype, tuple(t.shape)))
        parts.append(data)
        if pad:
            parts.append(data.new_zeros(pad))
        offset += data.numel() + pad
    return torch.cat(parts), layout


def unpack_arrays(buffer: np.ndarray, layout: Sequence[tuple]) -> list[np.ndarray]:
    """The arrays of :func:`pack_tensors`' layout, as views of the host copy of its buffer."""
    return [buffer[offset:offset + dtype.itemsize * int(np.prod(shape))].view(dtype).reshape(shape)
            for offset, dtype, shape in layout]
