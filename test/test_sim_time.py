"""The hands node on a recording's clock: use_sim_time, and a bag played with /clock.

A bag written by the tests (2023 stamps) is played over DDS by test/support/bag_player.py, which
publishes /clock as `ros2 bag play --clock` does. The node's latency, its diagnostics stamps and its
camera_info pairing must follow the recording's clock, not the wall clock (years later).
"""
from diagnostic_msgs.msg import DiagnosticArray

from acr_ros.msg import Hands
from support.bag_player import BagPlayer, clock_msg
from support.bags import CLOCK0, IMAGE_TOPIC, clip_frames, write_bag
from support.ros_harness import NodeProcess, Probe

NAME = "acr_sim_time"


def diagnostic_values(array: DiagnosticArray) -> dict:
    return {kv.key: kv.value for kv in array.status[0].values}


def test_latency_and_stamps_follow_the_recorded_clock(tmp_path):
    recorded = write_bag(tmp_path / "robot", clip_frames(12, start=10), "mcap")
    node = NodeProcess("acr_ros.hands_node", dict(
        backend="mediapipe", use_sim_time=True, image_topics=[IMAGE_TOPIC], qos_reliability="reliable",
        publish_overlay=False, diagnostics_period=0.5), tmp_path, name=NAME)
    probe = Probe("sim_time_probe")
    try:
        hands = probe.record(Hands, f"/{NAME}/hands")
        diagnostics = probe.record(DiagnosticArray, "/diagnostics")
        player = BagPlayer(probe.node, recorded.path)
        probe.wait_for_subscribers(player.publishers[IMAGE_TOPIC], timeout=60, process=node)
        probe.wait_for_subscribers(player.clock, timeout=20, process=node)
        player.play(wait=lambda seconds: probe.spin_until(lambda: False, seconds, node))
        last = recorded.stamps[-1]
        assert probe.spin_until(lambda: any((m.header.stamp.sec, m.header.stamp.nanosec) == last for m in hands),
                                60, node), node.log()
        # The recording is over; its clock moves on a little, so that the diagnostics timer
        # (on the node's clock) reports what was published.
        ours = lambda m: m.status and m.status[0].name == f"{NAME}: hand reconstruction"  # noqa: E731
        published = lambda m: ours(m) and int(diagnostic_values(m)["frames published"]) > 0  # noqa: E731
        for step in range(1, 21):
            player.clock.publish(clock_msg(player.end + step * 500_000_000))
            if probe.spin_until(lambda: any(published(m) for m in diagnostics), 0.5, node):
                break
        report = [m for m in diagnostics if published(m)]
        assert report, node.log()
    finally:
        node.stop()
        probe.close()

    assert {(m.header.stamp.sec, m.header.stamp.nanosec) for m in hands} <= set(recorded.stamps)
    assert not any(m.default_intrinsics for m in hands[1:])  # paired with the recorded camera_info
    # Diagnostics are stamped with the node's clock: the recording's, 2023, not today.
    assert all(CLOCK0 <= m.header.stamp.sec < CLOCK0 + 60 for m in report)
    # Latency = node clock - image stamp: within the recording's time, where the wall clock would
    # give years (about 1e11 ms).
    latency = float(diagnostic_values(report[-1])["latency p50 (ms)"])
    assert abs(latency) < 60_000


def test_the_launch_file_passes_use_sim_time_to_the_node_and_rviz():
    """`ros2 launch` is not installable here: the launch file is read, not run (as test_launch_files)."""
    import ast

    from support.ros_harness import REPO

    source = (REPO / "launch" / "hands.launch.py").read_text()
    declared = {c.args[0].value: c for c in ast.walk(ast.parse(source)) if isinstance(c, ast.Call)
                and getattr(c.func, "id", None) == "DeclareLaunchArgument" and isinstance(c.args[0], ast.Constant)}
    assert ast.literal_eval(next(k.value for k in declared["use_sim_time"].keywords if k.arg == "default_value")) \
        == "false"
    assert '"use_sim_time": LaunchConfiguration("use_sim_time").perform(context) == "true"}' in source
    assert '"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)' in source
