"""Plays a bag over DDS the way `ros2 bag play --clock` does (rosbag2 is not installable in the pip
set-up): every message at its record time, in record order, published as recorded (raw CDR), and
/clock (rosgraph_msgs/Clock) set to each message's record time just before it is published, so a
node with use_sim_time runs on the recording's clock."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from support.bags import message_class

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def clock_msg(ns: int) -> Clock:
    return Clock(clock=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))


class BagPlayer:
    """Publishers for every topic of a bag on `node`, and /clock."""

    def __init__(self, node, path: Path):
        with Reader(path) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            self.messages = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        self.publishers = {topic: node.create_publisher(message_class(msgtype), topic,
                                                        LATCHED if topic == "/tf_static" else RELIABLE)
                           for topic, msgtype in types.items()}
        self.clock = node.create_publisher(Clock, "/clock", RELIABLE)

    @property
    def end(self) -> int:
        """Record time of the last message, ns."""
        return self.messages[-1][1]

    def play(self, wait: Callable[[float], None] = time.sleep, rate: float = 1.0) -> None:
        """Publishes everything, paced by the record times / rate; wait(seconds) passes the time
        (e.g. spinning the subscribers' executor)."""
        start, first = time.monotonic(), self.messages[0][1]
        for topic, record_time, raw in self.messages:
            due = start + (record_time - first) * 1e-9 / rate
            wait(max(0.0, due - time.monotonic()))
            self.clock.publish(clock_msg(record_time))
            self.publishers[topic].publish(raw)
