"""Pairs colour frames with depth images by stamp (an RGB-D camera's aligned depth arrives on its
own topic, not always in the same order or at the same rate as colour).

The subscription callback stores each depth message; the worker asks for the one nearest a colour
frame's stamp within a bound. Only the last few are kept: depth never queues up, and a colour frame
never waits for depth (no partner within the bound: the frame is processed monocular).
"""
from __future__ import annotations

import threading
from typing import Optional


class DepthPairing:
    """The last ``capacity`` depth messages of one camera, by stamp (nanoseconds)."""

    def __init__(self, capacity: int = 10):
        self._capacity = capacity
        self._by_stamp: dict[int, object] = {}
        self._lock = threading.Lock()

    def put(self, stamp_ns: int, msg) -> None:
        with self._lock:
            self._by_stamp[stamp_ns] = msg
            while len(self._by_stamp) > self._capacity:
                self._by_stamp.pop(min(self._by_stamp))  # the oldest stamp, whatever the arrival order

    def partner(self, stamp_ns: int, max_difference_ns: int) -> Optional[object]:
        """The stored message whose stamp is nearest stamp_ns, if within max_difference_ns."""
        with self._lock:
            if not self._by_stamp:
                return None
            nearest = min(self._by_stamp, key=lambda stamp: abs(stamp - stamp_ns))
            return self._by_stamp[nearest] if abs(nearest - stamp_ns) <= max_difference_ns else None

    def clear(self) -> None:
        with self._lock:
            self._by_stamp.clear()
