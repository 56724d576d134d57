"""acr_export: the ACR network as ONNX, for onnxruntime, TensorRT (Jetson) and other runtimes.

    acr_export --checkpoint wild.pkl -o acr.onnx [--batch 1|N|dynamic] [--opset 18] [--no-verify]

The graph's inputs and outputs, their shapes and meaning: acr_ros/acr/onnx_export.py (also printed
after the export). Preprocessing, the 6D decoding, MANO and the camera stay outside it. With
onnxruntime installed the export is checked against PyTorch on a bundled photo (--no-verify skips
that). A TensorRT engine from it (docs/deployment.md):

    trtexec --onnx=acr.onnx --fp16 --saveEngine=acr_fp16.engine
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from acr_ros.acr.runtime import passive_openmp_waits

BATCH_HELP = "a fixed batch size (default 1) or 'dynamic' (1 to 64 images, dimension named 'batch')"


def parse_batch(text: str) -> Optional[int]:
    if text == "dynamic":
        return None
    try:
        batch = int(text)
    except ValueError:
        batch = 0
    if batch < 1:
        raise argparse.ArgumentTypeError(f"batch must be a positive integer or 'dynamic', got {text!r}")
    return batch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="acr_export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--checkpoint", required=True, help="ACR checkpoint wild.pkl (ACR README, Google Drive)")
    parser.add_argument("-o", "--output", type=Path, default=Path("acr.onnx"), help="default: ./acr.onnx")
    parser.add_argument("--batch", type=parse_batch, default=1, help=BATCH_HELP)
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default and minimum 18)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against PyTorch")
    return parser.parse_args(argv)


def verify(model, fast, batch: Optional[int]) -> tuple[bool, str]:
    """onnxruntime (CPU) against PyTorch on a bundled photo: (agrees, what was compared)."""
    try:
        import onnxruntime
    except ImportError:
        return True, "not verified: onnxruntime is not installed"
    import cv2
    import torch

    from acr_ros.acr.onnx_export import NO_SUPPRESSION, OUTPUT_NAMES
    from acr_ros.acr.preprocess import preprocess_exact
    from acr_ros.media import SAMPLES_DIR

    rgb, _ = preprocess_exact(cv2.imread(str(SAMPLES_DIR / "two_hands.jpg")))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0
    x = x.expand(batch or 2, -1, -1, -1).contiguous()
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUT_NAMES, session.run(None, {
        "images": x.numpy(), "detection_threshold": np.array(fast.detection_threshold, np.float32),
        "duplicate_distance": np.array(NO_SUPPRESSION, np.float32)})))
    with torch.no_grad():
        expected = fast(x)
    exact = all(np.array_equal(got[name], getattr(expected, name).numpy())
                for name in ("cells", "detected", "prior_applied"))
    worst = max(float(np.abs(got[name] - getattr(expected, name).numpy()).max())
                for name in ("scores", "params", "params_raw", "priors"))
    agrees = exact and worst <= 1e-3
    return agrees, (f"onnxruntime {onnxruntime.__version__} (CPU) against PyTorch on a bundled photo: cells and "
                    f"detections {'identical' if exact else 'DIFFER'}, largest difference of scores and parameters "
                    f"{worst:.2g} (allowed 1e-3)")


def main(argv=None) -> int:
    passive_openmp_waits()  # before torch loads
    args = parse_args(argv)
    from acr_ros.acr.checkpoint import checkpoint_id, load_acr_network
    from acr_ros.acr.onnx_export import INPUT_NAMES, OPSET, OUTPUT_NAMES, export_form, export_onnx

    try:
        net = load_acr_network(args.checkpoint)
        fast = export_form(net)
        started = time.perf_counter()
        model = export_onnx(fast, args.output, batch=args.batch, opset=args.opset or OPSET,
                            metadata={"checkpoint": checkpoint_id(args.checkpoint)})
    except (ValueError, ImportError, OSError) as error:
        print(f"acr_export: {error}", file=sys.stderr)
        return 2
    batch = "dynamic" if args.batch is None else args.batch
    print(f"wrote {args.output} ({args.output.stat().st_size / 2**20:.0f} MiB, batch {batch}, opset "
          f"{args.opset or OPSET}) in {time.perf_counter() - started:.0f} s")
    print(f"  inputs:  {', '.join(INPUT_NAMES)}\n  outputs: {', '.join(OUTPUT_NAMES)}"
          "\n  (shapes and meaning: python -m pydoc acr_ros.acr.onnx_export)")
    if args.no_verify:
        return 0
    agrees, report = verify(model, fast, args.batch)
    print(report)
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
