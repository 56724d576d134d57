"""Ahead-of-time compiled network: an AOTInductor package built once (``acr_export --aot``) and
loaded by the pipeline in seconds (``EngineOptions.aot_package``).

The package is PyTorch's .pt2 archive (torch.export, then torch._inductor.aoti_compile_and_package)
with the build's facts added as ``<archive>/extra/acr_ros.json`` (:data:`METADATA_FILE`): the
torch and CUDA versions, the device it was compiled for (GPU name and compute capability, or the
CPU), the precision and the engine key (onnx_export.export_key: the weights, the engine's source
and torch's version). They are read from the archive before its compiled library is loaded, and a
package whose facts differ from the running pipeline's is refused with one line naming what differs
(:func:`load_package` returns None and the reason; the pipeline then warns and runs its eager or
CUDA-graph path). Compiled code cannot be checked any other way: a library built for another GPU,
torch or CUDA would fail to load or, worse, run wrongly.
"""
from __future__ import annotations

import json
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from acr_ros.acr.network import ACRNet, FastACR, NetworkOutput
from acr_ros.acr.onnx_export import (MAX_DYNAMIC_BATCH, OUTPUT_NAMES, ExportableACR, example_inputs, export_key,
                                     quiet_torch_logs)

METADATA_FILE = "extra/acr_ros.json"
FACTS = ("torch", "cuda", "device", "capability", "precision", "engine")  # what must match to load


def device_facts(device: torch.device) -> dict[str, str]:
    """The build facts of ``device`` in this process: torch, CUDA, the device and its capability."""
    facts = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        facts.update(device=torch.cuda.get_device_name(index), capability=f"{major}.{minor}")
    else:
        facts.update(device="cpu", capability="-")
    return facts


def build_package(module: nn.Module, inputs: tuple, path: Union[str, Path], metadata: dict[str, str],
                  dynamic_shapes: Any = None) -> float:
    """Export ``module`` on ``inputs`` (on its device), compile it with AOTInductor into the package
    ``path`` (a .pt2 file) and add ``metadata`` (:data:`METADATA_FILE`). Returns the seconds taken.
    Needs a C++ compiler (g++) and, for CUDA, the CUDA toolkit that torch's inductor uses."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings(), quiet_torch_logs():
        warnings.simplefilter("ignore")  # the exporter's and inductor's chatter
        program = torch.export.export(module.eval(), inputs, dynamic_shapes=dynamic_shapes)
        # O1 wrapper code (inductor's default for AOT) takes minutes of g++ on a small CPU; the
        # kernels themselves are compiled with full optimisation either way.
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs={
            "aot_inductor.compile_wrapper_opt_level": "O0"})
    with zipfile.ZipFile(path, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/{METADATA_FILE}", json.dumps(metadata, indent=1, sort_keys=True))
    return time.perf_counter() - started


def package_metadata(path: Union[str, Path]) -> dict[str, str]:
    """The build facts stored in a package (without loading its library). Raises ValueError for a
    file that is not such a package."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.split("/", 1)[-1] == METADATA_FILE]
            if not names:
                raise ValueError(f"{path} is not an acr_export --aot package (no {METADATA_FILE} in it)")
            return json.loads(archive.read(names[0]))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not an acr_export --aot package ({error})") from error


def mismatch(stored: dict[str, str], expected: dict[str, str]) -> str:
    """What differs between a package's facts and the expected ones, in words ('' when nothing)."""
    differing = [key for key in FACTS if key in expected and str(stored.get(key)) != str(expected[key])]
    return ", ".join(f"{key} {stored.get(key, 'not recorded')} (here {expected[key]})" for key in differing)


def load_package(path: Union[str, Path], expected: dict[str, str], device: torch.device
                 ) -> tuple[Optional[Callable], str]:
    """The compiled model of the package at ``path`` when its facts match ``expected``, else None;
    and one line saying what was loaded or why not."""
    try:
        stored = package_metadata(path)
    except ValueError as error:
        return None, str(error)
    differs = mismatch(stored, expected)
    if differs:
        return None, f"aot_package {path} was built for another setup: {differs}"
    started = time.perf_counter()
    try:
        index = device.index if device.type == "cuda" and device.index is not None else -1
        model = torch._inductor.aoti_load_package(str(path), device_index=index)
    except Exception as error:  # the loader's own error types: a damaged or foreign library
        return None, f"aot_package {path} does not load ({type(error).__name__}: {str(error)[:200]})"
    return model, f"aot_package {path} loaded in {time.perf_counter() - started:.1f} s"


def network_facts(fast: FastACR, device: torch.device) -> dict[str, str]:
    """What a network package must have been built for to run ``fast`` on ``device``."""
    return {**device_facts(device), "precision": str(fast.dtype).replace("torch.", ""), "engine": export_key(fast)}


def build_network_package(net: ACRNet, path: Union[str, Path], device: torch.device, dtype: torch.dtype,
                          checkpoint: str = "") -> float:
    """The ACR network (FastACR in ``dtype`` on ``device``, the plain graph: inductor fuses it
    itself; dynamic batch 1 to MAX_DYNAMIC_BATCH) as a package at ``path``. Returns the seconds."""
    fast = FastACR(net, dtype=dtype, channels_last=device.type == "cuda", fuse=False).to(device)
    images, threshold, distance = (t.to(device) for t in example_inputs(2))  # a size-1 batch would be fixed
    batch = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
    metadata = {**network_facts(fast, device), "checkpoint": checkpoint, "batch": f"1-{MAX_DYNAMIC_BATCH}"}
    return build_package(ExportableACR(fast), (images, threshold, distance), path, metadata,
                         dynamic_shapes={"images": {0: batch}, "detection_threshold": None, "duplicate_distance": None})


class AotNetwork:
    """Callable like FastACR (normalised images -> NetworkOutput) through a loaded package; the
    detection settings are read from ``fast`` on every call, as the other runtimes do."""

    def __init__(self, model: Callable, fast: FastACR, device: torch.device):
        self.model, self.fast, self.device = model, fast, device

    def __call__(self, x: torch.Tensor) -> NetworkOutput:
        threshold, distance = (torch.tensor(value, device=self.device) for value in self.fast.detection_inputs())
        outputs = self.model(x.contiguous(), threshold, distance)
        return NetworkOutput(**dict(zip(OUTPUT_NAMES, outputs)))


def load_network_package(path: Union[str, Path], fast: FastACR, device: torch.device
                         ) -> tuple[Optional[AotNetwork], str]:
    """:func:`load_package` for the network ``fast`` runs on ``device``."""
    model, why = load_package(path, network_facts(fast, device), device)
    return (AotNetwork(model, fast, device) if model is not None else None), why
