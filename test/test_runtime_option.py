"""The runtime and precision choices: validated options, reachable from the CLI and the node, the
CPU's instruction sets and what precision "auto" picks on a CPU (random weights: not hands)."""
import dataclasses

import numpy as np
import pytest
import torch

from acr_ros.acr import hardware, precision
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.options import EngineOptions, parse_providers
from acr_ros.acr.pipeline import HandRows, uses_cuda_graphs
from acr_ros.offline import main as acr_offline
from support.random_weights import random_acr_network

pytestmark = pytest.mark.slow(seconds=9)  # network runs


def test_runtime_options_are_validated():
    assert EngineOptions(runtime="onnxruntime", onnx_providers=["CPUExecutionProvider"]).onnx_providers == (
        "CPUExecutionProvider",)
    for bad, match in [(dict(runtime="tensorrt"), "runtime must be one of"),
                       (dict(runtime="onnxruntime", precision="fp16"), "fp32 export"),
                       (dict(runtime="onnxruntime", cuda_graphs=True), "runtime torch only"),
                       (dict(cuda_graphs="yes"), "cuda_graphs must be True, False or 'auto'"),
                       (dict(runtime="onnxruntime", onnx_providers="CPUExecutionProvider"), "sequence of names"),
                       (dict(onnx_providers=["CPUExecutionProvider"]), r"runtime onnxruntime \(or auto\) only")]:
        with pytest.raises(ValueError, match=match):
            EngineOptions(**bad)
    assert parse_providers(" TensorrtExecutionProvider,CPUExecutionProvider ,") == (
        "TensorrtExecutionProvider", "CPUExecutionProvider")
    assert parse_providers("") == ()


def test_cli_passes_the_runtime_and_providers_to_the_engine(acr_checkpoint, mano_dir, tmp_path, capsys):
    code = acr_offline(["--inputs", str(tmp_path), "--backend", "acr", "--checkpoint", str(acr_checkpoint),
                        "--mano-dir", str(mano_dir), "--runtime", "onnxruntime",
                        "--onnx-providers", "NopeExecutionProvider", "-o", str(tmp_path / "out")])
    assert code == 2
    assert "NopeExecutionProvider not available" in capsys.readouterr().err


@pytest.mark.parametrize("params, expected", [
    (dict(runtime="onnxruntime", onnx_providers="NopeExecutionProvider"), "NopeExecutionProvider not available"),
    (dict(runtime="onnxruntime", precision="bf16"), "fp32 export"),
    (dict(runtime="tensorrt"), "runtime"),
])
def test_node_passes_the_runtime_and_providers_to_the_engine(acr_checkpoint, mano_dir, tmp_path, params, expected):
    from support.ros_harness import NodeProcess

    process = NodeProcess("acr_ros.hands_node", dict(backend="acr", checkpoint=str(acr_checkpoint),
                                                     mano_dir=str(mano_dir), **params), tmp_path, name="runtime")
    code = process.process.wait(timeout=120)
    log = process.log()
    assert code != 0 and expected in log and "Traceback" not in log, log


def test_instruction_sets_come_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"}))
    assert hardware.instruction_sets() == {"AVX2": True, "AVX-512": True, "AVX512-BF16": False,
                                           "AMX-BF16": True, "AMX-TILE": True}
    assert hardware.has_native_bf16()
    assert "AMX-BF16 yes" in hardware.describe_cpu() and "AVX512-BF16 no" in hardware.describe_cpu()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not hardware.has_native_bf16()


def _rows(keypoints=0.0, joints=0.0, detected=((True, True),)) -> HandRows:
    detected = np.array(detected)
    b = len(detected)
    return HandRows(detected=detected, scores=np.ones((b, 2)), cells=np.zeros((b, 2), int),
                    prior_applied=np.zeros(b, bool), cam=np.zeros((b, 2, 3)), orient_matrix=np.zeros((b, 2, 3, 3)),
                    global_orient=np.zeros((b, 2, 3)), finger_pose=np.zeros((b, 2, 45)),
                    betas=np.zeros((b, 2, 10)), joints=np.full((b, 2, 21, 3), joints),
                    vertices=np.zeros((b, 2, 778, 3)), joint_rotations=np.zeros((b, 2, 21, 3, 3)),
                    keypoints=np.full((b, 2, 21, 2), keypoints), translation=np.zeros((b, 2, 3)))


def test_deviation_is_the_largest_difference_over_hands_both_detected():
    tolerance = precision.HALF_PRECISION_TOLERANCE
    same = precision.deviation(_rows(), _rows(keypoints=0.4, joints=0.0009))
    assert same.keypoints_px == pytest.approx(0.4) and same.joints_mm == pytest.approx(0.9)
    assert same.compared_hands == 2 and same.within(tolerance)
    assert not precision.deviation(_rows(), _rows(keypoints=1.5)).within(tolerance)
    assert not precision.deviation(_rows(), _rows(joints=0.0011)).within(tolerance)
    swapped = precision.deviation(_rows(detected=((True, False),)), _rows(detected=((False, True),)))
    assert swapped.detections_agree and not swapped.sides_agree and not swapped.within(tolerance)
    lost = precision.deviation(_rows(), _rows(keypoints=100.0, detected=((True, False),)))
    assert not lost.detections_agree and lost.compared_hands == 1 and lost.keypoints_px == pytest.approx(100)


@pytest.fixture(scope="module")
def auto_inputs(mano_dir):
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    return random_acr_network(0, "both"), ManoLayer.from_directory(mano_dir), [image]


def test_auto_on_a_cpu_without_native_bf16_is_fp32_unmeasured(monkeypatch, auto_inputs):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(precision, "deviation", None)  # measuring would fail
    net, mano, images = auto_inputs
    pipe, why = precision.auto_pipeline(net, mano, EngineOptions(device="cpu"), images)
    assert pipe.options.precision == "fp32" and why == "auto: this CPU has no native bf16 (AMX or AVX512-BF16)"


def test_auto_keeps_bf16_only_within_the_tolerance(monkeypatch, auto_inputs):
    """Random weights move 60+ px in bf16: fp32 with the issue's tolerance, bf16 with a huge one."""
    net, mano, images = auto_inputs
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    options = EngineOptions(device="cpu")
    pipe, why = precision.auto_pipeline(net, mano, options, images)
    assert pipe.options.precision == "fp32" and why.startswith("auto: bf16 would move the results beyond 1 px")
    assert "over 2 hands, detections agree" in why
    loose = dataclasses.replace(precision.HALF_PRECISION_TOLERANCE, keypoints_px=1e4, joints_mm=1e6, vertices_mm=1e6)
    pipe, why = precision.auto_pipeline(net, mano, options, images, loose)
    assert pipe.options.precision == "bf16" and why.startswith("auto: native bf16, against fp32 on 1 calibration")
    pipe, why = precision.auto_pipeline(net, mano, options, [])
    assert pipe.options.precision == "fp32" and "no calibration images" in why


@pytest.mark.parametrize("value, expected", [(True, "auto"), (False, False)])
def test_the_node_cuda_graphs_parameter_reaches_the_engine(value, expected):
    import rclpy
    from rclpy.parameter import Parameter

    from acr_ros.hands_node import HandsNode
    from acr_ros.node.parameters import engine_options
    from support.fake_backend import FakeBackend

    context = rclpy.Context()
    rclpy.init(context=context)
    node = HandsNode(backend_factory=lambda: (FakeBackend(), "test backend"), context=context,
                     parameter_overrides=[Parameter("cuda_graphs", value=value)])
    try:
        options = engine_options(lambda name: node.get_parameter(name).value)  # what configure loads with
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert options.cuda_graphs == expected
    assert not uses_cuda_graphs(options, torch.device("cpu"))  # true means "where they apply": no refusal here
