"""Weak-perspective camera and the closed-form translation."""
import numpy as np
import pytest
import torch

from acr_ros.acr.camera import (camera_translation, intrinsics_tensor, normalized_to_original, project_to_original,
                                weak_perspective)
from acr_ros.acr.preprocess import letterbox, letterbox_tensor
from acr_ros.acr.hands import CameraIntrinsics
from acr_ros.backends.mediapipe import solve_translation

LBS = [letterbox(1080, 1920), letterbox(1280, 720), letterbox(101, 200), letterbox(512, 512), letterbox(7, 3)]


def _hand_points(n, seed=0, dtype=torch.float64):
    """Root-aligned, hand-sized point sets (about 10 cm across), (n, 21, 3)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 21, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.12, 0.12, 0.05], dtype=dtype)


def _project(points, k, translation):
    """(N, P, 3) points + (N, 3) translation -> (N, P, 2) pixels, with CameraIntrinsics.project per row."""
    p = (points + translation[:, None, :]).double().numpy()
    rows = [CameraIntrinsics(*row).project(q) for row, q in zip(k.tolist(), p)]
    return torch.from_numpy(np.stack(rows)).to(points.dtype)


def _default_k(lbs=LBS, device="cpu", dtype=torch.float64):
    """The official default camera of each letterbox, (N, 4)."""
    return intrinsics_tensor([None] * len(lbs), lbs, device, dtype)


def _cams(n, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = 3.0 + 9.0 * torch.rand(n, generator=g, dtype=dtype)   # depth 0.4 .. 1.6 m (Tz = 4.94 / s)
    t = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * 1.4
    return torch.cat([s[:, None], t], 1)


def test_weak_perspective_and_original_pixels():
    pts = _hand_points(len(LBS))
    cam = _cams(len(LBS))
    uv = weak_perspective(pts, cam)
    torch.testing.assert_close(uv, cam[:, None, :1] * pts[..., :2] + cam[:, None, 1:])
    lp = letterbox_tensor(LBS, dtype=torch.float64)
    px = project_to_original(pts, cam, lp)
    for i, lb in enumerate(LBS):
        torch.testing.assert_close(px[i], (uv[i] + 1) * lb.size / 2 - torch.tensor([lb.pad_left, lb.pad_top]))
    torch.testing.assert_close(normalized_to_original(uv, lp), px)


def test_closed_form_default_equals_official_conversion():
    cam = _cams(len(LBS))
    lp = letterbox_tensor(LBS, dtype=torch.float64)
    t = camera_translation(cam, lp, _default_k())
    s, tx, ty = cam.unbind(-1)
    torch.testing.assert_close(t, torch.stack([tx / s, ty / s, 1265.0 / (256.0 * s)], -1), rtol=1e-12, atol=1e-12)


def test_closed_form_with_real_intrinsics():
    n = len(LBS)
    cam = _cams(n).float()
    lp = letterbox_tensor(LBS)
    given = [CameraIntrinsics(900.0, 910.0, lb.width / 2 + 13, lb.height / 2 - 7) if i % 2 == 0 else None
             for i, lb in enumerate(LBS)]
    k = intrinsics_tensor(given, LBS)
    t = camera_translation(cam, lp, k)
    assert t.shape == (n, 3) and t.dtype == torch.float32
    default = camera_translation(cam, lp, _default_k(dtype=torch.float32))
    torch.testing.assert_close(t[1::2], default[1::2])          # None rows: official camera
    assert (t[0::2] - default[0::2]).abs().max() > 1e-3            # given rows: differ
    # The root projects where the weak-perspective camera puts it...
    root_px = _project(torch.zeros(n, 1, 3), k, t)
    torch.testing.assert_close(root_px, normalized_to_original(cam[:, None, 1:], lp), rtol=0, atol=1e-3)
    # ...and small offsets at the root scale alike: f_mean / Tz = s S / 2 pixels per metre.
    fmean = (k[:, 0] + k[:, 1]) / 2
    torch.testing.assert_close(fmean / t[:, 2], cam[:, 0] * lp[:, 0] / 2, rtol=1e-5, atol=0)
    # A 3x3 K gives the same as [fx, fy, cx, cy].
    kk = torch.zeros(n, 3, 3)
    kk[:, 0, 0], kk[:, 1, 1], kk[:, 0, 2], kk[:, 1, 2], kk[:, 2, 2] = k[:, 0], k[:, 1], k[:, 2], k[:, 3], 1
    torch.testing.assert_close(camera_translation(cam, lp, kk), t)
    with pytest.raises(ValueError):
        camera_translation(cam, lp, torch.zeros(n, 5))


def test_closed_form_agrees_with_a_least_squares_fit_on_weak_perspective_data():
    n = len(LBS)
    pts = _hand_points(n, seed=5)
    cam = _cams(n, seed=6)
    lp = letterbox_tensor(LBS, dtype=torch.float64)
    k = _default_k()
    px = project_to_original(pts, cam, lp)   # what the official code feeds its PnP
    ls = torch.from_numpy(np.stack([  # SPIN's linear least squares, which the official code falls back to
        solve_translation(pts[i].numpy(), px[i].numpy(), CameraIntrinsics(*k[i].tolist())) for i in range(n)]))
    closed = camera_translation(cam, lp, k)
    rel = (ls - closed).norm(dim=-1) / closed.norm(dim=-1)
    assert rel.max() < 0.02, rel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_without_sync():
    n = len(LBS)
    pts, cam = _hand_points(n).float(), _cams(n).float()
    lp_cpu = letterbox_tensor(LBS)
    k_cpu = _default_k(dtype=torch.float32)
    ref_t = camera_translation(cam, lp_cpu, k_cpu)
    ref_px = project_to_original(pts, cam, lp_cpu)
    pts, cam = pts.cuda(), cam.cuda()
    camera_translation(cam, lp_cpu.cuda(), k_cpu.cuda())  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        lp = letterbox_tensor(LBS, "cuda")
        k = intrinsics_tensor([None] * n, LBS, "cuda")
        t = camera_translation(cam, lp, k)
        px = project_to_original(pts, cam, lp)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(t.cpu(), ref_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(px.cpu(), ref_px, rtol=1e-5, atol=1e-4)
