"""One-Euro temporal smoothing of ACR's MANO parameters on the device, driven by frame timestamps.

The filter and its parameters are those of ``acr_ros.acr.one_euro`` (the official demo's ``-t``),
here batched over streams and hand sides as tensors. Filtered: the 45 finger values, the 9 entries
of the global rotation matrix (not re-orthonormalised, as official) and the betas; the camera is not
filtered.

State is kept per (stream, side) on the device of the inputs; a side only advances when it is
detected in that frame (a boolean mask applied with torch.where: no CPU sync).
"""
from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Dict, Hashable, Optional, Sequence

import numpy as np
import torch

from acr_ros.acr.one_euro import SmoothingConfig, smoothing_factor
from acr_ros.acr.preprocess import upload

_N_ORIENT, _N_POSE, _N_BETAS = 9, 45, 10
_WIDTH = _N_ORIENT + _N_POSE + _N_BETAS


def _parameter_vectors(config: SmoothingConfig, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element min_cutoff and beta over the packed [orient 9, pose 45, betas 10] vector."""
    sizes = (_N_ORIENT, _N_POSE, _N_BETAS)
    mc = np.repeat([config.orient_min_cutoff, config.pose_min_cutoff, config.betas_min_cutoff], sizes)
    be = np.repeat([config.orient_beta, config.pose_beta, config.betas_beta], sizes)
    t = upload(np.array([mc, be], dtype=np.float64), torch.device(device)).to(dtype)
    return t[0], t[1]


@dataclass
class _State:
    x_prev: torch.Tensor    # (2, W) last raw value
    x_hat: torch.Tensor     # (2, W) last filtered value
    dx_hat: torch.Tensor    # (2, W) last filtered derivative
    t_prev: torch.Tensor    # (2,) float64 timestamp of the last update
    started: torch.Tensor   # (2,) bool: the side has had a sample


def one_euro_step(state: _State, x: torch.Tensor, t_now: torch.Tensor, detected: torch.Tensor,
                  min_cutoff: torch.Tensor, beta: torch.Tensor, d_cutoff: float,
                  default_dt: float) -> tuple[torch.Tensor, _State]:
    """One filter step for rows (..., W); t_now (...,) float64; detected (...,) bool.

    Returns the output (filtered where detected, x elsewhere) and the new state (unchanged where
    not detected).
    """
    dt = t_now - state.t_prev
    use = state.started & (dt > 0)
    dt = torch.where(use, dt, torch.full_like(dt, default_dt)).unsqueeze(-1)
    # As official: dx = (x - x_prev) * freq and te = 1 / freq (exactly 30 and 1/30 for dt = 1/30).
    freq64 = 1.0 / dt
    freq = freq64.to(x.dtype)
    te = (1.0 / freq64).to(x.dtype)
    started = state.started.unsqueeze(-1)
    # The official derivative is 0 for the first sample; its low-pass then starts from 0.
    dx = torch.where(started, (x - state.x_prev) * freq, torch.zeros_like(x))
    a_d = smoothing_factor(d_cutoff, te)
    dx_hat = torch.where(started, a_d * dx + (1.0 - a_d) * state.dx_hat, dx)
    cutoff = min_cutoff + beta * dx_hat.abs()
    a = smoothing_factor(cutoff, te)
    x_hat = torch.where(started, a * x + (1.0 - a) * state.x_hat, x)

    det = detected.unsqueeze(-1)
    new = _State(
        x_prev=torch.where(det, x, state.x_prev),
        x_hat=torch.where(det, x_hat, state.x_hat),
        dx_hat=torch.where(det, dx_hat, state.dx_hat),
        t_prev=torch.where(detected, t_now, state.t_prev),
        started=state.started | detected,
    )
    return torch.where(det, x_hat, x), new


class HandSmoother:
    """One-Euro smoothing of [left, right] MANO parameters per stream, from frame timestamps.

    Inputs per call are a batch of B frames, each with the parser's two rows [left, right]:
    global_orient (B, 2, 3, 3), finger_pose (B, 2, 45), betas (B, 2, 10), detected (B, 2) bool,
    streams (B keys, e.g. camera topics) and timestamps (B floats, seconds). Frames of one stream
    within a batch are taken in order.
    """

    def __init__(self, config: Optional[SmoothingConfig] = None):
        self.config = config or SmoothingConfig()
        self._states: Dict[Hashable, _State] = {}
        self._vectors: dict = {}
        self._t0: Optional[float] = None  # time origin (host side)

    def reset(self) -> None:
        """Forget all streams."""
        self._states.clear()
        self._t0 = None

    def reset_side(self, stream: Hashable, side: int) -> None:
        """Forget one side (0 left, 1 right) of one stream: its next detection starts the filter afresh."""
        state = self._states.get(stream)
        if state is not None:
            started = state.started.clone()
            started[side] = False
            self._states[stream] = _State(state.x_prev, state.x_hat, state.dx_hat, state.t_prev, started)

    def _params(self, device, dtype):
        key = (str(device), dtype, astuple(self.config))  # the config may be changed at run time
        if key not in self._vectors:
            self._vectors[key] = _parameter_vectors(self.config, device, dtype)
        return self._vectors[key]

    def _state(self, stream, device, dtype) -> _State:
        st = self._states.get(stream)
        if st is not None and st.x_hat.device == device and st.x_hat.dtype == dtype:
            return st
        if st is not None:  # moved device or dtype: carry the state over
            return _State(st.x_prev.to(device, dtype), st.x_hat.to(device, dtype), st.dx_hat.to(device, dtype),
                          st.t_prev.to(device), st.started.to(device))
        z = torch.zeros((2, _WIDTH), device=device, dtype=dtype)
        return _State(z, z, z, torch.zeros(2, device=device, dtype=torch.float64),
                      torch.zeros(2, device=device, dtype=torch.bool))

    def __call__(self, streams: Sequence[Hashable], timestamps: Sequence[float], global_orient: torch.Tensor,
                 finger_pose: torch.Tensor, betas: torch.Tensor, detected: torch.Tensor):
        """Returns smoothed (global_orient, finger_pose, betas), same shapes; undetected rows pass
        through unchanged."""
        b = global_orient.shape[0]
        if len(streams) != b or len(timestamps) != b:
            raise ValueError("one stream key and one timestamp per frame")
        device, dtype = finger_pose.device, finger_pose.dtype
        x = torch.cat([global_orient.reshape(b, 2, _N_ORIENT).to(dtype), finger_pose.reshape(b, 2, _N_POSE),
                       betas.reshape(b, 2, _N_BETAS).to(dtype)], dim=-1)
        detected = detected.to(device=device, dtype=torch.bool).reshape(b, 2)
        min_cutoff, beta = self._params(device, dtype)
        out = [None] * b

        # Waves: each holds at most one frame per stream, so the frames of a wave run as one batch.
        pending = list(range(b))
        while pending:
            wave, seen, rest = [], set(), []
            for i in pending:
                (rest if streams[i] in seen else wave).append(i)
                seen.add(streams[i])
            pending = rest
            states = [self._state(streams[i], device, dtype) for i in wave]
            stacked = _State(*(torch.stack([getattr(s, f) for s in states])
                               for f in ("x_prev", "x_hat", "dx_hat", "t_prev", "started")))
            # Times relative to the first stamp seen keep float64 precision for epoch stamps.
            if self._t0 is None:
                self._t0 = float(timestamps[wave[0]])
            rel = [float(timestamps[i]) - self._t0 for i in wave]
            if len(wave) == 1:  # a fill with a Python scalar: no host->device copy
                t_now = torch.full((1, 2), rel[0], device=device, dtype=torch.float64)
            else:
                t_now = upload(np.repeat(np.array(rel, dtype=np.float64)[:, None], 2, 1), device)
            xw = torch.stack([x[i] for i in wave])
            dw = torch.stack([detected[i] for i in wave])
            y, new = one_euro_step(stacked, xw, t_now, dw, min_cutoff, beta, self.config.d_cutoff,
                                   self.config.default_dt)
            for k, i in enumerate(wave):
                self._states[streams[i]] = _State(new.x_prev[k], new.x_hat[k], new.dx_hat[k], new.t_prev[k],
                                                  new.started[k])
                out[i] = y[k]
        y = torch.stack(out)
        return (y[..., :_N_ORIENT].reshape(b, 2, 3, 3).to(global_orient.dtype),
                y[..., _N_ORIENT:_N_ORIENT + _N_POSE],
                y[..., _N_ORIENT + _N_POSE:].to(betas.dtype))
