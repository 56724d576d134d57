"""Random ACR weights in the official layout, for tests and benchmarks. NOT a hand model.

The ACR checkpoint cannot be downloaded here: these networks exercise every stage of the engine
with realistic magnitudes and put their center-map peaks where a test asks for them.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import torch

from acr_ros.acr.checkpoint import PREFIX
from acr_ros.acr.hrnet import BasicBlock, Bottleneck
from acr_ros.acr.network import ACRNet, coord_maps
from support.reference import dense_maps

PathLike = Union[str, Path]

DEFAULT_CELLS = {"left": (20, 28), "right": (44, 36)}  # (x, y) cells of the 64 grid, 25.3 cells apart
DETECT_CHOICES = ("none", "left", "right", "both")
_PEAK, _MISS, _SLOPE = 1.0, -1.0, 10.0


def _calibration_image(seed: int) -> torch.Tensor:
    """A smooth pseudo-image in [-1, 1] (1, 3, 512, 512) to set realistic BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed + 1)
    low = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    img = torch.nn.functional.interpolate(low, size=(512, 512), mode="bicubic", align_corners=False)
    img = img + 0.1 * torch.randn(1, 3, 512, 512, generator=g)
    return img.clamp(-1, 1)


@torch.no_grad()
def he_initialised_network(g: torch.Generator, gammas: tuple[float, float], vector_std: float) -> ACRNet:
    """An ACRNet drawn from g: He-scaled filters, BatchNorm gammas uniform in [low, low + span) (gammas),
    the other vectors N(0, vector_std); small residual branches (their last BatchNorm's gamma x 0.3)
    for slower activation growth, so that fp32 rounding is not amplified; running statistics reset,
    for one train-mode pass to set (momentum None: cumulative)."""
    net = ACRNet()
    low, span = gammas
    for name, p in net.named_parameters():
        if p.dim() > 1:
            fan_in = p[0].numel() if p.dim() != 6 else p.shape[2]
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        elif name.endswith(".weight"):  # BatchNorm gamma
            p.copy_(low + span * torch.rand(p.shape, generator=g))
        else:
            p.copy_(vector_std * torch.randn(p.shape, generator=g))
    for m in net.modules():
        if isinstance(m, BasicBlock):
            m.bn2.weight.mul_(0.3)
        elif isinstance(m, Bottleneck):
            m.bn3.weight.mul_(0.3)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    return net


@lru_cache(maxsize=4)
def _calibrated_random_state(seed: int) -> dict:
    """Random ACRNet weights (He-scaled) with BatchNorm statistics measured on a synthetic image,
    so activations stay O(1)-O(10) through the network. Cached per seed (one forward pass)."""
    net = he_initialised_network(torch.Generator().manual_seed(seed), gammas=(0.5, 1.0), vector_std=0.1)
    with torch.no_grad():
        for lc in (net.contact_layers[2], net.contact_layers[3]):
            lc.weight.mul_(0.25)
        # One train-mode pass with cumulative averaging sets the running statistics. One thread:
        # the same weights to the bit in every process (the ONNX export cache shares their export).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            net.train()
            dense_maps(net, _calibration_image(seed))
            net.eval()
        finally:
            torch.set_num_threads(threads)
    return {k: v.clone() for k, v in net.state_dict().items()}


@torch.no_grad()
def random_acr_network(seed: int = 0, detect: str = "both", cells: Optional[dict] = None, grid: int = 64):
    """An ACRNet with random weights in a numerically tame regime (BatchNorm statistics set from a
    synthetic image) whose center maps peak at fixed cells, whatever the image:

    * detect 'left' / 'right' / 'both' / 'none': which center maps reach 1.0 at their peak (the
      others peak at -1.0, below the 0.35 threshold);
    * grid: the size of the center maps the peaks are placed for, input size / 8 (64 for the
      official 512 input; a network input of another size puts them elsewhere);
    * cells {'left': (x, y), 'right': (x, y)}: the peak cells of that grid (default left (20, 28),
      right (44, 36) of the 64 grid, scaled to others: 25.3 cells apart at 64, so the cross-hand
      prior applies; put them more than 32 cells apart to switch it off). The map falls by
      10 x (L1 distance in normalised coordinates) from the peak, i.e. ~0.31 per cell at 64,
      plus small random terms.

    NOT a hand model: the hands it reports are random poses.
    """
    if detect not in DETECT_CHOICES:  # before the weights are built
        raise ValueError(f"detect must be one of {DETECT_CHOICES}, got {detect!r}")
    net = ACRNet.from_state_dict({k: v.clone() for k, v in _calibrated_random_state(int(seed)).items()})
    # Fusion: keep the weak-perspective scale positive and moderate (s ~ 2) and the rest O(1).
    for fuse in (net.contact_layers[4], net.contact_layers[5]):
        fuse.weight.mul_(0.3)
        fuse.weight[0].mul_(0.05)
        fuse.bias[0] = 2.0
        fuse.bias[1:3].mul_(0.5)
    return place_center_peaks(net, detect, cells, grid)


@torch.no_grad()
def place_center_peaks(net: ACRNet, detect: str = "both", cells: Optional[dict] = None, grid: int = 64) -> ACRNet:
    """In place: the center heads of ``net`` peak at fixed cells whatever the image (see
    :func:`random_acr_network` for ``detect``, ``cells`` and ``grid``); returns ``net``."""
    if detect not in DETECT_CHOICES:
        raise ValueError(f"detect must be one of {DETECT_CHOICES}, got {detect!r}")
    defaults = {side: (x * grid // 64, y * grid // 64) for side, (x, y) in DEFAULT_CELLS.items()}
    where = dict(defaults, **(cells or {}))
    # Center heads: a peak at the requested cell from the coordinate channels of the backbone grid
    # (twice the map's size; map cell x sits on backbone column 2x).
    coords = coord_maps(2 * grid)[0]
    for side, heads in (("left", net.l_final_layers), ("right", net.r_final_layers)):
        fire = detect in (side, "both")
        x, y = where[side]
        if not (0 <= x < grid and 0 <= y < grid):
            raise ValueError(f"cell of {side} must be inside the {grid}x{grid} grid, got {(x, y)}")
        x0, y0 = coords[0, 0, 2 * x].item(), coords[1, 2 * y, 0].item()
        tower = heads[2]
        conv0, bn0 = tower[0][0], tower[0][1]
        for c, (ch, sign, centre) in enumerate(((32, 1, x0), (32, -1, x0), (33, 1, y0), (33, -1, y0))):
            conv0.weight[c].zero_()
            conv0.weight[c, ch, 1, 1] = sign
            conv0.bias[c] = -sign * centre
            bn0.weight[c], bn0.bias[c], bn0.running_mean[c], bn0.running_var[c] = 1.0, 0.0, 0.0, 1.0 - bn0.eps
        for blk in (tower[1][0][0], tower[1][1][0]):  # pass channels 0-3 through the blocks unchanged
            blk.conv2.weight[:4].zero_()
            blk.bn2.bias[:4], blk.bn2.running_mean[:4] = 0.0, 0.0
        final = tower[2]
        final.weight.mul_(1e-3)
        final.weight[0, :4] = -_SLOPE
        final.bias[0] = _PEAK if fire else _MISS
    return net


def random_checkpoint_state(seed: int = 0, detect: str = "both", cells: Optional[dict] = None) -> dict:
    """Random ACR weights as the official checkpoint holds them (``module.`` keys, including the
    unused ``segmentation_layers.*``); see :func:`random_acr_network` for ``detect`` and ``cells``
    (of the 64 grid: the official input). NOT a hand model."""
    return official_checkpoint_state(random_acr_network(seed, detect, cells), seed)


def official_checkpoint_state(net: ACRNet, seed: int = 0) -> dict:
    """``net``'s tensors as the official checkpoint holds them: ``module.`` keys, plus the unused
    ``segmentation_layers.*`` (random, seeded)."""
    state = {PREFIX + k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 7)
    extra = {
        "segmentation_layers.1.0.weight": (256, 34, 3, 3), "segmentation_layers.1.0.bias": (256,),
        "segmentation_layers.1.1.weight": (256,), "segmentation_layers.1.1.bias": (256,),
        "segmentation_layers.1.1.running_mean": (256,), "segmentation_layers.1.1.running_var": (256,),
        "segmentation_layers.2.0.weight": (33, 256, 1, 1), "segmentation_layers.2.0.bias": (33,),
    }
    for k, shape in extra.items():
        t = torch.randn(shape, generator=g) * 0.05
        state[PREFIX + k] = t.abs() + 0.5 if k.endswith("running_var") else t
    state[PREFIX + "segmentation_layers.1.1.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    return state


def write_random_checkpoint(path: PathLike, seed: int = 0, detect: str = "both",
                            cells: Optional[dict] = None) -> Path:
    """:func:`random_checkpoint_state` saved to ``path`` as the official file is; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_checkpoint_state(seed, detect, cells), path)
    return path
