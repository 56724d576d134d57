"""`ros2 launch acr_ros hands.launch.py` run as a user runs it: in the colcon workspace (sourced), in a
process group of its own as a terminal starts it, stopped with Ctrl-C (SIGINT to the whole group)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support.colcon import environment, sourced
from support.processes import LoggedProcess

# What must never appear in a launch's output: a Python traceback anywhere, a node publishing after
# rclpy shut down, a node killed by a signal instead of exiting.
FAILURE_SIGNS = ("Traceback (most recent call last)", "context is invalid", "exit code -")


class Launch(LoggedProcess):
    def __init__(self, workspace: Path, log_path: Path, *arguments: str):
        command = sourced(workspace, ["ros2", "launch", "acr_ros", "hands.launch.py", *arguments])
        super().__init__(command, log_path, env=environment(), start_new_session=True)
        self.group = self.process.pid  # start_new_session: the launch leads its own group

    def wait_for_output(self, text: str, timeout: float = 120.0) -> bool:
        """Until `text` is in the output (False when the launch ended or the time ran out first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.process.poll() is not None:
                return text in self.log()
            time.sleep(0.2)
        return False

    def ctrl_c(self, times: int = 1) -> None:
        """What Ctrl-C in a terminal does: SIGINT to every process of the group; a second press
        repeats it (launch then also escalates on its own)."""
        for press in range(times):
            if press:
                time.sleep(0.3)
            try:
                os.killpg(self.group, signal.SIGINT)
            except ProcessLookupError:
                return

    def terminate_group(self) -> None:
        """SIGTERM to every process of the group, as systemd stops a service (KillMode=control-group)."""
        os.killpg(self.group, signal.SIGTERM)

    def wait_until_group_gone(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.group_alive()

    def wait(self, timeout: float = 60.0) -> int:
        """The launch's exit code; on timeout everything of the group is killed and AssertionError raised."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ros2 launch did not end within {timeout} s:\n{self.log()}") from None
        finally:
            self._log.close()

    def group_alive(self) -> bool:
        """Whether any process started by this launch (its group) still runs."""
        try:
            os.killpg(self.group, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        if self.group_alive():
            os.killpg(self.group, signal.SIGKILL)
        self.process.wait()

    def failure_signs(self) -> list[str]:
        return [sign for sign in FAILURE_SIGNS if sign in self.log()]
