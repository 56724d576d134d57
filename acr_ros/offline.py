"""Offline hand reconstruction on images, folders, videos, webcams and ROS 2 recordings.

    acr_offline [--inputs IMAGE|FOLDER|VIDEO|WEBCAM_ID|BAG ...] [-o OUTPUT_DIR] [-t]
                [--backend auto|acr|mediapipe] [--checkpoint wild.pkl] [--mano-dir DIR]
                [--device auto] [--precision auto] [--runtime auto|torch|onnxruntime [--onnx-providers P ...]]
                [--threshold T] [--no-render] [--batch-size N]
                [--calibration camera.yaml | --intrinsics FX FY CX CY] [--depth DEPTH_FOLDER]
                [--image-topic TOPIC] [--camera-info-topic TOPIC] [--copy-inputs] [--bag-overlay]

Without --inputs it runs on the bundled samples (acr_ros/data/samples: its images as a folder,
and the clip). The backend is chosen like the node's: ACR when --checkpoint or --mano-dir is given
(a wrong path stops the run with a message naming the file), the embedded MediaPipe backend when
neither is (no download needed). Inputs that do not exist and misconfigurations (bad --intrinsics,
--device, --fps, an output folder that cannot be written, ...) are reported before any model loads;
unreadable images are reported one line each and skipped; the exit code is 1 when anything was
skipped, 2 when nothing could run (docs/offline.md, "Exit codes").

Distances need the camera's intrinsics: --calibration reads the calibration YAML that ROS's
camera_calibration writes (scaled to the image size when the images are a resized stream),
--intrinsics takes them directly; without either, ACR's default focal length is used (said once as
a warning) and depth can be off by a large factor. --depth FOLDER places every hand on an aligned
depth image (an RGB-D camera's depth registered to colour: 16-bit PNG in millimetres, --depth-scale
for other units; paired with the frames by file name, else by order), as the node's depth_topics.

Outputs in OUTPUT_DIR (default ./acr_output), for an input named NAME:
    image   NAME_output.jpg                     the input with the hands drawn
    folder  NAME/<image>_output.jpg + NAME_output.mp4
    video   NAME_output.mp4                     (webcam: webcam<ID>_output.mp4)
    bag     NAME_hands/ (rosbag2, MCAP storage) + NAME_output.mp4, see "Recordings" below
    all     NAME_results.npz                    the results, below
Overlays show the shaded MANO mesh when the backend has one (ACR), the skeleton otherwise;
--no-render skips them (results only).

Recordings (acr_ros.recordings): a rosbag2 bag directory (sqlite3 or MCAP storage) or a single
.mcap or .db3 file. Every image of --image-topic (sensor_msgs/Image or CompressedImage; default:
the bag's only image topic) is processed, in record order, in batches of --batch-size, with the
CameraInfo of the image topic's sibling camera_info (or --camera-info-topic; --calibration and
--intrinsics override both). NAME_hands/ holds what the node would have published, at the images'
stamps and written at their record times: /acr_hands/hands (hand tracks as the node keeps them),
/acr_hands/left|right/wrist_pose, /tf, /acr_hands/markers, /acr_hands/mesh (ACR), with
--bag-overlay /acr_hands/overlay; the input's /tf_static as recorded; with --copy-inputs every
input topic too (the input's /tf merged into the output's). The same recording gives a
byte-identical bag and identical results arrays on every run (same machine, backend and options).
Unusable images, damaged storage and missing topics are reported on stderr with the file and the
reason; what can be read is processed and the exit code is 1. Ctrl-C stops after the batch in
flight and closes every output (exit code 130); a second Ctrl-C stops at once. --depth-topic
places the hands on the recording's aligned depth images (as --depth does for folders and videos).

-t/--temporal: One-Euro smoothing per hand side (acr_ros.acr.one_euro.SmoothingConfig defaults,
as the node). ACR smooths the MANO pose and shape (the seed demo's -t); the MediaPipe backend
smooths the 3D joints and, separately, the 2D keypoints (in normalised image coordinates), both
with the finger-pose parameters.

NAME_results.npz (numpy.load, no pickle) holds one row per frame and one row per hand:
    backend, model, checkpoint          () str: which model made them
    frame_name (F,) str, frame_timestamp (F,) float64 s, frame_size (F, 2) int (width, height),
    default_intrinsics (F,) bool, intrinsics (F, 4) float64 fx, fy, cx, cy used (NaN if unknown)
    hand_frame (N,) int                 row of the hand's frame in the frame arrays
    side (N,) str 'left'/'right', score (N,) float32
    joints (N, 21, 3) m, camera optical frame; keypoints (N, 21, 2) px; box (N, 4) int x, y, w, h
    wrist_position (N, 3) m; wrist_rotation (N, 3, 3); wrist_quaternion (N, 4) x, y, z, w
    depth_source (N,) str 'model'/'depth', depth_residual (N,) m (NaN from the model), depth_samples (N,)
    global_orient (N, 3), finger_pose (N, 45), shape (N, 10), weak_camera (N, 3),
    vertices (N, 778, 3) m, joint_rotations (N, 21, 3, 3)   NaN where the backend gives none
                                        (MediaPipe: no MANO fields, no vertices)
These are the per-hand fields of acr_ros/Hand (joint order: acr_ros.acr.hands.JOINT_NAMES).
"""
from __future__ import annotations

import argparse
import queue
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from acr_ros.acr.depth import depth_image_to_metres
from acr_ros.acr.options import PRECISIONS, RUNTIMES, EngineOptions
from acr_ros.acr.hands import NUM_JOINTS, NUM_VERTICES, CameraIntrinsics, FrameResult, rotation_to_quaternion
from acr_ros.backends import BACKENDS, faces_by_side
from acr_ros.calibration import CalibrationError, load_calibration
from acr_ros.frame_inputs import DecodeSettings
from acr_ros.frame_processor import FrameInput, FrameProcessor
from acr_ros.hand_outputs import HandOutputs, OutputSettings
from acr_ros.node import parameters
from acr_ros.retargeting import ROBOTS, TYPES, RetargetSettings
from acr_ros.media import (SAMPLES_DIR, VIDEO_SUFFIXES, MediaSource, is_recording, natural_key, open_media,
                           sample_inputs)

DEFAULT_OUTPUT = Path("acr_output")


# ---- settings and warnings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The node's parameters that shape the results: its defaults, or a node parameters file's values."""

    track_timeout: float = 2.0
    decode: DecodeSettings = DecodeSettings()
    outputs: OutputSettings = OutputSettings()
    retarget: Optional[RetargetSettings] = None   # robot-hand joint commands; None: off

    @classmethod
    def from_parameters(cls, values: dict, depth_scale: Optional[float] = None) -> "Settings":
        """values: every node parameter by name (node.parameters.read_parameters_file); depth_scale
        (--depth-scale) overrides depth_millimetres_per_unit."""
        if depth_scale is not None:
            values = {**values, "depth_millimetres_per_unit": depth_scale}
        return cls(values["track_timeout"], parameters.decode_settings(values.get),
                   parameters.output_settings(values.get), parameters.retarget_settings(values.get))


def _processor(backend, settings: Settings, retargeter, warn: Callable[[str], None]) -> FrameProcessor:
    """The node's frame path for one input; with a retargeter, joint commands for settings.retarget.sides."""
    processor = FrameProcessor(backend, settings.track_timeout, warn=_once(warn))
    if retargeter is not None:
        processor.retargeter, processor.retarget_sides = retargeter, settings.retarget.sides
    return processor


def _robot_frames(retargeter, processed) -> dict:
    """side -> link poses of the frame's retargeted hands, for render.beside. On the retargeter's thread: its
    forward kinematics share the optimiser's data."""
    return {side: retargeter.link_frames(side, joints.positions) for side, joints in processed.robot_joints.items()}


def _once(warn: Callable[[str], None]) -> Callable[[str, str], None]:
    """The processor's warn(kind, message), said once per kind (a recording repeats its problems)."""
    said: set[str] = set()

    def warn_once(kind: str, message: str) -> None:
        if kind not in said:
            said.add(kind)
            warn(message)
    return warn_once


def _warn_counts(counters, warn: Callable[[str], None], where: str) -> None:
    """What the processor counted that changed results, one line."""
    counts = {"hand(s) with NaN or Inf values left out": counters.get("non_finite_hands"),
              "frame(s) without a depth image near their stamp": counters.get("depth_unpaired"),
              "depth image(s) not used": counters.get("bad_depth"),
              "hand(s) the depth could not place (those keep the model's distance)": counters.get("depth_unplaced")}
    said = [f"{count} {what}" for what, count in counts.items() if count]
    if said:
        warn(where + ", ".join(said))


# ---- results file ---------------------------------------------------------------------------------
_OPTIONAL_FIELDS = {  # HandResult field -> shape per hand
    "global_orient": (3,), "finger_pose": (45,), "shape": (10,), "weak_camera": (3,),
    "vertices": (NUM_VERTICES, 3), "joint_rotations": (NUM_JOINTS, 3, 3),
}


class ResultsRecorder:
    """Collects FrameResults of one input and writes NAME_results.npz (format: module doc)."""

    def __init__(self, backend):
        self.meta = {"backend": backend.name, "model": backend.model, "checkpoint": backend.checkpoint}
        self.frames: dict[str, list] = {k: [] for k in
                                        ("frame_name", "frame_timestamp", "frame_size", "default_intrinsics",
                                         "intrinsics")}
        self.hands: dict[str, list] = {k: [] for k in
                                       ("hand_frame", "side", "score", "joints", "keypoints", "box",
                                        "wrist_position", "wrist_rotation", "depth_source", "depth_residual",
                                        "depth_samples", *_OPTIONAL_FIELDS)}
        self.robot: list = []  # per hand: its RobotJoints (retargeting), or None

    def add(self, name: str, timestamp: float, width: int, height: int, result: FrameResult,
            robot_joints: Optional[dict] = None) -> None:
        """robot_joints: side -> RobotJoints of the frame's retargeted hands."""
        row = len(self.frames["frame_name"])
        k = result.intrinsics
        self.frames["frame_name"].append(name)
        self.frames["frame_timestamp"].append(float(timestamp))
        self.frames["frame_size"].append((int(width), int(height)))
        self.frames["default_intrinsics"].append(bool(result.default_intrinsics))
        self.frames["intrinsics"].append((k.fx, k.fy, k.cx, k.cy) if k is not None else (np.nan,) * 4)
        for hand in result.hands:
            h = self.hands
            h["hand_frame"].append(row)
            h["side"].append(hand.side)
            h["score"].append(float(hand.score))
            h["joints"].append(np.asarray(hand.joints, np.float32).reshape(NUM_JOINTS, 3))
            h["keypoints"].append(np.asarray(hand.keypoints, np.float32).reshape(NUM_JOINTS, 2))
            h["box"].append(hand.box(int(width), int(height)))
            h["wrist_position"].append(np.asarray(hand.joints, np.float32)[0])
            h["wrist_rotation"].append(np.asarray(hand.wrist_rotation, np.float32).reshape(3, 3))
            h["depth_source"].append(hand.depth_source)
            h["depth_residual"].append(float(hand.depth_residual))
            h["depth_samples"].append(int(hand.depth_samples))
            for field, shape in _OPTIONAL_FIELDS.items():
                value = getattr(hand, field, None)
                h[field].append(np.full(shape, np.nan, np.float32) if value is None
                                else np.asarray(value, np.float32).reshape(shape))
            self.robot.append((robot_joints or {}).get(hand.side))

    @property
    def num_frames(self) -> int:
        return len(self.frames["frame_name"])

    @property
    def num_hands(self) -> int:
        return len(self.hands["hand_frame"])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.array(v) for k, v in self.meta.items()}
        out["frame_name"] = np.array(self.frames["frame_name"], dtype=str)
        out["frame_timestamp"] = np.array(self.frames["frame_timestamp"], np.float64)
        out["frame_size"] = np.array(self.frames["frame_size"], np.int64).reshape(-1, 2)
        out["default_intrinsics"] = np.array(self.frames["default_intrinsics"], bool)
        out["intrinsics"] = np.array(self.frames["intrinsics"], np.float64).reshape(-1, 4)
        shapes = {"hand_frame": (), "side": (), "score": (), "joints": (NUM_JOINTS, 3),
                  "keypoints": (NUM_JOINTS, 2), "box": (4,), "wrist_position": (3,), "wrist_rotation": (3, 3),
                  "depth_source": (), "depth_residual": (), "depth_samples": (), **_OPTIONAL_FIELDS}
        dtypes = {"hand_frame": np.int64, "side": str, "box": np.int64, "depth_source": str, "depth_samples": np.int64}
        for key, shape in shapes.items():
            values = self.hands[key]
            dtype = dtypes.get(key, np.float32)
            out[key] = (np.array(values, dtype=dtype).reshape((-1,) + shape) if values
                        else np.zeros((0,) + shape, dtype=dtype if dtype is not str else "<U5"))
        out["wrist_quaternion"] = rotation_to_quaternion(out["wrist_rotation"]).astype(np.float32)
        commands = [command for command in self.robot if command is not None]
        if commands:  # retargeting ran: the robot's joint names and positions per hand ('' and NaN: none)
            count = len(commands[0].names)
            out["robot_joint_names"] = np.array([command.names if command else ("",) * count
                                                 for command in self.robot], dtype=str).reshape(-1, count)
            out["robot_positions"] = np.array([command.positions if command else np.full(count, np.nan)
                                               for command in self.robot], np.float64).reshape(-1, count)
        return out

    def save(self, path: Path) -> Path:
        np.savez_compressed(path, **self.arrays())
        return path


# ---- video writing --------------------------------------------------------------------------------
class VideoOutput:
    """mp4 (mp4v) writer opened on the first frame; later frames of another size are letterboxed."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, float(fps) if fps and fps > 0 else 30.0
        self.writer: Optional[cv2.VideoWriter] = None
        self.size: Optional[tuple[int, int]] = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            h, w = image.shape[:2]
            self.size = (w - w % 2, h - h % 2)  # even sizes for the encoder
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise RuntimeError(f"cannot write {self.path} (no mp4v encoder in this OpenCV)")
        self.writer.write(_fit(image, self.size))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    if (iw - iw % 2, ih - ih % 2) == (w, h):
        return np.ascontiguousarray(image[:h, :w])
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out


# ---- command line -----------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="acr_offline", description=__doc__.split("\n\n")[0],
        epilog="Results format and outputs: see the module documentation (python -m pydoc acr_ros.offline).")
    parser.add_argument("-i", "--inputs", nargs="+", default=None,
                        help="images, folders of images, videos, webcam ids (integers) or recordings "
                             "(rosbag2 bag directories, .mcap, .db3); default: the bundled samples")
    parser.add_argument("-o", "--output-dir", type=Path, default=DEFAULT_OUTPUT, help="default: ./acr_output")
    parser.add_argument("-t", "--temporal", action="store_true", help="One-Euro temporal smoothing")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--checkpoint", default="", help="ACR checkpoint wild.pkl (ACR README, Google Drive)")
    parser.add_argument("--mano-dir", default="", help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl "
                                                       "(https://mano.is.tue.mpg.de)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (ACR)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="ACR")
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="what runs the ACR network (onnxruntime: exported to ONNX at start-up, fp32; auto: on "
                             "a CPU in fp32 the faster of the two, measured once the export is cached)")
    parser.add_argument("--onnx-providers", nargs="+", default=(), metavar="PROVIDER",
                        help="onnxruntime execution providers in order of preference (default: CUDA then CPU "
                             "on a CUDA device, CPU otherwise)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="detection threshold (ACR: center-map peak, default 0.35; "
                             "MediaPipe: detection confidence, default 0.5)")
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                        help="camera intrinsics in pixels of the inputs (default: the documented "
                             "default focal, depth approximate)")
    camera.add_argument("--calibration", default=None,
                        help="camera calibration YAML (ROS camera_calibration format; path or file:// URL)")
    parser.add_argument("--depth", type=Path, default=None,
                        help="folder of depth images aligned to the colour frames (16-bit PNG in millimetres, "
                             "or 32-bit float TIFF in metres), paired by file name, else by order")
    parser.add_argument("--depth-scale", type=float, default=None,
                        help="millimetres per unit of 16-bit depth images (default: the node's "
                             "depth_millimetres_per_unit, 1.0)")
    parser.add_argument("--retarget", default=None, metavar="ROBOT",
                        help="robot-hand joint commands with dex-retargeting: " + ", ".join(ROBOTS) + " (JointState "
                             "per side in the bag, robot_positions in the results; also retarget.* of --params-file)")
    parser.add_argument("--retarget-type", default="vector", choices=TYPES, help="with --retarget (default vector)")
    parser.add_argument("--urdf-dir", default="", help="with --retarget: the robot URDFs' folder (dex-urdf's hands/)")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="the hands node's parameters file (e.g. config/hands.yaml): its track, depth and "
                             "output parameters (track_timeout, depth_max_time_difference, frame_prefix, tf_joints, "
                             "marker_lifetime, ...) apply here as in the node")
    parser.add_argument("--no-render", action="store_true", help="write results only, no overlays or mp4")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of folder inputs (timestamps, mp4)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop each input after this many frames")
    parser.add_argument("--batch-size", type=int, default=1, help="frames per forward pass (video, folder, recording)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    bags = parser.add_argument_group("recordings (rosbag2 bag directories, .mcap or .db3 files)")
    bags.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage topic (default: the bag's only one)")
    bags.add_argument("--camera-info-topic", help="default: the image topic's sibling camera_info, when recorded")
    bags.add_argument("--depth-topic", help="depth images aligned to the colour images (16UC1 mm, 32FC1 m, or "
                                            "compressedDepth), paired by stamp: hands placed on them (--depth-scale)")
    bags.add_argument("--copy-inputs", action="store_true",
                      help="copy every input topic into the output bag, so that one file holds both")
    bags.add_argument("--bag-overlay", action="store_true",
                      help="write the overlay image into the output bag (raw bgr8, as the node's ~/overlay)")
    return parser.parse_args(argv)


def default_inputs() -> list[str]:
    """The bundled samples: the folder (its images as a sequence) and each clip."""
    clips = [p for p in sample_inputs() if p.suffix.lower() in VIDEO_SUFFIXES]
    return [str(SAMPLES_DIR)] + [str(p) for p in clips]


IntrinsicsFor = Callable[[int, int], Optional[CameraIntrinsics]]  # (width, height) -> K, None: default


class DepthFolder:
    """Depth images aligned to the colour frames: 16-bit PNGs (units of ``millimetres_per_unit``
    mm) or 32-bit float TIFF/EXR in metres, in one folder, paired with the colour frames by file
    name when every frame has a namesake there, else by order (the n-th frame, the n-th depth)."""

    SUFFIXES = (".png", ".tif", ".tiff", ".exr")

    def __init__(self, folder: Path, millimetres_per_unit: float = 1.0):
        self.folder, self.millimetres_per_unit = folder, millimetres_per_unit
        if not folder.is_dir():
            raise ValueError(f"--depth {folder}: not a folder")
        self.paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in self.SUFFIXES), key=natural_key)
        if not self.paths:
            raise ValueError(f"--depth {folder}: no depth images ({', '.join(self.SUFFIXES)})")
        self._by_stem = {p.stem: p for p in self.paths}

    def path_for(self, frame) -> Optional[Path]:
        by_name = self._by_stem.get(frame.name)
        if by_name is not None:
            return by_name
        return self.paths[frame.index] if frame.index < len(self.paths) else None

    def metres_for(self, frame) -> tuple[Optional[np.ndarray], str]:
        """The frame's depth image in metres, or None and why not ('' when it has no partner)."""
        path = self.path_for(frame)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path is not None else None
        if raw is None:
            return None, ""
        if raw.shape[:2] != frame.image.shape[:2]:
            return None, (f"{path.name} is {raw.shape[1]}x{raw.shape[0]} but the colour image is "
                          f"{frame.image.shape[1]}x{frame.image.shape[0]}")
        encoding = "16UC1" if raw.dtype == np.uint16 else "32FC1"
        return depth_image_to_metres(raw if raw.ndim == 2 else raw[..., 0], encoding, self.millimetres_per_unit), ""


def process_input(backend, source: MediaSource, spec: str, output_dir: Path, render: bool,
                  intrinsics_for: IntrinsicsFor, batch_size: int = 1,
                  max_frames: Optional[int] = None, quiet: bool = False,
                  depth: Optional["DepthFolder"] = None, settings: Optional[Settings] = None,
                  retargeter=None) -> dict:
    """Runs one input through the frame processor (hands placed with the aligned depth images when
    ``depth`` is given); writes its outputs; returns a summary dict."""
    from tqdm import tqdm

    from acr_ros.render import beside, draw_hands, robot_views

    name = source.name
    recorder = ResultsRecorder(backend)
    faces = faces_by_side(backend)
    views = robot_views(retargeter) if render and retargeter is not None else None  # robot hands beside
    video: Optional[VideoOutput] = None
    frames_dir: Optional[Path] = None
    outputs: list[Path] = []
    unwritten: list[Path] = []  # overlays cv2.imwrite refused (it returns False, it does not raise)
    if render and source.kind in ("video", "webcam", "folder"):
        video = VideoOutput(output_dir / f"{name}_output.mp4", source.fps or 30.0)
    if render and source.kind == "folder":
        frames_dir = output_dir / name
        frames_dir.mkdir(parents=True, exist_ok=True)
    total = source.length if max_frames is None else min(source.length or max_frames, max_frames)
    bar = None
    if not quiet and source.kind != "image":
        bar = tqdm(total=total, desc=name, unit="frame", disable=None)
    backend.static_image_mode = source.kind in ("image", "folder")  # track in videos, detect in every photo
    backend.reset()
    processor = _processor(backend, settings or Settings(), retargeter,
                           lambda message: print(f"acr_offline: {message}", file=sys.stderr))
    started = time.perf_counter()
    interrupted = False

    def frame_input(frame) -> FrameInput:
        metres, problem = depth.metres_for(frame) if depth is not None else (None, "")
        height, width = frame.image.shape[:2]
        return FrameInput(spec, round(frame.timestamp * 1e9), frame.image, intrinsics_for(width, height),
                          depth=metres, depth_expected=depth is not None, depth_problem=problem)

    def flush(batch):
        for frame, processed in zip(batch, processor.process([frame_input(frame) for frame in batch])):
            if processed is None:
                continue  # counted and said by the processor
            result = processed.result
            h, w = frame.image.shape[:2]
            recorder.add(frame.name, frame.timestamp, w, h, result, processed.robot_joints)
            if render:
                overlay = draw_hands(frame.image, result, faces)
                if views is not None:
                    overlay = beside(overlay, views, _robot_frames(retargeter, processed))
                if video is not None:
                    video.write(overlay)
                if frames_dir is not None or source.kind == "image":
                    path = (frames_dir / f"{frame.name}_output.jpg" if frames_dir is not None
                            else output_dir / f"{name}_output.jpg")
                    if not cv2.imwrite(str(path), overlay):
                        unwritten.append(path)
                    elif frames_dir is None:
                        outputs.append(path)
        if bar is not None:
            bar.update(len(batch))

    try:
        batch = []
        count = 0
        for frame in source:
            batch.append(frame)
            count += 1
            if len(batch) >= max(1, batch_size) or source.kind == "webcam":
                flush(batch)
                batch = []
            if max_frames is not None and count >= max_frames:
                break
        if batch:
            flush(batch)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        source.close()
        if video is not None:
            video.close()
            if video.frames:
                outputs.append(video.path)
        if frames_dir is not None and len(unwritten) < recorder.num_frames:
            outputs.append(frames_dir)
    elapsed = time.perf_counter() - started
    if recorder.num_frames or not source.unreadable:  # an unreadable image leaves no empty results
        outputs.append(recorder.save(output_dir / f"{name}_results.npz"))
    _warn_counts(processor.counters, lambda message: print(f"acr_offline: warning: {message}", file=sys.stderr),
                 f"{spec}: ")
    problems = [f"{unwritten[0]}" + (f" and {len(unwritten) - 1} more overlay(s)" if len(unwritten) > 1 else "")
                + ": cannot write the overlay (a folder in the way, no space or no permission)"] if unwritten else []
    failed = processor.counters.get("inference_errors")
    if failed:  # said as it happened; the run did not do all it was asked
        problems.append(f"{spec}: {failed} frame(s) not processed: {processor.counters.reason('inference_errors')}")
    return {"input": spec, "name": name, "frames": recorder.num_frames, "hands": recorder.num_hands,
            "seconds": elapsed, "outputs": outputs, "interrupted": interrupted, "unreadable": source.unreadable,
            "problems": problems}


def missing_inputs(inputs: list[str]) -> list[str]:
    """The inputs that are neither a webcam id nor an existing file or folder (checked before any
    model loads, so a typo fails at once)."""
    return [spec for spec in inputs if not str(spec).strip().isdigit() and not Path(spec).expanduser().exists()]


def argument_problem(args) -> Optional[str]:
    """What is wrong with the numeric options, one line, or None (checked before any model loads)."""
    positive = {"--fps": args.fps, "--batch-size": args.batch_size, "--max-frames": args.max_frames,
                "--depth-scale": args.depth_scale}
    for option, value in positive.items():
        if value is not None and not (np.isfinite(value) and value > 0):
            return f"{option} {value:g}: must be a positive number"
    if args.threshold is not None and not np.isfinite(args.threshold):
        return f"--threshold {args.threshold:g}: must be a finite number"
    return None


def check_output_folder(folder: Path) -> None:
    """Creates the output folder when missing; raises ValueError (one line) when outputs cannot be
    written there. Checked before any model loads, by creating a file in it: only that tells for
    certain (permissions aside, a read-only file system or a path below a file stop even root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"-o {folder}: cannot write there ({error.strerror or error}): choose another output "
                         "folder") from None


def camera_intrinsics(args) -> IntrinsicsFor:
    """The intrinsics for each image size from --calibration or --intrinsics; without either,
    None (the backend's default camera). Raises ValueError (one line) for a calibration file or
    --intrinsics that is no camera."""
    if args.calibration:
        calibration = load_calibration(args.calibration)
        return calibration.intrinsics_for
    if args.intrinsics:
        fx, fy, cx, cy = args.intrinsics
        k = CameraIntrinsics.from_k((fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0))  # the node's check of a K
        if k is None:
            raise ValueError(f"--intrinsics {' '.join(f'{v:g}' for v in args.intrinsics)}: not a camera (FX and FY "
                             "must be positive, all four finite, in pixels): give the calibrated values or leave "
                             "--intrinsics out")
        return lambda width, height: k
    return lambda width, height: None


# ---- recordings -------------------------------------------------------------------------------------
_END = object()  # closes a queue of the recording pipeline


@contextmanager
def _stop_on_interrupt():
    """An Event set by the first Ctrl-C (the run stops after the batch in flight and writes what is
    done); a second Ctrl-C raises KeyboardInterrupt as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _put(box: queue.Queue, item, give_up: Callable[[], bool]) -> bool:
    """Puts item into a bounded queue, waiting for room unless give_up() says the consumer is gone."""
    while not give_up():
        try:
            box.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def process_recording(backend, spec: str, output_dir: Path, *, image_topic: Optional[str] = None,
                      camera_info_topic: Optional[str] = None, depth_topic: Optional[str] = None,
                      settings: Optional[Settings] = None, copy_inputs: bool = False, bag_overlay: bool = False,
                      render: bool = True, intrinsics_for: Optional[IntrinsicsFor] = None, batch_size: int = 1,
                      max_frames: Optional[int] = None, quiet: bool = False,
                      retargeter=None) -> dict:
    """Every frame of a recording's image topic, in order, into NAME_hands/ (an MCAP bag),
    NAME_results.npz and NAME_output.mp4; returns a summary dict ("problems": what failed).
    intrinsics_for (--calibration, --intrinsics) overrides the recorded camera_info. With a depth
    topic, each hand is placed on the depth image of its frame's stamp (acr_ros.acr.depth.fuse_hand).

    Three stages overlap: a thread reads, converts and pairs the images, this thread runs the
    backend on batches of batch_size frames, a thread writes. The queues between them keep the
    recording's order, so the outputs do not depend on timing. Raises RecordingError (one line
    naming the file) when the recording or its topics are unusable.
    """
    from tqdm import tqdm

    from acr_ros.recordings import HandsBag, InputMessage, Recording, RecordedFrame, read_frames
    from acr_ros.render import beside, draw_hands, robot_views

    def warn(message: str) -> None:
        tqdm.write(f"acr_offline: {message}", file=sys.stderr)

    settings = settings or Settings()
    recording = Recording(spec)
    for note in recording.notes:  # before choosing topics: damage may be why one is missing
        warn(note)
    try:
        selection = recording.select(image_topic, camera_info_topic, copy_inputs, depth_topic)
        name = recording.name
        faces = faces_by_side(backend)
        bag = HandsBag(output_dir / f"{name}_hands", recording, selection, faces, overlay=bag_overlay,
                       retarget_sides=settings.retarget.sides if retargeter is not None else ())
    except BaseException:
        recording.close()
        raise
    if selection.camera_info is None and intrinsics_for is None:
        warn(f"{recording.path}: no camera_info for {selection.image.name}: the default intrinsics are used, "
             "depth is approximate (--camera-info-topic, --calibration or --intrinsics to give them)")
    for skipped in bag.skipped:
        warn(f"{recording.path}: not copied: {skipped}")
    recorder = ResultsRecorder(backend)
    video = (VideoOutput(output_dir / f"{name}_output.mp4", recording.frame_rate(selection.image) or 30.0)
             if render else None)
    total = selection.image.count or None
    if max_frames is not None:
        total = min(total or max_frames, max_frames)
    bar = tqdm(total=total, desc=name, unit="frame", disable=True if quiet else None)
    unusable: dict[str, int] = {}       # reason -> frames
    backend.static_image_mode = False  # a recording is a video: track
    backend.reset()
    processor = _processor(backend, settings, retargeter, warn)
    outputs = HandOutputs(backend, faces)
    views = robot_views(retargeter) if video is not None and retargeter is not None else None

    def infer(frames: list) -> list:
        """The frame processor on a batch. Here, not in the writer: the next batch depends on its tracks."""
        for frame, processed in zip(frames, processor.process([frame.input for frame in frames])):
            frame.processed = processed
        return frames

    def robot_frames(frames: list) -> dict:
        """Frame index -> its robot hands' link poses (_robot_frames), for the video, which the writer draws."""
        if views is None:
            return {}
        return {frame.index: _robot_frames(retargeter, frame.processed) for frame in frames
                if frame.processed is not None}

    def write(segment: list, robots: dict) -> None:
        for item in segment:
            if isinstance(item, InputMessage):
                bag.copy(item)
                continue
            if item.problem or item.processed is None:
                problem = item.problem or "inference failed (see above)"
                if problem not in unusable:
                    warn(f"{recording.path}: image {item.index} on {selection.image.name} is unusable: {problem}")
                unusable[problem] = unusable.get(problem, 0) + 1
                bar.update(1)
                continue
            frame, result = item.input, item.processed.result
            overlay = draw_hands(frame.image, result, faces) if video is not None or bag_overlay else None
            bag.add(item.time, frame.header, outputs.build(item.processed, settings.outputs, points_as_arrays=True),
                    overlay)
            height, width = frame.image.shape[:2]
            recorder.add(f"{name}_{item.index:06d}", frame.timestamp, width, height, result,
                         item.processed.robot_joints)
            if video is not None:
                video.write(overlay if views is None else beside(overlay, views, robots[item.index]))
            bar.update(1)

    inbox: queue.Queue = queue.Queue(maxsize=4 * batch_size + 64)
    outbox: queue.Queue = queue.Queue(maxsize=2)
    halt = threading.Event()
    failures: list[BaseException] = []  # raised in the threads (bugs, not bad data)

    def read() -> None:
        try:
            for item in read_frames(recording, selection, max_frames, settings.decode, warn=warn):
                if intrinsics_for is not None and isinstance(item, RecordedFrame) and item.input is not None:
                    item.input.intrinsics = intrinsics_for(item.input.image.shape[1], item.input.image.shape[0])
                if not _put(inbox, item, halt.is_set):
                    return
        except BaseException as error:
            failures.append(error)
        finally:
            _put(inbox, _END, halt.is_set)

    def write_all() -> None:
        try:
            while (job := outbox.get()) is not _END:
                write(*job)
        except BaseException as error:
            failures.append(error)

    reader = threading.Thread(target=read, name=f"{name}_read", daemon=True)
    writer = threading.Thread(target=write_all, name=f"{name}_write", daemon=True)
    started = time.perf_counter()
    finished = interrupted = False
    with _stop_on_interrupt() as stop:
        reader.start()
        writer.start()
        try:
            segment, frames = [], []  # items in record order since the last batch; its usable frames
            while not stop.is_set() and not failures:
                try:
                    item = inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is not _END:
                    segment.append(item)
                    if isinstance(item, RecordedFrame) and item.input is not None:
                        frames.append(item)
                if len(frames) >= max(1, batch_size) or (item is _END and segment):
                    robots = robot_frames(infer(frames) if frames else [])
                    _put(outbox, (segment, robots), lambda: not writer.is_alive())
                    segment, frames = [], []
                if item is _END:
                    finished = True
                    break
            interrupted = not finished and stop.is_set()
        except KeyboardInterrupt:  # the second Ctrl-C: the batch in flight is lost
            interrupted = True
        finally:
            halt.set()
            _put(outbox, _END, lambda: not writer.is_alive())
            writer.join()
            reader.join()
            bar.close()
            if video is not None:
                video.close()
            bag.close()
            recording.close()
    if failures:
        raise failures[0]
    _warn_counts(processor.counters, warn, f"{recording.path}: ")
    elapsed = time.perf_counter() - started
    written = [bag.path] + ([video.path] if video is not None and video.frames else [])
    written.append(recorder.save(output_dir / f"{name}_results.npz"))
    problems = [f"{recording.path}: {count} unusable image(s) skipped: {reason}" for reason, count in unusable.items()]
    if recording.damage:
        problems.append(recording.damage)
    return {"input": spec, "name": name, "frames": recorder.num_frames, "hands": recorder.num_hands,
            "seconds": elapsed, "outputs": written, "interrupted": interrupted, "problems": problems}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt_once(number, frame):
    """SIGINT and SIGTERM stop the run as Ctrl-C does (the input in progress is saved); any later one
    is ignored, so that neither the saving nor the interpreter's exit is cut short (Python puts
    handled signals back to their default action when it exits, but leaves ignored ones ignored)."""
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv=None) -> int:
    previous = {number: signal.signal(number, interrupt_once) for number in STOP_SIGNALS}
    try:
        return run(argv)
    except KeyboardInterrupt:  # outside an input's processing (which saves what it did and ends)
        print("acr_offline: stopped", file=sys.stderr)
        return 130
    finally:
        if signal.getsignal(signal.SIGINT) is interrupt_once:  # not stopped: callers get theirs back
            for number, handler in previous.items():
                signal.signal(number, handler)


def run(argv=None) -> int:
    args = parse_args(argv)
    from acr_ros.acr.one_euro import SmoothingConfig
    from acr_ros.backends import create_backend

    inputs = [str(spec) for spec in args.inputs or default_inputs()]
    status = 0
    for spec in missing_inputs(inputs):
        print(f"acr_offline: skipping {spec}: no such file or folder", file=sys.stderr)
        inputs.remove(spec)
        status = 1
    if not inputs:
        print("acr_offline: no input to process", file=sys.stderr)
        return 2
    try:
        values = (parameters.read_parameters_file(args.params_file) if args.params_file
                  else {param.name: param.default for param in parameters.PARAMS})
    except ValueError as error:
        print(f"acr_offline: --params-file {error}", file=sys.stderr)
        return 2
    problem = argument_problem(args)
    if problem:
        print(f"acr_offline: {problem}", file=sys.stderr)
        return 2
    if args.retarget is not None:
        values = {**values, "retarget.robot": args.retarget, "retarget.type": args.retarget_type,
                  "retarget.urdf_dir": args.urdf_dir or values["retarget.urdf_dir"]}
    settings = Settings.from_parameters(values, args.depth_scale)
    retargeter = None
    if settings.retarget is not None:
        from acr_ros.retargeting import HandRetargeter

        try:
            retargeter = HandRetargeter.create(settings.retarget)
        except ValueError as error:
            print(f"acr_offline: --retarget: {error}", file=sys.stderr)
            return 2
    try:
        depth = DepthFolder(args.depth, settings.decode.depth_millimetres_per_unit) if args.depth else None
    except ValueError as error:  # not a folder, no depth images in it
        print(f"acr_offline: {error}", file=sys.stderr)
        return 2
    recordings = [spec for spec in inputs if is_recording(spec)]
    if args.depth is not None and recordings:
        print(f"acr_offline: --depth applies to image, folder and video inputs, not to recordings "
              f"({', '.join(recordings)}): give their aligned depth topic with --depth-topic", file=sys.stderr)
    try:
        options = EngineOptions(device=args.device, precision=args.precision, runtime=args.runtime,
                                onnx_providers=args.onnx_providers)
        intrinsics_for = camera_intrinsics(args)
        given_intrinsics = intrinsics_for if args.calibration or args.intrinsics else None
        check_output_folder(args.output_dir)  # the last check: a refusal above leaves no folder behind
        backend, reason = create_backend(
            args.backend, checkpoint=args.checkpoint, mano_dir=args.mano_dir, options=options,
            detection_threshold=args.threshold, smoothing=SmoothingConfig() if args.temporal else None,
            tune_process=True, names={"checkpoint": "--checkpoint", "mano_dir": "--mano-dir"})
    except (ValueError, ImportError) as error:
        print(f"acr_offline: {error}", file=sys.stderr)
        return 2
    if recordings:
        from acr_ros.acr.runtime import tune_cpu_allocator

        tune_cpu_allocator()  # recorded images are megabytes each: heap, not an mmap and page faults per image
    print(f"backend: {backend.name} ({reason}); model {backend.model}"
          + (f", weights {backend.checkpoint}" if backend.checkpoint else ""))
    if args.temporal:
        print("temporal smoothing: on (One-Euro, per hand side)")
    # Once the run goes ahead (a refusal is one line). Recordings carry their camera_info: no warning
    # when they are all the inputs.
    if given_intrinsics is None and len(recordings) < len(inputs):
        print("acr_offline: warning: no camera intrinsics (--calibration or --intrinsics): hands are placed with "
              "ACR's default focal length and distances can be off by a large factor", file=sys.stderr)
    # Whether any input could run, else exit code 2. A recording's own problems (damage, topics) are
    # the documented code 1, whatever was read of it.
    ran = False
    for spec in inputs:
        if spec in recordings:
            from acr_ros.recordings import RecordingError

            ran = True
            try:
                summary = process_recording(
                    backend, spec, args.output_dir, image_topic=args.image_topic,
                    camera_info_topic=args.camera_info_topic, depth_topic=args.depth_topic,
                    settings=settings, retargeter=retargeter, copy_inputs=args.copy_inputs,
                    bag_overlay=args.bag_overlay, render=not args.no_render, intrinsics_for=given_intrinsics,
                    batch_size=args.batch_size, max_frames=args.max_frames, quiet=args.quiet)
            except (RecordingError, CalibrationError) as error:  # names the file and what is wrong
                print(f"acr_offline: {error}", file=sys.stderr)
                status = 1
                continue
        else:
            try:
                source = open_media(spec, folder_fps=args.fps, max_frames=args.max_frames)
            except (OSError, ValueError) as error:
                print(f"acr_offline: skipping {spec}: {error}", file=sys.stderr)
                status = 1
                continue
            try:
                summary = process_input(backend, source, str(spec), args.output_dir, not args.no_render,
                                        intrinsics_for, args.batch_size, args.max_frames, args.quiet, depth, settings,
                                        retargeter)
            except CalibrationError as error:  # a calibration for another aspect ratio
                print(f"acr_offline: skipping {spec}: {error}", file=sys.stderr)
                status = 1
                continue
            except OSError as error:  # an output in the way (a file named as the folder of overlays), disk full
                print(f"acr_offline: skipping {spec}: cannot write {error.filename or 'its outputs'}: "
                      f"{error.strerror or error}", file=sys.stderr)
                status = 1
                continue
            ran = ran or summary["frames"] > 0
        for path in summary.get("unreadable", ()):
            print(f"acr_offline: skipping {path}: cannot read it as an image (empty, corrupt or not an image)",
                  file=sys.stderr)
            status = 1
        rate = summary["frames"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
        unreadable = f", {len(summary['unreadable'])} unreadable" if summary.get("unreadable") else ""
        print(f"{summary['name']}: {summary['frames']} frame(s){unreadable}, {summary['hands']} hand(s), "
              f"{rate:.1f} frames/s" + (" (interrupted)" if summary["interrupted"] else ""))
        for path in summary["outputs"]:
            print(f"  {path}")
        for problem in summary.get("problems", ()):
            print(f"acr_offline: {problem}", file=sys.stderr)
            status = 1
        if summary["interrupted"]:
            status = 130
            break
    backend.close()
    if not ran and status != 130:
        print("acr_offline: no input could run", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
