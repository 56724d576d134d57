"""Camera calibration files (acr_ros.calibration) and the image source publishing them."""
import pytest
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image

from acr_ros.calibration import CalibrationError, load_calibration, resolve_url
from acr_ros.media import SAMPLES_DIR as MEDIA
from support.ros_harness import NodeProcess, Probe

pytestmark = pytest.mark.slow(seconds=9)  # image source processes and DDS

CALIBRATION = """image_width: 1920
image_height: 1080
camera_name: webcam
camera_matrix:
  rows: 3
  cols: 3
  data: [1400.0, 0.0, 950.0, 0.0, 1410.0, 530.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1, -0.2, 0.0, 0.0, 0.05]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [1390.0, 0.0, 950.0, 0.0, 0.0, 1400.0, 530.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


@pytest.fixture
def calibration_file(tmp_path):
    path = tmp_path / "webcam.yaml"
    path.write_text(CALIBRATION)
    return path


def test_the_camera_calibration_format_is_read(calibration_file):
    for url in (str(calibration_file), f"file://{calibration_file}"):
        c = load_calibration(url)
        assert (c.width, c.height, c.camera_name, c.distortion_model) == (1920, 1080, "webcam", "plumb_bob")
        assert c.k == (1400.0, 0.0, 950.0, 0.0, 1410.0, 530.0, 0.0, 0.0, 1.0)
        assert c.d == (0.1, -0.2, 0.0, 0.0, 0.05) and c.p[0] == 1390.0


def test_a_resized_stream_gets_scaled_intrinsics_and_a_crop_is_refused(calibration_file):
    c = load_calibration(str(calibration_file))
    k = c.intrinsics_for(960, 540)
    assert (k.fx, k.fy, k.cx, k.cy) == (700.0, 705.0, 475.0, 265.0)
    assert c.scaled_to(960, 540).p[0] == 695.0
    with pytest.raises(CalibrationError, match="1920x1080 images, not 640x480"):
        c.intrinsics_for(640, 480)


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not a readable YAML"),
    ("image_width: 640\nimage_height: 480\n", "no 'camera_matrix'"),
    (CALIBRATION.replace("image_width: 1920", "image_width: wide"), "must be integers"),
    (CALIBRATION.replace("data: [1400.0, 0.0, 950.0,", "data: [0.0, 0.0, 950.0,"), "not a usable pinhole K"),
    (CALIBRATION.replace("  rows: 3\n  cols: 3\n  data: [1400.0, 0.0, 950.0, 0.0, 1410.0, 530.0, 0.0, 0.0, 1.0]",
                         "  data: [1400.0, 0.0]"), "3x3 numbers"),
    (CALIBRATION.replace("data: [1400.0, 0.0, 950.0,", "data: [-1400.0, 0.0, 950.0,"), "not a usable pinhole K"),
    (CALIBRATION.replace("data: [1400.0, 0.0, 950.0,", "data: [.nan, 0.0, 950.0,"), "non-finite"),
    # These raised AttributeError and ValueError (no file named) before.
    (CALIBRATION.replace("  rows: 1\n  cols: 5\n  data: [0.1, -0.2, 0.0, 0.0, 0.05]", "  5"),
     "'distortion_coefficients' must hold a list of numbers under 'data'"),
    (CALIBRATION.replace("data: [0.1, -0.2,", "data: [k1, -0.2,"), "'distortion_coefficients' must hold a list"),
    (CALIBRATION.replace("data: [0.1, -0.2,", "data: [.inf, -0.2,"), "'distortion_coefficients' has non-finite"),
])
def test_broken_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message) as info:
        load_calibration(str(path))
    assert str(path) in str(info.value)


def test_missing_files_and_unsupported_urls(tmp_path):
    with pytest.raises(CalibrationError, match="not found: .*nothing.yaml.*camera_calibration"):
        load_calibration(str(tmp_path / "nothing.yaml"))
    with pytest.raises(CalibrationError, match="is a folder: give the calibration YAML file in it"):
        load_calibration(str(tmp_path))
    with pytest.raises(CalibrationError, match="only file://, package://"):
        resolve_url("http://example.invalid/camera.yaml")
    assert resolve_url("file:///tmp/a%20b.yaml").as_posix() == "/tmp/a b.yaml"


def _first_camera_info(tmp_path, namespace, params):
    probe = Probe("calibration_probe")
    try:
        infos = probe.record(CameraInfo, f"{namespace}/camera_info", QoSProfile(depth=10))
        probe.record(Image, f"{namespace}/image_raw", QoSProfile(depth=10))  # the source waits for it
        process = NodeProcess("acr_ros.image_source", dict(
            input=str(MEDIA / "magic.jpg"), loop=False, repeat=1, reliable=True, wait_for_subscribers=1,
            **params), tmp_path, name="image_source", remaps={"__ns": namespace})
        assert probe.spin_until(lambda: process.process.poll() is not None, 60)
        probe.spin_until(lambda: bool(infos), 5)
    finally:
        probe.close()
    return process, infos


def test_image_source_publishes_the_calibration_scaled_to_its_images(tmp_path, calibration_file):
    process, infos = _first_camera_info(tmp_path, "/calibrated", {"camera_info_url": f"file://{calibration_file}"})
    assert process.process.returncode == 0, process.log()
    info = infos[0]
    assert (info.width, info.height) == (960, 540)  # magic.jpg
    assert list(info.k) == [700.0, 0.0, 475.0, 0.0, 705.0, 265.0, 0.0, 0.0, 1.0]
    assert list(info.d) == [0.1, -0.2, 0.0, 0.0, 0.05] and info.p[0] == 695.0
    assert "scaled to the 960x540 images" in process.log()
    assert "uncalibrated" not in process.log()


def test_image_source_without_calibration_says_so_once(tmp_path):
    process, infos = _first_camera_info(tmp_path, "/uncalibrated", {})
    assert process.process.returncode == 0, process.log()
    assert list(infos[0].k) == [0.0] * 9
    assert process.log().count("publishing an uncalibrated CameraInfo") == 1


def test_image_source_refuses_a_broken_calibration_in_one_line(tmp_path):
    process = NodeProcess("acr_ros.image_source", dict(input=str(MEDIA / "magic.jpg"),
                                                       camera_info_url=str(tmp_path / "none.yaml")),
                          tmp_path, name="image_source")
    assert process.process.wait(timeout=60) == 1
    assert "none.yaml" in process.log() and "Traceback" not in process.log()
