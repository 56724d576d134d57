"""Robot-hand joint commands from the camera, through the real graph: the node publishes a
sensor_msgs/JointState per tracked side over DDS with the image's stamp (MediaPipe on a real photo,
and ACR with random weights for the structure), nothing for a lost hand; acr_offline writes the same
commands into its bag and results; a missing piece fails configure in one line."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import JointState

from acr_ros import offline
from acr_ros.backends import create_backend
from acr_ros.ros_messages import SIDE_NAMES
from support.bags import read_bag, write_bag
from support.fake_backend import FakeBackend
from support.ros_harness import RELIABLE, NodeProcess, Session, camera_info_msg, image_msg, magic_bgr

pytestmark = pytest.mark.slow(seconds=10)

HANDS = Path(__file__).resolve().parents[1].parent / "shared" / "robots" / "dex-urdf" / "hands"
if not HANDS.is_dir():
    pytest.skip(f"no robot URDFs at {HANDS} (../shared/robots beside the repository)", allow_module_level=True)
RETARGET = {"retarget.robot": "leap", "retarget.urdf_dir": str(HANDS)}


def joint_states(session, name):
    return {side: session.probe.record(JointState, f"/{name}/{side}/joint_states", RELIABLE)
            for side in ("left", "right")}


def test_the_node_commands_each_tracked_side_with_the_image_stamp(tmp_path):
    s = Session(tmp_path, dict(backend="mediapipe", diagnostics_period=0.2, **RETARGET), name="teleop_hands",
                backend=create_backend("mediapipe")[0])
    try:
        commands = joint_states(s, "teleop_hands")
        for side in commands:
            assert s.probe.spin_until(lambda: s.probe.node.count_publishers(f"/teleop_hands/{side}/joint_states"), 10)
        left, blank = magic_bgr(), np.full_like(magic_bgr(), 200)  # magic.jpg shows a left hand
        for index, image in enumerate((left, left, blank, left)):
            stamp = (1_700_060_000, index)
            s.send(image_msg(image, stamp=stamp, frame_id="teleop_optical"),
                   info=camera_info_msg(640, 360, 500.0, stamp=stamp, frame_id="teleop_optical"))
            s.answer(stamp)
        assert s.probe.spin_until(lambda: len(commands["left"]) == 3, 10), commands
        assert [m.header.stamp.nanosec for m in commands["left"]] == [0, 1, 3]  # none while the hand was lost
        assert commands["right"] == []
        first = commands["left"][0]
        assert first.header.frame_id == "teleop_optical" and len(first.name) == 16 == len(first.position)
        assert all(name.startswith("left_") for name in first.name) and np.isfinite(first.position).all()
        assert s.probe.spin_until(lambda: float(s.status().get("retargeting left p50 (ms)", "nan")) > 0, 10)
        assert s.status()["retargeting left residual"] != "nan" and s.status()["joint commands not computed"] == "0"
    finally:
        s.close()


def test_the_acr_backend_commands_both_robot_hands(tmp_path, acr_checkpoint, mano_dir):
    """Random weights biased to fire (NOT a hand model): the commands' structure and stamps only."""
    s = Session(tmp_path, dict(backend="acr", checkpoint=str(acr_checkpoint), mano_dir=str(mano_dir), device="cpu",
                               precision="fp32", **RETARGET), name="teleop_acr")
    try:
        commands = joint_states(s, "teleop_acr")
        stamp = (1_700_060_100, 7)
        s.send(image_msg(magic_bgr(), stamp=stamp), info=camera_info_msg(640, 360, 600.0, stamp=stamp))
        hands = s.answer(stamp, timeout=120)
        sides = {SIDE_NAMES[hand.side] for hand in hands.hands}
        assert sides
        assert s.probe.spin_until(lambda: all(commands[side] for side in sides), 20), (sides, commands)
        for side in sides:
            assert (commands[side][0].header.stamp.sec, commands[side][0].header.stamp.nanosec) == stamp
    finally:
        assert s.close() == 0


def test_acr_offline_writes_the_commands_into_its_bag_and_results(tmp_path):
    left = cv2.resize(magic_bgr(), (320, 180))
    recorded = write_bag(tmp_path / "clip", [left] * 3, "mcap")
    out = tmp_path / "out"
    assert offline.main(["--inputs", str(recorded.path), "-o", str(out), "--backend", "mediapipe", "--no-render",
                         "--retarget", "leap", "--urdf-dir", str(HANDS), "-q"]) == 0
    commands = [m for m in read_bag(out / "clip_hands") if m.topic == "/acr_hands/left/joint_states"]
    assert [(m.msg.header.stamp.sec, m.msg.header.stamp.nanosec) for m in commands] == recorded.stamps
    results = np.load(out / "clip_results.npz")
    assert results["robot_positions"].shape == (3, 16) and np.isfinite(results["robot_positions"]).all()
    assert np.allclose(results["robot_positions"][0], commands[0].msg.position)
    assert list(results["robot_joint_names"][0]) == list(commands[0].msg.name)


def test_a_robot_without_its_urdfs_fails_configure_in_one_line(tmp_path):
    process = NodeProcess("acr_ros.hands_node", {"backend": "mediapipe", "retarget.robot": "leap",
                                                 "retarget.urdf_dir": str(tmp_path / "nowhere")},
                          tmp_path, name="teleop_refused")
    code = process.process.wait(timeout=60)
    log = process.log()
    assert code == 1 and "Traceback" not in log and "configure failed" in log and "nowhere" in log, log


def test_an_unknown_robot_is_refused_before_the_model_loads(tmp_path, capsys):
    assert offline.main(["--inputs", str(tmp_path), "--retarget", "r2d2", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "r2d2" in err and len(err.strip().splitlines()) == 1, err


def test_the_fake_backend_never_reaches_retargeting_without_a_robot(tmp_path):
    """Retargeting is off by default: no joint_states publisher at all."""
    s = Session(tmp_path, {}, name="no_teleop", backend=FakeBackend())
    try:
        assert s.probe.node.count_publishers("/no_teleop/left/joint_states") == 0
        assert s.node.processor.retargeter is None
    finally:
        s.close()
