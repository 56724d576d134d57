"""The hands node's inputs over DDS (FakeBackend in this process): qos_reliability auto follows the
publishers, the standard qos_overrides take precedence, and the diagnostics say what each camera delivers."""
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from support.fake_backend import FakeBackend
from support.ros_harness import RELIABLE, Session, camera_info_msg, image_msg, magic_bgr

pytestmark = pytest.mark.slow(seconds=12)  # waiting on DDS and the node's 1 s timers


@pytest.fixture
def auto_session(tmp_path):
    session = Session(tmp_path, dict(qos_reliability="auto", diagnostics_period=0.1),
                      name="auto_hands", backend=FakeBackend())
    # The session's publishers are reliable: auto re-subscribes reliably within a second; the
    # tests start once it has and the new subscriptions have matched.
    inputs = session.node.cameras[0].inputs
    assert session.probe.spin_until(lambda: all(i.reliability == ReliabilityPolicy.RELIABLE for i in inputs), 10)
    session.probe.spin_until(lambda: False, 0.5)
    yield session
    session.close()


def test_auto_reliability_follows_the_publishers(auto_session):
    s = auto_session
    image = s.node.cameras[0].image_input
    assert image.reliability == ReliabilityPolicy.RELIABLE  # reliable publishers (the fixture waited for it)
    stamp = (1700002000, 0)
    s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(640, 360, 500.0, stamp=stamp))
    assert s.answer(stamp).hands
    assert s.probe.spin_until(lambda: s.status().get("input /auto_hands_cam0/image_raw", "").startswith("reliable"), 10)
    # A best-effort publisher joins: a reliable subscription would never hear it.
    best_effort = s.probe.publisher(Image, "/auto_hands_cam0/image_raw",
                                    QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert s.probe.spin_until(lambda: image.reliability == ReliabilityPolicy.BEST_EFFORT, 10)
    s.probe.wait_for_subscribers(best_effort)
    stamp = (1700002001, 0)
    best_effort.publish(image_msg(magic_bgr(), stamp=stamp))
    assert s.answer(stamp, timeout=20).hands


def test_diagnostics_warn_on_default_intrinsics_and_name_grey_input(auto_session):
    s = auto_session
    stamp = (1700002100, 0)
    s.send(image_msg(magic_bgr(), "mono8", stamp=stamp))  # no CameraInfo
    s.answer(stamp)
    key = "input /auto_hands_cam0/image_raw"
    assert s.probe.spin_until(lambda: "default intrinsics" in s.status().get(key, ""), 10)
    assert "mono8 (grey: replicated to 3 channels" in s.status()[key]
    latest = s.reports()[-1]
    assert latest.level == DiagnosticStatus.WARN and "default intrinsics" in latest.message


def test_diagnostics_say_while_inactive(auto_session):
    s = auto_session
    assert s.probe.spin_until(lambda: s.reports() and s.reports()[-1].message == "active", 10)
    s.node.trigger_deactivate()
    assert s.probe.spin_until(lambda: s.reports()[-1].message.startswith("inactive"), 10)
    assert s.reports()[-1].level == DiagnosticStatus.WARN


def test_a_fixed_reliability_is_kept_and_an_incompatible_camera_is_reported(tmp_path):
    # qos_reliability reliable for every input; the image topic's own override makes it best effort.
    overrides = {"qos_overrides./fixed_hands_cam0/image_raw.subscription.reliability": "best_effort",
                 "qos_overrides./fixed_hands/left/wrist_pose.publisher.depth": 3}
    s = Session(tmp_path, dict(qos_reliability="reliable", diagnostics_period=0.1, **overrides),
                name="fixed_hands", backend=FakeBackend())
    try:
        image, info = s.node.cameras[0].image_input, s.node.cameras[0].info_input
        assert (image.reliability, info.reliability) == (ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE)
        assert not image.follows_publishers and not info.follows_publishers
        # Outputs take the overrides too, into a copy of the node's profile (not the module's).
        from acr_ros.node.outputs import WRIST_POSE_QOS
        assert s.node.outputs.wrist_poses["left"].qos_profile.depth == 3 and WRIST_POSE_QOS.depth == 1
        assert s.node.outputs.wrist_poses["right"].qos_profile.depth == 1
        # A best-effort camera_info publisher never reaches the reliable subscription: said, not re-chosen.
        s.probe.publisher(CameraInfo, "/fixed_hands_cam0/camera_info",
                          QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert s.probe.spin_until(lambda: "incompatible" in s.reports()[-1].message if s.reports() else False, 10)
        assert s.reports()[-1].level == DiagnosticStatus.WARN
        assert "qos_overrides./fixed_hands_cam0/camera_info.subscription.reliability" in s.reports()[-1].message
        assert info.reliability == ReliabilityPolicy.RELIABLE
    finally:
        s.close()


def test_a_first_frame_waits_for_its_late_camera_info_and_the_fallback_is_warned_once(auto_session, capfd):
    s = auto_session
    stamp = (1700002200, 0)
    s.images["cam0"].publish(image_msg(magic_bgr(), stamp=stamp))  # the frame overtakes its CameraInfo
    s.probe.spin_until(lambda: False, 0.3)
    s.infos["cam0"].publish(camera_info_msg(640, 360, 500.0, stamp=stamp))
    assert not s.answer(stamp).default_intrinsics  # it waited (camera_info_timeout 1 s), not fell back
    for second in (1, 2):  # a camera_info that says uncalibrated: the default, warned once
        stamp = (1700002200 + second, 0)
        info = camera_info_msg(640, 360, 500.0, stamp=stamp)
        info.k = [0.0] * 9
        s.send(image_msg(magic_bgr(), stamp=stamp), info=info)
        assert s.answer(stamp).default_intrinsics
    assert capfd.readouterr().err.count("Fix: publish the camera's calibration") == 1


def test_inputs_are_named_by_their_remapped_topics():
    from rclpy.parameter import Parameter

    from acr_ros.hands_node import HandsNode
    from support.ros_harness import Probe

    probe = Probe("remap_probe")
    node = HandsNode(backend_factory=lambda: (FakeBackend(), "test backend"), context=probe.context,
                     cli_args=["--ros-args", "-r", "__node:=remapped_hands", "-r", "image_raw:=/camera/color/image_raw",
                               "-r", "camera_info:=/camera/color/camera_info"],
                     parameter_overrides=[Parameter("image_topics", value=["image_raw"])])
    try:
        assert node.start()
        # What diagnostics and logs name each input by: the topic it really reads.
        assert [i.resolved for i in node.cameras[0].inputs] == ["/camera/color/camera_info", "/camera/color/image_raw"]
    finally:
        node.shutdown()
        node.destroy_node()
        probe.close()


@pytest.fixture
def remapped_node():
    """make(name, compressed) -> (node, probe, backend): a node started directly (no launch file) with
    `-r image_raw:=/<name>/image_raw`, spun by its probe."""
    from rclpy.parameter import Parameter

    from acr_ros.hands_node import HandsNode
    from support.ros_harness import Probe

    made = []

    def make(name, compressed):
        probe, backend = Probe(f"{name}_probe"), FakeBackend()
        node = HandsNode(backend_factory=lambda: (backend, "test backend"), context=probe.context,
                         cli_args=["--ros-args", "-r", f"__node:={name}", "-r", f"image_raw:=/{name}/image_raw"],
                         parameter_overrides=[Parameter("image_topics", value=["image_raw"]),
                                              Parameter("compressed", value=compressed),
                                              Parameter("qos_reliability", value="reliable")])
        made.append((node, probe))
        probe.executor.add_node(node)
        assert node.start()
        return node, probe, backend

    yield make
    for node, probe in made:
        node.shutdown()
        node.destroy_node()
        probe.close()


def test_the_compressed_input_follows_the_remapped_image_topic(remapped_node):
    import cv2

    node, probe, backend = remapped_node("zip_remap", compressed=True)
    assert node.cameras[0].image_input.resolved == "/zip_remap/image_raw/compressed"
    images = probe.publisher(CompressedImage, "/zip_remap/image_raw/compressed", RELIABLE)
    probe.wait_for_subscribers(images)
    message = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", magic_bgr())[1].tobytes())
    message.header.stamp.sec = 1700002300
    images.publish(message)
    assert probe.spin_until(lambda: backend.batches, 10)  # received and decoded: the photo's size
    assert backend.batches[-1]["images"][0].shape == magic_bgr().shape


def test_the_camera_info_follows_the_remapped_image_topic(remapped_node):
    """`-r image_raw:=/<name>/image_raw` alone: the CameraInfo is /<name>/camera_info, as image_transport
    has it (hands.launch.py remaps camera_info itself, and that rule wins: test_launch.py)."""
    node, probe, backend = remapped_node("info_remap", compressed=False)
    assert node.cameras[0].inputs[0].resolved == "/info_remap/camera_info"
    infos = probe.publisher(CameraInfo, "/info_remap/camera_info", RELIABLE)
    images = probe.publisher(Image, "/info_remap/image_raw", RELIABLE)
    probe.wait_for_subscribers(infos)
    probe.wait_for_subscribers(images)
    height, width = magic_bgr().shape[:2]
    infos.publish(camera_info_msg(width, height, fx=777.0, stamp=(1700002400, 0)))
    images.publish(image_msg(magic_bgr(), stamp=(1700002400, 0)))
    assert probe.spin_until(lambda: backend.batches, 10)
    assert backend.batches[-1]["intrinsics"][0].fx == 777.0  # the camera's K, not the default


def test_a_dropped_frame_is_named_by_its_remapped_topic(remapped_node, capfd):
    node, probe, backend = remapped_node("drop_remap", compressed=False)
    images = probe.publisher(Image, "/drop_remap/image_raw", RELIABLE)
    probe.wait_for_subscribers(images)
    bad = image_msg(magic_bgr())
    bad.encoding = "64FC4"
    images.publish(bad)
    assert probe.spin_until(lambda: node.counters.get("bad_input") == 1, 10)
    assert "dropping a frame from /drop_remap/image_raw: " in capfd.readouterr().err


def test_parameter_changes_are_logged(auto_session, capfd):
    from rclpy.parameter import Parameter

    auto_session.node.set_parameters([Parameter("track_timeout", value=3.5)])
    assert "parameter track_timeout set to 3.5" in capfd.readouterr().err
