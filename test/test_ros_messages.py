"""HandResult / FrameResult -> Hands, HandMesh, TF and RViz markers: values, units, stamps, frames,
quaternions, marker layout, and a round trip through real rclpy serialisation."""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from acr_ros import ros_messages as rm
from acr_ros.render import SIDE_COLOURS
from acr_ros.acr.hands import JOINT_NAMES, JOINT_PARENTS, NUM_VERTICES, FrameResult, rotation_to_quaternion
from acr_ros.msg import Hand, HandMesh, Hands
from support.benchmarks import load_benchmark
from support.hands import FACES, FACES_BY_SIDE, make_hand, quaternion_matrix, random_rotation, rodrigues


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="camera_color_optical_frame")


@pytest.fixture
def frame() -> FrameResult:
    return FrameResult(hands=[make_hand("left", 0), make_hand("right", 1, score=0.7)], default_intrinsics=False)


def assert_point(point, xyz):
    np.testing.assert_allclose([point.x, point.y, point.z], np.asarray(xyz, dtype=np.float64), rtol=0, atol=1e-7)


# ---- quaternions -------------------------------------------------------------------------------
S = math.sqrt(0.5)


@pytest.mark.parametrize("axis_angle,expected", [
    ((0, 0, 0), (0, 0, 0, 1)),
    ((math.pi / 2, 0, 0), (S, 0, 0, S)),
    ((0, math.pi / 2, 0), (0, S, 0, S)),
    ((0, 0, math.pi / 2), (0, 0, S, S)),
    ((0, 0, -math.pi / 2), (0, 0, -S, S)),
    ((math.pi, 0, 0), (1, 0, 0, 0)),
    ((0, math.pi, 0), (0, 1, 0, 0)),
    ((0, 0, math.pi), (0, 0, 1, 0)),
])
def test_known_rotations(axis_angle, expected):
    q = rotation_to_quaternion(rodrigues(axis_angle))
    if expected[3] == 0:  # 180 degrees: q and -q are the same rotation
        q = q * np.sign(q[np.argmax(np.abs(q))])
    np.testing.assert_allclose(q, expected, atol=1e-9)


def test_exact_matrices_and_axis_permutation():
    # camera optical frame -> x forward / y left / z up body frame: a permutation matrix
    r = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    q = rotation_to_quaternion(r)
    np.testing.assert_allclose(q, (-0.5, 0.5, -0.5, 0.5), atol=1e-12)
    np.testing.assert_allclose(quaternion_matrix(q), r, atol=1e-12)


def test_random_rotations_batch():
    rng = np.random.default_rng(3)
    axis_angles = []
    for _ in range(500):
        axis = rng.normal(size=3)
        axis_angles.append(axis / np.linalg.norm(axis) * rng.uniform(0, math.pi - 1e-6))
    rotations = np.stack([rodrigues(v) for v in axis_angles]).reshape(50, 10, 3, 3)
    q = rotation_to_quaternion(rotations)
    assert q.shape == (50, 10, 4)
    q = q.reshape(-1, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-12)
    assert (q[:, 3] >= 0).all()
    expected = np.array([np.r_[np.sin(np.linalg.norm(v) / 2) * v / np.linalg.norm(v), np.cos(np.linalg.norm(v) / 2)]
                         for v in axis_angles])
    np.testing.assert_allclose(q, expected, atol=1e-9)
    for qi, r in zip(q[:20], rotations.reshape(-1, 3, 3)[:20]):
        np.testing.assert_allclose(quaternion_matrix(qi), r, atol=1e-9)


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, -1, 0), (0, 1, 1), (-1, 0, 1), (1, 1, 1),
                                  (1, -2, 3)])
def test_exact_half_turns(axis):
    """180 degrees: R = 2 a a^T - I exactly (w = 0, several components and off-diagonals ~0)."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    r = 2 * np.outer(a, a) - np.eye(3)
    q = rotation_to_quaternion(r)
    assert q[3] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(np.abs(q[:3] @ a), 1, atol=1e-12)  # the axis, either sign
    np.testing.assert_allclose(quaternion_matrix(q), r, atol=1e-12)


def test_random_matrices_round_trip():
    rng = np.random.default_rng(7)
    rotations = np.stack([random_rotation(rng) for _ in range(300)])
    q = rotation_to_quaternion(rotations)
    np.testing.assert_allclose(np.stack([quaternion_matrix(qi) for qi in q]), rotations, atol=1e-12)


def test_noisy_degenerate_and_non_finite_matrices():
    rng = np.random.default_rng(4)
    r = random_rotation(rng)
    noisy = (r * 1.01 + rng.normal(scale=1e-3, size=(3, 3))).astype(np.float32)
    q = rotation_to_quaternion(noisy)
    assert abs(np.linalg.norm(q) - 1) < 1e-12
    np.testing.assert_allclose(quaternion_matrix(q), r, atol=5e-3)
    for m in (np.zeros((3, 3)), np.full((3, 3), np.nan), np.diag([1.0, 1.0, -1.0])):
        q = rotation_to_quaternion(m)
        assert np.isfinite(q).all() and abs(np.linalg.norm(q) - 1) < 1e-12 and q[3] >= 0
    np.testing.assert_array_equal(rotation_to_quaternion(np.full((3, 3), np.inf)), (0, 0, 0, 1))


# ---- Hand / Hands ------------------------------------------------------------------------------
def test_hand_fields():
    hand = make_hand("right", 2)
    msg = rm.hand_to_msg(hand, 640, 480)
    assert msg.side == Hand.RIGHT and rm.hand_to_msg(make_hand("left"), 640, 480).side == Hand.LEFT
    assert msg.score == pytest.approx(0.9)
    assert_point(msg.wrist_pose.position, hand.joints[0])
    o = msg.wrist_pose.orientation
    np.testing.assert_allclose(quaternion_matrix((o.x, o.y, o.z, o.w)), hand.wrist_rotation, atol=1e-5)
    assert len(msg.joints) == 21
    for point, joint in zip(msg.joints, hand.joints):
        assert_point(point, joint)
    assert msg.keypoints.dtype == np.float32 and msg.keypoints.shape == (42,)
    np.testing.assert_array_equal(msg.keypoints[0::2], hand.keypoints[:, 0])  # u0, v0, u1, v1, ...
    np.testing.assert_array_equal(msg.keypoints[1::2], hand.keypoints[:, 1])
    for name, n in (("global_orient", 3), ("finger_pose", 45), ("shape", 10), ("weak_camera", 3)):
        value = getattr(msg, name)
        assert value.typecode == "f" and len(value) == n
        np.testing.assert_array_equal(np.asarray(value), getattr(hand, name))
    assert msg.vertices.typecode == "f" and len(msg.vertices) == NUM_VERTICES * 3
    np.testing.assert_array_equal(np.asarray(msg.vertices).reshape(-1, 3), hand.vertices)


def test_hand_without_mano_has_empty_arrays():
    msg = rm.hand_to_msg(make_hand(mano=False), 640, 480)
    for name in ("global_orient", "finger_pose", "shape", "weak_camera", "vertices"):
        assert len(getattr(msg, name)) == 0


def test_bad_side_is_rejected():
    with pytest.raises(ValueError, match="side"):
        rm.hand_to_msg(make_hand(side="both"), 640, 480)


@pytest.mark.parametrize("keypoints,box", [
    ([(10.2, 20.7), (30.5, 40.1)], (10, 20, 21, 21)),          # floor of min, ceil of max
    ([(-15, -5), (30, 40)], (0, 0, 30, 40)),                    # clipped at the top left
    ([(600, 470), (700, 500)], (600, 470, 40, 10)),             # clipped at the bottom right
    ([(-50, -50), (-10, -10)], (0, 0, 0, 0)),                   # wholly outside
    ([(700, 10), (800, 20)], (640, 10, 0, 10)),
    ([(np.nan, 5), (20, 30)], (20, 30, 0, 0)),                  # non-finite keypoints ignored
])
def test_box_is_clipped_to_the_image(keypoints, box):
    hand = make_hand()
    kp = np.zeros((21, 2), np.float32)
    kp[:] = keypoints[-1]
    kp[: len(keypoints)] = keypoints
    hand.keypoints = kp
    roi = rm.hand_to_msg(hand, 640, 480).box
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == box
    assert roi.do_rectify is False


def test_frame_to_msg(frame, header):
    msg = rm.frame_to_msg(frame, header, 640, 480, "acr", "ACR HRNet-W32 + MANO", "wild.pkl 0123456789ab")
    assert msg.header == header and msg.header is not header
    assert (msg.image_width, msg.image_height) == (640, 480)
    assert (msg.backend, msg.model, msg.checkpoint) == ("acr", "ACR HRNet-W32 + MANO", "wild.pkl 0123456789ab")
    assert msg.default_intrinsics is False
    assert [h.side for h in msg.hands] == [Hand.LEFT, Hand.RIGHT]
    empty = rm.frame_to_msg(FrameResult(), header, 640, 480, "mediapipe", "m", "")
    assert empty.hands == [] and empty.default_intrinsics is True


def test_frame_to_msg_keeps_one_hand_per_side(header):
    weak, strong, right = make_hand("left", 0, score=0.4), make_hand("left", 2, score=0.8), make_hand("right", 1)
    msg = rm.frame_to_msg(FrameResult(hands=[right, weak, strong]), header, 640, 480, "acr", "m", "")
    assert [(h.side, h.score) for h in msg.hands] == [(Hand.LEFT, pytest.approx(0.8)), (Hand.RIGHT, pytest.approx(0.9))]


def test_hands_serialisation_round_trip(frame, header):
    msg = rm.frame_to_msg(frame, header, 1280, 720, "acr", "model", "ckpt")
    data = serialize_message(msg)
    assert len(data) > 2 * NUM_VERTICES * 3 * 4
    back = deserialize_message(data, Hands)
    assert back.header == header and back.image_width == 1280 and back.backend == "acr"
    assert len(back.hands) == 2
    for got, hand in zip(back.hands, frame.hands):
        assert got.side == rm.SIDE_CONSTANTS[hand.side]
        np.testing.assert_array_equal(np.asarray(got.vertices, np.float32).reshape(-1, 3), hand.vertices)
        np.testing.assert_array_equal(got.keypoints, hand.keypoints.reshape(-1))
        np.testing.assert_allclose([[p.x, p.y, p.z] for p in got.joints], hand.joints, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(got.finger_pose, np.float32), hand.finger_pose)
    # The fields not compared above survive too (score: float32 on the wire).
    got, sent = back.hands[0], msg.hands[0]
    assert (got.box, got.wrist_pose) == (sent.box, sent.wrist_pose) and got.score == pytest.approx(sent.score, rel=1e-7)


def test_mesh_msg():
    stamp = Time(sec=5, nanosec=6)
    msg = rm.mesh_msg(FACES, FACES_BY_SIDE["right"], stamp)
    assert msg.header.stamp == stamp and msg.header.frame_id == ""
    assert msg.left_triangles.typecode == "I" and len(msg.left_triangles) == HandMesh.NUM_TRIANGLES * 3
    np.testing.assert_array_equal(np.asarray(msg.right_triangles).reshape(-1, 3), FACES[:, ::-1])
    back = deserialize_message(serialize_message(msg), HandMesh)
    np.testing.assert_array_equal(np.asarray(back.left_triangles).reshape(-1, 3), FACES)
    assert len(rm.mesh_msg(None, None, stamp).left_triangles) == 0
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        rm.mesh_msg(FACES.reshape(-1), None, stamp)
    with pytest.raises(ValueError, match="index"):
        rm.mesh_msg(FACES + 1, None, stamp)


# ---- TF ----------------------------------------------------------------------------------------
def transform_matrix(t) -> np.ndarray:
    r = t.transform.rotation
    q = np.array([r.x, r.y, r.z, r.w])
    assert abs(np.linalg.norm(q) - 1) < 1e-9 and q[3] >= 0
    return quaternion_matrix(q)


def test_tf_names_parents_stamps(frame, header):
    transforms = rm.hand_transforms(frame, header)
    assert len(transforms) == 42
    names = [t.child_frame_id for t in transforms]
    assert len(set(names)) == 42
    assert names[:3] == ["hand_left_wrist", "hand_left_thumb_mcp", "hand_left_thumb_pip"]
    assert names[21] == "hand_right_wrist" and names[-1] == "hand_right_pinky_tip"
    assert names[1:21] == [f"hand_left_{n}" for n in JOINT_NAMES[1:]]
    for t in transforms:
        assert t.header.frame_id == header.frame_id and t.header.stamp == header.stamp
        assert not t.child_frame_id.startswith("/")
    for hand, offset in zip(frame.hands, (0, 21)):
        for j in range(21):
            p = transforms[offset + j].transform.translation
            assert_point(p, hand.joints[j])
        np.testing.assert_allclose(transform_matrix(transforms[offset]), hand.wrist_rotation, atol=1e-5)
        for j in range(1, 21):  # MANO joint rotations used as given
            np.testing.assert_allclose(transform_matrix(transforms[offset + j]), hand.joint_rotations[j], atol=1e-5)


def test_tf_wrists_only_and_prefix(frame, header):
    transforms = rm.hand_transforms(frame, header, prefix="/robot/hands", joints=False)
    assert [t.child_frame_id for t in transforms] == ["robot/hands_left_wrist", "robot/hands_right_wrist"]
    assert [t.child_frame_id for t in rm.hand_transforms(frame, header, prefix="", joints=False)] == [
        "left_wrist", "right_wrist"]


def test_tf_bone_frames_without_joint_rotations(header):
    hand = make_hand(mano=False)
    transforms = rm.hand_transforms(FrameResult(hands=[hand]), header)
    np.testing.assert_allclose(transform_matrix(transforms[0]), hand.wrist_rotation, atol=1e-5)
    wrist_z = hand.wrist_rotation[:, 2]
    for j in range(1, 21):
        r = transform_matrix(transforms[j])
        bone = hand.joints[j].astype(float) - hand.joints[JOINT_PARENTS[j]]
        np.testing.assert_allclose(r[:, 0], bone / np.linalg.norm(bone), atol=1e-6)    # x along the bone
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-9)                      # right-handed
        assert r[:, 2] @ wrist_z > 0                                                    # z toward wrist z


def test_tf_skips_non_finite_and_duplicate_sides(header):
    hand = make_hand("left", 0)
    hand.joints = hand.joints.copy()
    hand.joints[8] = np.nan
    weaker = make_hand("left", 5, score=0.1)
    transforms = rm.hand_transforms(FrameResult(hands=[weaker, hand]), header)
    names = [t.child_frame_id for t in transforms]
    assert len(names) == 20 and "hand_left_index_tip" not in names
    assert_point(transforms[0].transform.translation, hand.joints[0])  # the higher-scoring left hand


def test_transforms_serialise(frame, header):
    from tf2_msgs.msg import TFMessage

    msg = TFMessage(transforms=rm.hand_transforms(frame, header))
    back = deserialize_message(serialize_message(msg), TFMessage)
    assert back == msg


# ---- markers -----------------------------------------------------------------------------------
def by_key(markers: MarkerArray) -> dict:
    return {(m.ns, m.id): m for m in markers.markers}


def test_marker_layout(frame, header):
    markers = rm.hand_markers(frame, header, FACES_BY_SIDE)
    assert len(markers.markers) == 8
    for m in markers.markers:
        assert m.header == header and m.action == Marker.ADD
    keyed = by_key(markers)
    ns = "hands/camera_color_optical_frame"
    for side, sid, hand in (("left", 0, frame.hands[0]), ("right", 1, frame.hands[1])):
        mesh = keyed[(f"{ns}/mesh", sid)]
        assert mesh.type == Marker.TRIANGLE_LIST and len(mesh.points) == 4614
        expected = hand.vertices[FACES_BY_SIDE[side]].reshape(-1, 3)
        got = np.array([[p.x, p.y, p.z] for p in mesh.points])
        np.testing.assert_array_equal(got, expected.astype(np.float64))
        assert (mesh.color.r, mesh.color.g, mesh.color.b) == pytest.approx(SIDE_COLOURS[side])
        assert mesh.color.a == pytest.approx(0.8) and len(mesh.colors) == 0
        assert (mesh.scale.x, mesh.scale.y, mesh.scale.z) == (1.0, 1.0, 1.0)
        assert mesh.pose.orientation.w == 1.0
        skeleton = keyed[(f"{ns}/skeleton", sid)]
        assert skeleton.type == Marker.LINE_LIST and len(skeleton.points) == 40
        for k, j in enumerate(range(1, 21)):
            assert_point(skeleton.points[2 * k], hand.joints[JOINT_PARENTS[j]])
            assert_point(skeleton.points[2 * k + 1], hand.joints[j])
        joints = keyed[(f"{ns}/joints", sid)]
        assert joints.type == Marker.SPHERE_LIST and len(joints.points) == 21
        assert joints.scale.x == pytest.approx(0.008)
        label = keyed[(f"{ns}/label", sid)]
        assert label.type == Marker.TEXT_VIEW_FACING and label.text == f"{side} {hand.score:.2f}"
        assert label.pose.position.y < hand.joints[:, 1].min()  # above the hand (camera y is down)
    assert keyed[(f"{ns}/mesh", 0)].color != keyed[(f"{ns}/mesh", 1)].color


def test_marker_ids_stable_and_deletion(frame, header):
    first = by_key(rm.hand_markers(frame, header, FACES_BY_SIDE))
    header.stamp.sec += 1
    only_right = FrameResult(hands=[make_hand("right", 9)])
    second = by_key(rm.hand_markers(only_right, header, FACES_BY_SIDE))
    assert set(second) == {key for key in first if key[1] == 1}  # same ns/id: updated in place
    deletions = rm.deletion_markers({"left"}, header)
    assert len(deletions.markers) == 4
    assert {(m.ns, m.id) for m in deletions.markers} == {key for key in first if key[1] == 0}
    assert all(m.action == Marker.DELETE and m.header == header for m in deletions.markers)
    assert rm.deletion_markers(set(), header).markers == []


def test_markers_for_hands_without_mesh_and_options(header):
    frame = FrameResult(hands=[make_hand("left", mano=False)])
    keyed = by_key(rm.hand_markers(frame, header, {"left": None, "right": None}))
    assert keyed[("hands/camera_color_optical_frame/mesh", 0)].action == Marker.DELETE
    assert keyed[("hands/camera_color_optical_frame/joints", 0)].action == Marker.ADD
    lasting = rm.hand_markers(FrameResult(hands=[make_hand("right")]), Header(frame_id=""), FACES_BY_SIDE,
                              ns="viz", lifetime=0.5)
    actions = {m.ns: m.action for m in lasting.markers}
    assert actions == {"viz/mesh": Marker.ADD, "viz/skeleton": Marker.ADD, "viz/joints": Marker.ADD,
                       "viz/label": Marker.ADD}
    assert all((m.lifetime.sec, m.lifetime.nanosec) == (0, 500_000_000) for m in lasting.markers)
    with pytest.raises(ValueError, match="faces"):
        rm.hand_markers(FrameResult(hands=[make_hand("left")]), header, {"left": FACES + NUM_VERTICES})


def test_points_equal_constructed_points():
    xyz = np.random.default_rng(5).normal(size=(100, 3))
    built, plain = rm.points(xyz), [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]
    assert all(isinstance(p, Point) for p in built) and built == plain
    assert built[3].x == xyz[3, 0] and isinstance(built[3].x, float)
    assert rm.points(np.empty((0, 3))) == []
    round_trip = lambda m: deserialize_message(serialize_message(m), Marker)  # noqa: E731
    assert round_trip(Marker(points=built)) == Marker(points=plain)


def test_markers_serialise(frame, header):
    markers = rm.hand_markers(frame, header, FACES_BY_SIDE)
    back = deserialize_message(serialize_message(markers), MarkerArray)
    assert len(back.markers) == len(markers.markers) == 8
    for got, sent in zip(back.markers, markers.markers):
        # field by field: colours are float32 on the wire (and CDR padding bytes are not zeroed,
        # so serialised bytes cannot be compared either)
        assert (got.header, got.ns, got.id, got.type, got.action, got.text, got.scale, got.pose, got.lifetime) == (
            sent.header, sent.ns, sent.id, sent.type, sent.action, sent.text, sent.scale, sent.pose, sent.lifetime)
        assert got.points == sent.points
        np.testing.assert_allclose([got.color.r, got.color.g, got.color.b, got.color.a],
                                   [sent.color.r, sent.color.g, sent.color.b, sent.color.a], rtol=1e-6)


def test_outputs_benchmark_prints_a_row_per_output(capsys):
    """benchmarks/outputs.py (the timings of these builders and of the overlay) runs as documented."""
    benchmark = load_benchmark("outputs")
    assert benchmark.main(["--repeat", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "(ms)" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| Hands message (2 hands)", "| TF (42 frames)",
                                                      "| markers (2 hands, mesh)",
                                                      "| markers, points as arrays (recording writer)",
                                                      "| markers as Point objects, serialized by rclpy",
                                                      "| markers as CDR bytes (the node)",
                                                      "| overlay (1 mesh, 1080p)"]


def test_strict_field_checks():
    """With ROS_PYTHON_CHECK_FIELDS=1 the generated setters check every type: all builders pass."""
    script = textwrap.dedent("""
        import numpy as np
        from builtin_interfaces.msg import Time
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header
        from tf2_msgs.msg import TFMessage
        from support.hands import FACES, FACES_BY_SIDE, make_hand
        from acr_ros import ros_messages as rm
        from acr_ros.image_conversion import bgr_to_image
        from acr_ros.acr.hands import FrameResult
        from acr_ros.cdr import CdrEncoder
        from acr_ros.recordings import typestore
        header = Header(stamp=Time(sec=1, nanosec=2), frame_id="cam")
        frame = FrameResult(hands=[make_hand("left"), make_hand("right", 1, mano=False)])
        serialize_message(rm.frame_to_msg(frame, header, 640, 480, "acr", "m", "c"))
        serialize_message(rm.hand_markers(frame, header, FACES_BY_SIDE, lifetime=0.25))
        serialize_message(rm.deletion_markers({"left", "right"}, header))
        serialize_message(TFMessage(transforms=rm.hand_transforms(frame, header)))
        serialize_message(rm.mesh_msg(FACES, FACES, Time(sec=3)))
        serialize_message(bgr_to_image(np.zeros((4, 5, 3), np.uint8), header))
        hands = rm.frame_to_msg(frame, header, 640, 480, "acr", "m", "c")
        serialize_message(rm.wrist_pose_msg(hands, hands.hands[0]))
        # the recording writer's markers: their points are arrays, for its encoder only
        arrays = rm.frame_markers(frame, header, FACES_BY_SIDE, {"cam": {"left"}}, points_as_arrays=True)
        CdrEncoder(typestore()).encode(arrays, "visualization_msgs/msg/MarkerArray")
        print("strict ok")
    """)
    env = dict(os.environ, ROS_PYTHON_CHECK_FIELDS="1")
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strict ok" in result.stdout
