"""Synthetic hand results for tests and benchmarks: random MANO-sized hands for the message
builders, and a closed mesh of MANO's size for the renderer. Not hand shapes."""
from __future__ import annotations

import math

import numpy as np

from acr_ros.acr.hands import NUM_VERTICES, RIGHT, CameraIntrinsics, HandResult

# A 1080p camera, about 1 m across at 0.6 m.
CAMERA_1080P = CameraIntrinsics(1400.0, 1400.0, 960.0, 540.0)
# Random triangles over MANO's 778 vertices, as many as MANO has (1538); the right side wound the
# other way, like MANO's.
FACES = np.random.default_rng(1).integers(0, NUM_VERTICES, (1538, 3))
FACES_BY_SIDE = {"left": FACES, "right": FACES[:, ::-1]}


def rodrigues(axis_angle) -> np.ndarray:
    v = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def quaternion_matrix(q) -> np.ndarray:
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def random_rotation(rng) -> np.ndarray:
    axis = rng.normal(size=3)
    return rodrigues(axis / np.linalg.norm(axis) * rng.uniform(0, math.pi))


def make_hand(side="left", seed=0, mano=True, score=0.9) -> HandResult:
    """A hand of random values about 0.5 m in front of the camera; mano=False: without the MANO
    fields (as the embedded backend gives)."""
    rng = np.random.default_rng(seed)
    joints = (np.array([0.0, 0.0, 0.5]) + rng.normal(scale=0.04, size=(21, 3))).astype(np.float32)
    return HandResult(
        side=side, score=score, joints=joints,
        keypoints=rng.uniform(10, 300, (21, 2)).astype(np.float32),
        wrist_rotation=random_rotation(rng).astype(np.float32),
        global_orient=rng.normal(size=3).astype(np.float32) if mano else None,
        finger_pose=rng.normal(size=45).astype(np.float32) if mano else None,
        shape=rng.normal(size=10).astype(np.float32) if mano else None,
        weak_camera=rng.normal(size=3).astype(np.float32) if mano else None,
        vertices=(joints[0] + rng.normal(scale=0.05, size=(NUM_VERTICES, 3))).astype(np.float32) if mano else None,
        joint_rotations=np.stack([random_rotation(rng) for _ in range(21)]).astype(np.float32) if mano else None,
    )


def ellipsoid(rings=26, segments=30, radii=(0.09, 0.05, 0.03), centre=(0.0, 0.0, 0.6), flip=False):
    """A closed triangle mesh of about MANO's size (782 vertices, 1560 faces)."""
    lat = np.linspace(0, np.pi, rings + 2)[1:-1]
    lon = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.cos(lo), -np.cos(la), np.sin(la) * np.sin(lo)], -1).reshape(-1, 3)
    v = np.vstack([[0, -1, 0], ring, [0, 1, 0]]) * radii + centre
    faces = []
    for j in range(segments):
        j2 = (j + 1) % segments
        faces.append([0, 1 + j, 1 + j2])
        for i in range(rings - 1):
            a, b = 1 + i * segments + j, 1 + i * segments + j2
            faces += [[a, a + segments, b], [b, a + segments, b + segments]]
        faces.append([len(v) - 1, 1 + (rings - 1) * segments + j2, 1 + (rings - 1) * segments + j])
    faces = np.array(faces)
    return v.astype(np.float32), (faces[:, ::-1] if flip else faces)


def mesh_hand(side=RIGHT, k=CAMERA_1080P, **kw) -> tuple[HandResult, np.ndarray]:
    """An ellipsoid 'hand' seen by camera k (keypoints projected), and its faces."""
    v, f = ellipsoid(**kw)
    joints = v[::37][:21]
    hand = HandResult(side, 0.93, joints, k.project(joints).astype(np.float32), np.eye(3, dtype=np.float32),
                      vertices=v)
    return hand, f
