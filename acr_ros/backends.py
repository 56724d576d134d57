"""Choosing the hand backend: ACR when its files are there, the embedded MediaPipe one otherwise.

    backend, reason = create_backend("auto", checkpoint=..., mano_dir=...)

"auto": ACR when the checkpoint and both MANO files are configured and exist, the embedded
MediaPipe backend otherwise; `reason` says which and why (the node logs it).
"acr": ACR or a clear error naming the missing file, where it was looked for and where to get it.
"mediapipe": the embedded backend (no download, no licence-gated files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from acr_ros.model_files import CHECKPOINT_HELP, MANO_FILES, MANO_HELP

BACKENDS = ("auto", "acr", "mediapipe")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # of the ACR network; auto: fp16 on CUDA, fp32 on CPU


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


def create_backend(backend: str = "auto", checkpoint: str = "", mano_dir: str = "", device: str = "auto",
                   precision: str = "auto", detection_threshold: Optional[float] = None, smoothing=None,
                   **acr_options):
    """(backend, reason) for backend "auto", "acr" or "mediapipe".

    detection_threshold None: each backend's own default (ACR 0.35 on the raw center-map peak,
    MediaPipe 0.5 min detection confidence). smoothing: a SmoothingConfig or None. Further keyword
    arguments (e.g. suppress_duplicate_hands) go to the ACR backend only.
    Raises ValueError for an unknown backend; with "acr", CheckpointError / ManoFileError
    (ValueError subclasses) for missing files; ImportError when mediapipe is needed but absent.
    """
    choice = str(backend or "auto").strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")

    if choice in ("auto", "acr"):
        problem = acr_files_problem(checkpoint, mano_dir)
        if problem is None:
            acr = _create_acr(checkpoint, mano_dir, device, precision, detection_threshold, smoothing,
                              acr_options)
            reason = ("backend acr requested" if choice == "acr"
                      else "ACR checkpoint and MANO files found")
            return acr, f"{reason}: {Path(checkpoint).name}, MANO from {Path(mano_dir).expanduser()}"
        kind, message = problem
        if choice == "acr":
            from acr_ros.acr.checkpoint import CheckpointError
            from acr_ros.acr.mano import ManoFileError

            raise (CheckpointError if kind == "checkpoint" else ManoFileError)(message)
        reason = f"{_short(message)}; using the embedded MediaPipe backend"
    else:
        reason = "backend mediapipe requested"
    return _create_mediapipe(detection_threshold, smoothing), reason


def _create_acr(checkpoint, mano_dir, device, precision, detection_threshold, smoothing, options):
    from acr_ros.acr.pipeline import ACRBackend

    kwargs = dict(device=device, precision=precision, smoothing=smoothing, **options)
    if detection_threshold is not None:
        kwargs["detection_threshold"] = float(detection_threshold)
    return ACRBackend(str(Path(checkpoint).expanduser()), str(Path(mano_dir).expanduser()), **kwargs)


def _create_mediapipe(detection_threshold, smoothing):
    from acr_ros.mediapipe_backend import MediaPipeBackend

    kwargs = {"smoothing": smoothing}
    if detection_threshold is not None:
        kwargs["detection_threshold"] = float(detection_threshold)
    return MediaPipeBackend(**kwargs)
