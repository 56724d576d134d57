"""Embedded hand backend: MediaPipe Hands, whose models ship inside the mediapipe wheel.

No download and no licence-gated files: this is what `backend:=auto` runs when no ACR checkpoint
and MANO files are configured. It fills the same HandResult as ACR, without the MANO fields.

Which mediapipe
    0.10.14 is the release to use. Its wheel bundles the palm-detection and hand-landmark
    models (mediapipe/modules/palm_detection/*.tflite, mediapipe/modules/hand_landmark/*.tflite)
    and the legacy `solutions.hands` API that runs them, and it does not pin numpy (0.10.15 to
    0.10.21 also bundle the models but declare numpy<2). The 1.x wheels (checked: 1.2.2) no longer
    contain the hand models nor `solutions.hands`: their Tasks HandLandmarker needs a
    `hand_landmarker.task` file downloaded at run time, which this package must not do.
    0.10.14 works with numpy 2 (checked with numpy 2.4 on CPython 3.11): its bindings take images
    through pybind11's buffer protocol and return landmarks as protobufs.

Installing it (scripts/setup.sh): its metadata asks for opencv-contrib-python (the GUI build,
which would shadow the headless OpenCV and needs libGL), jax, jaxlib, matplotlib and sounddevice,
none of which the hands solution uses. What it really needs at import and run time is
protobuf>=4.25.3,<5 and attrs (both in scripts/requirements.txt) plus the wheel itself without
its declared dependencies:

    pip install --no-deps mediapipe==0.10.14

`import mediapipe` also imports matplotlib (for a 3D plotting helper only); when matplotlib is
absent a stand-in module is put in place for the duration of the import (see _import_hands).

Conventions of the results
    side: MediaPipe's handedness classifier assumes a mirrored (selfie) image. On a normal camera
        image its "Left" is the person's right hand, so the label is swapped (mirrored_input=False,
        the default). An image holds at most one hand per side (Hands.msg): when both hands get
        the same label, the less certain one takes the other side, and its score becomes the
        classifier's probability of that side (1 - its confidence), so side, score and label agree.
    score: the handedness classifier's probability of the published side (the legacy API exposes
        no presence score; a hand is only returned once palm detection passed detection_threshold).
    joints: MediaPipe's world landmarks (metres, about the hand's geometric centre, camera axes),
        moved by the translation that best puts them on the 2D landmarks under the camera K
        (linear least squares on the pinhole equations). Without intrinsics the camera is ACR's
        default, acr_ros.acr.hands.default_intrinsics (f = 1265 / 512 * max(width, height) px, the
        principal point at the centre of ACR's letterbox square; the ACR backend uses the same, so
        both agree), and FrameResult.default_intrinsics is True. Depth then follows the assumed focal.
    wrist_rotation: a palm frame from the wrist, index MCP and pinky MCP: x from the wrist toward
        the midpoint of the index and pinky MCPs (along the fingers), y toward the thumb side
        (index MCP minus pinky MCP, made orthogonal to x), z = x cross y (out of the back of a
        right hand, out of the palm of a left hand). It is not MANO's root frame.
    MANO fields, vertices and joint_rotations: None; faces() returns None.

Tracking: video mode keeps one MediaPipe graph per stream (never shared between cameras), so a
hand tracked in one stream never leaks into another, and starts a stream afresh when its image
size changes. MediaPipe's tracking runs palm detection again only on the frame after it lost a
hand, and a scene cut can leave a tracked ghost hand for a frame: for unrelated photos set
static_image_mode=True (settable; the offline CLI does it for images and folders), which runs
palm detection on every image.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import sys
import tempfile
import threading
import types
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Optional, Sequence

import numpy as np

from acr_ros.acr.hands import (LEFT, NUM_JOINTS, RIGHT, CameraIntrinsics, FrameResult, HandResult,
                               default_intrinsics)
from acr_ros.acr.one_euro import OneEuroFilter, SmoothingConfig
from acr_ros.backends.base import MEDIAPIPE_THRESHOLD, check_batch

MEDIAPIPE_VERSION = "0.10.14"
INSTALL_HINT = (f"the embedded hand backend needs mediapipe {MEDIAPIPE_VERSION} (its wheel bundles the "
                f"hand models; 1.x does not): pip install 'protobuf>=4.25.3,<5' attrs && "
                f"pip install --no-deps mediapipe=={MEDIAPIPE_VERSION}")

_WRIST, _INDEX_MCP, _MIDDLE_MCP, _PINKY_MCP = 0, 5, 9, 17

_import_lock = threading.Lock()

# What TensorFlow Lite and absl print straight to the process's stderr each time a MediaPipe graph
# starts (every stream, every static/video switch): start-up chatter, not problems.
_GRAPH_START_NOISE = re.compile(
    r"Created TensorFlow Lite XNNPACK delegate|All log messages before absl::InitializeLog|"
    r"inference_feedback_manager\.cc.*Feedback manager requires a model with a single signature")


def _flush_c_streams() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask: Python's own flush is all there is
        pass


@contextlib.contextmanager
def _quiet_graph_start():
    """Runs a MediaPipe graph's start with the C-level stderr captured; what it printed comes back
    on stderr without the known start-up chatter (see _GRAPH_START_NOISE)."""
    sys.stderr.flush()
    _flush_c_streams()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            _flush_c_streams()  # TensorFlow Lite's C stdio may hold part of a line
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines() if line.strip() and not _GRAPH_START_NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


def _import_hands():
    """mediapipe.python.solutions.hands, importing mediapipe without matplotlib if need be.

    mediapipe/__init__ imports solutions.drawing_utils, which imports matplotlib.pyplot for
    plot_landmarks() only. When matplotlib is not installed, empty stand-in modules are placed in
    sys.modules for the import and removed right after, so a later `import matplotlib` behaves
    as usual.
    """
    with _import_lock:
        if "mediapipe.python.solutions.hands" in sys.modules:
            return sys.modules["mediapipe.python.solutions.hands"]
        stubs = {}
        if importlib.util.find_spec("matplotlib") is None:
            matplotlib = types.ModuleType("matplotlib")
            pyplot = types.ModuleType("matplotlib.pyplot")
            matplotlib.pyplot = pyplot
            stubs = {"matplotlib": matplotlib, "matplotlib.pyplot": pyplot}
            for name, module in stubs.items():
                sys.modules.setdefault(name, module)
        try:
            from mediapipe.python.solutions import hands
        except ImportError as error:
            raise ImportError(f"{INSTALL_HINT} ({type(error).__name__}: {error})") from error
        finally:
            for name, module in stubs.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
        return hands


def mediapipe_version() -> Optional[str]:
    """The installed mediapipe version, or None (read from the metadata, without importing it)."""
    try:
        return version("mediapipe")
    except PackageNotFoundError:
        return None


def solve_translation(points: np.ndarray, keypoints: np.ndarray, k: CameraIntrinsics,
                      weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Translation T (3,) such that the pinhole projection of points + T best matches keypoints.

    Linear least squares on  x_i (Z_i + Tz) = X_i + Tx,  y_i (Z_i + Tz) = Y_i + Ty  with
    (x_i, y_i) the keypoints in normalised camera coordinates (the estimate_translation of SPIN,
    which the ACR code falls back to). Depth is kept at least 1 cm.
    """
    p = np.asarray(points, dtype=np.float64)
    uv = np.asarray(keypoints, dtype=np.float64)
    x = (uv[:, 0] - k.cx) / k.fx
    y = (uv[:, 1] - k.cy) / k.fy
    n = len(p)
    a = np.zeros((2 * n, 3))
    a[:n, 0], a[:n, 2] = 1.0, -x
    a[n:, 1], a[n:, 2] = 1.0, -y
    b = np.concatenate([x * p[:, 2] - p[:, 0], y * p[:, 2] - p[:, 1]])
    if weights is not None:
        w = np.sqrt(np.concatenate([weights, weights]).astype(np.float64))
        a, b = a * w[:, None], b * w
    t, *_ = np.linalg.lstsq(a, b, rcond=None)
    if not np.all(np.isfinite(t)) or t[2] + p[:, 2].min() < 0.01:
        # Degenerate: place by size instead (2D spread / 3D spread), through the keypoint centre.
        spread3 = np.linalg.norm(p[:, :2] - p[:, :2].mean(axis=0), axis=1).mean()
        spread2 = np.linalg.norm(np.stack([x, y], 1) - np.stack([x, y], 1).mean(axis=0), axis=1).mean()
        tz = max(spread3 / max(spread2, 1e-9), 0.01) - p[:, 2].mean()
        t = np.array([x.mean() * (tz + p[:, 2].mean()) - p[:, 0].mean(),
                      y.mean() * (tz + p[:, 2].mean()) - p[:, 1].mean(), tz])
    return t


def palm_rotation(joints: np.ndarray) -> np.ndarray:
    """(3, 3) palm frame -> camera frame from wrist, index MCP and pinky MCP (see module doc)."""
    j = np.asarray(joints, dtype=np.float64)
    x = 0.5 * (j[_INDEX_MCP] + j[_PINKY_MCP]) - j[_WRIST]
    across = j[_INDEX_MCP] - j[_PINKY_MCP]
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        return np.eye(3, dtype=np.float32)
    x /= nx
    y = across - np.dot(across, x) * x
    ny = np.linalg.norm(y)
    if ny < 1e-9:
        return np.eye(3, dtype=np.float32)
    y /= ny
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=1).astype(np.float32)


@dataclass
class _Stream:
    hands: object  # mediapipe Hands graph of this stream
    filters: dict  # side -> (OneEuroFilter of the joints, OneEuroFilter of the keypoints)
    size: tuple    # (width, height) of the stream's images
    started: bool  # the graph has run once (its models are loaded)


class MediaPipeBackend:
    """HandBackend over MediaPipe Hands (see the module documentation for the conventions).

    detection_threshold: MediaPipe's min_detection_confidence (clamped to [0, 1]); settable.
    tracking_threshold: min_tracking_confidence (video mode: below it, palm detection runs again).
    model_complexity: 1 = hand_landmark_full (default), 0 = hand_landmark_lite.
    static_image_mode: detect on every image, no tracking between frames.
    mirrored_input: the images are mirrored (selfie preview): keep MediaPipe's labels as they are.
    smoothing: None, or a SmoothingConfig: One-Euro filters (its pose_min_cutoff, pose_beta and
        d_cutoff) per stream and side on the 3D joints (metres, seconds) and on the keypoints
        (normalised image coordinates, (u - cx) / fx).
    """

    name = "mediapipe"
    checkpoint = ""
    device = "cpu"
    threshold = MEDIAPIPE_THRESHOLD

    def __init__(self, detection_threshold: float = MEDIAPIPE_THRESHOLD.default, tracking_threshold: float = 0.5,
                 model_complexity: int = 1, static_image_mode: bool = False,
                 mirrored_input: bool = False, smoothing: Optional[SmoothingConfig] = None,
                 max_streams: int = 16):
        self._hands_module = _import_hands()
        version = mediapipe_version() or "?"
        self.model = (f"MediaPipe Hands {version} (palm detection + hand landmark "
                      f"{'full' if model_complexity else 'lite'}, bundled)")
        self.tracking_threshold = float(tracking_threshold)
        self.model_complexity = int(model_complexity)
        self._static_image_mode = bool(static_image_mode)
        self.mirrored_input = bool(mirrored_input)
        self.max_streams = int(max_streams)
        self._smoothing = smoothing
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.RLock()
        self._detection_threshold = self._clamp(detection_threshold)

    # ---- HandBackend -----------------------------------------------------------------------
    @staticmethod
    def _clamp(value: float) -> float:
        return float(min(max(float(value), 0.0), 1.0))

    @property
    def detection_threshold(self) -> float:
        return self._detection_threshold

    @detection_threshold.setter
    def detection_threshold(self, value: float) -> None:
        value = self._clamp(value)
        with self._lock:
            if value != self._detection_threshold:
                self._detection_threshold = value
                self._close_streams()  # the graphs take it at construction

    @property
    def static_image_mode(self) -> bool:
        return self._static_image_mode

    @static_image_mode.setter
    def static_image_mode(self, value: bool) -> None:
        """True: palm detection on every image (independent photos); False: tracking (video)."""
        with self._lock:
            if bool(value) != self._static_image_mode:
                self._static_image_mode = bool(value)
                self._close_streams()

    def faces(self, side: str) -> Optional[np.ndarray]:
        return None

    def set_smoothing(self, config: Optional[SmoothingConfig]) -> None:
        with self._lock:
            self._smoothing = config
            for stream in self._streams.values():
                stream.filters.clear()

    def reset(self) -> None:
        with self._lock:
            self._close_streams()

    def reset_side(self, stream: str, side: str) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams[stream].filters.pop(side, None)

    def close(self) -> None:
        """Closes every stream's MediaPipe graph (a later reconstruct would open new ones)."""
        self.reset()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reconstruct(self, images: Sequence[np.ndarray], intrinsics: Sequence[Optional[CameraIntrinsics]],
                    timestamps: Sequence[float], streams: Sequence[str]) -> list[FrameResult]:
        check_batch(images, intrinsics, timestamps, streams)
        with self._lock:
            return [self._one(img, k, float(t), str(s))
                    for img, k, t, s in zip(images, intrinsics, timestamps, streams)]

    # ---- internals ----------------------------------------------------------------------------
    def _close_streams(self) -> None:
        for stream in self._streams.values():
            try:
                stream.hands.close()
            except Exception:  # pragma: no cover - closing must never fail a reset
                pass
        self._streams.clear()

    def _stream(self, name: str, size: tuple) -> _Stream:
        stream = self._streams.get(name)
        if stream is not None and stream.size != size:
            # Another image size: the tracked regions mean nothing there; start afresh.
            self._streams.pop(name).hands.close()
            stream = None
        if stream is None:
            if len(self._streams) >= self.max_streams:  # forget the oldest stream
                oldest = next(iter(self._streams))
                self._streams.pop(oldest).hands.close()
            hands = self._hands_module.Hands(
                static_image_mode=self.static_image_mode, max_num_hands=2,
                model_complexity=self.model_complexity,
                min_detection_confidence=self._detection_threshold,
                min_tracking_confidence=self.tracking_threshold)
            stream = self._streams[name] = _Stream(hands, {}, size, started=False)
        return stream

    def _one(self, image: np.ndarray, k: Optional[CameraIntrinsics], t: float, stream_name: str) -> FrameResult:
        import cv2

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        used_default = k is None
        if k is None:
            k = default_intrinsics(width, height)
        with warnings.catch_warnings():  # protobuf 4.25 warns on every output of the legacy API
            warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            stream = self._streams.get(stream_name)
            if stream is not None and stream.started and stream.size == (width, height):
                out = stream.hands.process(rgb)
            else:
                # A new graph loads its models, and prints its chatter, on its own threads at any time
                # from its construction to the end of its first run: one capture spans both (with a
                # gap between two captures, a busy process let the chatter through).
                with _quiet_graph_start():
                    stream = self._stream(stream_name, (width, height))
                    out = stream.hands.process(rgb)
                stream.started = True
        found = []
        if out.multi_hand_landmarks:
            for lms, world, handedness in zip(out.multi_hand_landmarks, out.multi_hand_world_landmarks,
                                              out.multi_handedness):
                label = handedness.classification[0]
                raw_side = LEFT if label.label.lower() == "left" else RIGHT
                side = raw_side if self.mirrored_input else (RIGHT if raw_side == LEFT else LEFT)
                uv = np.array([[p.x * width, p.y * height] for p in lms.landmark], dtype=np.float64)
                xyz = np.array([[p.x, p.y, p.z] for p in world.landmark], dtype=np.float64)
                found.append([side, float(label.score), uv, xyz])
        # At most one hand per side: the less certain of two same-side hands takes the other side,
        # with the classifier's probability of that side (it has two classes).
        if len(found) == 2 and found[0][0] == found[1][0]:
            weaker = min(found, key=lambda h: h[1])
            weaker[0] = RIGHT if weaker[0] == LEFT else LEFT
            weaker[1] = 1.0 - weaker[1]
        hands = []
        for side, score, uv, xyz in found:
            if uv.shape != (NUM_JOINTS, 2) or xyz.shape != (NUM_JOINTS, 3):
                continue
            joints = xyz + solve_translation(xyz, uv, k)
            keypoints = uv
            if self._smoothing is not None:
                filters = stream.filters.get(side)
                if filters is None:
                    filters = stream.filters[side] = (OneEuroFilter(self._smoothing),
                                                      OneEuroFilter(self._smoothing))
                joints = filters[0](joints, t)
                # Keypoints in normalised image coordinates: speeds comparable to the joints' m/s.
                centre, focal = np.array([k.cx, k.cy]), np.array([k.fx, k.fy])
                keypoints = filters[1]((keypoints - centre) / focal, t) * focal + centre
            hands.append(HandResult(
                side=side, score=score,
                joints=joints.astype(np.float32),
                keypoints=keypoints.astype(np.float32),
                wrist_rotation=palm_rotation(joints)))
        if self._smoothing is not None:  # a side not seen in this frame restarts its filter
            for side in set(stream.filters) - {h.side for h in hands}:
                del stream.filters[side]
        hands.sort(key=lambda h: h.side != LEFT)
        return FrameResult(hands=hands, default_intrinsics=used_default, intrinsics=k)
