"""Rolling statistics the hands node reports on /diagnostics (no ROS here)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import numpy as np


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0):
        self._window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = now - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()


class LatencyStats:
    """Percentiles of the most recent latencies, in seconds."""

    def __init__(self, size: int = 200):
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        with self._lock:
            if not self._values:
                return tuple(float("nan") for _ in qs)
            values = np.fromiter(self._values, dtype=np.float64)
        return tuple(float(np.percentile(values, q)) for q in qs)


class Counters:
    """Thread-safe named counters, plus the last reason given for each."""

    def __init__(self):
        self._counts: collections.Counter[str] = collections.Counter()
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, name: str, reason: str = "", amount: int = 1) -> int:
        with self._lock:
            self._counts[name] += amount
            if reason:
                self._reasons[name] = reason
            return self._counts[name]

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def reason(self, name: str) -> str:
        with self._lock:
            return self._reasons.get(name, "")
