"""The network stage through onnxruntime (``EngineOptions(runtime="onnxruntime")``).

The network is exported to ONNX in memory when the pipeline is built (acr_ros.acr.onnx_export,
dynamic batch) and run by an onnxruntime session with the chosen execution providers. The other
stages (preprocessing, decoding, MANO, camera) stay in torch on the pipeline's device. The session
exchanges host arrays: on a CUDA device the network stage copies its input to the host and its
output back, so this runtime synchronises once more than the torch one.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from acr_ros.acr.network import FastACR, NetworkOutput
from acr_ros.acr.onnx_export import OUTPUT_NAMES, cached_dynamic_export

# Without onnx_providers: what the pipeline's device suggests, in order of preference.
DEFAULT_PROVIDERS = {"cpu": ("CPUExecutionProvider",),
                     "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"runtime onnxruntime needs the onnxruntime package ({error}): pip install "
                          "onnxruntime==1.30.0, or onnxruntime-gpu for the CUDA and TensorRT providers") from error
    return onnxruntime


def choose_providers(requested: Sequence[str], device: torch.device, available: Sequence[str]) -> list[str]:
    """The execution providers to ask for: the requested ones (each must be available), else the
    device's defaults that are available (a warning names those missing)."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"onnxruntime execution provider(s) {', '.join(missing)} not available; this "
                             f"onnxruntime has {', '.join(available)} (CUDA and TensorRT come with onnxruntime-gpu)")
        return list(requested)
    wanted = DEFAULT_PROVIDERS[device.type]
    chosen = [p for p in wanted if p in available]
    if len(chosen) < len(wanted):
        missing = [p for p in wanted if p not in available]
        warnings.warn(f"onnxruntime has no {', '.join(missing)} (install onnxruntime-gpu): the network runs "
                      f"on {', '.join(chosen)}", RuntimeWarning, stacklevel=3)
    return chosen


class OnnxRuntimeNetwork:
    """Callable like FastACR (normalised images -> NetworkOutput on ``device``), through onnxruntime.

    ``fast`` is a float32 FastACR in export form (onnx_export.export_form); it is exported once here, and its detection
    settings (detection_threshold, suppress_duplicate_hands, duplicate_distance) are read on every
    call, so changing them on the pipeline takes effect as with the torch runtime.
    """

    def __init__(self, fast: FastACR, device: torch.device, providers: Sequence[str] = ()):
        ort = import_onnxruntime()
        self.fast = fast
        self.device = device
        chosen = choose_providers(providers, device, ort.get_available_providers())
        options = ort.SessionOptions()
        # onnxruntime's threads otherwise spin after each run and starve the torch stages that follow
        # (MANO took 40x longer on the CPU).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        export = cached_dynamic_export(fast)
        try:
            self.session = ort.InferenceSession(export.model, options, providers=chosen)
        except Exception as error:  # onnxruntime's own error types: a damaged cached file, say
            if not export.from_cache:
                raise
            warnings.warn(f"the cached ONNX export does not load ({type(error).__name__}: {str(error)[:200]}); "
                          "exporting again", RuntimeWarning, stacklevel=3)
            export = cached_dynamic_export(fast, refresh=True)
            self.session = ort.InferenceSession(export.model, options, providers=chosen)
        self.export_source = export.source  # for the logs
        self.providers = self.session.get_providers()

    def __call__(self, x: torch.Tensor) -> NetworkOutput:
        threshold, distance = self.fast.detection_inputs()
        feeds = {
            "images": x.detach().to("cpu", torch.float32).contiguous().numpy(),
            "detection_threshold": np.array(threshold, np.float32),
            "duplicate_distance": np.array(distance, np.float32),
        }
        outputs = self.session.run(list(OUTPUT_NAMES), feeds)
        return NetworkOutput(**{name: torch.from_numpy(value).to(self.device)
                                for name, value in zip(OUTPUT_NAMES, outputs)})
