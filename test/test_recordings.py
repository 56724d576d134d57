"""Recordings in, hands out (acr_offline on rosbag2 bags and .mcap files; acr_ros.recordings).

The bags are made here (test/support/bags.py) from the bundled clip, downscaled, with camera_info
and TF on a 2023 clock, in both storage formats; the outputs are read back with rosbags. MediaPipe
runs its real embedded model; ACR runs random weights (the structure of its outputs only).
"""
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from acr_ros import offline
from acr_ros.recordings import Recording, RecordingError, read_frames
from support.bags import (CAMERA_FRAME, DEPTH_TOPIC, FOCAL, IMAGE_TOPIC, INFO_TOPIC, clip_frames, read_bag,
                          topic_metadata, write_bag)

pytestmark = pytest.mark.slow(seconds=9)  # MediaPipe and ACR over the recordings' frames

PREFIX = "/acr_hands"
STORAGES = ("mcap", "sqlite3", "mcap-file")


@pytest.fixture(scope="module")
def frames():
    """Frames 10-17 of the clip at 320x180: the left hand, then the right one from frame 15."""
    return clip_frames(8, start=10)


def run_cli(*args):
    return offline.main([*map(str, args), "-q"])


def interface_hash(package: str, message: str) -> str:
    """The type hash rosidl generated for the installed interface."""
    path = Path(sys.prefix) / "share" / package / "msg" / f"{message}.json"
    return json.loads(path.read_text())["type_hashes"][0]["hash_string"]


def by_topic(messages, topic):
    return [m for m in messages if m.topic == topic]


def output_name(recorded):
    return recorded.path.stem if recorded.path.is_file() else recorded.path.name


# ---- bag to bag -------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
def test_every_frame_at_its_stamp_and_record_time(tmp_path, frames, storage):
    recorded = write_bag(tmp_path / "robot", frames[:6], storage)
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe") == 0
    name = output_name(recorded)
    bag = out / f"{name}_hands"
    messages = read_bag(bag)
    times = [m.time for m in messages]
    assert times == sorted(times)  # written in record order: plays back in step with the input

    hands = by_topic(messages, f"{PREFIX}/hands")
    assert [(m.msg.header.stamp.sec, m.msg.header.stamp.nanosec) for m in hands] == recorded.stamps
    assert [m.time for m in hands] == recorded.record_times
    assert all(m.msg.header.frame_id == CAMERA_FRAME and m.msg.backend == "mediapipe" for m in hands)
    assert not any(m.msg.default_intrinsics for m in hands)  # paired with camera_info recorded after each image
    assert sum(len(m.msg.hands) > 0 for m in hands) >= 5      # a real hand in every frame
    assert all(h.joints[0].z > 0 for m in hands for h in m.msg.hands)
    # The node's hand tracks: a side seen in consecutive frames keeps its id and counts its frames.
    previous = {}
    for m in hands:
        for h in m.msg.hands:
            assert h.track_id > 0
            if h.side in previous and previous[h.side][0] == h.track_id:
                assert h.track_frames == previous[h.side][1] + 1
        previous = {h.side: (h.track_id, h.track_frames) for h in m.msg.hands}
    assert max(h.track_frames for m in hands for h in m.msg.hands) >= 3
    poses = [m for m in messages if m.topic.endswith("/wrist_pose")]
    assert len(poses) == sum(len(m.msg.hands) for m in hands)
    assert all(p.msg.header.frame_id == CAMERA_FRAME and p.time in recorded.record_times for p in poses)

    tf = by_topic(messages, "/tf")
    with_hands = [m for m in hands if m.msg.hands]
    assert [m.time for m in tf] == [m.time for m in with_hands]
    for transforms, hand_msg in zip(tf, with_hands):
        children = {t.child_frame_id for t in transforms.msg.transforms}
        assert {f"hand_{'left' if h.side == 0 else 'right'}_wrist" for h in hand_msg.msg.hands} <= children
        assert all(t.header.stamp == hand_msg.msg.header.stamp and t.header.frame_id == CAMERA_FRAME
                   for t in transforms.msg.transforms)
    markers = by_topic(messages, f"{PREFIX}/markers")
    assert [m.time for m in markers] == [m.time for m in with_hands]
    assert all(k.header.stamp == m.msg.markers[0].header.stamp for m in markers for k in m.msg.markers)

    # The camera's static transforms, passed through as recorded, latched as recorded.
    source = read_bag(recorded.path)
    assert [(m.time, m.raw) for m in by_topic(messages, "/tf_static")] == \
        [(m.time, m.raw) for m in by_topic(source, "/tf_static")]
    metadata = topic_metadata(bag)
    assert metadata["/tf_static"]["qos"] == topic_metadata(recorded.path)["/tf_static"]["qos"]
    assert metadata[f"{PREFIX}/hands"]["hash"] == interface_hash("acr_ros", "Hands")
    assert metadata["/tf"]["hash"] == interface_hash("tf2_msgs", "TFMessage")
    assert metadata[f"{PREFIX}/markers"]["hash"] == interface_hash("visualization_msgs", "MarkerArray")
    assert f"{PREFIX}/overlay" not in metadata and f"{PREFIX}/mesh" not in metadata and IMAGE_TOPIC not in metadata

    with np.load(out / f"{name}_results.npz") as results:
        assert np.array_equal(results["frame_timestamp"], [s + n * 1e-9 for s, n in recorded.stamps])
        assert not results["default_intrinsics"].any()
        assert np.allclose(results["intrinsics"], [FOCAL, FOCAL, 160, 90])
    assert (out / f"{name}_output.mp4").is_file()


def test_a_rerun_gives_byte_identical_output(tmp_path, frames):
    recorded = write_bag(tmp_path / "robot", frames[:5], "sqlite3")
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--no-render",
                       "--batch-size", 2) == 0
    first, second = ((out / "robot_hands" / "robot_hands.mcap").read_bytes() for out in runs)
    assert len(by_topic(read_bag(runs[0] / "robot_hands"), f"{PREFIX}/hands")) == 5
    assert first == second
    with np.load(runs[0] / "robot_results.npz") as a, np.load(runs[1] / "robot_results.npz") as b:
        assert all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a.files)


def test_acr_in_one_batch_with_mesh_and_overlay(tmp_path, frames, acr_checkpoint, mano_dir):
    recorded = write_bag(tmp_path / "robot", frames[:3:2], "mcap")
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "acr", "--checkpoint", acr_checkpoint,
                   "--mano-dir", mano_dir, "--device", "cpu", "--precision", "fp32", "--batch-size", 2,
                   "--bag-overlay") == 0
    bag = out / "robot_hands"
    messages = read_bag(bag)
    mesh = by_topic(messages, f"{PREFIX}/mesh")
    assert len(mesh) == 1 and len(mesh[0].msg.left_triangles) == 1538 * 3
    assert mesh[0].time == recorded.record_times[0]
    metadata = topic_metadata(bag)
    assert metadata[f"{PREFIX}/mesh"]["hash"] == interface_hash("acr_ros", "HandMesh")
    assert metadata[f"{PREFIX}/mesh"]["qos"][0].durability.name == "TRANSIENT_LOCAL"  # late subscribers get it
    hands = by_topic(messages, f"{PREFIX}/hands")
    assert [m.time for m in hands] == recorded.record_times and all(m.msg.backend == "acr" for m in hands)
    assert sum(len(m.msg.hands) for m in hands) > 0  # the synthetic weights fire on every image
    assert all(len(h.vertices) == 778 * 3 and len(h.finger_pose) == 45 for m in hands for h in m.msg.hands)
    meshes = [k for m in by_topic(messages, f"{PREFIX}/markers") for k in m.msg.markers if k.type == k.TRIANGLE_LIST
              and k.action == k.ADD]
    assert len(meshes) == sum(len(m.msg.hands) for m in hands)
    overlays = by_topic(messages, f"{PREFIX}/overlay")
    assert [m.msg.header.stamp for m in overlays] == [m.msg.header.stamp for m in hands]
    assert all((m.msg.width, m.msg.height, m.msg.encoding) == (320, 180, "bgr8") for m in overlays)


def test_copy_inputs_with_compressed_images_and_robot_tf(tmp_path, frames):
    recorded = write_bag(tmp_path / "robot", frames[:4], "mcap", compressed=True, odometry=True)
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--copy-inputs") == 0
    messages = read_bag(out / "robot_hands")
    source = read_bag(recorded.path)
    compressed = IMAGE_TOPIC + "/compressed"
    for topic in (compressed, INFO_TOPIC, "/tf_static"):
        assert [(m.time, m.raw) for m in by_topic(messages, topic)] == \
            [(m.time, m.raw) for m in by_topic(source, topic)], topic
    hands = by_topic(messages, f"{PREFIX}/hands")
    assert len(hands) == 4 and not any(m.msg.default_intrinsics for m in hands)  # camera_info beside .../compressed
    # One /tf: the robot's odometry and the hands, each at its own record time.
    tf = by_topic(messages, "/tf")
    odometry = [m for m in tf if m.msg.transforms[0].child_frame_id == "base_link"]
    assert [(m.time, m.raw) for m in odometry] == [(m.time, m.raw) for m in by_topic(source, "/tf")]
    assert len(tf) - len(odometry) == sum(len(m.msg.hands) > 0 for m in hands)
    times = [m.time for m in messages]
    assert times == sorted(times)


def test_hands_placed_on_the_aligned_depth_topic(tmp_path, frames):
    recorded = write_bag(tmp_path / "robot", frames[:3], "mcap", depth_mm=300)
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--no-render",
                   "--depth-topic", DEPTH_TOPIC) == 0
    hands = [h for m in by_topic(read_bag(out / "robot_hands"), f"{PREFIX}/hands") for h in m.msg.hands]
    assert hands and all(h.depth_source == h.DEPTH_FROM_SENSOR and h.depth_samples > 0 for h in hands)
    # Depth says 30 cm (the model's hand size says about 50 cm here): the hand is placed on the depth.
    assert all(abs(np.median([j.z for j in h.joints]) - 0.30) < 0.04 for h in hands)
    with Recording(recorded.path) as recording:
        assert recording.select().image.name == IMAGE_TOPIC  # the depth topic is not taken for the colour one
        with pytest.raises(RecordingError, match="the depth topic /nope is not in it"):
            recording.select(depth_topic="/nope")


# ---- choosing topics -------------------------------------------------------------------------------
def test_topic_choice_errors_name_the_bag_and_its_image_topics(tmp_path, frames):
    recorded = write_bag(tmp_path / "robot", frames[:1], "mcap", extra_image_topic="/wrist/image_raw")
    with Recording(recorded.path) as recording:
        with pytest.raises(RecordingError, match="several image topics") as error:
            recording.select()
        assert str(recorded.path) in str(error.value)
        assert IMAGE_TOPIC in str(error.value) and "/wrist/image_raw" in str(error.value)
        with pytest.raises(RecordingError, match=f"no topic /nope; its image topics: {IMAGE_TOPIC}"):
            recording.select("/nope")
        with pytest.raises(RecordingError, match="sensor_msgs/msg/CameraInfo, not an image"):
            recording.select(INFO_TOPIC)
        with pytest.raises(RecordingError, match="no sensor_msgs/msg/CameraInfo topic /nope"):
            recording.select(IMAGE_TOPIC, "/nope")
        wrist = recording.select("/wrist/image_raw")
        assert wrist.image.name == "/wrist/image_raw" and wrist.camera_info is None  # no /wrist/camera_info
        assert recording.select(IMAGE_TOPIC).camera_info == INFO_TOPIC


def test_missing_topic_on_the_command_line(tmp_path, frames, capsys):
    recorded = write_bag(tmp_path / "robot", frames[:1], "sqlite3")
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--image-topic", "/nope") == 1
    err = capsys.readouterr().err
    assert f"acr_offline: {recorded.path}: no topic /nope; its image topics: {IMAGE_TOPIC}" in err
    assert not (out / "robot_hands").exists()


def test_camera_info_of_another_size_falls_back_with_a_warning(tmp_path, frames):
    for name, info_size, focal, warned in (("calibrated", None, FOCAL, 0), ("resized", (640, 360), None, 1)):
        recorded = write_bag(tmp_path / name, frames[:3], "mcap", info_size=info_size)
        warnings = []
        with Recording(recorded.path) as recording:
            items = list(read_frames(recording, recording.select(), warn=warnings.append))
        images = [item.input for item in items if getattr(item, "input", None) is not None]
        assert [getattr(f.intrinsics, "fx", None) for f in images] == [focal] * 3
        assert len(warnings) == warned  # once, not per frame
        assert all("640x360" in w and "320x180" in w for w in warnings)


# ---- bad recordings ------------------------------------------------------------------------------------
def test_unusable_images_are_reported_and_the_rest_processed(tmp_path, frames, capsys):
    recorded = write_bag(tmp_path / "robot", frames[:5], "mcap", bad_frames=(1, 3))
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--no-render") == 1
    err = capsys.readouterr().err
    assert "image 1 on /camera/color/image_raw is unusable: 32FC1" in err
    assert f"{recorded.path}: 2 unusable image(s) skipped: 32FC1" in err
    hands = by_topic(read_bag(out / "robot_hands"), f"{PREFIX}/hands")
    assert [m.time for m in hands] == [recorded.record_times[i] for i in (0, 2, 4)]


@pytest.mark.parametrize("storage, damage", [(s, "truncated") for s in STORAGES] + [("sqlite3", "overwritten")])
def test_a_damaged_recording_is_processed_up_to_the_damage(tmp_path, frames, storage, damage, capsys):
    recorded = write_bag(tmp_path / "robot", frames * 2, storage)  # 16 frames: several MCAP chunks
    storage_file = recorded.path if recorded.path.is_file() else next(
        p for p in recorded.path.iterdir() if p.suffix in (".mcap", ".db3"))
    at = storage_file.stat().st_size * 7 // 10
    if damage == "truncated":
        os.truncate(storage_file, at)
    else:  # 64 KiB of zeros over the table's pages, as a failing disk might leave
        with open(storage_file, "r+b") as file:
            file.seek(at)
            file.write(bytes(65536))
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--no-render") == 1
    err = capsys.readouterr().err
    assert f"{storage_file}: unreadable after" in err and "everything before was processed" in err
    hands = by_topic(read_bag(out / f"{output_name(recorded)}_hands"), f"{PREFIX}/hands")  # a complete bag
    assert 4 <= len(hands) < 16
    assert [m.time for m in hands] == recorded.record_times[:len(hands)]
    with np.load(out / f"{output_name(recorded)}_results.npz") as results:
        assert len(results["frame_name"]) == len(hands)


def test_a_bag_without_metadata_is_read_from_its_storage_file(tmp_path, frames, capsys):
    recorded = write_bag(tmp_path / "robot", frames[:2], "mcap")
    (recorded.path / "metadata.yaml").unlink()  # what a killed `ros2 bag record` leaves
    out = tmp_path / "out"
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--no-render") == 0
    assert "no metadata.yaml" in capsys.readouterr().err
    assert len(by_topic(read_bag(out / "robot_hands"), f"{PREFIX}/hands")) == 2


def test_files_that_are_not_recordings(tmp_path, frames, capsys):
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.yaml").write_text("not: [a bag")
    recorded = write_bag(tmp_path / "robot", frames[:1], "mcap")
    out = tmp_path / "out"
    (out / "robot_hands").mkdir(parents=True)  # an earlier output is never overwritten
    assert run_cli("--inputs", garbage, empty, recorded.path, "-o", out, "--backend", "mediapipe") == 1
    err = capsys.readouterr().err
    assert f"acr_offline: {garbage}: cannot read it as a rosbag2 recording" in err
    assert f"acr_offline: {empty}: cannot read it as a rosbag2 recording" in err
    assert f"acr_offline: {out / 'robot_hands'}: " in err and "exists already" in err


# ---- Ctrl-C --------------------------------------------------------------------------------------------
class InterruptedBackend:
    """Wraps a backend; Ctrl-C (a real SIGINT to this process) during its second batch."""

    def __init__(self, backend):
        self.backend, self.batches = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __setattr__(self, name, value):
        if name in ("backend", "batches"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.backend, name, value)

    def reconstruct(self, *args, **kwargs):
        self.batches += 1
        if self.batches == 2:
            signal.raise_signal(signal.SIGINT)
        return self.backend.reconstruct(*args, **kwargs)


def test_ctrl_c_writes_what_is_done_into_a_closed_bag(tmp_path, frames, monkeypatch):
    from acr_ros import backends

    create = backends.create_backend
    monkeypatch.setattr(backends, "create_backend",
                        lambda *a, **k: (lambda made: (InterruptedBackend(made[0]), made[1]))(create(*a, **k)))
    recorded = write_bag(tmp_path / "robot", frames, "mcap")
    out = tmp_path / "out"
    # What the caller had (SIG_IGN, not Python's handler, when a shell started the tests in the background).
    callers_handler = signal.getsignal(signal.SIGINT)
    assert run_cli("--inputs", recorded.path, "-o", out, "--backend", "mediapipe", "--batch-size", 2) == 130
    assert (out / "robot_hands" / "metadata.yaml").is_file()
    hands = by_topic(read_bag(out / "robot_hands"), f"{PREFIX}/hands")
    assert [m.time for m in hands] == recorded.record_times[:4]  # the batch in flight finished, then stop
    with np.load(out / "robot_results.npz") as results:
        assert len(results["frame_name"]) == 4
    assert signal.getsignal(signal.SIGINT) is callers_handler  # restored
