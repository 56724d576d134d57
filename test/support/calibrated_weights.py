"""Random ACR weights whose activations behave like a trained network's, for judging half precision.

Plain random weights (support.random_weights) amplify any rounding: fp16's rounding of the input alone
moves their keypoints by pixels. A trained network's BatchNorm statistics come from data, so that
every BatchNorm output is about zero-mean, unit-variance on real images, and its output layers give
values of the size of what they predict. This module builds such a network from random weights,
seeded and in seconds (never stored):

* convolutions He-initialised, BatchNorm gamma around 1 (the last one of each residual branch 0.3,
  as trained residual networks end their branches small), beta small;
* every BatchNorm's running statistics measured on real photos (the bundled samples, randomly
  cropped, flipped and brightened): one train-mode pass of the official flow over the batch, in
  which each BatchNorm normalises with the statistics of its own input, layer after layer, and
  keeps them (momentum None);
* the output layers rescaled LSUV-like on the same batch (per output channel, the mean and
  standard deviation over all positions set): head outputs unit-variance, cross-hand priors small,
  segmentation logits with a spread of 2 (a moderately peaked attention), and the final 109
  parameters the size of real ones: weak-perspective scale 2.5 +- 0.3, translation +- 0.3, 6D
  rotations around the identity (the global one +- 0.5, the fingers +- 0.15), betas +- 0.5;
* the center maps peak at fixed cells (support.random_weights.place_center_peaks), so which hands
  are detected does not depend on the weights.

NOT a hand model: the poses it reports are random, but their sensitivity to rounding is that of a
well-conditioned network.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from acr_ros.acr.network import NUM_PARAMS, ACRNet
from acr_ros.acr.preprocess import preprocess_exact
from support.random_weights import (DETECT_CHOICES, he_initialised_network, official_checkpoint_state,
                                   place_center_peaks)
from support.reference import dense_maps

SAMPLES = Path(__file__).resolve().parents[2] / "acr_ros" / "data" / "samples"
PHOTOS = ("magic.jpg", "magic_flip.jpg", "portrait.jpg", "two_hands.jpg")

# Per channel (mean, std) of the final 109 parameters over the calibration positions.
_IDENTITY_6D = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)  # column 1 (a0, a2, a4), column 2 (a1, a3, a5)
PARAM_TARGETS = ([(2.5, 0.3), (0.0, 0.3), (0.0, 0.3)]
                 + [(m, 0.5) for m in _IDENTITY_6D]
                 + [(m, 0.15) for m in _IDENTITY_6D] * 15
                 + [(0.0, 0.5)] * 10)
HEAD_STD, PRIOR_STD, SEGMENT_STD = 1.0, 0.05, 2.0
assert len(PARAM_TARGETS) == NUM_PARAMS


def photos() -> list[np.ndarray]:
    """The bundled photos (BGR), and the frames of the bundled clip."""
    images = [cv2.imread(str(SAMPLES / name)) for name in PHOTOS]
    clip = cv2.VideoCapture(str(SAMPLES / "magic_clip.mp4"))
    while True:
        ok, frame = clip.read()
        if not ok:
            break
        images.append(frame)
    clip.release()
    return [image for image in images if image is not None]


def augmented_photos(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random crops (60-100 % of each side) of the bundled photos and clip frames,
    flipped half the time, with a random gain (0.8-1.2) and offset (+-20 levels)."""
    rng = np.random.default_rng(seed)
    sources = photos()
    out = []
    for k in range(count):
        image = sources[k % len(PHOTOS)] if k < len(PHOTOS) else sources[rng.integers(len(sources))]
        h, w = image.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = image[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = crop.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        out.append(np.ascontiguousarray(np.clip(crop, 0, 255).astype(np.uint8)))
    return out


def calibration_batch(count: int = 4, seed: int = 0) -> torch.Tensor:
    """(count, 3, 512, 512): augmented photos as the network sees them (official preprocessing)."""
    rgbs = [preprocess_exact(image)[0] for image in augmented_photos(count, seed)]
    return torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0


@contextlib.contextmanager
def _fixed_trunk(net: ACRNet, features: torch.Tensor):
    """Inside the block, net's backbone returns ``features`` (its part-segmentation net still runs):
    the heads are recalibrated without recomputing the trunk, which they do not change."""
    net.backbone.forward = lambda x: features
    try:
        yield
    finally:
        del net.backbone.forward


def _outputs(net: ACRNet, x: torch.Tensor, modules: list[nn.Module]) -> list[torch.Tensor]:
    """What ``modules`` output in one eval-mode pass of the official flow on ``x``."""
    seen: dict = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(m, o.detach().clone())) for m in modules]
    try:
        dense_maps(net, x)
    finally:
        for h in hooks:
            h.remove()
    return [seen[m] for m in modules]


@torch.no_grad()
def _rescale(layer: nn.Module, output: torch.Tensor, targets) -> None:
    """LSUV for one linear layer (a conv with bias): per output channel, weight and bias changed so
    that ``output`` (what it gave, channels on axis 1) would have the target (mean, std)."""
    per_channel = output.transpose(0, 1).reshape(output.shape[1], -1).double()
    mean, std = per_channel.mean(1), per_channel.std(1).clamp_min(1e-12)
    target = torch.as_tensor(targets, dtype=torch.float64).reshape(-1, 2)
    gain = target[:, 1] / std
    layer.weight.mul_(gain.view(-1, *([1] * (layer.weight.dim() - 1))).to(layer.weight.dtype))
    layer.bias.copy_((target[:, 0] - gain * (mean - layer.bias.double())).to(layer.bias.dtype))


def _data_filters(conv: nn.Conv2d, x: torch.Tensor, g: torch.Generator) -> None:
    """In place: ``conv``'s filters become random combinations of (centred) patches of its input
    ``x``, so that they respond to what the data varies in, not to noise (a random filter on smooth
    photos mostly sees their small high-frequency part, which BatchNorm then scales up)."""
    x = x.float()
    count = 4 * conv.out_channels
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = conv.kernel_size, conv.stride, conv.dilation, conv.padding
    out_h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    image = torch.randint(x.shape[0], (count, 1, 1), generator=g)
    rows = torch.randint(out_h, (count, 1, 1), generator=g) * sh + torch.arange(kh).view(1, kh, 1) * dh
    cols = torch.randint(out_w, (count, 1, 1), generator=g) * sw + torch.arange(kw).view(1, 1, kw) * dw
    padded = F.pad(x, (pw, pw, ph, ph))
    picks = padded.permute(0, 2, 3, 1)[image, rows, cols]                  # (count, kh, kw, C)
    picks = (picks - x.mean((0, 2, 3))).permute(0, 3, 1, 2).reshape(count, -1)
    weight = torch.randn(conv.out_channels, picks.shape[0], generator=g) @ picks
    weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12) * (2.0 / picks.shape[1]) ** 0.5
    conv.weight.copy_(weight.reshape(conv.weight.shape))


@lru_cache(maxsize=2)
def _calibrated_state(seed: int, images: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    net = he_initialised_network(g, gammas=(0.8, 0.4), vector_std=0.05)
    with torch.no_grad():
        # One thread: the same weights to the bit in every process.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            x = calibration_batch(images, seed)
            trunk = {}
            hooks = [net.backbone.register_forward_hook(lambda m, i, o: trunk.setdefault("features", o))]
            # Each convolution takes its filters from its input as it is first called, and the
            # BatchNorm after it normalises with the statistics of what it then outputs.
            hooks += [m.register_forward_pre_hook(lambda m, i: _data_filters(m, i[0], g), with_kwargs=False)
                      for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
            net.train()
            dense_maps(net, x)
            net.eval()
            for h in hooks:
                h.remove()
            with _fixed_trunk(net, trunk["features"]):
                # (the layer, what is observed of it, the std its outputs get): the part
                # segmentation's output is its last conv's (called functionally, not as a module)
                segm = net.backbone.hand_segm
                rescaled = [(side[i][2], side[i][2], HEAD_STD if i != 4 else PRIOR_STD)
                            for side in (net.l_final_layers, net.r_final_layers) for i in (1, 3, 4)]
                rescaled.append((segm.segm_head.segm_net.double_conv[3], segm, SEGMENT_STD))
                outputs = _outputs(net, x, [observed for _, observed, _ in rescaled])
                for (layer, _, std), out in zip(rescaled, outputs):
                    _rescale(layer, out, [(0.0, std)] * out.shape[1])
                fusion = [net.contact_layers[4], net.contact_layers[5]]
                for layer, out in zip(fusion, _outputs(net, x, fusion)):
                    _rescale(layer, out, PARAM_TARGETS)
        finally:
            torch.set_num_threads(threads)
    return {k: v.clone() for k, v in net.state_dict().items()}


@torch.no_grad()
def calibrated_acr_network(seed: int = 0, detect: str = "both", cells: Optional[dict] = None,
                           images: int = 4) -> ACRNet:
    """An ACRNet as the module docstring describes, calibrated on ``images`` augmented photos, whose
    center maps peak at fixed cells (``detect``, ``cells``: as support.random_weights.random_acr_network,
    at the official 512 input). Cached per seed and number of images in the process."""
    if detect not in DETECT_CHOICES:
        raise ValueError(f"detect must be one of {DETECT_CHOICES}, got {detect!r}")
    net = ACRNet.from_state_dict({k: v.clone() for k, v in _calibrated_state(int(seed), int(images)).items()})
    return place_center_peaks(net, detect, cells)


def calibrated_checkpoint_state(seed: int = 0, detect: str = "both", cells: Optional[dict] = None) -> dict:
    """:func:`calibrated_acr_network` as the official checkpoint holds it (``module.`` keys)."""
    return official_checkpoint_state(calibrated_acr_network(seed, detect, cells), seed)
