"""The hand backends and choosing one: ACR when its files are there, the embedded MediaPipe one otherwise.

The protocol every backend follows is in ``base`` (re-exported here); ``acr`` and ``mediapipe``
hold the two backends, imported only when chosen (ACR needs torch, MediaPipe does not).

    backend, reason = create_backend("auto", checkpoint=..., mano_dir=...)

"auto": ACR when the checkpoint and both MANO files are configured and exist, the embedded
MediaPipe backend otherwise; `reason` says which and why (the node logs it).
"acr": ACR or a clear error naming the missing file, where it was looked for and where to get it.
"mediapipe": the embedded backend (no download, no licence-gated files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from acr_ros.acr.model_files import CHECKPOINT_HELP, MANO_FILES, MANO_HELP
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import EngineOptions
from acr_ros.backends.base import (THRESHOLDS, BackendOutOfMemoryError, ConfidenceThreshold, HandBackend,
                                   faces_by_side)

BACKENDS = ("auto", "acr", "mediapipe")
__all__ = ["BACKENDS", "THRESHOLDS", "BackendOutOfMemoryError", "ConfidenceThreshold", "HandBackend",
           "acr_files_problem", "create_backend", "faces_by_side"]


def acr_files_problem(checkpoint: str, mano_dir: str) -> Optional[tuple[str, str]]:
    """None when the ACR files are configured and exist, else (kind, message).

    kind is "checkpoint" or "mano"; message names the file, where it was looked for and where to
    get it.
    """
    if not str(checkpoint or "").strip():
        return "checkpoint", f"ACR checkpoint not configured (parameter checkpoint): {CHECKPOINT_HELP}"
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        return "checkpoint", f"ACR checkpoint not found at {path.resolve()}: {CHECKPOINT_HELP}"
    if not str(mano_dir or "").strip():
        return "mano", f"MANO folder not configured (parameter mano_dir): {MANO_HELP}"
    folder = Path(mano_dir).expanduser()
    if not folder.is_dir():
        return "mano", f"MANO folder {folder.resolve()} does not exist: {MANO_HELP}"
    for name in MANO_FILES.values():
        if not (folder / name).is_file():
            return "mano", f"{name} not found in {folder.resolve()}: {MANO_HELP}"
    return None


def _short(message: str) -> str:
    return message.split(":", 1)[0]


def create_backend(backend: str = "auto", checkpoint: str = "", mano_dir: str = "",
                   options: EngineOptions = EngineOptions(), detection_threshold: Optional[float] = None,
                   smoothing: Optional[SmoothingConfig] = None, tune_process: bool = False):
    """(backend, reason) for backend "auto", "acr" or "mediapipe".

    options: how the ACR engine runs (device, precision, ...; unused by MediaPipe).
    detection_threshold: None keeps the chosen backend's default (its ``threshold``), else it is
    set on the backend, in that backend's meaning. smoothing: a SmoothingConfig or None.
    tune_process: let the ACR engine apply its process-wide settings (entry points only).
    Raises ValueError for an unknown backend; with "acr", CheckpointError / ManoFileError
    (ValueError subclasses) for missing files; ImportError when mediapipe is needed but absent.
    """
    choice = str(backend or "auto").strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")

    if choice in ("auto", "acr"):
        problem = acr_files_problem(checkpoint, mano_dir)
        if problem is None:
            from acr_ros.backends.acr import ACRBackend

            chosen = ACRBackend(str(Path(checkpoint).expanduser()), str(Path(mano_dir).expanduser()), options,
                                smoothing, tune_process)
            reason = ("backend acr requested" if choice == "acr"
                      else "ACR checkpoint and MANO files found")
            reason = (f"{reason}: {Path(checkpoint).name}, MANO from {Path(mano_dir).expanduser()}; network "
                      f"{chosen.precision} ({chosen.precision_reason}) on {chosen.device}")
        else:
            kind, message = problem
            if choice == "acr":
                from acr_ros.acr.checkpoint import CheckpointError
                from acr_ros.acr.mano import ManoFileError

                raise (CheckpointError if kind == "checkpoint" else ManoFileError)(message)
            chosen, reason = None, f"{_short(message)}; using the embedded MediaPipe backend"
    else:
        chosen, reason = None, "backend mediapipe requested"
    if chosen is None:
        from acr_ros.backends.mediapipe import MediaPipeBackend

        chosen = MediaPipeBackend(smoothing=smoothing)
    if detection_threshold is not None:
        chosen.detection_threshold = float(detection_threshold)
    return chosen, reason
