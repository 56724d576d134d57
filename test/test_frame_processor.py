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
