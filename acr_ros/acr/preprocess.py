"""Input preprocessing of ACR (official acr/utils.py, img_preprocess): BGR -> RGB, white letterbox to
a square, bicubic to 512.

``preprocess_exact`` reproduces the official pixels with OpenCV; ``preprocess_batch`` does the same
on the inference device (within 1 intensity level of OpenCV's fixed-point bicubic) and normalises.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from acr_ros.acr.hands import ACR_INPUT_SIZE

INPUT_SIZE = ACR_INPUT_SIZE
PAD_VALUE = 255  # the image the network sees is padded with white


@dataclass(frozen=True)
class Letterbox:
    """Where an original H x W image sits in the padded S x S square that is resized to the input."""

    height: int
    width: int
    size: int          # S = max(H, W)
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    input_size: int = INPUT_SIZE

    @property
    def offsets(self) -> tuple[int, ...]:
        """The official 10-value metadata [S, S, crop t r b l (0), pad t r b l]."""
        return (self.size, self.size, 0, 0, 0, 0, self.pad_top, self.pad_right, self.pad_bottom, self.pad_left)

    @property
    def params(self) -> tuple[float, float, float]:
        """(S, pad_left, pad_top): what the batched camera functions need per row."""
        return float(self.size), float(self.pad_left), float(self.pad_top)


def letterbox(height: int, width: int, input_size: int = INPUT_SIZE) -> Letterbox:
    """imgaug's compute_paddings_to_reach_aspect_ratio(shape, 1.0): pad the short axis, the odd
    pixel going to the bottom / right."""
    if height < 1 or width < 1:
        raise ValueError(f"empty image {height}x{width}")
    size = max(height, width)
    diff = size - min(height, width)
    top = bottom = left = right = 0
    if width > height:
        top, bottom = diff // 2, diff - diff // 2
    elif height > width:
        left, right = diff // 2, diff - diff // 2
    return Letterbox(height, width, size, top, bottom, left, right, input_size)


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("expected a BGR uint8 image of shape (H, W, 3), got "
                         f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")


def preprocess_exact(bgr: np.ndarray, input_size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """The official network input: (input_size, input_size, 3) uint8 RGB, and its letterbox."""
    _check_image(bgr)
    lb = letterbox(bgr.shape[0], bgr.shape[1], input_size)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    padded = cv2.copyMakeBorder(rgb, lb.pad_top, lb.pad_bottom, lb.pad_left, lb.pad_right,
                                cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return cv2.resize(padded, (input_size, input_size), interpolation=cv2.INTER_CUBIC), lb


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """numpy -> tensor on ``device``; through pinned memory and asynchronously on CUDA."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def preprocess_batch(images: Sequence[np.ndarray], device: Union[str, torch.device] = "cpu",
                     input_size: int = INPUT_SIZE) -> tuple[torch.Tensor, list[Letterbox]]:
    """BGR uint8 images of any sizes -> (B, 3, input_size, input_size) float32 in [-1, 1] on
    ``device``, and the letterbox of each image.

    Pad and resize run on the device: torch's bicubic (a = -0.75, align_corners=False, border
    clamped) is OpenCV's INTER_CUBIC kernel; the result is rounded and clamped to uint8 levels like
    OpenCV, then scaled as x / 255 * 2 - 1 (no mean/std), as the official backbone does.
    """
    device = torch.device(device)
    letterboxes = []
    for img in images:
        _check_image(img)
        letterboxes.append(letterbox(img.shape[0], img.shape[1], input_size))
    out = torch.empty((len(images), 3, input_size, input_size), dtype=torch.float32, device=device)
    # Images of one size share one upload and one resize.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape[:2], []).append(i)
    for idx in groups.values():
        lb = letterboxes[idx[0]]
        batch = images[idx[0]][None] if len(idx) == 1 else np.stack([images[i] for i in idx])
        x = upload(batch, device).permute(0, 3, 1, 2).flip(1).float()   # (b, 3, H, W) RGB
        x = F.pad(x, (lb.pad_left, lb.pad_right, lb.pad_top, lb.pad_bottom), value=float(PAD_VALUE))
        x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", align_corners=False)
        x = x.round_().clamp_(0.0, 255.0)
        x = x / 255.0 * 2.0 - 1.0
        if len(idx) == len(images):
            out = x.contiguous()
        else:
            for k, i in enumerate(idx):  # plain slices: no index tensor to upload
                out[i] = x[k]
    return out, letterboxes


def letterbox_tensor(letterboxes: Sequence[Letterbox], device: Union[str, torch.device] = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3) tensor of [S, pad_left, pad_top] per row, for the batched camera functions."""
    arr = np.array([lb.params for lb in letterboxes], dtype=np.float64).reshape(-1, 3)
    return upload(arr, torch.device(device)).to(dtype)
