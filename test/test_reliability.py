"""Faults a lab robot meets, survived by the hands node: publisher restarts, missing camera_info,
wrong topic types, random input, accelerator out-of-memory (the soak: test_soak.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from acr_ros.backends.base import BackendOutOfMemoryError
from support.fake_backend import FakeBackend
from support.ros_harness import RELIABLE, Probe, Session, camera_info_msg, image_msg, magic_bgr

pytestmark = pytest.mark.slow(seconds=15)  # most of it waiting on DDS


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = Session(tmp_path_factory.mktemp("reliability"), dict(backend="mediapipe"), name="reliability_hands")
    yield s
    assert s.close() == 0


def test_camera_publisher_stops_and_restarts(session):
    session.send(image_msg(magic_bgr(), stamp=(1700003000, 0)))
    session.answer((1700003000, 0))
    session.probe.node.destroy_publisher(session.images["cam0"])
    session.probe.spin_until(lambda: False, 1.0)
    session.images["cam0"] = session.probe.publisher(Image, "/reliability_hands_cam0/image_raw", RELIABLE)
    session.probe.wait_for_subscribers(session.images["cam0"], process=session.process)
    session.send(image_msg(magic_bgr(), stamp=(1700003001, 0)))
    assert session.answer((1700003001, 0)).hands


def test_camera_info_missing_then_appearing(session):
    # No camera_info has been sent in this session yet (the tests above send none).
    s = session
    s.send(image_msg(magic_bgr(), stamp=(1700003100, 0)))
    assert s.answer((1700003100, 0)).default_intrinsics
    info = camera_info_msg(640, 360, 700.0, stamp=(1700003101, 0))
    s.send(image_msg(magic_bgr(), stamp=(1700003101, 0)), info=info)
    assert not s.answer((1700003101, 0)).default_intrinsics


def test_a_topic_of_the_wrong_type_is_ignored(session):
    other = Probe("wrong_type_probe")  # one participant cannot hold two types on one topic
    try:
        wrong_image = other.node.create_publisher(String, "/reliability_hands_cam0/image_raw", 10)
        wrong_info = other.node.create_publisher(String, "/reliability_hands_cam0/camera_info", 10)
        for _ in range(5):
            wrong_image.publish(String(data="not an image"))
            wrong_info.publish(String(data="not a camera_info"))
            other.spin_until(lambda: False, 0.05)
        session.send(image_msg(magic_bgr(), stamp=(1700003200, 0)))
        assert session.answer((1700003200, 0)).hands
        assert session.process.alive()
    finally:
        other.close()


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "yuv422_yuy2", "uyvy",
             "bayer_rggb8", "32FC1", "nonsense", ""]


@st.composite
def random_image(draw):
    width, height = draw(st.integers(0, 64)), draw(st.integers(0, 48))
    msg = Image(width=width, height=height, encoding=draw(st.sampled_from(ENCODINGS)),
                is_bigendian=draw(st.integers(0, 1)), step=draw(st.integers(0, 300)))
    msg.data = draw(st.binary(max_size=4 * 64 * 48))
    return msg


@st.composite
def random_camera_info(draw):
    values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.just(0.0))
    return CameraInfo(width=draw(st.integers(0, 5000)), height=draw(st.integers(0, 5000)),
                      k=draw(st.lists(values, min_size=9, max_size=9)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=random_image(), info=random_camera_info())
def test_random_images_and_camera_info_never_break_the_node(session, image, info):
    image.header.stamp.sec, info.header.stamp.sec = 1700003300, 1700003300
    session.send(image, info=info)
    good = (1700003301, len(session.hands))
    info.header.stamp.sec, info.header.stamp.nanosec = good
    session.send(image_msg(magic_bgr(), stamp=good), info=info)
    answer = session.answer(good)
    for hand in answer.hands:
        values = [hand.wrist_pose.position.z, *hand.keypoints, *(c for p in hand.joints for c in (p.x, p.y, p.z))]
        assert np.all(np.isfinite(values))


class OutOfMemoryBackend(FakeBackend):
    """Fails like a GPU out of memory on batches of more than one image."""

    device = "cuda:0"

    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def reconstruct(self, images, intrinsics, timestamps, streams):
        self.batch_sizes.append(len(images))
        if len(images) > 1:
            raise BackendOutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().reconstruct(images, intrinsics, timestamps, streams)


def test_out_of_memory_retries_smaller_batches():
    from acr_ros.frame_processor import FrameInput, FrameProcessor

    backend = OutOfMemoryBackend()
    warnings = []
    processor = FrameProcessor(backend, warn=lambda kind, message: warnings.append(kind))
    batch = [FrameInput(f"cam{i}", 1_700_000_000 * 10**9, magic_bgr(), None) for i in range(4)]
    processed = processor.process(batch)
    assert len(processed) == 4
    assert all(item is not None and item.frame is frame for item, frame in zip(processed, batch))
    assert backend.batch_sizes == [4, 2, 1, 1, 2, 1, 1]
    assert processor.counters.get("inference_errors") == 0
    assert warnings.count("out_of_memory") == 3  # the batch of 4 and both of 2, said each time


def test_a_frame_that_fails_alone_is_counted_and_the_others_go_on():
    from acr_ros.frame_processor import FrameInput, FrameProcessor

    backend = OutOfMemoryBackend()
    processor = FrameProcessor(backend)
    backend.reconstruct = lambda images, intrinsics, timestamps, streams: (_ for _ in ()).throw(
        BackendOutOfMemoryError("CUDA out of memory"))
    assert processor.process([FrameInput("cam0", 0, magic_bgr(), None)]) == [None]
    assert processor.counters.get("inference_errors") == 1
    assert "out of memory" in processor.counters.reason("inference_errors")
