"""The CPU renderer: colours, where it draws, mesh and skeleton paths (synthetic hands). Its speed:
benchmarks/outputs.py."""
import numpy as np
import pytest

from acr_ros.acr.hands import LEFT, RIGHT, FrameResult, HandResult
from acr_ros.render import COLOURS_BGR, draw_hands, fit_intrinsics
from support.hands import CAMERA_1080P as K
from support.hands import mesh_hand


def project(p, k=K):
    return k.project(p).astype(np.float32)


def skeleton_hand(side=RIGHT, centre=(0.0, 0.0, 0.6), score=0.87):
    """A flat 'hand': 5 straight fingers fanning out from a wrist, 21 joints in our order."""
    joints = [np.zeros(3)]
    for f, angle in enumerate(np.linspace(-0.6, 0.6, 5)):
        d = np.array([np.sin(angle), -np.cos(angle), 0.0])
        joints += [d * (0.03 + 0.025 * i) for i in range(4)]
    joints = (np.array(joints) + centre).astype(np.float32)
    return HandResult(side, score, joints, project(joints), np.eye(3, dtype=np.float32))


def background(value=30):
    return np.full((1080, 1920, 3), value, np.uint8)


def changed(a, b):
    return np.any(a != b, axis=2)


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


@pytest.mark.parametrize("side", [LEFT, RIGHT])
def test_skeleton_colour_and_extent(side):
    img = background()
    hand = skeleton_hand(side)
    out = draw_hands(img, FrameResult([hand], False, K))
    assert (img == 30).all(), "the input is left unchanged"
    diff = changed(out, img)
    # Bones in the exact side colour.
    colour = np.array(COLOURS_BGR[side], np.uint8)
    exact = np.all(out == colour, axis=2)
    assert exact.sum() > 200
    other = np.array(COLOURS_BGR[LEFT if side == RIGHT else RIGHT], np.uint8)
    assert not np.all(out == other, axis=2).any()
    # Nothing drawn away from the hand: only inside the keypoint box (plus the line width) and
    # the label just above it.
    x0, y0 = hand.keypoints.min(0) - 12
    x1, y1 = hand.keypoints.max(0) + 12
    outside = diff.copy()
    outside[int(y0) - 40:int(y1), int(x0):int(x1) + 80] = False
    assert not outside.any()
    bx0, by0, bx1, by1 = box_of(exact)
    assert bx0 >= x0 and bx1 <= x1 and by1 <= y1
    # Right colours: ACR's (0.94, 0.71, 0.53) right, (0.46, 0.59, 0.64) left, in RGB.
    assert COLOURS_BGR[RIGHT] == (135, 181, 240) and COLOURS_BGR[LEFT] == (163, 150, 117)


def test_mesh_is_shaded_in_the_side_colour_and_only_on_the_mesh():
    hand, faces = mesh_hand(RIGHT)
    img = background(0)
    out = draw_hands(img, FrameResult([hand], False, K), {RIGHT: faces, LEFT: None}, label=False)
    uv = project(hand.vertices)
    inside = changed(out, img)
    x0, y0, x1, y1 = box_of(inside)
    assert x0 >= np.floor(uv[:, 0].min()) - 1 and x1 <= np.ceil(uv[:, 0].max()) + 1
    assert y0 >= np.floor(uv[:, 1].min()) - 1 and y1 <= np.ceil(uv[:, 1].max()) + 1
    # Filled (an ellipse of semi-axes 0.09 and 0.05 m at 0.6 m: about pi*210*117 px), no cracks.
    area = np.pi * (0.09 * 1400 / 0.6) * (0.05 * 1400 / 0.6)
    assert 0.9 * area < inside.sum() < 1.05 * area
    cy, cx = int(round(uv[:, 1].mean())), int(round(uv[:, 0].mean()))
    centre = out[cy - 30:cy + 30, cx - 60:cx + 60].reshape(-1, 3).astype(float)
    assert np.all(centre.sum(1) > 0), "no holes in the middle of the mesh"
    # The facing middle is lit nearly fully: 0.9 * shade * colour, shade in (0.8, 1].
    ratio = out[cy, cx].astype(float) / np.array(COLOURS_BGR[RIGHT])
    assert np.all((0.9 * 0.8 < ratio) & (ratio <= 0.9 + 0.01)), ratio
    assert np.ptp(ratio) < 0.03, "same hue as the side colour"
    # Shading: the rim is darker than the middle.
    rim = out[cy, int(np.floor(uv[:, 0].min())) + 3].astype(float).sum()
    assert rim < out[cy, cx].astype(float).sum()


def test_mesh_blends_over_the_image():
    hand, faces = mesh_hand(LEFT)
    img = background(200)
    out = draw_hands(img, FrameResult([hand], False, K), {LEFT: faces}, label=False)
    uv = project(hand.vertices)
    cy, cx = int(round(uv[:, 1].mean())), int(round(uv[:, 0].mean()))
    alone = draw_hands(background(0), FrameResult([hand], False, K), {LEFT: faces}, label=False)
    # alpha 0.9: out = rendered + 0.1 * background
    assert out[cy, cx].astype(int) - alone[cy, cx].astype(int) == pytest.approx([20, 20, 20], abs=1)


def test_mesh_winding_does_not_matter():
    img = background(0)
    hand, faces = mesh_hand(RIGHT)
    a = draw_hands(img, FrameResult([hand], False, K), {RIGHT: faces})
    b = draw_hands(img, FrameResult([hand], False, K), {RIGHT: faces[:, ::-1]})
    assert np.mean(np.any(a != b, axis=2)) < 1e-4


def test_without_intrinsics_the_mesh_lands_on_the_keypoints():
    hand, faces = mesh_hand(RIGHT)
    k = fit_intrinsics(hand.joints, hand.keypoints)
    assert (k.fx, k.cx, k.cy) == pytest.approx((K.fx, K.cx, K.cy), rel=1e-4)
    img = background(0)
    with_k = draw_hands(img, FrameResult([hand], False, K), {RIGHT: faces})
    without = draw_hands(img, FrameResult([hand], True, None), {RIGHT: faces})
    assert np.mean(np.any(with_k != without, axis=2)) < 1e-3


def test_skeleton_when_no_faces_or_mesh_behind_the_camera():
    hand, faces = mesh_hand(RIGHT)
    img = background(0)
    colour = np.array(COLOURS_BGR[RIGHT], np.uint8)
    no_faces = draw_hands(img, FrameResult([hand], False, K), None)
    assert np.all(no_faces == colour, axis=2).sum() > 100  # bones in the exact colour
    behind = HandResult(RIGHT, 0.5, hand.joints, hand.keypoints, hand.wrist_rotation,
                        vertices=hand.vertices * np.float32([1, 1, -1]))
    out = draw_hands(img, FrameResult([behind], False, K), {RIGHT: faces})
    assert np.all(out == colour, axis=2).sum() > 100
    # Mesh and skeleton together on request.
    both = draw_hands(img, FrameResult([hand], False, K), {RIGHT: faces}, skeleton=True, label=False)
    mesh_only = draw_hands(img, FrameResult([hand], False, K), {RIGHT: faces}, label=False)
    assert np.any(both != mesh_only)


def test_two_hands_nearer_on_top_and_no_hands():
    img = background(0)
    far, faces = mesh_hand(LEFT, centre=(0.0, 0.0, 0.8))
    near, _ = mesh_hand(RIGHT, centre=(0.02, 0.0, 0.6))
    out = draw_hands(img, FrameResult([near, far], False, K), {LEFT: faces, RIGHT: faces}, label=False)
    uv = project(near.vertices)
    cy, cx = int(round(uv[:, 1].mean())), int(round(uv[:, 0].mean()))
    px = out[cy, cx].astype(float)
    # The nearer right hand covers the left one: its hue (R > G > B).
    assert px[2] > px[1] > px[0]
    assert np.array_equal(draw_hands(img, FrameResult([], True, None)), img)
    assert draw_hands(img, FrameResult([], True, None)) is not img


def test_label_shows_side_and_score():
    img = background(0)
    hand = skeleton_hand(LEFT, score=0.87)
    with_label = draw_hands(img, FrameResult([hand], False, K))
    without = draw_hands(img, FrameResult([hand], False, K), label=False)
    diff = changed(with_label, without)
    x0, y0, x1, y1 = box_of(diff)
    assert y1 <= hand.keypoints[:, 1].min() and x1 - x0 > 40  # a tag above the hand
    in_place = img.copy()
    assert draw_hands(in_place, FrameResult([hand], False, K), copy=False) is in_place
    assert np.array_equal(in_place, with_label)


def test_huge_finite_coordinates_do_not_crash():
    """Garbage but finite points (beyond OpenCV's int32 fixed-point range) are drawn clipped."""
    hand = skeleton_hand()
    hand.keypoints = hand.keypoints.copy()
    hand.keypoints[4] = (3e8, -3e8)
    hand.keypoints[8] = (1e30, 5.0)
    out = draw_hands(background(), FrameResult(hands=[hand]), skeleton=True)
    assert changed(out, background()).any()
    mesh, faces = mesh_hand()
    mesh.vertices = mesh.vertices.copy()
    mesh.vertices[:5, 2] = 1.0001e-3     # just in front of the camera: projects ~1e6-1e8 px out
    mesh.vertices[:5, 0] = 0.3
    out = draw_hands(background(), FrameResult(hands=[mesh], intrinsics=K), {RIGHT: faces})
    assert changed(out, background()).any()
