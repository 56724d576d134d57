"""`ros2 launch acr_ros hands.launch.py` over the real ROS 2 launch system (../shared/ros/launch_stack,
installed by scripts/setup.sh) with the package built by colcon, as a user runs it: what they see
(topics, the hands messages' stamps and frame_id, exit codes, the messages printed) for each case
docs/launch.md describes. Each launch costs seconds of process start-up: one launch
shows several things where it can."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState

from acr_ros.media import SAMPLES_DIR
from acr_ros.msg import Hands
from support.launch import Launch
from support.lifecycle import NO_ROS2_CLI, ROS2
from support.ros_harness import RELIABLE, Probe, camera_info_msg, image_msg, magic_bgr

pytestmark = [pytest.mark.launch, pytest.mark.slow(seconds=65),
              pytest.mark.skipif(ROS2 is None, reason=NO_ROS2_CLI + "; scripts/setup.sh installs them from "
                                 "../shared/ros/launch_stack when it is there")]

# dex-urdf's robot hands beside the repository (test_retargeting.py uses the same)
ROBOT_HANDS = Path(__file__).resolve().parents[1].parent / "shared" / "robots" / "dex-urdf" / "hands"
HANDS_STARTED = "active: subscribed to"  # the hands node's line once it is active
CLEAN_EXIT = "process has finished cleanly"


@pytest.fixture
def launch(colcon_workspace, tmp_path):
    launches = []

    def start(*arguments: str) -> Launch:
        started = Launch(colcon_workspace, tmp_path / f"launch{len(launches)}.log", *arguments)
        launches.append(started)
        return started

    yield start
    for started in launches:
        started.kill()


def stopped_cleanly(launch: Launch, presses: int = 1, nodes: int = 2) -> None:
    """Ctrl-C pressed `presses` times: each of the launch's `nodes` exits 0, the launch 0, without a
    traceback, and nothing of the launch is left running.

    After a second press, upstream ros2 launch may end in three ways of its own, whatever its
    nodes do: 0; by that signal, as it puts back Python's default handler while it shuts down
    (-SIGINT, or -SIGABRT "terminate called without an active exception" when that lands while
    launch_ros's rclpy thread still runs); or not at all (ros2/launch#207: a hang once every
    process has ended). The nodes must have ended cleanly in every case; a hung launch is then
    ended here."""
    launch.ctrl_c(presses)
    if presses == 1:
        code = launch.wait(60)
        assert code == 0, launch.log()
    else:
        try:
            code = launch.wait(30)
        except AssertionError:  # the hang: wait() has ended the launch's process group
            assert launch.log().count(CLEAN_EXIT) == nodes and not launch.failure_signs(), launch.log()
            return
        assert code in (0, -signal.SIGINT, -signal.SIGABRT), launch.log()
    assert not launch.failure_signs(), launch.log()
    assert not launch.group_alive(), "a process of the launch outlived it"


def first_hands(probe: Probe, topic: str = "/acr_hands/hands", timeout: float = 120.0, send=None) -> Hands:
    """The first Hands message from now on (not one an earlier call received); send() (if given)
    every 2 s until one comes (the launch file's parameters subscribe best effort, so one large
    frame may be lost)."""
    hands = probe.record(Hands, topic)
    hands.clear()
    for _ in range(int(timeout / 2)):
        if send is not None:
            send()
        if probe.spin_until(lambda: bool(hands), 2.0):
            break
    assert hands, f"no message on {topic}"
    return hands[0]


def test_defaults_with_a_camera_of_ones_own_and_its_remaps(launch):
    """image:= and camera_info:= remap the node's inputs; the hands carry the image's stamp and frame."""
    running = launch("backend:=mediapipe", "image:=/lt_cam/color/image_raw", "camera_info:=/lt_cam/color/camera_info")
    probe = Probe("launch_test_probe")
    try:
        assert running.wait_for_output(HANDS_STARTED), running.log()
        images = probe.publisher(Image, "/lt_cam/color/image_raw", RELIABLE)
        infos = probe.publisher(CameraInfo, "/lt_cam/color/camera_info", RELIABLE)
        probe.wait_for_subscribers(images, 60)
        probe.wait_for_subscribers(infos, 60)
        stamp = (1700030000, 42)

        def send():
            infos.publish(camera_info_msg(640, 360, 500.0, stamp=stamp, frame_id="lt_optical"))
            images.publish(image_msg(magic_bgr(), stamp=stamp, frame_id="lt_optical"))

        hands = first_hands(probe, send=send)
        assert (hands.header.stamp.sec, hands.header.stamp.nanosec) == stamp
        assert hands.header.frame_id == "lt_optical"
        # The remapped camera_info reaches the node. On a busy machine the first CameraInfo can be
        # lost while the node re-creates its subscriptions for these reliable publishers
        # (qos_reliability auto), and that frame is placed with the default intrinsics, with a
        # warning: the next frames have the camera's.
        for _ in range(5):
            if not hands.default_intrinsics:
                break
            hands = first_hands(probe, send=send)
        assert not hands.default_intrinsics, running.log()
        names = dict(probe.node.get_topic_names_and_types())
        assert "/acr_hands/hands" in names and "/acr_hands/markers" in names
        assert "unknown parameter" not in running.log()  # the package's own config/hands.yaml is all known
    finally:
        probe.close()
    stopped_cleanly(running)
    assert running.log().count(CLEAN_EXIT) == 1 and "shut down in" in running.log()


def test_compressed_remap_and_a_misspelled_parameter_in_the_params_file(launch, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("acr_hands:\n  ros__parameters:\n    backend: mediapipe\n    compressed: true\n"
                      "    detection_treshold: 0.5\n")
    running = launch(f"params_file:={params}", "image:=/lt_zip/image_raw", "camera_info:=/lt_zip/camera_info")
    probe = Probe("launch_zip_probe")
    try:
        assert running.wait_for_output(HANDS_STARTED), running.log()
        images = probe.publisher(CompressedImage, "/lt_zip/image_raw/compressed", RELIABLE)
        probe.wait_for_subscribers(images, 60)
        import cv2

        jpeg = cv2.imencode(".jpg", magic_bgr())[1].tobytes()

        def send():
            message = CompressedImage(format="jpeg", data=jpeg)
            message.header.stamp.sec, message.header.frame_id = 1700030100, "zip_optical"
            images.publish(message)

        hands = first_hands(probe, send=send)
        assert hands.header.frame_id == "zip_optical" and hands.header.stamp.sec == 1700030100
    finally:
        probe.close()
    log = running.log()
    assert "unknown parameter 'detection_treshold'" in log and "did you mean 'detection_threshold'?" in log
    stopped_cleanly(running)


def test_image_source_with_a_bundled_photo_rviz_without_rviz2_and_ctrl_c_twice(launch):
    """source:=image plays the photo; rviz:=true without rviz2 is said once and the rest runs; two
    Ctrl-C presses still end everything cleanly."""
    running = launch("backend:=mediapipe", "source:=image", f"input:={SAMPLES_DIR / 'magic.jpg'}",
                     "frame_id:=photo_optical", "rviz:=true")
    probe = Probe("launch_photo_probe")
    try:
        hands = first_hands(probe)
        assert hands.header.frame_id == "photo_optical" and hands.hands
    finally:
        probe.close()
    log = running.log()
    assert log.count("rviz2 is not installed") == 1 and "running without RViz" in log
    stopped_cleanly(running, presses=2)
    assert running.log().count(CLEAN_EXIT) == 2  # the hands node and the image source


@pytest.mark.parametrize("source, media", [("video", "magic_clip.mp4"), ("folder", "")])
def test_image_source_plays_video_and_folder(launch, source, media):
    running = launch("backend:=mediapipe", f"source:={source}", f"input:={SAMPLES_DIR / media}",
                     f"frame_id:={source}_optical")
    probe = Probe(f"launch_{source}_probe")
    try:
        assert first_hands(probe).header.frame_id == f"{source}_optical"
    finally:
        probe.close()
    if source == "video":
        stopped_cleanly(running)
        assert running.log().count(CLEAN_EXIT) == 2
    else:
        # SIGTERM to the group: ros2 launch itself ends at once on SIGTERM (upstream: it warns that
        # its processes may be orphaned); the nodes get the signal too and end by themselves.
        running.terminate_group()
        running.wait(60)
        assert running.wait_until_group_gone(), "a node outlived SIGTERM"
        assert "Traceback" not in running.log()


def test_a_dying_image_source_takes_the_launch_down(launch):
    """source:=webcam without a camera: the source exits 1, the launch stops the hands node and exits 1."""
    running = launch("backend:=mediapipe", "source:=webcam", "input:=63")
    assert running.wait(120) == 1, running.log()
    log = running.log()
    assert "the image source (image_source) exited with code 1" in log
    assert "Traceback" not in log and not running.group_alive()


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it (No such file or directory)"),
    ("acr_hands:\n  ros__parameters: [backend: mediapipe\n", "not valid YAML (line 3, column 1: expected ',' or ']'"),
    ("just text\n", "not a ROS 2 parameters file"),
])
def test_an_unusable_params_file_is_refused_before_anything_starts(launch, tmp_path, content, message):
    params = tmp_path / "missing.yaml"
    if content is not None:
        params.write_text(content)
    running = launch(f"params_file:={params}")
    assert running.wait(60) == 1, running.log()
    log = running.log()
    assert f"params_file:={params}: {message}" in log
    assert "process started" not in log and "Traceback" not in log


def test_a_dying_hands_node_takes_the_launch_down_with_its_reason(launch, tmp_path):
    """backend:=acr with a checkpoint that is not there: the node says which file, the launch exits 1."""
    running = launch("backend:=acr", f"checkpoint:={tmp_path / 'nowhere' / 'wild.pkl'}",
                     f"mano_dir:={tmp_path / 'no_mano'}", "device:=cpu", "source:=image",
                     f"input:={SAMPLES_DIR / 'magic.jpg'}")
    assert running.wait(120) == 1, running.log()
    log = running.log()
    assert str(tmp_path / "nowhere" / "wild.pkl") in log
    assert "the hands node (acr_hands) exited with code 1" in log
    assert "Traceback" not in log and not running.group_alive()


def test_with_respawn_a_killed_hands_node_comes_back_and_answers_again(launch):
    """respawn:=true: the hands node killed (SIGKILL) is started again, activates itself and answers
    frames; the launch runs on, says why the node came back, and Ctrl-C still ends it cleanly."""
    running = launch("backend:=mediapipe", "respawn:=true", "respawn_delay:=0.5",
                     "image:=/lt_respawn/image_raw", "camera_info:=/lt_respawn/camera_info")
    probe = Probe("launch_respawn_probe")
    try:
        assert running.wait_for_output(HANDS_STARTED), running.log()
        images = probe.publisher(Image, "/lt_respawn/image_raw", RELIABLE)
        probe.wait_for_subscribers(images, 60)
        sent = []  # each frame's own stamp (seconds): the hands say which frame they answer

        def send():
            sent.append(1700030200 + len(sent))
            images.publish(image_msg(magic_bgr(), stamp=(sent[-1], 0), frame_id="respawn_optical"))

        assert first_hands(probe, send=send).hands
        pid = int(re.search(r"\[hands_node-1\]: process started with pid \[(\d+)\]", running.log()).group(1))
        os.kill(pid, signal.SIGKILL)
        killed, frames_before = time.monotonic(), len(sent)
        # a generous bound: a killed node's DDS participant can linger in discovery
        hands = first_hands(probe, send=send, timeout=60)
        print(f"hands again {time.monotonic() - killed:.1f} s after the kill")
        # a frame sent after the kill: the new process answered it, not a late message of the old one
        assert hands.header.stamp.sec in sent[frames_before:] and hands.hands
    finally:
        probe.close()
    log = running.log()
    assert running.alive(), log
    assert log.count("process started with pid") == 2 and log.count(HANDS_STARTED) == 2, log
    assert ("the hands node (acr_hands) exited with code -9: respawn:=true, starting it again in 0.5 s"
            in log), log
    running.ctrl_c()
    assert running.wait(60) == 0, running.log()
    log = running.log()
    # the one death is the kill's; Ctrl-C ended the respawned node cleanly
    assert log.count("exit code -") == 1 and log.count(CLEAN_EXIT) == 1, log
    assert "Traceback" not in log and "context is invalid" not in log and not running.group_alive()


def test_respawn_max_retries_bounds_the_restarts(launch, tmp_path):
    """A hands node that cannot start (a missing checkpoint), respawn_max_retries:=1: it is started
    twice, then the launch ends with exit code 1 and one line saying why."""
    running = launch("backend:=acr", f"checkpoint:={tmp_path / 'nowhere.pkl'}", f"mano_dir:={tmp_path}",
                     "device:=cpu", "respawn:=true", "respawn_delay:=0.1", "respawn_max_retries:=1")
    assert running.wait(180) == 1, running.log()
    log = running.log()
    assert log.count("process started with pid") == 2, log
    assert "starting it again in 0.1 s" in log
    assert ("the hands node (acr_hands) exited with code 1 after 1 restarts (respawn_max_retries:=1): "
            "ending the launch") in log
    assert "Traceback" not in log and not running.group_alive()


def test_a_non_numeric_respawn_argument_is_refused_in_one_line(launch):
    running = launch("respawn:=true", "respawn_max_retries:=few")
    assert running.wait(60) == 1, running.log()
    log = running.log()
    assert "respawn_max_retries:=few: not an integer" in log
    assert "process started" not in log and "Traceback" not in log


def test_model_overrides_reach_the_node(launch, acr_checkpoint, mano_dir):
    """backend, checkpoint, mano_dir and device given on the command line run ACR with those files."""
    running = launch("backend:=acr", f"checkpoint:={acr_checkpoint}", f"mano_dir:={mano_dir}", "device:=cpu")
    assert running.wait_for_output(HANDS_STARTED, 300), running.log()
    log = running.log()
    assert "hand backend: acr" in log and f"weights {acr_checkpoint.name}:" in log
    stopped_cleanly(running)


@pytest.mark.skipif(not ROBOT_HANDS.is_dir(), reason=f"no robot URDFs at {ROBOT_HANDS} (../shared/robots)")
def test_teleop_retargets_both_hands_of_the_clip_without_robot_state_publisher(launch):
    """robot:= and urdf_dir:= reach the node: both sides' JointState carry LEAP's joints prefixed by side
    and the stamps of the clip's images; robot_state_publisher (not installable here) is said once and
    the rest runs."""
    running = launch("backend:=mediapipe", "robot:=leap", f"urdf_dir:={ROBOT_HANDS}", "source:=video",
                     f"input:={SAMPLES_DIR / 'magic_clip.mp4'}", "frame_id:=teleop_optical")
    probe = Probe("launch_teleop_probe")
    try:
        images = probe.record(Image, "/camera/image_raw", qos_profile_sensor_data)
        commands = {side: probe.record(JointState, f"/acr_hands/{side}/joint_states") for side in ("left", "right")}

        def stamp(message) -> tuple[int, int]:
            return message.header.stamp.sec, message.header.stamp.nanosec

        def of_images(side: str) -> list[JointState]:
            """The side's commands whose stamp is a recorded image's (the probe may lose a best-effort
            image; a node stamping with its own clock would match none)."""
            image_stamps = {stamp(image) for image in images}
            return [command for command in commands[side] if stamp(command) in image_stamps]

        # the clip shows both hands (MediaPipe finds them in turn, seldom in one frame)
        assert probe.spin_until(lambda: of_images("left") and of_images("right"), 120), running.log()
        for side, received in commands.items():
            for command in received:
                assert command.header.frame_id == "teleop_optical"
                assert set(command.name) == {f"{side}_{i}" for i in range(16)}  # LEAP's joints 0-15
                assert len(command.position) == 16
    finally:
        probe.close()
    log = running.log()
    assert log.count("robot_state_publisher is not installed") == 1, log
    stopped_cleanly(running)
    assert running.log().count(CLEAN_EXIT) == 2  # the hands node and the image source


def test_a_robot_without_its_urdf_is_refused_before_anything_starts(launch, tmp_path):
    running = launch("robot:=leap", f"urdf_dir:={tmp_path}")
    assert running.wait(60) == 1, running.log()
    log = running.log()
    assert f"no URDF at {tmp_path / 'leap_hand' / 'leap_hand_left.urdf'}: point urdf_dir" in log
    assert "process started" not in log and "Traceback" not in log
