"""The ONNX export (acr_export) and the onnxruntime runtime against PyTorch, on the CPU provider.
Random weights + synthetic MANO: equivalence of two computations, not hand reconstruction."""
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime
import pytest
import torch

from acr_ros.acr.hands import LEFT, RIGHT
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.network import FastACR
from acr_ros.acr import onnx_export
from acr_ros.acr.onnx_export import INPUT_NAMES, OUTPUT_NAMES, export_form, export_key, export_onnx
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.ort_network import OnnxRuntimeNetwork, choose_providers
from acr_ros.acr.pipeline import ACRPipeline
from acr_ros.backends import create_backend
from acr_ros.export import main as acr_export
from acr_ros.media import SAMPLES_DIR
from support.random_weights import random_acr_network
from support.tolerances import describe_failures, suite_comparison

pytestmark = pytest.mark.slow(seconds=40)  # two exports of the full-size network

TYPES = {"scores": "tensor(float)", "cells": "tensor(int64)", "detected": "tensor(bool)",
         "params": "tensor(float)", "params_raw": "tensor(float)", "priors": "tensor(float)",
         "prior_applied": "tensor(bool)"}
SHAPES = {"scores": [2], "cells": [2], "detected": [2], "params": [2, 109], "params_raw": [2, 109],
          "priors": [2, 106], "prior_applied": []}


def smooth_image(height, width, seed):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC)


IMAGES = [smooth_image(480, 640, 1), smooth_image(640, 360, 2), smooth_image(211, 301, 3),
          cv2.imread(str(SAMPLES_DIR / "two_hands.jpg")), cv2.imread(str(SAMPLES_DIR / "portrait.jpg"))]


@pytest.fixture(scope="module")
def mano(mano_dir):
    return ManoLayer.from_directory(mano_dir)


@pytest.fixture(scope="module")
def torch_pipeline(mano):
    # The weights of the acr_checkpoint fixture (seed 0, both hands, 25.3 cells apart: prior applied).
    return ACRPipeline(random_acr_network(0, "both"), mano, EngineOptions(device="cpu", precision="fp32"))


@pytest.fixture(scope="module")
def ort_backend(acr_checkpoint, mano_dir):
    """The ACR backend with runtime onnxruntime, as the node and acr_offline build it (one export)."""
    backend, reason = create_backend("acr", str(acr_checkpoint), str(mano_dir),
                                     options=EngineOptions(device="cpu", runtime="onnxruntime"))
    yield backend, reason
    backend.close()


def assert_same_hands(a, b):
    """Two readbacks of the same images within the suite's tolerances (test_pipeline.py)."""
    comparison = suite_comparison(a, b)
    assert comparison["within"], describe_failures(comparison)


def test_the_backend_runs_the_network_in_onnxruntime(ort_backend):
    backend, reason = ort_backend
    assert backend.pipeline.providers == ("CPUExecutionProvider",)
    assert backend.model == "ACR HRNet-W32 + MANO (onnxruntime: CPUExecutionProvider)"
    assert backend.precision == "fp32" and "network fp32 (auto: the onnxruntime export is fp32) on cpu" in reason
    frames = backend.reconstruct(IMAGES[:2], [None, None], [0.0, 0.0], ["a", "b"])
    assert [[h.side for h in f.hands] for f in frames] == [[LEFT, RIGHT]] * 2
    # Its threads sleep between runs instead of spinning against the torch stages that follow.
    session_options = backend.pipeline._network.session.get_session_options()
    assert session_options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("settings, hands, prior, images", [
    (dict(), 2, True, IMAGES[2:]),                                                     # odd size, both photos
    (dict(detection_threshold=1.5), 0, False, IMAGES[:2]),                             # above every peak
    (dict(suppress_duplicate_hands=True, duplicate_distance=30.0), 1, False, IMAGES[:2]),  # one kept
], ids=["both", "none", "duplicate"])
def test_onnxruntime_reproduces_torch_on_the_fixtures(ort_backend, torch_pipeline, settings, hands, prior, images):
    """An odd-sized image and both photos with the official settings; the settings that switch hands
    off on two images (the switches are scalar inputs of the graph, the same for every image)."""
    ort_pipe = ort_backend[0].pipeline
    for pipe in (ort_pipe, torch_pipeline):  # both runtimes read the settings on every call
        pipe.detection_threshold = settings.get("detection_threshold", 0.35)
        pipe.fast.suppress_duplicate_hands = settings.get("suppress_duplicate_hands", False)
        pipe.fast.duplicate_distance = settings.get("duplicate_distance", 4.0)
    try:
        ours, lbs = ort_pipe(images)
        expected, expected_lbs = torch_pipeline(images)
    finally:
        for pipe in (ort_pipe, torch_pipeline):
            pipe.detection_threshold = 0.35
            pipe.fast.suppress_duplicate_hands = False
    assert lbs == expected_lbs
    assert ours.detected.sum(1).tolist() == [hands] * len(images)
    assert ours.prior_applied.tolist() == [prior] * len(images)
    assert_same_hands(ours, expected)


def test_acr_export_writes_a_verified_static_model(acr_checkpoint, tmp_path, capsys):
    path = tmp_path / "acr.onnx"
    assert acr_export(["--checkpoint", str(acr_checkpoint), "-o", str(path), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "batch 2, opset 18" in out and "cells and detections identical" in out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert [(i.shape, i.type) for i in session.get_inputs()] == [
        ([2, 3, 512, 512], "tensor(float)"), ([], "tensor(float)"), ([], "tensor(float)")]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    for o in session.get_outputs():
        assert o.type == TYPES[o.name] and o.shape == [2] + SHAPES[o.name], o.name
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["checkpoint"].startswith("wild.pkl:") and meta["batch"] == "2" and meta["input_size"] == "512"
    one = np.zeros((1, 3, 512, 512), np.float32)
    with pytest.raises(Exception, match="images"):  # a fixed batch means that batch only
        session.run(None, {"images": one, "detection_threshold": np.array(0.35, np.float32),
                           "duplicate_distance": np.array(-1.0, np.float32)})


def test_dynamic_export_takes_any_batch(ort_backend):
    session = ort_backend[0].pipeline._network.session
    assert session.get_inputs()[0].shape == ["batch", 3, 512, 512]
    for o in session.get_outputs():
        assert o.shape == ["batch"] + SHAPES[o.name], o.name


def test_export_refuses_what_it_cannot_write():
    net = random_acr_network(0, "both")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(net, batch=1, opset=17)
    with pytest.raises(ValueError, match="batch"):
        export_onnx(net, batch=0)
    with pytest.raises(ValueError, match="export form"):
        export_onnx(FastACR(net, dtype=torch.bfloat16))


def test_providers_are_checked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    available = ["CPUExecutionProvider"]
    assert choose_providers((), cpu, available) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="TensorrtExecutionProvider.*onnxruntime-gpu"):
        choose_providers(("TensorrtExecutionProvider", "CPUExecutionProvider"), cpu, available)
    with pytest.warns(RuntimeWarning, match="no CUDAExecutionProvider"):
        assert choose_providers((), cuda, available) == ["CPUExecutionProvider"]
    assert choose_providers(("CUDAExecutionProvider",), cuda, available + ["CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider"]


def test_the_torch_runtime_loads_no_onnx():
    code = ("import sys, acr_ros.backends.acr, acr_ros.acr.pipeline, acr_ros.acr.precision; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_runtime_export_is_cached_and_read_back(ort_backend, torch_pipeline, mano, onnx_export_cache):
    """The backend's export went to the run's cache; the same weights read it back, with the same hands."""
    _, reason = ort_backend
    assert f"cached as {onnx_export_cache}" in reason or f"read from the cache {onnx_export_cache}" in reason, reason
    again = ACRPipeline(random_acr_network(0, "both"), mano, EngineOptions(device="cpu", runtime="onnxruntime"))
    assert again.onnx_export.startswith(f"ONNX export read from the cache {onnx_export_cache}")
    assert_same_hands(torch_pipeline(IMAGES[:1])[0], again(IMAGES[:1])[0])
    assert export_key(export_form(random_acr_network(1, "both"))) != export_key(again.fast)  # other weights


def tiny_model_exporter(calls: list):
    """A stand-in for export_in_child (the full export takes 10 s): a one-node ONNX model's bytes."""
    import onnx
    from onnx import TensorProto, helper

    def export(fast):
        calls.append(None)
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                 ir_version=onnx.IR_VERSION).SerializeToString()
    return export


def test_an_export_failing_in_its_process_is_an_error_with_its_reason():
    """The runtime exports in a child process (a stop while the node configures kills it at once;
    test_signals.py): what fails there is raised here with the child's last words."""
    with pytest.raises(RuntimeError, match=r"^the ONNX export failed after .* s \(exit code 1\): RuntimeError: "
                       r"Error\(s\) in loading state_dict for ACRNet:$"):
        onnx_export.export_in_child(torch.nn.Identity())  # not an ACRNet: export_form cannot take it


def test_an_unwritable_cache_is_a_warning_and_a_damaged_one_is_exported_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(onnx_export, "export_in_child", tiny_model_exporter(calls))
    fast = export_form(random_acr_network(0, "both"))
    monkeypatch.setenv("ACR_ROS_CACHE_DIR", str(tmp_path / "a_file"))
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="cannot cache the ONNX export in .*a_file/onnx"):
        export = onnx_export.cached_dynamic_export(fast)
    assert export.source == "exported to ONNX (not cached)" and not export.from_cache and calls == [None]

    monkeypatch.setenv("ACR_ROS_CACHE_DIR", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "onnx" / f"acr_{export_key(fast)}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a model")
    with pytest.warns(RuntimeWarning, match="the cached ONNX export does not load"):
        network = OnnxRuntimeNetwork(fast, torch.device("cpu"))
    assert network.export_source == f"exported to ONNX and cached as {cached}" and calls == [None, None]
    assert onnx_export.cached_dynamic_export(fast).from_cache and calls == [None, None]


def test_runtime_auto_keeps_the_faster_and_remembers_it(ort_backend, mano, onnx_export_cache, tmp_path, monkeypatch):
    """runtime auto on a CPU in fp32: torch while no export of the weights is cached; with one, both
    runtimes timed (here with given figures: the test asserts the choice, not this machine's speed),
    the faster kept, the choice remembered per machine and weights; another start builds the
    remembered runtime without timing anything."""
    from acr_ros.acr import runtime_choice

    net = random_acr_network(0, "both")
    fp32 = EngineOptions(device="cpu", precision="fp32", runtime="auto")
    seen = []

    def timed(pipelines, image):
        seen.append(sorted(pipelines))
        return {"torch": 0.9, "onnxruntime": 0.5}

    monkeypatch.setattr(runtime_choice, "_timed", timed)
    monkeypatch.setenv("ACR_ROS_CACHE_DIR", str(tmp_path))
    pipe, why = runtime_choice.auto_runtime(net, mano, fp32, IMAGES[-2:])  # no export here: none made at configure
    assert pipe.providers == () and not seen and "no ONNX export of these weights" in why, why
    # Its own choices (the node tests must not read these figures), the run's export (made once).
    (tmp_path / "onnx").symlink_to(onnx_export_cache / "onnx")
    pipe, why = runtime_choice.auto_runtime(net, mano, fp32, IMAGES[-2:])
    assert seen == [["onnxruntime", "torch"]] and pipe.providers == ("CPUExecutionProvider",)
    assert why.startswith("auto: onnxruntime (onnxruntime 500.0 ms, torch 900.0 ms a frame; measured now"), why
    remembered = runtime_choice.decision_path(net, fp32)
    assert remembered.parent == tmp_path / "runtime" and '"runtime": "onnxruntime"' in remembered.read_text()
    monkeypatch.setattr(runtime_choice, "_timed", None)  # timing again would fail
    again, why = runtime_choice.auto_runtime(net, mano, fp32, IMAGES[-2:])
    assert again.providers == ("CPUExecutionProvider",) and f"{remembered}" in why, why
    remembered.write_text('{"runtime": "torch", "torch_ms": 1, "onnxruntime_ms": 2}')
    assert runtime_choice.auto_runtime(net, mano, fp32, IMAGES[-2:])[0].providers == ()
    # Where onnxruntime cannot run the network as asked: torch, nothing measured.
    for options, reason in [(EngineOptions(device="cpu", precision="bf16", runtime="auto"), "runs in bfloat16"),
                            (EngineOptions(device="cpu", precision="fp32", runtime="auto", compile=True),
                             "torch.compile is on")]:
        pipe, why = runtime_choice.auto_runtime(net, mano, options, IMAGES[-2:])
        assert pipe.providers == () and why.startswith("auto: torch (") and reason in why, why
