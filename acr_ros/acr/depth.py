"""Metric hands from an aligned depth image: pure numpy geometry, no ROS, no torch.

A monocular hand model knows the distance only through an assumed hand size. With a depth image
registered to the colour image, :func:`fit_hand_depth` finds the factor s that scales the hand
about the camera centre so that its visible surface meets the measured depth. Scaling about the
camera centre moves every point along its own camera ray: each 2D keypoint stays exactly where it
was, the depth (and the metric size) follow the measurement.

Real depth has holes, flying pixels at edges, the background showing between the fingers and
objects or the other hand in front. Each valid sample on the hand votes for a scale (its measured
depth over its model depth); the votes of the hand's surface agree within the hand's relief and the
noise, background and occluders vote elsewhere. The
densest window of votes wins and its median is the answer. Too few samples, or too few agreeing,
keep the model's estimate (``DepthFit.used`` False, with the reason).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from acr_ros.acr.hands import CameraIntrinsics

# Depth values outside this range (metres) are no measurement (sensor limits of RGB-D cameras).
MIN_DEPTH, MAX_DEPTH = 0.1, 10.0
# A mesh vertex stands for the surface around it up to about this radius (metres; MANO's vertices
# are 4-8 mm apart). Vertices within VISIBILITY_TOLERANCE of the front-most surface at their
# place are visible; deeper ones are hidden by the hand itself.
SURFACE_RADIUS = 0.006
VISIBILITY_TOLERANCE = 0.008
# Votes of one surface agree within the hand's visible relief plus the sensor noise, which grows
# with the square of the distance (structured light and stereo: ~0.1-0.2 % of z² per metre).
SURFACE_WINDOW = 0.02
NOISE_PER_M2 = 0.002
MIN_SAMPLES = 12        # fewer valid samples on the hand: keep the model's estimate
MIN_INLIER_FRACTION = 0.3


@dataclass(frozen=True)
class DepthFit:
    """How the depth image placed one hand."""

    used: bool              # True: the hand was placed by the depth image
    scale: float            # multiply the hand's camera-frame points by this (1.0 when not used)
    samples: int            # valid depth samples on the hand
    inliers: int            # samples that agree with the chosen surface
    residual: float         # metres: median |measured - fitted depth| over the inliers; nan if not used
    reason: str = ""        # why the depth was not used


def depth_image_to_metres(image: np.ndarray, encoding: str, millimetres_per_unit: float = 1.0) -> np.ndarray:
    """A depth image as float32 metres, NaN where there is no measurement.

    16UC1 (and mono16): integer units of ``millimetres_per_unit`` mm (1.0 for RealSense, Orbbec,
    Azure Kinect); 32FC1: metres. 0, NaN, inf and values outside [MIN_DEPTH, MAX_DEPTH] are no
    measurement.
    """
    if encoding in ("16UC1", "mono16"):
        metres = np.asarray(image, dtype=np.float32) * np.float32(millimetres_per_unit * 1e-3)
    elif encoding == "32FC1":
        metres = np.array(image, dtype=np.float32, copy=True)
    else:
        raise ValueError(f"depth encoding {encoding!r} is not supported: expected 16UC1 (millimetres) or 32FC1 (metres)")
    if metres.ndim != 2:
        raise ValueError(f"a depth image has one channel, got shape {metres.shape}")
    metres[~((metres >= MIN_DEPTH) & (metres <= MAX_DEPTH))] = np.nan  # NaN compares False: also caught
    return metres


def project(points: np.ndarray, k: CameraIntrinsics) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) pixel coordinates (x right, y down)."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([k.fx * p[:, 0] / p[:, 2] + k.cx, k.fy * p[:, 1] / p[:, 2] + k.cy], axis=1)


def visible_points(points: np.ndarray, k: CameraIntrinsics, width: int, height: int,
                   radius: float = SURFACE_RADIUS, tolerance: float = VISIBILITY_TOLERANCE) -> np.ndarray:
    """(N,) bool: points in front of the camera, inside the image and not hidden behind other points
    of the same set. A point z-buffer: each point covers a disc of ``radius`` metres (the spacing of
    a mesh's vertices), drawn on a grid coarse enough that a disc spans at most 2 cells each way,
    so the cost does not grow as the hand comes closer."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    visible = np.zeros(len(p), dtype=bool)
    z = p[:, 2]
    front = np.isfinite(p).all(axis=1) & (z > 0)
    if not front.any():
        return visible
    uv = np.full((len(p), 2), -1.0)
    uv[front] = project(p[front], k)
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    if not inside.any():
        return visible
    idx = np.flatnonzero(inside)
    zi = z[idx]
    radius_px = k.fx * radius / float(np.median(zi))
    cell = max(1.0, radius_px / 2)
    reach = int(np.ceil(radius_px / cell))
    u = np.floor(uv[idx, 0] / cell).astype(np.int64)
    v = np.floor(uv[idx, 1] / cell).astype(np.int64)
    x0, y0 = u.min() - reach, v.min() - reach
    w, h = u.max() + reach + 1 - x0, v.max() + reach + 1 - y0
    zbuffer = np.full(w * h, np.inf)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            np.minimum.at(zbuffer, (v + dy - y0) * w + (u + dx - x0), zi)
    visible[idx] = zi <= zbuffer[(v - y0) * w + (u - x0)] + tolerance
    return visible


def fit_hand_depth(points: np.ndarray, depth: np.ndarray, k: CameraIntrinsics,
                   visible: Optional[np.ndarray] = None, patch_radius: int = 0,
                   surface_offset: float = 0.0) -> DepthFit:
    """The scale about the camera centre that puts a hand's visible surface on the measured depth.

    points: (N, 3) the hand in the camera frame (metres): mesh vertices (ACR) or joints (MediaPipe);
    depth: (H, W) float metres, NaN where unmeasured (depth_image_to_metres), registered to the
    image k describes; visible: (N,) bool, which points the camera sees (default: all that project into the image);
    patch_radius: also sample the (2 r + 1)² pixels around each point (sparse points: joints);
    surface_offset: how far in front of the points the surface the camera sees lies (metres; 0
    for mesh vertices, about 0.008 for joint centres under the skin).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    height, width = depth.shape[:2]
    use = (p[:, 2] > 0) & np.isfinite(p).all(axis=1)
    if visible is not None:
        use &= np.asarray(visible, dtype=bool)
    uv = np.rint(project(p[use], k)).astype(np.int64)
    z = p[use, 2]
    offsets = np.arange(-patch_radius, patch_radius + 1)
    du, dv = np.meshgrid(offsets, offsets)
    u = (uv[:, 0:1] + du.reshape(1, -1)).reshape(-1)
    v = (uv[:, 1:2] + dv.reshape(1, -1)).reshape(-1)
    z = np.repeat(z, du.size)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    measured = np.full(u.shape, np.nan)
    measured[inside] = depth[v[inside], u[inside]]
    valid = np.isfinite(measured)
    samples = int(valid.sum())
    if samples < MIN_SAMPLES:
        return DepthFit(False, 1.0, samples, 0, float("nan"),
                        f"{samples} valid depth samples on the hand (at least {MIN_SAMPLES} needed)")
    # Each sample votes for the scale that puts its point on its measurement.
    measured, z = measured[valid], z[valid]
    votes = (measured + surface_offset) / z
    ordered = np.sort(votes)
    distance = float(np.median(measured))
    window = (SURFACE_WINDOW + 3 * NOISE_PER_M2 * distance ** 2) / float(np.median(z))  # metres -> scale
    ends = np.searchsorted(ordered, ordered + window, side="right")
    start = int(np.argmax(ends - np.arange(len(ordered))))  # the densest window of votes
    centre = float(np.median(ordered[start:ends[start]]))
    agreeing = np.abs(votes - centre) <= window / 2
    inliers = int(agreeing.sum())
    if inliers < max(MIN_SAMPLES, MIN_INLIER_FRACTION * samples):
        return DepthFit(False, 1.0, samples, inliers, float("nan"),
                        f"only {inliers} of {samples} depth samples agree on one surface")
    scale = float(np.median(votes[agreeing]))
    residual = float(np.median(np.abs(measured[agreeing] + surface_offset - scale * z[agreeing])))
    return DepthFit(True, scale, samples, inliers, residual)
