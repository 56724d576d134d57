"""The options of the ACR engine: one frozen dataclass, torch-free so that the ROS parameter
table and the command lines can list the choices without importing torch."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, Union

# Of the network. auto: ACRBackend measures fp16 (CUDA) or bf16 (a CPU with native bf16) against fp32 on
# the loaded weights and keeps it within the half-precision tolerance, else fp32 (acr_ros.acr.precision;
# a bare ACRPipeline takes fp16 on CUDA, fp32 on the CPU); fp32 with onnxruntime.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PREPROCESSING = ("auto", "exact", "device")    # auto: exact (OpenCV) on CPU, device on CUDA
# What runs the network stage: PyTorch, or onnxruntime on the ONNX export of the same network; auto:
# ACRBackend measures both on the loaded weights once per machine and keeps the faster
# (acr_ros.acr.runtime_choice; a bare ACRPipeline runs torch).
RUNTIMES = ("auto", "torch", "onnxruntime")
# Official centermap_conf_thresh (configs/demo.yml): a hand is kept when its raw center-map peak
# (no sigmoid) exceeds this.
DETECTION_THRESHOLD = 0.35
# With suppress_duplicate_hands: left and right peaks closer than this (cells of the 64 grid,
# 32 px of the 512 input) are one hand (upstream issue #22).
DUPLICATE_DISTANCE = 4.0
# The devices the engine runs on (resolved by acr_ros.acr.pipeline.resolve_device).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class EngineOptions:
    """How :class:`~acr_ros.acr.pipeline.ACRPipeline` runs; every field is passed by name.

    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
    precision: of the network (PRECISIONS).
    detection_threshold: raw center-map peak a hand must exceed (settable at run time on the pipeline).
    suppress_duplicate_hands: when both sides fire within duplicate_distance cells, keep only the
        higher score (off: official behaviour).
    preprocess: "exact" (OpenCV letterbox + bicubic, the official input bit for bit), "device"
        (pad + bicubic on the device, within one intensity level) or "auto".
    compile: False, True (torch.compile; on CPU with inductor freezing) or a torch.compile mode.
    cuda_graphs: run the network, the decoding and MANO as CUDA graphs, each captured once per batch
        shape (a capture costs a second or so and GPU memory of its own): "auto" (on a CUDA device
        unless torch.compile is on), True (CUDA only) or False.
    channels_last: run the convolutions in channels-last memory format.
    fused: the fused graph (acr_ros.acr.fusion) with runtime torch: one call per convolution + bias
        (+ residual) + ReLU (oneDNN on the CPU, cuDNN on CUDA), HRNet's branches on concurrent CUDA
        streams, the device preprocessing of images of one size inside the network's stage (and its
        CUDA graph), one device->host copy of all outputs. False: the plain BatchNorm-folded graph
        (the reference the fused one is checked against).
    runtime: "torch", or "onnxruntime" (the network exported to ONNX at start-up and run by an
        onnxruntime session, fp32; the other stages stay in torch on ``device``), or "auto" (ACRBackend
        measures both and keeps the faster; a bare ACRPipeline runs torch; with an aot_package, torch).
    aot_package: with runtime torch, an AOTInductor package of the network built by ``acr_export --aot``
        for this machine (acr_ros.acr.aot), loaded instead of compiling; one built for another GPU,
        torch, CUDA, precision or weights is refused with a warning and the eager (or CUDA-graph)
        network runs. Needs an explicit precision (the one it was built for). "" (default): none.
    onnx_providers: onnxruntime execution providers in order of preference, e.g.
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"); empty: CUDA
        then CPU on a CUDA device, CPU otherwise.
    """

    device: str = "auto"
    precision: str = "auto"
    detection_threshold: float = DETECTION_THRESHOLD
    suppress_duplicate_hands: bool = False
    duplicate_distance: float = DUPLICATE_DISTANCE
    preprocess: str = "auto"
    compile: Union[bool, str] = False
    cuda_graphs: Union[bool, str] = "auto"
    channels_last: bool = True
    fused: bool = True
    runtime: str = "torch"
    onnx_providers: Sequence[str] = ()
    aot_package: str = ""

    def __post_init__(self):
        # Checked here, before any model loads: torch would say it only once the engine is built.
        if not DEVICE_PATTERN.fullmatch(str(self.device)):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (N: the GPU's index), got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got {self.preprocess!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not (isinstance(self.cuda_graphs, bool) or self.cuda_graphs == "auto"):
            raise ValueError(f"cuda_graphs must be True, False or 'auto', got {self.cuda_graphs!r}")
        if isinstance(self.onnx_providers, str):
            raise ValueError(f"onnx_providers must be a sequence of names, got the string {self.onnx_providers!r}")
        object.__setattr__(self, "onnx_providers", tuple(str(p) for p in self.onnx_providers))
        if self.runtime == "onnxruntime":
            if self.precision not in ("auto", "fp32"):
                raise ValueError(f"runtime onnxruntime runs the fp32 export; precision {self.precision} needs "
                                 "runtime torch (TensorRT users: build an fp16 engine from the export, "
                                 "docs/deployment.md)")
            if self.compile or self.cuda_graphs is True or self.aot_package:
                raise ValueError("compile, cuda_graphs and aot_package apply to runtime torch only")
        elif self.onnx_providers and self.runtime != "auto":
            raise ValueError("onnx_providers apply to runtime onnxruntime (or auto) only")
        if self.aot_package and (self.precision == "auto" or self.compile):
            raise ValueError(f"aot_package {self.aot_package} runs the precision it was built for: set precision to "
                             "it (fp16, fp32 or bf16), without compile")


def parse_providers(text: str) -> tuple[str, ...]:
    """'TensorrtExecutionProvider, CPUExecutionProvider' -> the names in order ('' -> ())."""
    return tuple(name.strip() for name in str(text).split(",") if name.strip())
