"""The hands node as its own process over real DDS: images in; hands, TF, markers, overlay and
diagnostics out, stamped with the image's stamp and frame; bad input survived."""
from __future__ import annotations

import signal

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import Marker

from acr_ros.msg import Hand
from support.ros_harness import NodeProcess, Probe, Session, camera_info_msg, image_msg, magic_bgr

@pytest.fixture(scope="module")
def mediapipe_session(tmp_path_factory):
    session = Session(tmp_path_factory.mktemp("mp"), dict(backend="mediapipe"))
    yield session
    code, seconds = session.close()
    assert code == 0, session.process.log()
    assert seconds < 2.0, f"SIGINT shutdown took {seconds:.2f} s"


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


def test_uncalibrated_and_nan_camera_info_fall_back_to_the_default(mediapipe_session):
    bgr = magic_bgr()
    for k, stamp in (([0.0] * 9, (1700000300, 0)), ([float("nan")] * 9, (1700000301, 0))):
        info = camera_info_msg(640, 360, 500.0, stamp=stamp)
        info.k = k
        mediapipe_session.send(image_msg(bgr, stamp=stamp), info=info)
        msg = mediapipe_session.answer(stamp)
        assert msg.default_intrinsics
        assert all(np.isfinite([msg.hands[0].wrist_pose.position.z]))


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
    # Diagnostics at ~1 Hz with counts and the model in use.
    assert s.probe.spin_until(lambda: len(s.diagnostics) >= 2, 5)
    status = s.diagnostics[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend"] == "mediapipe"
    assert int(values["frames published"]) >= 2
    assert "latency p50 (ms)" in values and "input rate /acr_hands_cam0/image_raw (Hz)" in values


def test_a_hand_that_disappears_has_its_markers_deleted(mediapipe_session):
    s = mediapipe_session
    s.send(image_msg(magic_bgr(), stamp=(1700000500, 0)))
    s.answer((1700000500, 0))
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


def test_bad_input_is_counted_and_the_next_good_frame_is_answered(mediapipe_session):
    s = mediapipe_session
    bad_count = lambda: int({kv.key: kv.value for kv in s.diagnostics[-1].status[0].values}  # noqa: E731
                            ["bad input frames"]) if s.diagnostics else 0
    start = bad_count()
    for index, (label, msg) in enumerate(_bad_images().items()):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000600, index
        s.send(msg)
        # Counted on /diagnostics (before the good frame, which would otherwise replace it unseen).
        assert s.probe.spin_until(lambda: bad_count() >= start + index + 1, 10, s.process), label
        good = (1700000610, index)
        s.send(image_msg(magic_bgr(), stamp=good))
        assert s.answer(good).hands, label
        assert not [m for m in s.hands if (m.header.stamp.sec, m.header.stamp.nanosec) == (1700000600, index)]
    assert s.process.alive()
    assert "64FC4" in s.process.log()  # the throttled warning names the problem


def test_compressed_input_and_a_corrupt_jpeg(tmp_path):
    s = Session(tmp_path, dict(backend="mediapipe", compressed=True), name="compressed_hands")
    try:
        ok, jpeg = cv2.imencode(".jpg", magic_bgr())
        corrupt = CompressedImage(format="jpeg", data=jpeg.tobytes()[:200] + bytes(300))
        corrupt.header.stamp.sec = 1700000700
        s.send(corrupt)
        good = CompressedImage(format="jpeg", data=jpeg.tobytes())
        good.header.stamp.sec, good.header.frame_id = 1700000701, "compressed_frame"
        s.send(good)
        msg = s.answer((1700000701, 0))
        assert msg.header.frame_id == "compressed_frame"
        assert [hand.side for hand in msg.hands] == [Hand.LEFT]
        assert not [m for m in s.hands if m.header.stamp.sec == 1700000700]
    finally:
        code, _ = s.close()
    assert code == 0


def test_two_cameras_keep_their_own_stamps_and_frames(tmp_path):
    s = Session(tmp_path, dict(backend="mediapipe"), topics=("left_cam", "right_cam"), name="stereo_hands")
    try:
        flipped = cv2.flip(magic_bgr(), 1)  # a mirrored left hand looks like a right hand
        s.send(image_msg(magic_bgr(), stamp=(1700000800, 1), frame_id="left_cam_optical"), topic="left_cam")
        s.send(image_msg(flipped, stamp=(1700000800, 2), frame_id="right_cam_optical"), topic="right_cam")
        first, second = s.answer((1700000800, 1)), s.answer((1700000800, 2))
        assert first.header.frame_id == "left_cam_optical" and second.header.frame_id == "right_cam_optical"
        assert [h.side for h in first.hands] == [Hand.LEFT]
        assert [h.side for h in second.hands] == [Hand.RIGHT]
    finally:
        code, _ = s.close()
    assert code == 0


def _set_parameter(probe: Probe, name: str, value: ParameterValue, node: str = "acr_hands"):
    client = probe.node.create_client(SetParameters, f"/{node}/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
    assert probe.spin_until(future.done, 10)
    return future.result().results[0]


def test_parameters_are_validated_and_applied_at_run_time(mediapipe_session):
    probe = mediapipe_session.probe
    out_of_range = _set_parameter(probe, "detection_threshold",
                                  ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0))
    assert not out_of_range.successful and out_of_range.reason
    bad_prefix = _set_parameter(probe, "frame_prefix",
                                ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="a/b"))
    assert not bad_prefix.successful and "frame_prefix" in bad_prefix.reason
    read_only = _set_parameter(probe, "checkpoint",
                               ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="x.pkl"))
    assert not read_only.successful
    renamed = _set_parameter(probe, "frame_prefix",
                             ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="operator"))
    assert renamed.successful
    stamp = (1700000900, 0)
    mediapipe_session.send(image_msg(magic_bgr(), stamp=stamp))
    mediapipe_session.answer(stamp)
    assert probe.spin_until(lambda: any(t.child_frame_id == "operator_left_wrist" and t.header.stamp.sec == stamp[0]
                                        for m in mediapipe_session.tf for t in m.transforms), 10)
    # A detection confidence above any the backend gives removes the hands.
    strict = _set_parameter(probe, "mediapipe_min_confidence",
                            ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1.0))
    assert strict.successful
    stamp = (1700000901, 0)
    mediapipe_session.send(image_msg(magic_bgr(), stamp=stamp))
    assert mediapipe_session.answer(stamp).hands == []
    # enabled false deactivates the node: unsubscribed, none answered; true: subscribed and answered again.
    assert _set_parameter(probe, "enabled", ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                           bool_value=False)).successful
    assert probe.spin_until(lambda: mediapipe_session.images["cam0"].get_subscription_count() == 0, 10)
    paused = (1700000902, 0)
    mediapipe_session.send(image_msg(magic_bgr(), stamp=paused))
    assert not probe.spin_until(lambda: any(m.header.stamp.sec == paused[0] for m in mediapipe_session.hands), 2.0)
    assert _set_parameter(probe, "enabled", ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                           bool_value=True)).successful
    probe.wait_for_subscribers(mediapipe_session.images["cam0"], process=mediapipe_session.process)
    resumed = (1700000903, 0)
    mediapipe_session.send(image_msg(magic_bgr(), stamp=resumed))
    mediapipe_session.answer(resumed)
    # Back to the defaults, for the tests that share this node.
    for name, value in (("mediapipe_min_confidence", 0.5), ("detection_threshold", 0.35)):
        assert _set_parameter(probe, name, ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                          double_value=value)).successful
    assert _set_parameter(probe, "frame_prefix", ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                                string_value="hand")).successful


def test_acr_backend_publishes_meshes_joint_frames_and_mano(tmp_path, acr_checkpoint, mano_dir):
    """Random weights biased to fire (NOT a hand model): checks structure, units and stamps only."""
    s = Session(tmp_path, dict(backend="acr", checkpoint=str(acr_checkpoint), mano_dir=str(mano_dir),
                               device="cpu"), name="acr_session")
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
        # Smoothing switched on at run time (the seed's -t): the first smoothed frame passes through
        # unchanged (One-Euro), so the same image gives the same hands.
        enabled = _set_parameter(s.probe, "smoothing.enabled",
                                 ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True),
                                 node="acr_session")
        assert enabled.successful
        stamp2 = (1700001001, 0)
        s.send(image_msg(magic_bgr(), stamp=stamp2, frame_id="acr_frame"),
               info=camera_info_msg(640, 360, 600.0, stamp=stamp2, frame_id="acr_frame"))
        smoothed = s.answer(stamp2, timeout=120)
        for before, after in zip(msg.hands, smoothed.hands):
            assert np.allclose(before.finger_pose, after.finger_pose, atol=1e-5)
    finally:
        code, _ = s.close()
    assert code == 0


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
    code, seconds = s.process.stop(signal.SIGTERM)
    s.probe.close()
    assert code == 0 and seconds < 2.0, (code, seconds, s.process.log())


@pytest.mark.parametrize("params, expected", [
    (dict(backend="openpose"), "backend"),
    (dict(detection_threshold=-3.0), "detection_threshold"),
    (dict(image_topics=["/bad topic name"]), "bad topic name"),
])
def test_bad_start_up_parameters_exit_with_a_clear_message(tmp_path, params, expected):
    process = NodeProcess("acr_ros.hands_node", params, tmp_path, name="bad_params")
    code = process.process.wait(timeout=60)
    log = process.log()
    assert code != 0 and expected in log and "Traceback" not in log, log
