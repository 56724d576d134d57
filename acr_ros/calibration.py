"""Camera calibration files: the YAML that ROS's camera_calibration writes and camera_info_manager
reads (``camera_info_url``), for image_source and acr_offline. No ROS, no torch.

    calibration = load_calibration("file:///home/me/.ros/camera_info/webcam.yaml")
    k = calibration.intrinsics_for(640, 480)     # CameraIntrinsics, scaled to the image size

Accepted: a path, ``file://`` URL or ``package://<package>/<path>`` URL (resolved with
ament_index where it is installed). The hand models are pinhole models: distortion coefficients are
read and passed on, but reconstruction uses K only, so undistorted (rectified) images are best.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import yaml

from acr_ros.acr.hands import CameraIntrinsics


class CalibrationError(ValueError):
    """A calibration file that is missing, unreadable or not a camera calibration."""


@dataclass(frozen=True)
class Calibration:
    """One camera's calibration, as in sensor_msgs/CameraInfo (row-major matrices)."""

    width: int
    height: int
    k: tuple[float, ...]          # 3x3
    d: tuple[float, ...]          # distortion coefficients
    distortion_model: str
    r: tuple[float, ...]          # 3x3 rectification
    p: tuple[float, ...]          # 3x4 projection
    camera_name: str = ""
    source: str = ""              # where it was read from, for messages

    def scaled_to(self, width: int, height: int) -> "Calibration":
        """The calibration of the same camera delivering width x height images (a resized stream).
        Raises CalibrationError when the aspect ratio differs (a crop, not a resize)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        if abs(sx - sy) > 0.01 * max(sx, sy):
            raise CalibrationError(f"{self.source} is for {self.width}x{self.height} images, not {width}x{height} "
                                   "(another aspect ratio: calibrate the camera at this resolution)")
        scale = np.diag([sx, sy, 1.0])
        k = scale @ np.reshape(self.k, (3, 3))
        p = scale @ np.reshape(self.p, (3, 4))
        return Calibration(width, height, tuple(k.reshape(-1)), self.d, self.distortion_model, self.r,
                           tuple(p.reshape(-1)), self.camera_name, self.source)

    def intrinsics_for(self, width: int, height: int) -> CameraIntrinsics:
        calibration = self.scaled_to(width, height)
        k = CameraIntrinsics.from_k(calibration.k)
        if k is None:
            raise CalibrationError(f"{self.source}: camera_matrix is not a usable pinhole K: {list(self.k)}")
        return k


def resolve_url(url: str) -> Path:
    """The local file of a camera_info_url (a plain path, file:// or package://)."""
    text = str(url).strip()
    if text.startswith("package://"):
        package, _, relative = text[len("package://"):].partition("/")
        try:
            from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        except ImportError as error:
            raise CalibrationError(f"{text}: package:// URLs need ament_index_python ({error})") from error
        try:
            return Path(get_package_share_directory(package)) / relative
        except PackageNotFoundError as error:
            raise CalibrationError(f"{text}: package '{package}' is not installed") from error
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    if "://" in text:
        raise CalibrationError(f"{text}: only file://, package:// URLs and plain paths are supported")
    return Path(text).expanduser()


def _matrix(data: dict, key: str, rows: int, cols: int, source: str) -> tuple[float, ...]:
    entry = data.get(key)
    values = entry.get("data") if isinstance(entry, dict) else None
    try:
        array = np.asarray(values, dtype=np.float64).reshape(rows, cols)
    except (TypeError, ValueError):
        raise CalibrationError(f"{source}: '{key}' must hold {rows}x{cols} numbers under 'data'") from None
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{source}: '{key}' has non-finite values")
    return tuple(float(v) for v in array.reshape(-1))


def _coefficients(data: dict, source: str) -> tuple[float, ...]:
    """distortion_coefficients' numbers; none when the entry or its data is absent or empty."""
    entry = data.get("distortion_coefficients") or {}
    values = entry.get("data") if isinstance(entry, dict) else None
    wrong = f"{source}: 'distortion_coefficients' must hold a list of numbers under 'data'"
    if not isinstance(entry, dict) or not isinstance(values, (list, type(None))):
        raise CalibrationError(wrong)
    try:
        array = np.asarray(values or [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationError(wrong) from None
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{source}: 'distortion_coefficients' has non-finite values")
    return tuple(float(v) for v in array)


def load_calibration(url: str) -> Calibration:
    """Reads a camera calibration YAML (camera_calibration / camera_info_manager format).
    Raises CalibrationError naming the file and what is wrong."""
    path = resolve_url(url)
    source = str(path)
    if path.is_dir():
        raise CalibrationError(f"{source} (from {url!r}) is a folder: give the calibration YAML file in it")
    if not path.is_file():
        raise CalibrationError(f"camera calibration file not found: {source} (from {url!r}); write one with "
                               "ROS's camera_calibration (cameracalibrator) or set fx/fy/cx/cy instead")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CalibrationError(f"{source}: not a readable YAML file ({error})") from None
    if not isinstance(data, dict) or "camera_matrix" not in data:
        raise CalibrationError(f"{source}: not a camera calibration YAML (no 'camera_matrix'; the INI format "
                               "is not supported)")
    try:
        width, height = int(data["image_width"]), int(data["image_height"])
    except (KeyError, TypeError, ValueError):
        raise CalibrationError(f"{source}: 'image_width' and 'image_height' must be integers") from None
    if width <= 0 or height <= 0:
        raise CalibrationError(f"{source}: image size {width}x{height} is not positive")
    k = _matrix(data, "camera_matrix", 3, 3, source)
    d = _coefficients(data, source)
    r = (_matrix(data, "rectification_matrix", 3, 3, source) if "rectification_matrix" in data
         else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    p = (_matrix(data, "projection_matrix", 3, 4, source) if "projection_matrix" in data
         else (k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0))
    calibration = Calibration(width, height, k, d, str(data.get("distortion_model") or "plumb_bob"), r, p,
                              str(data.get("camera_name") or ""), source)
    calibration.intrinsics_for(width, height)  # refuse a K that is no camera
    return calibration
