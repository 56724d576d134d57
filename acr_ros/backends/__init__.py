"""The hand backends and choosing one: ACR when its files are there, the embedded MediaPipe one otherwise.

The protocol every backend follows is in ``base`` (re-exported here); ``acr`` and ``mediapipe``
hold the two backends, imported only when chosen (ACR needs torch, MediaPipe does not).

    backend, reason = create_backend("auto", checkpoint=..., mano_dir=...)

"auto": ACR when the checkpoint or the MANO folder is configured (a wrong path is an error, as
with "acr"), the embedded MediaPipe backend when neither is; `reason` says which and why (the node
logs it).
"acr": ACR or a clear error naming the missing file, where it was looked for and where to get it.
"mediapipe": the embedded backend (no download, no licence-gated files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from acr_ros.acr.model_files import CHECKPOINT_HELP, MANO_FILES, MANO_HELP
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import EngineOptions
from acr_ros.backends.base import (THRESHOLDS, BackendOutOfMemoryError, ConfidenceThreshold, HandBackend,
                                   faces_by_side)

BACKENDS = ("auto", "acr", "mediapipe")
__all__ = ["BACKENDS", "THRESHOLDS", "BackendOutOfMemoryError", "ConfidenceThreshold", "HandBackend",
           "acr_files_problem", "create_backend", "faces_by_side"]


# How the ACR file settings are named to whoever reads the message: the node's parameters by
# default; the offline CLI passes its options.
PARAMETER_NAMES = {"checkpoint": "the parameter checkpoint", "mano_dir": "the parameter mano_dir"}


def acr_files_problem(checkpoint: str, mano_dir: str,
                      names: Mapping[str, str] = PARAMETER_NAMES) -> Optional[tuple[str, str]]:
    """None when the ACR files are configured and exist, else (kind, message).

    kind is "checkpoint" or "mano"; message names the file, where it was looked for, where to get
    it and which setting (``names``) to point at it.
    """
    set_checkpoint = f"set {names['checkpoint']} to its path"
    set_mano = f"set {names['mano_dir']} to the folder holding them"
    if not str(checkpoint or "").strip():
        return "checkpoint", (f"ACR checkpoint not configured ({names['checkpoint']}): {CHECKPOINT_HELP}; "
                              f"{set_checkpoint}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        return "checkpoint", f"ACR checkpoint not found at {path.resolve()}: {CHECKPOINT_HELP}; {set_checkpoint}"
    if not str(mano_dir or "").strip():
        return "mano", f"MANO folder not configured ({names['mano_dir']}): {MANO_HELP}; {set_mano}"
    folder = Path(mano_dir).expanduser()
    if not folder.is_dir():
        return "mano", f"MANO folder {folder.resolve()} does not exist: {MANO_HELP}; {set_mano}"
    for name in MANO_FILES.values():
        if not (folder / name).is_file():
            return "mano", f"{name} not found in {folder.resolve()}: {MANO_HELP}; {set_mano}"
    return None


def create_backend(backend: str = "auto", checkpoint: str = "", mano_dir: str = "",
                   options: EngineOptions = EngineOptions(), detection_threshold: Optional[float] = None,
                   smoothing: Optional[SmoothingConfig] = None, tune_process: bool = False,
                   names: Mapping[str, str] = PARAMETER_NAMES):
    """(backend, reason) for backend "auto", "acr" or "mediapipe".

    "auto" runs the embedded MediaPipe backend only when neither checkpoint nor mano_dir is set:
    a set but unusable path is a misconfiguration and raises like "acr", naming the file, where
    it was looked for, where to get it and the setting (``names``) to fix.

    options: how the ACR engine runs (device, precision, ...; unused by MediaPipe, whose reason says
    so when a device other than auto or cpu is asked for).
    detection_threshold: None keeps the chosen backend's default (its ``threshold``), else it is
    set on the backend, in that backend's meaning. smoothing: a SmoothingConfig or None.
    tune_process: let the ACR engine apply its process-wide settings (entry points only).
    Raises ValueError for an unknown backend; CheckpointError / ManoFileError (ValueError
    subclasses) for missing or wrong ACR files; ImportError when mediapipe is needed but absent.
    """
    choice = str(backend or "auto").strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")

    configured = bool(str(checkpoint or "").strip() or str(mano_dir or "").strip())
    if choice == "mediapipe" or (choice == "auto" and not configured):
        from acr_ros.backends.mediapipe import MediaPipeBackend

        chosen = MediaPipeBackend(smoothing=smoothing)
        reason = ("backend mediapipe requested" if choice == "mediapipe" else
                  f"neither {names['checkpoint']} nor {names['mano_dir']} is set; using the embedded MediaPipe backend")
        if options.device not in ("auto", "cpu"):  # said, not silently ignored
            reason = f"{reason}; device {options.device} does not apply: the embedded backend runs on the CPU"
    else:
        problem = acr_files_problem(checkpoint, mano_dir, names)
        if problem is not None:
            from acr_ros.acr.checkpoint import CheckpointError
            from acr_ros.acr.mano import ManoFileError

            kind, message = problem
            raise (CheckpointError if kind == "checkpoint" else ManoFileError)(message)
        from acr_ros.backends.acr import ACRBackend

        chosen = ACRBackend(str(Path(checkpoint).expanduser()), str(Path(mano_dir).expanduser()), options,
                            smoothing, tune_process)
        reason = "backend acr requested" if choice == "acr" else "ACR checkpoint and MANO files found"
        reason = (f"{reason}: {Path(checkpoint).name}, MANO from {Path(mano_dir).expanduser()}; network "
                  f"{chosen.precision} ({chosen.precision_reason}) on {chosen.device}, runtime {chosen.runtime} "
                  f"({chosen.runtime_reason})")
        for source in (chosen.onnx_export, chosen.aot):
            if source:
                reason = f"{reason}; {source}"
    if detection_threshold is not None:
        chosen.detection_threshold = float(detection_threshold)
    return chosen, reason
