"""acr_ros.frame_processor without ROS: what the node and acr_offline both do to a decoded frame."""
import numpy as np

from acr_ros.acr.hands import DEPTH_FROM_MODEL, DEPTH_FROM_SENSOR, LEFT, CameraIntrinsics, FrameResult
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.frame_processor import FrameInput, FrameProcessor
from support.fake_backend import FakeBackend
from support.hands import make_hand
from support.ros_harness import magic_bgr

SECOND = 1_000_000_000
K = CameraIntrinsics(500.0, 500.0, 320.0, 180.0)


def frame(stamp_ns: int, camera="cam0", **fields) -> FrameInput:
    return FrameInput(camera, stamp_ns, magic_bgr(), K, **fields)


def test_timestamps_are_the_stamps_seconds_as_the_messages_give_them():
    assert frame(1_690_000_000 * SECOND + 100_000_000).timestamp == 1_690_000_000 + 100_000_000 * 1e-9


def test_a_gap_ends_the_tracks_before_inference_and_ids_keep_counting():
    backend = FakeBackend()
    processor = FrameProcessor(backend, track_timeout=2.0)
    first = processor.process([frame(0), frame(SECOND // 10)])
    assert [p.tracks[LEFT].id for p in first] == [1, 1] and first[1].tracks[LEFT].frames == 2
    processor.process([frame(3 * SECOND)])  # 2.9 s later: the track ends first, its smoothing restarts
    assert backend.reset_sides == [("cam0", LEFT)] and len(backend.batches) == 2
    assert processor.process([frame(3 * SECOND + SECOND // 10)])[0].tracks[LEFT].id == 2
    processor.process([frame(3 * SECOND + SECOND // 5, camera="cam1")])  # another camera: its own track
    assert processor.tracker.update("cam1", 4 * SECOND, [LEFT]).tracks[LEFT].id == 3


def test_hands_with_nan_are_left_out_and_one_hand_per_side_is_kept():
    strong, weak, broken = (make_hand(LEFT, score=score) for score in (0.9, 0.5, 0.99))
    broken.joints[2, 1] = np.nan
    backend = FakeBackend()
    backend.reconstruct = lambda **batch: [FrameResult([weak, strong, broken], False, K)]
    processor = FrameProcessor(backend)
    processed = processor.process([frame(0)])[0]
    assert processed.result.hands == [strong]
    assert processor.counters.get("non_finite_hands") == 1


def test_depth_places_the_hands_and_its_time_counts_whether_or_not_it_could():
    processor = FrameProcessor(FakeBackend())
    near = np.full((360, 640), 0.4, np.float32)
    placed = processor.process([frame(0, depth=near, depth_expected=True)])[0]
    assert placed.result.hands[0].depth_source == DEPTH_FROM_SENSOR
    unmeasured = np.full((360, 640), np.nan, np.float32)  # no valid sample under the hand
    kept = processor.process([frame(SECOND // 10, depth=unmeasured, depth_expected=True)])[0]
    assert kept.result.hands[0].depth_source == DEPTH_FROM_MODEL
    assert processor.counters.get("depth_unplaced") == 1 and processor.counters.reason("depth_unplaced")
    latency = processor.stage_latency["fusion"]
    assert len(latency) == 2  # both timed


def test_frames_without_usable_depth_are_counted_and_said():
    warnings = []
    processor = FrameProcessor(FakeBackend(), warn=lambda kind, message: warnings.append(kind))
    processor.process([frame(0, depth_expected=True), frame(1, depth_expected=True, depth_problem="320x180"),
                       frame(2)])  # a camera without depth: nothing to count
    assert processor.counters.get("depth_unpaired") == 1
    assert processor.counters.get("bad_depth") == 1 and processor.counters.reason("bad_depth") == "320x180"
    assert warnings == ["bad_depth"]


def test_smoothing_changes_apply_before_the_next_batch_and_reset_forgets_the_tracks():
    backend = FakeBackend()
    processor = FrameProcessor(backend)
    processor.process([frame(0)])
    processor.set_smoothing(SmoothingConfig())
    assert backend.smoothing == []  # not while a batch may run
    processor.process([frame(SECOND // 10)])
    assert backend.smoothing == [SmoothingConfig()]
    processor.reset()
    assert processor.process([frame(SECOND // 5)])[0].tracks[LEFT].frames == 1


class RecordingRetargeter:
    """Stands in for acr_ros.retargeting.HandRetargeter: records what the processor asks of it."""

    def __init__(self):
        self.calls = []

    def retarget(self, side, joints, stamp_ns, new_track):
        from acr_ros.retargeting import RobotJoints

        if not np.isfinite(joints).all():
            raise ValueError("the hand has non-finite joints")
        self.calls.append((side, stamp_ns, new_track))
        return RobotJoints(side, (f"{side}_a",), np.array([0.1]), residual=0.5, seconds=0.001)


def test_each_tracked_side_gets_a_joint_command_and_a_new_track_starts_afresh():
    retargeter = RecordingRetargeter()
    processor = FrameProcessor(FakeBackend(), track_timeout=2.0)
    processor.retargeter, processor.retarget_sides = retargeter, ("left",)
    stamps = [0, SECOND // 10, 3 * SECOND]  # the gap ends the track: the robot starts from neutral again
    commands = [processor.process([frame(stamp)])[0].robot_joints for stamp in stamps]
    assert retargeter.calls == [("left", 0, True), ("left", SECOND // 10, False), ("left", 3 * SECOND, True)]
    assert all(set(command) == {"left"} for command in commands)
    assert processor.retarget_residual["left"] == 0.5 and len(processor.retarget_latency["left"]) == 3
    processor.retarget_sides = ("right",)  # a side not retargeted: no command
    assert processor.process([frame(3 * SECOND + SECOND // 10)])[0].robot_joints == {}


def test_no_hand_no_command_and_a_refused_hand_is_counted():
    retargeter = RecordingRetargeter()
    backend = FakeBackend()
    processor = FrameProcessor(backend)
    processor.retargeter, processor.retarget_sides = retargeter, ("left", "right")
    blank = FrameInput("cam0", 0, np.full((360, 640, 3), 200, np.uint8), K)  # one colour: the fake finds no hand
    assert processor.process([blank])[0].robot_joints == {} and retargeter.calls == []
    backend.reconstruct = lambda **batch: [FrameResult([make_hand(LEFT)], False, K)]
    retargeter.retarget = lambda *args, **kwargs: (_ for _ in ()).throw(ValueError("joint limits unknown"))
    assert processor.process([frame(SECOND)])[0].robot_joints == {}
    assert processor.counters.get("retarget_errors") == 1
    # The optimiser's own failure (nlopt raises its own exceptions) costs the command, not the hands.
    retargeter.retarget = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("nlopt roundoff limited"))
    processed = processor.process([frame(SECOND + SECOND // 10)])[0]
    assert processed.robot_joints == {} and processed.result.hands
    assert processor.counters.reason("retarget_errors") == "RuntimeError: nlopt roundoff limited"
