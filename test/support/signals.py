"""Running an acr_ros executable as its own process and stopping it with signals, as a terminal or
ros2 launch does, to check how it ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.processes import LoggedProcess

REPO = Path(__file__).resolve().parents[2]

# Exit codes a stop signal may end a program with: 0 for a node (a stop request is its normal end),
# 128 + the signal number for a command-line program (the shell's convention).
CONVENTIONAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Program(LoggedProcess):
    def __init__(self, command: list[str], log_path: Path):
        super().__init__([sys.executable, *command], log_path, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def wait_for_output(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.process.poll() is None, f"exited ({self.process.returncode}) before {text!r}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{self.log()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """Whatever happened in the test, the process does not outlive it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def stop(self, signals: list[int], timeout: float) -> tuple[int, float]:
        """Sends the signals 0.3 s apart; returns the exit code and the seconds from the first signal
        to the exit (killed after timeout: AssertionError)."""
        sent = time.monotonic()
        for index, number in enumerate(signals):
            if index:
                time.sleep(0.3)
            if self.process.poll() is None:
                self.process.send_signal(number)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running {timeout} s after {signals}:\n{self.log()}") from None
        finally:
            self._log.close()
        return code, time.monotonic() - sent
