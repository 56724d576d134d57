"""The ahead-of-time path (acr_ros.acr.aot, EngineOptions.aot_package, acr_export --aot) on a small
module: a full HRNet compile takes minutes. Built once, loaded, equal outputs; a package built for
another setup is refused with one line, and the pipeline then warns and runs its own graph."""
import dataclasses
import json
import shutil
import warnings
import zipfile

import pytest
import torch
from torch import nn

from acr_ros.acr import aot
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline
from acr_ros.export import parse_args
from support.random_weights import random_acr_network

pytestmark = pytest.mark.slow(seconds=30)  # one AOTInductor compile (g++) of a small module


class Small(nn.Module):
    """Convolution, ReLU and a reduction, with a second (scalar) input like the network's threshold."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.conv(x))
        return y, y.flatten(1).amax(1) > threshold


FACTS = {**aot.device_facts(torch.device("cpu")), "precision": "float32", "engine": "small-1"}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    torch.manual_seed(0)
    module = Small().eval()
    path = tmp_path_factory.mktemp("aot") / "small.pt2"
    batch = torch.export.Dim("batch", min=1, max=8)
    seconds = aot.build_package(module, (torch.rand(2, 3, 8, 8), torch.tensor(0.5)), path, FACTS,
                                dynamic_shapes=({0: batch}, None))
    assert seconds > 0 and path.is_file()
    return module, path


def with_metadata(source, target, **changes):
    """A copy of the package with some build facts changed."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.endswith(aot.METADATA_FILE):
                data = json.dumps({**json.loads(data), **changes}).encode()
            new.writestr(item, data)
    return target


def test_a_package_loads_and_computes_what_the_module_does(package):
    module, path = package
    assert aot.package_metadata(path) == FACTS
    model, why = aot.load_package(path, FACTS, torch.device("cpu"))
    assert model is not None and why.startswith(f"aot_package {path} loaded in")
    for batch in (1, 3):  # the batch is dynamic
        x = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = module(x, torch.tensor(0.5))
        got = model(x, torch.tensor(0.5))
        torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("changes, named", [
    ({"torch": "2.11.0+cu130"}, "torch 2.11.0+cu130 (here "),
    ({"device": "NVIDIA H200", "capability": "9.0", "cuda": "13.0"}, "cuda 13.0 (here None), device NVIDIA H200 "),
    ({"engine": "other weights"}, "engine other weights (here small-1)"),
])
def test_a_package_built_for_another_setup_is_refused_in_one_line(package, tmp_path, changes, named):
    path = with_metadata(package[1], tmp_path / "other.pt2", **changes)
    model, why = aot.load_package(path, FACTS, torch.device("cpu"))
    assert model is None and "\n" not in why
    assert why.startswith(f"aot_package {path} was built for another setup: ") and named in why, why


def test_a_file_that_is_no_package_is_refused(package, tmp_path):
    plain = tmp_path / "plain.pt2"
    plain.write_bytes(b"not a zip")
    assert aot.load_package(plain, FACTS, torch.device("cpu")) == (
        None, f"{plain} is not an acr_export --aot package (File is not a zip file)")
    bare = tmp_path / "bare.pt2"
    with zipfile.ZipFile(package[1]) as old, zipfile.ZipFile(bare, "w") as new:
        for item in old.infolist():
            if not item.filename.endswith(aot.METADATA_FILE):
                new.writestr(item, old.read(item))
    model, why = aot.load_package(bare, FACTS, torch.device("cpu"))
    assert model is None and why == f"{bare} is not an acr_export --aot package (no {aot.METADATA_FILE} in it)"


def test_the_pipeline_warns_and_runs_its_own_graph_with_a_foreign_package(package, mano_dir, tmp_path):
    """The small package's facts are not the network's (its engine key): refused, eager instead."""
    path = shutil.copy(package[1], tmp_path / "acr.pt2")
    net = random_acr_network(0, "both")
    options = EngineOptions(device="cpu", precision="fp32", aot_package=str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = ACRPipeline(net, ManoLayer.from_directory(mano_dir), options)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and messages[0].startswith(f"aot_package {path} was built for another setup: engine ")
    assert messages[0].endswith("; running the eager graph (rebuild it on this machine: acr_export --aot)")
    assert pipe.aot == messages[0].split("; running")[0] and pipe._network is pipe.fast
    rows, _ = pipe([torch.full((48, 64, 3), 128, dtype=torch.uint8).numpy()])
    assert rows.detected.shape == (1, 2)


def test_the_network_facts_name_the_weights_and_the_precision():
    net = random_acr_network(0, "both")
    from acr_ros.acr.network import FastACR

    fast = FastACR(net)
    facts = aot.network_facts(fast, torch.device("cpu"))
    assert facts["precision"] == "float32" and facts["device"] == "cpu" and facts["torch"] == torch.__version__
    # The fused and the plain graph hold the same tensors under the same names: one package serves both.
    assert facts["engine"] == aot.network_facts(FastACR(net, fuse=False), torch.device("cpu"))["engine"]


def test_options_and_command_line():
    with pytest.raises(ValueError, match="aot_package a.pt2 runs the precision it was built for"):
        EngineOptions(aot_package="a.pt2")
    with pytest.raises(ValueError, match="apply to runtime torch only"):
        EngineOptions(runtime="onnxruntime", aot_package="a.pt2")
    assert dataclasses.replace(EngineOptions(precision="fp16"), aot_package="a.pt2").aot_package == "a.pt2"
    args = parse_args(["--checkpoint", "w.pkl", "--aot"])
    assert args.aot and str(args.output) == "acr.pt2" and args.device == "auto" and args.precision == "auto"
