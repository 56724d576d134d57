"""Rotation conversions with the numerics of the official ACR code (docs/architecture.md, "Rotations").

All functions are batched over any leading dimensions, device-agnostic and free of CPU syncs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3), the interleaved HMR/SPIN 6D convention.

    The 6 values are a 3x2 matrix stored row-major: column 1 = (a0, a2, a4), column 2 = (a1, a3, a5).
    Gram-Schmidt with eps 1e-6 as the official ``rot6d_to_rotmat``; R = [b1 b2 b3] (columns).
    """
    m = x.reshape(*x.shape[:-1], 3, 2)
    b1 = F.normalize(m[..., 0], dim=-1, eps=1e-6)
    dot = (b1 * m[..., 1]).sum(-1, keepdim=True)
    b2 = F.normalize(m[..., 1] - dot * b1, dim=-1, eps=1e-6)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def _matrix_to_quaternion_wxyz_official(rmat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(M, 3, 3) -> (M, 4) (w, x, y, z): the old kornia/torchgeometry algorithm the official code uses.

    Kept operation for operation (including its case selection on the transposed matrix) so the
    axis-angle values equal the official ones to the last bits.
    """
    r = rmat.transpose(1, 2)
    mask_d2 = r[:, 2, 2] < eps
    mask_d0_d1 = r[:, 0, 0] > r[:, 1, 1]
    mask_d0_nd1 = r[:, 0, 0] < -r[:, 1, 1]

    t0 = 1 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]
    q0 = torch.stack([r[:, 1, 2] - r[:, 2, 1], t0, r[:, 0, 1] + r[:, 1, 0], r[:, 2, 0] + r[:, 0, 2]], -1)
    t1 = 1 - r[:, 0, 0] + r[:, 1, 1] - r[:, 2, 2]
    q1 = torch.stack([r[:, 2, 0] - r[:, 0, 2], r[:, 0, 1] + r[:, 1, 0], t1, r[:, 1, 2] + r[:, 2, 1]], -1)
    t2 = 1 - r[:, 0, 0] - r[:, 1, 1] + r[:, 2, 2]
    q2 = torch.stack([r[:, 0, 1] - r[:, 1, 0], r[:, 2, 0] + r[:, 0, 2], r[:, 1, 2] + r[:, 2, 1], t2], -1)
    t3 = 1 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    q3 = torch.stack([t3, r[:, 1, 2] - r[:, 2, 1], r[:, 2, 0] - r[:, 0, 2], r[:, 0, 1] - r[:, 1, 0]], -1)

    c0 = (mask_d2 & mask_d0_d1).unsqueeze(-1).to(q0.dtype)
    c1 = (mask_d2 & ~mask_d0_d1).unsqueeze(-1).to(q0.dtype)
    c2 = (~mask_d2 & mask_d0_nd1).unsqueeze(-1).to(q0.dtype)
    c3 = (~mask_d2 & ~mask_d0_nd1).unsqueeze(-1).to(q0.dtype)
    q = q0 * c0 + q1 * c1 + q2 * c2 + q3 * c3
    t = t0.unsqueeze(-1) * c0 + t1.unsqueeze(-1) * c1 + t2.unsqueeze(-1) * c2 + t3.unsqueeze(-1) * c3
    return q / torch.sqrt(t) * 0.5


def _quaternion_wxyz_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) (w, x, y, z) -> (..., 3), as kornia's ``quaternion_to_angle_axis``."""
    q1, q2, q3 = q[..., 1], q[..., 2], q[..., 3]
    sin_sq = q1 * q1 + q2 * q2 + q3 * q3
    sin_t = torch.sqrt(sin_sq)
    cos_t = q[..., 0]
    two_theta = 2.0 * torch.where(cos_t < 0.0, torch.atan2(-sin_t, -cos_t), torch.atan2(sin_t, cos_t))
    k = torch.where(sin_sq > 0.0, two_theta / sin_t, 2.0 * torch.ones_like(sin_t))
    return torch.stack([q1 * k, q2 * k, q3 * k], dim=-1)


def matrix_to_axis_angle(rmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) through a quaternion, as the official parser; NaN becomes 0."""
    lead = rmat.shape[:-2]
    q = _matrix_to_quaternion_wxyz_official(rmat.reshape(-1, 3, 3))
    aa = _quaternion_wxyz_to_axis_angle(q)
    aa = torch.where(torch.isnan(aa), torch.zeros_like(aa), aa)
    return aa.reshape(*lead, 3)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3): the official MANO Rodrigues (manopth ``batch_rodrigues``).

    The angle is ||aa + 1e-8|| (the 1e-8 is added to each component inside the norm, as official),
    then a unit quaternion (cos, sin * aa / angle) is turned into a matrix.
    """
    angle = torch.linalg.vector_norm(aa + 1e-8, dim=-1, keepdim=True)
    axis = aa / angle
    half = angle * 0.5
    quat = torch.cat([torch.cos(half), torch.sin(half) * axis], dim=-1)
    quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    w, x, y, z = quat.unbind(-1)
    w2, x2, y2, z2 = w * w, x * x, y * y, z * z
    wx, wy, wz = w * x, w * y, w * z
    xy, xz, yz = x * y, x * z, y * z
    m = torch.stack([
        w2 + x2 - y2 - z2, 2 * xy - 2 * wz, 2 * wy + 2 * xz,
        2 * wz + 2 * xy, w2 - x2 + y2 - z2, 2 * yz - 2 * wx,
        2 * xz - 2 * wy, 2 * wx + 2 * yz, w2 - x2 - y2 + z2,
    ], dim=-1)
    return m.reshape(*aa.shape[:-1], 3, 3)
