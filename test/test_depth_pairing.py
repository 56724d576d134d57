"""acr_ros.frame_inputs.DepthPairing: colour frames meet the depth image nearest their stamp, within a bound."""
from acr_ros.frame_inputs import DepthPairing

MS = 1_000_000


def test_the_nearest_stamp_within_the_bound_is_the_partner():
    pairing = DepthPairing()
    for stamp in (0, 33 * MS, 66 * MS):
        pairing.put(stamp, f"depth@{stamp // MS}")
    assert pairing.partner(35 * MS, 20 * MS) == "depth@33"
    assert pairing.partner(66 * MS, 0) == "depth@66"     # the same stamp: an aligned RGB-D pair
    assert pairing.partner(50 * MS, 10 * MS) is None       # 16-17 ms from either: no partner
    assert pairing.partner(200 * MS, 20 * MS) is None


def test_only_the_newest_stamps_are_kept_whatever_the_arrival_order():
    pairing = DepthPairing(capacity=2)
    pairing.put(30 * MS, "c")
    pairing.put(10 * MS, "a")   # arrives late: the oldest
    pairing.put(20 * MS, "b")
    assert pairing.partner(10 * MS, 0) is None
    assert pairing.partner(20 * MS, 0) == "b" and pairing.partner(30 * MS, 0) == "c"


def test_empty_and_cleared():
    pairing = DepthPairing()
    assert pairing.partner(0, 10 * MS) is None
    pairing.put(0, "a")
    pairing.clear()
    assert pairing.partner(0, 10 * MS) is None
