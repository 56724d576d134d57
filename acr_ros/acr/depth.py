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

from acr_ros.acr.hands import DEPTH_FROM_SENSOR, CameraIntrinsics, HandResult

# Depth values outside this range (metres) are no measurement (sensor limits of RGB-D cameras).
MIN_DEPTH, MAX_DEPTH = 0.1, 10.0
# A mesh vertex stands for the surface around it up to about this radius (metres; MANO's vertices
# are 4-8 mm apart). Vertices within VISIBILITY_TOLERANCE of the front-most surface at their
# place are visible; deeper ones are hidden by the hand itself.
SURFACE_RADIUS = 0.006
VISIBILITY_TOLERANCE = 0.008
# Votes of one surface agree within the model's error in the hand's relief (a mesh's visible
# vertices: small; joints, whose depth a monocular model guesses roughly: about the hand's
# thickness) plus the sensor noise, which grows with the square of the distance (structured light
# and stereo: ~0.1-0.2 % of z² per metre).
MESH_WINDOW = 0.02
JOINT_WINDOW = 0.05
NOISE_PER_M2 = 0.002
MIN_SAMPLES = 12        # fewer valid samples on the hand: keep the model's estimate
MIN_INLIER_FRACTION = 0.3
MIN_ANCHOR_SAMPLES = 5
HAND_SIZE = 0.1  # metres: no part of a hand's visible surface is further than this from the rest
# Without a mesh, the joints are sampled, each over a (2 r + 1)² patch as a joint is a single pixel;
# they lie about this far behind the skin the camera sees. Their relative depths are a monocular
# guess, so the wrist's own samples place the hand when they agree with the hand's surface.
JOINT_DEPTH_BELOW_SKIN = 0.008
JOINT_PATCH_RADIUS = 2


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
        metres = np.asarray(image, dtype=np.float32) / np.float32(1000.0 / millimetres_per_unit)  # exact for mm
    elif encoding == "32FC1":
        metres = np.array(image, dtype=np.float32, copy=True)
    else:
        raise ValueError(f"depth encoding {encoding!r} is not supported: expected 16UC1 (millimetres) "
                         "or 32FC1 (metres)")
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
                   surface_offset: float = 0.0, window: float = MESH_WINDOW,
                   anchor: Optional[int] = None) -> DepthFit:
    """The scale about the camera centre that puts a hand's visible surface on the measured depth.

    points: (N, 3) the hand in the camera frame (metres): mesh vertices (ACR) or joints (MediaPipe);
    depth: (H, W) float metres, NaN where unmeasured (depth_image_to_metres), registered to the
    image k describes; visible: (N,) bool, which points the camera sees (default: all that project into the image);
    patch_radius: also sample the (2 r + 1)² pixels around each point (sparse points: joints);
    surface_offset: how far in front of the points the surface the camera sees lies (metres; 0
    for mesh vertices, about 0.008 for joint centres under the skin); window: how far (metres)
    the votes of the hand's surface may spread (MESH_WINDOW, JOINT_WINDOW), noise added;
    anchor: the index of a point whose own agreeing samples, when there are enough, set the scale
    (the wrist, for joints whose relative depths a model guesses roughly); the others then only
    decide which surface is the hand's.
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
    owner = np.repeat(np.flatnonzero(use), du.size)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    measured = np.full(u.shape, np.nan)
    measured[inside] = depth[v[inside], u[inside]]
    valid = np.isfinite(measured)
    samples = int(valid.sum())
    if samples < MIN_SAMPLES:
        return DepthFit(False, 1.0, samples, 0, float("nan"),
                        f"{samples} valid depth samples on the hand (at least {MIN_SAMPLES} needed)")
    # Each sample votes for the scale that puts its point on its measurement.
    measured, z, owner = measured[valid], z[valid], owner[valid]
    votes = (measured + surface_offset) / z
    distance = float(np.median(measured))
    window = (window + 3 * NOISE_PER_M2 * distance ** 2) / float(np.median(z))  # metres -> scale
    centre = _densest(votes, window)
    agreeing = np.abs(votes - centre) <= window / 2
    inliers = int(agreeing.sum())
    if inliers < max(MIN_SAMPLES, MIN_INLIER_FRACTION * samples):
        return DepthFit(False, 1.0, samples, inliers, float("nan"),
                        f"only {inliers} of {samples} depth samples agree on one surface")
    # The anchor's own surface: the densest of its samples within a hand's size of the hand's.
    near = (owner == anchor) & (np.abs(votes - centre) <= HAND_SIZE / float(np.median(z)))
    scale = float(np.median(votes[agreeing]))
    if near.sum() >= MIN_ANCHOR_SAMPLES:
        anchor_votes = votes[near]
        anchor_centre = _densest(anchor_votes, window)
        anchored = anchor_votes[np.abs(anchor_votes - anchor_centre) <= window / 2]
        if len(anchored) >= MIN_ANCHOR_SAMPLES:
            scale = float(np.median(anchored))
    residual = float(np.median(np.abs(measured[agreeing] + surface_offset - scale * z[agreeing])))
    return DepthFit(True, scale, samples, inliers, residual)


def _densest(votes: np.ndarray, window: float) -> float:
    """The median of the densest window of ``window`` width among the votes."""
    ordered = np.sort(votes)
    ends = np.searchsorted(ordered, ordered + window, side="right")
    start = int(np.argmax(ends - np.arange(len(ordered))))
    return float(np.median(ordered[start:ends[start]]))


def fuse_hand(hand: HandResult, depth: np.ndarray, k: CameraIntrinsics) -> DepthFit:
    """Places one hand with an aligned depth image (float metres, NaN unmeasured; k the intrinsics
    the hand was placed with). With a mesh (ACR) its visible vertices are sampled, otherwise the
    joints with small patches, the wrist's own samples setting the distance when it is visible.
    When the depth is used, the joints and vertices are scaled about the camera centre (the
    keypoints and the orientation stay) and the hand records the fit; otherwise the hand is left as
    the model placed it. Returns the fit either way."""
    height, width = depth.shape[:2]
    if hand.vertices is not None:
        vertices = np.asarray(hand.vertices, dtype=np.float64)
        fit = fit_hand_depth(vertices, depth, k, visible=visible_points(vertices, k, width, height))
    else:
        fit = fit_hand_depth(hand.joints, depth, k, patch_radius=JOINT_PATCH_RADIUS,
                             surface_offset=JOINT_DEPTH_BELOW_SKIN, window=JOINT_WINDOW, anchor=0)
    hand.depth_samples = fit.samples
    if fit.used:
        hand.joints = (np.asarray(hand.joints, dtype=np.float64) * fit.scale).astype(np.float32)
        if hand.vertices is not None:
            hand.vertices = (np.asarray(hand.vertices, dtype=np.float64) * fit.scale).astype(np.float32)
        hand.depth_source, hand.depth_residual = DEPTH_FROM_SENSOR, fit.residual
    return fit
