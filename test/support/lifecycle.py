"""Driving a managed node over DDS: its standard lifecycle services and transition events, and the
real `ros2 lifecycle` tools where they are installed (../shared/ros/launch_stack)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from lifecycle_msgs.msg import TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetState

from support.ros_harness import Probe

# The ros2 command of the environment running the tests (a venv's bin, or a sourced ROS install).
ROS2 = shutil.which("ros2", path=str(Path(sys.executable).parent)) or shutil.which("ros2")
NO_ROS2_CLI = ("the ros2 command-line tools are not installed here (a real ROS 2 install has them; they are "
               "not on PyPI)")


# The primary state each transition ends in when it succeeds, and the states a transition passes.
TRANSITION_GOALS = {"configure": "inactive", "activate": "active", "deactivate": "inactive",
                    "cleanup": "unconfigured", "shutdown": "finalized"}
TRANSITION_STATES = ("configuring", "activating", "deactivating", "cleaningup", "shuttingdown", "errorprocessing")


class LifecycleClient:
    """The node's ~/change_state and ~/get_state services, and its ~/transition_event topic."""

    def __init__(self, probe: Probe, node: str):
        self.probe, self.node = probe, node
        self._change = probe.node.create_client(ChangeState, f"/{node}/change_state")
        self._get = probe.node.create_client(GetState, f"/{node}/get_state")
        self.events: list[TransitionEvent] = probe.record(TransitionEvent, f"/{node}/transition_event")

    def wait_for_services(self, process=None, timeout: float = 60.0) -> None:
        ready = lambda: self._change.service_is_ready() and self._get.service_is_ready()  # noqa: E731
        assert self.probe.spin_until(ready, timeout, process), f"no lifecycle services of /{self.node}"

    def _call(self, client, request, timeout: float, resend_after: float | None = None,
              settled: Callable[[float], bool] | None = None):
        """The response, or None when settled(deadline) says after a silence that the request took
        effect. A request unanswered for resend_after seconds is sent again: the response to one
        that arrives while the server is still matching the client's response reader is lost
        (Fast DDS; more likely on a busy machine)."""
        deadline = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            if self.probe.spin_until(future.done, min(resend_after or timeout, deadline - time.monotonic())):
                return future.result()
            client.remove_pending_request(future)
            assert time.monotonic() < deadline, f"{client.srv_name} did not answer in {timeout} s"
            if settled is not None and settled(deadline):
                return None

    def state(self, timeout: float = 30.0) -> str:
        return self._call(self._get, GetState.Request(), timeout, resend_after=5.0).current_state.label

    def change(self, transition: str, timeout: float = 120.0) -> bool:
        """Triggers a transition by its label (configure, activate, deactivate, cleanup, shutdown).
        Without a response after 15 s (lost as in _call, or a slow transition), the node's state
        decides: still in transition, wait; at the transition's goal, done; else send it again.
        Shutdown ends the node's process, which can take the response with it: its services gone is
        its goal (the callers check how the process ended)."""
        def reached_goal(deadline: float) -> bool:
            if transition == "shutdown" and self.probe.spin_until(lambda: not self._get.service_is_ready(), 5.0):
                return True
            state = self.state()
            while state in TRANSITION_STATES and time.monotonic() < deadline:
                self.probe.spin_until(lambda: False, 0.5)
                state = self.state()
            return state == TRANSITION_GOALS.get(transition)

        request = ChangeState.Request()
        request.transition.label = transition
        response = self._call(self._change, request, timeout, resend_after=15.0, settled=reached_goal)
        return response is None or response.success

    def goal_states(self) -> list[str]:
        """The goal state of every transition event received so far, e.g. ['configuring', 'inactive']."""
        return [event.goal_state.label for event in self.events]


def node_found(output: str) -> bool:
    return "Node not found" not in output


def ros2(*args: str, ready: Callable[[str], bool] = node_found, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs `ros2 <args> --no-daemon`, again while ready(its output) is false (by default: while it
    did not find the node; its own discovery can take longer than its spin time on a busy machine),
    up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run([ROS2, *args, "--no-daemon", "--spin-time", "1"], capture_output=True, text=True,
                                timeout=timeout, env=dict(os.environ))
        if ready(result.stdout + result.stderr) or time.monotonic() > deadline:
            return result
