"""Synthetic RGB-D scenes of one hand, for the depth-fusion tests and benchmark.

A posed synthetic MANO hand (test/support/synthetic_mano.py: random arrays, NOT a real hand shape)
is placed at a known translation in front of a 640x480 camera (f = 600 px) and its depth rendered
with what real sensors add: noise growing with the square of the distance, 10 % holes, flying
pixels at depth edges, a background plane behind the hand and an occluder over part of it,
quantised to 16-bit millimetres. The monocular estimate is the true hand scaled about the camera
centre by 0.6-1.4: what a monocular model gets wrong (size and depth together, the 2D fit exact).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from acr_ros.acr.depth import depth_image_to_metres, project
from acr_ros.acr.hands import CameraIntrinsics
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.rotation import axis_angle_to_matrix

WIDTH, HEIGHT = 640, 480
CAMERA = CameraIntrinsics(600.0, 600.0, 319.5, 239.5)
SURFACE_RADIUS = 0.005   # metres: each vertex is rendered as a disc of this radius (the fusion assumes 6 mm)
NOISE_PER_M2 = 0.0015    # depth noise sigma = 0.15 % of z² per metre
HOLES = 0.10


@dataclass
class Scene:
    depth: np.ndarray            # (H, W) float32 metres, NaN = no measurement (as the node reads it)
    vertices: np.ndarray         # (778, 3) the true hand in the camera frame
    joints: np.ndarray           # (21, 3) the true joints
    estimate_scale: float        # the monocular estimate is scale * the true hand
    faces: np.ndarray

    @property
    def estimate_vertices(self) -> np.ndarray:
        return self.vertices * self.estimate_scale

    @property
    def estimate_joints(self) -> np.ndarray:
        return self.joints * self.estimate_scale


def posed_hands(mano_dir: Path, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """count random poses of the synthetic right hand: root-aligned vertices (count, 778, 3),
    joints (count, 21, 3) and the faces."""
    g = torch.Generator().manual_seed(seed)
    mano = ManoLayer.from_directory(mano_dir)
    orient = axis_angle_to_matrix(torch.randn(count, 3, generator=g, dtype=torch.float64).float() * 1.2)
    fingers = torch.randn(count, 45, generator=g) * 0.2
    betas = torch.randn(count, 10, generator=g) * 0.5
    with torch.no_grad():
        out = mano(torch.ones(count, dtype=torch.long), orient, fingers, betas)
    return out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64), mano.faces("right")


def splat(depth: np.ndarray, points: np.ndarray, radius_m: float = SURFACE_RADIUS,
          camera: CameraIntrinsics = CAMERA) -> None:
    """Renders points as discs of radius_m into depth (metres, in place, nearest wins)."""
    height, width = depth.shape
    uv = project(points, camera)
    for (u, v), z in zip(uv, points[:, 2]):
        r = camera.fx * radius_m / z
        x0, x1 = int(max(np.floor(u - r), 0)), int(min(np.ceil(u + r) + 1, width))
        y0, y1 = int(max(np.floor(v - r), 0)), int(min(np.ceil(v + r) + 1, height))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = (xx - u) ** 2 + (yy - v) ** 2 <= r * r
        patch = depth[y0:y1, x0:x1]
        patch[disc] = np.minimum(patch[disc], z)


def render_scene(vertices: np.ndarray, joints: np.ndarray, faces: np.ndarray, rng: np.random.Generator) -> Scene:
    """The hand (root-aligned vertices and joints) at a random distance of 0.3-1.5 m, with a
    realistic depth image of it; see the module docstring."""
    distance = rng.uniform(0.3, 1.5)
    # Somewhere in the middle of the image, at that distance.
    centre_px = np.array([rng.uniform(0.3, 0.7) * WIDTH, rng.uniform(0.3, 0.7) * HEIGHT])
    offset = np.array([(centre_px[0] - CAMERA.cx) / CAMERA.fx * distance,
                       (centre_px[1] - CAMERA.cy) / CAMERA.fy * distance, distance])
    verts, joints = vertices + offset, joints + offset
    # Background: a tilted plane 0.1-0.8 m behind the hand.
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    depth = distance + rng.uniform(0.1, 0.8) + rng.uniform(-0.1, 0.1) * (xx / WIDTH - 0.5) \
        + rng.uniform(-0.1, 0.1) * (yy / HEIGHT - 0.5)
    splat(depth, verts)
    # An occluder (an object, the other hand) over a corner of the hand's box, 5-20 cm in front.
    uv = project(verts, CAMERA)
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    cover = rng.uniform(0.2, 0.45)
    ox = int(u0 + (u1 - u0) * (1 - cover)) if rng.random() < 0.5 else int(u0)
    oy = int(v0 + (v1 - v0) * (1 - cover)) if rng.random() < 0.5 else int(v0)
    ow, oh = int((u1 - u0) * cover) + 1, int((v1 - v0) * cover) + 1
    region = depth[max(oy, 0):max(oy + oh, 0), max(ox, 0):max(ox + ow, 0)]
    region[...] = np.minimum(region, distance - rng.uniform(0.05, 0.2))
    # Flying pixels: half of the pixels at a depth edge take a depth between the two sides.
    edge = np.zeros_like(depth, dtype=bool)
    jump_x = np.abs(np.diff(depth, axis=1)) > 0.05
    jump_y = np.abs(np.diff(depth, axis=0)) > 0.05
    edge[:, 1:] |= jump_x
    edge[1:, :] |= jump_y
    flying = edge & (rng.random(depth.shape) < 0.5)
    neighbour = np.roll(depth, 1, axis=1)
    depth[flying] = depth[flying] + rng.random(flying.sum()) * (neighbour[flying] - depth[flying])
    depth = depth + rng.normal(0.0, 1.0, depth.shape) * NOISE_PER_M2 * depth ** 2
    depth[rng.random(depth.shape) < HOLES] = 0.0
    millimetres = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
    return Scene(depth_image_to_metres(millimetres, "16UC1"), verts, joints, float(rng.uniform(0.6, 1.4)), faces)
