"""The result parser on fixed rows [left, right]: the official decisions, checked on hand-made maps."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from acr_ros.acr import parser
from support import reference as ref
from acr_ros.acr.rotation import rot6d_to_matrix


def maps_with(peaks_left=(), peaks_right=(), base=-0.5, batch=1):
    """(B, 2, 64, 64) center maps with given ((x, y), value) peaks."""
    m = torch.full((batch, 2, 64, 64), base)
    for side, peaks in ((0, peaks_left), (1, peaks_right)):
        for (x, y), v in peaks:
            m[:, side, y, x] = v
    return m


def flat(x, y):
    return y * 64 + x


def test_threshold_is_strictly_greater_on_the_raw_value():
    s, c, d = parser.detect_centers(maps_with([((10, 20), 0.35)], [((30, 40), 0.3500001)]))
    assert d.tolist() == [[False, True]]
    assert c.tolist() == [[flat(10, 20), flat(30, 40)]]
    s, c, d = parser.detect_centers(maps_with([((10, 20), 5.0)]), threshold=5.0)
    assert d.tolist() == [[False, False]]


def test_nms_keeps_local_maxima_and_top1_takes_the_best():
    m = maps_with([((10, 10), 0.9), ((11, 11), 0.8), ((40, 40), 0.7)])
    nms = parser.center_nms(m)
    assert nms[0, 0, 11, 11] == 0 and nms[0, 0, 10, 10] == pytest.approx(0.9) and nms[0, 0, 40, 40] == pytest.approx(0.7)
    s, c, d = parser.detect_centers(m)
    assert c[0, 0] == flat(10, 10) and s[0, 0] == pytest.approx(0.9) and d[0, 0]
    # A suppressed neighbour never wins, even above the threshold; cells 3 apart are both maxima.
    nms = parser.center_nms(maps_with([((10, 10), 0.9), ((13, 10), 0.95)]))
    assert nms[0, 0, 10, 13] == pytest.approx(0.95) and nms[0, 0, 10, 10] == pytest.approx(0.9)


def test_all_negative_maps_detect_nothing():
    s, c, d = parser.detect_centers(torch.full((2, 2, 64, 64), -3.0) + torch.rand(2, 2, 64, 64) * 0.01)
    assert not d.any()
    assert (s == 0).all()  # NMS zeroes the non-maxima; the top-1 is a zero


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-1.0, 1.5))
def test_detection_matches_the_official_parser_on_random_maps(seed, offset):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(1, 2, 64, 64, generator=g) * 0.3 + offset
    s, c, d = parser.detect_centers(m)
    for side in (0, 1):
        det, ind, _, score = ref._centers(m[:, side:side + 1])
        assert d[0, side].item() == det
        assert c[0, side].item() == ind
        assert s[0, side].item() == score


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
    s, c, d = parser.detect_centers(m)
    assert d.tolist() == [[True, True], [True, True], [False, True]]
    assert parser.prior_applies(c, d, 64).tolist() == [False, True, False]
    y, x = parser.cell_yx(c, 64)
    assert (x[1].tolist(), y[1].tolist()) == ([5, 8], [5, 6])
