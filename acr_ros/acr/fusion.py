"""The fused inference graph: one library call per convolution + bias (+ residual add) + ReLU, and
HRNet's parallel branches on concurrent CUDA streams.

:func:`fuse` is a pure transform of a BatchNorm-folded module tree (``network.fold_batchnorm``): it
returns a new tree (the input is left as it was) in which

* every Sequential [conv, (Identity), ReLU] is one :class:`ConvReLU` (a Conv2d, the ReLU an Identity);
* every BasicBlock / Bottleneck is a :class:`FusedBasicBlock` / :class:`FusedBottleneck` whose last
  convolution adds the residual and applies the ReLU in the same call;
* every multi-branch HighResolutionModule is a :class:`ConcurrentHighResolutionModule`.

The modules keep the attribute names (and so the state_dict keys) of the ones they replace. What a
fused call runs depends on the tensor, so one tree serves every device:

* CPU, float32, outside autograd, where oneDNN's fused ops pass their probe
  (:func:`onednn_available`): ``torch.ops.mkldnn._convolution_pointwise`` (what inductor emits;
  this module is the one user of that private op);
* CUDA, float16 / float32, outside autograd: cuDNN's fused convolution-bias-activation
  (``torch.cudnn_convolution_relu`` / ``torch.cudnn_convolution_add_relu``): no separate bias and
  ReLU kernels after each convolution;
* anything else: the plain convolution, add and ReLU.

Concurrent branches run only on CUDA (each branch but the first, and each fused output row but the
first, on a side stream that waits for the current one and is joined back; captured as parallel
branches of a CUDA graph); elsewhere they run one after another.
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from acr_ros.acr.hrnet import BasicBlock, Bottleneck, HighResolutionModule

CUDNN_DTYPES = (torch.float16, torch.float32)


@functools.lru_cache(maxsize=None)
def onednn_available() -> bool:
    """oneDNN's fused convolution ops (torch.ops.mkldnn._convolution_pointwise) are usable."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        x = torch.zeros(1, 2, 3, 3)
        w = torch.zeros(2, 2, 1, 1)
        y = op.binary(x, x, w, None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, "relu", [], "")
        return torch.backends.mkldnn.is_available() and y.shape == x.shape
    except Exception:
        return False


def _kind(x: torch.Tensor) -> str:
    """Which fused implementation runs for ``x``: "onednn", "cudnn" or "plain"."""
    if torch.is_grad_enabled():
        return "plain"  # the fused ops have no autograd
    if x.device.type == "cpu" and x.dtype == torch.float32 and onednn_available():
        return "onednn"
    if x.device.type == "cuda" and x.dtype in CUDNN_DTYPES and torch.backends.cudnn.is_available():
        return "cudnn"
    return "plain"


def conv_relu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(x)) in one call where the device has one."""
    kind = _kind(x)
    if kind == "onednn":
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
            "relu", [], "")
    if kind == "cudnn":
        return torch.cudnn_convolution_relu(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                                            conv.groups)
    return F.relu(_plain_conv(x, conv))


def conv_add_relu(x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(x) + other) in one call where the device has one."""
    kind = _kind(x)
    if kind == "onednn":
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups, "add", 1.0, "relu", [], "")
    if kind == "cudnn":
        return torch.cudnn_convolution_add_relu(x, conv.weight, other.to(memory_format=_format(x)), 1.0, conv.bias,
                                                conv.stride, conv.padding, conv.dilation, conv.groups)
    return F.relu(_plain_conv(x, conv) + other)


def _plain_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4 \
        else torch.contiguous_format


class ConvReLU(nn.Conv2d):
    """A folded Conv2d (carrying the bias) followed by ReLU, as one call; its parameters are the
    convolution's (same names, same tensors)."""

    @classmethod
    def of(cls, conv: nn.Conv2d) -> "ConvReLU":
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"ConvReLU takes zero-padded convolutions with numeric padding, got {conv}")
        with torch.device("meta"):  # its parameters are the convolution's, assigned below
            new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=conv.bias is not None)
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_relu(x, self)


class FusedBasicBlock(nn.Module):
    """A folded BasicBlock: relu(conv2(relu(conv1(x))) + identity), two calls."""

    def __init__(self, block: BasicBlock):
        super().__init__()
        self.conv1, self.conv2, self.downsample = block.conv1, block.conv2, block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return conv_add_relu(conv_relu(x, self.conv1), identity, self.conv2)


class FusedBottleneck(nn.Module):
    """A folded Bottleneck in three calls."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = block.conv1, block.conv2, block.conv3
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return conv_add_relu(conv_relu(conv_relu(x, self.conv1), self.conv2), identity, self.conv3)


class _SideStreams:
    """Side CUDA streams of one module, made on first use for each device."""

    def __init__(self):
        self.streams: dict = {}

    def get(self, device: torch.device, count: int) -> list:
        streams = self.streams.setdefault(device, [])
        while len(streams) < count:
            streams.append(torch.cuda.Stream(device))
        return streams[:count]


def run_concurrently(tasks: Sequence[Callable[[], torch.Tensor]], device: torch.device,
                     side_streams: _SideStreams) -> list[torch.Tensor]:
    """Each task's result; on CUDA, task 0 on the current stream and each other task on a side stream
    that first waits for the current one, which then waits for all of them. A result made on a side
    stream is recorded as used by the current one, so that the caching allocator cannot hand its
    memory to later side-stream work while the current stream still reads it. Elsewhere: in order."""
    if device.type != "cuda" or len(tasks) < 2:
        return [task() for task in tasks]
    current = torch.cuda.current_stream(device)
    results = [None] * len(tasks)
    streams = side_streams.get(device, len(tasks) - 1)
    for index, stream in enumerate(streams, start=1):
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            results[index] = tasks[index]()
    results[0] = tasks[0]()
    for index, stream in enumerate(streams, start=1):
        current.wait_stream(stream)
        results[index].record_stream(current)
    return results


class ConcurrentHighResolutionModule(nn.Module):
    """A HighResolutionModule (same attributes) whose branches, then whose fused output rows, run
    concurrently on CUDA (:func:`run_concurrently`)."""

    def __init__(self, module: HighResolutionModule):
        super().__init__()
        self.num_branches = module.num_branches
        self.branches, self.fuse_layers, self.relu = module.branches, module.fuse_layers, module.relu
        self.side_streams = _SideStreams()

    def _fused_row(self, i: int, xs: list[torch.Tensor]) -> torch.Tensor:
        row = self.fuse_layers[i]
        y = xs[0] if i == 0 else row[0](xs[0])
        for j in range(1, self.num_branches):
            y = y + (xs[j] if i == j else row[j](xs[j]))
        return self.relu(y)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        device = xs[0].device
        xs = run_concurrently([functools.partial(branch, x) for branch, x in zip(self.branches, xs)], device,
                              self.side_streams)
        return run_concurrently([functools.partial(self._fused_row, i, xs) for i in range(len(self.fuse_layers))],
                                device, self.side_streams)


def fuse(module: nn.Module) -> nn.Module:
    """A fused copy of a BatchNorm-folded module tree (see the module docstring); ``module`` is left
    as it was."""
    return _fused(copy.deepcopy(module))


def _fused(module: nn.Module) -> nn.Module:
    if type(module) is BasicBlock:
        module = FusedBasicBlock(module)
    elif type(module) is Bottleneck:
        module = FusedBottleneck(module)
    elif type(module) is HighResolutionModule and module.fuse_layers is not None:
        module = ConcurrentHighResolutionModule(module)
    elif isinstance(module, nn.Sequential):
        keys = list(module._modules)
        for i, key in enumerate(keys):
            if not isinstance(module._modules[key], nn.Conv2d):
                continue
            j = i + 1
            while j < len(keys) and isinstance(module._modules[keys[j]], nn.Identity):
                j += 1
            if j < len(keys) and isinstance(module._modules[keys[j]], nn.ReLU):
                module._modules[key] = ConvReLU.of(module._modules[key])
                module._modules[keys[j]] = nn.Identity()
    for name, child in module._modules.items():
        if child is not None:
            module._modules[name] = _fused(child)
    return module
