"""Depth images for the node tests: what an RGB-D camera's aligned depth topic carries."""
from __future__ import annotations

import struct

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image


def flat_depth_msg(width: int, height: int, millimetres: int, stamp,
                   frame_id: str = "camera_optical_frame") -> Image:
    """A 16UC1 depth image (millimetres) of a wall at one distance."""
    data = np.full((height, width), millimetres, dtype=np.uint16)
    msg = Image(height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2)
    msg.data = data.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg


def compressed_depth_msg(image: Image) -> CompressedImage:
    """A 16UC1 depth image as image_transport's compressedDepth: a 12-byte header, then a 16-bit PNG."""
    millimetres = np.frombuffer(bytes(image.data), dtype="<u2").reshape(image.height, image.width)
    ok, png = cv2.imencode(".png", millimetres)
    assert ok
    msg = CompressedImage(header=image.header, format="16UC1; compressedDepth png")
    msg.data = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()
    return msg
