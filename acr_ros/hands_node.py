"""The hands node: camera images in; hands, per-side wrist poses, TF, RViz markers, an overlay and
diagnostics out. A managed (lifecycle) node, and a thin shell: its parameters (acr_ros.node.parameters),
inputs (acr_ros.node.inputs), the frame processor that acr_offline shares (acr_ros.frame_processor),
the outputs it builds (acr_ros.hand_outputs) and diagnostics (acr_ros.node.diagnostics).

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
frames are dropped and counted, never queued) and its CameraInfos and depth images; one worker
thread, running while the node is active, decodes the cameras' newest frames, runs them through the
processor as one batch and publishes. Transitions run on the executor thread and stop the worker
before they change what it uses.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, NameValidationException, ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from rclpy.task import Future

from acr_ros import qos
from acr_ros.backends import create_backend, faces_by_side
from acr_ros.diagnostics import LatencyStats, RateMeter
from acr_ros.frame_processor import FrameInput, FrameProcessor, ProcessedFrame
from acr_ros.hand_outputs import HandOutputs
from acr_ros.image_conversion import ImageConversionError
from acr_ros.node import parameters
from acr_ros.node.clock_jumps import ClockJumps
from acr_ros.node.diagnostics import StatusReport
from acr_ros.node.inputs import Camera, CameraInputs
from acr_ros.node.outputs import NodePublishers
from acr_ros.node.parameters import NODE_NAME, PARAMS
from acr_ros.retargeting import HandRetargeter
from acr_ros.ros_runtime import (LoadingStopped, loading, logged_transition, spin_until_stopped, start_ros,
                                 warn_unknown_parameters)

__all__ = ["HandsNode", "PARAMS", "main"]

# What a refused configuration raises: a message naming the parameter or file, where and why.
CONFIGURATION_ERRORS = (ValueError, FileNotFoundError, ImportError)


class IntegerForFloatParameter(ParameterException):
    """An integer given to a float parameter (`-p detection_threshold:=-1`), which rclpy refuses."""

    def __init__(self, name: str, value: int):
        Exception.__init__(self, f"parameter {name} is a float: write {float(value)!r}, not {value} "
                                 "(rclpy refuses an integer for a float parameter)")


class HandsNode(LifecycleNode):
    STAGES = ("conversion", "inference", "fusion", "retargeting", "publish")  # latency per stage, on /diagnostics

    def __init__(self, backend_factory=None, **node_options):
        """backend_factory() -> (backend, reason) replaces the parameter-driven choice (tests).
        The node starts unconfigured: main() runs start() with autostart, a lifecycle manager otherwise."""
        super().__init__(NODE_NAME, **node_options)
        for param in PARAMS:
            try:
                self.declare_parameter(param.name, param.default, parameters.descriptor(param))
            except InvalidParameterTypeException:
                # rclpy does not say that -1 is an integer and -1.0 the float; the override rclpy
                # refused is only in _parameter_overrides (no public accessor).
                given = getattr(self, "_parameter_overrides", {}).get(param.name)
                if isinstance(param.default, float) and given is not None and type(given.value) is int:
                    raise IntegerForFloatParameter(param.name, given.value) from None
                raise
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._backend_factory = backend_factory or self._create_backend
        # The processor lives as long as the node (track ids stay unique); configure gives it the backend.
        self.processor = FrameProcessor(None, self._param("track_timeout"), warn=self._warn)
        self.counters = self.processor.counters
        self.stage_latency = {stage: self.processor.stage_latency.get(stage, LatencyStats()) for stage in self.STAGES}
        self.latency = LatencyStats()
        self.published = RateMeter()
        self._report = StatusReport()
        self.inputs = CameraInputs(self, self._on_frame, self.get_logger())
        self.finished = Future()  # done once the shutdown transition ran: main() then exits
        self._checked_qos_overrides = False

        # Set by configure, released by cleanup:
        self.outputs: Optional[NodePublishers] = None
        self._diagnostics = None     # (publisher, timer): reported while inactive too
        # Set by activate, released by deactivate:
        self._worker: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._clock_jumps = ClockJumps(self.get_clock(), lambda: self.cameras, self.counters, self._wake)

    @property
    def backend(self):
        return self.processor.backend

    @property
    def cameras(self) -> list[Camera]:
        return self.inputs.cameras

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

    @logged_transition
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

    @logged_transition
    def on_activate(self, state):
        result = super().on_activate(state)  # the managed publishers first: the worker publishes
        try:
            self.inputs.subscribe(self._param("image_topics"), self._param("depth_topics"), self._param("compressed"),
                                  self._param("qos_reliability"), self._param("qos_depth"))
        except (InvalidQosOverridesError, RuntimeError) as error:  # a qos_overrides value rclpy refuses
            self.inputs.unsubscribe()
            self.get_logger().error(f"activate failed: {error}")
            return TransitionCallbackReturn.FAILURE
        if not self._checked_qos_overrides:  # every publisher and subscription exists now
            self._checked_qos_overrides = True
            warn_unknown_parameters(self, qos=True)
        self._start_worker()
        self.outputs.publish_mesh(self.get_clock().now().to_msg())
        self._follow_state(enabled=True)
        self.get_logger().info("active: subscribed to " + ", ".join(
            f"{i.resolved} ({qos.policy_name(i.reliability)})" for c in self.cameras for i in c.inputs))
        return result

    @logged_transition
    def on_deactivate(self, state):
        self._stop_worker()  # waits for a batch in flight: nothing is published after this
        self._unsubscribe("the node was deactivated")
        self.outputs.delete_markers(self.get_clock().now().to_msg())
        self.processor.reset()  # a later activation starts without old tracks or smoothing
        self._follow_state(enabled=False)
        self.get_logger().info("inactive: unsubscribed, the model stays loaded")
        return super().on_deactivate(state)

    @logged_transition
    def on_cleanup(self, state):
        self._release()
        self.get_logger().info("cleaned up: model and publishers released")
        return super().on_cleanup(state)

    @logged_transition
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
        self._follow_state(enabled=False)
        return super().on_error(state)

    def shutdown(self) -> None:
        """Releases everything, in any state; the worker gets 1.5 s (a batch still running then
        finishes unpublished and the model is left to the process exit)."""
        self._release(worker_timeout=1.5)

    def _configure(self) -> None:
        for param in PARAMS:
            problem = parameters.problem(param, self._param(param.name))
            if problem:
                raise ValueError(problem)
        problem = parameters.depth_topics_problem(self._param("image_topics"), self._param("depth_topics"))
        if problem:
            raise ValueError(problem)
        self.inputs.check_topic_names(self._param("image_topics"), self._param("depth_topics"))  # not at activate
        with loading():
            backend, reason = self._backend_factory()
        backend.detection_threshold = self._param(backend.threshold.parameter)
        self.processor.backend = backend
        retarget = parameters.retarget_settings(self._param)
        if retarget is not None:
            with loading():
                self.processor.retargeter = HandRetargeter.create(retarget)
            self.processor.retarget_sides = retarget.sides
        self.get_logger().info(f"hand backend: {backend.name} ({reason}); model {backend.model}"
                               + (f", weights {backend.checkpoint}" if backend.checkpoint else ""))
        try:
            self.outputs = NodePublishers(self, HandOutputs(backend, faces_by_side(backend)),
                                          self.processor.retarget_sides)
            self._diagnostics = (self.create_publisher(DiagnosticArray, "/diagnostics", 10,
                                                       qos_overriding_options=QoSOverridingOptions.with_default_policies()),
                                 self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics))
        except (InvalidQosOverridesError, RuntimeError) as error:  # a qos_overrides value rclpy refuses
            raise ValueError(str(error)) from None

    def _release(self, worker_timeout: Optional[float] = None) -> None:
        """Back to unconfigured from any state: worker, subscriptions, publishers, model."""
        stopped = self._stop_worker(worker_timeout)
        self._unsubscribe("the node released its inputs (shutdown or a failed transition)")
        self.processor.tracker.clear()
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        if self._diagnostics is not None:
            self.destroy_publisher(self._diagnostics[0])
            self.destroy_timer(self._diagnostics[1])
            self._diagnostics = None
        if self.backend is not None and stopped:  # else the worker still uses it
            self.backend.close()
        self.processor.backend = self.processor.retargeter = None
        self.processor.retarget_sides = ()

    def _start_worker(self) -> None:
        self._stop.clear()
        self._clock_jumps.take()  # deactivate did what a jump since then calls for
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
        unprocessed = self.inputs.unsubscribe()
        if unprocessed:
            self.counters.add("dropped", reason, unprocessed)

    def _follow_state(self, enabled: bool) -> None:
        """Keeps the parameter `enabled` equal to whether the node is active."""
        if self._param("enabled") != enabled:
            self.set_parameters([Parameter("enabled", value=enabled)])

    # ---- parameters ---------------------------------------------------------------------------
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _create_backend(self):
        return create_backend(backend=self._param("backend"), checkpoint=self._param("checkpoint"),
                              mano_dir=self._param("mano_dir"), options=parameters.engine_options(self._param),
                              smoothing=parameters.smoothing_config(self._param), tune_process=True)

    def _validate_parameters(self, params) -> SetParametersResult:
        for param in params:
            refusal = parameters.refusal(param.name, param.value, self.configured, self.get_fully_qualified_name())
            if refusal:
                return SetParametersResult(successful=False, reason=refusal)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        for param in params:
            if param.name.startswith("qos_overrides."):  # declared (read-only) as rclpy creates the entities
                continue
            self.get_logger().info(f"parameter {param.name} set to {param.value!r}")
            if self.configured and param.name == self.backend.threshold.parameter:
                self.backend.detection_threshold = float(param.value)
            elif param.name.startswith("smoothing.") and self.configured:
                self.processor.set_smoothing(parameters.smoothing_config(self._param))
            elif param.name == "track_timeout":
                self.processor.track_timeout = float(param.value)
            elif param.name == "enabled":
                if param.value and self.configured and not self.active:
                    self.trigger_activate()
                elif not param.value and self.active:
                    self.trigger_deactivate()

    # ---- frames -------------------------------------------------------------------------------
    def _on_frame(self, camera: Camera, msg) -> None:
        self.counters.add("received")
        if camera.put_frame(msg):
            self.counters.add("dropped", "a newer frame arrived before inference took this one")
        self._wake.set()

    def _warn(self, kind: str, message: str) -> None:
        self.get_logger().warning(message, throttle_duration_sec=5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            jump = self._clock_jumps.take()
            taken = [(camera, msg) for camera in self.cameras if (msg := camera.take_frame()) is not None]
            if not (taken or jump):
                continue
            try:
                if jump:  # here, between batches: the worker owns the tracks, the smoothing and the markers
                    self.processor.reset()
                    self.outputs.delete_markers(self.get_clock().now().to_msg())
                    self.get_logger().info(f"{jump}: hand tracks ended, smoothing restarted, markers deleted")
                frames = [frame for frame in (self._decode(*item) for item in taken) if frame is not None]
                if frames:
                    self.process(frames)
            except Exception as error:  # the worker must outlive any one batch
                self.counters.add("internal_errors", f"{type(error).__name__}: {error}", len(taken))
                self.get_logger().error(f"frames lost to an internal error: {type(error).__name__}: {error}",
                                        throttle_duration_sec=5.0)

    def process(self, frames: list[FrameInput]) -> None:
        """One batch through the processor, and its outputs published (the worker's step)."""
        processed = self.processor.process(frames)
        if self._stop.is_set() or self._clock_jumps.pending:  # stopping; or stamps later than the clock now
            return
        for item in processed:
            if item is not None:
                self._publish(item)

    def _decode(self, camera: Camera, msg) -> Optional[FrameInput]:
        """A received image as the processor's FrameInput, None (counted, logged) when it is unusable."""
        start = time.perf_counter()
        try:
            frame = self.inputs.decode(camera, msg, parameters.decode_settings(self._param),
                                       self._param("camera_info_timeout"))
        except ImageConversionError as error:
            self.counters.add("bad_input", str(error))
            self.get_logger().warning(f"dropping a frame from {camera.image_input.resolved}: {error}",
                                      throttle_duration_sec=5.0)
            return None
        self.stage_latency["conversion"].add(time.perf_counter() - start)
        return frame

    def _publish(self, processed: ProcessedFrame) -> None:
        start = time.perf_counter()
        self.outputs.publish(processed, parameters.output_settings(self._param), self._param("publish_overlay"))
        self.stage_latency["publish"].add(time.perf_counter() - start)
        self.latency.add((self.get_clock().now().nanoseconds - processed.frame.stamp_ns) * 1e-9)
        self.published.tick()
        self.counters.add("published")

    def _publish_diagnostics(self) -> None:
        status = self._report.status(self.get_name(), self.backend, self.active, self.counters, self.latency,
                                     self.stage_latency, self.published, parameters.smoothing_config(self._param),
                                     self.cameras, {side: (self.processor.retarget_latency[side],
                                                           self.processor.retarget_residual[side])
                                                    for side in self.processor.retarget_sides} or None)
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
        rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
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
