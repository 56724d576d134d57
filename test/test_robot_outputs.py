"""What teleoperation and grasping code consumes: hand tracks (id, first-seen stamp, consecutive
frames), a lost hand absent and never zeroed, per-side wrist PoseStamped topics a RELIABLE subscriber
connects to, a pinch distance, markers that expire, and per-stage latency on /diagnostics.

Messages are checked as pure functions; the node's track handling in process with a scripted
backend (DDS adds nothing there); the pose topics and tracks of real photos over DDS."""
from __future__ import annotations

import gc
import weakref

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import ReliabilityPolicy

from acr_ros import ros_messages as rm
from acr_ros.acr.hands import JOINT_NAMES, FrameResult, HandResult
from acr_ros.backends.base import MEDIAPIPE_THRESHOLD
from acr_ros.msg import Hand
from acr_ros.tracks import Track
from support.ros_harness import RELIABLE, Session, image_msg, magic_bgr

pytestmark = pytest.mark.slow(seconds=5)  # node sessions over DDS

SECOND = 1_000_000_000
SUCCESS = TransitionCallbackReturn.SUCCESS
T0 = 1_700_020_000


def hand(side: str, score: float = 0.9, x: float = 0.0, pinch: float = 0.05) -> HandResult:
    """A hand 0.5 m in front of the camera, thumb and index tips `pinch` metres apart."""
    joints = np.zeros((21, 3), np.float32) + (x, 0.0, 0.5)
    joints[1:] += np.linspace(0.01, 0.08, 20, dtype=np.float32)[:, None] * (0, -1, 0)
    joints[JOINT_NAMES.index("thumb_tip")] = (x, -0.1, 0.5)
    joints[JOINT_NAMES.index("index_tip")] = (x + pinch, -0.1, 0.5)
    return HandResult(side=side, score=score, joints=joints, keypoints=np.full((21, 2), 100, np.float32),
                      wrist_rotation=np.eye(3, dtype=np.float32))


# ---- messages ----------------------------------------------------------------------------------
def test_hand_message_carries_its_track_and_pinch_distance():
    track = Track(id=7, side="left", first_seen_ns=T0 * SECOND + 5, frames=12)
    msg = rm.hand_to_msg(hand("left", pinch=0.03), 640, 480, track)
    assert (msg.track_id, msg.track_frames) == (7, 12)
    assert (msg.track_first_seen.sec, msg.track_first_seen.nanosec) == (T0, 5)
    assert msg.pinch_distance == pytest.approx(0.03, abs=1e-6)
    untracked = rm.hand_to_msg(hand("left"), 640, 480)
    assert (untracked.track_id, untracked.track_frames, untracked.track_first_seen.sec) == (0, 0, 0)
    with pytest.raises(ValueError, match="track of a right hand given for a left hand"):
        rm.hand_to_msg(hand("left"), 640, 480, Track(1, "right", 0, 1))


def test_frame_message_gives_each_side_its_track_and_wrist_pose():
    header = image_msg(magic_bgr(), stamp=(T0, 42), frame_id="cam_optical_frame").header
    tracks = {"left": Track(1, "left", T0 * SECOND, 3), "right": Track(2, "right", T0 * SECOND, 1)}
    msg = rm.frame_to_msg(FrameResult([hand("right", x=0.2), hand("left")]), header, 640, 480, "test", "m", "",
                          tracks)
    assert [(h.side, h.track_id, h.track_frames) for h in msg.hands] == [(Hand.LEFT, 1, 3), (Hand.RIGHT, 2, 1)]
    pose = rm.wrist_pose_msg(msg, msg.hands[1])
    assert isinstance(pose, PoseStamped)
    assert (pose.header.stamp.sec, pose.header.stamp.nanosec, pose.header.frame_id) == (T0, 42, "cam_optical_frame")
    assert (pose.pose.position.x, pose.pose.position.z) == pytest.approx((0.2, 0.5))
    assert rm.SIDE_NAMES[msg.hands[1].side] == "right"


# ---- the node's tracks, in process with a scripted backend -------------------------------------
class ScriptedBackend:
    """Returns the next scripted FrameResult per image; records what the node asks of it."""

    name, model, checkpoint, device, detection_threshold = "scripted", "test script", "", "cpu", 0.5
    threshold, static_image_mode = MEDIAPIPE_THRESHOLD, False

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def faces(self, side):
        return None

    def reconstruct(self, images, intrinsics, timestamps, streams):
        self.calls.append(("reconstruct",))
        return [self.script.pop(0) for _ in images]

    def set_smoothing(self, config):
        pass

    def reset(self):
        self.calls.append(("reset",))

    def reset_side(self, stream, side):
        self.calls.append(("reset_side", stream, side))

    def close(self):
        self.calls.append(("close",))


def capture(publisher) -> list:
    """What the node publishes on `publisher`, kept in a list instead of sent (serialized messages,
    as the markers go out, deserialized as a subscriber would)."""
    from rclpy.serialization import deserialize_message

    sent = []
    publisher.publish = lambda msg: sent.append(
        deserialize_message(msg, publisher.msg_type) if isinstance(msg, bytes) else msg)
    return sent


@pytest.fixture
def scripted_node():
    """A configured and active HandsNode in its own context; the test feeds frames to its worker's
    processing step directly and reads what it would publish."""
    import rclpy

    from acr_ros.hands_node import HandsNode

    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def start(script):
        node = HandsNode(backend_factory=lambda: (ScriptedBackend(script), "scripted"), context=context)
        nodes.append(node)
        assert node.start()
        return node

    yield start
    for node in nodes:
        node.shutdown()
        node.destroy_node()
    rclpy.shutdown(context=context)


def frame(node, stamp_ns: int):
    from acr_ros.frame_processor import FrameInput

    header = image_msg(magic_bgr(), stamp=divmod(stamp_ns, SECOND)).header
    return FrameInput(node.cameras[0].topic, stamp_ns, magic_bgr(), None, header)


def test_tracks_through_the_node_appear_vanish_reappear_and_reset_smoothing(scripted_node):
    nan_hand = hand("left")
    nan_hand.joints[3, 0] = np.nan
    script = [FrameResult([hand("left")]),
              FrameResult([hand("left"), hand("right", x=0.2)]),
              FrameResult([hand("right", x=0.2), nan_hand]),           # left: NaN, dropped
              FrameResult([]),                                          # nobody
              FrameResult([hand("left", 0.9), hand("left", 0.4, x=0.3)]),  # two lefts: the stronger is published
              FrameResult([hand("left")])]                             # after a 3 s gap (track_timeout 2 s)
    node = scripted_node(script)
    backend = node.backend
    hands = capture(node.outputs.hands)
    poses = {side: capture(node.outputs.wrist_poses[side]) for side in ("left", "right")}
    stamps = [T0 * SECOND + i * SECOND // 30 for i in range(5)] + [T0 * SECOND + 3 * SECOND]
    calls_before = []
    for stamp in stamps:
        calls_before.append(len(backend.calls))
        node.process([frame(node, stamp)])

    tracked = [[(h.side, h.track_id, h.track_frames, h.track_first_seen.sec * SECOND + h.track_first_seen.nanosec)
                for h in msg.hands] for msg in hands]
    L, R = Hand.LEFT, Hand.RIGHT
    assert tracked == [[(L, 1, 1, stamps[0])],
                       [(L, 1, 2, stamps[0]), (R, 2, 1, stamps[1])],
                       [(R, 2, 2, stamps[1])],
                       [],
                       [(L, 3, 1, stamps[4])],
                       [(L, 4, 1, stamps[5])]]
    assert hands[4].hands[0].score == pytest.approx(0.9)
    # A pose per tracked side per frame, with that frame's stamp; none while a side is untracked.
    pose_stamps = {side: [p.header.stamp.sec * SECOND + p.header.stamp.nanosec for p in sent]
                   for side, sent in poses.items()}
    assert pose_stamps == {"left": [stamps[0], stamps[1], stamps[4], stamps[5]], "right": [stamps[1], stamps[2]]}
    # A track that ends resets that side's smoothing; after a gap, before the frame is inferred.
    resets = [call for call in backend.calls if call[0] == "reset_side"]
    assert resets == [("reset_side", "image_raw", "left"), ("reset_side", "image_raw", "right"),
                      ("reset_side", "image_raw", "left")]
    gap_frame_calls = backend.calls[calls_before[5]:]
    assert gap_frame_calls[:2] == [("reset_side", "image_raw", "left"), ("reconstruct",)]


def test_markers_expire_and_deactivation_deletes_them_and_ends_the_tracks(scripted_node):
    node = scripted_node([FrameResult([hand("left")]), FrameResult([hand("left")])])
    markers = capture(node.outputs.markers)
    hands = capture(node.outputs.hands)
    node.process([frame(node, T0 * SECOND)])
    added = [m for m in markers[0].markers if m.action == m.ADD]
    assert added and {(m.lifetime.sec, m.lifetime.nanosec) for m in added} == {(1, 0)}  # marker_lifetime 1.0
    assert node.trigger_deactivate() == SUCCESS
    deleted = markers[-1].markers
    assert deleted and all(m.action == m.DELETE for m in deleted)
    assert ("reset",) in node.backend.calls and ("close",) not in node.backend.calls
    assert node.trigger_activate() == SUCCESS
    node.process([frame(node, T0 * SECOND + SECOND // 30)])
    assert hands[-1].hands[0].track_id == 2  # the track ended with the deactivation


def test_cleanup_releases_the_backend_object(scripted_node):
    node = scripted_node([])
    backend = weakref.ref(node.backend)
    assert node.trigger_deactivate() == SUCCESS and node.trigger_cleanup() == SUCCESS
    assert node.backend is None
    gc.collect()
    assert backend() is None


def test_diagnostics_report_each_stage_and_the_smoothing_lag(scripted_node):
    from rclpy.parameter import Parameter

    node = scripted_node([FrameResult([hand("left")])])
    sent = capture(node._diagnostics[0])
    node.process([node._decode(node.cameras[0], image_msg(magic_bgr(), stamp=(T0, 0)))])
    node._publish_diagnostics()
    node.set_parameters([Parameter("smoothing.enabled", value=True)])
    node._publish_diagnostics()
    first, second = ({kv.key: kv.value for kv in array.status[0].values} for array in sent)
    for stage in ("conversion", "inference", "publish"):
        assert float(first[f"{stage} p50 (ms)"]) >= 0.0 and float(first[f"{stage} p95 (ms)"]) >= 0.0
    assert first["state"] == "active" and first["smoothing lag at rest (ms)"] == "off"
    assert second["smoothing lag at rest (ms)"] == "39.8"  # 1 / (2 pi 4 Hz)


# ---- over DDS: a RELIABLE subscriber, real photos -------------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = Session(tmp_path_factory.mktemp("poses"), dict(backend="mediapipe"), name="poses_hands")
    yield s
    code = s.close()
    assert code == 0


def test_wrist_pose_topics_reach_a_reliable_subscriber_only_while_the_side_is_tracked(session):
    s = session
    poses = {side: s.probe.record(PoseStamped, f"/poses_hands/{side}/wrist_pose", RELIABLE)
             for side in ("left", "right")}
    for side in poses:
        topic = f"/poses_hands/{side}/wrist_pose"
        assert s.probe.spin_until(lambda: s.probe.node.count_publishers(topic) > 0, 10)
        assert all(info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                   for info in s.probe.node.get_publishers_info_by_topic(topic))
    left, right = magic_bgr(), cv2.flip(magic_bgr(), 1)  # a left hand; its mirror image, a right hand
    blank = np.full_like(left, 200)
    sequence = [(left, "left"), (left, "left"), (right, "right"), (blank, None), (left, "left")]
    answers = []
    for index, (image, side) in enumerate(sequence):
        stamp = (T0 + 100, index)
        s.send(image_msg(image, stamp=stamp, frame_id="poses_optical_frame"))
        answers.append(s.answer(stamp))
        if side:  # each pose before the next frame: with depth 1 a newer pose replaces an undelivered one
            assert s.probe.spin_until(lambda: any(p.header.stamp.nanosec == index for p in poses[side]), 10), index

    sides = [[h.side for h in msg.hands] for msg in answers]
    assert sides == [[Hand.LEFT], [Hand.LEFT], [Hand.RIGHT], [], [Hand.LEFT]]
    first, again, flipped, _, back = (msg.hands[0] if msg.hands else None for msg in answers)
    assert first.track_id > 0 and first.track_frames == 1
    assert (again.track_id, again.track_frames, again.track_first_seen) == (first.track_id, 2,
                                                                             answers[0].header.stamp)
    assert flipped.track_id not in (0, first.track_id) and flipped.track_frames == 1
    assert back.track_id not in (first.track_id, flipped.track_id) and back.track_frames == 1
    assert 0.0 < again.pinch_distance < 0.3  # metres, thumb tip to index tip of a real hand
    # Each pose is its frame's wrist, stamped and framed like the image; nothing for an absent side.
    assert [p.header.stamp.nanosec for p in poses["left"]] == [0, 1, 4]
    assert [p.header.stamp.nanosec for p in poses["right"]] == [2]
    assert poses["left"][1].pose == again.wrist_pose
    assert all(p.header.frame_id == "poses_optical_frame" for side in poses.values() for p in side)
