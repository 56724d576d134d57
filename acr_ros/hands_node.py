"""The hands node: camera images in; hands, per-side wrist poses, TF, RViz markers, an overlay and
diagnostics out. A managed (lifecycle) node.

One job: convert ROS messages to arrays, hand them to a hand backend (acr_ros.backends), and
publish what comes back, stamped with each source image's stamp and frame_id, each hand with its
track (acr_ros.tracks: per camera and side).

Lifecycle (rclpy.lifecycle: the standard ~/change_state, ~/get_state, ... services and
~/transition_event):
  configure   checks the parameters, loads the model, creates the publishers and diagnostics
  activate    subscribes to the cameras, starts inference and publishing
  deactivate  unsubscribes, stops inference and publishing, ends the tracks; the model stays loaded
  cleanup     releases the model (and its accelerator memory) and the publishers
  shutdown    from any state: releases everything; main() then exits 0
With `autostart` (default) the node configures and activates itself at start. `enabled` maps onto
the lifecycle: setting it false deactivates the node, true activates it; it follows the state.

Threading: subscription callbacks only store the newest message of each camera (older unprocessed
frames are dropped and counted, never queued) and, with depth_topics, its last depth images; one
worker thread, running while the node is active, converts, batches the cameras' newest frames into
one forward pass, places the hands on their depth partners and publishes. Transitions run
on the executor thread and stop the worker before they change what it uses.
"""
from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from geometry_msgs.msg import PoseStamped
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from acr_ros import qos, ros_messages
from acr_ros.acr.depth import fuse_hand
from acr_ros.acr.hands import LEFT, RIGHT, SIDES, CameraIntrinsics, FrameResult
from acr_ros.acr.one_euro import SmoothingConfig, lag_seconds
from acr_ros.acr.options import PRECISIONS, RUNTIMES, EngineOptions, parse_providers
from acr_ros.backends import BACKENDS, THRESHOLDS, BackendOutOfMemoryError, create_backend, faces_by_side
from acr_ros.depth_pairing import DepthPairing
from acr_ros.diagnostics import Counters, LatencyStats, RateMeter
from acr_ros.image_conversion import (
    DEFAULT_MAX_PIXELS,
    ImageConversionError,
    bgr_to_image,
    compressed_to_bgr,
    depth_to_metres,
    image_to_bgr,
)
from acr_ros.msg import HandMesh, Hands
from acr_ros.ros_runtime import LoadingStopped, loading, spin_until_stopped, start_ros, warn_unknown_parameters
from acr_ros.tracks import HandTracker


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    at_configure: bool = False       # model and input parameters: applied by configure, settable while unconfigured
    read_only: bool = False          # read once at start
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] = ()


PARAMS = (
    Param("backend", "auto", "Hand model: 'acr', 'mediapipe' (embedded, no download), or 'auto' "
          "(ACR when checkpoint and MANO files are configured, else mediapipe)", True,
          choices=BACKENDS),
    Param("checkpoint", "", "Path to the ACR checkpoint wild.pkl (from the ACR README's Google Drive link)",
          True),
    Param("mano_dir", "", "Folder holding MANO_LEFT.pkl and MANO_RIGHT.pkl (https://mano.is.tue.mpg.de)",
          True),
    Param("device", "auto", "Inference device: auto (CUDA when available), cuda, cuda:N or cpu", True),
    Param("precision", "auto", "Network precision: auto (fp16 on CUDA, bf16 on a CPU with native bf16, each only "
          "where it stays within 1 px / 1 mm of fp32 on the bundled photos; else fp32), fp32, fp16, bf16",
          True, choices=PRECISIONS),
    Param("runtime", "torch", "What runs the ACR network: torch, or onnxruntime (exported to ONNX at the first "
          "start and cached, fp32; needs the onnxruntime package, onnxruntime-gpu for the CUDA and TensorRT "
          "providers)", True,
          choices=RUNTIMES),
    Param("cuda_graphs", True, "On a CUDA device with runtime torch: replay the network, the decoding and MANO as "
          "CUDA graphs, captured while loading for one image and on first use for each larger batch (that "
          "batch waits about a second once); false runs them eagerly, about 4x slower at batch 1", True),
    Param("onnx_providers", "", "With runtime onnxruntime: execution providers in order of preference, "
          "comma-separated, e.g. 'TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider'; "
          "empty: CUDA then CPU on a CUDA device, CPU otherwise", True),
    Param("autostart", True, "Configure and activate the node at start; false: it stays unconfigured "
          "until a lifecycle manager or `ros2 lifecycle set` drives it", read_only=True),
    Param("enabled", True, "Follows the lifecycle state: false deactivates the node (no subscriptions, "
          "no inference, no publishing; the model stays loaded), true activates it again. With "
          "autostart, false at start configures the node without activating it"),
    # One confidence threshold per backend, each with its own meaning and range.
    *(Param(t.parameter, t.default, t.meaning, float_range=(t.low, t.high)) for t in THRESHOLDS),
    Param("suppress_duplicate_hands", False, "ACR: when the left and right detections fall on the same "
          "hand, keep only the stronger (off = official behaviour)", True),
    Param("smoothing.enabled", False, "One-Euro temporal smoothing of MANO pose and shape (the seed demo's -t)"),
    Param("smoothing.min_cutoff", 4.0, "One-Euro minimum cutoff (Hz) for finger pose and orientation",
          float_range=(0.001, 100.0)),
    Param("smoothing.shape_min_cutoff", 0.6, "One-Euro minimum cutoff (Hz) for the shape betas",
          float_range=(0.001, 100.0)),
    Param("smoothing.beta", 0.7, "One-Euro speed coefficient", float_range=(0.0, 100.0)),
    Param("smoothing.d_cutoff", 1.0, "One-Euro derivative cutoff (Hz)", float_range=(0.001, 100.0)),
    Param("image_topics", ["image_raw"], "Camera image topics; each camera's CameraInfo is the sibling "
          "'camera_info' topic. Several topics are batched into one forward pass", True),
    Param("compressed", False, "Subscribe to '<image topic>/compressed' (sensor_msgs/CompressedImage) "
          "instead of raw images", True),
    Param("qos_reliability", qos.AUTO, "Input subscription reliability: auto (reliable when every publisher "
          "of the topic offers reliable, else best effort, re-chosen when the publishers change: what "
          "ros2 topic echo and rosbag2 do), best_effort (sensor data, REP 2003) or reliable", True,
          choices=qos.CHOICES),
    Param("qos_depth", 5, "Image subscription queue depth", True, int_range=(1, 100)),
    Param("camera_info_timeout", 1.0, "Seconds a camera's first frame waits for its first CameraInfo when "
          "the camera_info topic has a publisher (then: the default intrinsics, with a warning)",
          float_range=(0.0, 10.0)),
    Param("depth_topics", [""], "Depth images registered to each colour camera, parallel to image_topics "
          "(e.g. '/camera/aligned_depth_to_color/image_raw'; a topic ending in '/compressedDepth' is "
          "read as compressedDepth); '' for a camera without depth; all '': no depth", True),
    Param("depth_max_time_difference", 0.02, "Seconds between a colour frame's stamp and its depth "
          "image's; a frame without a depth image that near is placed by the model (counted)",
          float_range=(0.0, 1.0)),
    Param("depth_millimetres_per_unit", 1.0, "Millimetres per unit of 16-bit depth images (1.0: "
          "RealSense, Orbbec, Azure Kinect); 32FC1 depth is metres", float_range=(0.001, 1000.0)),
    Param("max_image_pixels", DEFAULT_MAX_PIXELS, "Larger images are rejected (counted on diagnostics)",
          int_range=(1, 100_000_000)),
    Param("track_timeout", 2.0, "Seconds (image stamps) between two processed frames of a camera beyond "
          "which its hand tracks end; keep it above the time one inference takes",
          float_range=(0.01, 3600.0)),
    Param("publish_wrist_poses", True, "Publish each side's wrist as geometry_msgs/PoseStamped on "
          "~/left/wrist_pose and ~/right/wrist_pose (RELIABLE), only while that side is tracked"),
    Param("publish_tf", True, "Publish TF frames of the hands"),
    Param("tf_joints", True, "Publish a TF frame for each of the 21 joints (false: wrists only)"),
    Param("frame_prefix", "hand", "Prefix of the TF frame names, e.g. hand_left_wrist"),
    Param("publish_markers", True, "Publish RViz markers (mesh, skeleton, joints, label) on ~/markers"),
    Param("marker_lifetime", 1.0, "Seconds RViz keeps a hand's markers without a refresh, so that "
          "stale hands vanish when the camera stops (0: until deleted)", float_range=(0.0, 3600.0)),
    Param("publish_overlay", True, "Publish ~/overlay (input with the hands drawn), only while subscribed"),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages", True, float_range=(0.1, 60.0)),
)


PARAMS_BY_NAME = {param.name: param for param in PARAMS}


def _descriptor(param: Param) -> ParameterDescriptor:
    description = param.description
    if param.choices:
        description += f" (one of: {', '.join(param.choices)})"
    if param.at_configure:
        description += " [applied at configure: set it while the node is unconfigured]"
    descriptor = ParameterDescriptor(description=description, read_only=param.read_only)
    if param.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=param.float_range[0], to_value=param.float_range[1])]
    if param.int_range:
        descriptor.integer_range = [IntegerRange(from_value=param.int_range[0], to_value=param.int_range[1])]
    return descriptor


def sibling_topic(image_topic: str, name: str) -> str:
    """'/cam/image_raw' -> '/cam/<name>' (image_transport's CameraInfo convention)."""
    head, _, _ = image_topic.rpartition("/")
    return f"{head}/{name}" if head or image_topic.startswith("/") else name


def _problem(param: Param, value) -> Optional[str]:
    """Why a parameter value is refused beyond its type and range (the descriptors enforce those), or None."""
    if param.choices and value not in param.choices:
        return f"parameter {param.name} is {value!r}; expected one of {', '.join(param.choices)}"
    if param.name == "frame_prefix" and (not value or "/" in value or " " in value):
        return "frame_prefix must be non-empty, without '/' or spaces"
    if param.name == "image_topics" and not value:
        return "image_topics is empty: name at least one camera image topic"
    return None


def depth_topics_problem(image_topics: list[str], depth_topics: list[str]) -> Optional[str]:
    """Why depth_topics does not fit image_topics, or None."""
    if any(depth_topics) and len(depth_topics) != len(image_topics):
        return (f"depth_topics has {len(depth_topics)} entries but image_topics has {len(image_topics)}: "
                "give one per camera ('' for a camera without depth)")
    return None


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_nanoseconds(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@dataclass
class Input:
    """One subscription of a camera, with what re-creating it (another reliability) needs."""

    topic: str              # as configured
    resolved: str           # the topic's full name, remappings applied: what diagnostics and logs show
    msg_type: type
    callback: object
    subscription: object = None
    reliability: Optional[ReliabilityPolicy] = None


class Camera:
    """One camera's input: the newest unprocessed frame, recent CameraInfos by stamp and, with a
    depth topic, recent depth images by stamp."""

    def __init__(self, topic: str, depth_topic: str = ""):
        self.topic = topic
        self.depth_topic = depth_topic
        self.depth = DepthPairing() if depth_topic else None
        self._frame = None
        self._infos: dict[tuple[int, int], CameraInfo] = {}
        self._latest_info: Optional[CameraInfo] = None
        self._lock = threading.Lock()
        self.info_arrived = threading.Event()
        self.received = RateMeter()
        self.inputs: list[Input] = []  # image, camera_info (and depth), while the node is active
        self.activated = time.monotonic()
        self.first_frame: Optional[float] = None   # monotonic times
        self.last_frame: Optional[float] = None
        self.encoding = ""                          # of the last frame converted
        self.default_intrinsics = False             # the last frame ran on the default intrinsics
        self.warned_default_intrinsics = False

    @property
    def image_input(self) -> Input:
        return self.inputs[1]

    def put_frame(self, msg) -> bool:
        """Stores msg as the newest frame; True when it replaced an unprocessed one (a drop)."""
        self.received.tick()
        self.last_frame = time.monotonic()
        if self.first_frame is None:
            self.first_frame = self.last_frame
        with self._lock:
            dropped = self._frame is not None
            self._frame = msg
        return dropped

    def take_frame(self):
        with self._lock:
            msg, self._frame = self._frame, None
        return msg

    def put_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._infos[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
            while len(self._infos) > 30:
                self._infos.pop(next(iter(self._infos)))
            self._latest_info = msg
        self.info_arrived.set()

    def info_for(self, stamp) -> Optional[CameraInfo]:
        """The CameraInfo with the image's exact stamp, else the newest one (K rarely changes)."""
        with self._lock:
            return self._infos.get((stamp.sec, stamp.nanosec), self._latest_info)


@dataclass(frozen=True)
class PendingFrame:
    """A converted image waiting for inference, with what its outputs need."""

    camera: Camera
    header: object          # std_msgs/Header of the image: stamp and frame_id of every output
    bgr: np.ndarray         # the image, BGR uint8
    intrinsics: Optional[CameraIntrinsics]  # None: uncalibrated, the backend's default is used


def _logged(transition):
    """A transition callback whose unexpected exception is logged with its traceback (rclpy turns it
    into ERROR without a word); on_error then releases everything."""
    @functools.wraps(transition)
    def callback(self, state):
        try:
            return transition(self, state)
        except Exception:
            self.get_logger().error(f"{transition.__name__} failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
    return callback


RCLError = rclpy_implementation.RCLError
# What a refused configuration raises: a message naming the parameter or file, where and why.
CONFIGURATION_ERRORS = (ValueError, FileNotFoundError, ImportError)
# Per-side wrist poses: the newest pose is the command; RELIABLE, or MoveIt Servo and most
# controllers (reliable subscribers) never connect.
WRIST_POSE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# tf2_ros's TransformBroadcaster QoS (DynamicBroadcasterQoS): what TF listeners expect on /tf.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class HandsNode(LifecycleNode):
    REPORTED = ("bad_input", "inference_errors", "internal_errors")  # counters that set the level
    STAGES = ("conversion", "inference", "fusion", "publish")  # latency per stage, on /diagnostics

    def __init__(self, backend_factory=None, **node_options):
        """backend_factory() -> (backend, reason) replaces the parameter-driven choice (tests).
        The node starts unconfigured: main() runs start() with autostart, a lifecycle manager otherwise."""
        super().__init__("acr_hands", **node_options)
        for param in PARAMS:
            self.declare_parameter(param.name, param.default, _descriptor(param))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._backend_factory = backend_factory or self._create_backend

        self.counters = Counters()
        self._reported: dict[str, int] = {}
        self._smoothing_changed = threading.Event()
        self.latency = LatencyStats()
        self.stage_latency = {stage: LatencyStats() for stage in self.STAGES}
        self.published = RateMeter()
        self.tracker = HandTracker(self._param("track_timeout"))  # lives as long as the node: ids stay unique
        self.finished = Future()  # done once the shutdown transition ran: main() then exits

        # Set by configure, released by cleanup:
        self.backend = None
        self.faces = None
        self._outputs: list = []  # managed publishers
        self._diagnostics = None  # (publisher, timer): reported while inactive too
        # Set by activate, released by deactivate:
        self.cameras: list[Camera] = []
        self._worker: Optional[threading.Thread] = None
        self._shown_sides: dict[str, set[str]] = {}  # per frame_id: sides with markers out
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._qos_timer = None

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def configured(self) -> bool:
        return self.backend is not None

    @property
    def active(self) -> bool:
        return self._worker is not None

    def start(self) -> bool:
        """autostart: configure, then activate unless `enabled` is false; False when a transition
        failed (its reason is logged)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return not self._param("enabled") or self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    @_logged
    def on_configure(self, state):
        try:
            self._configure()
        except CONFIGURATION_ERRORS as error:
            self._release()
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except LoadingStopped:
            self._release()
            self.get_logger().info("stopped while loading the model: configure abandoned")
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    @_logged
    def on_activate(self, state):
        result = super().on_activate(state)  # the managed publishers first: the worker publishes
        image_topics, depth_topics = self._param("image_topics"), self._param("depth_topics")
        self.cameras = [self._subscribe(topic, depth_topics[i] if any(depth_topics) else "")
                        for i, topic in enumerate(image_topics)]
        # auto reliability follows the publishers: checked once a second while active.
        self._qos_timer = (self.create_timer(1.0, self._follow_publishers)
                           if self._param("qos_reliability") == qos.AUTO else None)
        self._start_worker()
        self._publish_mesh()
        self._follow_state(enabled=True)
        self.get_logger().info("active: subscribed to " + ", ".join(
            f"{i.resolved} ({qos.policy_name(i.reliability)})" for c in self.cameras for i in c.inputs))
        return result

    @_logged
    def on_deactivate(self, state):
        self._stop_worker()  # waits for a batch in flight: nothing is published after this
        self._unsubscribe("the node was deactivated")
        self._delete_shown_markers()  # stale hands leave RViz now, not after their lifetime
        self.tracker.clear()
        self.backend.reset()  # a later activation starts without old smoothing or tracking state
        self._follow_state(enabled=False)
        self.get_logger().info("inactive: unsubscribed, the model stays loaded")
        return super().on_deactivate(state)

    @_logged
    def on_cleanup(self, state):
        self._release()
        self.get_logger().info("cleaned up: model and publishers released")
        return super().on_cleanup(state)

    @_logged
    def on_shutdown(self, state):
        try:
            self.shutdown()
            self.get_logger().info(f"shut down from {state.label}: everything released")
            return super().on_shutdown(state)
        finally:
            self.finished.set_result(True)

    def on_error(self, state):
        self.get_logger().error(f"a transition from {state.label} failed: model and connections released, "
                                "the node is unconfigured")
        self._release()
        return super().on_error(state)

    def shutdown(self) -> None:
        """Releases everything, in any state; the worker gets 1.5 s (a batch still running then
        finishes unpublished and the model is left to the process exit)."""
        self._release(worker_timeout=1.5)

    def _configure(self) -> None:
        for param in PARAMS:
            problem = _problem(param, self._param(param.name))
            if problem:
                raise ValueError(problem)
        for topic in self._param("image_topics"):  # a bad name is refused here, not at activate
            for name in (self._image_topic(topic), sibling_topic(topic, "camera_info")):
                try:
                    self.resolve_topic_name(name)
                except RCLError as error:  # "failed to resolve name: <why>, at <rcl source>"
                    why = str(error).removeprefix("failed to resolve name: ").split(", at /")[0]
                    raise ValueError(f"parameter image_topics: {name!r} is not a valid topic name: {why}") from None
        problem = depth_topics_problem(self._param("image_topics"), self._param("depth_topics"))
        if problem:
            raise ValueError(problem)
        for name in filter(None, self._param("depth_topics")):
            try:
                self.resolve_topic_name(name)
            except RCLError as error:
                why = str(error).removeprefix("failed to resolve name: ").split(", at /")[0]
                raise ValueError(f"parameter depth_topics: {name!r} is not a valid topic name: {why}") from None
        self._smoothing_changed.clear()
        with loading():
            self.backend, reason = self._backend_factory()
        self.backend.detection_threshold = self._param(self.backend.threshold.parameter)
        self.get_logger().info(f"hand backend: {self.backend.name} ({reason}); model {self.backend.model}"
                               + (f", weights {self.backend.checkpoint}" if self.backend.checkpoint else ""))
        self.faces = faces_by_side(self.backend)
        self.hands_pub = self._output(Hands, "~/hands", 10)
        self.wrist_pose_pubs = {side: self._output(PoseStamped, f"~/{side}/wrist_pose", WRIST_POSE_QOS)
                                for side in SIDES}
        self.markers_pub = self._output(MarkerArray, "~/markers", 10)
        self.overlay_pub = self._output(Image, "~/overlay", 2)
        self.tf_pub = self._output(TFMessage, "/tf", TF_QOS)
        self._mesh_pub = None
        if self.faces[LEFT] is not None and self.faces[RIGHT] is not None:
            self._mesh_pub = self._output(HandMesh, "~/mesh", QoSProfile(
                depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE))
        self._diagnostics = (self.create_publisher(DiagnosticArray, "/diagnostics", 10),
                             self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics))

    def _output(self, msg_type, topic: str, qos):
        """A managed publisher: it publishes only while the node is active."""
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._outputs.append(publisher)
        return publisher

    def _release(self, worker_timeout: Optional[float] = None) -> None:
        """Back to unconfigured from any state: worker, subscriptions, publishers, model."""
        stopped = self._stop_worker(worker_timeout)
        self._unsubscribe("the node released its inputs (shutdown or a failed transition)")
        self._shown_sides.clear()
        self.tracker.clear()
        for publisher in self._outputs:
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = []
        if self._diagnostics is not None:
            self.destroy_publisher(self._diagnostics[0])
            self.destroy_timer(self._diagnostics[1])
            self._diagnostics = None
        if self.backend is not None and stopped:  # else the worker still uses it
            self.backend.close()
        self.backend = self.faces = None

    def _start_worker(self) -> None:
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="acr_hands_inference", daemon=True)
        self._worker.start()

    def _stop_worker(self, timeout: Optional[float] = None) -> bool:
        """True when the worker is gone (or never ran)."""
        if self._worker is None:
            return True
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout)
        stopped = not self._worker.is_alive()
        self._worker = None
        return stopped

    def _unsubscribe(self, reason: str) -> None:
        if self._qos_timer is not None:
            self.destroy_timer(self._qos_timer)
            self._qos_timer = None
        for camera in self.cameras:
            for item in camera.inputs:
                self.destroy_subscription(item.subscription)
            if camera.take_frame() is not None:
                self.counters.add("dropped", reason)
        self.cameras = []

    def _follow_state(self, enabled: bool) -> None:
        """Keeps the parameter `enabled` equal to whether the node is active."""
        if self._param("enabled") != enabled:
            self.set_parameters([Parameter("enabled", value=enabled)])

    def _delete_shown_markers(self) -> None:
        now = self.get_clock().now().to_msg()
        for frame_id, sides in self._shown_sides.items():
            if sides:
                self.markers_pub.publish(ros_messages.deletion_markers(sides, Header(stamp=now, frame_id=frame_id)))
        self._shown_sides.clear()

    # ---- set-up -------------------------------------------------------------------------------
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _smoothing_config(self) -> Optional[SmoothingConfig]:
        if not self._param("smoothing.enabled"):
            return None
        min_cutoff, beta = self._param("smoothing.min_cutoff"), self._param("smoothing.beta")
        return SmoothingConfig(
            pose_min_cutoff=min_cutoff, orient_min_cutoff=min_cutoff,
            pose_beta=beta, orient_beta=beta, betas_beta=beta,
            betas_min_cutoff=self._param("smoothing.shape_min_cutoff"),
            d_cutoff=self._param("smoothing.d_cutoff"),
        )

    def _create_backend(self):
        return create_backend(
            backend=self._param("backend"),
            checkpoint=self._param("checkpoint"),
            mano_dir=self._param("mano_dir"),
            options=self._engine_options(),
            smoothing=self._smoothing_config(),
            tune_process=True,
        )

    def _engine_options(self) -> EngineOptions:
        # cuda_graphs true is "auto": graphs where they apply (CUDA, runtime torch), not a refusal elsewhere.
        return EngineOptions(device=self._param("device"), precision=self._param("precision"),
                             suppress_duplicate_hands=self._param("suppress_duplicate_hands"),
                             runtime=self._param("runtime"), cuda_graphs="auto" if self._param("cuda_graphs") else False,
                             onnx_providers=parse_providers(self._param("onnx_providers")))

    def _publish_mesh(self) -> None:
        if self._mesh_pub is not None:
            self._mesh_pub.publish(ros_messages.mesh_msg(self.faces[LEFT], self.faces[RIGHT],
                                                         self.get_clock().now().to_msg()))

    def _image_topic(self, topic: str) -> str:
        return topic + "/compressed" if self._param("compressed") else topic

    def _subscribe(self, topic: str, depth_topic: str) -> Camera:
        camera = Camera(topic, depth_topic)

        def on_image(msg):
            self.counters.add("received")
            if camera.put_frame(msg):
                self.counters.add("dropped", "a newer frame arrived before inference took this one")
            self._wake.set()

        def on_depth(msg):
            camera.depth.put(stamp_nanoseconds(msg.header.stamp), msg)

        # CameraInfo first: the executor takes waiting messages in subscription order, so an image
        # and its CameraInfo that arrive together are converted with it.
        image_type = CompressedImage if self._param("compressed") else Image
        camera.inputs = [self._input(sibling_topic(topic, "camera_info"), CameraInfo, camera.put_info),
                         self._input(self._image_topic(topic), image_type, on_image)]
        if depth_topic:
            depth_type = CompressedImage if depth_topic.endswith("/compressedDepth") else Image
            camera.inputs.append(self._input(depth_topic, depth_type, on_depth))
        for item in camera.inputs:
            self._connect(item, self._reliability_for(item))
        return camera

    def _input(self, topic: str, msg_type, callback) -> Input:
        return Input(topic, self.resolve_topic_name(topic), msg_type, callback)

    def _reliability_for(self, item: Input) -> ReliabilityPolicy:
        offered = qos.offered_reliabilities(self.get_publishers_info_by_topic(item.resolved))
        return qos.choose_reliability(self._param("qos_reliability"), offered)

    def _connect(self, item: Input, reliability: ReliabilityPolicy) -> None:
        """(Re-)creates an input's subscription with that reliability."""
        if item.subscription is not None:
            self.destroy_subscription(item.subscription)
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._param("qos_depth"),
                             reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        item.subscription = self.create_subscription(item.msg_type, item.topic, item.callback, profile)
        item.reliability = reliability

    def _follow_publishers(self) -> None:
        """qos_reliability auto: re-subscribes an input whose publishers now call for the other
        reliability (a reliable camera replaced by a best-effort one, or the reverse)."""
        for camera in self.cameras:
            for item in camera.inputs:
                reliability = self._reliability_for(item)
                if reliability != item.reliability:
                    self.get_logger().info(
                        f"{item.resolved}: publishers offer {qos.policy_name(reliability)}: "
                        f"re-subscribing {qos.policy_name(reliability)} (was {qos.policy_name(item.reliability)})")
                    self._connect(item, reliability)

    def _validate_parameters(self, params) -> SetParametersResult:
        # Types and ranges are enforced by the descriptors; the rest is checked here.
        for param in params:
            spec = PARAMS_BY_NAME.get(param.name)
            if spec is None:
                continue
            if spec.at_configure and self.configured:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is applied at configure: deactivate and clean up the node first "
                    f"(ros2 lifecycle set {self.get_fully_qualified_name()} cleanup)"))
            if param.name == "enabled" and param.value and not self.configured:
                return SetParametersResult(successful=False, reason=(
                    f"the node is unconfigured: configure it first "
                    f"(ros2 lifecycle set {self.get_fully_qualified_name()} configure)"))
            problem = _problem(spec, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        for param in params:
            self.get_logger().info(f"parameter {param.name} set to {param.value!r}")
            if self.configured and param.name == self.backend.threshold.parameter:
                self.backend.detection_threshold = float(param.value)
            elif param.name.startswith("smoothing."):
                self._smoothing_changed.set()
            elif param.name == "track_timeout":
                self.tracker.timeout_s = float(param.value)
            elif param.name == "enabled":
                if param.value and self.configured and not self.active:
                    self.trigger_activate()
                elif not param.value and self.active:
                    self.trigger_deactivate()

    # ---- inference ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            frames = [(camera, msg) for camera in self.cameras if (msg := camera.take_frame()) is not None]
            if not frames:
                continue
            try:
                batch = [frame for frame in (self._convert(*item) for item in frames) if frame is not None]
                if batch:
                    self._process(batch)
            except Exception as error:  # the worker must outlive any one batch
                self.counters.add("internal_errors", f"{type(error).__name__}: {error}", len(frames))
                self.get_logger().error(f"frames lost to an internal error: {type(error).__name__}: {error}",
                                        throttle_duration_sec=5.0)

    def _convert(self, camera: Camera, msg):
        start = time.perf_counter()
        max_pixels = self._param("max_image_pixels")
        try:
            if isinstance(msg, CompressedImage):
                bgr = compressed_to_bgr(msg, max_pixels=max_pixels)
            else:
                bgr = image_to_bgr(msg, max_pixels=max_pixels)
        except ImageConversionError as error:
            self.counters.add("bad_input", str(error))
            self.get_logger().warning(f"dropping a frame from {camera.topic}: {error}",
                                      throttle_duration_sec=5.0)
            return None
        camera.encoding = getattr(msg, "encoding", "") or getattr(msg, "format", "")
        self._await_first_info(camera)
        info = camera.info_for(msg.header.stamp)
        intrinsics = CameraIntrinsics.from_k(info.k) if info is not None else None
        if info is not None and intrinsics is not None and (info.width, info.height) not in (
                (0, 0), (bgr.shape[1], bgr.shape[0])):
            self.get_logger().warning(
                f"camera_info of {camera.topic} is for {info.width}x{info.height} but the image is "
                f"{bgr.shape[1]}x{bgr.shape[0]}: using the default intrinsics", throttle_duration_sec=5.0)
            intrinsics = None
        camera.default_intrinsics = intrinsics is None
        if intrinsics is None and not camera.warned_default_intrinsics:
            camera.warned_default_intrinsics = True
            info_topic = camera.inputs[0].resolved
            self.get_logger().warning(
                f"{camera.image_input.resolved}: no usable CameraInfo on {info_topic} "
                "(none arrived, K all zeros, or another size): the backend's default intrinsics place "
                "the hands, so their distance is approximate. Fix: publish the camera's calibration "
                "there (a driver's camera_info_url, image_source's camera_info_url, camera_calibration)")
        self.stage_latency["conversion"].add(time.perf_counter() - start)
        return PendingFrame(camera, msg.header, bgr, intrinsics)

    def _await_first_info(self, camera: Camera) -> None:
        """A camera's first frames may overtake its first CameraInfo: they wait for it, up to
        camera_info_timeout after the first frame, when the camera_info topic has a publisher."""
        if camera.info_arrived.is_set() or camera.first_frame is None:
            return
        remaining = camera.first_frame + self._param("camera_info_timeout") - time.monotonic()
        if remaining > 0 and self.count_publishers(camera.inputs[0].resolved) > 0:
            camera.info_arrived.wait(remaining)

    def _process(self, batch) -> None:
        if self._smoothing_changed.is_set():
            self._smoothing_changed.clear()
            self.backend.set_smoothing(self._smoothing_config())
        # A camera silent for longer than track_timeout: its tracks end before inference, so that
        # their smoothing restarts with this frame.
        for frame in batch:
            for track in self.tracker.expire(frame.camera.topic, stamp_nanoseconds(frame.header.stamp)):
                self.backend.reset_side(frame.camera.topic, track.side)
        start = time.perf_counter()
        results = self._reconstruct(batch)
        self.stage_latency["inference"].add(time.perf_counter() - start)
        if self._stop.is_set():  # deactivating or shutting down: publish nothing more
            return
        for frame, result in zip(batch, results):
            if result is not None:
                if frame.camera.depth is not None:
                    self._fuse_depth(frame, result)
                self._publish(frame, result)

    def _fuse_depth(self, frame: PendingFrame, result: FrameResult) -> None:
        """Places the frame's hands on its depth partner (same stamp within
        depth_max_time_difference); without one, or with unusable depth, the model's placement
        stays and each hand says so (depth_source model)."""
        start = time.perf_counter()
        camera = frame.camera
        max_difference_ns = int(self._param("depth_max_time_difference") * 1e9)
        msg = camera.depth.partner(stamp_nanoseconds(frame.header.stamp), max_difference_ns)
        if msg is None:
            self.counters.add("depth_unpaired", f"no depth image within {max_difference_ns / 1e6:.0f} ms of "
                              f"a frame of {camera.topic}")
            return
        try:
            metres = depth_to_metres(msg, self._param("depth_millimetres_per_unit"),
                                     max_pixels=self._param("max_image_pixels"))
        except ImageConversionError as error:
            self.counters.add("bad_depth", str(error))
            self.get_logger().warning(f"depth image of {camera.depth_topic} not used: {error}",
                                      throttle_duration_sec=5.0)
            return
        height, width = frame.bgr.shape[:2]
        if metres.shape != (height, width):
            reason = (f"depth image of {camera.depth_topic} is {metres.shape[1]}x{metres.shape[0]} but the "
                      f"colour image is {width}x{height}: subscribe to the depth registered to colour "
                      "(e.g. aligned_depth_to_color/image_raw)")
            self.counters.add("bad_depth", reason)
            self.get_logger().warning(reason, throttle_duration_sec=5.0)
            return
        for hand in result.hands:
            fit = fuse_hand(hand, metres, result.intrinsics)
            if not fit.used:
                self.counters.add("depth_unplaced", fit.reason)
        self.stage_latency["fusion"].add(time.perf_counter() - start)

    def _reconstruct(self, batch: list[PendingFrame]) -> list[Optional[FrameResult]]:
        """The backend's results, None for frames it failed on; a failure never takes the node down.

        Out of accelerator memory, a batch is retried in halves; a single frame that still fails is
        counted and reported.
        """
        try:
            return self.backend.reconstruct(
                images=[frame.bgr for frame in batch],
                intrinsics=[frame.intrinsics for frame in batch],
                timestamps=[stamp_seconds(frame.header.stamp) for frame in batch],
                streams=[frame.camera.topic for frame in batch],
            )
        except BackendOutOfMemoryError as error:
            if len(batch) == 1:
                return self._inference_failed(batch, error)
            self.get_logger().warning(f"out of accelerator memory on {len(batch)} frames: retrying in "
                                      "halves", throttle_duration_sec=5.0)
            half = len(batch) // 2
            return self._reconstruct(batch[:half]) + self._reconstruct(batch[half:])
        except Exception as error:
            return self._inference_failed(batch, error)

    def _inference_failed(self, batch: list[PendingFrame], error: Exception) -> list[Optional[FrameResult]]:
        self.counters.add("inference_errors", f"{type(error).__name__}: {error}", amount=len(batch))
        self.get_logger().warning(f"inference failed on {len(batch)} frame(s): {type(error).__name__}: "
                                  f"{error}", throttle_duration_sec=5.0)
        return [None] * len(batch)

    def _publish(self, frame: PendingFrame, result: FrameResult) -> None:
        start = time.perf_counter()
        header, stream = frame.header, frame.camera.topic
        height, width = frame.bgr.shape[:2]
        finite = [hand for hand in result.hands if hand.is_finite()]
        if len(finite) < len(result.hands):
            self.counters.add("non_finite_hands", "a hand had NaN or Inf values", len(result.hands) - len(finite))
        # The published hands (one per side) are what the tracks follow; a side that is not
        # published ends its track, and that side's smoothing restarts.
        result.hands = ros_messages.one_per_side(FrameResult(finite))
        update = self.tracker.update(stream, stamp_nanoseconds(header.stamp), [hand.side for hand in result.hands])
        for track in update.ended:
            self.backend.reset_side(stream, track.side)
        hands = ros_messages.frame_to_msg(result, header, width, height, self.backend.name, self.backend.model,
                                          self.backend.checkpoint, update.tracks)
        self.hands_pub.publish(hands)
        if self._param("publish_wrist_poses"):
            for hand in hands.hands:
                self.wrist_pose_pubs[ros_messages.SIDE_NAMES[hand.side]].publish(
                    ros_messages.wrist_pose_msg(hands, hand))
        if self._param("publish_tf") and result.hands:
            self.tf_pub.publish(TFMessage(transforms=ros_messages.hand_transforms(
                result, header, prefix=self._param("frame_prefix"), joints=self._param("tf_joints"))))
        if self._param("publish_markers"):
            self._publish_markers(header, result)
        if self._param("publish_overlay") and self.overlay_pub.get_subscription_count() > 0:
            from acr_ros.render import draw_hands

            overlay = draw_hands(frame.bgr, result, self.faces)
            self.overlay_pub.publish(bgr_to_image(overlay, header))
        self.stage_latency["publish"].add(time.perf_counter() - start)
        self.latency.add(self.get_clock().now().nanoseconds * 1e-9 - stamp_seconds(header.stamp))
        self.published.tick()
        self.counters.add("published")

    def _publish_markers(self, header, result: FrameResult) -> None:
        markers = ros_messages.frame_markers(result, header, self.faces, self._shown_sides,
                                             lifetime=self._param("marker_lifetime"))
        if markers.markers:
            self.markers_pub.publish(markers)

    # ---- diagnostics --------------------------------------------------------------------------
    SILENCE_S = 3.0  # a camera with a publisher but no frame for this long is reported

    def _input_warning(self) -> str:
        """What is wrong with the inputs now, or ''."""
        now = time.monotonic()
        for camera in self.cameras:
            topic = camera.image_input.resolved
            silent = now - (camera.last_frame or camera.activated)
            if silent > self.SILENCE_S and self.count_publishers(topic) > 0:
                return (f"{topic} has a publisher but no frame arrived for {silent:.0f} s (a QoS mismatch, "
                        "e.g. a reliable qos_reliability and a best-effort camera?)")
            if camera.default_intrinsics:
                return f"{topic} runs on the default intrinsics: hand distances are approximate"
        return ""

    @staticmethod
    def _encoding_note(encoding: str) -> str:
        if not encoding:
            return "no frame yet"
        if encoding.lower() in ("mono8", "8uc1", "mono16"):
            return f"{encoding} (grey: replicated to 3 channels for the model)"
        return encoding

    def _publish_diagnostics(self) -> None:
        p50, p95 = self.latency.percentiles(50, 95)
        dropped, bad = self.counters.get("dropped"), self.counters.get("bad_input")
        errors, internal = self.counters.get("inference_errors"), self.counters.get("internal_errors")
        # The level says what happened since the previous report, so it recovers.
        new = {name: self.counters.get(name) - self._reported.get(name, 0) for name in self.REPORTED}
        self._reported = {name: self.counters.get(name) for name in self.REPORTED}
        level = DiagnosticStatus.OK
        message = "active" if self.active else "inactive (not subscribed; the model stays loaded)"
        if new["internal_errors"] or new["inference_errors"]:
            name = "internal_errors" if new["internal_errors"] else "inference_errors"
            level, message = DiagnosticStatus.ERROR, self.counters.reason(name)
        elif new["bad_input"]:
            level, message = DiagnosticStatus.WARN, self.counters.reason("bad_input")
        elif not self.active:
            level = DiagnosticStatus.WARN
        else:
            warning = self._input_warning()
            if warning:
                level, message = DiagnosticStatus.WARN, warning
        smoothing = self._smoothing_config()
        values = {
            "backend": self.backend.name,
            "model": self.backend.model,
            "checkpoint": self.backend.checkpoint or "(bundled)",
            "device": self.backend.device,
            "state": "active" if self.active else "inactive",
            "output rate (Hz)": f"{self.published.rate():.2f}",
            "latency p50 (ms)": f"{p50 * 1e3:.1f}",
            "latency p95 (ms)": f"{p95 * 1e3:.1f}",
        }
        for stage, stats in self.stage_latency.items():  # the stages of one frame inside the node
            stage_p50, stage_p95 = stats.percentiles(50, 95)
            values[f"{stage} p50 (ms)"] = f"{stage_p50 * 1e3:.1f}"
            values[f"{stage} p95 (ms)"] = f"{stage_p95 * 1e3:.1f}"
        values.update({
            # The most smoothing can delay a pose (a hand at rest or moving slowly): 1 / (2 pi min_cutoff).
            "smoothing lag at rest (ms)": (f"{lag_seconds(smoothing.pose_min_cutoff) * 1e3:.1f}"
                                           if smoothing else "off"),
            "frames received": str(self.counters.get("received")),
            "frames published": str(self.counters.get("published")),
            "frames dropped": str(dropped),
            "bad input frames": str(bad),
            "last bad input": self.counters.reason("bad_input"),
            "inference errors": str(errors),
            "internal errors": str(internal),
            "hands with NaN/Inf dropped": str(self.counters.get("non_finite_hands")),
        })
        if any(camera.depth is not None for camera in self.cameras):
            values.update({
                "frames without a depth partner": str(self.counters.get("depth_unpaired")),
                "hands the depth could not place": str(self.counters.get("depth_unplaced")),
                "why the last one was not placed": self.counters.reason("depth_unplaced"),
                "depth images refused": str(self.counters.get("bad_depth")),
                "last refused depth": self.counters.reason("bad_depth"),
            })
        for camera in self.cameras:
            image = camera.image_input
            topic = image.resolved
            values[f"input rate {topic} (Hz)"] = f"{camera.received.rate():.2f}"
            values[f"input {topic}"] = (f"{qos.policy_name(image.reliability)}, "
                                        f"{self._encoding_note(camera.encoding)}, "
                                        + ("default intrinsics (no usable CameraInfo)" if camera.default_intrinsics
                                           else "calibrated"))
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: hand reconstruction", message=message,
            hardware_id=self.backend.device,
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics[0].publish(array)


def main(args=None) -> int:
    stop = start_ros("hands_node", args)
    if stop is None:
        return 1
    try:
        node = HandsNode()
    except (ParameterException, NameValidationException) as error:
        # A parameter outside its range or of the wrong type: say exactly which, no traceback.
        rclpy.logging.get_logger("acr_hands").fatal(str(error))
        rclpy.try_shutdown()
        return 1
    warn_unknown_parameters(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value and not node.start():
            # The model files or parameters are wrong (the transition logged what and where), or a
            # stop signal came while the model was loading.
            code = 0 if stop.requested else 1
        else:
            spin_until_stopped(executor, stop, node.finished.done)  # the shutdown transition ends the process
    finally:
        # The node's own shutdown work, timed (the interpreter's exit that follows is not the node's).
        # rclpy stays up until the worker has stopped: nothing is published on a dead context.
        started, logger = time.monotonic(), node.get_logger()
        node.shutdown()
        node.destroy_node()
        logger.info(f"shut down in {time.monotonic() - started:.3f} s" + (f" ({stop.name})" if stop.requested else ""))
        executor.shutdown()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
