"""What every acr_ros executable shares at its ROS boundary: starting rclpy (a bad parameters file is
one line, not a traceback), stopping on SIGINT/SIGTERM in its own time, and naming the parameters it
was given but does not have.

Why not rclpy's own signal handling: on SIGINT it shuts the context down at once and raises
KeyboardInterrupt wherever the main thread is, so a publisher in use (the image source's loop, the
hands node's worker) fails with "publisher's context is invalid", and a second SIGINT (launch sends
one, the terminal another) interrupts the clean-up with a traceback. Here a signal only records the
request; the program stops publishing, releases what it holds and then shuts rclpy down itself.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import rclpy
from rcl_interfaces.srv import ListParameters
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from acr_ros.acr.runtime import passive_openmp_waits

RCLError = rclpy_implementation.RCLError
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LoadingStopped(BaseException):
    """Raised where the main thread is when a stop signal arrives inside :func:`loading`: the model
    being loaded or exported is abandoned. A BaseException, so that no ``except Exception`` on the
    way (rclpy's lifecycle machinery has one) takes it for a failure."""


class StopRequest:
    """Set by the first SIGINT or SIGTERM; later ones are ignored. Ignored, not just absorbed: Python's
    own finalization puts handled signals back to their default action (a second Ctrl-C arriving
    while the interpreter exits would kill the process, exit code -2), but leaves ignored ones
    ignored. The clean-up this leaves to finish is bounded (the hands node's worker gets 1.5 s; a
    model still loading is abandoned, :func:`loading`); launch's escalation to SIGKILL still ends
    a process that hangs.

    The request is a plain flag that the handler sets without taking a lock: a handler runs between
    two bytecodes of the main thread, which may hold that very lock (a threading.Event's, inside its
    own wait), and would then wait for itself forever with every later signal ignored."""

    POLL_S = 0.02  # how often wait() looks at the flag

    def __init__(self):
        self._requested = False
        self.signal: Optional[int] = None
        self.loading = False  # the main thread is inside loading(): a stop signal raises LoadingStopped

    def install(self) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number, frame) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        self.signal = number
        self._requested = True
        if self.loading:  # signal handlers run in the main thread, which is loading
            self.loading = False
            raise LoadingStopped()

    @property
    def requested(self) -> bool:
        return self._requested

    def wait(self, timeout: float) -> bool:
        """Sleeps until a stop is requested or `timeout` seconds have passed; whether one was."""
        deadline = time.monotonic() + timeout
        while not self._requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, self.POLL_S))
        return self._requested

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""


_installed: Optional[StopRequest] = None  # the process's, once start_ros has installed it


@contextlib.contextmanager
def loading():
    """Long start-up work in the main thread (loading a model, exporting it) that a stop signal
    abandons by raising LoadingStopped, instead of the process finishing it first (launch would
    escalate to SIGKILL meanwhile). The signal's exception lands wherever the main thread is: a
    library it interrupts may turn it into an error of its own (torch's exporter interrupted inside
    an import raised AttributeError, then its own export error), so whatever leaves the block after a
    stop request is LoadingStopped. Without start_ros's signal handling (a node in a test) nothing
    changes."""
    stop = _installed
    if stop is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if stop.requested:
        raise LoadingStopped()
    stop.loading = True
    try:
        yield
    except BaseException:
        if stop.requested:
            raise LoadingStopped() from None
        raise
    finally:
        stop.loading = False


def logged_transition(transition):
    """A lifecycle transition callback whose unexpected exception is logged with its traceback (rclpy
    turns it into ERROR without a word); on_error then runs."""
    @functools.wraps(transition)
    def callback(node, state):
        try:
            return transition(node, state)
        except Exception:
            node.get_logger().error(f"{transition.__name__} failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
    return callback


QUICK_DISCOVERY_PROFILE = Path(__file__).resolve().parent / "data" / "fastdds_quick_discovery.xml"
# Fast DDS 2 (Jazzy) reads the first, Fast DDS 3 the second; without either, a file of this name in
# the working directory.
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
WORKING_DIRECTORY_PROFILES = ("DEFAULT_FASTRTPS_PROFILES.xml", "DEFAULT_FASTDDS_PROFILES.xml")


def quick_discovery() -> bool:
    """Fast DDS announces this process's participant every 0.25 s instead of every 3 s
    (QUICK_DISCOVERY_PROFILE): a participant that starts while this one misses its first
    announcements (a camera driver restarted after a crash) is otherwise found only at this one's
    next periodic announcement, up to 3 s later. Measured with benchmarks/chaos.py (restarts): the
    first Hands after a driver restart came p50 2.0 s (3 of 12 within 1 s) after its first frame
    without it, 0.34 s (6 of 6 within 1 s) with it in the hands node alone. Only for Fast DDS, and only
    where the user gives no profile of their own (theirs wins; docs/deployment.md says what to add to
    it). Call before rclpy.init; returns whether the profile was set."""
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return False
    if any(os.environ.get(name) for name in PROFILE_VARIABLES) or any(
            Path(name).exists() for name in WORKING_DIRECTORY_PROFILES):
        return False
    for name in PROFILE_VARIABLES:
        os.environ[name] = str(QUICK_DISCOVERY_PROFILE)
    return True


def start_ros(program: str, args=None) -> Optional[StopRequest]:
    """rclpy.init with this module's signal handling, idle OpenMP threads that sleep
    (acr_ros.acr.runtime.passive_openmp_waits) and quick discovery (quick_discovery); None after
    printing one line when rclpy refuses the arguments (a parameters file that does not parse, a
    malformed --ros-args)."""
    global _installed
    passive_openmp_waits()  # before anything loads torch (the hands node does at configure)
    quick_discovery()  # before rclpy.init creates the participant
    stop = _installed = StopRequest()
    stop.install()
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as error:
        print(f"{program}: cannot start: {rcl_reason(error)}", file=sys.stderr)
        return None
    return stop


def rcl_reason(error: Exception) -> str:
    """rcl's message on one line, without its source locations (", at /path/rcl/x.c:123")."""
    text = " ".join(str(error).split()).removeprefix("failed to initialize rcl: ")
    for marker in (", at /", ", at ./"):
        text = text.split(marker)[0]
    return text


def unknown_parameters(node, qos: bool = False) -> list[str]:
    """Names this node was given (parameters file, -p, overrides) that it never declared.

    rclpy keeps the overrides addressed to this node in `_parameter_overrides` (no public accessor).
    qos_overrides.* are declared as the node creates its publishers and subscriptions: judged only
    with qos=True, once every one exists.
    """
    given = getattr(node, "_parameter_overrides", {})
    return sorted(name for name in given
                  if not node.has_parameter(name) and name.startswith("qos_overrides.") == qos)


def warn_unknown_parameters(node, qos: bool = False) -> list[str]:
    """Warns once per unknown parameter, with the closest declared name; returns the unknown names.
    qos=True: the qos_overrides.* given for topics this node does not use (a typo, or a remapped name)."""
    declared = node.list_parameters([], ListParameters.Request.DEPTH_RECURSIVE).names
    unknown = unknown_parameters(node, qos)
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        node.get_logger().warning(f"unknown parameter '{name}' ignored (this node has no such parameter){hint}")
    return unknown


def spin_until_stopped(executor, stop: StopRequest, done=lambda: False, period: float = 0.1) -> None:
    """Spins until a stop signal or done(); wakes every `period` s, since a Python signal handler
    runs only when the main thread is back from rcl's wait."""
    while not stop.requested and not done():
        executor.spin_once(timeout_sec=period)
