"""acr_ros.cdr: the padding of rclpy-serialized messages zeroed, checked against rosbags' own
serializer (which writes into a zeroed buffer) on every message type the recording writer emits."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from acr_ros import ros_messages
from acr_ros.acr.hands import FrameResult, HandResult
from acr_ros.cdr import PaddingWalker
from acr_ros.image_conversion import bgr_to_image
from acr_ros.recordings import typestore

RNG = np.random.default_rng(0)
FACES = {"left": RNG.integers(0, 778, (1538, 3)), "right": RNG.integers(0, 778, (1538, 3))}


def hand(side, mano):
    joints = RNG.normal(size=(21, 3)) * 0.05 + [0, 0, 0.5]
    extra = dict(vertices=RNG.normal(size=(778, 3)) * 0.05 + [0, 0, 0.5], global_orient=RNG.normal(size=3),
                 finger_pose=RNG.normal(size=45), shape=RNG.normal(size=10), weak_camera=RNG.normal(size=3),
                 joint_rotations=np.repeat(np.eye(3)[None], 21, 0)) if mano else {}
    return HandResult(side=side, score=0.9, joints=joints, keypoints=RNG.normal(size=(21, 2)) * 50 + 100,
                      wrist_rotation=np.eye(3), **extra)


def messages(frame_id):
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = 1690000000, 123
    for frame in (FrameResult(hands=[hand("left", True), hand("right", True)]),
                  FrameResult(hands=[hand("right", False)]), FrameResult(hands=[])):
        yield "acr_ros/msg/Hands", ros_messages.frame_to_msg(frame, header, 640, 480, "acr", "model", "wild.pkl")
        yield "tf2_msgs/msg/TFMessage", TFMessage(transforms=ros_messages.hand_transforms(frame, header))
        yield "visualization_msgs/msg/MarkerArray", ros_messages.frame_markers(frame, header, FACES,
                                                                               {frame_id: {"left", "right"}})
    yield "sensor_msgs/msg/Image", bgr_to_image(RNG.integers(0, 255, (5, 7, 3), dtype=np.uint8), header)
    yield "acr_ros/msg/HandMesh", ros_messages.mesh_msg(FACES["left"], FACES["right"], header.stamp)


@pytest.mark.parametrize("frame_id", ["", "ab", "cam", "camera_color_optical_frame"])  # every string alignment
def test_padding_is_zero_and_values_untouched(frame_id):
    store = typestore()
    walker = PaddingWalker(store)
    for msgtype, msg in messages(frame_id):
        raw = serialize_message(msg)
        zeroed = walker.zero_padding(raw, msgtype)
        assert zeroed == bytes(store.serialize_cdr(store.deserialize_cdr(raw, msgtype), msgtype)), msgtype
        again = serialize_message(deserialize_message(zeroed, type(msg)))  # the values survive
        assert walker.zero_padding(again, msgtype) == zeroed, msgtype


def test_a_message_of_another_layout_is_refused():
    raw = serialize_message(Header(frame_id="camera"))
    with pytest.raises(ValueError):
        PaddingWalker(typestore()).zero_padding(raw, "acr_ros/msg/Hands")
