"""Loading the official ACR checkpoint ``wild.pkl``.

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
from typing import Union

import torch

from acr_ros.acr.model_files import CHECKPOINT_HELP
from acr_ros.acr.network import ACRNet

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
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_damage(e)}): download it again. "
                              f"{CHECKPOINT_HELP}") from None


def _damage(error: Exception) -> str:
    """What a failed read says about the file. Only torch's own RuntimeErrors describe it (e.g. "failed
    finding central directory"); the unpickler's IndexError, EOFError, ... on a cut pickle are its internals."""
    first = str(error).strip().split(". ")[0].splitlines()[0][:200] if str(error).strip() else ""
    return f"corrupt: {first}" if isinstance(error, RuntimeError) and first else "truncated or corrupt"


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
    return ACRNet.from_state_dict(load_acr_state_dict(path)).to(device)


def checkpoint_id(path: PathLike) -> str:
    """'<file name>:<first 12 hex digits of its sha256>', e.g. 'wild.pkl:3f2a9c0d1b7e'."""
    path = Path(path).expanduser()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{path.name}:{h.hexdigest()[:12]}"
