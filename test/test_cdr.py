"""acr_ros.cdr: CdrEncoder against rclpy's serializer (the same values) and rosbags' (the same bytes,
zero padding included) on every message type the recording writer emits; CdrDecoder against
rclpy's deserializer on what the recording reader decodes."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from acr_ros import ros_messages
from acr_ros.acr.hands import FrameResult, HandResult
from acr_ros.cdr import CdrDecoder, CdrEncoder
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
def test_the_encoding_is_cdr_with_zero_padding(frame_id):
    store = typestore()
    encoder = CdrEncoder(store)
    for msgtype, msg in messages(frame_id):
        raw = serialize_message(msg)  # rclpy's, padding as the allocator left it
        encoded = encoder.encode(msg, msgtype)
        assert encoded == bytes(store.serialize_cdr(store.deserialize_cdr(raw, msgtype), msgtype)), msgtype
        again = serialize_message(deserialize_message(encoded, type(msg)))  # rclpy reads the same values back
        assert encoder.encode(deserialize_message(again, type(msg)), msgtype) == encoded, msgtype


def test_markers_with_points_as_arrays_encode_like_point_objects():
    encoder = CdrEncoder(typestore())
    header = Header(frame_id="cam")
    frame = FrameResult(hands=[hand("left", True), hand("right", False)])
    as_objects = ros_messages.frame_markers(frame, header, FACES, {})
    as_arrays = ros_messages.frame_markers(frame, header, FACES, {}, points_as_arrays=True)
    assert isinstance(as_arrays.markers[0].points, np.ndarray)
    assert encoder.encode(as_arrays, "visualization_msgs/msg/MarkerArray") == \
        encoder.encode(as_objects, "visualization_msgs/msg/MarkerArray")


def test_an_object_without_the_type_s_fields_is_refused():
    with pytest.raises(AttributeError):
        CdrEncoder(typestore()).encode(Header(frame_id="cam"), "sensor_msgs/msg/CameraInfo")


def test_decoding_reads_what_rclpy_reads_without_copying_the_pixels():
    decoder = CdrDecoder(typestore())
    image = bgr_to_image(RNG.integers(0, 255, (6, 9, 3), dtype=np.uint8), Header(frame_id="camera"))
    image.header.stamp.sec, image.header.stamp.nanosec = 1690000000, 5
    info = CameraInfo(width=9, height=6, distortion_model="plumb_bob", d=[0.1, -0.2, 0.0, 0.0, 0.01])
    info.k = [300.0, 0.0, 4.5, 0.0, 301.0, 3.0, 0.0, 0.0, 1.0]
    compressed = CompressedImage(format="jpeg")
    compressed.data = b"\xff\xd8\xff\xe0 not really a jpeg"
    for msg, msgtype in ((image, "sensor_msgs/msg/Image"), (info, "sensor_msgs/msg/CameraInfo"),
                         (compressed, "sensor_msgs/msg/CompressedImage")):
        raw = bytearray(serialize_message(msg))
        decoded = decoder.decode(raw, msgtype)
        reference = deserialize_message(bytes(raw), type(msg))
        for field in reference.get_fields_and_field_types():
            value, expected = getattr(decoded, field.lstrip("_")), getattr(reference, field.lstrip("_"))
            if hasattr(expected, "get_fields_and_field_types"):
                continue  # nested messages: the header is checked below
            assert np.array_equal(np.asarray(value), np.asarray(expected)), (msgtype, field)
        assert (decoded.header.stamp.sec, decoded.header.frame_id) == (reference.header.stamp.sec,
                                                                       reference.header.frame_id)
    pixels = decoder.decode(raw := bytearray(serialize_message(image)), "sensor_msgs/msg/Image").data
    raw[-1] ^= 0xFF
    assert pixels[-1] == raw[-1] and pixels.flags.writeable  # a view of the buffer, not a copy
    with pytest.raises(ValueError):
        decoder.decode(bytes(raw[:40]), "sensor_msgs/msg/Image")
