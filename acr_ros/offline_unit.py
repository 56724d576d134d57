"""One input of acr_offline, from its file to its outputs: the unit of work that a local run does for
each input in turn and a Ray worker (acr_ros.cluster) does for the inputs it is given, with the
same code. The outputs and the results format are described in acr_ros.offline's documentation.

RunContext holds what every input of a run shares (made once per process from the command line),
load_backend makes the backend, process_spec runs one input and returns its summary, report says
it on the terminal.
"""
from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from acr_ros.acr.depth import depth_image_to_metres
from acr_ros.acr.hands import NUM_JOINTS, NUM_VERTICES, CameraIntrinsics, FrameResult, rotation_to_quaternion
from acr_ros.acr.options import EngineOptions
from acr_ros.backends import acr_files_problem, faces_by_side
from acr_ros.calibration import CalibrationError, load_calibration
from acr_ros.frame_inputs import DecodeSettings
from acr_ros.frame_processor import FrameInput, FrameProcessor
from acr_ros.hand_outputs import HandOutputs, OutputSettings
from acr_ros.node import parameters
from acr_ros.retargeting import RetargetSettings
from acr_ros.media import MediaSource, is_recording, natural_key, open_media

Progress = Callable[[int], None]  # called with the number of frames just done


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
    """Collects FrameResults of one input and writes NAME_results.npz (format: acr_ros.offline's documentation)."""

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
                  retargeter=None, progress: Optional[Progress] = None) -> dict:
    """Runs one input through the frame processor (hands placed with the aligned depth images when
    ``depth`` is given); writes its outputs; returns a summary dict. progress: told the frames done."""
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
            overlay = None
            if render:
                overlay = draw_hands(frame.image, result, faces)
                if views is not None:
                    overlay = beside(overlay, views, _robot_frames(retargeter, processed))
            with _stop_signals_held():  # a frame is in the results and the overlays, or in neither
                recorder.add(frame.name, frame.timestamp, w, h, result, processed.robot_joints)
                if video is not None:
                    video.write(overlay)
                if overlay is not None and (frames_dir is not None or source.kind == "image"):
                    path = (frames_dir / f"{frame.name}_output.jpg" if frames_dir is not None
                            else output_dir / f"{name}_output.jpg")
                    if not cv2.imwrite(str(path), overlay):
                        unwritten.append(path)
                    elif frames_dir is None:
                        outputs.append(path)
        if bar is not None:
            bar.update(len(batch))
        if progress is not None:
            progress(len(batch))

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
def _stop_signals_held():
    """SIGINT and SIGTERM that arrive inside take effect at its end (their handler runs then): what is
    written inside is written whole. Off the main thread (a Ray worker) signals never reach it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {number: signal.signal(number, lambda number, frame: held.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if held and callable(previous[held[0]]):
            previous[held[0]](held[0], None)


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
                      retargeter=None, progress: Optional[Progress] = None) -> dict:
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

    def frame_done() -> None:
        bar.update(1)
        if progress is not None:
            progress(1)
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
                frame_done()
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
            frame_done()

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



# ---- one run, one input ---------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What every input of a run shares, made from the command line once per process (the local run,
    each Ray worker). create raises ValueError, one line naming the option, for what is refused."""

    args: argparse.Namespace
    settings: Settings
    retargeter: object                       # HandRetargeter, or None
    depth: Optional[DepthFolder]
    intrinsics_for: IntrinsicsFor            # for images, folders and videos
    given_intrinsics: Optional[IntrinsicsFor]  # --calibration or --intrinsics: recordings' override

    @classmethod
    def create(cls, args: argparse.Namespace) -> "RunContext":
        try:
            values = (parameters.read_parameters_file(args.params_file) if args.params_file
                      else {param.name: param.default for param in parameters.PARAMS})
        except ValueError as error:
            raise ValueError(f"--params-file {error}") from None
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
                raise ValueError(f"--retarget: {error}") from None
        # not a folder, no depth images in it
        depth = DepthFolder(args.depth, settings.decode.depth_millimetres_per_unit) if args.depth else None
        intrinsics_for = camera_intrinsics(args)
        given = intrinsics_for if args.calibration or args.intrinsics else None
        return cls(args, settings, retargeter, depth, intrinsics_for, given)


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options of the command line; ValueError (one line) for an unknown --device."""
    return EngineOptions(device=args.device, precision=args.precision, runtime=args.runtime,
                         onnx_providers=args.onnx_providers)


OPTION_NAMES = {"checkpoint": "--checkpoint", "mano_dir": "--mano-dir"}


def model_files_problem(args: argparse.Namespace) -> Optional[str]:
    """What load_backend would refuse about the ACR files (one line), without loading them; None when
    they exist or the embedded backend runs."""
    configured = bool(args.checkpoint.strip() or args.mano_dir.strip())
    if args.backend == "mediapipe" or (args.backend == "auto" and not configured):
        return None
    problem = acr_files_problem(args.checkpoint, args.mano_dir, OPTION_NAMES)
    return problem[1] if problem else None


def load_backend(args: argparse.Namespace, options: EngineOptions):
    """(backend, why it was chosen). With --threads, the CPU threads of this process's network and OpenCV
    first. Raises ValueError or ImportError (one line) when it cannot be made."""
    from acr_ros.acr.one_euro import SmoothingConfig
    from acr_ros.backends import create_backend

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    return create_backend(
        args.backend, checkpoint=args.checkpoint, mano_dir=args.mano_dir, options=options,
        detection_threshold=args.threshold, smoothing=SmoothingConfig() if args.temporal else None,
        tune_process=True, names=OPTION_NAMES)


def input_name(spec: str) -> str:
    """The NAME of an input's outputs (NAME_results.npz, ...), as process_spec will name them."""
    if str(spec).strip().isdigit():
        return f"webcam{int(spec)}"
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve().name or ("recording" if is_recording(spec) else "folder")
    return path.stem


def input_frames(spec: str, args: argparse.Namespace) -> int:
    """How many frames an input has (0 when unknown or unreadable: process_spec will say why), read from
    the recording's index, the video's header or the folder's listing without decoding."""
    try:
        if is_recording(spec):
            from acr_ros.recordings import Recording

            recording = Recording(spec)
            try:
                count = recording.select(args.image_topic, args.camera_info_topic).image.count
            finally:
                recording.close()
        else:
            with open_media(spec, folder_fps=args.fps, max_frames=args.max_frames) as source:
                count = source.length or 0
    except Exception:  # noqa: BLE001 - a damaged input is processed (and reported) like any other
        return 0
    return min(count, args.max_frames) if args.max_frames else count


def _failed(spec: str, problem: str, ran: bool = False) -> dict:
    """The summary of an input that could not be opened or processed (nothing written)."""
    return {"input": spec, "name": input_name(spec), "frames": 0, "hands": 0, "seconds": 0.0, "outputs": [],
            "interrupted": False, "unreadable": [], "problems": [problem], "ran": ran, "opened": False}


def process_spec(backend, spec: str, context: RunContext, output_dir: Path,
                 progress: Optional[Progress] = None) -> dict:
    """One input (recording, image, folder, video or webcam) into output_dir; its summary: input,
    name, frames, hands, seconds, outputs, interrupted, unreadable, problems (one line each, what was
    wrong: the exit code's 1), ran (whether the input could run at all: the exit code's 2) and opened
    (False: it could not be opened or its processing failed; nothing was written)."""
    args = context.args
    if is_recording(spec):
        from acr_ros.recordings import RecordingError

        try:
            summary = process_recording(
                backend, spec, output_dir, image_topic=args.image_topic,
                camera_info_topic=args.camera_info_topic, depth_topic=args.depth_topic,
                settings=context.settings, retargeter=context.retargeter, copy_inputs=args.copy_inputs,
                bag_overlay=args.bag_overlay, render=not args.no_render, intrinsics_for=context.given_intrinsics,
                batch_size=args.batch_size, max_frames=args.max_frames, quiet=args.quiet, progress=progress)
        except (RecordingError, CalibrationError) as error:  # names the file and what is wrong
            return _failed(spec, str(error), ran=True)  # a recording's own problem: code 1, not 2
        return {**summary, "unreadable": [], "ran": True, "opened": True}
    try:
        source = open_media(spec, folder_fps=args.fps, max_frames=args.max_frames)
    except (OSError, ValueError) as error:
        return _failed(spec, f"skipping {spec}: {error}")
    try:
        summary = process_input(backend, source, str(spec), output_dir, not args.no_render, context.intrinsics_for,
                                args.batch_size, args.max_frames, args.quiet, context.depth, context.settings,
                                context.retargeter, progress=progress)
    except CalibrationError as error:  # a calibration for another aspect ratio
        return _failed(spec, f"skipping {spec}: {error}")
    except OSError as error:  # an output in the way (a file named as the folder of overlays), disk full
        return _failed(spec, f"skipping {spec}: cannot write {error.filename or 'its outputs'}: "
                             f"{error.strerror or error}")
    unreadable = [f"skipping {path}: cannot read it as an image (empty, corrupt or not an image)"
                  for path in summary["unreadable"]]
    return {**summary, "problems": unreadable + summary["problems"], "ran": summary["frames"] > 0, "opened": True}


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def report(summary: dict, say: Callable[[str], None] = print, warn: Callable[[str], None] = _to_stderr) -> int:
    """Says an input's summary (its line and outputs with say, its problems with warn: stderr); its exit
    code: 0, 1 when it had problems, 130 when it was interrupted."""
    if summary["opened"]:
        rate = summary["frames"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
        unreadable = f", {len(summary['unreadable'])} unreadable" if summary.get("unreadable") else ""
        say(f"{summary['name']}: {summary['frames']} frame(s){unreadable}, {summary['hands']} hand(s), "
            f"{rate:.1f} frames/s" + (" (interrupted)" if summary["interrupted"] else ""))
        for path in summary["outputs"]:
            say(f"  {path}")
    for problem in summary["problems"]:
        warn(f"acr_offline: {problem}")
    return 130 if summary["interrupted"] else 1 if summary["problems"] else 0
