#!/usr/bin/env python3
"""Makes the small sample media committed in acr_ros/data/samples from the full-size originals.

    python3 scripts/make_samples.py [MEDIA_DIR]     # default: ../shared/media next to the repo

MEDIA_DIR holds magic.jpg (1920x1080, one hand), magic_flip.jpg (its mirror image), portrait.jpg
and two_hands.jpg. Written (JPEG quality 85, at most 960 px wide, about 0.5 MB in all):
    magic.jpg, magic_flip.jpg, portrait.jpg, two_hands.jpg   the photos, downscaled
    magic_clip.mp4    2.5 s at 12 fps, 640x360, mp4v: a slow pan and zoom over magic.jpg, then
                      the same over its mirror image (so the hand changes side half-way)
Deterministic: running it again gives the same images (the mp4 encoder may differ in bytes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "acr_ros" / "data" / "samples"
MAX_WIDTH = 960
JPEG_QUALITY = 85
CLIP_SIZE = (640, 360)
CLIP_FPS = 12
CLIP_FRAMES_PER_IMAGE = 15


def downscale(image: np.ndarray, max_width: int = MAX_WIDTH) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= max_width:
        return image
    return cv2.resize(image, (max_width, round(h * max_width / w)), interpolation=cv2.INTER_AREA)


def pan_zoom(image: np.ndarray, n: int, size=CLIP_SIZE) -> list[np.ndarray]:
    """n frames of a smooth pan and zoom (crop 100% -> 80% of the image, drifting right)."""
    h, w = image.shape[:2]
    frames = []
    for i in range(n):
        s = i / max(n - 1, 1)
        ease = 0.5 - 0.5 * np.cos(np.pi * s)
        zoom = 1.0 - 0.2 * ease
        cw, ch = w * zoom, h * zoom
        x0 = (w - cw) * (0.3 + 0.4 * ease)
        y0 = (h - ch) * 0.5
        # One affine warp per frame: crop and resize at once.
        sx, sy = size[0] / cw, size[1] / ch
        m = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])
        frames.append(cv2.warpAffine(image, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
    return frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("media_dir", nargs="?", type=Path, default=REPO.parent / "shared" / "media",
                        help="folder with magic.jpg, magic_flip.jpg, portrait.jpg, two_hands.jpg")
    parser.add_argument("-o", "--output-dir", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    images = {}
    for name in ("magic.jpg", "magic_flip.jpg", "portrait.jpg", "two_hands.jpg"):
        image = cv2.imread(str(args.media_dir / name))
        if image is None:
            print(f"cannot read {args.media_dir / name}", file=sys.stderr)
            return 1
        images[name] = image
        small = downscale(image)
        cv2.imwrite(str(args.output_dir / name), small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])

    clip = args.output_dir / "magic_clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, CLIP_SIZE)
    if not writer.isOpened():
        print(f"cannot write {clip} (no mp4v encoder in this OpenCV)", file=sys.stderr)
        return 1
    for name in ("magic.jpg", "magic_flip.jpg"):
        for frame in pan_zoom(images[name], CLIP_FRAMES_PER_IMAGE):
            writer.write(frame)
    writer.release()

    total = 0
    for path in sorted(args.output_dir.iterdir()):
        if path.suffix in (".jpg", ".mp4"):
            total += path.stat().st_size
            print(f"{path.name:20s} {path.stat().st_size / 1024:7.1f} KiB")
    print(f"{'total':20s} {total / 1024:7.1f} KiB -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
