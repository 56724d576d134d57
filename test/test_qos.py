"""acr_ros.qos: the image subscription's reliability from the parameter and the publishers."""
from types import SimpleNamespace

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy

from acr_ros.qos import choose_reliability, offered_reliabilities

R, B = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def publisher(reliability):
    return SimpleNamespace(qos_profile=QoSProfile(depth=1, reliability=reliability))


@pytest.mark.parametrize("offered, expected", [
    ([R], R),            # a camera driver or ros2 bag play: reliable end to end
    ([R, R], R),
    ([B], B),            # a sensor-data publisher: a reliable subscriber would never hear it
    ([R, B], B),         # mixed: best effort hears both
    ([], B),             # no publisher yet: best effort hears whichever comes
])
def test_auto_follows_the_publishers(offered, expected):
    assert choose_reliability("auto", offered_reliabilities(publisher(p) for p in offered)) == expected


@pytest.mark.parametrize("setting, expected", [("best_effort", B), ("reliable", R)])
def test_explicit_settings_ignore_the_publishers(setting, expected):
    assert choose_reliability(setting, [R]) == expected
    assert choose_reliability(setting, [B]) == expected


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="qos_reliability"):
        choose_reliability("fast", [R])
