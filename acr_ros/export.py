"""acr_export: the ACR network as ONNX, for onnxruntime, TensorRT (Jetson) and other runtimes.

    acr_export --checkpoint wild.pkl -o acr.onnx [--batch 1|N|dynamic] [--opset 18] [--no-verify]
    acr_export --checkpoint wild.pkl --aot -o acr.pt2 [--device cuda] [--precision fp16]

The graph's inputs and outputs, their shapes and meaning: acr_ros/acr/onnx_export.py (also printed
after the export). Preprocessing, the 6D decoding, MANO and the camera stay outside it. With
onnxruntime installed the export is checked against PyTorch on a bundled photo (--no-verify skips
that). A TensorRT engine from it (docs/deployment.md):

    trtexec --onnx=acr.onnx --fp16 --saveEngine=acr_fp16.engine

--aot compiles the network once with AOTInductor for this machine's device (dynamic batch 1 to 64;
minutes, on the machine that will run it: its GPU, torch and CUDA are recorded in the package and
checked at load). The node loads it with the parameters aot_package:=acr.pt2 and precision set to
the package's (acr_ros/acr/aot.py).
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
    parser.add_argument("--aot", action="store_true", help="an AOTInductor package (.pt2) instead of ONNX")
    parser.add_argument("--device", default="auto", help="--aot: the device to compile for (default: cuda if present)")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="--aot: the network's precision (auto: fp16 on CUDA, fp32 on the CPU)")
    args = parser.parse_args(argv)
    if args.aot and args.output == Path("acr.onnx"):
        args.output = Path("acr.pt2")
    return args


def export_aot(args: argparse.Namespace) -> int:
    """acr_export --aot: build the package, then compare it with the eager network on a bundled photo."""
    import torch

    from acr_ros.acr.aot import build_network_package, load_network_package
    from acr_ros.acr.checkpoint import checkpoint_id, load_acr_network
    from acr_ros.acr.network import FastACR
    from acr_ros.acr.pipeline import resolve_device, resolve_precision

    try:
        device = resolve_device(args.device)
        dtype = resolve_precision(args.precision, device)
        net = load_acr_network(args.checkpoint)
        seconds = build_network_package(net, args.output, device, dtype, checkpoint_id(args.checkpoint))
    except (ValueError, ImportError, OSError) as error:
        print(f"acr_export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({args.output.stat().st_size / 2**20:.0f} MiB, {str(dtype)[6:]} on {device}, "
          f"dynamic batch) in {seconds:.0f} s")
    fast = FastACR(net, dtype=dtype, channels_last=device.type == "cuda").to(device)
    started = time.perf_counter()
    network, why = load_network_package(args.output, fast, device)
    if network is None:
        print(f"acr_export: {why}", file=sys.stderr)
        return 1
    x = photo_input().to(device)
    with torch.no_grad():
        got, expected = network(x), fast(x)
    same = torch.equal(got.cells, expected.cells) and torch.equal(got.detected, expected.detected)
    worst = float((got.params - expected.params).abs().max())
    print(f"loaded in {time.perf_counter() - started:.1f} s; against the eager network on a bundled photo: cells "
          f"{'identical' if same else 'DIFFER'}, largest parameter difference {worst:.2g}")
    return 0 if same else 1


def photo_input():
    """A bundled photo as the network's (1, 3, 512, 512) input, the official preprocessing."""
    import cv2
    import torch

    from acr_ros.acr.preprocess import preprocess_exact
    from acr_ros.media import SAMPLES_DIR

    rgb, _ = preprocess_exact(cv2.imread(str(SAMPLES_DIR / "two_hands.jpg")))
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0


def verify(model, fast, batch: Optional[int]) -> tuple[bool, str]:
    """onnxruntime (CPU) against PyTorch on a bundled photo: (agrees, what was compared)."""
    try:
        import onnxruntime
    except ImportError:
        return True, "not verified: onnxruntime is not installed"
    import torch

    from acr_ros.acr.onnx_export import NO_SUPPRESSION, OUTPUT_NAMES

    x = photo_input().expand(batch or 2, -1, -1, -1).contiguous()
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
    if args.aot:
        return export_aot(args)
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
