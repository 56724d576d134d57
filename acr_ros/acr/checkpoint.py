"""Loading (and, for tests, faking) the official ACR checkpoint ``wild.pkl``.

The official file is a ``torch.save`` of the model's state dict saved from ``nn.DataParallel``
(every key starts with ``module.``), possibly wrapped in ``{'model_state_dict': ...}`` or
``{'state_dict': ...}``. It is read with ``torch.load(weights_only=True)``, which never runs code
from the file. Unlike the official non-strict loader, a checkpoint with missing or mis-shaped
keys is refused, naming them. ``segmentation_layers.*`` (built but unused by the official model)
is accepted and ignored.
"""
from __future__ import annotations

import hashlib
import pickle
import re
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import torch

from acr_ros.model_files import CHECKPOINT_HELP

PREFIX = "module."
IGNORED_PREFIXES = ("segmentation_layers.",)
MAX_LISTED = 10

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, unsafe, or not the ACR layout."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file is not where it was looked for."""


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


@lru_cache(maxsize=1)
def expected_layout() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """key -> (shape, dtype) of the state dict ACRNet needs (no prefix, no segmentation_layers)."""
    from acr_ros.acr.network import ACRNet

    with torch.device("meta"):
        net = ACRNet()
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def _refusal_reason(message: str) -> str:
    m = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+)",
                  message, re.IGNORECASE)
    return m.group(1) if m else message.strip().splitlines()[0][:200]


def _is_torch_container(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # a pickle (legacy torch.save)


def _read(path: PathLike):
    path = Path(path).expanduser()
    if not path.is_file():
        where = path.resolve()
        raise CheckpointNotFoundError(f"ACR checkpoint not found: looked for {where}"
                                      + (" (a folder, not a file)" if path.is_dir() else "") + f". {CHECKPOINT_HELP}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _is_torch_container(path):
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (unreadable: {_refusal_reason(str(e))}). "
                                  f"{CHECKPOINT_HELP}") from None
        raise CheckpointError(
            f"{path} is not a plain state dict: it holds pickled objects that safe loading refuses "
            f"({_refusal_reason(str(e))}). Unpickling such objects can run code from the file, so it may be "
            f"unsafe and is not done; an ACR checkpoint needs only tensors. {CHECKPOINT_HELP}") from None
    except Exception as e:  # not a zip/pickle, truncated, empty, ...
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {detail}). "
                              f"{CHECKPOINT_HELP}") from None


def _unwrap(obj, path: PathLike) -> dict:
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}. {CHECKPOINT_HELP}")
    return obj


def validate_state_dict(state: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Strip ``module.``, drop ``segmentation_layers.*`` and unknown extras, and check that every
    key ACRNet needs is there with its shape. Raises CheckpointError naming the problems."""
    layout = expected_layout()
    clean: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            continue
        k = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if k.startswith(IGNORED_PREFIXES) or k not in layout:
            continue
        clean[k] = value
    missing = [k for k in layout if k not in clean]
    wrong = [f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__} "
             f"(expected {layout[k][0]})"
             for k, v in clean.items()
             if not isinstance(v, torch.Tensor) or tuple(v.shape) != layout[k][0]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if wrong:
        problems.append(f"{len(wrong)} mis-shaped key(s): {_listing(wrong)}")
    if problems:
        raise CheckpointError(f"{source} is not an ACR checkpoint (HRNet-W32, official layout): "
                              + "; ".join(problems) + f". {CHECKPOINT_HELP}")
    nonfinite = [k for k, v in clean.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{source}: non-finite values in {len(nonfinite)} tensor(s): {_listing(nonfinite)}")
    return {k: v.to(layout[k][1]) for k, v in clean.items()}


def load_acr_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The checked state dict of an official ACR checkpoint (keys without ``module.``, no
    ``segmentation_layers``), on the CPU. Raises CheckpointError (a ValueError) with a clear
    message for a missing file, a non-torch file, an unsafe pickle or a wrong layout."""
    obj = _read(path)
    return validate_state_dict(_unwrap(obj, path), str(path))


def load_acr_network(path: PathLike, device: Union[str, torch.device] = "cpu"):
    """An eval-mode ACRNet with the checkpoint's weights."""
    from acr_ros.acr.network import ACRNet

    state = load_acr_state_dict(path)
    net = ACRNet()
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()


def checkpoint_id(path: PathLike) -> str:
    """'<file name>:<first 12 hex digits of its sha256>', e.g. 'wild.pkl:3f2a9c0d1b7e'."""
    path = Path(path).expanduser()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{path.name}:{h.hexdigest()[:12]}"


# ------------------------------------------------------------------------------------------------
# Random checkpoints for tests and benchmarks


DEFAULT_CELLS = {"left": (20, 28), "right": (44, 36)}  # (x, y) 64-grid cells, 25.3 cells apart
DETECT_CHOICES = ("none", "left", "right", "both")
_PEAK, _MISS, _SLOPE = 1.0, -1.0, 10.0


def _calibration_image(seed: int) -> torch.Tensor:
    """A smooth pseudo-image in [-1, 1] (1, 3, 512, 512) to set realistic BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed + 1)
    low = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    img = torch.nn.functional.interpolate(low, size=(512, 512), mode="bicubic", align_corners=False)
    img = img + 0.1 * torch.randn(1, 3, 512, 512, generator=g)
    return img.clamp(-1, 1)


@lru_cache(maxsize=4)
def _calibrated_random_state(seed: int) -> dict:
    """Random ACRNet weights (He-scaled) with BatchNorm statistics measured on a synthetic image,
    so activations stay O(1)-O(10) through the network. Cached per seed (one forward pass)."""
    from acr_ros.acr.hrnet import BasicBlock, Bottleneck
    from acr_ros.acr.network import ACRNet

    g = torch.Generator().manual_seed(seed)
    net = ACRNet()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel() if p.dim() != 6 else p.shape[2]
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(".weight"):  # BatchNorm gamma
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for lc in (net.contact_layers[2], net.contact_layers[3]):
            lc.weight.mul_(0.25)
        # Small residual branches: slower activation growth, so fp32 rounding is not amplified
        # (the test tolerances compare two fp32 computations of this model).
        for m in net.modules():
            if isinstance(m, BasicBlock):
                m.bn2.weight.mul_(0.3)
            elif isinstance(m, Bottleneck):
                m.bn3.weight.mul_(0.3)
        # One train-mode pass with cumulative averaging sets the running statistics.
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        net.forward_dense(_calibration_image(seed))
        net.eval()
    return {k: v.clone() for k, v in net.state_dict().items()}


@torch.no_grad()
def random_acr_network(seed: int = 0, detect: str = "both", cells: Optional[dict] = None):
    """An ACRNet with random weights in a numerically tame regime (BatchNorm statistics set from a
    synthetic image) whose center maps peak at fixed cells, whatever the image:

    * detect 'left' / 'right' / 'both' / 'none': which center maps reach 1.0 at their peak (the
      others peak at -1.0, below the 0.35 threshold);
    * cells {'left': (x, y), 'right': (x, y)}: the 64-grid peak cells (default left (20, 28),
      right (44, 36): 25.3 cells apart, so the cross-hand prior applies; put them more than 32
      cells apart to switch it off). The map falls by 10 x (L1 distance in normalised
      coordinates) from the peak, i.e. ~0.31 per cell, plus small random terms.

    NOT a hand model: the hands it reports are random poses.
    """
    from acr_ros.acr.network import ACRNet, coord_maps

    if detect not in DETECT_CHOICES:
        raise ValueError(f"detect must be one of {DETECT_CHOICES}, got {detect!r}")
    where = dict(DEFAULT_CELLS, **(cells or {}))
    net = ACRNet()
    net.load_state_dict(_calibrated_random_state(int(seed)))
    net.eval()
    # Fusion: keep the weak-perspective scale positive and moderate (s ~ 2) and the rest O(1).
    for fuse in (net.contact_layers[4], net.contact_layers[5]):
        fuse.weight.mul_(0.3)
        fuse.weight[0].mul_(0.05)
        fuse.bias[0] = 2.0
        fuse.bias[1:3].mul_(0.5)
    # Center heads: a peak at the requested cell from the coordinate channels.
    grid = coord_maps(128)[0]
    for side, heads in (("left", net.l_final_layers), ("right", net.r_final_layers)):
        fire = detect in (side, "both")
        x, y = where[side]
        if not (0 <= x < 64 and 0 <= y < 64):
            raise ValueError(f"cell of {side} must be inside the 64x64 grid, got {(x, y)}")
        x0, y0 = grid[0, 0, 2 * x].item(), grid[1, 2 * y, 0].item()
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


def write_random_checkpoint(path: PathLike, seed: int = 0, detect: str = "both",
                            cells: Optional[dict] = None) -> Path:
    """Write random ACR weights in the official checkpoint layout (``module.`` keys, including the
    unused ``segmentation_layers.*``) to ``path``; see :func:`random_acr_network` for ``detect``
    and ``cells``. Returns the path. NOT a hand model."""
    net = random_acr_network(seed, detect, cells)
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
