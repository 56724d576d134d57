"""Input media for the offline CLI: an image, a folder of images, a video file or a webcam.
(Recordings, rosbag2 bags and .mcap files, are read by acr_ros.recordings; is_recording tells them apart.)

    with open_media("clip.mp4") as source:
        for frame in source:        # Frame(image BGR uint8, index, timestamp s, name)
            ...

* image: one frame, timestamp 0.
* folder: its images sorted by name (natural order: 2.jpg before 10.jpg), one frame each,
  timestamps index / fps (a folder is treated as a sequence, like the seed demo).
* video: decoded frame by frame with OpenCV (never split into image files), timestamps from the
  container (CAP_PROP_POS_MSEC), falling back to index / fps.
* webcam (an integer id): a thread grabs frames continuously and numbers them; the consumer takes
  the newest frame it has not had yet, so no frame is processed twice and a slow consumer drops
  frames rather than lagging. Timestamps are seconds since the source opened. Runs until the
  camera fails, max_frames, or Ctrl-C in the consumer.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from acr_ros.image_conversion import jpeg_is_truncated

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
RECORDING_SUFFIXES = (".mcap", ".db3")  # rosbag2 storage files (acr_ros.recordings reads them)
SAMPLES_DIR = Path(__file__).resolve().parent / "data" / "samples"  # the bundled sample media


def sample_inputs() -> list[Path]:
    """The bundled sample images and videos, sorted by name."""
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)


@dataclass
class Frame:
    image: np.ndarray   # BGR uint8 (H, W, 3)
    index: int          # position in the source, from 0 (webcam: the grab counter)
    timestamp: float    # seconds
    name: str           # image file stem, or "<source>_<index:06d>"


def natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _read_image(path: Path) -> Optional[np.ndarray]:
    """cv2.imread, and None for a truncated JPEG too: imread decodes one, grey where data is missing."""
    try:
        if jpeg_is_truncated(path.read_bytes()):
            return None
    except OSError:
        return None
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


class MediaSource:
    """Base: iterate for Frames; kind, name, fps and length (None when unknown). Image files that
    cannot be decoded are skipped and listed in ``unreadable``."""

    kind = ""

    def __init__(self, name: str, fps: Optional[float], length: Optional[int]):
        self.name, self.fps, self.length = name, fps, length
        self.unreadable: list[Path] = []

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ImageFileSource(MediaSource):
    kind = "image"

    def __init__(self, path: Path):
        super().__init__(path.stem, None, 1)
        self.path = path

    def __iter__(self):
        image = _read_image(self.path)
        if image is None:
            self.unreadable.append(self.path)
            return
        yield Frame(image, 0, 0.0, self.path.stem)


class FolderSource(MediaSource):
    kind = "folder"

    def __init__(self, path: Path, fps: float = 30.0):
        self.paths = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=natural_key)
        if not self.paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
        super().__init__(path.resolve().name or "folder", fps, len(self.paths))
        self.path = path

    def __iter__(self):
        for i, p in enumerate(self.paths):
            image = _read_image(p)
            if image is None:
                self.unreadable.append(p)
                continue
            yield Frame(image, i, i / self.fps, p.stem)


class VideoSource(MediaSource):
    kind = "video"

    def __init__(self, path: Path):
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise ValueError(f"cannot open the video {path}")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        super().__init__(path.stem, fps if fps and fps > 0 else 30.0, count if count > 0 else None)
        self.path = path

    def __iter__(self):
        index, last = 0, -1.0
        while True:
            ok, image = self.capture.read()
            if not ok:
                break
            t = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if not np.isfinite(t) or t <= last:
                t = index / self.fps
            last = t
            yield Frame(_to_bgr(image), index, t, f"{self.name}_{index:06d}")
            index += 1

    def close(self):
        self.capture.release()


class WebcamSource(MediaSource):
    """Frames of a camera grabbed in a background thread (see the module documentation)."""

    kind = "webcam"

    def __init__(self, device: int, max_frames: Optional[int] = None, timeout: float = 5.0,
                 capture: Optional[cv2.VideoCapture] = None):
        self.capture = capture if capture is not None else cv2.VideoCapture(device)
        if not self.capture.isOpened():
            raise ValueError(f"cannot open the webcam {device}")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        super().__init__(f"webcam{device}", fps if fps and fps > 0 else 30.0, max_frames)
        self.max_frames, self.timeout = max_frames, timeout
        self._cond = threading.Condition()
        self._frame: Optional[np.ndarray] = None
        self._count = 0          # frames grabbed so far
        self._stamp = 0.0
        self._failed = False
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._grab, name=f"webcam{device}", daemon=True)
        self._thread.start()

    def _grab(self):
        while not self._stop.is_set():
            ok, image = self.capture.read()
            stamp = time.monotonic() - self._t0
            with self._cond:
                if not ok:
                    self._failed = True
                    self._cond.notify_all()
                    return
                self._frame, self._stamp = image, stamp
                self._count += 1
                self._cond.notify_all()

    def __iter__(self):
        seen, delivered = 0, 0
        try:
            while self.max_frames is None or delivered < self.max_frames:
                with self._cond:
                    if not self._cond.wait_for(lambda: self._count > seen or self._failed or self._stop.is_set(),
                                               timeout=self.timeout):
                        break  # no new frame in time
                    if self._count <= seen:
                        break  # failed or stopped
                    seen, image, stamp = self._count, self._frame, self._stamp
                yield Frame(_to_bgr(image), seen - 1, stamp, f"{self.name}_{seen - 1:06d}")
                delivered += 1
        finally:
            self.close()

    def close(self):
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self.capture.release()


def is_recording(spec) -> bool:
    """A rosbag2 bag directory (metadata.yaml, or storage files left by a recorder that was killed)
    or a single .mcap / .db3 file: input for acr_ros.recordings, not for open_media."""
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(p.suffix in RECORDING_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in RECORDING_SUFFIXES


def open_media(spec, folder_fps: float = 30.0, max_frames: Optional[int] = None) -> MediaSource:
    """A MediaSource for an image path, a folder, a video path or a webcam id (int or digits)."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return WebcamSource(int(spec), max_frames=max_frames)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, folder_fps)
    if not path.exists():
        raise FileNotFoundError(f"no such input: {path}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageFileSource(path)
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path)
    # Unknown suffix: try as an image, then as a video.
    if cv2.haveImageReader(str(path)):
        return ImageFileSource(path)
    return VideoSource(path)
