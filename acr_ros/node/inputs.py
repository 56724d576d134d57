"""The hands node's inputs: per camera an image subscription, its sibling camera_info and an optional
aligned depth topic; the newest-frame mailbox the worker takes from; the subscriptions' QoS.

QoS: every subscription takes rclpy's standard overrides (QoSOverridingOptions: history, depth and
reliability, e.g. `qos_overrides./camera/image_raw.subscription.reliability`). The node's
`qos_reliability` is the default of each topic's reliability override, and `auto` is written there as
`best_available`: rclpy resolves it when the subscription is created (reliable when every publisher
offers reliable, else best effort). A subscription set to best_available follows its publishers
afterwards too, driven by the QoS events: a publisher offering incompatible QoS (a best-effort camera
while subscribed reliably) or a newly matched one that makes every publisher reliable (while
subscribed best effort, which loses large frames over Fast DDS) re-creates it, resolved again.
A subscription with a fixed reliability stays; an incompatible publisher is logged and reported.

Stale publishers: a camera driver that is killed leaves its writer in discovery until its
participant's lease ends (20 s by default in Fast DDS). A publisher that appears after the input's
messages stopped for a second is a driver that restarted: the publishers listed before those
messages are left out of the choice, and so is a node's publisher listed before a newer one of the
same node (name and namespace). A restart with another reliability is followed at once, not 20 s
later. (The graph often names a new publisher's node only seconds after it matched, hence the
silence; two publishers that appear before any message are both kept.)
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from acr_ros import qos
from acr_ros.diagnostics import RateMeter
from acr_ros.frame_inputs import CameraInfos, DecodeSettings, DepthPairing, decode_frame, stamp_ns
from acr_ros.frame_processor import FrameInput
from acr_ros.ros_runtime import RCLError, rcl_reason

UNKNOWN_NODE = "_NODE_NAME_UNKNOWN_"  # rmw's name for a publisher whose node is not (yet) known
SILENCE_S = 1.0  # an input silent this long when a publisher appears: the ones before it are gone
CAMERA_INFO_PAUSE_NS = 1_000_000_000  # a camera's CameraInfos this much older than its frame: it restarted


def sibling_topic(image_topic: str, name: str) -> str:
    """'/cam/image_raw' -> '/cam/<name>' (image_transport's CameraInfo convention)."""
    head, _, _ = image_topic.rpartition("/")
    return f"{head}/{name}" if head or image_topic.startswith("/") else name


def camera_info_topic(node, image_topic: str) -> str:
    """image_transport's rule: an image topic's CameraInfo is the sibling of the image topic as
    remapped (`-r image_raw:=/cam/image_raw` alone moves it to /cam/camera_info), unless the
    camera_info name is remapped itself (hands.launch.py's camera_info:=)."""
    info = sibling_topic(image_topic, "camera_info")
    if node.resolve_topic_name(info) != node.resolve_topic_name(info, only_expand=True):
        return info
    return sibling_topic(node.resolve_topic_name(image_topic), "camera_info")


def compressed_topic(node, image_topic: str) -> str:
    """image_transport's rule: the compressed topic is the base topic as remapped plus /compressed (a
    remapping rule matches whole names, so `-r image_raw:=/cam/image_raw` alone must move it)."""
    return node.resolve_topic_name(image_topic) + "/compressed"


@dataclass
class Input:
    """One subscription of a camera, with what re-creating it needs."""

    topic: str              # as configured
    resolved: str           # the topic's full name, remappings applied: what diagnostics and logs show
    msg_type: type
    callback: Callable
    subscription: object = None
    profile: Optional[QoSProfile] = None     # the QoS the first subscription took, overrides applied
    follows_publishers: bool = False   # best_available: re-chosen when the publishers change
    reliability: Optional[ReliabilityPolicy] = None  # what the subscription uses now
    incompatible: str = ""  # a publisher offers incompatible QoS and nothing arrived since (reported)
    seen: dict = field(default_factory=dict)  # publisher gid -> Listed
    looks: int = 0
    last_message: float = 0.0  # monotonic
    stale_incompatible: int = 0  # incompatible events the subscription expects from stale publishers


@dataclass(frozen=True)
class Listed:
    """When an input first saw a publisher listed."""

    look: int             # a count of the input's looks at the graph
    at: float             # monotonic
    last_message: float   # the input's last message then (monotonic; 0: none yet)

    def after_silence(self) -> bool:
        return self.last_message > 0 and self.at - self.last_message > SILENCE_S

    def replaces(self, older: "Listed") -> bool:
        """It came to a silent input, whose messages went on after the older one was listed."""
        return older.look < self.look and self.after_silence() and self.last_message > older.at


@dataclass
class Camera:
    """One camera's input: the newest unprocessed frame, recent CameraInfos and depth images by stamp."""

    topic: str
    depth_topic: str = ""
    inputs: list[Input] = field(default_factory=list)   # camera_info, image (, depth)
    infos: CameraInfos = field(default_factory=CameraInfos)
    depth: Optional[DepthPairing] = None
    received: RateMeter = field(default_factory=RateMeter)
    info_arrived: threading.Event = field(default_factory=threading.Event)
    first_frame: Optional[float] = None     # monotonic
    encoding: str = ""                      # of the last frame converted
    default_intrinsics: bool = False        # the last frame ran on the default intrinsics
    paired: bool = False                    # its CameraInfos carry its frames' stamps
    warned_default_intrinsics: bool = False
    _frame: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def image_input(self) -> Input:
        return self.inputs[1]

    @property
    def info_input(self) -> Input:
        return self.inputs[0]

    def put_frame(self, msg) -> bool:
        """Stores msg as the newest frame; True when it replaced an unprocessed one (a drop)."""
        self.received.tick()
        if self.first_frame is None:
            self.first_frame = time.monotonic()
        with self._lock:
            dropped = self._frame is not None
            self._frame = msg
        return dropped

    def take_frame(self):
        with self._lock:
            msg, self._frame = self._frame, None
        return msg

    def put_info(self, msg: CameraInfo) -> None:
        self.infos.put(msg)
        self.info_arrived.set()


class CameraInputs:
    """Subscribes a node to its cameras and keeps each subscription's QoS as its publishers change."""

    def __init__(self, node, on_frame: Callable[[Camera, object], None], log):
        self._node = node
        self._on_frame = on_frame
        self._log = log
        self.cameras: list[Camera] = []
        self._depth = 5
        self._default = ReliabilityPolicy.BEST_AVAILABLE

    def check_topic_names(self, image_topics: list[str], depth_topics: list[str]) -> None:
        """ValueError naming the parameter and the name rcl refuses (at configure: not at activate)."""
        names = [("image_topics", name) for topic in image_topics
                 for name in (topic, sibling_topic(topic, "camera_info"))]
        for param, name in names + [("depth_topics", topic) for topic in depth_topics if topic]:
            try:
                self._node.resolve_topic_name(name)
            except RCLError as error:
                raise ValueError(f"parameter {param}: {name!r} is not a valid topic name: "
                                 f"{rcl_reason(error).removeprefix('failed to resolve name: ')}") from None

    def subscribe(self, image_topics: list[str], depth_topics: list[str], compressed: bool, reliability: str,
                  depth: int) -> list[Camera]:
        self._default, self._depth = qos.reliability_policy(reliability), depth
        self.cameras = [self._camera(topic, depth_topics[i] if any(depth_topics) else "", compressed)
                        for i, topic in enumerate(image_topics)]
        return self.cameras

    def unsubscribe(self) -> int:
        """Destroys every subscription; returns how many received frames were never processed."""
        unprocessed = 0
        for camera in self.cameras:
            for item in camera.inputs:
                self._node.destroy_subscription(item.subscription)
            unprocessed += camera.take_frame() is not None
        self.cameras = []
        return unprocessed

    def _camera(self, topic: str, depth_topic: str, compressed: bool) -> Camera:
        camera = Camera(topic, depth_topic, depth=DepthPairing() if depth_topic else None)

        def on_image(msg):
            self._on_frame(camera, msg)

        def on_depth(msg):
            camera.depth.put(stamp_ns(msg.header.stamp), msg)

        # CameraInfo first: the executor takes waiting messages in subscription order, so an image
        # and its CameraInfo that arrive together are converted with it.
        image_topic = compressed_topic(self._node, topic) if compressed else topic
        camera.inputs = [self._input(camera_info_topic(self._node, topic), CameraInfo, camera.put_info),
                         self._input(image_topic, CompressedImage if compressed else Image, on_image)]
        if depth_topic:
            depth_type = CompressedImage if depth_topic.endswith("/compressedDepth") else Image
            camera.inputs.append(self._input(depth_topic, depth_type, on_depth))
        for item in camera.inputs:
            self._connect(item)
        return camera

    def _input(self, topic: str, msg_type, callback) -> Input:
        item = Input(topic, self._node.resolve_topic_name(topic), msg_type, callback)

        def received(msg):
            item.last_message = time.monotonic()
            item.incompatible = ""  # messages arrive: an incompatible publisher is not in the way (any more)
            callback(msg)
        item.callback = received
        return item

    def _connect(self, item: Input, reliability: Optional[ReliabilityPolicy] = None) -> None:
        """(Re-)creates an input's subscription. The first time with the default reliability and the
        topic's overrides (rclpy declares them then); later with the QoS that gave, and the reliability
        the node chose now: the graph may not list a publisher yet when its QoS event arrives."""
        if item.subscription is not None:
            self._node.destroy_subscription(item.subscription)
        events = SubscriptionEventCallbacks(incompatible_qos=lambda info: self._incompatible(item, info),
                                            matched=lambda info: self._matched(item, info))
        item.stale_incompatible = 0
        if item.profile is None:
            self._publishers(item)  # the publishers there before the subscription: the oldest ones
            item.profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._depth, reliability=self._default,
                                      durability=DurabilityPolicy.VOLATILE)
            item.subscription = self._node.create_subscription(
                item.msg_type, item.topic, item.callback, item.profile,
                qos_overriding_options=QoSOverridingOptions.with_default_policies(), event_callbacks=events)
            item.follows_publishers = item.profile.reliability == ReliabilityPolicy.BEST_AVAILABLE  # overridden
            item.reliability = self._resolved(item) if item.follows_publishers else item.profile.reliability
            return
        profile = copy.copy(item.profile)
        profile.reliability = reliability
        item.subscription = self._node.create_subscription(item.msg_type, item.topic, item.callback, profile,
                                                           event_callbacks=events)
        item.reliability = reliability
        if reliability == ReliabilityPolicy.RELIABLE:  # stale best-effort publishers are incompatible with it
            _, stale = self._publishers(item)
            item.stale_incompatible = sum(info.qos_profile.reliability != ReliabilityPolicy.RELIABLE for info in stale)

    def _resolved(self, item: Input) -> ReliabilityPolicy:
        """The reliability rclpy chose for a best_available subscription (the graph knows)."""
        name, namespace = self._node.get_name(), self._node.get_namespace()
        for info in self._node.get_subscriptions_info_by_topic(item.resolved):
            if info.node_name == name and info.node_namespace == namespace:
                return info.qos_profile.reliability
        return qos.choose_reliability(qos.offered_reliabilities(self._node.get_publishers_info_by_topic(item.resolved)))

    def _publishers(self, item: Input) -> tuple[list, list]:
        """The topic's publishers as (current, stale): stale ones were replaced by a restarted driver and
        linger in discovery (see the module's docstring)."""
        listed = self._node.get_publishers_info_by_topic(item.resolved)
        item.looks += 1
        now = Listed(item.looks, time.monotonic(), item.last_message)
        item.seen = {gid: item.seen.get(gid, now) for gid in (bytes(p.endpoint_gid) for p in listed)}
        first = [item.seen[bytes(p.endpoint_gid)] for p in listed]
        current, stale = [], []
        for p, seen in zip(listed, first):
            same_node = [other for q, other in zip(listed, first) if p.node_name != UNKNOWN_NODE
                         and (q.node_namespace, q.node_name) == (p.node_namespace, p.node_name)]
            replaced = (any(other.replaces(seen) for other in first)
                        or any(other.look > seen.look for other in same_node))
            (stale if replaced else current).append(p)
        return current, stale

    def _incompatible(self, item: Input, info) -> None:
        policy = getattr(info.last_policy_kind, "name", str(info.last_policy_kind)).replace("RMW_QOS_POLICY_", "")
        if policy == "RELIABILITY" and info.total_count <= item.stale_incompatible:
            return  # a stale best-effort publisher, left out when this reliable subscription was chosen
        if (item.follows_publishers and policy == "RELIABILITY"
                and item.reliability == ReliabilityPolicy.RELIABLE):  # a best-effort publisher
            self._rechoose(item, ReliabilityPolicy.BEST_EFFORT, "a publisher offers best effort")
            return
        item.incompatible = (f"a publisher of {item.resolved} offers QoS incompatible with this "
                             f"{qos.policy_name(item.reliability)} subscription ({policy}): none of its messages "
                             "arrive; set qos_reliability auto or "
                             f"qos_overrides.{item.resolved}.subscription.reliability")
        self._log.warning(item.incompatible)

    def _matched(self, item: Input, info) -> None:
        """A publisher connected or left: best effort while every publisher is reliable loses large frames.
        A new publisher is noted also while subscribed reliably: it is the newer one at the next restart."""
        current, stale = self._publishers(item)
        if not item.follows_publishers or item.reliability != ReliabilityPolicy.BEST_EFFORT or info.current_count == 0:
            return
        if len(current) + len(stale) < info.current_count:  # the graph lags behind the connection: look again
            self._later(0.2, lambda: self._matched(item, info))
        elif qos.choose_reliability(qos.offered_reliabilities(current)) == ReliabilityPolicy.RELIABLE:
            why = "every publisher offers reliable"
            if any(p.qos_profile.reliability != ReliabilityPolicy.RELIABLE for p in stale):
                why += " (a restarted driver: the best-effort publisher before it is left out)"
            self._rechoose(item, ReliabilityPolicy.RELIABLE, why)

    def _later(self, seconds: float, callback: Callable[[], None]) -> None:
        timer = None

        def once():
            self._node.destroy_timer(timer)
            if self.cameras:  # still subscribed
                callback()
        timer = self._node.create_timer(seconds, once)

    def _rechoose(self, item: Input, reliability: ReliabilityPolicy, why: str) -> None:
        was = item.reliability
        self._connect(item, reliability)
        self._log.info(f"{item.resolved}: {why}: re-subscribed {qos.policy_name(reliability)} "
                       f"(was {qos.policy_name(was)})")

    def decode(self, camera: Camera, msg, settings: DecodeSettings, info_timeout: float) -> FrameInput:
        """A camera's image with its CameraInfo and depth partner as a FrameInput (ImageConversionError
        when the image is unusable). Running on the default intrinsics is warned once per camera."""
        stamp = stamp_ns(msg.header.stamp)
        self._await_info(camera, stamp, info_timeout)
        camera.paired = camera.paired or camera.infos.has(stamp)
        depth = camera.depth.partner(stamp, settings.depth_max_difference_ns) if camera.depth is not None else None
        frame = decode_frame(camera.topic, msg, camera.infos.for_stamp(stamp), depth, settings,
                             depth_expected=camera.depth is not None)
        camera.encoding = getattr(msg, "encoding", "") or getattr(msg, "format", "")
        camera.default_intrinsics = frame.intrinsics is None
        if frame.intrinsics is None and not camera.warned_default_intrinsics:
            camera.warned_default_intrinsics = True
            self._log.warning(
                f"{camera.image_input.resolved}: no usable CameraInfo on {camera.info_input.resolved} "
                f"({frame.intrinsics_problem}): the backend's default intrinsics place the hands, so their "
                "distance is approximate. Fix: publish the camera's calibration there (a driver's "
                "camera_info_url, image_source's camera_info_url, camera_calibration)")
        return frame

    def _await_info(self, camera: Camera, stamp: int, timeout: float) -> None:
        """A camera's first frames may overtake its first CameraInfo: they wait for it, up to timeout
        after the first frame, when the camera_info topic has a publisher. So does the first frame of a
        camera that pairs stamps after a pause of its CameraInfos (a restarted driver, perhaps at another
        resolution and calibration), up to timeout for the CameraInfo of its stamp."""
        if camera.first_frame is None:
            return
        if not camera.info_arrived.is_set():
            remaining = camera.first_frame + timeout - time.monotonic()
            if remaining > 0 and self._node.count_publishers(camera.info_input.resolved) > 0:
                camera.info_arrived.wait(remaining)
        elif (camera.paired and stamp - camera.infos.newest_stamp() > CAMERA_INFO_PAUSE_NS
              and self._node.count_publishers(camera.info_input.resolved) > 0):
            camera.paired = camera.infos.wait_for(stamp, timeout)  # else it waits no more
