"""Pre-activation units: norm -> activation (-> conv), the order of DenseNet, DPN and
pre-activation ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks")."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .activation import make_activation
from .conv import Conv2d, same_padding
from .norm import make_norm2d


class NormAct(nn.Sequential):
    """norm -> activation; children ``bn`` (whatever the norm) and ``act``."""

    def __init__(self, channels: int, norm: str | None = "bn",
                 act: str | Callable | None = "relu"):
        super().__init__()
        self.bn = make_norm2d(norm, channels)
        self.act = make_activation(act)


class NormActConv(nn.Sequential):
    """norm -> activation -> conv (bias-free: the next norm or the sum makes its own shift).

    Children ``bn``, ``act`` and ``conv``; padding is `same` (``k // 2``) unless given.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, stride=1,
                 padding=None, groups: int = 1, norm: str | None = "bn",
                 act: str | Callable | None = "relu", bias: bool = False):
        super().__init__()
        if padding is None:
            padding = same_padding(kernel_size) or 0
        self.bn = make_norm2d(norm, in_channels)
        self.act = make_activation(act)
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                           groups=groups, bias=bias)
