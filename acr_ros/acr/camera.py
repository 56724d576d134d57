"""ACR's weak-perspective camera and the 3D translation of each hand (SPEC §6).

Batched torch, no CPU syncs. ``letterbox_params`` is an (N, 3) tensor of [S, pad_left, pad_top]
per row (``preprocess.letterbox_tensor``); intrinsics are (N, 4) [fx, fy, cx, cy] or (N, 3, 3) K,
in pixels of the ORIGINAL image. Translations are metres in OpenCV camera axes (x right, y down,
z forward), to be added to the root-aligned MANO joints and vertices.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from acr_ros.acr.preprocess import Letterbox, upload
from acr_ros.hands import CameraIntrinsics, default_intrinsics


def weak_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """(N, P, 3) points, (N, 3) cam (s, tx, ty) -> (N, P, 2) normalised input coords in [-1, 1]."""
    return points[..., :2] * cam[:, None, 0:1] + cam[:, None, 1:3]


def normalized_to_original(uv: torch.Tensor, letterbox_params: torch.Tensor) -> torch.Tensor:
    """(N, P, 2) normalised coords -> pixels of the original image: (uv + 1) S / 2 - pad."""
    lp = letterbox_params.to(uv.dtype)
    return (uv + 1.0) * (lp[:, None, 0:1] * 0.5) - lp[:, None, 1:3]


def project_to_original(points: torch.Tensor, cam: torch.Tensor, letterbox_params: torch.Tensor) -> torch.Tensor:
    """Weak-perspective projection straight to original-image pixels (the official pj2d_org)."""
    return normalized_to_original(weak_perspective(points, cam), letterbox_params)


def _fxfycxcy(intrinsics: torch.Tensor) -> torch.Tensor:
    if intrinsics.shape[-2:] == (3, 3):
        k = intrinsics
        return torch.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]], dim=-1)
    if intrinsics.shape[-1] != 4:
        raise ValueError(f"intrinsics must be (N, 4) [fx, fy, cx, cy] or (N, 3, 3), got {tuple(intrinsics.shape)}")
    return intrinsics


def intrinsics_tensor(intrinsics: Sequence[Optional[CameraIntrinsics]], letterboxes: Sequence[Letterbox],
                      device="cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 4) [fx, fy, cx, cy] per row; rows without intrinsics (None) get the official default
    (acr_ros.hands.default_intrinsics)."""
    rows = []
    for k, lb in zip(intrinsics, letterboxes, strict=True):
        k = k or default_intrinsics(lb.width, lb.height)
        rows.append((k.fx, k.fy, k.cx, k.cy))
    return upload(np.array(rows, dtype=np.float64).reshape(-1, 4), torch.device(device)).to(dtype)


def camera_translation(cam: torch.Tensor, letterbox_params: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(N, 3) translation from the weak-perspective cam, closed form (SPEC §6).

    The weak-perspective image of a root-aligned point X is (s X + t) in normalised coords; the
    perspective camera that matches it at the root puts the root at depth Tz = 2 f / (s S) (f in
    original pixels; the mean of fx and fy when they differ) and at Tx, Ty that project the root to
    the pixel of (tx, ty). With the default intrinsics this is the official camera and equals
    (tx / s, ty / s, 1265 / (256 s)). s is used as is (no clamp): s <= 0 gives a meaningless
    translation, as in the official code.
    """
    lp = letterbox_params.to(cam.dtype)
    k = _fxfycxcy(intrinsics).to(cam.dtype)
    s, tx, ty = cam.unbind(-1)
    size, pad_left, pad_top = lp.unbind(-1)
    fx, fy, cx, cy = k.unbind(-1)
    tz = (fx + fy) / (s * size)
    x = ((tx + 1.0) * size * 0.5 - pad_left - cx) * tz / fx
    y = ((ty + 1.0) * size * 0.5 - pad_top - cy) * tz / fy
    return torch.stack([x, y, tz], dim=-1)


def estimate_translation(points3d: torch.Tensor, points2d: torch.Tensor, intrinsics: torch.Tensor,
                         weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, 3) translation T minimising the weighted linearised reprojection error (SPIN's
    estimate_translation_np, batched and on the device).

    For each point: fx (X + Tx) = (u - cx)(Z + Tz) and likewise for y, linear in T. points3d
    (N, P, 3), points2d (N, P, 2) pixels, intrinsics (N, 4) or (N, 3, 3), weights (N, P) >= 0
    (confidences; each row is weighted by sqrt(weight) as SPIN does). Solved in float64.
    """
    out_dtype = points3d.dtype
    p3 = points3d.double()
    p2 = points2d.double()
    fx, fy, cx, cy = _fxfycxcy(intrinsics).double().unbind(-1)
    n, num = p3.shape[:2]
    X, Y, Z = p3.unbind(-1)
    du = p2[..., 0] - cx[:, None]
    dv = p2[..., 1] - cy[:, None]
    zeros = torch.zeros_like(X)
    # Rows [fx, 0, -du] T = du Z - fx X and [0, fy, -dv] T = dv Z - fy Y.
    qx = torch.stack([fx[:, None].expand(n, num), zeros, -du], dim=-1)
    qy = torch.stack([zeros, fy[:, None].expand(n, num), -dv], dim=-1)
    q = torch.cat([qx, qy], dim=1)                                              # (N, 2P, 3)
    c = torch.cat([du * Z - fx[:, None] * X, dv * Z - fy[:, None] * Y], dim=1)  # (N, 2P)
    w = torch.ones_like(X) if weights is None else weights.double()
    w = torch.cat([w, w], dim=1)  # sqrt(w) on both sides of the normal equations = w once
    a = torch.einsum("npi,np,npj->nij", q, w, q)
    b = torch.einsum("npi,np,np->ni", q, w, c)
    # solve_ex: no error check, so no device->host sync (a singular system gives inf/nan rows).
    return torch.linalg.solve_ex(a, b.unsqueeze(-1))[0].squeeze(-1).to(out_dtype)
