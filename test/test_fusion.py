"""The fused graph (acr_ros.acr.fusion, EngineOptions.fused) against the plain BatchNorm-folded one,
on the CPU in fp32: fused convolutions, HRNet's concurrent branches (their CPU path: one after
another; the CUDA streams run in gpu_check's tests), the preprocessing inside the network's stage
and the packed readback. test_pipeline.py checks the default (fused) pipeline against the official
flow; the CUDA versions of these comparisons are at the end (skipped without CUDA)."""
import dataclasses

import numpy as np
import pytest
import torch

from acr_ros.acr import fusion
from acr_ros.acr.hrnet import BasicBlock, Bottleneck, HighResolutionModule, HRNetW32
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.network import fold_batchnorm
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline, HandRows, pack_tensors, unpack_arrays
from acr_ros.acr.preprocess import preprocess_batch, stack_pixels
from support.random_weights import random_acr_network

pytestmark = pytest.mark.slow(seconds=12)  # two pipelines at the official input


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with random weights and BatchNorm statistics (the defaults would fold
    to identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=g)
                tensor.copy_(values + 0.5 if name.endswith("running_var") else (values - 0.5) * 0.4)
    return module.eval()


@pytest.fixture(scope="module")
def trunk() -> HRNetW32:
    trunk = randomised(HRNetW32())
    del trunk._modules["hand_segm"]
    return fold_batchnorm(trunk)


def test_fuse_is_a_pure_transform_keeping_the_checkpoint_names(trunk):
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    kinds = {type(m) for m in trunk.modules()}
    fused = fusion.fuse(trunk)
    assert {type(m) for m in trunk.modules()} == kinds  # the input tree is as it was
    assert all(torch.equal(v, before[k]) for k, v in trunk.state_dict().items())
    assert fused.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in fused.state_dict().items())
    assert not any(v.data_ptr() == trunk.state_dict()[k].data_ptr() for k, v in fused.state_dict().items())
    kinds = [type(m) for m in fused.modules()]
    assert not {BasicBlock, Bottleneck} & set(kinds)
    assert kinds.count(fusion.FusedBottleneck) == 4 and kinds.count(fusion.FusedBasicBlock) == 8 + 48 + 48
    # Every module with parallel branches runs them concurrently; stage 4's last has one output row.
    assert kinds.count(fusion.ConcurrentHighResolutionModule) == 8 and HighResolutionModule not in kinds
    # The transitions' 4 and the fuse layers' inner steps (4 in stage 3, 8 in stage 4).
    assert kinds.count(fusion.ConvReLU) == 4 + 4 + 8
    relus = [m for m in fused.modules() if isinstance(m, torch.nn.Sequential)
             and any(type(c) is torch.nn.ReLU for c in m.children())]
    assert relus == []  # every conv + ReLU pair is one call


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_the_fused_trunk_computes_the_plain_one(trunk, grad):
    """Inference: oneDNN's fused calls where they pass their probe; autograd: the plain path."""
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fused = fusion.fuse(trunk)
    with torch.no_grad():
        expected = trunk(x)
    with torch.set_grad_enabled(grad):
        got = fused(x)
        assert fusion._kind(x) == ("onednn" if fusion.onednn_available() and not grad else "plain")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.double()(x.double()).float(), expected, rtol=1e-4, atol=1e-4)


def test_concurrent_branches_run_in_order_off_cuda():
    module = fold_batchnorm(randomised(HighResolutionModule([8, 16, 32], num_blocks=1)))
    concurrent = fusion.fuse(module)
    assert isinstance(concurrent, fusion.ConcurrentHighResolutionModule)
    g = torch.Generator().manual_seed(2)
    xs = [torch.rand(1, c, 32 // 2 ** i, 32 // 2 ** i, generator=g) for i, c in enumerate((8, 16, 32))]
    with torch.no_grad():
        expected, got = module(xs), concurrent(xs)
    assert len(got) == 3 and concurrent.side_streams.streams == {}  # no stream made on the CPU
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    order = []
    results = fusion.run_concurrently([lambda i=i: order.append(i) or torch.tensor(i) for i in range(3)],
                                      torch.device("cpu"), concurrent.side_streams)
    assert order == [0, 1, 2] and [int(r) for r in results] == [0, 1, 2]


def test_a_packed_readback_is_the_fields_themselves():
    g = torch.Generator().manual_seed(4)
    tensors = [torch.rand(3, 2, 5, generator=g) > 0.5, torch.randint(0, 4096, (3, 2), generator=g),
               torch.rand(3, generator=g), torch.rand(3, 2, 21, 3, generator=g).transpose(1, 2),
               torch.zeros(0, 2), torch.rand(1, 7, generator=g) > 0.2]
    packed, layout = pack_tensors(tensors)
    assert packed.dtype == torch.uint8 and packed.dim() == 1 and all(offset % 8 == 0 for offset, _, _ in layout)
    arrays = unpack_arrays(packed.numpy(), layout)
    for array, tensor in zip(arrays, tensors):
        assert array.dtype == tensor.numpy().dtype and np.array_equal(array, tensor.numpy())


@pytest.fixture(scope="module")
def pipelines(mano_dir):
    net = random_acr_network(0, "both")
    mano = ManoLayer.from_directory(mano_dir)
    options = EngineOptions(device="cpu", precision="fp32", preprocess="device")
    return (ACRPipeline(net, mano, options),
            ACRPipeline(net, mano, dataclasses.replace(options, fused=False)))


def frames(height=360, width=480, count=2):
    rng = np.random.default_rng(height)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_the_preprocessing_in_the_network_stage_is_the_separate_one(pipelines):
    fused, _ = pipelines
    images = frames()
    pixels, lbs = stack_pixels(images, fused.device)
    x, expected_lbs = preprocess_batch(images, fused.device)
    assert lbs == expected_lbs and pixels.dtype == torch.uint8 and pixels.shape == (2, 360, 480, 3)
    a, b = fused.network_from_pixels(pixels), fused.network(x)
    for field in dataclasses.fields(a):
        assert torch.equal(getattr(a, field.name), getattr(b, field.name)), field.name
    assert stack_pixels(images + frames(480, 360, 1), fused.device) is None  # two sizes: separately


def test_the_fused_pipeline_gives_the_plain_results(pipelines):
    """One camera size (pixels in the network's stage) and two sizes (separate preprocessing), with
    the packed readback forced on (on CUDA it is the default): within test_pipeline's tolerances."""
    fused, plain = pipelines
    assert fused.fused and not plain.fused and not fused.packed_readback  # one copy per field on the CPU
    fused.packed_readback = True
    try:
        for images in (frames(), frames(480, 360, 1) + frames(count=1)):
            got, lbs = fused(images)
            expected, expected_lbs = plain(images)
            assert lbs == expected_lbs
            for name in ("detected", "cells", "prior_applied"):
                assert np.array_equal(getattr(got, name), getattr(expected, name)), name
            assert got.detected.all()
            tolerances = {"scores": 1e-5, "cam": 1e-4, "keypoints": 0.5, "joints": 1e-4, "vertices": 1e-4,
                          "translation": 1e-4, "finger_pose": 2e-3, "betas": 1e-3}
            for name, atol in tolerances.items():
                np.testing.assert_allclose(getattr(got, name), getattr(expected, name), atol=atol, rtol=0,
                                           err_msg=name)
            assert {f.name: getattr(got, f.name).dtype for f in dataclasses.fields(HandRows)} == {
                f.name: getattr(expected, f.name).dtype for f in dataclasses.fields(HandRows)}
    finally:
        fused.packed_readback = False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_on_cuda_the_fused_graph_gives_the_plain_results(mano_dir, precision):
    """cuDNN's fused calls, the branches on concurrent streams inside the CUDA graph, the pixels in the
    graph and the packed readback, against the plain graph replayed the same way."""
    from acr_ros.acr.precision import fp32_without_tf32

    net = random_acr_network(0, "both")
    mano = ManoLayer.from_directory(mano_dir)
    options = EngineOptions(device="cuda", precision=precision)
    fused, plain = ACRPipeline(net, mano, options), ACRPipeline(net, mano, dataclasses.replace(options, fused=False))
    assert fused.packed_readback and fused._pixels_network is not None
    images = frames(1080, 1920, 1)
    with fp32_without_tf32():
        for _ in range(2):  # the capture, then a replay
            got, expected = fused(images)[0], plain(images)[0]
    assert np.array_equal(got.detected, expected.detected) and np.array_equal(got.cells, expected.cells)
    atol = 0.5 if precision == "fp32" else 2.0  # fp16: the rounding of two different kernel sequences
    np.testing.assert_allclose(got.keypoints, expected.keypoints, atol=atol, rtol=0)
    assert any(s for m in fused.fast.trunk.modules() if isinstance(m, fusion.ConcurrentHighResolutionModule)
               for s in m.side_streams.streams.values())
