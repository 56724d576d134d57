"""The input subscriptions' reliability: the `qos_reliability` parameter and rclpy's best_available.

A best-effort subscriber to a reliable publisher loses large frames over Fast DDS (about half of
640x480 frames, docs/reliability.md), and a reliable subscriber never hears a best-effort
publisher. `auto` is therefore rclpy's BEST_AVAILABLE: reliable when every publisher offers
reliable (also while there is none yet), best effort otherwise; acr_ros.node.inputs re-chooses it
when the publishers change.
"""
from __future__ import annotations

from typing import Iterable

from rclpy.qos import ReliabilityPolicy

AUTO, BEST_EFFORT, RELIABLE = "auto", "best_effort", "reliable"
CHOICES = (AUTO, BEST_EFFORT, RELIABLE)
_POLICIES = {AUTO: ReliabilityPolicy.BEST_AVAILABLE, BEST_EFFORT: ReliabilityPolicy.BEST_EFFORT,
             RELIABLE: ReliabilityPolicy.RELIABLE}


def reliability_policy(setting: str) -> ReliabilityPolicy:
    """The subscription reliability of a `qos_reliability` setting (auto: BEST_AVAILABLE)."""
    if setting not in _POLICIES:
        raise ValueError(f"qos_reliability is {setting!r}; expected one of {', '.join(CHOICES)}")
    return _POLICIES[setting]


def offered_reliabilities(publishers: Iterable) -> list[ReliabilityPolicy]:
    """The reliability each publisher offers, from Node.get_publishers_info_by_topic()."""
    return [info.qos_profile.reliability for info in publishers]


def choose_reliability(offered: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy:
    """BEST_AVAILABLE's choice for a subscription: reliable when every publisher offers reliable."""
    if all(policy == ReliabilityPolicy.RELIABLE for policy in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def policy_name(policy: ReliabilityPolicy) -> str:
    return policy.name.lower() if isinstance(policy, ReliabilityPolicy) else str(policy)
