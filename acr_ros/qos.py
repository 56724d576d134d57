"""Which reliability an image subscription uses: the `qos_reliability` parameter and the topic's
publishers (the rule of `ros2 topic echo` and rosbag2).

A best-effort subscriber to a reliable publisher loses large frames over Fast DDS (about half of
640x480 frames, docs/reliability.md), and a reliable subscriber never hears a best-effort
publisher. `auto` therefore subscribes reliably when every publisher offers reliable and best
effort otherwise (also while there is no publisher: it hears any that comes).
"""
from __future__ import annotations

from typing import Iterable

from rclpy.qos import ReliabilityPolicy

AUTO, BEST_EFFORT, RELIABLE = "auto", "best_effort", "reliable"
CHOICES = (AUTO, BEST_EFFORT, RELIABLE)


def offered_reliabilities(publishers: Iterable) -> list[ReliabilityPolicy]:
    """The reliability each publisher offers, from Node.get_publishers_info_by_topic()."""
    return [info.qos_profile.reliability for info in publishers]


def choose_reliability(setting: str, offered: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy:
    """The subscription reliability for a `qos_reliability` setting and the publishers' offers."""
    if setting == BEST_EFFORT:
        return ReliabilityPolicy.BEST_EFFORT
    if setting == RELIABLE:
        return ReliabilityPolicy.RELIABLE
    if setting != AUTO:
        raise ValueError(f"qos_reliability is {setting!r}; expected one of {', '.join(CHOICES)}")
    offered = list(offered)
    if offered and all(policy == ReliabilityPolicy.RELIABLE for policy in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def policy_name(policy: ReliabilityPolicy) -> str:
    return RELIABLE if policy == ReliabilityPolicy.RELIABLE else BEST_EFFORT
