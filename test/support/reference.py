"""A deliberately plain transcription of the official ACR inference flow: the tests' reference
and the benchmark's baseline. Grid sizes are read from the tensors, so reduced inputs work.

It follows the official code step by step (docs/architecture.md, "The engine"): OpenCV letterbox + bicubic, the
unfolded network run densely (segmentation at 256x256 then nearest-downsampled, every head map,
the dense prior maps and the dense 218->109 fusion), the official parser with Python branches
(dummy rows at cell 0, the cross-hand prior with its distance check), 6D -> axis-angle, one MANO
call per side (global orientation as axis-angle, as the official MANO wrapper), the weak-
perspective projection and the translation in numpy. Slow on purpose; the fast pipeline must
match it. Stages (what the benchmark times): preprocess, dense_maps, parse, place_hands.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from acr_ros.acr.hands import ACR_FOCAL_LENGTH, ACR_INPUT_SIZE
from acr_ros.acr.options import DETECTION_THRESHOLD
from acr_ros.acr.preprocess import preprocess_exact
from acr_ros.acr.rotation import matrix_to_axis_angle, rot6d_to_matrix


def official_coord_maps(size: int) -> torch.Tensor:
    xx_ones = torch.ones([1, size], dtype=torch.int32).unsqueeze(-1)
    xx_range = torch.arange(size, dtype=torch.int32).unsqueeze(0).unsqueeze(1)
    xx = torch.matmul(xx_ones, xx_range).unsqueeze(-1)
    yy_ones = torch.ones([1, size], dtype=torch.int32).unsqueeze(1)
    yy_range = torch.arange(size, dtype=torch.int32).unsqueeze(0).unsqueeze(-1)
    yy = torch.matmul(yy_range, yy_ones).unsqueeze(-1)
    xx = xx.permute(0, 3, 1, 2).float() / (size - 1) * 2 - 1
    yy = yy.permute(0, 3, 1, 2).float() / (size - 1) * 2 - 1
    return torch.cat([xx, yy], dim=1)


def locally_connected(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The official LocallyConnected2d forward on (B, 256, 16, 1), 1x1 kernels."""
    x = x.unfold(2, 1, 1).unfold(3, 1, 1)
    x = x.contiguous().view(*x.size()[:-2], -1)
    return (x.unsqueeze(1) * weight).sum([2, -1])


def hadamard(features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    b, j, h, w = heatmaps.shape
    norm = F.softmax(heatmaps.reshape(b, j, -1), dim=-1)
    feats = features.reshape(b, -1, h * w)
    return torch.matmul(norm, feats.transpose(2, 1)).transpose(2, 1)


@torch.no_grad()
def dense_maps(net, x: torch.Tensor) -> dict:
    """The official model forward (head_forward) on a normalised image."""
    bb = net.backbone
    feat = bb(x)
    segm = bb.hand_segm(feat)                                                     # (B,33,256,256)
    x34 = torch.cat([feat, official_coord_maps(feat.shape[-1]).to(feat).repeat(x.shape[0], 1, 1, 1)], 1)
    maps = {}
    for s, heads in (("l", net.l_final_layers), ("r", net.r_final_layers)):
        params = heads[1](x34)
        center = heads[2](x34)
        prior = heads[4](x34)
        cam = heads[3](x34)
        cam[:, 0] = torch.pow(1.1, cam[:, 0])
        maps[s] = dict(params=torch.cat([cam, params], 1), center=center, prior=prior)
    bs = x.shape[0]
    att = F.interpolate(segm.clone().float(), scale_factor=(1 / 2, 1 / 2), mode="nearest")[:, 1:]
    contact = net.contact_layers[1](x34)
    att = att.to(contact.dtype)  # float64 runs (precision checks); a no-op in float32
    shape_f = net.cam_shape_layers[1](contact)
    wc = hadamard(contact, att).unsqueeze(-1)
    ws = hadamard(shape_f, att)
    for s, parts, lc, lin, fuse in (("l", slice(16, None), 2, 2, 4), ("r", slice(None, 16), 3, 3, 5)):
        offs = locally_connected(net.contact_layers[lc].weight, wc[:, :, parts, :])
        offs = offs.squeeze(-1).transpose(2, 1).reshape(bs, 96)
        shp = net.cam_shape_layers[lin](torch.flatten(ws[:, :, parts], start_dim=1))
        pare = torch.cat((offs, shp), dim=1).unsqueeze(-1).unsqueeze(-1).repeat(1, 1, *maps[s]["params"].shape[-2:])
        g = maps[s]["params"]
        params_pare = torch.cat((g[:, :3].clone(), pare), dim=1)
        maps[s]["params"] = net.contact_layers[fuse](torch.cat((g, params_pare), dim=1))
    return dict(
        l_params_maps=maps["l"]["params"].float(), r_params_maps=maps["r"]["params"].float(),
        l_center_map=maps["l"]["center"].float(), r_center_map=maps["r"]["center"].float(),
        l_prior_maps=maps["l"]["prior"].float(), r_prior_maps=maps["r"]["prior"].float(),
        segms=segm.float(),
    )


def _centers(center_map: torch.Tensor):
    """The official parse_centermap_heatmap_adaptive_scale_batch with K = 1, B = 1."""
    maxm = F.max_pool2d(center_map, 5, 1, 2)
    nms = center_map * torch.eq(maxm, center_map).float()
    b, c, h, w = nms.shape
    scores, inds = torch.topk(nms.reshape(b, c, -1), 1)
    inds = inds % (h * w)
    score, index = torch.topk(scores.reshape(b, -1), 1)
    ind = inds.view(b, -1)[0, index[0, 0]]
    ys, xs = float(ind // w), float(ind % w)
    detected = bool(score[0, 0] > DETECTION_THRESHOLD)
    return detected, int(ind), (ys, xs), float(score[0, 0])


def _sample(maps: torch.Tensor, flat: int) -> torch.Tensor:
    b, c = maps.shape[:2]
    return maps.view(b, c, -1).permute(0, 2, 1)[0, flat].clone()


@torch.no_grad()
def parse(maps: dict) -> dict:
    """The official parser for one image: rows [left, right], dummy rows at cell 0."""
    det, flat, yx, score = {}, {}, {}, {}
    params = {}
    for s in ("l", "r"):
        det[s], flat[s], yx[s], score[s] = _centers(maps[f"{s}_center_map"])
        params[s] = _sample(maps[f"{s}_params_maps"], flat[s] if det[s] else 0)
    prior_applied = False
    if det["l"] and det["r"]:
        l_prior = _sample(maps["l_prior_maps"], flat["r"])
        r_prior = _sample(maps["r_prior_maps"], flat["l"])
        diff = np.sqrt((yx["l"][0] - yx["r"][0]) ** 2 + (yx["l"][1] - yx["r"][1]) ** 2)
        if diff > 32:
            l_prior, r_prior = 0, 0
        else:
            prior_applied = True
        params["l"][3:] += l_prior
        params["r"][3:] += r_prior
    rows = []
    for i, s in enumerate(("l", "r")):
        p = params[s]
        orient = matrix_to_axis_angle(rot6d_to_matrix(p[3:9].view(1, 6)))[0]
        pose = matrix_to_axis_angle(rot6d_to_matrix(p[9:99].view(15, 6))).reshape(45)
        rows.append(dict(side=i, detected=det[s], score=score[s], cell=flat[s], params=p, cam=p[:3],
                         global_orient=orient, finger_pose=pose, betas=p[99:109]))
    return dict(rows=rows, prior_applied=prior_applied)


def translation_np(cam: np.ndarray, lb, intrinsics=None) -> np.ndarray:
    """Closed form, numpy float64: official (tx/s, ty/s, 1265/(256 s)) without intrinsics;
    the same camera in original pixels with them (docs/architecture.md, "Camera")."""
    s, tx, ty = (float(v) for v in cam)
    if intrinsics is None:
        return np.array([tx / s, ty / s, 2 * ACR_FOCAL_LENGTH / (ACR_INPUT_SIZE * s)])
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    size = lb.size
    tz = (2 * fx / (s * size) + 2 * fy / (s * size)) / 2
    return np.array([((tx + 1) * size / 2 - lb.pad_left - cx) * tz / fx,
                     ((ty + 1) * size / 2 - lb.pad_top - cy) * tz / fy, tz])


def preprocess(bgr: np.ndarray, device="cpu"):
    """(1, 3, 512, 512) normalised network input on device, and the letterbox."""
    rgb, lb = preprocess_exact(bgr)
    x = torch.from_numpy(rgb)[None].to(device).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
    return x, lb


@torch.no_grad()
def place_hands(mano, rows: list, lb, intrinsics=None) -> list:
    """MANO, keypoints and translation for both parser rows (updated in place); the detected ones."""
    detected = []
    for row in rows:
        side = torch.tensor([row["side"]], device=row["params"].device)
        out = mano(side, row["global_orient"][None], row["finger_pose"][None], row["betas"][None])
        j3d, verts = out.joints[0].cpu().numpy(), out.vertices[0].cpu().numpy()
        cam = row["cam"].cpu().numpy().astype(np.float64)
        pj2d = cam[0] * j3d[:, :2] + cam[1:3]
        pj2d_org = (pj2d + 1) * lb.size / 2 - np.array([lb.pad_left, lb.pad_top])
        trans = translation_np(cam, lb, intrinsics)
        row.update(joints_rel=j3d, vertices_rel=verts, keypoints=pj2d_org, translation=trans,
                   joints=j3d + trans, vertices=verts + trans)
        if row["detected"]:
            detected.append(row)
    return detected


def reference_reconstruct(net, mano, bgr: np.ndarray, intrinsics=None) -> dict:
    """Everything the official demo computes for one BGR image (net and mano on the CPU).

    Returns {'hands': [per detected hand dict], 'rows': both parser rows, 'prior_applied',
    'maps', 'letterbox'}. Per hand: side (0 left, 1 right), score, cell, cam, global_orient,
    finger_pose, betas, joints_rel / vertices_rel (root-aligned), keypoints (original pixels),
    translation, joints / vertices (camera frame)."""
    return reconstruct_input(net, mano, *preprocess(bgr), intrinsics)


def reconstruct_input(net, mano, x: torch.Tensor, lb, intrinsics=None) -> dict:
    """reference_reconstruct from the normalised network input x (1, 3, S, S) of an image with
    letterbox lb: S = 512 in the official flow, smaller in tests where resolution does not matter."""
    maps = dense_maps(net, x)
    parsed = parse(maps)
    return dict(hands=place_hands(mano, parsed["rows"], lb, intrinsics), rows=parsed["rows"],
                prior_applied=parsed["prior_applied"], maps=maps, letterbox=lb)
