"""Rotation conversions: conventions and numerics of the official ACR code."""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from acr_ros.acr.rotation import axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_matrix


# --- Transcriptions of the official functions (acr/utils.py, mano/manolayer.py) as references ----

def official_rot6d_to_rotmat(x):
    x = x.view(-1, 3, 2)
    b1 = F.normalize(x[:, :, 0], dim=1, eps=1e-6)
    dot_prod = torch.sum(b1 * x[:, :, 1], dim=1, keepdim=True)
    b2 = F.normalize(x[:, :, 1] - dot_prod * b1, dim=-1, eps=1e-6)
    b3 = torch.cross(b1, b2, dim=1)
    return torch.stack([b1, b2, b3], dim=-1)


def official_rotation_matrix_to_angle_axis(rotation_matrix):
    hom = torch.tensor([0, 0, 1]).to(rotation_matrix.dtype).view(1, 3, 1).repeat(rotation_matrix.shape[0], 1, 1)
    rmat = torch.cat([rotation_matrix, hom], dim=-1)
    rmat_t = torch.transpose(rmat, 1, 2)
    eps = 1e-6
    mask_d2 = rmat_t[:, 2, 2] < eps
    mask_d0_d1 = rmat_t[:, 0, 0] > rmat_t[:, 1, 1]
    mask_d0_nd1 = rmat_t[:, 0, 0] < -rmat_t[:, 1, 1]
    t0 = 1 + rmat_t[:, 0, 0] - rmat_t[:, 1, 1] - rmat_t[:, 2, 2]
    q0 = torch.stack([rmat_t[:, 1, 2] - rmat_t[:, 2, 1], t0, rmat_t[:, 0, 1] + rmat_t[:, 1, 0],
                      rmat_t[:, 2, 0] + rmat_t[:, 0, 2]], -1)
    t0_rep = t0.repeat(4, 1).t()
    t1 = 1 - rmat_t[:, 0, 0] + rmat_t[:, 1, 1] - rmat_t[:, 2, 2]
    q1 = torch.stack([rmat_t[:, 2, 0] - rmat_t[:, 0, 2], rmat_t[:, 0, 1] + rmat_t[:, 1, 0], t1,
                      rmat_t[:, 1, 2] + rmat_t[:, 2, 1]], -1)
    t1_rep = t1.repeat(4, 1).t()
    t2 = 1 - rmat_t[:, 0, 0] - rmat_t[:, 1, 1] + rmat_t[:, 2, 2]
    q2 = torch.stack([rmat_t[:, 0, 1] - rmat_t[:, 1, 0], rmat_t[:, 2, 0] + rmat_t[:, 0, 2],
                      rmat_t[:, 1, 2] + rmat_t[:, 2, 1], t2], -1)
    t2_rep = t2.repeat(4, 1).t()
    t3 = 1 + rmat_t[:, 0, 0] + rmat_t[:, 1, 1] + rmat_t[:, 2, 2]
    q3 = torch.stack([t3, rmat_t[:, 1, 2] - rmat_t[:, 2, 1], rmat_t[:, 2, 0] - rmat_t[:, 0, 2],
                      rmat_t[:, 0, 1] - rmat_t[:, 1, 0]], -1)
    t3_rep = t3.repeat(4, 1).t()
    mask_c0 = (mask_d2 * mask_d0_d1).view(-1, 1).type_as(q0)
    mask_c1 = (mask_d2 * ~mask_d0_d1).view(-1, 1).type_as(q1)
    mask_c2 = (~mask_d2 * mask_d0_nd1).view(-1, 1).type_as(q2)
    mask_c3 = (~mask_d2 * ~mask_d0_nd1).view(-1, 1).type_as(q3)
    q = q0 * mask_c0 + q1 * mask_c1 + q2 * mask_c2 + q3 * mask_c3
    q /= torch.sqrt(t0_rep * mask_c0 + t1_rep * mask_c1 + t2_rep * mask_c2 + t3_rep * mask_c3)
    q *= 0.5
    q1_, q2_, q3_ = q[..., 1], q[..., 2], q[..., 3]
    sin_squared_theta = q1_ * q1_ + q2_ * q2_ + q3_ * q3_
    sin_theta = torch.sqrt(sin_squared_theta)
    cos_theta = q[..., 0]
    two_theta = 2.0 * torch.where(cos_theta < 0.0, torch.atan2(-sin_theta, -cos_theta),
                                  torch.atan2(sin_theta, cos_theta))
    k = torch.where(sin_squared_theta > 0.0, two_theta / sin_theta, 2.0 * torch.ones_like(sin_theta))
    aa = torch.zeros_like(q)[..., :3]
    aa[..., 0] += q1_ * k
    aa[..., 1] += q2_ * k
    aa[..., 2] += q3_ * k
    aa[torch.isnan(aa)] = 0.0
    return aa


def official_batch_rodrigues(axisang):
    axisang_norm = torch.norm(axisang + 1e-8, p=2, dim=1)
    angle = torch.unsqueeze(axisang_norm, -1)
    axisang_normalized = torch.div(axisang, angle)
    angle = angle * 0.5
    quat = torch.cat([torch.cos(angle), torch.sin(angle) * axisang_normalized], dim=1)
    norm_quat = quat / quat.norm(p=2, dim=1, keepdim=True)
    w, x, y, z = norm_quat[:, 0], norm_quat[:, 1], norm_quat[:, 2], norm_quat[:, 3]
    w2, x2, y2, z2 = w.pow(2), x.pow(2), y.pow(2), z.pow(2)
    wx, wy, wz = w * x, w * y, w * z
    xy, xz, yz = x * y, x * z, y * z
    return torch.stack([w2 + x2 - y2 - z2, 2 * xy - 2 * wz, 2 * wy + 2 * xz,
                        2 * wz + 2 * xy, w2 - x2 + y2 - z2, 2 * yz - 2 * wx,
                        2 * xz - 2 * wy, 2 * wx + 2 * yz, w2 - x2 - y2 + z2], dim=1).view(-1, 3, 3)


def random_rotations(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return axis_angle_to_matrix(torch.randn(n, 3, generator=g, dtype=dtype))


# --- 6D ------------------------------------------------------------------------------------------

def test_rot6d_identity():
    r = rot6d_to_matrix(torch.tensor([1.0, 0, 0, 1, 0, 0]))
    assert torch.equal(r, torch.eye(3))


def test_rot6d_is_interleaved_row_major():
    # Column 1 = (a0, a2, a4), column 2 = (a1, a3, a5): here col1 = y axis, col2 = z axis.
    r = rot6d_to_matrix(torch.tensor([0.0, 0.0, 2.0, 0.0, 0.0, 3.0]))
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(r, expected)
    # Zhou's split (first three / last three) would give a different matrix for the same input.
    zhou = torch.stack([F.normalize(torch.tensor([0.0, 0.0, 2.0]), dim=0), torch.tensor([0.0, 0.0, 3.0])], -1)
    assert not torch.allclose(r[:, :2], zhou)


def test_rot6d_batched_matches_official_and_is_orthonormal():
    x = torch.randn(4, 7, 6, generator=torch.Generator().manual_seed(1))
    r = rot6d_to_matrix(x)
    assert r.shape == (4, 7, 3, 3)
    torch.testing.assert_close(r.reshape(-1, 3, 3), official_rot6d_to_rotmat(x.reshape(-1, 6)), rtol=0, atol=1e-7)
    eye = torch.eye(3).expand(4, 7, 3, 3)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(4, 7), rtol=0, atol=1e-5)


# --- axis-angle ----------------------------------------------------------------------------------

def test_axis_angle_to_matrix_matches_official_and_opencv():
    aa = torch.randn(50, 3, generator=torch.Generator().manual_seed(2)) * 1.5
    ours = axis_angle_to_matrix(aa)
    torch.testing.assert_close(ours, official_batch_rodrigues(aa), rtol=0, atol=0)
    for v, r in zip(aa.double().numpy(), ours.double().numpy()):
        np.testing.assert_allclose(r, cv2.Rodrigues(v)[0], atol=2e-6)
    # leading dims and the zero vector
    assert axis_angle_to_matrix(aa.view(5, 10, 3)).shape == (5, 10, 3, 3)
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3)), torch.eye(3), rtol=0, atol=1e-7)


def test_matrix_to_axis_angle_matches_official():
    for dtype in (torch.float32, torch.float64):
        r = rot6d_to_matrix(torch.randn(200, 6, generator=torch.Generator().manual_seed(3), dtype=dtype))
        torch.testing.assert_close(matrix_to_axis_angle(r), official_rotation_matrix_to_angle_axis(r),
                                   rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_axis_angle_round_trip_batched():
    g = torch.Generator().manual_seed(4)
    axis = F.normalize(torch.randn(3, 40, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(3, 40, 1, generator=g, dtype=torch.float64) * 3.0  # < pi
    aa = axis * angle
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert back.shape == (3, 40, 3)
    torch.testing.assert_close(back, aa, rtol=0, atol=1e-7)


def test_matrix_to_axis_angle_nan_becomes_zero():
    out = matrix_to_axis_angle(torch.full((2, 3, 3), float("nan")))
    assert torch.equal(out, torch.zeros(2, 3))
