"""The interfaces: tf2_msgs is wire-compatible with a real Jazzy install, and acr_ros's messages
have the documented shape."""
import json
import os
import sys
from pathlib import Path

from acr_ros.acr.hands import JOINT_NAMES, NUM_JOINTS, NUM_VERTICES
from acr_ros.msg import Hand, HandMesh, Hands

# The type hash real Jazzy robots report for tf2_msgs/msg/TFMessage (it covers package, message and
# field names and types): a local stand-in must produce exactly this to be heard on /tf.
JAZZY_TFMESSAGE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"


def type_hash(package: str, message: str) -> str:
    """From the type description rosidl installs (a sourced ROS install, or the pip set-up's venv)."""
    prefixes = os.environ.get("AMENT_PREFIX_PATH", sys.prefix).split(os.pathsep)
    path = next(p for prefix in prefixes
                if (p := Path(prefix) / "share" / package / "msg" / f"{message}.json").exists())
    return json.loads(path.read_text())["type_hashes"][0]["hash_string"]


def test_tf2_msgs_has_the_upstream_type_hash():
    assert type_hash("tf2_msgs", "TFMessage") == JAZZY_TFMESSAGE_HASH


def test_hand_message_layout_matches_the_documented_conventions():
    hand = Hand()
    assert Hand.NUM_JOINTS == NUM_JOINTS == len(hand.joints) == len(JOINT_NAMES)
    assert len(hand.keypoints) == 2 * NUM_JOINTS and Hand.NUM_VERTICES == NUM_VERTICES
    assert (Hand.LEFT, Hand.RIGHT) == (0, 1)
    # Joint constants follow the joint order of acr_ros.acr.hands.
    for index, name in enumerate(JOINT_NAMES):
        assert getattr(Hand, name.upper()) == index
    assert HandMesh.NUM_TRIANGLES == 1538
    assert Hands().hands == []
