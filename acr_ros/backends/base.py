"""What every hand backend offers its callers (the node, the CLI): the protocol, the typed
out-of-memory error and each backend's confidence threshold. Torch-free and ROS-free, so that
callers never need to know which backend they hold."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from acr_ros.acr.hands import SIDES, CameraIntrinsics, FrameResult
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import DETECTION_THRESHOLD


class BackendOutOfMemoryError(RuntimeError):
    """The accelerator ran out of memory on a batch; a smaller batch may still fit."""


@dataclass(frozen=True)
class ConfidenceThreshold:
    """A backend's confidence threshold: the ROS parameter that sets it, its default, range and meaning."""

    parameter: str
    default: float
    low: float
    high: float
    meaning: str


ACR_THRESHOLD = ConfidenceThreshold(
    "detection_threshold", DETECTION_THRESHOLD, 0.0, 10.0,
    "ACR: keep a hand when its raw center-map peak (no sigmoid) exceeds this")
MEDIAPIPE_THRESHOLD = ConfidenceThreshold(
    "mediapipe_min_confidence", 0.5, 0.0, 1.0, "MediaPipe: minimum palm-detection confidence")
THRESHOLDS = (ACR_THRESHOLD, MEDIAPIPE_THRESHOLD)


class HandBackend(Protocol):
    """What the node and the CLI need of a hand model."""

    name: str          # "acr" or "mediapipe": published in Hands.backend, never branched on
    model: str         # human-readable model description
    checkpoint: str    # weights in use (file name and sha256 prefix), "" if bundled
    device: str        # where inference runs, e.g. "cpu", "cuda:0"
    threshold: ConfidenceThreshold  # what detection_threshold means for this backend
    detection_threshold: float      # settable at run time, within threshold.low .. threshold.high
    # True: images are unrelated photos (no tracking from one to the next); False: video frames.
    static_image_mode: bool

    def faces(self, side: str) -> Optional[np.ndarray]:
        """(F, 3) mesh triangles of a side, None for backends without a mesh."""

    def reconstruct(
        self,
        images: Sequence[np.ndarray],
        intrinsics: Sequence[Optional[CameraIntrinsics]],
        timestamps: Sequence[float],
        streams: Sequence[str],
    ) -> list[FrameResult]:
        """Hands in a batch of BGR uint8 images (H, W, 3), one FrameResult per image.

        timestamps (seconds) and streams (e.g. the camera topic) drive temporal smoothing,
        which is kept separately per stream and hand side. Raises BackendOutOfMemoryError when
        the accelerator cannot hold the batch.
        """

    def set_smoothing(self, config: Optional[SmoothingConfig]) -> None:
        """Turn temporal smoothing on (a SmoothingConfig) or off (None); forgets the filter state."""

    def reset(self) -> None:
        """Forget temporal state (smoothing, tracking)."""

    def reset_side(self, stream: str, side: str) -> None:
        """Forget the smoothing state of one hand side (LEFT or RIGHT) of one stream, e.g. when its
        hand track ended: the side's next detection starts its filters afresh."""

    def close(self) -> None:
        """Release the models (graphs, networks, GPU memory); the backend is unusable afterwards."""


def check_batch(images: Sequence, intrinsics: Sequence, timestamps: Sequence, streams: Sequence) -> None:
    """The argument check of HandBackend.reconstruct: one intrinsics, timestamp and stream per image."""
    if not len(intrinsics) == len(timestamps) == len(streams) == len(images):
        raise ValueError("images, intrinsics, timestamps and streams must have the same length")


def faces_by_side(backend: HandBackend) -> dict[str, Optional[np.ndarray]]:
    """{LEFT: faces, RIGHT: faces} of a backend (None values without a mesh): what renderers and
    marker builders take. Constant for a backend: compute once."""
    return {side: backend.faces(side) for side in SIDES}
