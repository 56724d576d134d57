"""From camera messages to the frame processor's input: decoding and pairing by stamp, shared by the
node (live topics) and the recordings reader (acr_offline), so that both pair and convert alike.

Messages are rclpy's or any object with the ROS field names (the recordings reader's decoded CDR).

- An image is paired with the CameraInfo of its exact stamp, else the newest one (K rarely changes).
- An image is paired with the depth image nearest its stamp within ``depth_max_time_difference``
  (an RGB-D driver stamps its two sensors a few milliseconds apart); none that near: no depth.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

from acr_ros.acr.hands import CameraIntrinsics
from acr_ros.frame_processor import FrameInput
from acr_ros.image_conversion import (DEFAULT_MAX_PIXELS, ImageConversionError, compressed_to_bgr, depth_to_metres,
                                      image_to_bgr)


def stamp_ns(stamp) -> int:
    """A builtin_interfaces/Time (or anything with sec and nanosec) in integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class DecodeSettings:
    """The node's parameters of the same names; acr_offline takes them from the same parameters."""

    max_image_pixels: int = DEFAULT_MAX_PIXELS
    depth_millimetres_per_unit: float = 1.0
    depth_max_time_difference: float = 0.02   # seconds

    @property
    def depth_max_difference_ns(self) -> int:
        return int(round(self.depth_max_time_difference * 1e9))


class CameraInfos:
    """A camera's recent CameraInfos by stamp, and the newest one."""

    def __init__(self, capacity: int = 30):
        self._capacity = capacity
        self._by_stamp: dict[int, object] = {}
        self._latest = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def put(self, info) -> None:
        with self._lock:
            self._by_stamp[stamp_ns(info.header.stamp)] = info
            while len(self._by_stamp) > self._capacity:
                self._by_stamp.pop(next(iter(self._by_stamp)))
            self._latest = info
            self._arrived.notify_all()

    def has(self, stamp: int) -> bool:
        with self._lock:
            return stamp in self._by_stamp

    def wait_for(self, stamp: int, timeout: float) -> bool:
        """Until the CameraInfo of that stamp (ns) is here, at most timeout seconds; whether it is."""
        with self._lock:
            return self._arrived.wait_for(lambda: stamp in self._by_stamp, timeout)

    def newest_stamp(self) -> Optional[int]:
        with self._lock:
            return None if self._latest is None else stamp_ns(self._latest.header.stamp)

    def for_stamp(self, stamp: int):
        """The CameraInfo of that stamp (ns), else the newest one, None before the first."""
        with self._lock:
            return self._by_stamp.get(stamp, self._latest)


class DepthPairing:
    """A camera's last ``capacity`` depth images by stamp (ns): depth never queues up, and a colour
    frame never waits for depth."""

    def __init__(self, capacity: int = 10):
        self._capacity = capacity
        self._by_stamp: dict[int, object] = {}
        self._lock = threading.Lock()

    def put(self, stamp: int, msg) -> None:
        with self._lock:
            self._by_stamp[stamp] = msg
            while len(self._by_stamp) > self._capacity:
                self._by_stamp.pop(min(self._by_stamp))  # the oldest stamp, whatever the arrival order

    def partner(self, stamp: int, max_difference_ns: int):
        """The stored message whose stamp is nearest ``stamp``, if within max_difference_ns."""
        with self._lock:
            if not self._by_stamp:
                return None
            nearest = min(self._by_stamp, key=lambda stored: abs(stored - stamp))
            return self._by_stamp[nearest] if abs(nearest - stamp) <= max_difference_ns else None

    def clear(self) -> None:
        with self._lock:
            self._by_stamp.clear()


def image_intrinsics(info, width: int, height: int) -> tuple[Optional[CameraIntrinsics], str]:
    """The intrinsics a CameraInfo gives a width x height image, or None and why not."""
    if info is None:
        return None, "no camera_info arrived"
    intrinsics = CameraIntrinsics.from_k(info.k)
    if intrinsics is None:
        return None, "its camera_info has no usable K (uncalibrated: K all zeros, or not finite)"
    if (int(info.width), int(info.height)) not in ((0, 0), (width, height)):
        return None, f"its camera_info is for {info.width}x{info.height} but the image is {width}x{height}"
    return intrinsics, ""


def decode_image(msg, max_pixels: Optional[int]):
    """A sensor_msgs/Image or CompressedImage as BGR uint8; ImageConversionError says why not."""
    if hasattr(msg, "format"):
        return compressed_to_bgr(msg, max_pixels=max_pixels)
    return image_to_bgr(msg, max_pixels=max_pixels)


def decode_frame(camera: str, msg, info, depth_msg, settings: DecodeSettings,
                 depth_expected: bool = False) -> FrameInput:
    """One image with its CameraInfo and depth partner (either may be None) as a FrameInput;
    raises ImageConversionError when the image itself is unusable. A depth image that is unusable
    or of another size is left out, and the frame says why (depth_problem)."""
    image = decode_image(msg, settings.max_image_pixels)
    height, width = image.shape[:2]
    intrinsics, intrinsics_problem = image_intrinsics(info, width, height)
    frame = FrameInput(camera=camera, stamp_ns=stamp_ns(msg.header.stamp), image=image, intrinsics=intrinsics,
                       header=msg.header, intrinsics_problem=intrinsics_problem, depth_expected=depth_expected)
    if depth_msg is None:
        return frame
    try:
        metres = depth_to_metres(depth_msg, settings.depth_millimetres_per_unit, max_pixels=settings.max_image_pixels)
    except ImageConversionError as error:
        frame.depth_problem = f"its depth image is unusable: {error}"
        return frame
    if metres.shape != (height, width):
        frame.depth_problem = (f"its depth image is {metres.shape[1]}x{metres.shape[0]} but the colour image is "
                               f"{width}x{height}: use the depth registered to colour (e.g. aligned_depth_to_color)")
        return frame
    frame.depth = metres
    return frame
