"""Lag and jitter of the One-Euro smoothing on a recorded (synthetic) wrist trajectory, against
what its parameters say.

    python benchmarks/smoothing_lag.py [--seconds 120] [--rates 30] [--seed 0]

The trajectory, the same on every run (seeded): a wrist reaching between random points of a 40 cm
cube with minimum-jerk movements of 0.4-1.2 s and holds of 0.2-1.5 s between them (peak speeds
about 0.3-1.5 m/s), sampled at each rate, plus 3 mm Gaussian noise per axis (a detector's
frame-to-frame jitter). Per One-Euro setting (min_cutoff, beta; d_cutoff 1 Hz) it prints:

- lag: the time shift that best aligns the filtered output with the noise-free trajectory (least
  squares over all samples, 0.1 ms steps); during holds nothing moves, so this is the lag in motion;
- at rest: 1 / (2 pi min_cutoff), the most the filter delays anything (a value at rest or
  moving slowly), acr_ros.acr.one_euro.lag_seconds;
- at median speed: 1 / (2 pi (min_cutoff + beta v)) at the median speed during reaches;
- jitter: RMS error during holds (after their first 0.6 s), raw and filtered (mm).

Both implementations run on the same samples: the numpy filter (the MediaPipe backend's joints, in
metres) and the batched torch smoother (ACR's MANO parameters, here fed the same values in its
finger-pose channel); the largest difference between them is printed. Stamps drive both, as in
the node; no wall-clock time is measured.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys

import numpy as np
import torch

from acr_ros.acr.one_euro import OneEuroFilter, SmoothingConfig, lag_seconds
from acr_ros.acr.smoothing import HandSmoother

SETTINGS = [(4.0, 0.7), (4.0, 0.0), (1.0, 0.7), (2.0, 0.7), (8.0, 0.7), (4.0, 5.0)]  # (min_cutoff Hz, beta)
NOISE_M = 0.003


def trajectory(seconds: float, seed: int) -> tuple[list, list]:
    """Segments of the continuous trajectory: [(t0, t1, start, end)] reaches (minimum jerk) and holds."""
    rng = np.random.default_rng(seed)
    reaches, holds, t, here = [], [], 0.0, rng.uniform(-0.2, 0.2, 3)
    while t < seconds:
        hold = rng.uniform(0.2, 1.5)
        holds.append((t, t + hold, here, here))
        t += hold
        there, duration = rng.uniform(-0.2, 0.2, 3), rng.uniform(0.4, 1.2)
        reaches.append((t, t + duration, here, there))
        here, t = there, t + duration
    return reaches, holds


def sample(segments: list, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 3) and speeds (N,) of the trajectory at `times`."""
    position, speed = np.full((len(times), 3), np.nan), np.zeros(len(times))
    for t0, t1, start, end in segments:
        inside = (times >= t0) & (times < t1)
        s = (times[inside] - t0) / (t1 - t0)
        progress = 10 * s**3 - 15 * s**4 + 6 * s**5          # minimum jerk, 0 -> 1
        rate = (30 * s**2 - 60 * s**3 + 30 * s**4) / (t1 - t0)
        position[inside] = start + progress[:, None] * (end - start)
        speed[inside] = rate * np.linalg.norm(end - start)
    return position, speed


def filtered_numpy(config: SmoothingConfig, times, noisy) -> np.ndarray:
    one_euro = OneEuroFilter(config)
    return np.stack([one_euro(x, t) for t, x in zip(times, noisy)])


def filtered_torch(config: SmoothingConfig, times, noisy) -> np.ndarray:
    smoother, out = HandSmoother(config), []
    orient, betas = torch.zeros(1, 2, 3, 3, dtype=torch.float64), torch.zeros(1, 2, 10, dtype=torch.float64)
    detected = torch.tensor([[True, False]])
    for t, x in zip(times, noisy):
        pose = torch.zeros(1, 2, 45, dtype=torch.float64)
        pose[0, 0, :3] = torch.from_numpy(x)
        out.append(smoother(["wrist"], [float(t)], orient, pose, betas, detected)[1][0, 0, :3].numpy())
    return np.stack(out)


def best_shift(times, filtered, segments) -> float:
    """The delay (s) that best aligns `filtered` with the noise-free trajectory, 0.1 ms steps."""
    shifts = np.arange(0.0, 0.3, 1e-4)
    settled = times > 2.0  # past the first sample's start-up
    errors = [np.mean((filtered[settled] - sample(segments, times[settled] - shift)[0]) ** 2) for shift in shifts]
    return float(shifts[int(np.argmin(errors))])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0], help="frame rates (Hz)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    reaches, holds = trajectory(args.seconds + 2.0, args.seed)
    segments = sorted(reaches + holds, key=lambda segment: segment[0])
    print(f"# One-Euro lag and jitter, {datetime.date.today()}, {platform.machine()}, torch {torch.__version__}")
    print(f"# command: python benchmarks/smoothing_lag.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# trajectory: {args.seconds:.0f} s, seed {args.seed}, {len(reaches)} reaches, noise {NOISE_M * 1e3:.0f} mm "
          "per axis; d_cutoff 1 Hz\n")
    print("| rate (Hz) | min_cutoff (Hz) | beta | lag (ms) | at rest (ms) | at median speed (ms) | "
          "jitter raw / filtered (mm) | numpy vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    speeds = []
    for rate in args.rates:
        times = np.arange(0.0, args.seconds, 1.0 / rate)
        truth, speed = sample(segments, times)
        noisy = truth + np.random.default_rng(args.seed + 1).normal(0.0, NOISE_M, truth.shape)
        # Jitter at rest: holds after their first 0.6 s (the slowest filter here, 1 Hz, has caught
        # up with the reach by then: 0.6 s is almost 4 of its time constants).
        settled_holds = [(t0 + 0.6, t1, a, b) for t0, t1, a, b in holds if t1 - t0 > 0.6]
        in_hold = ~np.isnan(sample(settled_holds, times)[0][:, 0])
        median_speed = float(np.median(speed[speed > 0.05]))
        for min_cutoff, beta in SETTINGS:
            config = SmoothingConfig(pose_min_cutoff=min_cutoff, pose_beta=beta, d_cutoff=1.0)
            out = filtered_numpy(config, times, noisy)
            difference = float(np.abs(out - filtered_torch(config, times, noisy)).max())
            lag = best_shift(times, out, segments)
            raw_jitter = np.sqrt(np.mean((noisy[in_hold] - truth[in_hold]) ** 2)) * 1e3
            jitter = np.sqrt(np.mean((out[in_hold] - truth[in_hold]) ** 2)) * 1e3
            print(f"| {rate:g} | {min_cutoff:g} | {beta:g} | {lag * 1e3:.1f} | {lag_seconds(min_cutoff) * 1e3:.1f} | "
                  f"{lag_seconds(min_cutoff, beta, median_speed) * 1e3:.1f} | {raw_jitter:.2f} / {jitter:.2f} | "
                  f"{difference:.0e} |", flush=True)
        speeds.append(f"{median_speed:.2f} m/s at {rate:g} Hz")
    print(f"\nmedian speed during reaches: {', '.join(speeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
