"""Backend-independent hand results: what every hand backend returns and every output consumes.

Plain numpy, no ROS and no torch, so the offline CLI, the renderer and the ROS node share it.
Conventions (the same as the messages in msg/): metres, radians, camera optical frame
(x right, y down, z forward), pixels of the original image, joints in ACR/MediaPipe order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np

LEFT, RIGHT = "left", "right"
NUM_JOINTS = 21
NUM_VERTICES = 778

# Joint names in output order (wrist, then thumb to pinky, each base to tip).
JOINT_NAMES = ("wrist",) + tuple(
    f"{finger}_{part}"
    for finger in ("thumb", "index", "middle", "ring", "pinky")
    for part in ("mcp", "pip", "dip", "tip")
)
# Parent of each joint in JOINT_NAMES (the wrist has none): the skeleton drawn and put on TF.
JOINT_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the ORIGINAL image, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_k(cls, k: Sequence[float]) -> Optional["CameraIntrinsics"]:
        """From a row-major 3x3 K (sensor_msgs/CameraInfo.k); None when uncalibrated or unusable."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9 or not np.all(np.isfinite(k)):
            return None
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
        # Beyond these a K is garbage, not a camera (and would overflow float32 maths).
        if not (0 < fx < 1e6 and 0 < fy < 1e6 and abs(cx) < 1e6 and abs(cy) < 1e6):
            return None
        return cls(float(fx), float(fy), float(cx), float(cy))


@dataclass
class HandResult:
    """One reconstructed hand. MANO fields are None for backends without MANO."""

    side: str                       # LEFT or RIGHT
    score: float
    joints: np.ndarray              # (21, 3) float32, metres, camera optical frame
    keypoints: np.ndarray           # (21, 2) float32, pixels of the original image
    wrist_rotation: np.ndarray      # (3, 3) float32, hand root frame -> camera frame
    global_orient: Optional[np.ndarray] = None   # (3,) axis-angle (MANO)
    finger_pose: Optional[np.ndarray] = None     # (45,) axis-angle relative to the MANO mean pose
    shape: Optional[np.ndarray] = None           # (10,) betas
    weak_camera: Optional[np.ndarray] = None     # (3,) s, tx, ty (ACR)
    vertices: Optional[np.ndarray] = None        # (778, 3) float32, metres, camera optical frame
    # (21, 3, 3): orientation of each joint's frame in the camera frame, from MANO's kinematic
    # chain (a fingertip takes its parent's); None for backends without MANO.
    joint_rotations: Optional[np.ndarray] = None

    def is_finite(self) -> bool:
        """True when no array holds NaN or Inf (and the score is finite)."""
        arrays = (self.joints, self.keypoints, self.wrist_rotation, self.global_orient, self.finger_pose,
                  self.shape, self.weak_camera, self.vertices, self.joint_rotations)
        return bool(np.isfinite(self.score)) and all(
            array is None or bool(np.all(np.isfinite(array))) for array in arrays)

    @property
    def wrist_position(self) -> np.ndarray:
        return self.joints[0]

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the keypoints, clipped to a width x height image."""
        x0, y0 = np.floor(self.keypoints.min(axis=0))
        x1, y1 = np.ceil(self.keypoints.max(axis=0))
        x0, x1 = int(np.clip(x0, 0, width)), int(np.clip(x1, 0, width))
        y0, y1 = int(np.clip(y0, 0, height)), int(np.clip(y1, 0, height))
        return x0, y0, x1 - x0, y1 - y0


@dataclass
class FrameResult:
    """All hands of one image, with what the 3D placement was based on."""

    hands: list[HandResult] = field(default_factory=list)
    default_intrinsics: bool = True  # True: no camera intrinsics were given; depth approximate
    # The intrinsics that placed the 3D points (the backend's default ones when default_intrinsics):
    # projecting joints or vertices with them lands on the image, e.g. for overlays.
    intrinsics: Optional[CameraIntrinsics] = None


class HandBackend(Protocol):
    """What the node and the CLI need of a hand model."""

    name: str          # "acr" or "mediapipe"
    model: str         # human-readable model description
    checkpoint: str    # weights in use (file name and sha256 prefix), "" if bundled

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
        which is kept separately per stream and hand side.
        """

    detection_threshold: float  # settable at run time

    def set_smoothing(self, config) -> None:
        """Turn temporal smoothing on (a SmoothingConfig) or off (None); forgets the filter state."""

    def reset(self) -> None:
        """Forget temporal state (smoothing)."""
