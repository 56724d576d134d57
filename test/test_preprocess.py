"""Preprocessing: the official letterbox geometry and pixels, and the on-device fast path."""
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from acr_ros.acr.camera import normalized_to_original
from acr_ros.acr.preprocess import (MAX_ASPECT, Letterbox, _resize_from_taps, _square_is_small, letterbox,
                                   letterbox_tensor, preprocess_batch, preprocess_exact)

from acr_ros.media import SAMPLES_DIR as MEDIA


def imgaug_paddings(height, width):
    """imgaug.compute_paddings_to_reach_aspect_ratio(shape, 1.0), transcribed: (top, right, bottom, left)."""
    top = right = bottom = left = 0
    ratio = width / height
    if ratio < 1.0:
        diff = height - width
        right, left = int(np.ceil(diff / 2)), int(np.floor(diff / 2))
    elif ratio > 1.0:
        diff = width - height
        top, bottom = int(np.floor(diff / 2)), int(np.ceil(diff / 2))
    return top, right, bottom, left


# --- geometry ------------------------------------------------------------------------------------

def test_letterbox_examples_from_the_spec():
    lb = letterbox(1080, 1920)
    assert lb.offsets == (1920, 1920, 0, 0, 0, 0, 420, 0, 420, 0)
    lb = letterbox(101, 200)  # wider than tall: pad top/bottom, odd pixel at the bottom
    assert (lb.size, lb.pad_top, lb.pad_bottom, lb.pad_left, lb.pad_right) == (200, 49, 50, 0, 0)
    lb = letterbox(200, 101)  # taller than wide: pad left/right, odd pixel on the right
    assert (lb.size, lb.pad_top, lb.pad_bottom, lb.pad_left, lb.pad_right) == (200, 0, 0, 49, 50)
    assert letterbox(64, 64) == Letterbox(64, 64, 64, 0, 0, 0, 0, 512)
    with pytest.raises(ValueError):
        letterbox(0, 5)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_letterbox_is_imgaugs_rule(h, w):
    lb = letterbox(h, w)
    assert (lb.pad_top, lb.pad_right, lb.pad_bottom, lb.pad_left) == imgaug_paddings(h, w)
    assert lb.size == max(h, w) == h + lb.pad_top + lb.pad_bottom == w + lb.pad_left + lb.pad_right


@pytest.mark.parametrize("hw", [(1080, 1920), (1920, 1080), (101, 200), (333, 333), (7, 2)])
def test_normalized_coordinates_land_on_the_padded_square(hw):
    h, w = hw
    lb = letterbox(h, w)
    # The image's corners in normalised input coords, and the square's centre (0, 0).
    uv = torch.tensor([[[2 * lb.pad_left / lb.size - 1, 2 * lb.pad_top / lb.size - 1],
                        [1 - 2 * lb.pad_right / lb.size, 1 - 2 * lb.pad_bottom / lb.size],
                        [0.0, 0.0]]], dtype=torch.float64)
    px = normalized_to_original(uv, letterbox_tensor([lb], dtype=torch.float64))[0]
    expected = [[0.0, 0.0], [w, h], [lb.size / 2 - lb.pad_left, lb.size / 2 - lb.pad_top]]
    np.testing.assert_allclose(px.numpy(), expected, atol=1e-9)


def test_letterbox_tensor():
    lbs = [letterbox(1080, 1920), letterbox(200, 101)]
    t = letterbox_tensor(lbs)
    assert t.dtype == torch.float32 and t.shape == (2, 3)
    assert t.tolist() == [[1920, 0, 420], [200, 49, 0]]


# --- pixels --------------------------------------------------------------------------------------

def test_preprocess_exact_matches_the_official_steps():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (101, 200, 3), dtype=np.uint8)
    out, lb = preprocess_exact(bgr)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    # Official: channel reversal, np.pad with 255 (what imgaug's constant pad does), cv2 INTER_CUBIC.
    top, right, bottom, left = imgaug_paddings(101, 200)
    padded = np.pad(bgr[:, :, ::-1], ((top, bottom), (left, right), (0, 0)), constant_values=255)
    np.testing.assert_array_equal(out, cv2.resize(padded, (512, 512), interpolation=cv2.INTER_CUBIC))
    assert lb == letterbox(101, 200)


def test_preprocess_exact_colour_and_white_padding():
    blue = np.zeros((100, 300, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue
    out, lb = preprocess_exact(blue)
    assert lb.pad_top == 100 and lb.pad_bottom == 100
    assert (out[:150] == 255).all() and (out[-150:] == 255).all()  # white bands
    mid = out[256]
    assert (mid[:, 2] == 255).all() and (mid[:, :2] == 0).all()    # RGB: blue is channel 2


def _test_images():
    rng = np.random.default_rng(2)
    images = [cv2.imread(str(p)) for p in sorted(MEDIA.glob("*.jpg"))]
    sizes = [(480, 640), (640, 480), (101, 200), (200, 101), (513, 511), (37, 1000), (1, 1), (1, 2), (2, 1),
             (3, 5), (7, 3)]
    images += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    # A smooth synthetic "photo" (gradients and edges) besides the noise.
    yy, xx = np.mgrid[0:300, 0:500]
    smooth = np.stack([xx % 256, yy % 256, (xx + yy) // 4 % 256], -1).astype(np.uint8)
    cv2.circle(smooth, (250, 150), 80, (0, 0, 255), -1)
    return images + [smooth]


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_preprocess_batch_within_one_level_of_exact(device):
    images = _test_images()
    if device == "cuda":
        preprocess_batch(images[:1], device)  # warm-up
        torch.cuda.set_sync_debug_mode("error")  # the upload and the resize must not sync
    try:
        x, lbs = preprocess_batch(images, device)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    x = x.cpu()
    assert x.shape == (len(images), 3, 512, 512) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    worst = 0
    for img, xi, lb in zip(images, x, lbs):
        exact, lb_exact = preprocess_exact(img)
        assert lb == lb_exact
        levels = (xi.permute(1, 2, 0).numpy() + 1) / 2 * 255
        # The fast path emits exact uint8 levels scaled to [-1, 1].
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        worst = max(worst, np.abs(levels - exact.astype(np.float64)).max())
    assert worst <= 1.0 + 1e-3


def test_preprocess_batch_mixed_sizes_keep_their_slots():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (90, 50, 3), dtype=np.uint8)
    c = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    x, lbs = preprocess_batch([a, b, c], "cpu")
    for i, img in enumerate((a, b, c)):
        alone, _ = preprocess_batch([img], "cpu")
        assert torch.equal(x[i], alone[0])
        assert lbs[i] == letterbox(*img.shape[:2])
    assert not torch.equal(x[0], x[2])


def test_preprocess_rejects_bad_images():
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8)):
        with pytest.raises(ValueError):
            preprocess_exact(bad)
        with pytest.raises(ValueError):
            preprocess_batch([bad])


# --- long images: bounded work, refused beyond 1:MAX_ASPECT ----------------------------------------

def official_steps(bgr):
    """The official pixels (channel reversal, white pad to the full square, cv2 INTER_CUBIC)."""
    top, right, bottom, left = imgaug_paddings(*bgr.shape[:2])
    padded = np.pad(bgr[:, :, ::-1], ((top, bottom), (left, right), (0, 0)), constant_values=255)
    return cv2.resize(padded, (512, 512), interpolation=cv2.INTER_CUBIC)


def long_image(height, width, seed=4):
    """Noise on smooth stripes: edges at every scale for the bicubic kernel."""
    rng = np.random.default_rng(seed)
    stripes = (np.arange(max(height, width)) * 7 % 256).astype(np.uint8)
    base = stripes[:width][None, :, None] if width >= height else stripes[:height][:, None, None]
    return np.clip(base + rng.integers(-40, 40, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw", [(1080, 1920), (1920, 1080), (2160, 3840), (3000, 4000), (6000, 8000),
                                (4320, 7680), (1200, 4800), (4096, 100), (64, 64)])
def test_camera_and_photo_formats_keep_the_official_square(hw):
    assert _square_is_small(letterbox(*hw))  # so preprocess_exact is the official steps for them


@pytest.mark.parametrize("hw", [(100, 6400), (6400, 100), (70, 4999), (1000, 5000), (37, 1000), (1, 64), (7, 3),
                                (513, 511)])
def test_the_bounded_resize_is_within_one_level_of_the_official(hw):
    bgr = long_image(*hw)
    lb = letterbox(*hw)
    ours, official = _resize_from_taps(bgr, lb), official_steps(bgr)
    assert ours.shape == official.shape and ours.dtype == np.uint8 and ours.flags.c_contiguous
    difference = np.abs(ours.astype(int) - official)
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.05  # OpenCV's kernels round differently only in places


def test_a_long_image_does_not_build_the_padded_square():
    bgr = long_image(100, 6400)  # 1.8 MiB; its padded square 6400 x 6400 x 3 would be 117 MiB
    assert not _square_is_small(letterbox(100, 6400))
    tracemalloc.start()
    try:
        out, lb = preprocess_exact(bgr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The bounded path reads at most 2048 x 2048 pixels (4 taps per output pixel and axis), whatever the image.
    assert peak < 64 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB"
    assert lb == letterbox(100, 6400)
    assert np.abs(out.astype(int) - official_steps(bgr)).max() <= 1


def test_preprocess_batch_does_not_pad_a_long_image_to_its_square(monkeypatch):
    from acr_ros.acr import preprocess

    padded = []

    def pad(x, *args, **kwargs):
        out = real_pad(x, *args, **kwargs)
        padded.append(tuple(out.shape))
        return out

    real_pad = preprocess.F.pad
    monkeypatch.setattr(preprocess.F, "pad", pad)
    long, ordinary = long_image(6400, 100), long_image(90, 120)
    x, lbs = preprocess_batch([long, ordinary], "cpu")
    side = letterbox(90, 120).size
    assert padded == [(1, 3, side, side)]  # the ordinary image's square only (6400^2 floats: 470 MiB)
    levels = ((x.permute(0, 2, 3, 1).numpy() + 1) / 2 * 255).round().astype(int)
    np.testing.assert_array_equal(levels[0], preprocess_exact(long)[0])
    assert np.abs(levels[1] - preprocess_exact(ordinary)[0]).max() <= 1
    assert lbs == [letterbox(6400, 100), letterbox(90, 120)]


def test_images_more_elongated_than_the_limit_are_refused():
    for hw in ((1, MAX_ASPECT + 1), (MAX_ASPECT + 1, 1), (10, 10 * MAX_ASPECT + 1), (1, 40000)):
        bgr = np.zeros(hw + (3,), np.uint8)
        with pytest.raises(ValueError, match=f"{hw[0]}x{hw[1]} is more elongated than 1:{MAX_ASPECT}"):
            preprocess_exact(bgr)
        with pytest.raises(ValueError, match="more elongated"):
            preprocess_batch([bgr])
    for hw in ((1, MAX_ASPECT), (10 * MAX_ASPECT, 10)):
        assert preprocess_exact(np.zeros(hw + (3,), np.uint8))[0].shape == (512, 512, 3)
