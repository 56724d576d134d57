"""The result parser on fixed rows [left, right]: the official decisions (../shared/acr/SPEC.md,
section 4), checked on hand-made maps through the engine's own rule: FastACR.raw's peak search
(parser.peak_centers) and network.decide."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from acr_ros.acr import parser
from acr_ros.acr.network import NUM_PARAMS, NUM_PRIOR, RawOutput, decide
from acr_ros.acr.options import DETECTION_THRESHOLD
from acr_ros.acr.rotation import rot6d_to_matrix
from support import reference as ref

SPEC_THRESHOLD = 0.35  # centermap_conf_thresh of the official configs/demo.yml


def maps_with(peaks_left=(), peaks_right=(), base=-0.5, batch=1):
    """(B, 2, 64, 64) center maps with given ((x, y), value) peaks."""
    m = torch.full((batch, 2, 64, 64), base)
    for side, peaks in ((0, peaks_left), (1, peaks_right)):
        for (x, y), v in peaks:
            m[:, side, y, x] = v
    return m


def flat(x, y):
    return y * 64 + x


def engine_decides(centers, threshold=DETECTION_THRESHOLD, params_raw=None, priors=None):
    """What FastACR does with these (B, 2, H, W) center maps: its peak search, then decide()."""
    b = centers.shape[0]
    scores, cells = parser.peak_centers(centers)
    params_raw = torch.zeros(b, 2, NUM_PARAMS) if params_raw is None else params_raw
    priors = torch.zeros(b, 2, NUM_PRIOR) if priors is None else priors
    return decide(RawOutput(scores, cells, params_raw, priors, centers.shape[-1]), threshold)


def test_the_engine_threshold_is_the_official_one():
    assert DETECTION_THRESHOLD == SPEC_THRESHOLD


def test_threshold_is_strictly_greater_on_the_raw_value():
    out = engine_decides(maps_with([((10, 20), SPEC_THRESHOLD)], [((30, 40), 0.3500001)]))
    assert out.detected.tolist() == [[False, True]]
    assert out.cells.tolist() == [[flat(10, 20), flat(30, 40)]]
    assert engine_decides(maps_with([((10, 20), 5.0)]), threshold=5.0).detected.tolist() == [[False, False]]
    # A tensor threshold (the CUDA graph's and the ONNX export's input) decides the same.
    assert engine_decides(maps_with([((10, 20), 5.0)]), threshold=torch.tensor(4.99)).detected.tolist() == \
        [[True, False]]


def test_nms_keeps_local_maxima_and_top1_takes_the_best():
    m = maps_with([((10, 10), 0.9), ((11, 11), 0.8), ((40, 40), 0.7)])
    nms = parser.center_nms(m)
    assert nms[0, 0, 11, 11] == 0
    assert nms[0, 0, 10, 10] == pytest.approx(0.9) and nms[0, 0, 40, 40] == pytest.approx(0.7)
    out = engine_decides(m)
    assert out.cells[0, 0] == flat(10, 10) and out.scores[0, 0] == pytest.approx(0.9) and out.detected[0, 0]
    # A suppressed neighbour never wins, even above the threshold; cells 3 apart are both maxima.
    nms = parser.center_nms(maps_with([((10, 10), 0.9), ((13, 10), 0.95)]))
    assert nms[0, 0, 10, 13] == pytest.approx(0.95) and nms[0, 0, 10, 10] == pytest.approx(0.9)
    # The window is 5x5: a higher cell 2 away suppresses, one 3 away does not.
    m = maps_with([((20, 20), 0.9), ((22, 22), 0.95), ((30, 30), 0.9), ((33, 30), 0.95)])
    nms = parser.center_nms(m)
    assert nms[0, 0, 20, 20] == 0 and nms[0, 0, 30, 30] == pytest.approx(0.9)


def test_all_negative_maps_detect_nothing():
    out = engine_decides(torch.full((2, 2, 64, 64), -3.0) + torch.rand(2, 2, 64, 64) * 0.01)
    assert not out.detected.any() and not out.prior_applied.any()
    assert (out.scores == 0).all()  # NMS zeroes the non-maxima; the top-1 is a zero


def _official_maps(g, offset, peaks):
    """One image's dense maps (the official parser's input), with raised centers at peaks[side]."""
    maps = {}
    for s, (x, y) in zip("lr", peaks):
        center = torch.randn(1, 1, 64, 64, generator=g) * 0.3 + offset
        center[0, 0, y, x] += 1.0
        maps[f"{s}_center_map"] = center
        maps[f"{s}_params_maps"] = torch.randn(1, NUM_PARAMS, 64, 64, generator=g)
        maps[f"{s}_prior_maps"] = torch.randn(1, NUM_PRIOR, 64, 64, generator=g)
    return maps


def _at(maps, cell):
    return maps[0].flatten(1)[:, cell]


cells_64 = st.tuples(st.integers(0, 63), st.integers(0, 63))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-1.5, 1.0), cells_64, cells_64)
def test_decisions_match_the_official_parser_on_random_maps(seed, offset, left, right):
    """Detection, scores, cells and the cross-hand prior (both hands, at most 32 cells apart)."""
    maps = _official_maps(torch.Generator().manual_seed(seed), offset, (left, right))
    official = ref.parse(maps)
    scores, cells = parser.peak_centers(torch.cat([maps["l_center_map"], maps["r_center_map"]], 1))
    # What FastACR.raw reads at the peaks: each side's params there, each side's prior at the other's.
    params_raw = torch.stack([_at(maps["l_params_maps"], cells[0, 0]), _at(maps["r_params_maps"], cells[0, 1])])
    priors = torch.stack([_at(maps["l_prior_maps"], cells[0, 1]), _at(maps["r_prior_maps"], cells[0, 0])])
    out = decide(RawOutput(scores, cells, params_raw[None], priors[None], 64), DETECTION_THRESHOLD)
    assert out.prior_applied.item() == official["prior_applied"]
    for side, row in enumerate(official["rows"]):
        assert out.detected[0, side].item() == row["detected"]
        assert out.cells[0, side].item() == row["cell"]
        assert out.scores[0, side].item() == row["score"]
        if row["detected"]:  # the official parser reads a missing hand at cell 0 (a dummy row)
            torch.testing.assert_close(out.params[0, side], row["params"])


def test_the_prior_is_added_to_everything_but_the_camera():
    params_raw = torch.randn(3, 2, NUM_PARAMS)
    priors = torch.randn(3, 2, NUM_PRIOR)
    m = maps_with(batch=3)
    m[:, 0, 10, 10], m[:, 1, 10, 40] = 1.0, 1.0   # 30 cells apart: the prior applies
    m[1, 1, 10, 40], m[1, 1, 10, 50] = -0.5, 1.0  # 40 cells apart: it does not
    m[2, 1, 10, 40] = 0.2                         # right hand missing: it does not
    out = engine_decides(m, params_raw=params_raw, priors=priors)
    assert out.prior_applied.tolist() == [True, False, False]
    torch.testing.assert_close(out.params[0, :, :3], params_raw[0, :, :3])
    torch.testing.assert_close(out.params[0, :, 3:], params_raw[0, :, 3:] + priors[0])
    assert torch.equal(out.params[1:], params_raw[1:])
    assert torch.equal(out.params_raw, params_raw) and torch.equal(out.priors, priors)


def test_prior_rule_needs_both_hands_within_32_cells():
    det = torch.tensor([[True, True], [True, True], [True, False], [False, True], [True, True]])
    cells = torch.tensor([
        [flat(0, 0), flat(32, 0)],       # exactly 32: applied (the official test is > 32)
        [flat(0, 0), flat(23, 23)],      # 32.53: not applied
        [flat(5, 5), flat(6, 6)],        # right missing
        [flat(5, 5), flat(6, 6)],        # left missing
        [flat(10, 10), flat(30, 34)],    # 31.24: applied
    ])
    assert parser.prior_applies(cells, det, 64).tolist() == [True, False, False, False, True]
    assert parser.center_distance(cells, 64)[1].item() == pytest.approx(math.hypot(23, 23))


def test_duplicate_suppression_keeps_the_higher_score_of_nearby_sides():
    scores = torch.tensor([[0.9, 0.8], [0.5, 0.7], [0.9, 0.8], [0.9, 0.8]])
    cells = torch.tensor([[flat(10, 10), flat(12, 11)], [flat(10, 10), flat(10, 13)],
                          [flat(10, 10), flat(30, 10)], [flat(10, 10), flat(11, 10)]])
    det = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    out = parser.suppress_duplicates(scores, cells, det, 64, distance=4.0)
    assert out.tolist() == [[True, False], [False, True], [True, True], [True, False]]
    assert parser.suppress_duplicates(scores, cells, det, 64, distance=1.0)[0].tolist() == [True, True]


def test_parameter_layout_and_the_interleaved_6d_convention():
    p = torch.zeros(2, 109)
    p[:, 0:3] = torch.tensor([2.0, 0.1, -0.2])
    p[:, 3:9] = torch.tensor([1.0, 0, 0, 1, 0, 0])            # identity, SPIN layout
    # finger joint 1: 90 degrees about z; columns c1 = (0, 1, 0), c2 = (-1, 0, 0), interleaved
    p[:, 9:15] = torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    p[:, 15:99] = torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(14)
    p[:, 99:109] = torch.arange(10.0)
    d = parser.decode_params(p)
    torch.testing.assert_close(d.cam, torch.tensor([[2.0, 0.1, -0.2]] * 2))
    torch.testing.assert_close(d.orient_matrix, torch.eye(3).expand(2, 3, 3))
    torch.testing.assert_close(d.global_orient, torch.zeros(2, 3))
    torch.testing.assert_close(d.finger_pose[:, :3], torch.tensor([[0, 0, math.pi / 2]] * 2))
    torch.testing.assert_close(d.finger_pose[:, 3:], torch.zeros(2, 42))
    torch.testing.assert_close(d.betas, torch.arange(10.0).expand(2, 10))
    r = rot6d_to_matrix(p[0, 9:15])
    torch.testing.assert_close(r, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]))


def test_parser_handles_batches_per_image():
    m = maps_with(batch=3)
    m[0, 0, 5, 5], m[0, 1, 50, 50] = 1.0, 1.0      # both, far apart
    m[1, 0, 5, 5], m[1, 1, 6, 8] = 1.0, 0.9        # both, close
    m[2, 1, 30, 30] = 2.0                          # right only
    out = engine_decides(m)
    assert out.detected.tolist() == [[True, True], [True, True], [False, True]]
    assert out.prior_applied.tolist() == [False, True, False]
    y, x = parser.cell_yx(out.cells, 64)
    assert (x[1].tolist(), y[1].tolist()) == ([5, 8], [5, 6])
