"""A child process whose output (stdout and stderr) goes to a log file that a test reads while the
process runs: the base of the helpers that run nodes, programs and `ros2 launch`."""
from __future__ import annotations

import subprocess
from pathlib import Path


class LoggedProcess:
    def __init__(self, command: list[str], log_path: Path, **popen):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, **popen)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None
