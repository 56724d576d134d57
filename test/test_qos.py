"""acr_ros.qos: the input subscriptions' reliability from the parameter and, for auto, the publishers."""
from types import SimpleNamespace

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy

from acr_ros.qos import choose_reliability, offered_reliabilities, policy_name, reliability_policy

R, B = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def publisher(reliability):
    return SimpleNamespace(qos_profile=QoSProfile(depth=1, reliability=reliability))


@pytest.mark.parametrize("offered, expected", [
    ([R], R),            # a camera driver or ros2 bag play: reliable end to end
    ([R, R], R),
    ([B], B),            # a sensor-data publisher: a reliable subscriber would never hear it
    ([R, B], B),         # mixed: best effort hears both
    ([], R),             # no publisher yet: rclpy's best_available subscribes reliably
])
def test_auto_follows_the_publishers_as_best_available_does(offered, expected):
    assert choose_reliability(offered_reliabilities(publisher(p) for p in offered)) == expected


@pytest.mark.parametrize("setting, expected", [("auto", ReliabilityPolicy.BEST_AVAILABLE),
                                               ("best_effort", B), ("reliable", R)])
def test_each_setting_is_a_reliability_policy(setting, expected):
    assert reliability_policy(setting) == expected
    assert policy_name(expected) == {"auto": "best_available"}.get(setting, setting)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="qos_reliability"):
        reliability_policy("fast")
