"""How far bf16 and fp16 move the results from fp32, on calibrated and on plain random weights.

    python benchmarks/half_precision.py [--precision bf16 fp16] [--device cpu] [--threads N]

Two weight sets in the official layout, neither a hand model (outputs are random poses):

- calibrated: test/support/calibrated_weights.py, BatchNorm statistics measured on the bundled
  photos layer by layer and the output layers scaled to real parameter ranges, so that activations
  behave like a trained network's (the stand-in for the real checkpoint);
- random: test/support/random_weights.py, what the rest of the suite uses (rounding is amplified).

Images: the bundled photos at their own sizes (what ``precision: auto`` measures on), and the same
photos resized to 1920x1080 (portrait: 1080x1920). Per weight set, image set and precision: the
largest keypoint (px), root-aligned joint and vertex (mm) and translation (mm) deviation from fp32
over the hands both detected, whether detections agree, and whether that is within
acr_ros.acr.precision.HALF_PRECISION_TOLERANCE. The row "fp32 + noise" is fp32 with relative input
noise of the precision's unit roundoff: how sensitive the weights are to rounding at all.
On a CPU without native bf16 or fp16 the half precision is emulated (slow, same rounding).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

UNIT_ROUNDOFF = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8}


def image_sets() -> dict[str, list[np.ndarray]]:
    from acr_ros.backends.acr import calibration_images
    from support.calibrated_weights import PHOTOS, SAMPLES

    photos = [cv2.imread(str(SAMPLES / name)) for name in PHOTOS]
    full_hd = [cv2.resize(p, (1920, 1080) if p.shape[1] > p.shape[0] else (1080, 1920),
                          interpolation=cv2.INTER_CUBIC) for p in photos]
    return {"auto's calibration photos": calibration_images(), "photos": photos, "photos at 1920x1080": full_hd}


def staged(pipe, x, lp, k):
    return pipe.readback(pipe.run(x, lp, k))


def measure(nets: dict, mano, precisions: list[str], device: str) -> list[list]:
    from acr_ros.acr.camera import intrinsics_tensor
    from acr_ros.acr.options import EngineOptions
    from acr_ros.acr.pipeline import ACRPipeline
    from acr_ros.acr.precision import HALF_PRECISION_TOLERANCE, deviation, fp32_without_tf32
    from acr_ros.acr.preprocess import letterbox_tensor

    rows = []
    sets = image_sets()
    for net_name, net in nets.items():
        fp32 = ACRPipeline(net, mano, EngineOptions(device=device, precision="fp32", preprocess="exact"))
        halves = {p: ACRPipeline(net, mano, EngineOptions(device=device, precision=p, preprocess="exact"))
                  for p in precisions}
        for set_name, images in sets.items():
            # One at a time: images of different sizes, as the node sees them.
            for name in precisions + [f"fp32 + {p} noise" for p in precisions]:
                worst = None
                for image in images:
                    x, lbs = fp32.preprocess([image])
                    lp = letterbox_tensor(lbs, fp32.device)
                    k = intrinsics_tensor([None], lbs, fp32.device)
                    with fp32_without_tf32(fp32.device):
                        expected = staged(fp32, x, lp, k)
                        if name in halves:
                            got = staged(halves[name], x, lp, k)
                        else:
                            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x.device)
                            got = staged(fp32, x * (1.0 + UNIT_ROUNDOFF[name.split()[2]] * noise), lp, k)
                    d = deviation(expected, got)
                    worst = d if worst is None else _worse(worst, d)
                rows.append([net_name, f"{set_name} ({len(images)})", name, worst.keypoints_px, worst.joints_mm,
                             worst.vertices_mm, worst.translation_mm, worst.compared_hands,
                             worst.sides_agree, worst.within(HALF_PRECISION_TOLERANCE)])
                print(_row(rows[-1]), flush=True)
    return rows


def _worse(a, b):
    """The larger of two deviations, field by field, over both sets of hands."""
    import dataclasses

    return dataclasses.replace(
        a, keypoints_px=max(a.keypoints_px, b.keypoints_px), joints_mm=max(a.joints_mm, b.joints_mm),
        vertices_mm=max(a.vertices_mm, b.vertices_mm), translation_mm=max(a.translation_mm, b.translation_mm),
        detections_agree=a.detections_agree and b.detections_agree, sides_agree=a.sides_agree and b.sides_agree,
        compared_hands=a.compared_hands + b.compared_hands)


def _row(cells: list) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else ("yes" if v is True else "no" if v is False else str(v))
    return "| " + " | ".join(fmt(c) for c in cells) + " |"


HEADER = ("| weights | images | precision | keypoints px | joints mm | vertices mm | translation mm | hands "
          "| detections agree | within 1 px / 1 mm |\n|---|---|---|---|---|---|---|---|---|---|")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--weights", nargs="+", default=["calibrated", "random"], choices=["calibrated", "random"])
    args = ap.parse_args(argv)

    from acr_ros.acr.hardware import describe_cpu
    from acr_ros.acr.mano import ManoLayer
    from support.calibrated_weights import calibrated_acr_network
    from support.random_weights import random_acr_network
    from support.synthetic_mano import write_synthetic_mano

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu()
    print("# Half precision against fp32\n")
    print(f"- date: {datetime.date.today().isoformat()}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"- device: {args.device}: {where}")
    print(f"- command: python benchmarks/half_precision.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    makers = {"calibrated": calibrated_acr_network, "random": random_acr_network}
    nets = {name: makers[name](0, "both") for name in args.weights}
    with tempfile.TemporaryDirectory() as tmp:
        mano = ManoLayer.from_directory(write_synthetic_mano(tmp, seed=0))
    rows = measure(nets, mano, args.precision, args.device)
    print("\n" + HEADER)
    for r in rows:
        print(_row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
