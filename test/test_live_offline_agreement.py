"""Live and offline agree: the same frames through the node over DDS and through acr_offline on a
recording of them give the same Hands, field for field, and TF and markers that follow the same
parameters. The frames: colour with CameraInfo and an aligned depth image stamped a few ms before
its colour frame (as RGB-D drivers stamp their two sensors), and a gap that ends the hand tracks."""
import cv2
import pytest
import yaml
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import Image
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from acr_ros import offline
from acr_ros.backends import create_backend
from acr_ros.msg import Hand, Hands
from acr_ros.recordings import typestore
from support.bags import read_bag
from support.depth_topics import flat_depth_msg
from support.ros_harness import RELIABLE, Session, camera_info_msg, image_msg, magic_bgr

pytestmark = pytest.mark.slow(seconds=8)

NAME = "agree_hands"
WIDTH, HEIGHT, FOCAL = 640, 360, 500.0
DEPTH_OFFSET_NS = 3_000_000     # depth stamped 3 ms before its colour frame (within 20 ms)
SECOND = 1_000_000_000
T0 = 1_700_050_000
# Frames at 10 Hz, then a 3 s gap (track_timeout 2 s): the tracks end, new ones start.
STAMPS = [T0 * SECOND + i * SECOND // 10 for i in range(3)] + [(T0 + 3) * SECOND + i * SECOND // 10 for i in range(2)]
# Output parameters away from their defaults: both paths must follow them.
PARAMS = {"frame_prefix": "agreed", "tf_joints": False, "marker_lifetime": 0.5, "track_timeout": 2.0,
          "depth_max_time_difference": 0.02}


def frames():
    left, right = magic_bgr(), cv2.flip(magic_bgr(), 1)
    return [left, left, right, left, left]


def messages(index: int, bgr):
    sec, nanosec = divmod(STAMPS[index], SECOND)
    depth = flat_depth_msg(WIDTH, HEIGHT, 600, divmod(STAMPS[index] - DEPTH_OFFSET_NS, SECOND))
    info = camera_info_msg(WIDTH, HEIGHT, FOCAL, stamp=(sec, nanosec))
    return depth, info, image_msg(bgr, stamp=(sec, nanosec))


def comparable(hands: Hands) -> dict:
    """A Hands message as plain values: every field (no timing or diagnostics are in it)."""
    def plain(value):
        if hasattr(value, "get_fields_and_field_types"):
            return {field: plain(getattr(value, field)) for field in value.get_fields_and_field_types()}
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            return [plain(item) for item in (value.tolist() if hasattr(value, "tolist") else value)]
        return value
    return plain(hands)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """What the node publishes for the frames, each sent once the previous one was answered."""
    depth_topic = f"/{NAME}_cam0/depth/image_raw"
    session = Session(tmp_path_factory.mktemp("live"), dict(depth_topics=[depth_topic], **PARAMS),
                      name=NAME, backend=create_backend("mediapipe")[0])
    try:
        tf = session.probe.record(TFMessage, "/tf", RELIABLE)
        markers = session.probe.record(MarkerArray, f"/{NAME}/markers", 10)
        depth_publisher = session.probe.publisher(Image, depth_topic, RELIABLE)
        session.probe.wait_for_subscribers(depth_publisher)
        pairing = session.node.cameras[0].depth
        answers = []
        for index, bgr in enumerate(frames()):
            depth, info, image = messages(index, bgr)
            depth_publisher.publish(depth)  # before its colour frame
            stamp = STAMPS[index] - DEPTH_OFFSET_NS
            assert session.probe.spin_until(lambda: pairing.partner(stamp, 0) is not None, 10)
            session.send(image, info=info)
            answers.append(session.answer(divmod(STAMPS[index], SECOND)))
        session.probe.spin_until(lambda: len(markers) >= len(STAMPS), 5)
        yield answers, list(tf), list(markers)
    finally:
        session.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """acr_offline's output bag for a recording of the same messages, in the order they were sent."""
    folder = tmp_path_factory.mktemp("offline")
    bag = folder / "agree"
    store = typestore()
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in (
            ("/cam/depth/image_raw", "sensor_msgs/msg/Image"), ("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
            ("/cam/image_raw", "sensor_msgs/msg/Image"))}
        for index, bgr in enumerate(frames()):
            for offset, (topic, msg) in enumerate(zip(connections, messages(index, bgr))):
                writer.write(connections[topic], STAMPS[index] + offset * 1_000_000, serialize_message(msg))
    params = folder / "hands.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": PARAMS}}))
    assert offline.main(["--inputs", str(bag), "-o", str(folder / "out"), "--backend", "mediapipe", "--no-render",
                         "--depth-topic", "/cam/depth/image_raw", "--params-file", str(params), "-q"]) == 0
    return read_bag(folder / "out" / "agree_hands")


def test_the_hands_are_equal_field_for_field(live, recorded):
    answers, _, _ = live
    offline_hands = [m.msg for m in recorded if m.topic == "/acr_hands/hands"]
    assert len(offline_hands) == len(answers) == len(STAMPS)
    # The frames did what they are for: depth placed the hands, the gap ended the tracks.
    assert all(hand.depth_source == Hand.DEPTH_FROM_SENSOR for msg in answers for hand in msg.hands)
    tracks = [[hand.track_id for hand in msg.hands] for msg in answers]
    assert tracks[3] and tracks[3][0] not in (tracks[0] + tracks[1] + tracks[2])
    for live_msg, offline_msg in zip(answers, offline_hands):
        assert comparable(live_msg) == comparable(offline_msg)


def test_tf_and_markers_follow_the_same_parameters(live, recorded):
    _, live_tf, live_markers = live
    offline_tf = [m.msg for m in recorded if m.topic == "/tf"]
    offline_markers = [m.msg for m in recorded if m.topic == "/acr_hands/markers"]
    frames_of = lambda messages: sorted({t.child_frame_id for m in messages for t in m.transforms})  # noqa: E731
    assert frames_of(live_tf) == frames_of(offline_tf) and frames_of(offline_tf)
    assert all(name.startswith("agreed_") and name.endswith("_wrist") for name in frames_of(offline_tf))  # no joints
    lifetimes = lambda arrays: {(m.lifetime.sec, m.lifetime.nanosec) for a in arrays for m in a.markers  # noqa: E731
                                if m.action == m.ADD}
    assert lifetimes(live_markers) == lifetimes(offline_markers) == {(0, 500_000_000)}
