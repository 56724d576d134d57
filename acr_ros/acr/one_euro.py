"""The One-Euro filter's parameters and its numpy form (torch-free).

The official ACR demo's ``-t`` smoothing is a One-Euro filter (Casiez et al., CHI 2012) at a fixed
30 Hz; here dt comes from consecutive timestamps (1/30 s for the first sample or a non-increasing
stamp), so with dt = 1/30 it is the official algorithm (docs/architecture.md, "Smoothing").
:class:`OneEuroFilter` is the filter on numpy arrays (the MediaPipe backend's joints and
keypoints); ``acr_ros.acr.smoothing`` runs the same step on batched device tensors for ACR's MANO
parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class SmoothingConfig:
    """One-Euro parameters (official values by default; cutoffs in Hz)."""

    pose_min_cutoff: float = 4.0     # finger pose (official smooth_coeff)
    pose_beta: float = 0.7
    orient_min_cutoff: float = 4.0   # global orientation matrix
    orient_beta: float = 0.7
    betas_min_cutoff: float = 0.6
    betas_beta: float = 0.7
    d_cutoff: float = 1.0            # cutoff of the derivative filter
    default_dt: float = 1.0 / 30.0   # first sample or a non-increasing timestamp


def smoothing_factor(cutoff, te):
    """The official alpha: tau = 1 / (2 pi cutoff); alpha = 1 / (1 + tau / te). Works on floats,
    numpy arrays and tensors alike."""
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / te)


def lag_seconds(min_cutoff: float, beta: float = 0.0, speed: float = 0.0) -> float:
    """How far (in time) the filter's output trails a value moving at a constant `speed` (units
    of the value per second) once the derivative filter has settled: 1 / (2 pi (min_cutoff +
    beta |speed|)), i.e. tau at the adapted cutoff. Exact for this discrete filter at any frame
    rate: alpha = 1 / (1 + tau / te) makes a ramp trail by exactly tau. Largest at rest and for
    slow motion: 1 / (2 pi min_cutoff) (40 ms at the default 4 Hz)."""
    return 1.0 / (2 * math.pi * (min_cutoff + beta * abs(speed)))


class OneEuroFilter:
    """One stream of float64 numpy arrays (any fixed shape), every value filtered with the
    finger-pose parameters of a SmoothingConfig. The first call passes its input through."""

    def __init__(self, config: SmoothingConfig):
        self.config = config
        self._x_prev: Optional[np.ndarray] = None
        self._x_hat: Optional[np.ndarray] = None
        self._dx_hat: Optional[np.ndarray] = None
        self._t_prev = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        c = self.config
        x = np.asarray(x, dtype=np.float64)
        t = float(t)
        if self._x_prev is None:  # the official derivative is 0 for the first sample
            self._x_prev, self._x_hat, self._dx_hat, self._t_prev = x, x, np.zeros_like(x), t
            return x.copy()
        dt = t - self._t_prev
        if not dt > 0:
            dt = c.default_dt
        # As official: dx = (x - x_prev) * freq and te = 1 / freq (exactly 30 and 1/30 for dt = 1/30).
        freq = 1.0 / dt
        te = 1.0 / freq
        dx = (x - self._x_prev) * freq
        a_d = smoothing_factor(c.d_cutoff, te)
        dx_hat = a_d * dx + (1.0 - a_d) * self._dx_hat
        a = smoothing_factor(c.pose_min_cutoff + c.pose_beta * np.abs(dx_hat), te)
        x_hat = a * x + (1.0 - a) * self._x_hat
        self._x_prev, self._x_hat, self._dx_hat, self._t_prev = x, x_hat, dx_hat, t
        return x_hat.copy()
