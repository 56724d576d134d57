"""What a running process (with the children it started: the ROS wheels re-execute python once)
costs the machine, read from /proc: resident memory, CPU time, threads, open file descriptors."""
from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """pid and its descendants."""
    return [pid] + _children(pid)


def _children(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return children + [g for c in children for g in _children(c)]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    total = 0
    for member in family(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by a process and its children (all their threads).
    Time a process spends waiting for a core is not in it: a busy machine does not inflate it."""
    total = 0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / CLOCK_TICKS


def thread_count(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{member}/task")) for member in family(pid) if Path(f"/proc/{member}").exists())


def open_fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{member}/fd")) for member in family(pid) if Path(f"/proc/{member}").exists())


def environment(pid: int) -> dict[str, str]:
    """The environment a process started with (/proc/<pid>/environ)."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in entries if b"=" in entry)
