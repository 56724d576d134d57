"""HRNet-W32 trunk and the part-segmentation net of ACR, laid out so that the module attribute
names are the keys of the official checkpoint (``backbone.*`` minus the prefix).

Only the structure is here; ``network.py`` assembles the full model and ``checkpoint.py`` loads it.
The input of :class:`HRNetW32` is the already normalised image (B, 3, 512, 512) in [-1, 1]; the
official code normalises inside the backbone, we do it in preprocessing.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class HighResolutionModule(nn.Module):
    """One HRNet exchange unit: parallel BasicBlock branches, then multi-resolution fusion."""

    def __init__(self, channels: list[int], num_blocks: int = 4, multi_scale_output: bool = True):
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(num_blocks)]) for c in channels
        )
        self.fuse_layers = self._make_fuse_layers(channels, multi_scale_output)
        self.relu = nn.ReLU(inplace=False)

    @staticmethod
    def _make_fuse_layers(channels: list[int], multi_scale_output: bool) -> Optional[nn.ModuleList]:
        n = len(channels)
        if n == 1:
            return None
        layers = []
        for i in range(n if multi_scale_output else 1):
            row: list[Optional[nn.Module]] = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(
                        nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                        nn.BatchNorm2d(channels[i], eps=BN_EPS),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    row.append(None)
                else:
                    chain = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        mods: list[nn.Module] = [conv3x3(channels[j], cout, 2), nn.BatchNorm2d(cout, eps=BN_EPS)]
                        if not last:
                            mods.append(nn.ReLU(inplace=True))
                        chain.append(nn.Sequential(*mods))
                    row.append(nn.Sequential(*chain))
            layers.append(nn.ModuleList(row))
        return nn.ModuleList(layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            out.append(self.relu(y))
        return out


def _transition(cin: list[int], cout: list[int]) -> nn.ModuleList:
    layers: list[Optional[nn.Module]] = []
    for i, c in enumerate(cout):
        if i < len(cin):
            if c != cin[i]:
                layers.append(nn.Sequential(conv3x3(cin[i], c), nn.BatchNorm2d(c, eps=BN_EPS), nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            chain = []
            for k in range(i + 1 - len(cin)):
                co = c if k == i - len(cin) else cin[-1]
                chain.append(nn.Sequential(conv3x3(cin[-1], co, 2), nn.BatchNorm2d(co, eps=BN_EPS),
                                           nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*chain))
    return nn.ModuleList(layers)


class DoubleConv(nn.Module):
    """(conv3x3 + BN + ReLU) x 2 with conv biases; ``truncate`` keeps only the first layers."""

    def __init__(self, cin: int, cout: int, mid: Optional[int] = None, truncate: Optional[int] = None):
        super().__init__()
        mid = mid or cout
        layers = [
            nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid, eps=BN_EPS), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=BN_EPS), nn.ReLU(inplace=True),
        ]
        self.double_conv = nn.Sequential(*layers[:truncate])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = DoubleConv(cin, cout, cin // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv(x)


class _UpSampler(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up1 = _Up(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x)


class _SegmHead(nn.Module):
    def __init__(self, cin: int = 32, hidden: int = 64, classes: int = 33):
        super().__init__()
        self.upsampler = _UpSampler(cin, hidden)
        self.segm_net = DoubleConv(hidden, classes, truncate=4)


class SegmNet(nn.Module):
    """Part segmentation: 32@128 -> bilinear x2 -> 33 logits @256 (channel 0 background,
    1-16 right-hand parts, 17-32 left-hand parts)."""

    def __init__(self, classes: int = 33):
        super().__init__()
        self.segm_head = _SegmHead(32, 64, classes)

    def hidden(self, feat: torch.Tensor) -> torch.Tensor:
        """Everything before the last conv: (B, 33, 256, 256) post-ReLU features."""
        h = self.segm_head.upsampler(feat)
        dc = self.segm_head.segm_net.double_conv
        return dc[2](dc[1](dc[0](h)))

    def forward(self, feat: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """Logits at 256x256 (stride 1, as the official) or only at the even pixels (stride 2),
        which is exactly the nearest x0.5 downsampling the attention uses."""
        last = self.segm_head.segm_net.double_conv[3]
        return F.conv2d(self.hidden(feat), last.weight, last.bias, stride, 1)


class HRNetW32(nn.Module):
    """HRNet-W32 (stem, layer1, stages 2-4; the last stage outputs branch 0 only): 32@128x128
    from a normalised 512x512 image. ``hand_segm`` is the segmentation net hanging off it."""

    out_channels = 32

    def __init__(self):
        super().__init__()
        self.conv1 = conv3x3(3, 64, 2)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.conv2 = conv3x3(64, 64, 2)
        self.bn2 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        downsample = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256, eps=BN_EPS))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, 1, downsample), *[Bottleneck(256, 64) for _ in range(3)])
        self.transition1 = _transition([256], [32, 64])
        self.stage2 = nn.Sequential(HighResolutionModule([32, 64]))
        self.transition2 = _transition([32, 64], [32, 64, 128])
        self.stage3 = nn.Sequential(*[HighResolutionModule([32, 64, 128]) for _ in range(4)])
        self.transition3 = _transition([32, 64, 128], [32, 64, 128, 256])
        self.stage4 = nn.Sequential(
            HighResolutionModule([32, 64, 128, 256]),
            HighResolutionModule([32, 64, 128, 256]),
            HighResolutionModule([32, 64, 128, 256], multi_scale_output=False),
        )
        self.hand_segm = SegmNet(33)

    @staticmethod
    def _run_stage(stage: nn.Sequential, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            xs = module(xs)
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = [t(x) if t is not None else x for t in self.transition1]
        ys = self._run_stage(self.stage2, xs)
        xs = [t(ys[-1]) if t is not None else ys[i] for i, t in enumerate(self.transition2)]
        ys = self._run_stage(self.stage3, xs)
        xs = [t(ys[-1]) if t is not None else ys[i] for i, t in enumerate(self.transition3)]
        ys = self._run_stage(self.stage4, xs)
        return ys[0]
