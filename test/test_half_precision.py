"""bf16 against fp32 on weights whose activations behave like a trained network's
(support.calibrated_weights: BatchNorm statistics from the bundled photos), and what precision auto
makes of them. The figures for both weight sets, fp16 too: benchmarks/half_precision.py."""
import numpy as np
import pytest
import torch

from acr_ros.acr import hardware, precision
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline
from acr_ros.backends.acr import calibration_images
from support.calibrated_weights import calibrated_acr_network, calibration_batch

pytestmark = pytest.mark.slow(seconds=20)  # the calibration pass, then fp32 and bf16 on two photos


@pytest.fixture(scope="module")
def calibrated(mano_dir):
    return calibrated_acr_network(0, "both"), ManoLayer.from_directory(mano_dir)


def test_the_calibrated_weights_normalise_real_photos(calibrated):
    """On photos it was not calibrated on, every BatchNorm of the trunk normalises to about zero mean
    and unit variance, as in a trained network."""
    net, _ = calibrated
    normalised = []

    def record(bn, inputs, output):
        z = (output - bn.bias[None, :, None, None]) / bn.weight[None, :, None, None]
        normalised.append((float(z.mean()), float(z.std())))

    bns = [m for name, m in net.backbone.named_modules()
           if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith("hand_segm")]
    hooks = [bn.register_forward_hook(record) for bn in bns]
    try:
        with torch.no_grad():
            net.backbone(calibration_batch(1, seed=11))  # other crops than the calibration's
    finally:
        for h in hooks:
            h.remove()
    means, stds = np.array(normalised).T
    assert len(normalised) == len(bns) > 250
    assert np.abs(means).max() < 0.5 and 0.5 < stds.min() and stds.max() < 1.5, (means, stds)


def test_bf16_on_calibrated_weights_and_what_auto_makes_of_it(calibrated, monkeypatch):
    """What precision auto measures at configure (the bundled photos), on the stand-in for a trained
    network: bf16 moves the joints and vertices well within 1 mm and the keypoints by 0.5-2 px (random
    weights: 60-160 px, 40-130 mm; benchmarks/half_precision.py), and auto keeps bf16 on a CPU with
    native bf16 exactly when that measurement is within the tolerance (emulated elsewhere: the
    same rounding, slower)."""
    net, mano = calibrated
    images = calibration_images()
    fp32 = ACRPipeline(net, mano, EngineOptions(device="cpu", precision="fp32"))
    bf16 = ACRPipeline(net, mano, EngineOptions(device="cpu", precision="bf16"))
    measured = precision.deviation(fp32(images)[0], bf16(images)[0])
    tolerance = precision.HALF_PRECISION_TOLERANCE
    assert measured.compared_hands == 2 * len(images) == 4 and measured.sides_agree
    assert measured.joints_mm < tolerance.joints_mm and measured.vertices_mm < tolerance.vertices_mm, measured.summary()
    assert measured.keypoints_px < 5 * tolerance.keypoints_px, measured.summary()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    pipe, why = precision.auto_pipeline(net, mano, EngineOptions(device="cpu"), images)
    assert why.endswith(measured.summary()), why  # the same measurement decided
    assert pipe.options.precision == ("bf16" if measured.within(tolerance) else "fp32"), why
