"""CDR in the recordings. Writing: acr_ros.cdr.CdrEncoder against rclpy's serializer (the same values)
and rosbags' (the same bytes, zero padding included) on every message type the recording writer
emits. Reading: rosbags' deserializer as recordings.read_frames uses it (pixels writable, messages
the image conversions accept, undecodable images reported)."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker

from acr_ros import ros_messages
from acr_ros.acr.hands import FrameResult
from acr_ros.cdr import CdrEncoder
from acr_ros.image_conversion import bgr_to_image
from acr_ros.recordings import Recording, RecordedFrame, read_frames, typestore
from support.benchmarks import load_benchmark
from support.bags import CAMERA_FRAME, DEPTH_TOPIC, FOCAL, IMAGE_TOPIC, clip_frames, write_bag
from support.hands import FACES_BY_SIDE, make_hand


def outputs(frame: FrameResult, header, overlay: np.ndarray, points_as_arrays=False):
    """(type, message) of everything the recording writer emits for one frame, and the mesh."""
    hands = ros_messages.frame_to_msg(frame, header, overlay.shape[1], overlay.shape[0], "acr", "model", "wild.pkl")
    yield "acr_ros/msg/Hands", hands
    for hand in hands.hands:
        yield "geometry_msgs/msg/PoseStamped", ros_messages.wrist_pose_msg(hands, hand)
    yield "tf2_msgs/msg/TFMessage", TFMessage(transforms=ros_messages.hand_transforms(frame, header))
    yield "visualization_msgs/msg/MarkerArray", ros_messages.frame_markers(
        frame, header, FACES_BY_SIDE, {header.frame_id: {"left", "right"}}, points_as_arrays=points_as_arrays)
    yield "sensor_msgs/msg/Image", bgr_to_image(overlay, header)
    yield "acr_ros/msg/HandMesh", ros_messages.mesh_msg(FACES_BY_SIDE["left"], FACES_BY_SIDE["right"], header.stamp)


def rosbags_bytes(msg, msgtype: str) -> bytes:
    """rosbags' CDR of an rclpy message: rclpy's bytes read and written again by rosbags."""
    store = typestore()
    return bytes(store.serialize_cdr(store.deserialize_cdr(serialize_message(msg), msgtype), msgtype))


def stamped(frame_id: str) -> Header:
    return Header(stamp=Time(sec=1690000000, nanosec=123), frame_id=frame_id)


@pytest.mark.parametrize("frame_id", ["", "ab", "cam", "camera_color_optical_frame"])  # every string alignment
def test_the_encoding_is_rosbags_cdr(frame_id):
    encoder = CdrEncoder(typestore())
    header, small = stamped(frame_id), np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    seen = set()
    for frame in (FrameResult(hands=[make_hand("left", 0), make_hand("right", 1)]),
                  FrameResult(hands=[make_hand("right", 2, mano=False)]), FrameResult(hands=[])):
        for msgtype, msg in outputs(frame, header, small):
            encoded = encoder.encode(msg, msgtype)
            assert encoded == rosbags_bytes(msg, msgtype), msgtype
            back = deserialize_message(bytes(encoded), type(msg))  # rclpy reads the same values
            assert encoder.encode(back, msgtype) == encoded, msgtype
            seen.add(msgtype)
    assert len(seen) == 6


def test_one_frame_of_the_recording_writer_is_rosbags_cdr():
    """What HandsBag writes for a frame with two hands: vertices, meshes of 4614 points (as arrays),
    TF of 42 joints, a 1080p overlay; the markers as rosbags writes the same markers of Points."""
    encoder = CdrEncoder(typestore())
    frame = FrameResult(hands=[make_hand("left", 3), make_hand("right", 4, score=0.7)])
    overlay = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    header = stamped(CAMERA_FRAME)
    written = dict(outputs(frame, header, overlay, points_as_arrays=True))
    reference = dict(outputs(frame, header, overlay))
    assert len(written["tf2_msgs/msg/TFMessage"].transforms) == 42
    meshes = [m.points for m in written["visualization_msgs/msg/MarkerArray"].markers
              if m.type == Marker.TRIANGLE_LIST and m.action == Marker.ADD]
    assert [type(points) for points in meshes] == [np.ndarray] * 2 and [len(p) for p in meshes] == [4614] * 2
    for msgtype, msg in written.items():
        assert encoder.encode(msg, msgtype) == rosbags_bytes(reference[msgtype], msgtype), msgtype


def test_an_object_without_the_type_s_fields_is_refused():
    with pytest.raises(AttributeError):
        CdrEncoder(typestore()).encode(Header(frame_id="cam"), "sensor_msgs/msg/CameraInfo")


@pytest.mark.parametrize("compressed", [False, True])
def test_read_frames_decodes_with_rosbags_into_writable_pixels(tmp_path, compressed):
    images = clip_frames(2)
    recorded = write_bag(tmp_path / "bag", images, compressed=compressed, depth_mm=None if compressed else 700)
    recording = Recording(recorded.path)
    selection = recording.select(depth_topic=None if compressed else DEPTH_TOPIC)
    frames = [item for item in read_frames(recording, selection) if isinstance(item, RecordedFrame)]
    assert [(f.input.header.stamp.sec, f.input.header.stamp.nanosec) for f in frames] == recorded.stamps
    for frame, image in zip(frames, images):
        assert frame.problem == "" and frame.input.image.flags.writeable  # as a subscription's: the engine may write
        assert frame.input.header.frame_id == CAMERA_FRAME and frame.input.intrinsics.fx == FOCAL
        if compressed:
            assert frame.input.image.shape == image.shape and np.abs(frame.input.image.astype(int) - image).mean() < 3
        else:
            assert np.array_equal(frame.input.image, image)
            assert np.allclose(frame.input.depth, 0.7)


def test_an_undecodable_image_is_reported_and_the_next_one_read(tmp_path):
    image = bgr_to_image(clip_frames(1)[0], stamped(CAMERA_FRAME))
    raw = serialize_message(image)
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=typestore())
        writer.write(connection, 1, raw[:len(raw) // 2])  # cut short: its pixels end past the data
        writer.write(connection, 2, raw)
    recording = Recording(tmp_path / "bag")
    first, second = read_frames(recording, recording.select())
    assert first.input is None and first.problem.startswith("cannot decode the image")
    assert second.problem == "" and second.input.image.flags.writeable


def test_the_benchmark_prints_every_message_and_the_frame(capsys):
    """benchmarks/cdr.py (the figures behind keeping CdrEncoder) runs as documented."""
    benchmark = load_benchmark("cdr")
    assert benchmark.main(["--repeat", "1"]) == 0
    rows = [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert {"| Hands (2 hands)", "| TFMessage (42 joints)", "| MarkerArray (2 meshes)", "| Image (1080p overlay)",
            "| **per frame**", "| Image (1080p bgr8)", "| CameraInfo"} <= set(rows)
