"""Accuracy and cost of the depth fusion (acr_ros.acr.depth) on synthetic RGB-D scenes.

    python benchmarks/depth_fusion.py [--scenes 200] [--seed 2]

Scenes from test/support/depth_scenes.py: a posed synthetic MANO hand (random arrays, not a real
hand shape) at 0.3-1.5 m before a 640x480 camera (f = 600 px), depth noise 0.15 % of z² per metre,
10 % holes, flying pixels at edges, a background plane and an occluder; the monocular estimate is
the true hand scaled by 0.6-1.4 about the camera centre. Prints the wrist depth error (mm) of the
monocular estimate and of the fused one, per distance, for the mesh (ACR: visible vertices) and the
joints (MediaPipe: 5x5 patches around the 21 joints, the wrist's setting the distance), and the
fusion's cost per hand.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the synthetic scenes

from acr_ros.acr.depth import fit_hand_depth, fuse_hand, visible_points  # noqa: E402
from acr_ros.acr.hands import HandResult  # noqa: E402
from support.depth_scenes import CAMERA, HEIGHT, WIDTH, posed_hands, render_scene  # noqa: E402
from support.synthetic_mano import write_synthetic_mano  # noqa: E402

BINS = ((0.3, 0.7), (0.7, 1.1), (1.1, 1.5))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        verts, joints, faces = posed_hands(write_synthetic_mano(tmp, seed=0), args.scenes, seed=1)
    rng = np.random.default_rng(args.seed)
    rows = []  # distance, monocular error, mesh error, joints error, mesh used, joints used, costs
    for i in range(args.scenes):
        scene = render_scene(verts[i], joints[i], faces, rng)
        truth = scene.joints[0, 2]
        estimate = scene.estimate_vertices
        t0 = time.perf_counter()
        mesh = fit_hand_depth(estimate, scene.depth, CAMERA, visible=visible_points(estimate, CAMERA, WIDTH, HEIGHT))
        t1 = time.perf_counter()
        joints_only = HandResult("right", 1.0, scene.estimate_joints, np.zeros((21, 2)), np.eye(3))
        sparse = fuse_hand(joints_only, scene.depth, CAMERA)  # what the MediaPipe backend's hands get
        t2 = time.perf_counter()
        wrist = scene.estimate_joints[0, 2]
        rows.append((truth, abs(wrist - truth), abs(wrist * mesh.scale - truth), abs(wrist * sparse.scale - truth),
                     mesh.used, sparse.used, t1 - t0, t2 - t1))
    data = np.array(rows, dtype=np.float64)
    print(f"# Depth fusion on {args.scenes} synthetic scenes\n")
    print(f"- date {datetime.date.today().isoformat()}; {cpu_name()}; python {platform.python_version()}")
    print(f"- command: python benchmarks/depth_fusion.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| distance (m) | scenes | monocular p50 / p95 | mesh (ACR) p50 / p95 / max | mesh fused | "
          "joints (MediaPipe) p50 / p95 | joints fused |")
    print("|---|---|---|---|---|---|---|")
    for low, high in BINS + ((0.3, 1.5),):
        sel = data[(data[:, 0] >= low) & (data[:, 0] < high)]
        if not len(sel):
            continue
        mm = sel[:, 1:4] * 1000
        p = lambda col, q: np.percentile(mm[:, col], q)  # noqa: E731
        print(f"| {low:.1f}-{high:.1f} | {len(sel)} | {p(0, 50):.1f} / {p(0, 95):.1f} | "
              f"{p(1, 50):.1f} / {p(1, 95):.1f} / {mm[:, 1].max():.1f} | {sel[:, 4].mean():.0%} | "
              f"{p(2, 50):.1f} / {p(2, 95):.1f} | {sel[:, 5].mean():.0%} |")
    print(f"\nCost per hand at {WIDTH}x{HEIGHT}: mesh (z-buffer + fit) p50 {np.median(data[:, 6]) * 1e3:.2f} ms, "
          f"p95 {np.percentile(data[:, 6], 95) * 1e3:.2f} ms; joints p50 {np.median(data[:, 7]) * 1e3:.2f} ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
