"""The options of the ACR engine: one frozen dataclass, torch-free so that the ROS parameter
table and the command lines can list the choices without importing torch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # of the network; auto: fp16 on CUDA, fp32 on CPU
PREPROCESSING = ("auto", "exact", "device")    # auto: exact (OpenCV) on CPU, device on CUDA
# Official centermap_conf_thresh (configs/demo.yml): a hand is kept when its raw center-map peak
# (no sigmoid) exceeds this.
DETECTION_THRESHOLD = 0.35
# With suppress_duplicate_hands: left and right peaks closer than this (cells of the 64 grid,
# 32 px of the 512 input) are one hand (upstream issue #22).
DUPLICATE_DISTANCE = 4.0


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
    cuda_graphs: capture the network stage in CUDA graphs (CUDA only; one per batch shape).
    channels_last: run the convolutions in channels-last memory format.
    """

    device: str = "auto"
    precision: str = "auto"
    detection_threshold: float = DETECTION_THRESHOLD
    suppress_duplicate_hands: bool = False
    duplicate_distance: float = DUPLICATE_DISTANCE
    preprocess: str = "auto"
    compile: Union[bool, str] = False
    cuda_graphs: bool = False
    channels_last: bool = True

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got {self.preprocess!r}")
