"""Depth images for the node tests: what an RGB-D camera's aligned depth topic carries."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image


def flat_depth_msg(width: int, height: int, millimetres: int, stamp,
                   frame_id: str = "camera_optical_frame") -> Image:
    """A 16UC1 depth image (millimetres) of a wall at one distance."""
    data = np.full((height, width), millimetres, dtype=np.uint16)
    msg = Image(height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2)
    msg.data = data.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg
