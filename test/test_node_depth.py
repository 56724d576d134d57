"""The hands node with an aligned depth image (depth_topics), over DDS with a real photo and the
MediaPipe backend: a flat depth image behind the photographed hand sets the hand's distance."""
import numpy as np
import pytest

from sensor_msgs.msg import CompressedImage, Image

from acr_ros.backends import create_backend
from acr_ros.node.parameters import depth_topics_problem
from acr_ros.msg import Hand
from support.depth_topics import compressed_depth_msg, flat_depth_msg
from support.ros_harness import RELIABLE, Session, camera_info_msg, image_msg, magic_bgr

WIDTH, HEIGHT, FOCAL = 640, 360, 500.0


@pytest.fixture(scope="module")
def depth_session(tmp_path_factory):
    name = "depth_hands"
    # cam0: raw 16UC1 depth; cam1: the same as compressedDepth.
    topics = {"cam0": (Image, f"/{name}_cam0/depth/image_raw"),
              "cam1": (CompressedImage, f"/{name}_cam1/depth/image_raw/compressedDepth")}
    session = Session(tmp_path_factory.mktemp("depth"),
                      dict(depth_topics=[topic for _, topic in topics.values()], diagnostics_period=0.2),
                      topics=tuple(topics), name=name, backend=create_backend("mediapipe")[0])
    session.depth = {camera: session.probe.publisher(msg_type, topic, RELIABLE)
                     for camera, (msg_type, topic) in topics.items()}
    for publisher in session.depth.values():
        session.probe.wait_for_subscribers(publisher)
    yield session
    session.close()


def send_depth(session, msg, camera="cam0"):
    """Publishes a depth image and waits until the node holds it (its pairing is by stamp)."""
    session.depth[camera].publish(msg)
    stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    pairing = session.node.cameras[list(session.depth).index(camera)].depth
    assert session.probe.spin_until(lambda: pairing.partner(stamp_ns, 0) is not None, 10)


def wrist_z(hand) -> float:
    return hand.joints[0].z


def test_a_flat_depth_image_puts_the_wrist_at_its_distance(depth_session):
    s = depth_session
    stamp = (1700001000, 0)
    send_depth(s, flat_depth_msg(WIDTH, HEIGHT, 600, stamp))
    s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(WIDTH, HEIGHT, FOCAL, stamp=stamp))
    hand = s.answer(stamp).hands[0]
    assert hand.depth_source == Hand.DEPTH_FROM_SENSOR
    # The wrist joint lies about a hand's half thickness behind the wall's surface.
    assert wrist_z(hand) == pytest.approx(0.6, abs=0.03)
    assert hand.wrist_pose.position.z == pytest.approx(wrist_z(hand), abs=1e-4)  # the pose follows
    # The residual: how far the other joints' monocular depths sit from a flat wall (a hand is not flat).
    assert hand.depth_samples >= 12 and 0 <= hand.depth_residual < 0.1
    assert s.probe.spin_until(lambda: float(s.status().get("fusion p50 (ms)", 0)) > 0, 10)  # its own stage


def test_a_frame_without_a_depth_partner_keeps_the_model_placement_and_is_counted(depth_session):
    s = depth_session
    send_depth(s, flat_depth_msg(WIDTH, HEIGHT, 600, (1700001100, 0)))
    stamp = (1700001101, 0)  # a second later: beyond depth_max_time_difference
    s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(WIDTH, HEIGHT, FOCAL, stamp=stamp))
    hand = s.answer(stamp).hands[0]
    assert hand.depth_source == Hand.DEPTH_FROM_MODEL and np.isnan(hand.depth_residual)
    assert s.probe.spin_until(lambda: int(s.status().get("frames without a depth partner", 0)) >= 1, 10)


def test_a_depth_image_of_another_size_is_refused_and_said_why(depth_session):
    s = depth_session
    stamp = (1700001200, 0)
    send_depth(s, flat_depth_msg(WIDTH // 2, HEIGHT // 2, 600, stamp))
    s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(WIDTH, HEIGHT, FOCAL, stamp=stamp))
    assert s.answer(stamp).hands[0].depth_source == Hand.DEPTH_FROM_MODEL
    assert s.probe.spin_until(lambda: "320x180" in s.status().get("last refused depth", ""), 10)
    assert int(s.status()["depth images refused"]) >= 1



def test_compressed_depth_places_the_hand_too(depth_session):
    s = depth_session
    stamp = (1700001300, 0)
    send_depth(s, compressed_depth_msg(flat_depth_msg(WIDTH, HEIGHT, 600, stamp)), camera="cam1")
    s.send(image_msg(magic_bgr(), stamp=stamp), topic="cam1", info=camera_info_msg(WIDTH, HEIGHT, FOCAL, stamp=stamp))
    hand = s.answer(stamp).hands[0]
    assert hand.depth_source == Hand.DEPTH_FROM_SENSOR and wrist_z(hand) == pytest.approx(0.6, abs=0.03)


def test_depth_topics_must_match_the_cameras():
    assert depth_topics_problem(["a/image_raw"], [""]) is None               # the default: no depth
    assert depth_topics_problem(["a/image_raw", "b/image_raw"], ["", "b/depth"]) is None
    assert "one per camera" in depth_topics_problem(["a/image_raw", "b/image_raw"], ["a/depth"])


def test_a_hand_without_depth_under_it_keeps_the_model_placement_and_says_why(depth_session):
    s = depth_session
    stamp = (1700001400, 0)
    send_depth(s, flat_depth_msg(WIDTH, HEIGHT, 0, stamp))  # 0: no measurement anywhere
    s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(WIDTH, HEIGHT, FOCAL, stamp=stamp))
    hand = s.answer(stamp).hands[0]
    assert hand.depth_source == Hand.DEPTH_FROM_MODEL and hand.depth_samples == 0
    assert s.probe.spin_until(
        lambda: "valid depth samples" in s.status().get("why the last one was not placed", ""), 10)
