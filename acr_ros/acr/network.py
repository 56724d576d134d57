"""The ACR network (HRNet-W32 + part attention + two-hand heads) and its fast inference form.

:class:`ACRNet` is a tree of plain modules whose state_dict keys are the official checkpoint keys
(official acr/model.py, class ``ACR``) without ``module.`` (``segmentation_layers`` is left out: the
official model builds it but never uses it). It holds weights only: inference runs through FastACR.

:class:`FastACR` is built from a loaded :class:`ACRNet` and computes the same results with less
work and no GPU->CPU synchronisation:

* BatchNorm folded into the preceding convolutions (eval mode, so this is exact up to rounding);
* with ``fuse`` (the default), the fused graph of acr_ros.acr.fusion: one call per convolution +
  bias (+ residual) + ReLU (oneDNN on the CPU, cuDNN on CUDA), HRNet's branches on concurrent
  CUDA streams;
* the segmentation logits evaluated only at the even pixels the attention reads (last conv with
  stride 2, which is the official nearest x0.5 downsampling);
* only the two center-map towers run densely; the params, cam and prior towers are evaluated on a
  19x19 patch of the 128-grid features around the cell that is read (their whole receptive field,
  with the zero padding of every layer reproduced by masks), and the pointwise 218->109 fusion
  only at that cell;
* the shape features are pooled through the 1x1 conv's linearity (softmax weights sum to 1);
* fixed rows [left, right] per image with masks instead of data-dependent shapes.

Grid sizes are read from the tensors (128 and 64 for the official 512 input), so smaller inputs
run the same computation at a smaller scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from acr_ros.acr import fusion, parser
from acr_ros.acr.hrnet import BN_EPS, BasicBlock, HRNetW32
from acr_ros.acr.options import DETECTION_THRESHOLD, DUPLICATE_DISTANCE

NUM_PARAMS = 109     # cam 3 + global orient 6 + 15 x 6 finger joints + 10 betas
NUM_PRIOR = 106      # params without cam
NUM_PARTS = 16       # attention parts per hand
PATCH = 19           # backbone-grid rows/cols a head tower reads for one output cell
TOWER_RADIUS = 4     # output cells each side of the read cell that the 3x3 convs reach
NO_SUPPRESSION = -1.0  # the duplicate_distance of decide() that switches duplicate suppression off


@dataclass
class NetworkOutput:
    """FastACR's fixed-size result, rows [left, right] per image (B images)."""

    scores: torch.Tensor         # (B, 2) raw center-map peak after NMS
    cells: torch.Tensor          # (B, 2) int64 flat index of the peak in the output grid
    detected: torch.Tensor       # (B, 2) bool: score > threshold, after optional duplicate suppression
    params: torch.Tensor         # (B, 2, 109) final parameters (prior added where the official rule applies)
    params_raw: torch.Tensor     # (B, 2, 109) before the prior
    priors: torch.Tensor         # (B, 2, 106) the prior each hand would get
    prior_applied: torch.Tensor  # (B,) bool


@dataclass
class RawOutput:
    """FastACR's result before the detection settings are applied (see :func:`decide`)."""

    scores: torch.Tensor         # (B, 2) raw center-map peak after NMS
    cells: torch.Tensor          # (B, 2) int64 flat index of the peak in the output grid
    params_raw: torch.Tensor     # (B, 2, 109) before the prior
    priors: torch.Tensor         # (B, 2, 106) the prior each hand would get
    map_size: int                # side of the output grid (64 for the 512 input)


def coord_maps(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, 2, size, size): channel 0 = x (varies along the width), channel 1 = y, in [-1, 1]."""
    r = torch.arange(size, dtype=torch.float32, device=device) / (size - 1) * 2 - 1
    xx = r.view(1, 1, 1, size).expand(1, 1, size, size)
    yy = r.view(1, 1, size, 1).expand(1, 1, size, size)
    return torch.cat([xx, yy], 1).to(dtype)


def make_head(out_channels: int, in_channels: int = 34, width: int = 64) -> nn.Sequential:
    """One global head: 3x3 stride-2 conv + BN + ReLU, two BasicBlocks, 1x1 conv (64x64 output)."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1), nn.BatchNorm2d(width, eps=BN_EPS), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Sequential(BasicBlock(width, width)), nn.Sequential(BasicBlock(width, width))),
        nn.Conv2d(width, out_channels, 1),
    )


class LocallyConnected(nn.Module):
    """The official ``LocallyConnected2d`` on a (B, 256, 16, 1) input with 1x1 kernels: one linear
    map per joint. Weight (1, out, in, 16, 1, 1), no bias."""

    def __init__(self, in_channels: int = 256, out_channels: int = 6, joints: int = NUM_PARTS):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, out_channels, in_channels, joints, 1, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, in, J) -> (B, J * out), joint-major (index j * out + o)."""
        w = self.weight[0, :, :, :, 0, 0]                       # (out, in, J)
        return torch.einsum("ocj,bcj->bjo", w, feats).reshape(feats.shape[0], -1)


class ACRNet(nn.Module):
    """ACR with the official attribute layout (checkpoint keys minus ``module.``)."""

    def __init__(self):
        super().__init__()
        self.backbone = HRNetW32()
        self.l_final_layers = nn.ModuleList([None, make_head(NUM_PRIOR), make_head(1), make_head(3),
                                             make_head(NUM_PRIOR)])
        self.r_final_layers = nn.ModuleList([None, make_head(NUM_PRIOR), make_head(1), make_head(3),
                                             make_head(NUM_PRIOR)])
        self.contact_layers = nn.ModuleList([
            None,
            nn.Sequential(nn.Conv2d(34, 256, 3, 1, 1), nn.BatchNorm2d(256, eps=BN_EPS), nn.ReLU(inplace=True)),
            LocallyConnected(), LocallyConnected(),
            nn.Conv2d(2 * NUM_PARAMS, NUM_PARAMS, 1), nn.Conv2d(2 * NUM_PARAMS, NUM_PARAMS, 1),
        ])
        self.cam_shape_layers = nn.ModuleList([
            None, nn.Sequential(nn.Conv2d(256, 64, 1)), nn.Linear(64 * NUM_PARTS, 10), nn.Linear(64 * NUM_PARTS, 10),
        ])
        self.eval()

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "ACRNet":
        """An eval-mode ACRNet holding exactly these tensors (every key, strictly). Built on the
        meta device: no random initialisation is computed only to be overwritten."""
        with torch.device("meta"):
            net = cls()
        net.load_state_dict(state, strict=True, assign=True)
        return net.eval()


# ------------------------------------------------------------------------------------------------
# BatchNorm folding


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """In place: every Conv2d directly followed (as the next child of the same parent) by a
    BatchNorm2d absorbs it; the BatchNorm becomes Identity. Eval-mode semantics."""
    names = list(module._modules.keys())
    for a, b in zip(names, names[1:]):
        conv, bn = module._modules[a], module._modules[b]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[a] = _folded_conv(conv, bn)
            module._modules[b] = nn.Identity()
    for child in module._modules.values():
        if child is not None:
            fold_batchnorm(child)
    return module


@torch.no_grad()
def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    with torch.device("meta"):  # its parameters are assigned below
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    new.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).float())
    new.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + bn.bias.double()).float())
    return new


# ------------------------------------------------------------------------------------------------
# Fast inference


class _PatchTowers(nn.Module):
    """Six folded head towers evaluated only at one 64-grid cell per image and side.

    Group 0 reads the 19x19 patch around the left cell: [params_L, cam_L, prior_R]; group 1 the
    patch around the right cell: [params_R, cam_R, prior_L] (the prior of one hand is read at the
    OTHER hand's center). All six run as grouped convolutions without padding; masks zero every
    position outside the output map, which is exactly what the dense towers' zero padding sees.
    """

    OUT = (NUM_PRIOR, 3, NUM_PRIOR, NUM_PRIOR, 3, NUM_PRIOR)

    @torch.no_grad()
    def __init__(self, towers: list[nn.Sequential]):
        super().__init__()
        assert len(towers) == 6
        w = 64
        first = [t[0][0] for t in towers]
        self.conv0 = nn.Conv2d(2 * 34, 6 * w, 3, 2, 0, groups=2)
        self.conv0.weight.copy_(torch.cat([c.weight for c in first]))
        self.conv0.bias.copy_(torch.cat([c.bias for c in first]))
        self.convs = nn.ModuleList()
        for blk in range(2):
            for name in ("conv1", "conv2"):
                convs = [getattr(t[1][blk][0], name) for t in towers]
                c = nn.Conv2d(6 * w, 6 * w, 3, 1, 0, groups=6)
                c.weight.copy_(torch.cat([k.weight for k in convs]))
                c.bias.copy_(torch.cat([k.bias for k in convs]))
                self.convs.append(c)
        final_w = torch.zeros(6, NUM_PRIOR, w)
        final_b = torch.zeros(6, NUM_PRIOR)
        for k, t in enumerate(towers):
            o = t[2].weight.shape[0]
            final_w[k, :o] = t[2].weight[:, :, 0, 0]
            final_b[k, :o] = t[2].bias
        self.register_buffer("final_w", final_w)
        self.register_buffer("final_b", final_b)

    def forward(self, x34: torch.Tensor, cells: torch.Tensor) -> list[torch.Tensor]:
        """x34 (B, 34, F, F) backbone features (F = 128 at 512 input); cells (B, 2) flat indices
        [left, right] of the F/2 output grid. Returns six float32 tensors (B, out) in the order of
        the class docstring."""
        b, feat_size = x34.shape[0], x34.shape[-1]
        map_size = feat_size // 2
        dev = x34.device
        cy, cx = parser.cell_yx(cells, map_size)
        offs = torch.arange(PATCH, device=dev) - (PATCH // 2)
        rows = (2 * cy).unsqueeze(-1) + offs                                   # (B,2,19) 128-grid
        cols = (2 * cx).unsqueeze(-1) + offs
        inside = ((rows >= 0) & (rows < feat_size)).unsqueeze(-1) & ((cols >= 0) & (cols < feat_size)).unsqueeze(-2)
        bidx = torch.arange(b, device=dev).view(b, 1, 1, 1)
        nhwc = x34.permute(0, 2, 3, 1)
        patch = nhwc[bidx, rows.clamp(0, feat_size - 1).unsqueeze(-1), cols.clamp(0, feat_size - 1).unsqueeze(-2)]
        patch = patch * inside.unsqueeze(-1).to(patch.dtype)                   # (B,2,19,19,34)
        patch = patch.permute(0, 1, 4, 2, 3).reshape(b, 2 * 34, PATCH, PATCH)
        patch = patch.contiguous(memory_format=torch.channels_last) if x34.is_contiguous(
            memory_format=torch.channels_last) else patch.contiguous()

        coffs = torch.arange(-TOWER_RADIUS, TOWER_RADIUS + 1, device=dev)
        ry, rx = cy.unsqueeze(-1) + coffs, cx.unsqueeze(-1) + coffs            # (B,2,9)
        valid = (((ry >= 0) & (ry < map_size)).unsqueeze(-1) & ((rx >= 0) & (rx < map_size)).unsqueeze(-2))
        valid = valid.to(patch.dtype).unsqueeze(2)                             # (B,2,1,9,9)

        def mask(h: torch.Tensor) -> torch.Tensor:
            n = h.shape[-1]
            k = (2 * TOWER_RADIUS + 1 - n) // 2
            m = valid[..., k:k + n, k:k + n]
            return (h.reshape(b, 2, -1, n, n) * m).reshape(b, -1, n, n)

        h = mask(F.relu(self.conv0(patch)))                                   # 9x9
        for blk in range(2):
            c1, c2 = self.convs[2 * blk], self.convs[2 * blk + 1]
            t = mask(F.relu(c1(h)))                                            # 7 / 3
            h = F.relu(c2(t) + h[:, :, 2:-2, 2:-2])                            # 5 / 1
            if blk == 0:
                h = mask(h)
        feat = h.reshape(b, 6, -1).float()                                     # (B,6,64)
        out = torch.einsum("bkc,koc->bko", feat, self.final_w) + self.final_b  # (B,6,106)
        return [out[:, k, :o] for k, o in enumerate(self.OUT)]


class FastACR(nn.Module):
    """Inference form of a loaded :class:`ACRNet` (see the module docstring).

    ``forward(x)`` takes normalised images (B, 3, 512, 512) and returns a :class:`NetworkOutput`
    (fixed-size tensors, rows [left, right] per image) with no host synchronisation.

    ``dtype`` float16/bfloat16 runs the convolutions in that precision with fp32 softmax, pooling
    and the small fully-connected parts; the center maps and parameters come out as float32.
    ``fuse`` False keeps the plain folded graph (what the exports trace; the fused graph's reference).
    """

    def __init__(self, net: ACRNet, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                 detection_threshold: float = DETECTION_THRESHOLD,
                 suppress_duplicate_hands: bool = False, duplicate_distance: float = DUPLICATE_DISTANCE,
                 fuse: bool = True):
        super().__init__()
        # A copy of its own (its tensors cloned: cheaper than deepcopy), folded in place.
        net = ACRNet.from_state_dict({k: v.detach().clone() for k, v in net.state_dict().items()}).float()
        fold_batchnorm(net)
        self.fused = bool(fuse)
        self.dtype = dtype
        self.channels_last = channels_last
        self.detection_threshold = float(detection_threshold)
        self.suppress_duplicate_hands = bool(suppress_duplicate_hands)
        self.duplicate_distance = float(duplicate_distance)
        with torch.no_grad():
            bb = net.backbone
            segm = bb.hand_segm
            del bb._modules["hand_segm"]
            self.trunk = bb
            self.segm = segm
            self.center_l = net.l_final_layers[2]
            self.center_r = net.r_final_layers[2]
            self.contact = net.contact_layers[1]
            self.towers = _PatchTowers([
                net.l_final_layers[1], net.l_final_layers[3], net.r_final_layers[4],
                net.r_final_layers[1], net.r_final_layers[3], net.l_final_layers[4],
            ])
            if self.fused:  # after the towers took their weights
                self.trunk, self.segm, self.center_l, self.center_r, self.contact = (
                    fusion.fuse(m) for m in (self.trunk, self.segm, self.center_l, self.center_r, self.contact))
            # fp32 small parts, [left, right]
            proj = net.cam_shape_layers[1][0]
            self.register_buffer("shape_proj_w", proj.weight[:, :, 0, 0].clone())        # (64,256)
            self.register_buffer("shape_proj_b", proj.bias.clone())
            self.register_buffer("lc_w", torch.stack([net.contact_layers[i].weight[0, :, :, :, 0, 0] for i in (2, 3)]))
            self.register_buffer("shape_w",  # (2,10,1024)
                                 torch.stack([net.cam_shape_layers[i].weight for i in (2, 3)]))
            self.register_buffer("shape_b", torch.stack([net.cam_shape_layers[i].bias for i in (2, 3)]))
            self.register_buffer("fuse_w",  # (2,109,218)
                                 torch.stack([net.contact_layers[i].weight[:, :, 0, 0] for i in (4, 5)]))
            self.register_buffer("fuse_b", torch.stack([net.contact_layers[i].bias for i in (4, 5)]))
        for m in (self.trunk, self.segm, self.center_l, self.center_r, self.contact, self.towers.conv0,
                  self.towers.convs):
            m.to(dtype)
            if channels_last:
                m.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def _pool(self, logits: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax-over-space attention: (B,32,128,128) logits, (B,256,128,128) features ->
        pose features (B,2,256,16) and shape features (B,2,64,16), [left, right], float32."""
        b = logits.shape[0]
        a = F.softmax(logits.float().flatten(2), dim=-1)                        # (B,32,HW)
        f = f1.float().flatten(2).transpose(1, 2)                               # (B,HW,256)
        p1 = torch.bmm(a, f)                                                    # (B,32,256)
        p2 = torch.matmul(p1, self.shape_proj_w.t()) + self.shape_proj_b        # (B,32,64) by linearity
        # parts 0-15 (segm channels 1-16) are the right hand, 16-31 the left
        p1 = p1.view(b, 2, NUM_PARTS, -1).flip(1).transpose(2, 3)               # (B,2,256,16) [L,R]
        p2 = p2.view(b, 2, NUM_PARTS, -1).flip(1).transpose(2, 3)               # (B,2,64,16)
        return p1, p2

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        distance = self.duplicate_distance if self.suppress_duplicate_hands else None
        return decide(self.raw(x), self.detection_threshold, distance)

    def detection_inputs(self) -> tuple[float, float]:
        """The detection settings as the inputs of :func:`decide_with_inputs` (and of the ONNX
        export): the threshold, and the duplicate distance or NO_SUPPRESSION."""
        distance = self.duplicate_distance if self.suppress_duplicate_hands else NO_SUPPRESSION
        return self.detection_threshold, distance

    def raw(self, x: torch.Tensor) -> RawOutput:
        """Everything that does not depend on the detection settings."""
        b = x.shape[0]
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feat = self.trunk(x)                                                    # (B,32,128,128)
        coords = coord_maps(feat.shape[-1], feat.device, feat.dtype)
        x34 = torch.cat([feat, coords.expand(b, -1, -1, -1)], 1)
        if self.channels_last:
            x34 = x34.contiguous(memory_format=torch.channels_last)
        centers = torch.cat([self.center_l(x34), self.center_r(x34)], 1).float()   # (B,2,64,64)
        scores, cells = parser.peak_centers(centers)

        # part branch: attention-pooled features -> pose (96) and shape (10) offsets per side
        logits = self.segm(feat, stride=2)[:, 1:]
        p1, p2 = self._pool(logits, self.contact(x34))
        pose = torch.einsum("socj,sbcj->sbjo", self.lc_w, p1.transpose(0, 1)).reshape(2, b, 96)
        shape = torch.einsum("sok,sbk->sbo", self.shape_w, p2.transpose(0, 1).flatten(2)) + self.shape_b[:, None]

        # head towers at the read cells
        params_l, cam_l, prior_r, params_r, cam_r, prior_l = self.towers(x34, cells)
        cam = torch.stack([cam_l, cam_r])                                      # (2,B,3)
        cam = torch.cat([torch.pow(1.1, cam[..., :1]), cam[..., 1:]], -1)
        g = torch.cat([cam, torch.stack([params_l, params_r])], -1)            # (2,B,109)
        fused_in = torch.cat([g, cam, pose, shape], -1)                        # (2,B,218)
        fused = torch.einsum("soi,sbi->sbo", self.fuse_w, fused_in) + self.fuse_b[:, None]
        params_raw = fused.transpose(0, 1)                                     # (B,2,109)
        priors = torch.stack([prior_l, prior_r], 1)                            # (B,2,106)
        return RawOutput(scores, cells, params_raw, priors, centers.shape[-1])


def decide_with_inputs(fast: FastACR, x: torch.Tensor, detection_threshold: torch.Tensor,
                       duplicate_distance: torch.Tensor) -> NetworkOutput:
    """``fast(x)`` with the detection settings as 0-d tensors (:meth:`FastACR.detection_inputs`):
    what a CUDA graph captures, so that changing a setting needs no other graph."""
    return decide(fast.raw(x), detection_threshold, duplicate_distance)


def decide(raw: RawOutput, detection_threshold, duplicate_distance=None) -> NetworkOutput:
    """The official detection rule (score > threshold) and cross-hand prior on a :class:`RawOutput`.

    detection_threshold and duplicate_distance are floats or 0-d tensors (inputs of the ONNX
    export); duplicate_distance None: no duplicate suppression (the official behaviour)."""
    detected = raw.scores > detection_threshold
    if duplicate_distance is not None:
        detected = parser.suppress_duplicates(raw.scores, raw.cells, detected, raw.map_size, duplicate_distance)
    applied = parser.prior_applies(raw.cells, detected, raw.map_size)
    with_prior = torch.cat([raw.params_raw[..., :3], raw.params_raw[..., 3:] + raw.priors], -1)
    params = torch.where(applied[:, None, None], with_prior, raw.params_raw)
    return NetworkOutput(scores=raw.scores, cells=raw.cells, detected=detected, params=params,
                         params_raw=raw.params_raw, priors=raw.priors, prior_applied=applied)
