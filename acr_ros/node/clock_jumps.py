"""The node's clock going back (a recording looped with use_sim_time, /clock set back) or changing
source (use_sim_time set at run time): what was received and shown before belongs to another run of
time.

rclpy reports a jump on the thread that sets the time: the executor's, taking /clock as it takes the
images, so the frames still waiting then came before the jump and are dropped, and the depth images
kept for pairing are forgotten. The worker takes the
jump between batches (it owns the tracks, the smoothing and the shown markers) and publishes nothing
of a batch that was running when it came: its stamps are later than the clock's new time, and would
linger in RViz and in tf2 buffers (which clear themselves on a jump back, before they arrive)."""
from __future__ import annotations

import threading
from typing import Callable, Optional

from rclpy.clock import Clock, ClockChange, JumpThreshold, TimeJump
from rclpy.duration import Duration

from acr_ros.diagnostics import Counters

# Any step back, as tf2_ros's Buffer; forward jumps are only a recording's pauses.
THRESHOLD = JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True)


def describe(jump: TimeJump) -> str:
    if jump.clock_change == ClockChange.ROS_TIME_ACTIVATED:
        return "the clock changed to ROS time (use_sim_time)"
    if jump.clock_change == ClockChange.ROS_TIME_DEACTIVATED:
        return "the clock changed to system time"
    return f"the clock jumped back {-jump.delta.nanoseconds * 1e-9:.3f} s"


class ClockJumps:
    def __init__(self, clock: Clock, cameras: Callable[[], list], counters: Counters, wake: threading.Event):
        """cameras() -> the node's acr_ros.node.inputs.Camera list; wake is set to wake the worker."""
        self._cameras = cameras
        self._counters = counters
        self._wake = wake
        self._lock = threading.Lock()
        self._pending: Optional[str] = None
        self._handle = clock.create_jump_callback(THRESHOLD, post_callback=self._jumped)

    def _jumped(self, jump: TimeJump) -> None:
        with self._lock:
            self._pending = describe(jump)
        stale = 0
        for camera in self._cameras():
            stale += camera.take_frame() is not None
            if camera.depth is not None:  # the previous run of time's depth must not pair with this one's frames
                camera.depth.clear()
        if stale:
            self._counters.add("dropped", "received before the clock jumped back", stale)
        self._wake.set()

    @property
    def pending(self) -> bool:
        """A jump the worker has not taken yet."""
        return self._pending is not None

    def take(self) -> Optional[str]:
        """The latest jump not taken yet, described; None when the clock ran on."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
