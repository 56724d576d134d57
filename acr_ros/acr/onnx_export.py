"""The ACR network as ONNX: what ``acr_export`` writes and what the onnxruntime runtime runs.

The graph is :class:`~acr_ros.acr.network.FastACR` in float32 (BatchNorm folded, heads evaluated
only at the detected cells), exported with PyTorch's dynamo-based exporter (needs ``onnx`` and
``onnxscript``), without the fused convolutions and in the contiguous layout (a runtime picks
its own). Its interface:

inputs
    images               float32 (B, 3, 512, 512): RGB letterboxed to 512 and scaled to [-1, 1]
                         (x / 255 * 2 - 1), the official preprocessing (acr_ros.acr.preprocess)
    detection_threshold  float32 scalar: a hand is detected when its raw center-map peak exceeds it
                         (official 0.35)
    duplicate_distance   float32 scalar: when both sides are detected within this many cells of
                         the 64 grid, only the higher score is kept; negative (e.g. -1): off, the
                         official behaviour
outputs (the fields of NetworkOutput, rows [left, right] per image)
    scores         float32 (B, 2)       raw center-map peak after 5x5 NMS
    cells          int64   (B, 2)       flat index y * 64 + x of the peak in the 64x64 grid
    detected       bool    (B, 2)       scores > detection_threshold (after duplicate suppression)
    params         float32 (B, 2, 109)  cam (s, tx, ty), global orient 6D, 15 x finger 6D, 10 betas
    params_raw     float32 (B, 2, 109)  the same before the cross-hand prior
    priors         float32 (B, 2, 106)  the prior each hand would get
    prior_applied  bool    (B,)         both detected and at most 32 cells apart: params has the prior

B is fixed (``batch=N``) or dynamic (``batch=None``, named "batch"). MANO, the camera and the 6D
decoding stay outside the graph (acr_ros.acr.parser / mano / camera).

The runtime's dynamic export is cached on disk (:func:`cached_dynamic_export`): exporting takes 10 to
25 s, at every start of the node otherwise. It runs in a child process (:func:`export_in_child`), so
that a caller who stops waiting (a stop signal while the node configures) ends it at once: the
child is killed, nothing half-exported is kept, and the caller's process carries none of the
exporter's state.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from acr_ros.acr.hands import ACR_INPUT_SIZE
from acr_ros.acr.network import NO_SUPPRESSION, ACRNet, FastACR, NetworkOutput, decide

OPSET = 18  # the oldest the dynamo exporter writes (no opset-17 Resize); TensorRT 10 and later read it
INPUT_NAMES = ("images", "detection_threshold", "duplicate_distance")
OUTPUT_NAMES = tuple(f.name for f in dataclasses.fields(NetworkOutput))
MAX_DYNAMIC_BATCH = 64


def export_form(net: ACRNet, **detection_settings) -> FastACR:
    """The FastACR that is exported: float32, contiguous layout, the plain (unfused) graph."""
    return FastACR(net, dtype=torch.float32, channels_last=False, fuse=False, **detection_settings)


class ExportableACR(nn.Module):
    """A FastACR with the detection settings as tensor inputs and a tuple of tensors (OUTPUT_NAMES)
    as output: what torch.export traces (for ONNX in export form, export_form)."""

    def __init__(self, fast: FastACR):
        super().__init__()
        self.fast = fast

    def forward(self, images: torch.Tensor, detection_threshold: torch.Tensor,
                duplicate_distance: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = decide(self.fast.raw(images), detection_threshold, duplicate_distance)
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)


def example_inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, ACR_INPUT_SIZE, ACR_INPUT_SIZE, generator=g) * 2 - 1
    return images, torch.tensor(0.35), torch.tensor(NO_SUPPRESSION)


def export_onnx(network: Union[ACRNet, FastACR], path: Union[str, Path, None] = None, batch: Optional[int] = 1,
                opset: int = OPSET, metadata: Optional[dict[str, str]] = None):
    """Export a loaded ACRNet (or a FastACR in export form) to ONNX; returns the ``onnx.ModelProto``,
    and writes it to ``path`` when given. batch: fixed batch size, or None for a dynamic batch dimension (1 to
    MAX_DYNAMIC_BATCH). metadata: extra key/value strings stored in the model (e.g. the checkpoint).
    Raises ImportError naming the packages when onnx / onnxscript are missing."""
    _require_exporter()
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be at least 1 or None (dynamic), got {batch}")
    if opset < OPSET:
        raise ValueError(f"opset must be {OPSET} or newer (what torch's exporter writes), got {opset}")
    fast = network if isinstance(network, FastACR) else export_form(network)
    if fast.dtype != torch.float32 or fast.fused or fast.channels_last:
        raise ValueError("export a FastACR in export form (float32, contiguous, unfused): export_form(net)")
    module = ExportableACR(fast).eval()
    # torch.export specialises a size-1 dimension: trace a dynamic batch with 2 images.
    inputs = example_inputs(batch if batch is not None else 2)
    dynamic_shapes = None
    if batch is None:
        dim = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
        dynamic_shapes = {"images": {0: dim}, "detection_threshold": None, "duplicate_distance": None}
    with warnings.catch_warnings(), quiet_torch_logs():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                                    output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes,
                                    verbose=False)
    model = program.model_proto
    written = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:  # the exporter falls back silently when it cannot convert
        raise ValueError(f"the exporter wrote opset {written}, not the requested {opset}")
    info = {"producer": "acr_ros", "input_size": str(ACR_INPUT_SIZE),
            "batch": "dynamic" if batch is None else str(batch), **(metadata or {})}
    for key, value in info.items():
        model.metadata_props.add(key=key, value=str(value))
    if path is not None:
        import onnx

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(path))
    return model


def _require_exporter() -> None:
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs the packages {', '.join(missing)}: pip install -r "
                          "scripts/requirements.txt (onnx, onnxscript)")


@contextlib.contextmanager
def quiet_torch_logs():
    """The exporters and inductor log every step, and every torchvision op they cannot find, as warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch._inductor",
                                                     "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_cache_dir() -> Path:
    """Where the runtime's exports are cached: $ACR_ROS_CACHE_DIR/onnx, else
    $XDG_CACHE_HOME/acr_ros/onnx, else ~/.cache/acr_ros/onnx."""
    root = os.environ.get("ACR_ROS_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "acr_ros"
    return Path(root) / "onnx"


def export_key(fast: FastACR) -> str:
    """What the export depends on: the weights, the engine's source (acr_ros/acr) and torch's version."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.read_bytes())
    digest.update(f"{torch.__version__} {OPSET} {MAX_DYNAMIC_BATCH}".encode())
    for name, tensor in fast.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().data)  # logical order
    return digest.hexdigest()


def cached_export_path(fast: FastACR) -> Path:
    """Where :func:`cached_dynamic_export` keeps the export of ``fast`` (there or not)."""
    return export_cache_dir() / f"acr_{export_key(fast)}.onnx"


@dataclasses.dataclass(frozen=True)
class RuntimeExport:
    model: bytes      # the serialised ONNX model
    source: str       # where it came from, for the logs
    from_cache: bool


def cached_dynamic_export(fast: FastACR, refresh: bool = False) -> RuntimeExport:
    """The dynamic-batch export of ``fast``: read from export_cache_dir() when there (unless
    ``refresh``), else exported and written there. Processes exporting the same weights at once take
    turns, and the later ones read the first one's file. A cache that cannot be written is a
    warning: the export is then redone at every start."""
    path = cached_export_path(fast)
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / f"{path.name}.lock", "w")
    except OSError as error:
        return _uncached_export(fast, directory, error)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not refresh and path.is_file():
            return RuntimeExport(path.read_bytes(), f"ONNX export read from the cache {path}", True)
        model = export_in_child(fast)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            partial.write_bytes(model)
            os.replace(partial, path)  # readers see the whole file or none
        except OSError as error:
            partial.unlink(missing_ok=True)
            return _uncached_export(fast, directory, error, model)
    return RuntimeExport(model, f"exported to ONNX and cached as {path}", False)


def _uncached_export(fast: FastACR, directory: Path, error: OSError, model: Optional[bytes] = None) -> RuntimeExport:
    warnings.warn(f"cannot cache the ONNX export in {directory} ({error.strerror or error}): it is exported again "
                  "at every start; set ACR_ROS_CACHE_DIR to a writable folder", RuntimeWarning, stacklevel=3)
    if model is None:
        model = export_in_child(fast)
    return RuntimeExport(model, "exported to ONNX (not cached)", False)


# The child's first lines, before it imports anything heavy: it dies with the process that started
# it (Linux), and it ends at once if that process is gone already.
_CHILD = ("import ctypes, os, signal, sys\n"
          "if sys.platform == 'linux': ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
          "if os.getppid() != int(sys.argv[3]): sys.exit(3)\n"
          "from acr_ros.acr.onnx_export import _export_child\n"
          "_export_child(sys.argv[1], sys.argv[2])\n")


def export_in_child(fast: FastACR, poll_s: float = 0.05) -> bytes:
    """The serialised dynamic-batch export of ``fast``, made by export_onnx in a child process.

    The caller waits in short polls, so an exception in its thread (a stop signal's, KeyboardInterrupt)
    ends the wait at once, and the child is killed then. The child runs in a process group of its
    own (a Ctrl-C to the terminal's group or launch's signals reach only the caller, which decides)
    and dies with its parent. Raises ImportError (before starting it) when onnx or onnxscript are
    missing, RuntimeError with the child's last words when the export fails."""
    _require_exporter()
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very acr_ros
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="acr_onnx_export_") as folder:  # private (0700), removed after
        network, output, words = (Path(folder) / name for name in ("network.pt", "model.onnx", "output.txt"))
        reason = output.with_suffix(".error")
        torch.save(fast, network)
        started = time.monotonic()
        with open(words, "wb") as log:
            child = subprocess.Popen([sys.executable, "-c", _CHILD, str(network), str(output), str(os.getpid())],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     process_group=0)
        try:
            while True:
                try:
                    child.wait(poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if child.poll() is None:  # the caller stopped waiting
                child.kill()
                child.wait()
        if child.returncode != 0:
            said = reason.read_text() if reason.exists() else (
                words.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the ONNX export failed after {time.monotonic() - started:.1f} s (exit code "
                               f"{child.returncode}): {said}")
        return output.read_bytes()


def _export_child(network: str, output: str) -> None:
    """export_in_child's child: the FastACR its parent saved in a private temporary folder (the
    parent's own object, not a checkpoint from elsewhere), its export written to ``output``."""
    try:
        fast = torch.load(network, weights_only=False)
        Path(network).unlink()  # 120 MB that a killed parent could not remove
        Path(output).write_bytes(export_onnx(fast, batch=None).SerializeToString())
    except Exception as error:  # its first line, for the parent's one-line error
        lines = str(error).strip().splitlines()
        Path(output).with_suffix(".error").write_text(f"{type(error).__name__}: {lines[0] if lines else ''}")
        sys.exit(1)
