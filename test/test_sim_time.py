"""The hands node on a recording's clock: use_sim_time, and a bag played with /clock.

A bag written by the tests (2023 stamps) is played over DDS by test/support/bag_player.py, which
publishes /clock as `ros2 bag play --clock` does. The node's latency, its diagnostics stamps and its
camera_info pairing must follow the recording's clock, not the wall clock (years later); when the
recording loops, its clock jumps back and what the node showed of the previous loop goes.
"""
from diagnostic_msgs.msg import DiagnosticArray
from visualization_msgs.msg import Marker, MarkerArray

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


def stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_clock_jumps_back_or_to_another_source_are_noted_for_the_worker():
    import threading

    from rclpy.clock import ROSClock
    from rclpy.time import Time

    from acr_ros.diagnostics import Counters
    from acr_ros.node.clock_jumps import ClockJumps
    from acr_ros.frame_inputs import DepthPairing
    from acr_ros.node.inputs import Camera

    camera, counters, wake = Camera("/camera/color/image_raw", depth=DepthPairing()), Counters(), threading.Event()
    camera.put_frame("a frame of the previous loop")
    camera.depth.put(5, "a depth image of the previous loop")
    clock = ROSClock()
    jumps = ClockJumps(clock, lambda: [camera], counters, wake)
    clock._set_ros_time_is_active(True)
    assert jumps.take() == "the clock changed to ROS time (use_sim_time)" and wake.is_set()
    assert camera.depth.partner(5, 0) is None
    clock.set_ros_time_override(Time(seconds=CLOCK0 + 10))
    clock.set_ros_time_override(Time(seconds=CLOCK0 + 11))  # forward: nothing to do
    assert not jumps.pending and counters.get("dropped") == 1  # the frame waiting at the first jump
    clock.set_ros_time_override(Time(seconds=CLOCK0 + 9, nanoseconds=500_000_000))
    assert jumps.pending and jumps.take() == "the clock jumped back 1.500 s" and jumps.take() is None


def test_a_looped_recording_ends_the_tracks_and_deletes_the_markers(tmp_path):
    """The bag played twice, as `ros2 bag play --loop`: /clock jumps back to its start."""
    recorded = write_bag(tmp_path / "loop", clip_frames(6, start=10), "mcap")
    node = NodeProcess("acr_ros.hands_node", dict(
        backend="mediapipe", use_sim_time=True, image_topics=[IMAGE_TOPIC], qos_reliability="reliable",
        publish_overlay=False), tmp_path, name=NAME)
    probe = Probe("clock_jump_probe")
    try:
        hands = probe.record(Hands, f"/{NAME}/hands")
        markers = probe.record(MarkerArray, f"/{NAME}/markers")
        player = BagPlayer(probe.node, recorded.path)
        probe.wait_for_subscribers(player.publishers[IMAGE_TOPIC], timeout=60, process=node)
        probe.wait_for_subscribers(player.clock, timeout=20, process=node)
        loops = []  # (index of the first Hands, of the first MarkerArray) of each loop
        for _ in range(2):
            loops.append((len(hands), len(markers)))
            player.play(wait=lambda seconds: probe.spin_until(lambda: False, seconds, node))
            last = recorded.stamps[-1]  # its hands and markers out: the node keeps answering
            assert probe.spin_until(lambda: any(stamp_of(m) == last for m in hands[loops[-1][0]:]) and any(
                a.markers and stamp_of(a.markers[0]) == last for a in markers[loops[-1][1]:]), 60, node), node.log()
    finally:
        node.stop()
        probe.close()

    first, second = hands[:loops[1][0]], hands[loops[1][0]:]
    first_ids = {hand.track_id for m in first for hand in m.hands}
    assert first_ids and max(hand.track_frames for m in first for hand in m.hands) > 1
    after = next(m for m in second if m.hands)
    assert all(hand.track_frames == 1 and hand.track_id not in first_ids for hand in after.hands)
    # Before the second loop's first hands are drawn, those shown at the end of the first are
    # deleted, stamped with the clock's new time.
    shown = next(a for a in reversed(markers[:loops[1][1]]) if any(m.action == Marker.ADD for m in a.markers))
    deletion = markers[loops[1][1]]
    assert deletion.markers and all(m.action == Marker.DELETE for m in deletion.markers)
    assert {(m.ns, m.id) for m in deletion.markers} >= {(m.ns, m.id) for m in shown.markers if m.action == Marker.ADD}
    assert stamp_of(deletion.markers[0]) < recorded.stamps[-1]
    assert "the clock jumped back" in node.log() and "[ERROR]" not in node.log() and "Traceback" not in node.log()


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
