"""Synthetic hand poses for the retargeting tests: 21 joints (JOINT_NAMES order) of an adult-sized hand in
the camera optical frame (x right, y down, z forward), metres.

A right hand is built in its own frame (origin at the wrist; x towards the thumb side, y along the fingers,
z out of the palm: a right-handed frame) from knuckle positions, bone lengths and flexion angles, then
placed in front of the camera. The left hand is its mirror image through the camera's y-z plane (x -> -x),
so the two are exact mirror images of each other.
"""
from __future__ import annotations

import numpy as np

# Knuckle (MCP; the thumb's CMC) of each finger in the hand frame, and its three bone lengths, base to tip.
KNUCKLES = {"thumb": (0.022, 0.028, 0.008), "index": (0.024, 0.092, 0.0), "middle": (0.002, 0.096, 0.0),
            "ring": (-0.018, 0.089, 0.0), "pinky": (-0.036, 0.079, 0.0)}
BONES = {"thumb": (0.044, 0.032, 0.027), "index": (0.042, 0.025, 0.021), "middle": (0.046, 0.028, 0.022),
         "ring": (0.043, 0.027, 0.021), "pinky": (0.034, 0.020, 0.019)}
# Direction of each straight finger in the hand's x-y plane (degrees from y towards the thumb side).
SPREAD = {"thumb": 45.0, "index": 6.0, "middle": 0.0, "ring": -6.0, "pinky": -12.0}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
PINCH_GAP = 0.005  # thumb tip to index tip in the pinch, metres


def _finger(name: str, flexion_deg) -> np.ndarray:
    """(4, 3) knuckle and the next three joints of a finger whose bones bend by the cumulative flexion
    angles (degrees) from its straight direction towards the palm side (+z)."""
    spread = np.radians(SPREAD[name])
    straight = np.array([np.sin(spread), np.cos(spread), 0.0])
    points = [np.array(KNUCKLES[name])]
    angle = 0.0
    for bone, flexion in zip(BONES[name], flexion_deg):
        angle += np.radians(flexion)
        points.append(points[-1] + bone * (np.cos(angle) * straight + np.sin(angle) * np.array([0, 0, 1.0])))
    return np.stack(points)


def _two_bones_to(base: np.ndarray, target: np.ndarray, lengths, bend: np.ndarray) -> np.ndarray:
    """(2, 3) the middle joint and the tip of two bones from `base` whose tip lands on `target`, the
    middle joint bent towards `bend` (planar two-link inverse kinematics)."""
    l1, l2 = lengths
    offset = target - base
    d = np.linalg.norm(offset)
    assert abs(l1 - l2) < d < l1 + l2, "target out of the thumb's reach"
    u = offset / d
    side = bend - (bend @ u) * u
    side /= np.linalg.norm(side)
    along = (l1**2 - l2**2 + d**2) / (2 * d)
    middle = base + along * u + np.sqrt(l1**2 - along**2) * side
    return np.stack([middle, target])


def _hand(finger_flexion: dict, thumb_target=None) -> np.ndarray:
    """(21, 3) right hand in its own frame. thumb_target(chains): where the thumb tip goes, given every
    finger's (4, 3) joints (its metacarpal keeps the flexion given, its last two bones reach the target);
    without it the thumb bends by its flexion."""
    chains = {name: _finger(name, finger_flexion[name]) for name in FINGERS}
    if thumb_target is not None:
        thumb = chains["thumb"]
        thumb[2:] = _two_bones_to(thumb[1], thumb_target(chains), BONES["thumb"][1:], bend=np.array([1.0, 0, -1]))
    return np.concatenate([np.zeros((1, 3))] + [chains[name] for name in FINGERS])


def _open_hand() -> np.ndarray:
    return _hand({name: (5, 5, 5) for name in FINGERS} | {"thumb": (25, 10, 10)})


def _fist() -> np.ndarray:
    def over_the_fingers(chains):
        # The thumb tip rests on the index finger's middle bone, on its outer (palm-normal) side.
        index = chains["index"]
        return (index[1] + index[2]) / 2 + np.array([-0.012, 0.0, 0.012])

    curled = (85, 100, 70)
    return _hand({name: curled for name in FINGERS} | {"thumb": (45, 0, 0)}, over_the_fingers)


def _pinch() -> np.ndarray:
    def at_the_index_tip(chains):
        return chains["index"][3] + PINCH_GAP * np.array([1.0, 0.0, 0.0])

    return _hand({name: (25, 80, 60) for name in FINGERS} | {"index": (50, 60, 40), "thumb": (45, 0, 0)},
                 at_the_index_tip)


POSES = {"open": _open_hand, "fist": _fist, "pinch": _pinch}

# The right hand's frame in the camera frame: palm towards the camera (z to -z), fingers up (y to -y), so
# the thumb side on the image's right (x to x), then tilted 20 degrees about the camera's x axis.
_TILT = np.radians(20.0)
_HAND_TO_CAMERA = np.array(
    [[1.0, 0.0, 0.0], [0.0, np.cos(_TILT), -np.sin(_TILT)], [0.0, np.sin(_TILT), np.cos(_TILT)]]
) @ np.diag([1.0, -1.0, -1.0])
_WRIST_IN_CAMERA = np.array([0.12, 0.08, 0.55])
MIRROR = np.diag([-1.0, 1.0, 1.0])  # the camera's y-z plane


def hand_pose(pose: str, side: str) -> np.ndarray:
    """(21, 3) float32 joints of `pose` ('open', 'fist', 'pinch') for `side`, in the camera frame."""
    right = POSES[pose]() @ _HAND_TO_CAMERA.T + _WRIST_IN_CAMERA
    return (right if side == "right" else right @ MIRROR).astype(np.float32)
