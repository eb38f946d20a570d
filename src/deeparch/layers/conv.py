"""Convolutions: plain 1D/2D with `valid` / `same` / int padding, pointwise,
depthwise, depthwise-separable, spatially separable, and conv -> norm -> act.

Every class is an ordinary ``nn.Module``; the plain ones *are* ``nn.Conv1d`` /
``nn.Conv2d`` so that any tool that understands PyTorch convolutions (the
inspector, ONNX export, pruning) understands ours.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelOptionError
from .activation import make_activation
from .norm import make_norm2d

Padding = int | str | Sequence[int]


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    if len(t) != n:
        raise ModelOptionError(f"expected {n} values, got {t}.")
    return t


def same_padding(kernel_size, stride=1, dilation=1, n: int = 2) -> tuple[int, ...] | None:
    """Symmetric padding that keeps the size (``ceil(size / stride)``) when it exists.

    Returns None when `same` needs uneven padding (an even effective kernel):
    callers then pad asymmetrically, like TensorFlow.
    """
    k, s, d = _tuple(kernel_size, n), _tuple(stride, n), _tuple(dilation, n)
    pads = []
    for ki, si, di in zip(k, s, d):
        eff = di * (ki - 1) + 1
        if (eff - 1) % 2 or (si > 1 and eff % 2 == 0):
            return None
        pads.append((eff - 1) // 2)
    return tuple(pads)


def resolve_padding(padding: Padding, kernel_size, stride=1, dilation=1, n: int = 2):
    """Turn ``'valid'`` / ``'same'`` / int / tuple into an int tuple for ``nn.ConvNd``."""
    if isinstance(padding, str):
        p = padding.lower()
        if p == "valid":
            return (0,) * n
        if p == "same":
            pad = same_padding(kernel_size, stride, dilation, n)
            if pad is None:
                raise ModelOptionError(
                    f"padding='same' with kernel {kernel_size}, stride {stride} and dilation "
                    f"{dilation} needs uneven padding; give the padding as numbers instead.")
            return pad
        raise ModelOptionError(f"padding must be 'valid', 'same' or a number, not {padding!r}.")
    return _tuple(padding, n)


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels % groups or out_channels % groups:
        raise ModelOptionError(
            f"groups={groups} must divide both in_channels={in_channels} and "
            f"out_channels={out_channels}.")


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that also accepts ``padding='same'`` with a stride (symmetric when possible)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 padding: Padding = 0, dilation=1, groups: int = 1, bias: bool = True):
        _check_groups(in_channels, out_channels, groups)
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         resolve_padding(padding, kernel_size, stride, dilation, 2),
                         dilation, groups, bias)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` with the same ``'valid'`` / ``'same'`` / int padding as :class:`Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 padding: Padding = 0, dilation=1, groups: int = 1, bias: bool = True):
        _check_groups(in_channels, out_channels, groups)
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         resolve_padding(padding, kernel_size, stride, dilation, 1),
                         dilation, groups, bias)


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``padding='same'`` along one side: the output is ``ceil(size / stride)``
    and the padding it needs is split with the odd pixel at the end (right / bottom).
    With a stride of 2 on an even map that is ``(0, 1)`` for a 3x3 kernel, where PyTorch's
    symmetric padding would be ``(1, 1)``: another sampling grid, other numbers."""
    eff = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + eff - size)
    return total // 2, total - total // 2


class TFConv2d(nn.Conv2d):
    """``nn.Conv2d`` padded the way TensorFlow / Keras pad: ``pad='same'`` computes TF's
    (possibly uneven) `same` padding from each input's size; a 4-tuple ``(left, right, top,
    bottom)`` is a fixed zero padding (Keras' ``ZeroPadding2D`` before a `valid` conv).
    Its parameters are a Conv2d's, named the same, so weight files map one to one."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 pad: str | Sequence[int] = "same", dilation=1, groups: int = 1,
                 bias: bool = True):
        _check_groups(in_channels, out_channels, groups)
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups,
                         bias)
        if pad != "same":
            pad = tuple(int(p) for p in pad)
            if len(pad) != 4 or min(pad) < 0:
                raise ModelOptionError(f"pad must be 'same' or (left, right, top, bottom), "
                                       f"not {pad!r}.")
        self.pad = pad

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.pad != "same":
            return self.pad
        return (*tf_same_pads(w, self.kernel_size[1], self.stride[1], self.dilation[1]),
                *tf_same_pads(h, self.kernel_size[0], self.stride[0], self.dilation[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.pads(x.shape[-2], x.shape[-1])
        if any(pads):
            x = F.pad(x, pads)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad={'tf_same' if self.pad == 'same' else self.pad}"


class PointwiseConv2d(Conv2d):
    """A 1x1 convolution: a fully connected layer applied at every position."""

    def __init__(self, in_channels: int, out_channels: int, stride=1, groups: int = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, 1, stride, 0, 1, groups, bias)


class DepthwiseConv2d(Conv2d):
    """One k x k filter per input channel (``groups = in_channels``), times a depth multiplier."""

    def __init__(self, channels: int, kernel_size=3, stride=1, padding: Padding = "same",
                 dilation=1, depth_multiplier: int = 1, bias: bool = True):
        super().__init__(channels, channels * depth_multiplier, kernel_size, stride,
                         padding, dilation, channels, bias)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation, the unit of most modern networks.

    ``norm`` is a kind for :func:`make_norm2d` (``'bn'``, ``'gn'``, ``None`` ...),
    ``act`` a name for :func:`make_activation` (``'relu'``, ``'relu6'``, ``'swish'``, ``None``).
    ``padding='tf_same'`` (or a ``(left, right, top, bottom)`` 4-tuple) pads as TensorFlow
    does (:class:`TFConv2d`). Children are named ``conv``, ``bn`` (whatever the norm) and ``act``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 padding: Padding | None = None, dilation=1, groups: int = 1,
                 norm: str | None = "bn", act: str | Callable | None = "relu",
                 bias: bool | None = None):
        if padding is None:
            padding = same_padding(kernel_size, 1, dilation) or 0
        bias = (norm is None) if bias is None else bias
        super().__init__()
        if padding == "tf_same" or (not isinstance(padding, (str, int)) and len(padding) == 4):
            self.conv = TFConv2d(in_channels, out_channels, kernel_size, stride,
                                 "same" if padding == "tf_same" else padding, dilation, groups,
                                 bias)
        else:
            self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                               dilation, groups, bias)
        if norm is not None:
            self.bn = make_norm2d(norm, out_channels)
        if act is not None:
            self.act = make_activation(act)


class SeparableConv2d(nn.Sequential):
    """Depthwise-separable convolution: a k x k depthwise conv, then a 1x1 pointwise conv.

    ``mid_norm`` / ``mid_act`` go between the two (MobileNet puts BN+ReLU there,
    Xception nothing). Cost: ``k*k*C*H*W + C*O*H*W`` mult-adds instead of ``k*k*C*O*H*W``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 padding: Padding = "same", dilation=1, depth_multiplier: int = 1,
                 mid_norm: str | None = None, mid_act: str | None = None, bias: bool = True):
        super().__init__()
        mid = in_channels * depth_multiplier
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation,
                                         depth_multiplier, bias=bias and mid_norm is None)
        if mid_norm is not None:
            self.bn = make_norm2d(mid_norm, mid)
        if mid_act is not None:
            self.act = make_activation(mid_act)
        self.pointwise = PointwiseConv2d(mid, out_channels, bias=bias)


class SpatiallySeparableConv2d(nn.Sequential):
    """A k x k convolution factored into k x 1 then 1 x k (Inception v3 style)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 mid_channels: int | None = None, padding: str = "same", bias: bool = True):
        super().__init__()
        mid = out_channels if mid_channels is None else mid_channels
        p = (kernel_size - 1) // 2 if padding == "same" else 0
        self.conv_kx1 = Conv2d(in_channels, mid, (kernel_size, 1), 1, (p, 0), bias=bias)
        self.conv_1xk = Conv2d(mid, out_channels, (1, kernel_size), 1, (0, p), bias=bias)
