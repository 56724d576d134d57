"""ACR's weak-perspective camera and the 3D translation of each hand (docs/architecture.md, "Camera").

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
from acr_ros.acr.hands import CameraIntrinsics, default_intrinsics


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
    (acr_ros.acr.hands.default_intrinsics)."""
    rows = []
    for k, lb in zip(intrinsics, letterboxes, strict=True):
        k = k or default_intrinsics(lb.width, lb.height)
        rows.append((k.fx, k.fy, k.cx, k.cy))
    return upload(np.array(rows, dtype=np.float64).reshape(-1, 4), torch.device(device)).to(dtype)


def camera_translation(cam: torch.Tensor, letterbox_params: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(N, 3) translation from the weak-perspective cam, closed form.

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
