"""CPU: oneDNN convolutions with fused ReLU / residual add (what inductor emits), used eagerly.

The one place that calls PyTorch's private ``torch.ops.mkldnn._convolution_pointwise``;
:func:`available` probes it, and FastACR uses it only when the probe passes (float32 CPU tensors
outside autograd); everything else takes the plain path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acr_ros.acr.hrnet import BasicBlock, Bottleneck


def available() -> bool:
    """oneDNN's fused convolution ops (torch.ops.mkldnn._convolution_pointwise) are usable."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        x = torch.zeros(1, 2, 3, 3)
        w = torch.zeros(2, 2, 1, 1)
        y = op.binary(x, x, w, None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, "relu", [], "")
        return torch.backends.mkldnn.is_available() and y.shape == x.shape
    except Exception:
        return False


def _fusable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _conv(x: torch.Tensor, conv: nn.Conv2d, unary: str = "none") -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        unary, [], "")


def _conv_add_relu(x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(x) + other) in one oneDNN call."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", 1.0, "relu", [], "")


class _FusedBasicBlock(BasicBlock):
    """A folded BasicBlock (its class is swapped in place) running fused oneDNN calls on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fusable(x):
            return super().forward(x)
        identity = x if self.downsample is None else self.downsample(x)
        return _conv_add_relu(_conv(x, self.conv1, "relu"), identity, self.conv2)


class _FusedBottleneck(Bottleneck):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fusable(x):
            return super().forward(x)
        identity = x if self.downsample is None else self.downsample(x)
        out = _conv(_conv(x, self.conv1, "relu"), self.conv2, "relu")
        return _conv_add_relu(out, identity, self.conv3)


class _ConvReLU(nn.Module):
    """A folded Conv2d followed by ReLU, as one oneDNN call on the CPU."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fusable(x):
            return _conv(x, self.conv, "relu")
        return F.relu(self.conv(x))


def fuse_conv_activations(module: nn.Module) -> nn.Module:
    """In place, on a BatchNorm-folded model: BasicBlocks and Bottlenecks run conv + ReLU and
    conv + residual add + ReLU as fused oneDNN calls, and every Sequential [conv, (Identity), ReLU]
    becomes one fused call. Only used for float32 CPU tensors outside autograd; anything else takes
    the plain path. The same arithmetic, one pass over memory instead of three."""
    for m in module.modules():
        if type(m) is BasicBlock:
            m.__class__ = _FusedBasicBlock
        elif type(m) is Bottleneck:
            m.__class__ = _FusedBottleneck
        elif isinstance(m, nn.Sequential):
            keys = list(m._modules.keys())
            for i, k in enumerate(keys):
                conv = m._modules[k]
                if not isinstance(conv, nn.Conv2d):
                    continue
                j = i + 1
                while j < len(keys) and isinstance(m._modules[keys[j]], nn.Identity):
                    j += 1
                if j < len(keys) and isinstance(m._modules[keys[j]], nn.ReLU):
                    m._modules[k] = _ConvReLU(conv)
                    m._modules[keys[j]] = nn.Identity()
    return module
