"""One-Euro smoothing: the official fixed-30 Hz filter when dt = 1/30, timestamps otherwise."""
import numpy as np
import pytest
import torch

from acr_ros.acr import one_euro
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.smoothing import HandSmoother


# --- The official filter (acr/utils.py, from minimal-hand), transcribed; freq per call added -----

class LowPassFilter:
    def __init__(self):
        self.prev_raw_value = None
        self.prev_filtered_value = None

    def process(self, value, alpha):
        if self.prev_raw_value is None:
            s = value
        else:
            s = alpha * value + (1.0 - alpha) * self.prev_filtered_value
        self.prev_raw_value = value
        self.prev_filtered_value = s
        return s


class OneEuroFilter:
    def __init__(self, mincutoff=1.0, beta=0.0, dcutoff=1.0, freq=30):
        self.freq = freq
        self.mincutoff = mincutoff
        self.beta = beta
        self.dcutoff = dcutoff
        self.x_filter = LowPassFilter()
        self.dx_filter = LowPassFilter()

    def compute_alpha(self, cutoff):
        te = 1.0 / self.freq
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    def process(self, x, freq=None):
        if freq is not None:
            self.freq = freq
        prev_x = self.x_filter.prev_raw_value
        dx = 0.0 if prev_x is None else (x - prev_x) * self.freq
        edx = self.dx_filter.process(dx, self.compute_alpha(self.dcutoff))
        cutoff = self.mincutoff + self.beta * np.abs(edx)
        return self.x_filter.process(x, self.compute_alpha(cutoff))


def official_bank(smooth_coeff=4.0):
    return {"poses": OneEuroFilter(smooth_coeff, 0.7), "betas": OneEuroFilter(0.6, 0.7),
            "global_orient": OneEuroFilter(smooth_coeff, 0.7)}


def _sequence(n, seed=0):
    """n frames of [left, right] params: rotation-ish matrices, poses, betas (float64)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(2, 64, generator=g, dtype=torch.float64)
    steps = torch.randn(n, 2, 64, generator=g, dtype=torch.float64) * 0.2
    x = base + steps.cumsum(0)
    return x[..., :9].reshape(n, 2, 3, 3), x[..., 9:54], x[..., 54:]


def _run_official(go, fp, be, detected, freqs=None):
    banks = [official_bank(), official_bank()]
    out_go, out_fp, out_be = go.clone(), fp.clone(), be.clone()
    for f in range(go.shape[0]):
        for s in range(2):
            if not detected[f, s]:
                continue
            freq = None if freqs is None else freqs[f][s]
            out_go[f, s] = torch.from_numpy(banks[s]["global_orient"].process(go[f, s].numpy(), freq))
            out_fp[f, s] = torch.from_numpy(banks[s]["poses"].process(fp[f, s].numpy(), freq))
            out_be[f, s] = torch.from_numpy(banks[s]["betas"].process(be[f, s].numpy(), freq))
    return out_go, out_fp, out_be


def _step(smoother, stream, timestamp, global_orient, finger_pose, betas, detected):
    """One frame: (2, 3, 3), (2, 45), (2, 10), (2,) -> smoothed (2, 3, 3), (2, 45), (2, 10)."""
    out = smoother([stream], [timestamp], global_orient[None], finger_pose[None], betas[None], detected[None])
    return tuple(o[0] for o in out)


def _run_ours(smoother, go, fp, be, detected, stamps, stream="cam"):
    outs = [_step(smoother, stream, stamps[f], go[f], fp[f], be[f], detected[f]) for f in range(go.shape[0])]
    return tuple(torch.stack(o) for o in zip(*outs))


def test_equals_the_official_filter_at_30hz():
    n = 12
    go, fp, be = _sequence(n)
    detected = torch.ones(n, 2, dtype=torch.bool)
    ref = _run_official(go, fp, be, detected)
    ours = _run_ours(HandSmoother(), go, fp, be, detected, [k / 30 for k in range(n)])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # The filter did something: the output differs from the raw input after the first frame.
    assert (ours[1][1:] - fp[1:]).abs().max() > 1e-2
    torch.testing.assert_close(ours[1][0], fp[0], rtol=0, atol=0)  # first sample passes through
    # Stamps that never increase fall back to exactly 1/30: bit-identical to the official filter.
    same = _run_ours(HandSmoother(), go, fp, be, detected, [5.0] * n)
    for a, b in zip(same, ref):
        assert torch.equal(a, b)


def test_groups_use_their_own_parameters():
    # Betas use min_cutoff 0.6, the rest 4.0: smoothing the betas with the pose filter would differ.
    n = 6
    go, fp, be = _sequence(n, seed=1)
    detected = torch.ones(n, 2, dtype=torch.bool)
    ours = _run_ours(HandSmoother(), go, fp, be, detected, [k / 30 for k in range(n)])
    wrong = OneEuroFilter(4.0, 0.7)
    wrong_be = torch.stack([torch.from_numpy(wrong.process(be[f, 0].numpy())) for f in range(n)])
    assert (ours[2][:, 0] - wrong_be).abs().max() > 1e-3
    # The orientation is filtered entry-wise and not re-orthonormalised.
    rot = torch.linalg.qr(torch.randn(n, 2, 3, 3, dtype=torch.float64))[0]
    out = _run_ours(HandSmoother(), rot, fp, be, detected, [k / 30 for k in range(n)])[0]
    ref = _run_official(rot, fp, be, detected)[0]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert (out @ out.transpose(-1, -2) - torch.eye(3, dtype=torch.float64)).abs().max() > 1e-4


def test_timestamps_drive_the_rate_and_undetected_sides_wait():
    n = 8
    go, fp, be = _sequence(n, seed=2)
    stamps = [0.0, 0.05, 0.1, 0.2, 0.21, 0.3, 0.3, 0.4]  # irregular, and one repeated stamp
    detected = torch.ones(n, 2, dtype=torch.bool)
    detected[2:4, 1] = False  # the right hand is missing for two frames
    detected[5, 0] = False
    # Expected: the official filter fed with freq = 1 / (time since that side's last update).
    freqs, last = [], [None, None]
    for f, t in enumerate(stamps):
        row = []
        for s in range(2):
            dt = None if last[s] is None else t - last[s]
            row.append(30.0 if dt is None or dt <= 0 else 1.0 / dt)
            if detected[f, s]:
                last[s] = t
        freqs.append(row)
    ref = _run_official(go, fp, be, detected, freqs)
    ours = _run_ours(HandSmoother(), go, fp, be, detected, stamps)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Undetected rows come back unchanged.
    assert torch.equal(ours[1][2:4, 1], fp[2:4, 1]) and torch.equal(ours[0][5, 0], go[5, 0])
    # A fixed 30 Hz would have given something else here.
    fixed = _run_official(go, fp, be, detected)
    assert (ours[1][3:, 0] - fixed[1][3:, 0]).abs().max() > 1e-4


def test_streams_are_independent_and_batches_equal_sequential_calls():
    n = 5
    a = _sequence(n, seed=3)
    b = _sequence(n, seed=4)
    det = torch.ones(n, 2, dtype=torch.bool)
    det[1, 0] = False
    stamps = [0.1 * k for k in range(n)]
    sep = HandSmoother()
    ref_a = _run_ours(sep, *a, det, stamps, stream="a")
    ref_b = _run_ours(sep, *b, det, stamps, stream="b")

    batched = HandSmoother()
    # Frames of both streams interleaved in batches of 4: [a0 b0 a1 b1], [a2 b2 a3 b3], [a4 b4].
    order = [(s, f) for f in range(n) for s in ("a", "b")]
    results = {}
    for i in range(0, len(order), 4):
        chunk = order[i:i + 4]
        seqs = {"a": a, "b": b}
        go = torch.stack([seqs[s][0][f] for s, f in chunk])
        fp = torch.stack([seqs[s][1][f] for s, f in chunk])
        be = torch.stack([seqs[s][2][f] for s, f in chunk])
        dt = torch.stack([det[f] for _, f in chunk])
        out = batched([s for s, _ in chunk], [stamps[f] for _, f in chunk], go, fp, be, dt)
        for k, key in enumerate(chunk):
            results[key] = tuple(o[k] for o in out)
    for f in range(n):
        for got, exp in zip(results[("a", f)], ref_a):
            torch.testing.assert_close(got, exp[f], rtol=1e-12, atol=1e-12)
        for got, exp in zip(results[("b", f)], ref_b):
            torch.testing.assert_close(got, exp[f], rtol=1e-12, atol=1e-12)
    assert sorted(batched._states) == ["a", "b"]


def test_reset_forgets_every_stream():
    n = 4
    go, fp, be = _sequence(n, seed=5)
    det = torch.ones(2, dtype=torch.bool)
    sm = HandSmoother()
    for f in range(3):
        _step(sm, "a", f / 30, go[f], fp[f], be[f], det)
        _step(sm, "b", f / 30, go[f], fp[f], be[f], det)
    out_b = _step(sm, "b", 3 / 30, go[3], fp[3], be[3], det)
    assert (out_b[1] - fp[3]).abs().max() > 1e-3   # smoothing
    sm.reset()
    assert sm._states == {}
    for stream in ("a", "b"):                      # forgotten: first sample again
        assert torch.equal(_step(sm, stream, 1.0, go[0], fp[0], be[0], det)[1], fp[0])


def test_numpy_filter_is_the_official_filter():
    """The MediaPipe backend's numpy filter runs the same step, with the finger-pose parameters."""
    x = np.random.default_rng(9).normal(size=(6, 21, 3))
    ours = one_euro.OneEuroFilter(SmoothingConfig(pose_min_cutoff=1.0, pose_beta=0.3))
    official = OneEuroFilter(1.0, 0.3)
    for f in range(len(x)):
        np.testing.assert_allclose(ours(x[f], f / 30), official.process(x[f]), rtol=1e-9, atol=1e-12)


def test_config_and_float32():
    cfg = SmoothingConfig(pose_min_cutoff=1.0, pose_beta=0.0)
    n = 5
    go, fp, be = (t.float() for t in _sequence(n, seed=6))
    det = torch.ones(n, 2, dtype=torch.bool)
    out = _run_ours(HandSmoother(cfg), go, fp, be, det, [k / 30 for k in range(n)])
    assert [o.dtype for o in out] == [torch.float32] * 3 and out[0].shape == (n, 2, 3, 3)
    filt = OneEuroFilter(1.0, 0.0)
    ref = np.stack([filt.process(fp[f, 0].double().numpy()) for f in range(n)])
    np.testing.assert_allclose(out[1][:, 0].numpy(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        HandSmoother()(["a"], [0.0, 1.0], go[:1], fp[:1], be[:1], det[:1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_without_sync():
    n = 4
    go, fp, be = (t.float() for t in _sequence(n, seed=7))
    det = torch.ones(n, 2, dtype=torch.bool)
    det[2, 1] = False
    stamps = [k / 25 for k in range(n)]
    ref = _run_ours(HandSmoother(), go, fp, be, det, stamps)
    sm = HandSmoother()
    args = [t.cuda() for t in (go, fp, be, det)]
    outs = [_step(sm, "cam", stamps[0], *(a[0] for a in args))]  # warm-up, first frame
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs += [_step(sm, "cam", stamps[f], *(a[f] for a in args)) for f in range(1, n)]
        both = sm(["x", "y"], [0.0, 0.0], *(a[:2] for a in args))  # a batch of two streams
    finally:
        torch.cuda.set_sync_debug_mode(0)
    got = tuple(torch.stack(o).cpu() for o in zip(*outs))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert both[1].shape == (2, 2, 45)


def test_config_changes_take_effect():
    n = 3
    go, fp, be = _sequence(n, seed=8)
    det = torch.ones(2, dtype=torch.bool)
    sm = HandSmoother()
    _step(sm, "a", 0.0, go[0], fp[0], be[0], det)
    sm.config.pose_min_cutoff = 1e9  # no smoothing at all
    out = _step(sm, "a", 1 / 30, go[1], fp[1], be[1], det)
    torch.testing.assert_close(out[1], fp[1], rtol=0, atol=1e-6)
    assert (out[2] - be[1]).abs().max() > 1e-3  # betas keep their own cutoff
