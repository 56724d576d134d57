"""Input preprocessing of ACR (official acr/utils.py, img_preprocess): BGR -> RGB, white letterbox to
a square, bicubic to 512.

``preprocess_exact`` reproduces the official pixels with OpenCV; ``preprocess_batch`` does the same
on the inference device (within 1 intensity level of OpenCV's fixed-point bicubic) and normalises.

The padded square grows with the image's longest side, not its area (625 x 40000: 4.5 GiB).
Where it would exceed both 4096 x 4096 pixels and 4 times the image (aspect beyond 1:4, every
camera and photo format is within), the input is computed from only the pixels the bicubic kernel
reads (``_resize_from_taps``: at most 2048 x 2048 of them), within 1 level of OpenCV's result.
Images more elongated than 1:MAX_ASPECT are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from acr_ros.acr.hands import ACR_INPUT_SIZE

INPUT_SIZE = ACR_INPUT_SIZE
PAD_VALUE = 255  # the image the network sees is padded with white
# ACR detects hands on a 64 x 64 grid over its input (a cell is 8 of the 512 pixels): beyond 1:64
# the image's short side covers less than one cell, where no hand can be found.
MAX_ASPECT = 64
SQUARE_MAX_PIXELS = 4096 * 4096  # the official padded square (48 MiB) is built up to this size...
SQUARE_MAX_GROWTH = 4            # ...or up to this many times the image's own pixels


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
    height, width = img.shape[:2]
    if min(height, width) > 0 and max(height, width) > MAX_ASPECT * min(height, width):
        raise ValueError(f"image {height}x{width} is more elongated than 1:{MAX_ASPECT}: its short side would "
                         "cover less than one cell of ACR's 64x64 detection grid")


def _square_is_small(lb: Letterbox) -> bool:
    return lb.size * lb.size <= max(SQUARE_MAX_PIXELS, SQUARE_MAX_GROWTH * lb.height * lb.width)


def _cubic_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_CUBIC from src to dst pixels along one axis: for each output pixel the 4
    source indices (border replicated) and weights in 1/2048 (cv::resize's fixed point): centres
    aligned, a = -0.75, the coefficients computed in float32 as OpenCV does."""
    f = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)  # OpenCV's scale: 1 / (dst / src)
    start = np.floor(f)
    t = f - start
    a, one = np.float32(-0.75), np.float32(1.0)
    t1, u = t + one, one - t
    c0 = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + one
    c2 = ((a + 2) * u - (a + 3)) * u * u + one
    c3 = one - c0 - c1 - c2
    weights = np.rint(np.stack([c0, c1, c2, c3], 1) * np.float32(2048)).astype(np.int32)
    index = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, 3), 0, src - 1)
    return index, weights


def _resize_from_taps(bgr: np.ndarray, lb: Letterbox) -> np.ndarray:
    """The RGB input without building the padded square: each output pixel is the weighted sum of
    the 4 x 4 square pixels OpenCV's bicubic reads, gathered from the image or white, in cv::resize's
    fixed-point arithmetic (weights x 2048 per axis, rounded once at the end). OpenCV's own kernels
    (SIMD, IPP) round differently in places: within 1 level of cv2.resize (test_preprocess)."""
    size = lb.input_size
    rows, row_weights = _cubic_taps(lb.size, size)
    cols, col_weights = _cubic_taps(lb.size, size)
    rows, cols = rows.reshape(-1) - lb.pad_top, cols.reshape(-1) - lb.pad_left  # in the image
    row_in, col_in = (rows >= 0) & (rows < lb.height), (cols >= 0) & (cols < lb.width)
    taps = np.full((rows.size, cols.size, 3), PAD_VALUE, np.uint8)
    taps[np.ix_(row_in, col_in)] = bgr[np.ix_(rows[row_in], cols[col_in])]
    # Vertical then horizontal, 4 taps each (exact integer sums: the order does not matter);
    # int32 holds 255 x (2048 x 1.3)^2.
    taps = taps.reshape(size, 4, cols.size, 3)
    acc = sum(taps[:, k].astype(np.int32) * row_weights[:, k, None, None] for k in range(4))
    acc = acc.reshape(size, size, 4, 3)
    acc = sum(acc[:, :, k] * col_weights[None, :, k, None] for k in range(4))
    rgb = np.clip((acc + (1 << 21)) >> 22, 0, 255).astype(np.uint8)[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def preprocess_exact(bgr: np.ndarray, input_size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """The official network input: (input_size, input_size, 3) uint8 RGB, and its letterbox
    (within 1 level of it where the padded square would be large, see the module's documentation)."""
    _check_image(bgr)
    lb = letterbox(bgr.shape[0], bgr.shape[1], input_size)
    if not _square_is_small(lb):
        return _resize_from_taps(bgr, lb), lb
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

    Pad and resize run on the device (on the CPU, as preprocess_exact does, where the padded square
    would be large): torch's bicubic (a = -0.75, align_corners=False, border clamped) is OpenCV's
    INTER_CUBIC kernel; the result is rounded and clamped to uint8 levels like OpenCV, then scaled
    as x / 255 * 2 - 1 (no mean/std), as the official backbone does.
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
        if _square_is_small(lb):
            batch = images[idx[0]][None] if len(idx) == 1 else np.stack([images[i] for i in idx])
            x = pixels_to_input(upload(batch, device), input_size)
        else:  # a float32 padded square would take 12 bytes per pixel of it: the bounded path, uploaded
            rgb = np.stack([_resize_from_taps(images[i], lb) for i in idx])
            x = upload(rgb, device).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
        if len(idx) == len(images):
            out = x.contiguous()
        else:
            for k, i in enumerate(idx):  # plain slices: no index tensor to upload
                out[i] = x[k]
    return out, letterboxes


def fits_on_device(height: int, width: int, input_size: int = INPUT_SIZE) -> bool:
    """Whether images of this size are padded and resized on the device by :func:`pixels_to_input`
    (else on the CPU: the padded square would be large)."""
    return _square_is_small(letterbox(height, width, input_size))


def stack_pixels(images: Sequence[np.ndarray], device: Union[str, torch.device],
                 input_size: int = INPUT_SIZE) -> Optional[tuple[torch.Tensor, list[Letterbox]]]:
    """BGR uint8 images of one size whose padded square is small, uploaded as one (B, H, W, 3)
    tensor, and their letterboxes: the input of :func:`pixels_to_input`. None for images of several
    sizes or a large square (:func:`preprocess_batch` handles those). Bad images raise ValueError."""
    for img in images:
        _check_image(img)
    height, width = images[0].shape[:2]
    if any(img.shape[:2] != (height, width) for img in images) or not fits_on_device(height, width, input_size):
        return None
    batch = images[0][None] if len(images) == 1 else np.stack(images)
    return upload(batch, torch.device(device)), [letterbox(height, width, input_size)] * len(images)


def pixels_to_input(pixels: torch.Tensor, input_size: int = INPUT_SIZE) -> torch.Tensor:
    """BGR uint8 images of one size (B, H, W, 3) on a device -> (B, 3, input_size, input_size)
    float32 in [-1, 1] there: :func:`preprocess_batch`'s device path, a function of tensors only (no
    host synchronisation; the letterbox follows from the shape), so a CUDA graph can hold it."""
    lb = letterbox(pixels.shape[1], pixels.shape[2], input_size)
    x = pixels.permute(0, 3, 1, 2).flip(1).float()                       # (b, 3, H, W) RGB
    x = F.pad(x, (lb.pad_left, lb.pad_right, lb.pad_top, lb.pad_bottom), value=float(PAD_VALUE))
    x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", align_corners=False)
    return x.round_().clamp_(0.0, 255.0) / 255.0 * 2.0 - 1.0


def letterbox_tensor(letterboxes: Sequence[Letterbox], device: Union[str, torch.device] = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3) tensor of [S, pad_left, pad_top] per row, for the batched camera functions."""
    arr = np.array([lb.params for lb in letterboxes], dtype=np.float64).reshape(-1, 3)
    return upload(arr, torch.device(device)).to(dtype)
