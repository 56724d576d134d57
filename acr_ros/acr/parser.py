"""The ACR result parser (official acr/result_parser.py) on fixed-size tensors: no data-dependent
shapes, no host syncs.

Every image has exactly two rows, [left, right], and a ``detected`` mask; the official parser's
dynamic row lists (and its dummy rows for missing hands) become masked rows here. The decisions are
the official ones:

* center maps: 5x5 max-pool NMS (cells equal to the pooled value kept, the rest zeroed), top-1 per
  side (:func:`peak_centers`); acr_ros.acr.network.decide detects a hand when its RAW score is
  strictly greater than the threshold (0.35; no sigmoid); the grid size is read from the maps (64
  for the 512 input);
* cross-hand prior: applied only when both hands are detected and their centers are at most 32
  cells apart (Euclidean, in the 64 grid). The official code checks the distance of the first
  pair of the batch only; here it is per image (identical for one image);
* 109 values: cam [0:3] (s, tx, ty), global orient 6D [3:9], 15 finger joints 6D [9:99] (MANO
  joint order 1..15), betas [99:109]; 6D in the interleaved (3x2 row-major) convention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from acr_ros.acr.options import DUPLICATE_DISTANCE
from acr_ros.acr.rotation import matrix_to_axis_angle, rot6d_to_matrix

NMS_KERNEL = 5
PRIOR_MAX_DISTANCE = 32.0  # cells of the 64 grid
LEFT_ROW, RIGHT_ROW = 0, 1


@dataclass
class HandParams:
    """The 109 values of each row decoded (rows (..., ) as the input's leading dimensions)."""

    cam: torch.Tensor            # (..., 3) weak-perspective s, tx, ty
    orient_matrix: torch.Tensor  # (..., 3, 3) the 6D decode, used directly as the MANO root rotation
    global_orient: torch.Tensor  # (..., 3) the same as axis-angle
    finger_pose: torch.Tensor    # (..., 45) axis-angle relative to the MANO mean pose
    betas: torch.Tensor          # (..., 10)


def center_nms(maps: torch.Tensor, kernel: int = NMS_KERNEL) -> torch.Tensor:
    """(B, C, H, W) -> the map with every cell that is not its kernel x kernel maximum set to 0."""
    pooled = F.max_pool2d(maps, kernel, 1, (kernel - 1) // 2)
    return maps * torch.eq(pooled, maps).to(maps.dtype)


def peak_centers(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """maps (B, S, H, W) raw center maps (S = 2 sides: left, right) -> scores (B, S) float (the
    top-1 NMS value) and cells (B, S) int64 (flat index y*W + x)."""
    nms = center_nms(maps.float())
    scores, cells = torch.topk(nms.flatten(2), 1, dim=-1)
    return scores[..., 0], cells[..., 0]


def cell_yx(cells: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of a size x size grid -> (y, x) int64."""
    y = torch.div(cells, size, rounding_mode="floor")
    return y, cells - y * size


def center_distance(cells: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2) flat cells [left, right] of a size x size grid -> (B,) Euclidean distance in cells (float32)."""
    y, x = cell_yx(cells, size)
    y, x = y.float(), x.float()
    return torch.sqrt((y[:, 0] - y[:, 1]) ** 2 + (x[:, 0] - x[:, 1]) ** 2)


def prior_applies(cells: torch.Tensor, detected: torch.Tensor, size: int,
                  max_distance: float = PRIOR_MAX_DISTANCE) -> torch.Tensor:
    """(B,) bool: both hands detected and their centers at most ``max_distance`` cells apart."""
    both = detected[:, LEFT_ROW] & detected[:, RIGHT_ROW]
    return both & ~(center_distance(cells, size) > max_distance)


def suppress_duplicates(scores: torch.Tensor, cells: torch.Tensor, detected: torch.Tensor, size: int,
                        distance: float = DUPLICATE_DISTANCE) -> torch.Tensor:
    """Optional fix for one hand reported as both sides (upstream issue #22): where both sides are
    detected with centers at most ``distance`` cells apart, keep only the higher-scoring side (the
    left one on an exact tie). Returns the new detected mask (B, 2). Not in the official code."""
    both = detected[:, LEFT_ROW] & detected[:, RIGHT_ROW]
    dup = both & (center_distance(cells, size) <= distance)
    left_wins = scores[:, LEFT_ROW] >= scores[:, RIGHT_ROW]
    drop = torch.stack([dup & ~left_wins, dup & left_wins], 1)
    return detected & ~drop


def decode_params(params: torch.Tensor) -> HandParams:
    """(..., 109) float: cam [0:3] (s, tx, ty), global orient 6D [3:9], 15 finger joints 6D [9:99]
    (MANO joint order 1..15), betas [99:109]. Rotations go through a quaternion to axis-angle, NaN -> 0,
    as the official parser."""
    params = params.float()
    orient = rot6d_to_matrix(params[..., 3:9])
    fingers = rot6d_to_matrix(params[..., 9:99].reshape(*params.shape[:-1], 15, 6))
    return HandParams(
        cam=params[..., 0:3],
        orient_matrix=orient,
        global_orient=matrix_to_axis_angle(orient),
        finger_pose=matrix_to_axis_angle(fingers).reshape(*params.shape[:-1], 45),
        betas=params[..., 99:109],
    )
