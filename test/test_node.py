"""The hands node: images in; hands, TF, markers, overlay and diagnostics out, stamped with the
image's stamp and frame; bad input survived.

As its own process over real DDS: transport, stamps and frame_ids, the image encodings, every
output topic, two cameras, the ACR backend, the parameter service, exits and signals. In this
process with a fake backend (support/fake_backend.py), still over rclpy and DDS: the node's own
logic (parameter validation, bad input and diagnostics levels, marker deletion, compressed input,
the intrinsics fallback, the smoothing switch), where a process start would add nothing."""
from __future__ import annotations

import signal

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import Marker

from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.msg import Hand
from support.fake_backend import FakeBackend
from support.ros_harness import NodeProcess, Session, camera_info_msg, image_msg, magic_bgr

pytestmark = pytest.mark.slow(seconds=25)  # most of it waiting on DDS and node processes


@pytest.fixture(scope="module")
def mediapipe_session(tmp_path_factory):
    session = Session(tmp_path_factory.mktemp("mp"), dict(backend="mediapipe", diagnostics_period=0.2),
                      topics=("cam0", "cam1"))
    yield session
    assert session.close() == 0, session.process.log()
    seconds = session.process.shutdown_seconds()
    assert seconds < 2.0, f"SIGINT shutdown took {seconds:.2f} s"


@pytest.fixture
def fake_session(tmp_path, request):
    """A node in this process with a FakeBackend (session.node.backend), diagnostics at 10 Hz."""
    backend = FakeBackend()
    session = Session(tmp_path, dict(diagnostics_period=0.1, **getattr(request, "param", {})),
                      name="logic_hands", backend=backend)
    yield session
    backend = session.node.backend
    session.close()
    assert backend.closed and session.node.backend is None  # shutdown releases the model


ENCODINGS = ["bgr8", "rgb8", "bgra8", "rgba8", "yuv422_yuy2", "uyvy", "mono8"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_raw_encodings_give_hands_with_the_image_stamp_and_frame(mediapipe_session, encoding):
    stamp = (1700000100, 1000 * ENCODINGS.index(encoding))
    frame_id = f"cam_{encoding}_optical_frame"
    mediapipe_session.send(image_msg(magic_bgr(), encoding, stamp, frame_id))
    msg = mediapipe_session.answer(stamp)
    assert msg.header.frame_id == frame_id
    assert (msg.image_width, msg.image_height) == (640, 360)
    assert msg.backend == "mediapipe"
    if encoding != "mono8":  # colour is not needed to find the hand, but only colour is asserted
        assert [hand.side for hand in msg.hands] == [Hand.LEFT]
    for hand in msg.hands:
        joints = np.array([[p.x, p.y, p.z] for p in hand.joints])
        assert np.all(np.isfinite(joints)) and np.all(joints[:, 2] > 0)  # metres, in front of the camera
        assert 0 <= hand.box.x_offset < 640 and 0 < hand.box.width <= 640
        assert len(hand.vertices) == 0 and len(hand.finger_pose) == 0  # no MANO in this backend


def test_camera_info_places_the_hand_metrically(mediapipe_session):
    bgr = magic_bgr()
    without = (1700000200, 0)
    mediapipe_session.send(image_msg(bgr, stamp=without))
    plain = mediapipe_session.answer(without)
    depths = {}
    for focal, stamp in ((500.0, (1700000201, 0)), (1000.0, (1700000202, 0))):
        mediapipe_session.send(image_msg(bgr, stamp=stamp), info=camera_info_msg(640, 360, focal, stamp=stamp))
        msg = mediapipe_session.answer(stamp)
        assert not msg.default_intrinsics
        depths[focal] = msg.hands[0].wrist_pose.position.z
    assert plain.default_intrinsics
    # The same hand pixels under twice the focal length are about twice as far away (not exactly:
    # the perspective fit of a hand a few cm deep moves its centre, not its wrist, by 2x).
    assert depths[1000.0] / depths[500.0] == pytest.approx(2.0, rel=0.15)


def test_uncalibrated_and_nan_camera_info_fall_back_to_the_default(fake_session):
    s = fake_session
    for k, stamp in (([0.0] * 9, (1700000300, 0)), ([float("nan")] * 9, (1700000301, 0))):
        info = camera_info_msg(640, 360, 500.0, stamp=stamp)
        info.k = k
        s.send(image_msg(magic_bgr(), stamp=stamp), info=info)
        assert s.answer(stamp).default_intrinsics
        assert s.node.backend.batches[-1]["intrinsics"] == [None]  # the backend uses its default
    stamp = (1700000302, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(640, 360, 500.0, stamp=stamp))
    assert not s.answer(stamp).default_intrinsics
    assert s.node.backend.batches[-1]["intrinsics"][0].fx == 500.0


def test_tf_markers_overlay_and_diagnostics(mediapipe_session):
    s = mediapipe_session
    stamp, frame_id = (1700000400, 5), "tf_test_optical_frame"
    s.send(image_msg(magic_bgr(), stamp=stamp, frame_id=frame_id))
    s.answer(stamp)
    # TF: one frame per joint (the wrist frame is joint 0), children of the image frame, at its stamp.
    stamped = lambda: [t for m in s.tf for t in m.transforms  # noqa: E731
                       if (t.header.stamp.sec, t.header.stamp.nanosec) == stamp]
    assert s.probe.spin_until(lambda: len(stamped()) >= 21, 10)
    transforms = stamped()
    assert {t.header.frame_id for t in transforms} == {frame_id}
    names = {t.child_frame_id for t in transforms}
    assert "hand_left_wrist" in names and "hand_left_index_tip" in names
    assert not any(name.startswith("hand_right") for name in names)
    # Markers: stamped like the image; skeleton and joints for a hand without a mesh.
    assert s.probe.spin_until(lambda: any(m.markers and m.markers[-1].header.stamp.sec == stamp[0]
                                          for m in s.markers), 10)
    markers = [m for array in s.markers for m in array.markers
               if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp and m.action == Marker.ADD]
    assert {m.type for m in markers} >= {Marker.LINE_LIST, Marker.SPHERE_LIST}
    assert all(m.header.frame_id == frame_id for m in markers)
    # Overlay: computed while subscribed, same stamp and size as the input.
    stamp2 = (1700000401, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp2, frame_id=frame_id))
    assert s.probe.spin_until(lambda: any((o.header.stamp.sec, o.header.stamp.nanosec) == stamp2
                                          for o in s.overlays), 20, s.process)
    overlay = [o for o in s.overlays if (o.header.stamp.sec, o.header.stamp.nanosec) == stamp2][0]
    assert (overlay.width, overlay.height, overlay.encoding) == (640, 360, "bgr8")
    drawn = np.frombuffer(overlay.data, np.uint8).reshape(360, 640, 3)
    assert np.abs(drawn.astype(int) - magic_bgr()).max() > 50  # something was drawn
    # Diagnostics (every diagnostics_period) with counts and the model in use.
    assert s.probe.spin_until(lambda: int(s.status().get("frames published", 0)) >= 2, 5)
    values = s.status()
    assert values["backend"] == "mediapipe"
    assert "latency p50 (ms)" in values and "input rate /acr_hands_cam0/image_raw (Hz)" in values


def test_a_hand_that_disappears_has_its_markers_deleted(fake_session):
    s = fake_session
    s.send(image_msg(magic_bgr(), stamp=(1700000500, 0)))
    assert s.answer((1700000500, 0)).hands
    blank = np.full((360, 640, 3), 200, np.uint8)
    s.send(image_msg(blank, stamp=(1700000501, 0)))
    assert s.answer((1700000501, 0)).hands == []
    assert s.probe.spin_until(lambda: any(
        m.action in (Marker.DELETE, Marker.DELETEALL) and m.header.stamp.sec == 1700000501
        for array in s.markers for m in array.markers), 10)


def _bad_images():
    good = image_msg(magic_bgr())
    unsupported = image_msg(magic_bgr())
    unsupported.encoding = "64FC4"
    short_data = image_msg(magic_bgr())
    short_data.data = bytes(short_data.data[:1000])
    small_step = image_msg(magic_bgr())
    small_step.step = 100
    zero = Image(encoding="bgr8")
    huge = Image(height=4320, width=7680, encoding="mono8", step=7680)
    huge.data = bytes(7680 * 4320)
    assert good.height
    return {"unsupported encoding": unsupported, "data shorter than step*height": short_data,
            "step smaller than a row": small_step, "zero size": zero, "8K frame": huge}


def test_bad_input_is_counted_and_the_next_good_frame_is_answered(fake_session, capfd):
    s = fake_session
    values = lambda report: {kv.key: kv.value for kv in report.values}  # noqa: E731
    for index, (label, msg) in enumerate(_bad_images().items()):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000600, index
        s.send(msg)
        # Counted on /diagnostics (before the good frame, which would otherwise replace it unseen),
        # the first report after it at WARN with the reason, the level recovering afterwards.
        assert s.probe.spin_until(lambda: int(s.status().get("bad input frames", 0)) >= index + 1, 10), label
        first = next(r for r in s.reports() if values(r)["bad input frames"] == str(index + 1))
        assert first.level == DiagnosticStatus.WARN and first.message == values(first)["last bad input"], label
        assert s.probe.spin_until(lambda: s.reports()[-1].level == DiagnosticStatus.OK, 10), label
        good = (1700000610, index)  # calibrated: default intrinsics would keep the level at WARN
        s.send(image_msg(magic_bgr(), stamp=good), info=camera_info_msg(640, 360, 500.0, stamp=good))
        assert s.answer(good).hands, label
        assert not [m for m in s.hands if (m.header.stamp.sec, m.header.stamp.nanosec) == (1700000600, index)]
    assert "64FC4" in capfd.readouterr().err  # the throttled warning names the problem


@pytest.mark.parametrize("fake_session", [dict(compressed=True)], indirect=True)
def test_compressed_input_and_a_corrupt_jpeg(fake_session):
    s = fake_session
    ok, jpeg = cv2.imencode(".jpg", magic_bgr())
    corrupt = CompressedImage(format="jpeg", data=jpeg.tobytes()[:200] + bytes(300))
    corrupt.header.stamp.sec = 1700000700
    s.send(corrupt)
    assert s.probe.spin_until(lambda: int(s.status().get("bad input frames", 0)) == 1, 10)
    good = CompressedImage(format="jpeg", data=jpeg.tobytes())
    good.header.stamp.sec, good.header.frame_id = 1700000701, "compressed_frame"
    s.send(good)
    msg = s.answer((1700000701, 0))
    assert msg.header.frame_id == "compressed_frame" and (msg.image_width, msg.image_height) == (640, 360)
    decoded = s.node.backend.batches[-1]["images"][0]  # what the backend was given: the photo
    assert np.abs(decoded.astype(int) - magic_bgr()).mean() < 3
    assert not [m for m in s.hands if m.header.stamp.sec == 1700000700]


def test_two_cameras_keep_their_own_stamps_and_frames(mediapipe_session):
    s = mediapipe_session
    flipped = cv2.flip(magic_bgr(), 1)  # a mirrored left hand looks like a right hand
    s.send(image_msg(magic_bgr(), stamp=(1700000800, 1), frame_id="left_cam_optical"), topic="cam0")
    s.send(image_msg(flipped, stamp=(1700000800, 2), frame_id="right_cam_optical"), topic="cam1")
    first, second = s.answer((1700000800, 1)), s.answer((1700000800, 2))
    assert first.header.frame_id == "left_cam_optical" and second.header.frame_id == "right_cam_optical"
    assert [h.side for h in first.hands] == [Hand.LEFT]
    assert [h.side for h in second.hands] == [Hand.RIGHT]


def _set_parameter(session: Session, name: str, value: ParameterValue):
    client = session.probe.node.create_client(SetParameters, f"/{session.name}/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)]))
    assert session.probe.spin_until(future.done, 10)
    return future.result().results[0]


def test_parameters_are_set_through_the_parameter_service(mediapipe_session):
    """What `ros2 param set` does, over DDS: read-only parameters refused, others applied."""
    s = mediapipe_session
    string = lambda text: ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=text)  # noqa: E731
    assert not _set_parameter(s, "checkpoint", string("x.pkl")).successful
    assert _set_parameter(s, "frame_prefix", string("operator")).successful
    stamp = (1700000900, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp))
    s.answer(stamp)
    assert s.probe.spin_until(lambda: any(t.child_frame_id == "operator_left_wrist" and t.header.stamp.sec == stamp[0]
                                          for m in s.tf for t in m.transforms), 10)
    assert _set_parameter(s, "frame_prefix", string("hand")).successful  # for the tests that share this node


def test_parameters_are_validated_and_applied_at_run_time(fake_session):
    s = fake_session
    backend = s.node.backend
    set_parameter = lambda name, value: s.node.set_parameters([Parameter(name, value=value)])[0]  # noqa: E731
    out_of_range = set_parameter("detection_threshold", -1.0)
    assert not out_of_range.successful and out_of_range.reason
    bad_prefix = set_parameter("frame_prefix", "a/b")
    assert not bad_prefix.successful and "frame_prefix" in bad_prefix.reason
    assert not set_parameter("checkpoint", "x.pkl").successful  # model parameters: start-up only
    assert set_parameter("frame_prefix", "operator").successful
    stamp = (1700000910, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp))
    s.answer(stamp)
    assert s.probe.spin_until(lambda: any(t.child_frame_id == "operator_left_wrist" and t.header.stamp.sec == stamp[0]
                                          for m in s.tf for t in m.transforms), 10)
    # The backend's own threshold parameter reaches it: above every confidence it gives, no hands.
    assert set_parameter("mediapipe_min_confidence", 1.0).successful and backend.detection_threshold == 1.0
    stamp = (1700000911, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp))
    assert s.answer(stamp).hands == []
    # enabled false deactivates the node: unsubscribed, none answered; true: subscribed and answered again.
    assert set_parameter("enabled", False).successful
    assert s.probe.spin_until(lambda: s.images["cam0"].get_subscription_count() == 0, 10)
    paused = (1700000912, 0)
    s.send(image_msg(magic_bgr(), stamp=paused))
    assert not s.probe.spin_until(lambda: any(m.header.stamp.sec == paused[0] for m in s.hands), 1.0)
    assert len(backend.batches) == 2
    assert set_parameter("enabled", True).successful
    s.probe.wait_for_subscribers(s.images["cam0"])
    resumed = (1700000913, 0)
    s.send(image_msg(magic_bgr(), stamp=resumed))
    s.answer(resumed)


def test_smoothing_is_switched_at_run_time(fake_session):
    """smoothing.* (the seed demo's -t) reach the backend before its next batch."""
    s = fake_session
    results = s.node.set_parameters([Parameter("smoothing.enabled", value=True),
                                     Parameter("smoothing.min_cutoff", value=2.0),
                                     Parameter("smoothing.beta", value=0.3)])
    assert all(result.successful for result in results)
    stamp = (1700000920, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp))
    s.answer(stamp)
    assert s.node.backend.smoothing == [SmoothingConfig(pose_min_cutoff=2.0, orient_min_cutoff=2.0, pose_beta=0.3,
                                                        orient_beta=0.3, betas_beta=0.3)]
    assert s.node.set_parameters([Parameter("smoothing.enabled", value=False)])[0].successful
    stamp = (1700000921, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp))
    s.answer(stamp)
    assert s.node.backend.smoothing[-1] is None


def test_acr_backend_publishes_meshes_joint_frames_and_mano(tmp_path, acr_checkpoint, mano_dir):
    """Random weights biased to fire (NOT a hand model): checks structure, units and stamps only."""
    s = Session(tmp_path, dict(backend="acr", checkpoint=str(acr_checkpoint), mano_dir=str(mano_dir),
                               device="cpu", precision="fp32"), name="acr_session")
    try:
        from acr_ros.msg import HandMesh
        from rclpy.qos import DurabilityPolicy

        meshes = s.probe.record(HandMesh, "/acr_session/mesh", QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE))
        stamp = (1700001000, 42)
        s.send(image_msg(magic_bgr(), stamp=stamp, frame_id="acr_frame"),
               info=camera_info_msg(640, 360, 600.0, stamp=stamp, frame_id="acr_frame"))
        msg = s.answer(stamp, timeout=120)
        assert msg.backend == "acr" and msg.checkpoint.startswith("wild.pkl")
        assert not msg.default_intrinsics
        assert sorted(h.side for h in msg.hands) == [Hand.LEFT, Hand.RIGHT]
        for hand in msg.hands:
            assert len(hand.vertices) == 778 * 3 and len(hand.finger_pose) == 45
            assert len(hand.global_orient) == 3 and len(hand.shape) == 10 and len(hand.weak_camera) == 3
            assert np.all(np.isfinite(hand.vertices))
        # Late joiner gets the mesh topology (transient local).
        assert s.probe.spin_until(lambda: bool(meshes), 10)
        assert len(meshes[0].left_triangles) == 1538 * 3 == len(meshes[0].right_triangles)
        assert s.probe.spin_until(lambda: any(
            m.type == Marker.TRIANGLE_LIST and m.header.stamp.sec == stamp[0]
            for array in s.markers for m in array.markers), 20)
        triangles = [m for array in s.markers for m in array.markers
                     if m.type == Marker.TRIANGLE_LIST and m.header.stamp.sec == stamp[0]]
        assert {len(m.points) for m in triangles} == {4614}
        assert s.probe.spin_until(lambda: any(t.child_frame_id == "hand_left_pinky_tip"
                                              for m in s.tf for t in m.transforms), 10)
    finally:
        assert s.close() == 0


def test_missing_model_files_exit_with_a_clear_message(tmp_path):
    process = NodeProcess("acr_ros.hands_node", dict(backend="acr", checkpoint=str(tmp_path / "nowhere.pkl"),
                                                     mano_dir=str(tmp_path)), tmp_path)
    code = process.process.wait(timeout=60)
    log = process.log()
    assert code != 0
    assert "nowhere.pkl" in log and "Traceback" not in log


def test_sigterm_shuts_down_within_two_seconds(tmp_path):
    s = Session(tmp_path, dict(backend="mediapipe"), name="sigterm_hands")
    s.send(image_msg(magic_bgr(), stamp=(1700001100, 0)))
    s.answer((1700001100, 0))
    code = s.close(signal.SIGTERM)
    assert code == 0 and s.process.shutdown_seconds() < 2.0, s.process.log()


def test_an_unknown_device_fails_configure_with_one_line(tmp_path):
    process = NodeProcess("acr_ros.hands_node", dict(device="banana"), tmp_path, name="bad_device")
    code = process.process.wait(timeout=60)
    log = process.log()
    assert code != 0 and "Traceback" not in log, log
    assert "device must be auto, cpu, cuda or cuda:N (N: the GPU's index), got 'banana'" in log, log


@pytest.mark.parametrize("params, expected", [
    (dict(backend="openpose"), "backend"),
    (dict(detection_threshold=-3.0), "detection_threshold"),
    (dict(image_topics=["/bad topic name"]), "parameter image_topics: '/bad topic name' is not a valid topic name"),
    (dict(depth_topics=["/depth/x y"]), "parameter depth_topics: '/depth/x y' is not a valid topic name"),
])
def test_bad_start_up_parameters_exit_with_a_clear_message(tmp_path, params, expected):
    process = NodeProcess("acr_ros.hands_node", params, tmp_path, name="bad_params")
    code = process.process.wait(timeout=60)
    log = process.log()
    assert code != 0 and expected in log and "Traceback" not in log, log
    assert ", at /" not in log and ".c:" not in log, log  # rcl's source locations are not the user's business
