"""Robot hands beside the overlay (render.robot_view, draw_robot_hand, beside; acr_offline --retarget): the
retargeted pose drawn from the URDF's link frames, for every bundled robot, with synthetic hands
(support/hand_poses.py) and the robots' URDFs from ../shared/robots."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from acr_ros import offline
from acr_ros.render import PANEL_ASPECT, PANEL_PALM, beside, draw_robot_hand, robot_views
from acr_ros.retargeting import ROBOTS, HandRetargeter, RetargetSettings
from support.bags import read_bag, write_bag
from support.hand_poses import hand_pose

pytestmark = pytest.mark.slow(seconds=5)

HANDS = Path(__file__).resolve().parents[1].parent / "shared" / "robots" / "dex-urdf" / "hands"
if not HANDS.is_dir():
    pytest.skip(f"no robot URDFs at {HANDS} (../shared/robots beside the repository)", allow_module_level=True)
SAMPLES = Path(__file__).resolve().parents[1] / "acr_ros" / "data" / "samples"
SIDES = ("left", "right")
HEIGHT = 360


@pytest.fixture(scope="module", params=ROBOTS)
def robot(request):
    retargeter = HandRetargeter.create(RetargetSettings(robot=request.param, urdf_dir=str(HANDS)))
    return retargeter, robot_views(retargeter)


def pose_frames(retargeter, pose: str, side: str) -> dict:
    command = retargeter.retarget(side, hand_pose(pose, side), 0, new_track=True)
    return retargeter.link_frames(side, command.positions)


def tip_pixels(panel: np.ndarray) -> np.ndarray:
    """(N, 2) x, y of the fingertip markers' white rings (nothing else in a panel is pure white)."""
    ys, xs = np.nonzero((panel == 255).all(axis=2))
    return np.stack([xs, ys], axis=1)


def test_the_link_tree_joins_every_link_to_one_root(robot):
    retargeter, _ = robot
    for side in SIDES:
        tree = retargeter.link_tree(side)
        links = set(retargeter.link_frames(side, retargeter.neutral(side)))
        assert set(tree) | set(tree.values()) == links
        assert len(links - set(tree)) == 1  # the root
        assert set(retargeter.fingertip_links(side)) <= set(tree)


def test_the_picture_is_the_overlay_and_a_panel_per_side(robot):
    retargeter, views = robot
    overlay = np.random.default_rng(0).integers(0, 256, (HEIGHT, 500, 3), dtype=np.uint8)
    picture = beside(overlay, views, {"right": pose_frames(retargeter, "open", "right")})
    panel = int(round(HEIGHT * PANEL_ASPECT))
    assert picture.shape == (HEIGHT, 500 + 2 * panel, 3)
    assert np.array_equal(picture[:, :500], overlay)
    left, right = picture[:, 500:500 + panel], picture[:, 500 + panel:]
    assert len(tip_pixels(right)) > 0 and len(tip_pixels(left)) == 0  # the left hand is not tracked


@pytest.mark.parametrize("side", SIDES)
def test_a_fist_and_an_open_hand_draw_different_robot_hands(robot, side):
    retargeter, views = robot
    palm = np.array([HEIGHT * PANEL_ASPECT * PANEL_PALM[0], HEIGHT * PANEL_PALM[1]])
    spread = {}
    for pose in ("open", "fist"):
        panel = draw_robot_hand(views[side], pose_frames(retargeter, pose, side), HEIGHT)
        tips = tip_pixels(panel)
        assert len(tips) > 0, f"{pose}: no fingertip drawn"
        spread[pose] = np.linalg.norm(tips - palm, axis=1).mean()
    # The fist's fingertips curl towards the palm: nearer it in the picture by a fifth at least.
    assert spread["fist"] < 0.8 * spread["open"], spread


def test_acr_offline_draws_the_robot_beside_the_photo(tmp_path):
    photo = SAMPLES / "magic_flip.jpg"  # a right hand
    assert offline.main(["--inputs", str(photo), "-o", str(tmp_path), "--backend", "mediapipe",
                         "--retarget", "leap", "--urdf-dir", str(HANDS), "-q"]) == 0
    image = cv2.imread(str(photo))
    picture = cv2.imread(str(tmp_path / "magic_flip_output.jpg"))
    height, width = image.shape[:2]
    panel = int(round(height * PANEL_ASPECT))
    assert picture.shape == (height, width + 2 * panel, 3)
    # JPEG blurs the white rings: near-white pixels in the right robot's panel only.
    near_white = (picture.astype(int) > 235).all(axis=2)
    assert near_white[:, width + panel:].sum() > 20
    assert near_white[:, width:width + panel].sum() == 0


def test_a_recording_s_video_shows_the_robot_and_its_bag_the_plain_overlay(tmp_path):
    right = cv2.resize(cv2.imread(str(SAMPLES / "magic_flip.jpg")), (320, 180))
    recorded = write_bag(tmp_path / "clip", [right] * 3, "mcap")
    out = tmp_path / "out"
    assert offline.main(["--inputs", str(recorded.path), "-o", str(out), "--backend", "mediapipe", "--bag-overlay",
                         "--retarget", "allegro", "--urdf-dir", str(HANDS), "-q"]) == 0
    overlays = [m.msg for m in read_bag(out / "clip_hands") if m.topic == "/acr_hands/overlay"]
    assert len(overlays) == 3 and all((m.width, m.height) == (320, 180) for m in overlays)
    video = cv2.VideoCapture(str(out / "clip_output.mp4"))
    try:
        size = (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ok, last = video.read()
    finally:
        video.release()
    panel = int(round(180 * PANEL_ASPECT))
    assert ok and size == (320 + 2 * panel, 180)
    assert (last[:, 320 + panel:].astype(int) > 235).all(axis=2).sum() > 5  # the right robot's fingertips
