"""What happens to a frame between decoding and publishing, once for the node and acr_offline. No ROS.

    processor = FrameProcessor(backend, track_timeout=2.0, warn=print_warning)
    for processed in processor.process(frames):      # frames: list[FrameInput], one batch
        ...                                          # None where inference failed

For a batch of decoded frames (each with its camera, stamp, intrinsics and optional aligned depth):
1. a camera silent for longer than the track timeout ends its hand tracks first, so that their
   smoothing restarts with this frame;
2. one forward pass of the backend for the whole batch (out of accelerator memory: retried in
   halves; a frame that still fails is counted, never raised);
3. per frame: hands with NaN/Inf left out, at most one per side (the strongest);
4. with a depth image, each hand placed on it (acr_ros.acr.depth.fuse_hand);
5. hand tracks per camera and side (acr_ros.tracks); a track that ends restarts its side's smoothing;
6. with a retargeter (acr_ros.retargeting), robot-hand joint commands for each tracked side; a new
   track starts the robot from its neutral pose.

Everything counted goes to ``counters`` (the node reports them on /diagnostics, acr_offline in its
summary) and every fallback that changes results to ``warn(kind, message)``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Hashable, Optional

import numpy as np

from acr_ros.acr.depth import fuse_hand
from acr_ros.acr.hands import SIDES, CameraIntrinsics, FrameResult, one_per_side
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.backends.base import BackendOutOfMemoryError
from acr_ros.diagnostics import Counters, LatencyStats
from acr_ros.tracks import HandTracker, Track

if TYPE_CHECKING:  # the retargeting stage is optional: dex-retargeting is imported only when it runs
    from acr_ros.retargeting import RobotJoints


@dataclass
class FrameInput:
    """One decoded frame (acr_ros.frame_inputs.decode_frame makes them from messages)."""

    camera: Hashable                 # the stream: tracks and smoothing are kept per camera
    stamp_ns: int                    # the image's stamp
    image: np.ndarray                # BGR uint8 (H, W, 3)
    intrinsics: Optional[CameraIntrinsics]  # None: the backend's default camera
    header: object = None            # the image's std_msgs/Header: every output's stamp and frame_id
    depth: Optional[np.ndarray] = None      # (H, W) metres of the aligned depth image, NaN unmeasured
    depth_expected: bool = False     # the camera has a depth topic (a frame without depth is counted)
    depth_problem: str = ""          # why a paired depth image was not used
    intrinsics_problem: str = ""     # why intrinsics is None

    @property
    def timestamp(self) -> float:
        """Seconds, as sec + nanosec * 1e-9 (the node's and the recordings' results agree to the bit)."""
        sec, nanosec = divmod(self.stamp_ns, 1_000_000_000)
        return sec + nanosec * 1e-9


@dataclass
class ProcessedFrame:
    """A frame and what is published for it."""

    frame: FrameInput
    result: FrameResult                  # the published hands: finite, one per side, placed on depth
    tracks: dict[str, Track] = field(default_factory=dict)  # side -> track of each published hand
    robot_joints: dict[str, RobotJoints] = field(default_factory=dict)  # side -> joint command, retargeting on


Warn = Callable[[str, str], None]        # (kind, message)
_UNCHANGED = object()                    # no smoothing change pending


class FrameProcessor:
    STAGES = ("inference", "fusion", "retargeting")  # timed here; the node adds conversion and publish

    def __init__(self, backend, track_timeout: float = 2.0, warn: Warn = lambda kind, message: None):
        """backend: a HandBackend (acr_ros.backends); the node sets it at configure and clears it at cleanup,
        keeping the processor, so that track ids stay unique while the node lives."""
        self.backend = backend
        self.retargeter = None           # a HandRetargeter, set like the backend; None: retargeting off
        self.retarget_sides: tuple[str, ...] = ()
        self.retarget_latency = {side: LatencyStats() for side in SIDES}  # per side, for /diagnostics
        self.retarget_residual = {side: float("nan") for side in SIDES}  # the optimiser's last final cost
        self.tracker = HandTracker(track_timeout)
        self.warn = warn
        self.counters = Counters()
        self.stage_latency = {stage: LatencyStats() for stage in self.STAGES}
        self._smoothing = _UNCHANGED  # a pending SmoothingConfig, or None (off)
        self._lock = threading.Lock()

    @property
    def track_timeout(self) -> float:
        return self.tracker.timeout_s

    @track_timeout.setter
    def track_timeout(self, seconds: float) -> None:
        self.tracker.timeout_s = float(seconds)

    def set_smoothing(self, config: Optional[SmoothingConfig]) -> None:
        """Applied before the next batch (callable from any thread while one runs)."""
        with self._lock:
            self._smoothing = config

    def reset(self) -> None:
        """Ends every track and forgets the backend's temporal state (the node was deactivated)."""
        self.tracker.clear()
        self.backend.reset()

    def process(self, frames: list[FrameInput]) -> list[Optional[ProcessedFrame]]:
        with self._lock:
            smoothing, self._smoothing = self._smoothing, _UNCHANGED
        if smoothing is not _UNCHANGED:
            self.backend.set_smoothing(smoothing)
        for frame in frames:
            for track in self.tracker.expire(frame.camera, frame.stamp_ns):
                self.backend.reset_side(frame.camera, track.side)
        start = time.perf_counter()
        results = self._reconstruct(frames)
        self.stage_latency["inference"].add(time.perf_counter() - start)
        return [None if result is None else self._finish(frame, result) for frame, result in zip(frames, results)]

    def _reconstruct(self, frames: list[FrameInput]) -> list[Optional[FrameResult]]:
        try:
            return self.backend.reconstruct(images=[f.image for f in frames], intrinsics=[f.intrinsics for f in frames],
                                            timestamps=[f.timestamp for f in frames],
                                            streams=[f.camera for f in frames])
        except BackendOutOfMemoryError as error:
            if len(frames) == 1:
                return self._failed(frames, error)
            self.warn("out_of_memory", f"out of accelerator memory on {len(frames)} frames: retrying in halves")
            half = len(frames) // 2
            return self._reconstruct(frames[:half]) + self._reconstruct(frames[half:])
        except Exception as error:  # a failure never takes the caller down
            return self._failed(frames, error)

    def _failed(self, frames: list[FrameInput], error: Exception) -> list[None]:
        reason = f"{type(error).__name__}: {error}"
        self.counters.add("inference_errors", reason, amount=len(frames))
        self.warn("inference_errors", f"inference failed on {len(frames)} frame(s): {reason}")
        return [None] * len(frames)

    def _finish(self, frame: FrameInput, result: FrameResult) -> ProcessedFrame:
        finite = [hand for hand in result.hands if hand.is_finite()]
        if len(finite) < len(result.hands):
            self.counters.add("non_finite_hands", "a hand had NaN or Inf values", len(result.hands) - len(finite))
        # The published hands (one per side) are what the tracks follow; a side that is not
        # published ends its track, and that side's smoothing restarts.
        result.hands = one_per_side(finite)
        self._fuse_depth(frame, result)
        update = self.tracker.update(frame.camera, frame.stamp_ns, [hand.side for hand in result.hands])
        for track in update.ended:
            self.backend.reset_side(frame.camera, track.side)
        return ProcessedFrame(frame, result, update.tracks, self._retarget(frame, result, update.tracks))

    def _retarget(self, frame: FrameInput, result: FrameResult, tracks: dict[str, Track]) -> dict[str, RobotJoints]:
        """A joint command per tracked side that is retargeted; a lost hand commands nothing."""
        if self.retargeter is None:
            return {}
        start = time.perf_counter()
        commands = {}
        for hand in result.hands:
            if hand.side not in self.retarget_sides:
                continue
            try:
                command = self.retargeter.retarget(hand.side, hand.joints, frame.stamp_ns,
                                                   new_track=tracks[hand.side].frames == 1)
            except Exception as error:  # a hand it refuses, or the optimiser's own failure: the hands still go out
                self.counters.add("retarget_errors", f"{type(error).__name__}: {error}")
                self.warn("retarget_errors", f"no joint command for the {hand.side} hand: {error}")
                continue
            commands[hand.side] = command
            self.retarget_latency[hand.side].add(command.seconds)
            self.retarget_residual[hand.side] = command.residual
        if commands:
            self.stage_latency["retargeting"].add(time.perf_counter() - start)
        return commands

    def _fuse_depth(self, frame: FrameInput, result: FrameResult) -> None:
        """Without a usable depth image the model's placement stays, and each hand says so."""
        if frame.depth_problem:
            self.counters.add("bad_depth", frame.depth_problem)
            self.warn("bad_depth", f"a depth image of {frame.camera} was not used: {frame.depth_problem}")
            return
        if frame.depth is None or result.intrinsics is None:
            if frame.depth_expected:
                self.counters.add("depth_unpaired", f"no depth image near the stamp of a frame of {frame.camera}")
            return
        start = time.perf_counter()
        for hand in result.hands:
            fit = fuse_hand(hand, frame.depth, result.intrinsics)
            if not fit.used:
                self.counters.add("depth_unplaced", fit.reason)
        self.stage_latency["fusion"].add(time.perf_counter() - start)
