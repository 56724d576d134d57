"""The hands node: camera images in; hands, TF, RViz markers, an overlay and diagnostics out.

One job: convert ROS messages to arrays, hand them to a hand backend (acr_ros.backends), and
publish what comes back, stamped with each source image's stamp and frame_id.

Threading: subscription callbacks only store the newest message of each camera (older unprocessed
frames are dropped and counted, never queued); one worker thread converts, batches the cameras'
newest frames into one forward pass and publishes.
"""
from __future__ import annotations

import sys
import threading
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
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from acr_ros import ros_messages
from acr_ros.acr.hands import LEFT, RIGHT, CameraIntrinsics, FrameResult
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import PRECISIONS, EngineOptions
from acr_ros.backends import BACKENDS, THRESHOLDS, BackendOutOfMemoryError, create_backend, faces_by_side
from acr_ros.diagnostics import Counters, LatencyStats, RateMeter
from acr_ros.image_conversion import (
    DEFAULT_MAX_PIXELS,
    ImageConversionError,
    bgr_to_image,
    compressed_to_bgr,
    image_to_bgr,
)
from acr_ros.msg import HandMesh, Hands

try:  # a real ROS install has tf2_ros; without it, publish the same TFMessage on /tf ourselves
    from tf2_ros import TransformBroadcaster
except ImportError:
    TransformBroadcaster = None


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    read_only: bool = False          # model parameters: applied at start-up only
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
    Param("precision", "auto", "Network precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16",
          True, choices=PRECISIONS),
    Param("enabled", True, "Run inference; false pauses it (frames are dropped and counted, the model "
          "stays loaded)"),
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
    Param("qos_reliability", "best_effort", "Image subscription reliability: best_effort (sensor data, "
          "REP 2003) or reliable", True, choices=("best_effort", "reliable")),
    Param("qos_depth", 5, "Image subscription queue depth", True, int_range=(1, 100)),
    Param("max_image_pixels", DEFAULT_MAX_PIXELS, "Larger images are rejected (counted on diagnostics)",
          int_range=(1, 100_000_000)),
    Param("publish_tf", True, "Publish TF frames of the hands"),
    Param("tf_joints", True, "Publish a TF frame for each of the 21 joints (false: wrists only)"),
    Param("frame_prefix", "hand", "Prefix of the TF frame names, e.g. hand_left_wrist"),
    Param("publish_markers", True, "Publish RViz markers (mesh, skeleton, joints, label) on ~/markers"),
    Param("publish_overlay", True, "Publish ~/overlay (input with the hands drawn), only while subscribed"),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages", True, float_range=(0.1, 60.0)),
)


def _descriptor(param: Param) -> ParameterDescriptor:
    description = param.description
    if param.choices:
        description += f" (one of: {', '.join(param.choices)})"
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


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class Camera:
    """One camera's input: the newest unprocessed frame and recent CameraInfos by stamp."""

    def __init__(self, topic: str):
        self.topic = topic
        self._frame = None
        self._infos: dict[tuple[int, int], CameraInfo] = {}
        self._latest_info: Optional[CameraInfo] = None
        self._lock = threading.Lock()
        self.received = RateMeter()

    def put_frame(self, msg) -> bool:
        """Stores msg as the newest frame; True when it replaced an unprocessed one (a drop)."""
        self.received.tick()
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


class HandsNode(Node):
    REPORTED = ("bad_input", "inference_errors", "internal_errors")  # counters that set the level

    def __init__(self, backend_factory=None, **node_options):
        """backend_factory() -> (backend, reason) replaces the parameter-driven choice (tests)."""
        super().__init__("acr_hands", **node_options)
        for param in PARAMS:
            value = self.declare_parameter(param.name, param.default, _descriptor(param)).value
            if param.choices and value not in param.choices:
                raise ValueError(f"parameter {param.name} is {value!r}; expected one of {', '.join(param.choices)}")
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.counters = Counters()
        self._reported: dict[str, int] = {}
        self._smoothing_changed = threading.Event()
        self.latency = LatencyStats()
        self.published = RateMeter()

        self.backend, reason = (backend_factory or self._create_backend)()
        self.backend.detection_threshold = self._param(self.backend.threshold.parameter)
        self.get_logger().info(f"hand backend: {self.backend.name} ({reason}); model {self.backend.model}"
                               + (f", weights {self.backend.checkpoint}" if self.backend.checkpoint else ""))

        self.faces = faces_by_side(self.backend)
        self.hands_pub = self.create_publisher(Hands, "~/hands", 10)
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", 10)
        self.overlay_pub = self.create_publisher(Image, "~/overlay", 2)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_mesh()
        if TransformBroadcaster is not None:
            self._tf = TransformBroadcaster(self)
            self._send_transforms = self._tf.sendTransform
        else:
            from tf2_msgs.msg import TFMessage
            tf_pub = self.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
            self._send_transforms = lambda transforms: tf_pub.publish(TFMessage(transforms=transforms))

        self.cameras = [self._subscribe(topic) for topic in self.get_parameter("image_topics").value]
        self._shown_sides: dict[str, set[str]] = {}  # per frame_id: sides with markers out
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="acr_hands_inference", daemon=True)
        self._worker.start()
        self.create_timer(self.get_parameter("diagnostics_period").value, self._publish_diagnostics)

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
            options=EngineOptions(device=self._param("device"), precision=self._param("precision"),
                                  suppress_duplicate_hands=self._param("suppress_duplicate_hands")),
            smoothing=self._smoothing_config(),
            tune_process=True,
        )

    def _publish_mesh(self) -> None:
        left, right = self.faces[LEFT], self.faces[RIGHT]
        if left is None or right is None:
            return
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._mesh_pub = self.create_publisher(HandMesh, "~/mesh", latched)
        self._mesh_pub.publish(ros_messages.mesh_msg(left, right, self.get_clock().now().to_msg()))

    def _subscribe(self, topic: str) -> Camera:
        camera = Camera(topic)
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self._param("qos_depth"),
            reliability=(ReliabilityPolicy.BEST_EFFORT if self._param("qos_reliability") == "best_effort"
                         else ReliabilityPolicy.RELIABLE),
            durability=DurabilityPolicy.VOLATILE,
        )

        def on_image(msg):
            self.counters.add("received")
            if camera.put_frame(msg):
                self.counters.add("dropped", "a newer frame arrived before inference took this one")
            self._wake.set()

        if self._param("compressed"):
            self.create_subscription(CompressedImage, topic + "/compressed", on_image, qos)
        else:
            self.create_subscription(Image, topic, on_image, qos)
        self.create_subscription(CameraInfo, sibling_topic(topic, "camera_info"), camera.put_info, qos)
        return camera

    def _validate_parameters(self, params) -> SetParametersResult:
        # Types and ranges are enforced by the descriptors; the rest is checked here.
        for param in params:
            if param.name == "frame_prefix" and (not param.value or "/" in param.value
                                                 or " " in param.value):
                return SetParametersResult(successful=False,
                                           reason="frame_prefix must be non-empty, without '/' or spaces")
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        for param in params:
            if param.name == self.backend.threshold.parameter:
                self.backend.detection_threshold = float(param.value)
            elif param.name.startswith("smoothing."):
                self._smoothing_changed.set()

    # ---- inference ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            frames = [(camera, msg) for camera in self.cameras if (msg := camera.take_frame()) is not None]
            if not frames:
                continue
            if not self._param("enabled"):
                self.counters.add("dropped", "inference paused (parameter enabled)", len(frames))
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
        info = camera.info_for(msg.header.stamp)
        intrinsics = CameraIntrinsics.from_k(info.k) if info is not None else None
        if info is not None and intrinsics is not None and (info.width, info.height) not in (
                (0, 0), (bgr.shape[1], bgr.shape[0])):
            self.get_logger().warning(
                f"camera_info of {camera.topic} is for {info.width}x{info.height} but the image is "
                f"{bgr.shape[1]}x{bgr.shape[0]}: using the default intrinsics", throttle_duration_sec=5.0)
            intrinsics = None
        return PendingFrame(camera, msg.header, bgr, intrinsics)

    def _process(self, batch) -> None:
        if self._smoothing_changed.is_set():
            self._smoothing_changed.clear()
            self.backend.set_smoothing(self._smoothing_config())
        results = self._reconstruct(batch)
        if self._stop.is_set():  # shutting down: the publishers may be gone
            return
        for frame, result in zip(batch, results):
            if result is not None:
                self._publish(frame.header, frame.bgr, result)

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

    def _publish(self, header, bgr, result: FrameResult) -> None:
        height, width = bgr.shape[:2]
        finite = [hand for hand in result.hands if hand.is_finite()]
        if len(finite) < len(result.hands):
            self.counters.add("non_finite_hands", "a hand had NaN or Inf values", len(result.hands) - len(finite))
            result.hands = finite
        self.hands_pub.publish(ros_messages.frame_to_msg(
            result, header, width, height, self.backend.name, self.backend.model, self.backend.checkpoint))
        if self._param("publish_tf") and result.hands:
            self._send_transforms(ros_messages.hand_transforms(
                result, header, prefix=self._param("frame_prefix"), joints=self._param("tf_joints")))
        if self._param("publish_markers"):
            self._publish_markers(header, result)
        if self._param("publish_overlay") and self.overlay_pub.get_subscription_count() > 0:
            from acr_ros.render import draw_hands

            overlay = draw_hands(bgr, result, self.faces)
            self.overlay_pub.publish(bgr_to_image(overlay, header))
        self.latency.add(self.get_clock().now().nanoseconds * 1e-9 - stamp_seconds(header.stamp))
        self.published.tick()
        self.counters.add("published")

    def _publish_markers(self, header, result: FrameResult) -> None:
        markers = ros_messages.frame_markers(result, header, self.faces, self._shown_sides)
        if markers.markers:
            self.markers_pub.publish(markers)

    # ---- diagnostics --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        p50, p95 = self.latency.percentiles(50, 95)
        dropped, bad = self.counters.get("dropped"), self.counters.get("bad_input")
        errors, internal = self.counters.get("inference_errors"), self.counters.get("internal_errors")
        # The level says what happened since the previous report, so it recovers.
        new = {name: self.counters.get(name) - self._reported.get(name, 0) for name in self.REPORTED}
        self._reported = {name: self.counters.get(name) for name in self.REPORTED}
        level, message = DiagnosticStatus.OK, "running"
        if new["internal_errors"] or new["inference_errors"]:
            name = "internal_errors" if new["internal_errors"] else "inference_errors"
            level, message = DiagnosticStatus.ERROR, self.counters.reason(name)
        elif new["bad_input"]:
            level, message = DiagnosticStatus.WARN, self.counters.reason("bad_input")
        values = {
            "backend": self.backend.name,
            "model": self.backend.model,
            "checkpoint": self.backend.checkpoint or "(bundled)",
            "device": self.backend.device,
            "output rate (Hz)": f"{self.published.rate():.2f}",
            "latency p50 (ms)": f"{p50 * 1e3:.1f}",
            "latency p95 (ms)": f"{p95 * 1e3:.1f}",
            "frames received": str(self.counters.get("received")),
            "frames published": str(self.counters.get("published")),
            "frames dropped": str(dropped),
            "bad input frames": str(bad),
            "last bad input": self.counters.reason("bad_input"),
            "inference errors": str(errors),
            "internal errors": str(internal),
            "hands with NaN/Inf dropped": str(self.counters.get("non_finite_hands")),
        }
        for camera in self.cameras:
            values[f"input rate {camera.topic} (Hz)"] = f"{camera.received.rate():.2f}"
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: hand reconstruction", message=message,
            hardware_id=self.backend.device,
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def shutdown(self) -> None:
        """Stops the worker (within 1.5 s: a batch still running finishes unpublished) and frees the model."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=1.5)
        if not self._worker.is_alive():
            self.backend.close()


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = HandsNode()
    except (ValueError, FileNotFoundError, ImportError, ParameterException, NameValidationException) as error:
        # Model files or parameters wrong: say exactly what and where, no traceback.
        rclpy.logging.get_logger("acr_hands").fatal(str(error))
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
