"""The ACR network: official checkpoint layout, and the fast inference form equal to the dense one.

Grid sizes come from the tensors, so the fast-vs-dense comparisons run on 256x256 images (center
maps of 32 cells); test_pipeline.py compares the official 512 input through the whole pipeline."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from acr_ros.acr import parser
from acr_ros.acr.hrnet import SegmNet
from acr_ros.acr.network import (ACRNet, FastACR, LocallyConnected, NetworkOutput, _PatchTowers, coord_maps,
                                 decide_with_inputs, fold_batchnorm)
from acr_ros.acr.precision import fp32_without_tf32
from support import reference as ref
from support.official_layout import official_layout
from support.random_weights import random_acr_network

pytestmark = pytest.mark.slow(seconds=8)  # network runs


SIZE = 256          # network input of these tests
GRID = SIZE // 8    # center-map cells


@pytest.fixture(scope="module")
def net():
    # Peaks at the grid corners: the patch towers' masks are exercised, the prior is off (43.8 cells).
    return random_acr_network(0, "both", {"left": (0, GRID - 1), "right": (GRID - 1, 0)}, grid=GRID)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    low = torch.rand(2, 3, 12, 12, generator=g) * 2 - 1
    return F.interpolate(low, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_state_dict_matches_the_official_checkpoint_layout():
    official = official_layout()
    assert len(official) == 2067
    expected = {k: v for k, v in official.items() if not k.startswith("segmentation_layers.")}
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in ACRNet().state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    n_params = sum(p.numel() for p in ACRNet().parameters())
    assert n_params == 30_161_535  # the official 30,249,120 minus the unused segmentation_layers


def test_coordinate_maps_are_the_official_ones():
    assert torch.equal(coord_maps(128), ref.official_coord_maps(128))
    c = coord_maps(128)
    assert c[0, 0, 5, 0] == -1 and c[0, 0, 0, 127] == 1 and c[0, 1, 127, 3] == 1  # x along width


def test_locally_connected_is_the_official_layer():
    lc = LocallyConnected()
    torch.nn.init.normal_(lc.weight)
    f = torch.randn(3, 256, 16)
    official = ref.locally_connected(lc.weight, f.unsqueeze(-1)).squeeze(-1).transpose(2, 1).reshape(3, 96)
    torch.testing.assert_close(lc(f), official, rtol=1e-5, atol=1e-4)


def test_batchnorm_folding_is_exact_in_eval_mode(net):
    trunk = copy.deepcopy(net.backbone)
    del trunk._modules["hand_segm"]
    folded = fold_batchnorm(copy.deepcopy(trunk))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 3, 128, 96) * 2 - 1  # any multiple of 32 works for the trunk alone
    with torch.no_grad():
        a, b = trunk(x), folded(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_segmentation_logits_with_stride_two_are_the_even_pixels():
    segm = SegmNet().eval()
    for m in segm.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
    feat = torch.randn(2, 32, 20, 24)
    with torch.no_grad():
        full = segm(feat)                                   # (2, 33, 40, 48), as the official
        fast = segm(feat, stride=2)                         # (2, 33, 20, 24)
    nearest = F.interpolate(full, scale_factor=(0.5, 0.5), mode="nearest")
    assert fast.shape == nearest.shape == (2, 33, 20, 24)
    torch.testing.assert_close(fast, nearest, rtol=1e-5, atol=1e-5)


def test_patch_towers_equal_the_dense_towers_at_every_kind_of_cell(net):
    """Interior, edge and corner cells: the 19x19 patch with masked padding is the dense tower."""
    folded = fold_batchnorm(copy.deepcopy(net))
    heads = [folded.l_final_layers[1], folded.l_final_layers[3], folded.r_final_layers[4],
             folded.r_final_layers[1], folded.r_final_layers[3], folded.l_final_layers[4]]
    towers = _PatchTowers(heads)
    g = torch.Generator().manual_seed(1)
    x34 = torch.cat([torch.relu(torch.randn(1, 32, 128, 128, generator=g)), coord_maps(128)], 1)
    cells_xy = [((0, 0), (63, 63)), ((63, 0), (0, 63)), ((3, 60), (31, 1)), ((20, 28), (44, 36)), ((4, 4), (59, 59))]
    cells = torch.tensor([[ly * 64 + lx, ry * 64 + rx] for (lx, ly), (rx, ry) in cells_xy])
    b = len(cells_xy)
    with torch.no_grad():
        outs = towers(x34.expand(b, -1, -1, -1), cells)
        dense = [h(x34)[0].flatten(1) for h in heads]      # (C, 4096)
    for k, side in enumerate((0, 0, 0, 1, 1, 1)):
        expected = dense[k][:, cells[:, side]].t()
        torch.testing.assert_close(outs[k], expected, rtol=1e-4, atol=1e-4)


def _dense_at(maps, cells):
    return torch.stack([maps[i].flatten(1)[:, cells[i]] for i in range(len(cells))])


def test_fast_network_equals_the_dense_maps(net, images):
    """Detection from the dense center maps; params, priors and the prior rule at the cells."""
    with torch.no_grad():
        dense = ref.dense_maps(net, images)
        out = FastACR(net)(images)
    # The official parser's detection (support/reference.py) on each image's dense center maps.
    official = [[ref._centers(dense[key][i:i + 1]) for key in ("l_center_map", "r_center_map")]
                for i in range(len(images))]
    detected = torch.tensor([[found[0] for found in row] for row in official])
    cells = torch.tensor([[found[1] for found in row] for row in official])
    scores = torch.tensor([[found[3] for found in row] for row in official])
    assert torch.equal(out.cells, cells) and torch.equal(out.detected, detected)
    torch.testing.assert_close(out.scores, scores, rtol=0, atol=1e-5)
    assert out.detected.all()
    assert cells[:, 0].tolist() == [(GRID - 1) * GRID] * 2 and cells[:, 1].tolist() == [GRID - 1] * 2
    for s, key in enumerate(("l_params_maps", "r_params_maps")):
        expected = _dense_at(dense[key], cells[:, s])
        torch.testing.assert_close(out.params_raw[:, s], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.priors[:, 0], _dense_at(dense["l_prior_maps"], cells[:, 1]), rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(out.priors[:, 1], _dense_at(dense["r_prior_maps"], cells[:, 0]), rtol=1e-4, atol=2e-4)
    assert not out.prior_applied.any()  # 43.8 cells apart
    assert torch.equal(out.params, out.params_raw)


def test_fast_network_is_the_same_without_fusion_and_channels_last(net, images):
    """The fused graph (acr_ros.acr.fusion; oneDNN's fused calls on this CPU) against the plain one."""
    fused = FastACR(net, channels_last=True)
    assert fused.fused and not FastACR(net, fuse=False).fused
    with torch.no_grad():
        a = fused(images)
        b = FastACR(net, channels_last=False, fuse=False)(images)
    for field in ("cells", "detected", "prior_applied"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.params, b.params, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("settings, hands", [
    (dict(), 4),
    (dict(detection_threshold=1.5), 0),                                  # above every peak
    (dict(suppress_duplicate_hands=True, duplicate_distance=80.0), 2),   # one side kept per image
])
def test_detection_settings_as_tensor_inputs_decide_as_the_floats(net, images, settings, hands):
    """What the network's CUDA graph captures (settings as inputs) decides exactly as FastACR."""
    fast = FastACR(net, **settings)
    with torch.no_grad():
        expected = fast(images)
        got = decide_with_inputs(fast, images, *(torch.tensor(value) for value in fast.detection_inputs()))
    assert int(expected.detected.sum()) == hands
    for field in dataclasses.fields(NetworkOutput):
        assert torch.equal(getattr(got, field.name), getattr(expected, field.name)), field.name


def test_fast_network_needs_no_host_synchronisation(net):
    """On the meta device any .item(), nonzero or Python branch on a value would fail."""
    fast = FastACR(net).to("meta")
    out = fast(torch.empty(3, 3, 512, 512, device="meta"))
    assert out.params.shape == (3, 2, 109) and out.detected.shape == (3, 2)
    assert out.prior_applied.shape == (3,)


def test_bfloat16_stays_close_to_float32(net, images):
    """Emulated on the CPU (slow there: no native bf16); the GPU test below does fp16 and bf16."""
    x = images[:1]
    with torch.no_grad():
        a = FastACR(net)(x)
        b = FastACR(net, dtype=torch.bfloat16)(x)
    assert torch.equal(a.cells, b.cells) and torch.equal(a.detected, b.detected)
    assert b.params.dtype == torch.float32
    # bf16 has 8 mantissa bits: several percent of the parameter range on this random model.
    err = (a.params - b.params).abs().max() / a.params.abs().max()
    assert err < 0.3, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_the_gpu_stays_close_to_float32(net, images, dtype):
    # Bounds from the same comparison emulated on the CPU with this random model (fp16: ~1 %,
    # bf16: ~8x more): half-precision activations through the ~100-layer trunk dominate.
    x = images.cuda()
    with torch.inference_mode(), fp32_without_tf32():
        a = FastACR(net).cuda()(x)
        b = FastACR(net, dtype=dtype).cuda()(x)
    assert torch.equal(a.cells, b.cells) and torch.equal(a.detected, b.detected)
    assert torch.isfinite(b.params).all()
    err = (a.params - b.params).abs().max() / a.params.abs().max()
    assert err < (0.05 if dtype == torch.float16 else 0.3), err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_network_does_not_synchronise_the_gpu(net, images):
    fast = FastACR(net, dtype=torch.float16).cuda()
    x = images.cuda()
    with torch.inference_mode():
        fast(x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = fast(x)
            parser.decode_params(out.params)
        finally:
            torch.cuda.set_sync_debug_mode(0)
