"""The real graph's faults, short (benchmarks/chaos.py runs them in full and measures them): a camera
driver killed and started again, with another QoS, resolution and calibration; subscribers of the
node's outputs that come and go, and one that never reads. The drivers and subscribers are their own
processes (image_source and test/support/graph_faults.py); the node runs in this process with a fake
backend, which records the intrinsics it is given."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import ReliabilityPolicy

from support.fake_backend import FakeBackend
from support.graph_faults import CameraDriver, Subscribers
from support.ros_harness import Session

REPO = Path(__file__).resolve().parents[1]


def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def answered(session: Session, driver: CameraDriver):
    """The first Hands of a frame the driver published (its first frames may go before it is matched)."""
    first = driver.first_stamp()
    newer = lambda: [m for m in session.hands if stamp(m) >= first - 1e-6]  # noqa: E731
    assert session.probe.spin_until(lambda: bool(newer()), 60), f"no hands from the driver:\n{driver.log()}"
    return newer()[0]


def reported_ok_after(session: Session, msg) -> bool:
    """A /diagnostics report, later than msg's Hands arrived, says OK."""
    count = len(session.reports())
    return session.probe.spin_until(lambda: len(session.reports()) > count + 1, 10) and \
        session.reports()[-1].level == DiagnosticStatus.OK


@pytest.mark.slow(seconds=14)
def test_a_killed_camera_driver_restarted_with_another_qos_resolution_and_calibration(tmp_path):
    backend = FakeBackend()
    s = Session(tmp_path, dict(qos_reliability="auto", track_timeout=0.5, diagnostics_period=0.2),
                name="restart_hands", backend=backend)
    namespace, drivers = s.camera_topics["cam0"], []
    image = s.node.cameras[0].image_input
    try:
        for publisher in (*s.images.values(), *s.infos.values()):  # only the driver publishes
            s.probe.node.destroy_publisher(publisher)
        drivers.append(CameraDriver(namespace, tmp_path / "reliable", reliable=True, fx=700.0, rate=10))
        before = answered(s, drivers[-1])
        assert image.reliability == ReliabilityPolicy.RELIABLE
        assert (before.image_width, before.image_height) == (960, 540)
        drivers[-1].kill()
        s.probe.spin_until(lambda: False, 1.0)

        # Back as a best-effort camera at 640x360, focal length 450 px: a reliable subscription would
        # never hear it, and the old CameraInfo is for another size.
        drivers.append(CameraDriver(namespace, tmp_path / "best_effort", reliable=False, fx=450.0, rate=10, width=640))
        after = answered(s, drivers[-1])
        assert image.reliability == ReliabilityPolicy.BEST_EFFORT
        assert (after.image_width, after.image_height) == (640, 360) and not after.default_intrinsics
        k = [batch["intrinsics"][0] for batch in backend.batches if batch["images"][0].shape[1] == 640]
        assert k and all(getattr(intrinsics, "fx", None) == 450.0 for intrinsics in k), k  # from its first frame on
        assert after.hands[0].track_id > before.hands[0].track_id  # a new track
        assert reported_ok_after(s, after), s.reports()[-1]
        drivers[-1].kill()
        s.probe.spin_until(lambda: False, 1.0)

        # Reliable again: the killed best-effort writer lingers in discovery until its lease ends (about
        # 20 s); the same node's new publisher replaces it at once.
        drivers.append(CameraDriver(namespace, tmp_path / "reliable_again", reliable=True, fx=700.0, rate=10))
        listed = []
        assert s.probe.spin_until(lambda: image.reliability == ReliabilityPolicy.RELIABLE and not listed.append(
            len(s.probe.node.get_publishers_info_by_topic(f"{namespace}/image_raw"))), 30)
        assert listed[-1] >= 2, "re-chosen only once the killed publishers left discovery"
        again = answered(s, drivers[-1])
        assert (again.image_width, again.image_height) == (960, 540) and not again.default_intrinsics
        assert again.hands[0].track_id > after.hands[0].track_id
        assert reported_ok_after(s, again), s.reports()[-1]
    finally:
        for driver in drivers:
            driver.kill()
        s.close()


@pytest.mark.slow(seconds=14)
def test_subscribers_that_come_and_go_and_one_that_never_reads_do_not_stop_the_outputs(tmp_path):
    s = Session(tmp_path, dict(qos_reliability="auto", publish_overlay=True), name="churn_hands",
                backend=FakeBackend(mano=True))
    driver = slow_reader = churn = None
    try:
        for publisher in (*s.images.values(), *s.infos.values()):
            s.probe.node.destroy_publisher(publisher)
        slow_reader = Subscribers("slow", "churn_hands", tmp_path)
        assert s.probe.spin_until(lambda: s.node.outputs.overlay.get_subscription_count() > 1, 30), slow_reader.log()
        driver = CameraDriver(s.camera_topics["cam0"], tmp_path / "camera", reliable=True, fx=700.0, rate=30)
        answered(s, driver)
        churn = Subscribers("churn", "churn_hands", tmp_path, "--count", "12", "--seconds", "5")
        # The reliable reader that never reads holds 10 of each output unread: publishing goes on,
        # through the churn and after it.
        for _ in range(3):
            count = len(s.hands)
            assert s.probe.spin_until(lambda: len(s.hands) >= count + 20, 30), "the outputs stopped"
        result = churn.stop(timeout=60)
        assert result["subscribers"] == 12, churn.log()  # all made and closed (some too briefly to read)
        count = len(s.hands)
        assert s.probe.spin_until(lambda: len(s.hands) >= count + 20, 30), "the outputs stopped after the churn"
        overlays = len(s.overlays)
        assert s.probe.spin_until(lambda: len(s.overlays) > overlays, 10)  # the overlay too (subscribed)
        assert slow_reader.alive() and s.node.counters.get("internal_errors") == 0
    finally:
        for process in (driver, slow_reader, churn):
            if process is not None and process.alive():
                process.process.kill()
                process.process.wait()
        s.close()


def test_a_publisher_after_the_messages_stopped_replaces_those_listed_before_them():
    from acr_ros.node.inputs import SILENCE_S, Listed

    killed = Listed(look=1, at=10.0, last_message=0.0)
    assert Listed(look=2, at=20.0, last_message=15.0).replaces(killed)  # messages until 15 s, then silence
    assert not Listed(look=2, at=11.0, last_message=0.0).replaces(killed)  # no message yet: both kept
    assert not Listed(look=2, at=20.0, last_message=20.0 - SILENCE_S / 2).replaces(killed)  # still streaming
    assert not Listed(look=2, at=20.0, last_message=15.0).replaces(Listed(look=1, at=16.0, last_message=15.0))


def test_quick_discovery_is_set_only_where_the_user_has_no_profile(monkeypatch, tmp_path):
    """acr_ros's executables announce their Fast DDS participant every 0.25 s (a restarted driver is
    matched at once: benchmarks/chaos.py), unless the user has a profile of their own or another RMW."""
    from acr_ros import ros_runtime

    monkeypatch.chdir(tmp_path)
    for name in (*ros_runtime.PROFILE_VARIABLES, "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(name, raising=False)
    assert ros_runtime.quick_discovery()
    assert all(os.environ[name] == str(ros_runtime.QUICK_DISCOVERY_PROFILE) for name in ros_runtime.PROFILE_VARIABLES)
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "/theirs.xml")
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE")
    assert not ros_runtime.quick_discovery() and os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] == "/theirs.xml"
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE")
    (tmp_path / "DEFAULT_FASTRTPS_PROFILES.xml").write_text("<profiles/>")
    assert not ros_runtime.quick_discovery() and "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ
    (tmp_path / "DEFAULT_FASTRTPS_PROFILES.xml").unlink()
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    assert not ros_runtime.quick_discovery() and "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ


@pytest.mark.parametrize("profile", ["acr_ros/data/fastdds_quick_discovery.xml", "config/fastdds_large_frames.xml"])
def test_fast_dds_reads_the_shipped_profiles_without_an_error(profile):
    """A profile Fast DDS cannot parse is only printed ([XMLPARSER Error]) and the defaults run."""
    script = "import rclpy; rclpy.init(); rclpy.create_node('profile_check').destroy_node(); rclpy.shutdown()"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, FASTRTPS_DEFAULT_PROFILES_FILE=str(REPO / profile)))
    assert result.returncode == 0 and "XMLPARSER" not in result.stdout + result.stderr, result.stderr
