"""sensor_msgs Image / CompressedImage <-> BGR uint8 numpy arrays, without cv_bridge.

Every input is validated before its pixel data is touched; anything unusable raises
ImageConversionError (a ValueError) whose message is a short, specific reason.

One code path per encoding (table below). cv_bridge, where it is importable, is used only for
encodings this module does not handle itself; it adds nothing for the ones it does, and it copies.

Raw encodings (sensor_msgs/image_encodings names; matched case-insensitively):

=============================  ==============================================================
rgb8, bgr8, rgba8, bgra8       8-bit colour; alpha dropped. bgr8 with step == 3*width is
                               returned as a zero-copy view of msg.data.
8UC3                           treated as bgr8 (what OpenCV and cv_bridge produce it from)
mono8, 8UC1                    grey, replicated to three channels
rgb16, bgr16, rgba16, bgra16,  16-bit: scaled linearly to 8 bits (the high byte, i.e. value/256,
mono16                         like cv_bridge's 255/65535 up to rounding); is_bigendian respected.
                               No auto-gain: a 10- or 12-bit sensor packed in 16 bits looks dark.
yuv422, uyvy                   UYVY (U0 Y0 V0 Y1), BT.601 as in OpenCV; width must be even
yuv422_yuy2, yuyv              YUYV (Y0 U0 Y1 V0); width must be even
nv12, nv21                     Y plane then interleaved UV (nv12) / VU (nv21) plane of height/2
                               rows; ``step`` is the row stride of both planes, data must hold
                               step * height * 3 / 2 bytes; width and height must be even
bayer_{rggb,bggr,gbrg,grbg}8   demosaiced with OpenCV (bilinear); width and height >= 2
bayer_{rggb,bggr,gbrg,grbg}16  scaled to 8 bits as above, then demosaiced
=============================  ==============================================================

Rejected as camera images: 16UC1 / 32FC1 and other depth or generic formats (a depth map in
millimetres is not an image a hand model can use; an intensity camera should publish mono16),
unless cv_bridge is importable and can convert them to bgr8. Depth images have their own
conversion, depth_to_metres (16UC1 / mono16 / 32FC1 and image_transport's compressedDepth).
"""
from __future__ import annotations

import array
from typing import Optional

import cv2
import numpy as np

# 4096 x 2304: every 4K format (UHD 3840x2160, DCI 4096x2160) passes, 8K (7680x4320 = 33 Mpx) does not.
DEFAULT_MAX_PIXELS = 4096 * 2304


class ImageConversionError(ValueError):
    """An image message that cannot be turned into a BGR array; ``str(error)`` is the reason."""


# encoding -> (layout, channels, bytes per sample, OpenCV conversion to BGR or None)
# layouts: "packed" (H, W, C) samples, "yuv422" (H, W, 2) bytes, "nv" (3H/2, W) bytes, "bayer" (H, W)
_ENCODINGS: dict[str, tuple[str, int, int, Optional[int]]] = {
    "bgr8": ("packed", 3, 1, None),
    "8uc3": ("packed", 3, 1, None),
    "rgb8": ("packed", 3, 1, cv2.COLOR_RGB2BGR),
    "bgra8": ("packed", 4, 1, cv2.COLOR_BGRA2BGR),
    "rgba8": ("packed", 4, 1, cv2.COLOR_RGBA2BGR),
    "mono8": ("packed", 1, 1, cv2.COLOR_GRAY2BGR),
    "8uc1": ("packed", 1, 1, cv2.COLOR_GRAY2BGR),
    "bgr16": ("packed", 3, 2, None),
    "rgb16": ("packed", 3, 2, cv2.COLOR_RGB2BGR),
    "bgra16": ("packed", 4, 2, cv2.COLOR_BGRA2BGR),
    "rgba16": ("packed", 4, 2, cv2.COLOR_RGBA2BGR),
    "mono16": ("packed", 1, 2, cv2.COLOR_GRAY2BGR),
    "yuv422": ("yuv422", 2, 1, cv2.COLOR_YUV2BGR_UYVY),
    "uyvy": ("yuv422", 2, 1, cv2.COLOR_YUV2BGR_UYVY),
    "yuv422_yuy2": ("yuv422", 2, 1, cv2.COLOR_YUV2BGR_YUY2),
    "yuyv": ("yuv422", 2, 1, cv2.COLOR_YUV2BGR_YUY2),
    "nv12": ("nv", 1, 1, cv2.COLOR_YUV2BGR_NV12),
    "nv21": ("nv", 1, 1, cv2.COLOR_YUV2BGR_NV21),
}
# ROS names the Bayer pattern by its first two rows; OpenCV by the second row's middle pixels.
_BAYER = {"rggb": cv2.COLOR_BayerBG2BGR, "bggr": cv2.COLOR_BayerRG2BGR,
          "gbrg": cv2.COLOR_BayerGR2BGR, "grbg": cv2.COLOR_BayerGB2BGR}
for _pattern, _code in _BAYER.items():
    _ENCODINGS[f"bayer_{_pattern}8"] = ("bayer", 1, 1, _code)
    _ENCODINGS[f"bayer_{_pattern}16"] = ("bayer", 1, 2, _code)

_REJECTED = {
    "16uc1": "16UC1 is a depth/raw format, not a camera image (publish mono16 for 16-bit intensity)",
    "32fc1": "32FC1 is a depth/float format, not a camera image",
}

SUPPORTED_ENCODINGS = tuple(sorted(_ENCODINGS))

_cv_bridge = None  # CvBridge instance, False when not importable; see _bridge()


def _bridge():
    """A CvBridge when cv_bridge is importable (a real ROS install), else None."""
    global _cv_bridge
    if _cv_bridge is None:
        try:
            from cv_bridge import CvBridge

            _cv_bridge = CvBridge()
        except Exception:  # absent, or a broken port (the PyPI one fails on numpy 2)
            _cv_bridge = False
    return _cv_bridge or None


def _byte_buffer(data) -> np.ndarray:
    """msg.data as a flat uint8 array: a zero-copy view of array.array / bytes, else a copy."""
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        try:
            buf = np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise ImageConversionError("data is not a byte buffer") from None
    return buf


def _check_size(width: int, height: int, max_pixels: Optional[int], what: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"empty {what} ({width}x{height})")
    if max_pixels and width * height > max_pixels:
        raise ImageConversionError(
            f"{what} too large: {width}x{height} = {width * height} px > max_pixels {max_pixels}")


def _cv_call(function, *args):
    try:
        return function(*args)
    except cv2.error as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else "error"
        raise ImageConversionError(f"OpenCV conversion failed: {message}") from None


def image_to_bgr(msg, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs/Image as a contiguous (H, W, 3) uint8 BGR array.

    max_pixels: largest width*height accepted (None or 0: no limit). The result may be a view of
    msg.data (bgr8/8UC3 without row padding); it is never a view of anything else.
    Raises ImageConversionError for anything that cannot be converted, before reading pixels.
    """
    encoding = str(msg.encoding).strip()
    key = encoding.lower()
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    spec = _ENCODINGS.get(key)
    if spec is None:
        bridge = _bridge()
        if bridge is None or key in _REJECTED:
            reason = _REJECTED.get(key, f"unsupported encoding '{encoding}'")
            raise ImageConversionError(reason)
        return _via_cv_bridge(bridge, msg, encoding, width, height, step, max_pixels)

    layout, channels, sample_bytes, code = spec
    _check_size(width, height, max_pixels)
    if layout in ("yuv422", "nv") and width % 2:
        raise ImageConversionError(f"odd width {width} for {encoding} (2 px share chroma)")
    if layout == "nv" and height % 2:
        raise ImageConversionError(f"odd height {height} for {encoding} (2 rows share chroma)")
    if layout == "bayer" and (width < 2 or height < 2):
        raise ImageConversionError(f"{encoding} needs at least 2x2 px, got {width}x{height}")
    row_bytes = width * channels * sample_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} < {row_bytes} bytes of a {width} px {encoding} row")
    rows = height * 3 // 2 if layout == "nv" else height
    buf = _byte_buffer(msg.data)
    if buf.size < step * rows:
        raise ImageConversionError(
            f"data length {buf.size} < step*rows = {step}*{rows} = {step * rows}")

    # (rows, row_bytes) view honouring the row padding; no copy.
    plane = buf[: step * rows].reshape(rows, step)[:, :row_bytes]
    if sample_bytes == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        plane = (plane.view(dtype) >> 8).astype(np.uint8)  # 16 -> 8 bits: the high byte
        width_samples = width * channels
    else:
        width_samples = row_bytes
    if layout == "packed":
        image = plane.reshape(height, width, channels) if channels > 1 else plane.reshape(height, width_samples)
        if code is None:
            return np.ascontiguousarray(image)
    elif layout == "yuv422":
        image = np.ascontiguousarray(plane).reshape(height, width, 2)
    else:  # "nv", "bayer": single-channel planes
        image = np.ascontiguousarray(plane)
    bgr = _cv_call(cv2.cvtColor, image, code)
    return np.ascontiguousarray(bgr)


def _via_cv_bridge(bridge, msg, encoding, width, height, step, max_pixels) -> np.ndarray:
    _check_size(width, height, max_pixels)
    size = len(msg.data)
    if step <= 0 or size < step * height:
        raise ImageConversionError(f"data length {size} < step*height = {step}*{height}")
    try:
        bgr = bridge.imgmsg_to_cv2(msg, desired_encoding="bgr8")
    except Exception as error:  # cv_bridge raises CvBridgeError, TypeError, cv2.error...
        raise ImageConversionError(f"unsupported encoding '{encoding}' ({error})") from None
    bgr = np.asarray(bgr)
    if bgr.dtype != np.uint8 or bgr.shape != (height, width, 3):
        raise ImageConversionError(f"cv_bridge gave {bgr.dtype} {bgr.shape} for '{encoding}'")
    return np.ascontiguousarray(bgr)


# ---- compressed ------------------------------------------------------------------------------
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_segment(data: bytes, wanted: frozenset) -> Optional[int]:
    """Position of the first marker segment of a kind in ``wanted`` before the image data (the
    first start of scan); None if the header is corrupt or has none."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in wanted:
            return pos
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no payload
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return None
        pos += 2 + length
    return None


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from a JPEG's start-of-frame header; None if the header is corrupt."""
    pos = _jpeg_segment(data, _SOF_MARKERS)
    if pos is None or pos + 9 > len(data) or ((data[pos + 2] << 8) | data[pos + 3]) < 7:
        return None
    height = (data[pos + 5] << 8) | data[pos + 6]
    width = (data[pos + 7] << 8) | data[pos + 8]
    return width, height


def jpeg_is_truncated(data: bytes) -> bool:
    """Whether data is a JPEG that stops before its end-of-image marker (FF D9). libjpeg decodes
    one anyway (cv2.imread does), grey where data is missing, and only warns on stderr.

    The marker is looked for after the first start of scan: the entropy-coded data cannot contain
    FF D9 (an FF there is followed by 00 or a restart marker), and an EXIF thumbnail's own marker
    comes before it. Whatever follows the marker (padding, a camera's trailer, a motion photo's
    video) is allowed.
    """
    if not data.startswith(_JPEG_MAGIC):
        return False
    scan = _jpeg_segment(data, frozenset({0xDA}))
    return scan is None or data.find(b"\xff\xd9", scan) < 0


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from a PNG's IHDR chunk; None if it is missing."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def compressed_to_bgr(msg, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG or PNG) as a contiguous (H, W, 3) uint8 BGR array.

    The codec is recognised from the payload's signature; ``format`` (e.g. "jpeg",
    "rgb8; jpeg compressed bgr8") is only used to reject compressedDepth and to swap channels when
    it says the compressed pixels are RGB ("... compressed rgb8"). The size in the JPEG/PNG header
    is checked against max_pixels before decoding; EXIF orientation is ignored (pixels stay as
    sent, so keypoints line up with the camera). Alpha is dropped, 16-bit PNG scaled to 8 bits.
    """
    fmt = str(msg.format).strip().lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressedDepth is a depth format, not a camera image ('{msg.format}')")
    buf = _byte_buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError("empty compressed payload")
    head = buf[:16].tobytes()
    if head.startswith(_JPEG_MAGIC):
        data = buf.tobytes()
        codec, size, truncated = "JPEG", _jpeg_size(data), jpeg_is_truncated(data)
    elif head.startswith(_PNG_MAGIC):
        codec, size, truncated = "PNG", _png_size(buf[:24].tobytes()), False  # libpng fails on a truncated one
    else:
        raise ImageConversionError(f"payload is neither JPEG nor PNG (format '{msg.format}')")
    if size is None:
        raise ImageConversionError(f"corrupt {codec} header")
    if truncated:
        raise ImageConversionError("truncated JPEG (no end-of-image marker after the image data)")
    width, height = size
    _check_size(width, height, max_pixels, f"{codec} image")
    bgr = _cv_call(cv2.imdecode, buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise ImageConversionError(f"corrupt {codec} payload")
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape != (height, width, 3):
        raise ImageConversionError(
            f"{codec} decoded to {bgr.dtype} {bgr.shape}, header says {width}x{height}")
    target = fmt.rsplit("compressed", 1)[1].split() if "compressed" in fmt else []
    if target and target[0] in ("rgb8", "rgba8", "rgb16", "rgba16"):
        bgr = bgr[:, :, ::-1]
    return np.ascontiguousarray(bgr)


# ---- depth --------------------------------------------------------------------------------------
def depth_to_metres(msg, millimetres_per_unit: float = 1.0,
                    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A depth image (sensor_msgs/Image 16UC1, mono16 or 32FC1, or a CompressedImage in the
    compressedDepth format of image_transport) as (H, W) float32 metres, NaN where unmeasured.

    16-bit values are in units of ``millimetres_per_unit`` mm (1.0: millimetres, the usual scale);
    32FC1 is metres. See acr_ros.acr.depth.depth_image_to_metres for what counts as no measurement.
    """
    from acr_ros.acr.depth import depth_image_to_metres

    if hasattr(msg, "format"):  # CompressedImage
        raw, encoding = _compressed_depth(msg, max_pixels)
    else:
        encoding = str(msg.encoding).strip()
        width, height, step = int(msg.width), int(msg.height), int(msg.step)
        _check_size(width, height, max_pixels, "depth image")
        sample = {"16uc1": "u2", "mono16": "u2", "32fc1": "f4"}.get(encoding.lower())
        if sample is None:
            raise ImageConversionError(f"depth encoding '{encoding}' is not supported: expected 16UC1 "
                                       "(millimetres) or 32FC1 (metres)")
        size = int(sample[1])
        if step < width * size:
            raise ImageConversionError(f"step {step} is less than width {width} x {size} bytes")
        buf = _byte_buffer(msg.data)
        if buf.size < step * height:
            raise ImageConversionError(f"data has {buf.size} bytes, expected step x height = {step * height}")
        dtype = np.dtype(sample).newbyteorder(">" if msg.is_bigendian else "<")
        rows = buf[:step * height].reshape(height, step)[:, :width * size]
        raw = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        encoding = "32FC1" if sample == "f4" else "16UC1"
    try:
        return depth_image_to_metres(raw, encoding, millimetres_per_unit)
    except ValueError as error:
        raise ImageConversionError(str(error)) from None


def _compressed_depth(msg, max_pixels: Optional[int]) -> tuple[np.ndarray, str]:
    """compressedDepth: a 12-byte header (int32 format, float32 depthQuantA, depthQuantB) then a
    16-bit PNG: millimetres for 16UC1, quantised inverse depth for 32FC1 (image_transport's
    compressed_depth_image_transport)."""
    fmt = str(msg.format).strip().lower()
    buf = _byte_buffer(msg.data)
    if "compresseddepth" not in fmt:
        raise ImageConversionError(f"a compressed depth image needs the compressedDepth format, got '{msg.format}'")
    if buf.size < 12 + 24:
        raise ImageConversionError("compressedDepth payload too short")
    quant_a, quant_b = np.frombuffer(buf[4:12].tobytes(), dtype="<f4")
    png = buf[12:]
    size = _png_size(png[:24].tobytes()) if png[:8].tobytes() == _PNG_MAGIC else None
    if size is None:
        raise ImageConversionError("compressedDepth payload is not a PNG (RVL is not supported)")
    _check_size(*size, max_pixels, "depth image")
    values = _cv_call(cv2.imdecode, png, cv2.IMREAD_UNCHANGED)
    if values is None or values.dtype != np.uint16 or values.ndim != 2:
        raise ImageConversionError("corrupt compressedDepth PNG")
    if fmt.startswith("32fc1"):
        with np.errstate(divide="ignore"):
            metres = np.where(values > 0, quant_a / (values.astype(np.float32) - quant_b), np.nan)
        return metres.astype(np.float32), "32FC1"
    return values, "16UC1"


# ---- output ------------------------------------------------------------------------------------
def bgr_to_image(bgr: np.ndarray, header):
    """A (H, W, 3) uint8 BGR array as a bgr8 sensor_msgs/Image with a copy of the given header
    (one copy of the pixels)."""
    from sensor_msgs.msg import Image

    from acr_ros.ros_messages import copy_header

    bgr = np.asarray(bgr)
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"bgr_to_image needs an (H, W, 3) uint8 array, got {bgr.dtype} {bgr.shape}")
    bgr = np.ascontiguousarray(bgr)
    msg = Image()
    msg.header = copy_header(header)  # never the caller's object (e.g. the input image's header)
    msg.height, msg.width = int(bgr.shape[0]), int(bgr.shape[1])
    msg.encoding = "bgr8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    data = array.array("B")
    data.frombytes(memoryview(bgr).cast("B"))  # one memcpy; a memoryview given to the setter is slow
    msg.data = data
    return msg
