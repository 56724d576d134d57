"""Backend-independent hand results: what every hand backend returns and every output consumes.

Plain numpy, no ROS and no torch, and nothing of acr_ros outside this engine package: the
backends, the offline CLI, the renderer and the ROS node all build on it.
Conventions (the same as the messages in msg/): metres, radians, camera optical frame
(x right, y down, z forward), pixels of the original image, joints in ACR/MediaPipe order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

LEFT, RIGHT = "left", "right"
DEPTH_FROM_MODEL, DEPTH_FROM_SENSOR = "model", "depth"
SIDES = (LEFT, RIGHT)  # index 0 = left, 1 = right: the order of the engine's rows and of MANO's layers
NUM_JOINTS = 21
NUM_VERTICES = 778
# ACR's camera (official configs/demo.yml, focal_length; docs/architecture.md, "Camera"):
# focal length in pixels of its square network input.
ACR_FOCAL_LENGTH = 1265.0
ACR_INPUT_SIZE = 512

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

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pinhole projection of (N, 3) camera-frame points (z > 0) to (N, 2) float64 pixels."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return p[:, :2] * (self.fx, self.fy) / p[:, 2:] + (self.cx, self.cy)


def default_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """ACR's default camera of an uncalibrated width x height image, in its original pixels.

    The image is letterboxed to an S x S square, S = max(width, height), the odd padding pixel
    going to the bottom / right (preprocess.letterbox); the focal is 1265 px at the 512 px input,
    i.e. 1265 S / 512, and the principal point is the centre of the square.
    """
    size = max(width, height)
    pad_left, pad_top = (size - width) // 2, (size - height) // 2
    f = ACR_FOCAL_LENGTH * size / ACR_INPUT_SIZE
    return CameraIntrinsics(f, f, size / 2 - pad_left, size / 2 - pad_top)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (x, y, z, w) with w >= 0.

    Robust to slightly non-orthonormal input (float32 products): the matrix is first projected
    onto the nearest rotation (SVD), then converted with Shepperd's method (the largest of
    w, x, y, z is computed from the diagonal, the others from off-diagonal sums, so no division
    by a small number). Non-finite input gives the identity (0, 0, 0, 1). At w == 0 (180 degree
    turns) q and -q are both valid; the sign is then the one the method yields.
    """
    r = np.asarray(rotation, dtype=np.float64)
    shape = r.shape[:-2]
    r = r.reshape(-1, 3, 3)
    finite = np.isfinite(r).all(axis=(1, 2))
    r = np.where(finite[:, None, None], r, np.eye(3))
    u, _, vt = np.linalg.svd(r)
    d = np.sign(np.linalg.det(u @ vt))
    d[d == 0] = 1.0
    u[:, :, 2] *= d[:, None]
    r = u @ vt
    m00, m01, m02 = r[:, 0, 0], r[:, 0, 1], r[:, 0, 2]
    m10, m11, m12 = r[:, 1, 0], r[:, 1, 1], r[:, 1, 2]
    m20, m21, m22 = r[:, 2, 0], r[:, 2, 1], r[:, 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=1)
    pick = np.argmax(diag, axis=1)
    s = 2.0 * np.sqrt(np.maximum(diag[np.arange(len(r)), pick], 1e-12))  # 4 * largest component
    candidates = np.stack([
        # (x, y, z, w) * s for each choice of the largest component
        np.stack([m21 - m12, m02 - m20, m10 - m01, s * s / 4], axis=1),
        np.stack([s * s / 4, m01 + m10, m02 + m20, m21 - m12], axis=1),
        np.stack([m01 + m10, s * s / 4, m12 + m21, m02 - m20], axis=1),
        np.stack([m02 + m20, m12 + m21, s * s / 4, m10 - m01], axis=1),
    ], axis=1)
    q = candidates[np.arange(len(r)), pick] / s[:, None]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1.0
    return q.reshape(shape + (4,))


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
    # Where the hand's distance comes from: DEPTH_FROM_MODEL (the model's assumed hand size) or
    # DEPTH_FROM_SENSOR (an aligned depth image, acr_ros.acr.depth); with the sensor, the median
    # |measured - fitted| depth over the agreeing samples (metres) and how many valid samples there were.
    depth_source: str = DEPTH_FROM_MODEL
    depth_residual: float = float("nan")
    depth_samples: int = 0

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
        """(x, y, w, h) of the finite keypoints, clipped to a width x height image; all 0 if none."""
        keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(-1, 2)
        keypoints = keypoints[np.isfinite(keypoints).all(axis=1)]
        if len(keypoints) == 0 or width <= 0 or height <= 0:
            return 0, 0, 0, 0
        x0, y0 = np.floor(keypoints.min(axis=0))
        x1, y1 = np.ceil(keypoints.max(axis=0))
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


def one_per_side(hands: Iterable[HandResult]) -> list[HandResult]:
    """At most one hand per side (the highest score), left first: the hands that are published."""
    best: dict[str, HandResult] = {}
    for hand in hands:
        if hand.side not in SIDES:
            raise ValueError(f"hand side must be '{LEFT}' or '{RIGHT}', got {hand.side!r}")
        if hand.side not in best or hand.score > best[hand.side].score:
            best[hand.side] = hand
    return [best[side] for side in SIDES if side in best]
