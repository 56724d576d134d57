"""Smoothing adds no more lag than its parameters say (One-Euro on a ramp trails by exactly
1 / (2 pi (min_cutoff + beta |speed|)) in stamp time, whatever the frame rate), and a side whose
track ended starts its filters afresh (reset_side), for the numpy filter, the batched torch one
and the MediaPipe backend. Lag is measured in stamp time: no wall-clock timing here."""
import numpy as np
import pytest
import torch

from acr_ros.acr.one_euro import OneEuroFilter, SmoothingConfig, lag_seconds
from acr_ros.acr.smoothing import HandSmoother

RAMP_SECONDS = 10.0  # long enough for the derivative filter (1 Hz) to settle to 1e-9


def ramp_lag(filter_step, speed: float, rate: float) -> float:
    """Steady-state delay (s) of a filter step(x, t) -> y fed x = speed * t at `rate` Hz."""
    times = np.arange(int(RAMP_SECONDS * rate)) / rate
    last = None
    for t in times:
        last = filter_step(speed * t, t)
    return (speed * times[-1] - last) / speed


@pytest.mark.parametrize("rate", [30.0, 100.0])
@pytest.mark.parametrize("min_cutoff, beta, speed", [(4.0, 0.0, 1.0), (4.0, 0.7, 1.0), (4.0, 0.7, 3.0),
                                                      (1.0, 0.7, 0.5), (0.6, 0.7, 2.0)])
def test_numpy_filter_lag_on_a_ramp_is_what_its_parameters_say(min_cutoff, beta, speed, rate):
    one_euro = OneEuroFilter(SmoothingConfig(pose_min_cutoff=min_cutoff, pose_beta=beta))
    lag = ramp_lag(lambda x, t: float(one_euro(np.array([x]), t)[0]), speed, rate)
    assert lag == pytest.approx(lag_seconds(min_cutoff, beta, speed), rel=1e-6)


def test_the_largest_lag_is_at_rest_and_set_by_min_cutoff():
    assert lag_seconds(4.0) == pytest.approx(1 / (8 * np.pi))  # 39.8 ms
    assert lag_seconds(4.0, 0.7, 2.0) < lag_seconds(4.0, 0.7, 0.1) < lag_seconds(4.0)


def _torch_step(smoother: HandSmoother, stream="cam0", detected=(True, True)):
    """A filter step over the torch smoother feeding the same ramp value to every parameter."""
    def step(x, t):
        orient = torch.full((1, 2, 3, 3), x, dtype=torch.float64)
        pose = torch.full((1, 2, 45), x, dtype=torch.float64)
        betas = torch.full((1, 2, 10), x, dtype=torch.float64)
        return smoother([stream], [t], orient, pose, betas, torch.tensor([detected]))
    return step


def test_torch_smoother_lag_per_parameter_group_is_what_its_parameters_say():
    config = SmoothingConfig(pose_min_cutoff=4.0, pose_beta=0.7, orient_min_cutoff=2.0, orient_beta=0.0,
                             betas_min_cutoff=0.6, betas_beta=0.7)
    step = _torch_step(HandSmoother(config))
    outputs = {}

    def record(x, t):
        orient, pose, betas = step(x, t)
        outputs.update(orient=orient[0, 0, 0, 0].item(), pose=pose[0, 1, 7].item(), betas=betas[0, 0, 3].item())
        return 0.0

    speed, rate = 1.5, 30.0
    ramp_lag(record, speed, rate)
    end = speed * (int(RAMP_SECONDS * rate) - 1) / rate
    assert (end - outputs["pose"]) / speed == pytest.approx(lag_seconds(4.0, 0.7, speed), rel=1e-6)
    assert (end - outputs["orient"]) / speed == pytest.approx(lag_seconds(2.0, 0.0, speed), rel=1e-6)
    assert (end - outputs["betas"]) / speed == pytest.approx(lag_seconds(0.6, 0.7, speed), rel=1e-6)


def test_torch_smoother_reset_side_restarts_one_side_of_one_stream():
    smoother = HandSmoother(SmoothingConfig())
    for stream in ("cam0", "cam1"):
        step = _torch_step(smoother, stream)
        for i in range(10):
            step(0.0, i / 30)
    smoother.reset_side("cam0", 0)  # the left track of cam0 ended
    _, cam0, _ = _torch_step(smoother, "cam0")(1.0, 10 / 30)
    _, cam1, _ = _torch_step(smoother, "cam1")(1.0, 10 / 30)
    assert torch.all(cam0[0, 0] == 1.0)       # left, reset: the first sample passes through
    assert torch.all(cam0[0, 1] < 0.9)        # right kept its state: smoothed toward 0
    assert torch.all(cam1[0] < 0.9)           # the other camera is untouched
    smoother.reset_side("never_seen", 1)      # nothing to forget is fine


def test_mediapipe_reset_side_restarts_the_filters_of_that_side():
    from acr_ros.backends.mediapipe import MediaPipeBackend
    from support.ros_harness import magic_bgr

    still, moved = magic_bgr(), np.roll(magic_bgr(), 60, axis=1)  # the hand 60 px to the right

    def second_frame_wrist(reset: bool) -> float:
        backend = MediaPipeBackend(smoothing=SmoothingConfig())
        try:
            first = backend.reconstruct([still], [None], [0.0], ["cam0"])[0]
            assert [h.side for h in first.hands] == ["left"]
            if reset:
                backend.reset_side("cam0", "left")
            return float(backend.reconstruct([moved], [None], [1 / 30], ["cam0"])[0].hands[0].keypoints[0, 0])
        finally:
            backend.close()

    raw = MediaPipeBackend()
    try:
        unsmoothed = float(raw.reconstruct([moved], [None], [0.0], ["cam0"])[0].hands[0].keypoints[0, 0])
    finally:
        raw.close()
    assert second_frame_wrist(reset=True) == pytest.approx(unsmoothed, abs=1.0)
    assert second_frame_wrist(reset=False) < unsmoothed - 10.0  # still trailing the old position
