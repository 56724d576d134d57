"""sensor_msgs Image / CompressedImage <-> BGR arrays: every encoding against OpenCV, every bad input,
and property tests (random messages give a valid image or ImageConversionError, nothing else)."""
import os
import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from acr_ros import image_conversion
from acr_ros.image_conversion import (
    DEFAULT_MAX_PIXELS, SUPPORTED_ENCODINGS, ImageConversionError, bgr_to_image, compressed_to_bgr, image_to_bgr,
    jpeg_is_truncated)
from acr_ros.media import SAMPLES_DIR

RNG = np.random.default_rng(0)
COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 255), (0, 0, 0), (40, 120, 200), (200, 30, 90)]


def make_image(encoding, width, height, data, step=None, bigendian=0):
    msg = Image()
    msg.encoding, msg.width, msg.height, msg.is_bigendian = encoding, width, height, bigendian
    data = np.ascontiguousarray(data)
    msg.step = step if step is not None else (data.nbytes // height if height else 0)
    msg.data = data.tobytes()
    return msg


def padded(rows: np.ndarray, pad: int) -> tuple[np.ndarray, int]:
    """(rows, row_bytes) uint8 -> the same rows with pad junk bytes after each, and the step."""
    rows = rows.reshape(rows.shape[0], -1)
    junk = RNG.integers(0, 256, (rows.shape[0], pad), dtype=np.uint8)
    return np.concatenate([rows, junk], axis=1), rows.shape[1] + pad


def colour_blocks(width=64, height=48, block=8) -> np.ndarray:
    """BGR image of flat colour blocks (chroma subsampling and JPEG keep their insides nearly exact)."""
    image = np.zeros((height, width, 3), np.uint8)
    for i, y in enumerate(range(0, height, block)):
        for j, x in enumerate(range(0, width, block)):
            image[y:y + block, x:x + block] = COLOURS[(i + j) % len(COLOURS)]
    return image


BGR = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)


# ---- 8-bit packed ------------------------------------------------------------------------------
PACKED8 = {
    "bgr8": lambda b: b,
    "8UC3": lambda b: b,
    "rgb8": lambda b: b[..., ::-1],
    "bgra8": lambda b: np.dstack([b, np.full(b.shape[:2], 7, np.uint8)]),
    "rgba8": lambda b: np.dstack([b[..., ::-1], np.full(b.shape[:2], 7, np.uint8)]),
}


@pytest.mark.parametrize("pad", [0, 1, 13])
@pytest.mark.parametrize("encoding", sorted(PACKED8))
def test_packed_8bit_colour(encoding, pad):
    raw, step = padded(PACKED8[encoding](BGR), pad)
    out = image_to_bgr(make_image(encoding, 40, 30, raw, step))
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, BGR)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(encoding, pad):
    grey = cv2.cvtColor(BGR, cv2.COLOR_BGR2GRAY)
    raw, step = padded(grey, pad)
    out = image_to_bgr(make_image(encoding, 40, 30, raw, step))
    np.testing.assert_array_equal(out, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))


def test_bgr8_without_padding_is_a_view_of_the_message():
    msg = make_image("bgr8", 40, 30, BGR)
    out = image_to_bgr(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    padded_msg = make_image("bgr8", 40, 30, *padded(BGR, 4))
    assert not np.shares_memory(image_to_bgr(padded_msg), np.frombuffer(padded_msg.data, np.uint8))


def test_encoding_names_are_case_insensitive():
    np.testing.assert_array_equal(image_to_bgr(make_image("BGR8", 40, 30, BGR)), BGR)


# ---- 16-bit ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("encoding", ["bgr16", "rgb16", "bgra16", "rgba16", "mono16"])
def test_16bit_scaled_to_8bit(encoding, bigendian):
    base = {"bgr16": BGR, "rgb16": BGR[..., ::-1],
            "bgra16": np.dstack([BGR, BGR[..., :1]]), "rgba16": np.dstack([BGR[..., ::-1], BGR[..., :1]]),
            "mono16": cv2.cvtColor(BGR, cv2.COLOR_BGR2GRAY)}[encoding]
    low = RNG.integers(0, 256, base.shape)
    samples = (base.astype(np.uint16) << 8) | low.astype(np.uint16)  # high byte = the 8-bit value
    raw = samples.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(30, -1)
    raw, step = padded(raw, 6)
    out = image_to_bgr(make_image(encoding, 40, 30, raw, step, bigendian))
    expected = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR) if encoding == "mono16" else BGR
    np.testing.assert_array_equal(out, expected)


def test_16bit_endianness_matters():
    samples = np.full((2, 2), 0x12FF, np.uint16)
    little = make_image("mono16", 2, 2, samples.astype("<u2"))
    assert image_to_bgr(little)[0, 0, 0] == 0x12
    little.is_bigendian = 1
    assert image_to_bgr(little)[0, 0, 0] == 0xFF


# ---- YUV 4:2:2 and NV12/NV21 -------------------------------------------------------------------
YUV422 = {"yuv422": cv2.COLOR_YUV2BGR_UYVY, "uyvy": cv2.COLOR_YUV2BGR_UYVY,
          "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2, "yuyv": cv2.COLOR_YUV2BGR_YUY2}


@pytest.mark.parametrize("pad", [0, 2, 5])
@pytest.mark.parametrize("encoding", sorted(YUV422))
def test_yuv422_against_opencv(encoding, pad):
    raw = RNG.integers(0, 256, (30, 40, 2), dtype=np.uint8)
    expected = cv2.cvtColor(raw, YUV422[encoding])
    rows, step = padded(raw, pad)
    np.testing.assert_array_equal(image_to_bgr(make_image(encoding, 40, 30, rows, step)), expected)


@pytest.mark.skipif(not hasattr(cv2, "COLOR_BGR2YUV_UYVY"), reason="OpenCV without a BGR->UYVY encoder")
@pytest.mark.parametrize("encoding", sorted(YUV422))
def test_yuv422_known_colours_round_trip(encoding):
    image = colour_blocks()
    to_yuv = cv2.COLOR_BGR2YUV_UYVY if YUV422[encoding] == cv2.COLOR_YUV2BGR_UYVY else cv2.COLOR_BGR2YUV_YUY2
    out = image_to_bgr(make_image(encoding, 64, 48, cv2.cvtColor(image, to_yuv)))
    assert np.abs(out.astype(int) - image).max() <= 3
    # UYVY read as YUYV (or the reverse) is far off: the two byte orders are not mixed up
    other = {"yuv422": "yuyv", "uyvy": "yuyv", "yuv422_yuy2": "uyvy", "yuyv": "uyvy"}[encoding]
    wrong = image_to_bgr(make_image(other, 64, 48, cv2.cvtColor(image, to_yuv)))
    assert np.abs(wrong.astype(int) - image).max() > 50


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding,code", [("nv12", cv2.COLOR_YUV2BGR_NV12), ("nv21", cv2.COLOR_YUV2BGR_NV21)])
def test_nv12_nv21_against_opencv(encoding, code, pad):
    raw = RNG.integers(0, 256, (45, 40), dtype=np.uint8)  # 30 rows of Y, 15 of interleaved chroma
    expected = cv2.cvtColor(raw, code)
    rows, step = padded(raw, pad)
    out = image_to_bgr(make_image(encoding, 40, 30, rows, step))
    assert out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, expected)


def test_nv12_known_colour():
    image = colour_blocks()
    i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)  # Y, then U plane, then V plane
    y, u, v = i420[:48], i420[48:60].reshape(24, 32), i420[60:72].reshape(24, 32)
    nv12 = np.concatenate([y, np.dstack([u, v]).reshape(24, 64)])
    out = image_to_bgr(make_image("nv12", 64, 48, nv12, step=64))
    assert np.abs(out.astype(int) - image).max() <= 3


# ---- Bayer -------------------------------------------------------------------------------------
def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer mosaic of bgr; pattern names the colours of the top-left 2x2, row by row (ROS)."""
    channel = {"r": 2, "g": 1, "b": 0}
    out = np.zeros(bgr.shape[:2], bgr.dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = bgr[dy::2, dx::2, channel[colour]]
    return out


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_uniform_colour(pattern, bits):
    colour = (30, 140, 220)  # B, G, R all different: a wrong pattern gives a wrong colour
    image = np.zeros((16, 20, 3), np.uint8)
    image[:] = colour
    raw = mosaic(image, pattern)
    if bits == 16:
        raw = (raw.astype("<u2") << 8) | 0x5A
    out = image_to_bgr(make_image(f"bayer_{pattern}{bits}", 20, 16, raw))
    assert out.shape == (16, 20, 3)
    assert np.abs(out[2:-2, 2:-2].astype(int) - colour).max() <= 1


# ---- bad inputs --------------------------------------------------------------------------------
def bad(encoding="rgb8", width=4, height=3, step=12, data=36, **kwargs):
    msg = Image(encoding=encoding, width=width, height=height, step=step, **kwargs)
    msg.data = bytes(data)
    return msg


@pytest.mark.parametrize("msg,words", [
    (bad(encoding="32FC1"), "32FC1"),
    (bad(encoding="16UC1"), "depth"),
    (bad(encoding="nv24"), "unsupported encoding 'nv24'"),
    (bad(encoding=""), "unsupported encoding"),
    (bad(width=0, step=0, data=0), "empty image (0x3)"),
    (bad(height=0, data=0), "empty image (4x0)"),
    (bad(step=11), "step 11 < 12"),
    (bad(step=0), "step 0"),
    (bad(data=35), "data length 35 < step*rows"),
    (bad(data=0), "data length 0"),
    (bad(encoding="yuyv", width=3, step=6, data=18), "odd width 3"),
    (bad(encoding="uyvy", width=5, step=10, data=30), "odd width 5"),
    (bad(encoding="nv12", width=4, height=3, step=4, data=24), "odd height 3"),
    (bad(encoding="nv21", width=4, height=4, step=4, data=23), "data length 23"),
    (bad(encoding="bayer_rggb8", width=1, height=4, step=1, data=4), "at least 2x2"),
    (bad(encoding="mono16", width=4, height=3, step=7, data=21), "step 7 < 8"),
    (bad(width=7680, height=4320, step=7680 * 3, data=0), "7680x4320"),
])
def test_bad_images_raise_with_reason(msg, words):
    with pytest.raises(ImageConversionError) as info:
        image_to_bgr(msg)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_max_pixels_is_a_parameter():
    msg = make_image("mono8", 40, 30, np.zeros((30, 40), np.uint8))
    with pytest.raises(ImageConversionError, match="max_pixels 1000"):
        image_to_bgr(msg, max_pixels=1000)
    assert image_to_bgr(msg, max_pixels=1200).shape == (30, 40, 3)
    assert image_to_bgr(msg, max_pixels=None).shape == (30, 40, 3)


def test_4k_is_accepted_by_default_and_8k_is_not():
    assert 3840 * 2160 <= DEFAULT_MAX_PIXELS and 4096 * 2160 <= DEFAULT_MAX_PIXELS < 7680 * 4320
    uhd = make_image("mono8", 3840, 2160, np.zeros((2160, 3840), np.uint8))
    assert image_to_bgr(uhd).shape == (2160, 3840, 3)


def test_data_given_as_a_list_or_garbage():
    msg = make_image("mono8", 2, 2, np.zeros((2, 2), np.uint8))
    msg._data = [1, 2, 3, 4]  # as a user might set it with field checks bypassed
    assert image_to_bgr(msg)[1, 1, 0] == 4
    msg._data = [1, 2, 3, 999]
    with pytest.raises(ImageConversionError, match="byte buffer"):
        image_to_bgr(msg)


def test_supported_encodings_listed():
    for name in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "uyvy", "yuv422_yuy2",
                 "yuyv", "nv12", "nv21", "bayer_rggb8", "bayer_grbg16", "8uc3"):
        assert name in SUPPORTED_ENCODINGS


# ---- cv_bridge fallback (cv_bridge itself is absent here: a stand-in) -----------------------------
class FakeBridge:
    def __init__(self, result=None, error=None):
        self.result, self.error, self.calls = result, error, []

    def imgmsg_to_cv2(self, msg, desired_encoding):
        self.calls.append((msg.encoding, desired_encoding))
        if self.error:
            raise self.error
        return self.result


def test_cv_bridge_only_for_encodings_not_handled_here(monkeypatch):
    bridge = FakeBridge(result=np.zeros((3, 4, 3), np.uint8))
    monkeypatch.setattr(image_conversion, "_cv_bridge", bridge)
    assert image_to_bgr(bad(encoding="nv24", step=4, data=18)).shape == (3, 4, 3)
    assert bridge.calls == [("nv24", "bgr8")]
    image_to_bgr(bad())  # rgb8: our own path
    assert len(bridge.calls) == 1
    with pytest.raises(ImageConversionError, match="depth"):  # 16UC1 is never sent to cv_bridge
        image_to_bgr(bad(encoding="16UC1", step=8, data=24))
    with pytest.raises(ImageConversionError, match="too large"):
        image_to_bgr(bad(encoding="nv24", width=7680, height=4320, step=7680))
    with pytest.raises(ImageConversionError, match="data length"):
        image_to_bgr(bad(encoding="nv24", step=4, data=5))


def test_cv_bridge_failures_become_conversion_errors(monkeypatch):
    monkeypatch.setattr(image_conversion, "_cv_bridge", FakeBridge(error=TypeError("no conversion")))
    with pytest.raises(ImageConversionError, match="no conversion"):
        image_to_bgr(bad(encoding="32FC3", step=48, data=144))
    monkeypatch.setattr(image_conversion, "_cv_bridge", FakeBridge(result=np.zeros((3, 4), np.float32)))
    with pytest.raises(ImageConversionError, match="cv_bridge gave"):
        image_to_bgr(bad(encoding="32FC3", step=48, data=144))


def test_without_cv_bridge_unknown_encodings_are_rejected(monkeypatch):
    monkeypatch.setattr(image_conversion, "_cv_bridge", False)
    with pytest.raises(ImageConversionError, match="unsupported encoding '64FC1'"):
        image_to_bgr(bad(encoding="64FC1"))


# ---- compressed ----------------------------------------------------------------------------------
def compressed(payload: bytes, fmt="jpeg") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = bytes(payload)
    return msg


def encode(ext, image, *params) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


IMAGE = colour_blocks(block=16)
JPEG = encode(".jpg", IMAGE, cv2.IMWRITE_JPEG_QUALITY, 95)
PNG = encode(".png", IMAGE)


@pytest.mark.parametrize("fmt", ["jpeg", "bgr8; jpeg compressed bgr8", "rgb8; jpeg compressed bgr8", "JPEG", ""])
def test_jpeg(fmt):
    out = compressed_to_bgr(compressed(JPEG, fmt))
    assert out.shape == IMAGE.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    centres = (slice(8, None, 16), slice(8, None, 16))  # inside the 16x16 blocks, away from edges
    assert np.abs(out[centres].astype(int) - IMAGE[centres]).max() <= 8


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgba8; png compressed bgr8"])
def test_png_is_lossless(fmt):
    np.testing.assert_array_equal(compressed_to_bgr(compressed(PNG, fmt)), IMAGE)


def test_compressed_rgb_pixels_are_swapped_to_bgr():
    rgb_png = encode(".png", IMAGE[..., ::-1])  # encoder given RGB, and the format says so
    np.testing.assert_array_equal(compressed_to_bgr(compressed(rgb_png, "rgb8; png compressed rgb8")), IMAGE)


def test_compressed_grey_alpha_and_16bit_png():
    grey = cv2.cvtColor(IMAGE, cv2.COLOR_BGR2GRAY)
    out = compressed_to_bgr(compressed(encode(".jpg", grey), "mono8; jpeg compressed mono8"))
    assert out.shape == (48, 64, 3)
    bgra = np.dstack([IMAGE, np.full((48, 64), 128, np.uint8)])
    np.testing.assert_array_equal(compressed_to_bgr(compressed(encode(".png", bgra), "png")), IMAGE)
    deep = IMAGE.astype(np.uint16) * 257
    np.testing.assert_array_equal(compressed_to_bgr(compressed(encode(".png", deep), "png")), IMAGE)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_exif_orientation_is_ignored():
    rotated = with_exif_orientation(JPEG, 6)  # "rotate 90 degrees": a decoder honouring it swaps w/h
    honoured = cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR)
    assert honoured.shape == (64, 48, 3)  # the test payload really carries the orientation
    assert compressed_to_bgr(compressed(rotated)).shape == (48, 64, 3)


def png_with_size(width, height) -> bytes:
    return PNG[:16] + struct.pack(">II", width, height) + PNG[24:]


def jpeg_with_size(width, height) -> bytes:
    data = bytearray(JPEG)
    pos = 2
    while data[pos + 1] not in image_conversion._SOF_MARKERS:
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("payload,fmt,words", [
    (b"", "jpeg", "empty compressed payload"),
    (b"\x00" * 100, "jpeg", "neither JPEG nor PNG"),
    (encode(".bmp", IMAGE), "bmp", "neither JPEG nor PNG"),
    (JPEG[:2], "jpeg", "neither JPEG nor PNG"),
    (JPEG[:20], "jpeg", "corrupt JPEG header"),
    (PNG[:20], "png", "corrupt PNG header"),
    (PNG, "16UC1; compressedDepth png", "compressedDepth"),
    (png_with_size(7680, 4320), "png", "PNG image too large: 7680x4320"),
    (jpeg_with_size(7680, 4320), "jpeg", "JPEG image too large: 7680x4320"),
    (jpeg_with_size(0, 48), "jpeg", "empty JPEG image (0x48)"),
    (png_with_size(64, 0), "png", "empty PNG image (64x0)"),
    (PNG[:200], "png", "corrupt PNG payload"),
    (png_with_size(65, 48), "png", "corrupt PNG payload"),
])
def test_bad_compressed_raise_with_reason(payload, fmt, words):
    with pytest.raises(ImageConversionError) as info:
        compressed_to_bgr(compressed(payload, fmt))
    assert words in str(info.value)


def test_compressed_max_pixels_checked_before_decoding(monkeypatch):
    def no_decode(*args):
        raise AssertionError("decoded an image over max_pixels")

    monkeypatch.setattr(image_conversion.cv2, "imdecode", no_decode)
    for payload in (JPEG, PNG):
        with pytest.raises(ImageConversionError, match="max_pixels 100"):
            compressed_to_bgr(compressed(payload), max_pixels=100)


PHOTO = (SAMPLES_DIR / "magic.jpg").read_bytes()


def test_a_truncated_jpeg_is_refused_before_decoding(tmp_path, monkeypatch):
    cut = PHOTO[:1000]  # the header and the start of the image data
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    assert cv2.imread(str(path)) is not None  # what OpenCV's file reader makes of it: a grey image

    def no_decode(*args):
        raise AssertionError("decoded a truncated JPEG")

    monkeypatch.setattr(image_conversion.cv2, "imdecode", no_decode)
    with pytest.raises(ImageConversionError, match="^truncated JPEG"):
        compressed_to_bgr(compressed(cut))
    scan = PHOTO.index(b"\xff\xda")
    for end in (scan + 2, scan + 100, len(PHOTO) // 2, len(PHOTO) - 2, len(PHOTO) - 1):
        assert jpeg_is_truncated(PHOTO[:end]), end
    progressive = encode(".jpg", cv2.imread(str(SAMPLES_DIR / "magic.jpg")), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert not jpeg_is_truncated(progressive)
    assert jpeg_is_truncated(progressive[:len(progressive) * 9 // 10])  # between or within later scans


def test_a_complete_jpeg_with_bytes_after_its_end_is_accepted():
    for tail in (b"", bytes(64), b"\xff" * 3, b"trailer data: a camera's, or a motion photo's video"):
        assert not jpeg_is_truncated(PHOTO + tail)
        assert compressed_to_bgr(compressed(PHOTO + tail)).shape == (540, 960, 3)
    assert not jpeg_is_truncated(PNG) and not jpeg_is_truncated(b"")


def test_offline_image_files_skip_a_truncated_jpeg(tmp_path):
    from acr_ros.media import FolderSource, ImageFileSource

    (tmp_path / "1_cut.jpg").write_bytes(PHOTO[:1000])
    (tmp_path / "2_whole.jpg").write_bytes(PHOTO)
    source = ImageFileSource(tmp_path / "1_cut.jpg")
    assert list(source) == [] and source.unreadable == [tmp_path / "1_cut.jpg"]
    folder = FolderSource(tmp_path)
    assert [frame.name for frame in folder] == ["2_whole"] and folder.unreadable == [tmp_path / "1_cut.jpg"]


# ---- bgr_to_image ------------------------------------------------------------------------------
def test_bgr_to_image_round_trip():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    view = np.asfortranarray(BGR)  # not C-contiguous: copied in order
    msg = bgr_to_image(view, header)
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("bgr8", 40, 30, 120, 0)
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 34
    assert msg.header is not header and msg.header.stamp is not header.stamp  # a copy, not the caller's
    assert len(msg.data) == 30 * 40 * 3
    np.testing.assert_array_equal(image_to_bgr(msg), BGR)


@pytest.mark.parametrize("array", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((4, 4, 3), np.float32)])
def test_bgr_to_image_rejects_other_arrays(array):
    with pytest.raises(ValueError):
        bgr_to_image(array, Header())


def test_bgr_to_image_serialises():
    from rclpy.serialization import deserialize_message, serialize_message

    msg = deserialize_message(serialize_message(bgr_to_image(BGR, Header(frame_id="f"))), Image)
    np.testing.assert_array_equal(image_to_bgr(msg), BGR)


# ---- properties ----------------------------------------------------------------------------------
ENCODINGS = list(SUPPORTED_ENCODINGS) + ["16UC1", "32FC1", "nv24", "BGR8", "", "rgb"]
# More examples for a thorough run: ACR_ROS_HYPOTHESIS_EXAMPLES=5000. No example database in the tree.
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("ACR_ROS_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
                             database=None, suppress_health_check=[HealthCheck.too_slow])


def assert_valid_or_error(function, msg, **kwargs):
    try:
        out = function(msg, **kwargs)
    except ImageConversionError as error:
        assert str(error)
        return None
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.flags.c_contiguous
    return out


@PROPERTY_SETTINGS
@given(encoding=st.sampled_from(ENCODINGS), width=st.integers(0, 24), height=st.integers(0, 24),
       step_delta=st.one_of(st.just(0), st.integers(0, 16), st.integers(-8, 16)),
       extra=st.one_of(st.just(0), st.integers(0, 64), st.integers(-64, 64)), bigendian=st.booleans(),
       max_pixels=st.sampled_from([None, 0, 50, DEFAULT_MAX_PIXELS]), seed=st.integers(0, 2 ** 16))
def test_random_raw_images(encoding, width, height, step_delta, extra, bigendian, max_pixels, seed):
    spec = image_conversion._ENCODINGS.get(encoding.lower(), ("packed", 3, 1, None))
    row = width * spec[1] * spec[2]
    step = max(0, row + step_delta)
    rows = height * 3 // 2 if spec[0] == "nv" else height
    size = max(0, step * rows + extra)
    msg = Image(encoding=encoding, width=width, height=height, step=step, is_bigendian=int(bigendian))
    msg.data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    out = assert_valid_or_error(image_to_bgr, msg, max_pixels=max_pixels)
    if out is not None:
        assert out.shape == (height, width, 3)


@PROPERTY_SETTINGS
@given(width=st.integers(0, 2 ** 32 - 1), height=st.integers(0, 2 ** 32 - 1), step=st.integers(0, 2 ** 32 - 1),
       encoding=st.sampled_from(ENCODINGS), data=st.binary(max_size=64))
def test_random_header_fields(width, height, step, encoding, data):
    msg = Image(encoding=encoding, width=width, height=height, step=step)
    msg.data = data
    out = assert_valid_or_error(image_to_bgr, msg)
    if out is not None:
        assert out.shape == (height, width, 3)


COMPRESSED_SEEDS = [JPEG, PNG, encode(".jpg", IMAGE, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
                    encode(".png", cv2.cvtColor(IMAGE, cv2.COLOR_BGR2GRAY))]


@PROPERTY_SETTINGS
@given(source=st.sampled_from(COMPRESSED_SEEDS), cut=st.one_of(st.just(0), st.integers(0, 50), st.integers(0, 4000)),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4),
       fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed rgb8", ""]),
       max_pixels=st.sampled_from([None, 1000, DEFAULT_MAX_PIXELS]))
def test_truncated_and_corrupted_compressed(source, cut, flips, fmt, max_pixels):
    payload = bytearray(source[:max(0, len(source) - cut)])
    for pos, value in flips:
        if pos < len(payload):
            payload[pos] = value
    out = assert_valid_or_error(compressed_to_bgr, compressed(bytes(payload), fmt), max_pixels=max_pixels)
    if out is not None and max_pixels:
        assert out.shape[0] * out.shape[1] <= max_pixels


@PROPERTY_SETTINGS
@given(prefix=st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xc0\x00\x11\x08"]),
       body=st.binary(max_size=300))
def test_random_compressed_bytes(prefix, body):
    assert_valid_or_error(compressed_to_bgr, compressed(prefix + body))
