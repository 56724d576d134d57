"""The embedded MediaPipe backend on the bundled sample photos (real hands, real model).

Handedness ground truth of the samples (acr_ros/data/samples/README.md): magic.jpg is a normal,
non-mirrored photo of the person's LEFT hand (the shirt print reads normally, the arm comes from
the person's left shoulder, palm toward the camera with the thumb up and the fingers pointing to
the image's right); magic_flip.jpg is its mirror image, a RIGHT hand. MediaPipe labels them the
other way round (it assumes selfie images); the backend swaps the labels.
"""
import cv2
import numpy as np
import pytest

from acr_ros.acr.hands import JOINT_PARENTS, LEFT, NUM_JOINTS, RIGHT, CameraIntrinsics, FrameResult

from acr_ros.media import SAMPLES_DIR as MEDIA


@pytest.fixture(scope="module")
def backend():
    from acr_ros.backends.mediapipe import MediaPipeBackend

    with MediaPipeBackend(static_image_mode=True) as b:
        yield b


def image(name):
    img = cv2.imread(str(MEDIA / name))
    assert img is not None, name
    return img


def run(backend, img, k=None, stream="test"):
    return backend.reconstruct([img], [k], [0.0], [stream])[0]


def chirality(joints):
    """> 0 for a right hand, < 0 for a left one, from the 3D geometry alone: the fingers curl
    toward the palm, whose normal for a right hand is (index MCP - pinky MCP) x (middle MCP - wrist)."""
    normal = np.cross(joints[5] - joints[17], joints[9] - joints[0])
    normal /= np.linalg.norm(normal)
    curl = joints[[8, 12, 16, 20]].mean(axis=0) - joints[[5, 9, 13, 17]].mean(axis=0)
    return float(curl @ normal)


def assert_sane(hand, width, height):
    assert hand.joints.shape == (NUM_JOINTS, 3) and hand.joints.dtype == np.float32
    assert hand.keypoints.shape == (NUM_JOINTS, 2) and hand.keypoints.dtype == np.float32
    assert np.isfinite(hand.joints).all() and np.isfinite(hand.keypoints).all()
    assert (hand.joints[:, 2] > 0).all(), "depth must be positive"
    extent = max(np.linalg.norm(a - b) for a in hand.joints for b in hand.joints)
    assert 0.05 < extent < 0.25, f"hand size {extent:.3f} m"
    bones = [np.linalg.norm(hand.joints[j] - hand.joints[p]) for j, p in enumerate(JOINT_PARENTS) if p >= 0]
    assert 0.005 < min(bones) and max(bones) < 0.15
    assert (hand.keypoints[:, 0] > -0.1 * width).all() and (hand.keypoints[:, 0] < 1.1 * width).all()
    assert (hand.keypoints[:, 1] > -0.1 * height).all() and (hand.keypoints[:, 1] < 1.1 * height).all()
    r = hand.wrist_rotation
    assert r.shape == (3, 3) and np.allclose(r @ r.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    # x axis of the palm frame runs from the wrist along the fingers.
    toward_fingers = hand.joints[[5, 17]].mean(axis=0) - hand.joints[0]
    assert r[:, 0] @ toward_fingers / np.linalg.norm(toward_fingers) > 0.99
    assert 0.0 < hand.score <= 1.0
    for field in ("global_orient", "finger_pose", "shape", "weak_camera", "vertices", "joint_rotations"):
        assert getattr(hand, field) is None


def test_left_hand_photo(backend):
    img = image("magic.jpg")
    result = run(backend, img)
    assert isinstance(result, FrameResult)
    assert [h.side for h in result.hands] == [LEFT]
    hand = result.hands[0]
    assert hand.score > 0.9
    assert_sane(hand, img.shape[1], img.shape[0])
    assert chirality(hand.joints) < 0  # the 3D geometry is a left hand too
    # The hand is in the middle of the photo (wrist around x = 520 of 960).
    assert 400 < hand.keypoints[0, 0] < 650


def test_mirrored_photo_is_a_right_hand(backend):
    img = image("magic_flip.jpg")
    result = run(backend, img)
    assert [h.side for h in result.hands] == [RIGHT]
    hand = result.hands[0]
    assert_sane(hand, img.shape[1], img.shape[0])
    assert chirality(hand.joints) > 0
    # Mirror of the left hand's keypoints, within a few pixels.
    left = run(backend, image("magic.jpg")).hands[0]
    mirrored = left.keypoints.copy()
    mirrored[:, 0] = img.shape[1] - mirrored[:, 0]
    assert np.median(np.linalg.norm(mirrored - hand.keypoints, axis=1)) < 15


def test_mirrored_input_keeps_mediapipe_labels():
    from acr_ros.backends.mediapipe import MediaPipeBackend

    with MediaPipeBackend(static_image_mode=True, mirrored_input=True) as b:
        assert [h.side for h in run(b, image("magic.jpg")).hands] == [RIGHT]


def test_two_hands(backend):
    img = image("two_hands.jpg")
    result = run(backend, img)
    assert sorted(h.side for h in result.hands) == [LEFT, RIGHT]
    by_side = {h.side: h for h in result.hands}
    width = img.shape[1]
    assert by_side[LEFT].keypoints[:, 0].mean() < width / 2 < by_side[RIGHT].keypoints[:, 0].mean()
    for hand in result.hands:
        assert_sane(hand, width, img.shape[0])
    assert chirality(by_side[LEFT].joints) < 0 < chirality(by_side[RIGHT].joints)
    # Side by side at about the same depth.
    z = [h.joints[:, 2].mean() for h in result.hands]
    assert abs(z[0] - z[1]) < 0.25 * max(z)


def test_two_hands_of_one_side_publish_agreeing_side_and_score(backend):
    """Two copies of the same left hand: one is published as the right hand, with the classifier's
    probability of 'right' as its score, so side, score and label agree."""
    left = cv2.imread(str(MEDIA / "magic.jpg"))
    [frame] = backend.reconstruct([np.vstack([left, left])], [None], [0.0], ["twins"])
    sides = {h.side: h.score for h in frame.hands}
    assert set(sides) == {LEFT, RIGHT}, sides
    assert sides[LEFT] > 0.5 > sides[RIGHT], sides


def test_portrait(backend):
    img = image("portrait.jpg")
    result = run(backend, img)
    assert [h.side for h in result.hands] == [LEFT]
    assert_sane(result.hands[0], img.shape[1], img.shape[0])


@pytest.mark.parametrize("fill", ["zeros", "grey", "noise"])
def test_no_hand_in_a_blank_image(backend, fill):
    if fill == "noise":
        img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    else:
        img = np.full((480, 640, 3), 0 if fill == "zeros" else 128, np.uint8)
    result = run(backend, img)
    assert result.hands == []
    assert result.default_intrinsics is True


def test_intrinsics_place_the_hand(backend):
    img = image("magic.jpg")
    h, w = img.shape[:2]
    default = run(backend, img)
    assert default.default_intrinsics is True
    k0 = default.intrinsics
    assert k0.fx == pytest.approx(1265 / 512 * w) and (k0.cx, k0.cy) == (w / 2, h / 2)

    depths = {}
    for f in (400.0, 800.0, 1600.0):
        k = CameraIntrinsics(f, f, w / 2, h / 2)
        result = run(backend, img, k)
        assert result.default_intrinsics is False and result.intrinsics == k
        hand = result.hands[0]
        depths[f] = float(hand.joints[:, 2].mean())
        # The 3D joints project back near the keypoints under that K.
        z = hand.joints[:, 2]
        uv = np.stack([f * hand.joints[:, 0] / z + k.cx, f * hand.joints[:, 1] / z + k.cy], axis=1)
        size = np.ptp(hand.keypoints, axis=0).max()
        assert np.median(np.linalg.norm(uv - hand.keypoints, axis=1)) < 0.15 * size
    # Depth grows about in proportion to the focal length (the hand keeps its metric size).
    assert 1.6 < depths[800.0] / depths[400.0] < 2.2
    assert 1.6 < depths[1600.0] / depths[800.0] < 2.2
    # A principal point further right puts the hand further left in the camera frame.
    shifted = run(backend, img, CameraIntrinsics(800.0, 800.0, w / 2 + 100, h / 2)).hands[0]
    centred = run(backend, img, CameraIntrinsics(800.0, 800.0, w / 2, h / 2)).hands[0]
    assert shifted.joints[:, 0].mean() < centred.joints[:, 0].mean()


def test_batch_keeps_order(backend):
    imgs = [image("magic.jpg"), np.zeros((240, 320, 3), np.uint8), image("magic_flip.jpg")]
    results = backend.reconstruct(imgs, [None] * 3, [0.0, 0.0, 0.0], ["a", "b", "c"])
    assert [[h.side for h in r.hands] for r in results] == [[LEFT], [], [RIGHT]]
    with pytest.raises(ValueError):
        backend.reconstruct(imgs, [None], [0.0], ["a"])


def test_video_mode_streams_do_not_mix():
    from acr_ros.backends.mediapipe import MediaPipeBackend

    hand, blank = image("magic.jpg"), np.full_like(image("magic.jpg"), 90)
    with MediaPipeBackend() as b:
        assert not b.static_image_mode
        for t in range(3):  # stream A tracks a hand while stream B sees nothing
            a_res, b_res = b.reconstruct([hand, blank], [None, None], [t / 10, t / 10], ["cam_a", "cam_b"])
            assert [h.side for h in a_res.hands] == [LEFT]
            assert b_res.hands == []
        assert set(b._streams) == {"cam_a", "cam_b"}
        b.reset()
        assert b._streams == {}


def test_detection_threshold_and_faces(backend):
    from acr_ros.backends.mediapipe import MediaPipeBackend

    assert backend.faces(LEFT) is None and backend.faces(RIGHT) is None
    assert backend.name == "mediapipe" and backend.checkpoint == "" and "MediaPipe" in backend.model
    with MediaPipeBackend(detection_threshold=0.35) as b:
        assert b.detection_threshold == 0.35
        run(b, image("magic.jpg"))
        b.detection_threshold = 7.0  # the node's range reaches 10: clamped
        assert b.detection_threshold == 1.0 and b._streams == {}


def test_smoothing_follows_a_still_hand():
    from acr_ros.acr.smoothing import SmoothingConfig
    from acr_ros.backends.mediapipe import MediaPipeBackend

    img = image("magic.jpg")
    with MediaPipeBackend(static_image_mode=True) as plain:
        raw = run(plain, img).hands[0]
    with MediaPipeBackend(smoothing=SmoothingConfig(pose_min_cutoff=1.0, pose_beta=0.0, d_cutoff=1.0)) as b:
        first = b.reconstruct([img], [None], [0.0], ["s"])[0]
        moved = np.ascontiguousarray(np.roll(img, 40, axis=1))  # the hand jumps 40 px right
        second = b.reconstruct([moved], [None], [0.1], ["s"])[0]
        hand = second.hands[0]
        # Smoothed: the jump is only partly followed, in 2D and in 3D.
        shift = hand.keypoints[:, 0].mean() - first.hands[0].keypoints[:, 0].mean()
        assert 2 < shift < 38
        u = second.intrinsics.project(hand.joints)[:, 0].mean()
        u_first = first.intrinsics.project(first.hands[0].joints)[:, 0].mean()
        assert 1 < u - u_first < 38
        assert first.hands[0].keypoints == pytest.approx(raw.keypoints, abs=3)
        b.set_smoothing(None)
        third = b.reconstruct([moved], [None], [0.2], ["s"])[0]
        assert third.hands[0].keypoints[:, 0].mean() - first.hands[0].keypoints[:, 0].mean() > 30


def test_solve_translation_recovers_a_known_placement():
    from acr_ros.backends.mediapipe import solve_translation

    rng = np.random.default_rng(1)
    local = rng.normal(scale=0.04, size=(21, 3))
    k = CameraIntrinsics(900.0, 910.0, 320.0, 240.0)
    t_true = np.array([0.05, -0.03, 0.6])
    uv = k.project(local + t_true)
    assert solve_translation(local, uv, k) == pytest.approx(t_true, abs=1e-6)


@pytest.mark.parametrize("height,width", [(211, 301), (301, 211), (101, 200), (7, 3), (480, 640)])
def test_both_backends_share_the_default_camera(backend, height, width):
    """ACR's default (docs/architecture.md, "Camera"): f = 1265 S / 512, the principal point at the
    centre of the letterbox square (the odd padding pixel at the bottom / right), for the MediaPipe
    and the ACR backend."""
    import torch

    from acr_ros.acr.camera import intrinsics_tensor
    from acr_ros.acr.preprocess import letterbox

    size = max(height, width)
    pad_top, pad_left = (size - height) // 2, (size - width) // 2
    expected = (1265 * size / 512, 1265 * size / 512, size / 2 - pad_left, size / 2 - pad_top)
    mediapipe = run(backend, np.zeros((height, width, 3), np.uint8)).intrinsics
    acr = intrinsics_tensor([None], [letterbox(height, width)], dtype=torch.float64)[0].tolist()
    assert (mediapipe.fx, mediapipe.fy, mediapipe.cx, mediapipe.cy) == pytest.approx(expected, rel=1e-12)
    assert acr == pytest.approx(expected, rel=1e-12)
