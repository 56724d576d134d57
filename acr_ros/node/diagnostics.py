"""The hands node's /diagnostics status: what runs where, rates, latencies per stage, counts, and what
is wrong with the inputs. The level says what happened since the previous report, so it recovers."""
from __future__ import annotations

from typing import Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from acr_ros import qos
from acr_ros.acr.one_euro import SmoothingConfig, lag_seconds
from acr_ros.diagnostics import Counters, LatencyStats, RateMeter
from acr_ros.node.inputs import Camera

REPORTED = ("bad_input", "inference_errors", "internal_errors")  # counters that set the level


def _encoding_note(encoding: str) -> str:
    if not encoding:
        return "no frame yet"
    if encoding.lower() in ("mono8", "8uc1", "mono16"):
        return f"{encoding} (grey: replicated to 3 channels for the model)"
    return encoding


def input_warning(cameras: list[Camera]) -> str:
    """What is wrong with the inputs now, or ''."""
    for camera in cameras:
        for item in camera.inputs:
            if item.incompatible:
                return item.incompatible
        if camera.default_intrinsics:
            return f"{camera.image_input.resolved} runs on the default intrinsics: hand distances are approximate"
    return ""


class StatusReport:
    def __init__(self):
        self._reported: dict[str, int] = {}

    def status(self, name: str, backend, active: bool, counters: Counters, latency: LatencyStats,
               stage_latency: dict[str, LatencyStats], published: RateMeter, smoothing: Optional[SmoothingConfig],
               cameras: list[Camera], retargeting: Optional[dict[str, tuple[LatencyStats, float]]] = None
               ) -> DiagnosticStatus:
        """retargeting: side -> (its retargeting times, the optimiser's last residual), while it is on."""
        new = {key: counters.get(key) - self._reported.get(key, 0) for key in REPORTED}
        self._reported = {key: counters.get(key) for key in REPORTED}
        level = DiagnosticStatus.OK
        message = "active" if active else "inactive (not subscribed; the model stays loaded)"
        if new["internal_errors"] or new["inference_errors"]:
            key = "internal_errors" if new["internal_errors"] else "inference_errors"
            level, message = DiagnosticStatus.ERROR, counters.reason(key)
        elif new["bad_input"]:
            level, message = DiagnosticStatus.WARN, counters.reason("bad_input")
        elif not active:
            level = DiagnosticStatus.WARN
        elif warning := input_warning(cameras):
            level, message = DiagnosticStatus.WARN, warning
        p50, p95 = latency.percentiles(50, 95)
        values = {
            "backend": backend.name,
            "model": backend.model,
            "checkpoint": backend.checkpoint or "(bundled)",
            "device": backend.device,
            "state": "active" if active else "inactive",
            "output rate (Hz)": f"{published.rate():.2f}",
            "latency p50 (ms)": f"{p50 * 1e3:.1f}",
            "latency p95 (ms)": f"{p95 * 1e3:.1f}",
        }
        for stage, stats in stage_latency.items():  # the stages of one frame inside the node
            stage_p50, stage_p95 = stats.percentiles(50, 95)
            values[f"{stage} p50 (ms)"] = f"{stage_p50 * 1e3:.1f}"
            values[f"{stage} p95 (ms)"] = f"{stage_p95 * 1e3:.1f}"
        values.update({
            # The most smoothing can delay a pose (a hand at rest or moving slowly): 1 / (2 pi min_cutoff).
            "smoothing lag at rest (ms)": (f"{lag_seconds(smoothing.pose_min_cutoff) * 1e3:.1f}"
                                           if smoothing else "off"),
            "frames received": str(counters.get("received")),
            "frames published": str(counters.get("published")),
            "frames dropped": str(counters.get("dropped")),
            "bad input frames": str(counters.get("bad_input")),
            "last bad input": counters.reason("bad_input"),
            "inference errors": str(counters.get("inference_errors")),
            "internal errors": str(counters.get("internal_errors")),
            "hands with NaN/Inf dropped": str(counters.get("non_finite_hands")),
        })
        if any(camera.depth is not None for camera in cameras):
            values.update({
                "frames without a depth partner": str(counters.get("depth_unpaired")),
                "hands the depth could not place": str(counters.get("depth_unplaced")),
                "why the last one was not placed": counters.reason("depth_unplaced"),
                "depth images refused": str(counters.get("bad_depth")),
                "last refused depth": counters.reason("bad_depth"),
            })
        for side, (times, residual) in (retargeting or {}).items():
            side_p50, side_p95 = times.percentiles(50, 95)
            values[f"retargeting {side} p50 (ms)"] = f"{side_p50 * 1e3:.2f}"
            values[f"retargeting {side} p95 (ms)"] = f"{side_p95 * 1e3:.2f}"
            values[f"retargeting {side} residual"] = f"{residual:.4g}"
        if retargeting is not None:
            values["joint commands not computed"] = str(counters.get("retarget_errors"))
        for camera in cameras:
            image = camera.image_input
            values[f"input rate {image.resolved} (Hz)"] = f"{camera.received.rate():.2f}"
            values[f"input {image.resolved}"] = (
                f"{qos.policy_name(image.reliability)}, {_encoding_note(camera.encoding)}, "
                + ("default intrinsics (no usable CameraInfo)" if camera.default_intrinsics else "calibrated"))
        return DiagnosticStatus(level=level, name=f"{name}: hand reconstruction", message=message,
                                hardware_id=backend.device,
                                values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])
