"""The mobile inverted bottleneck (MBConv) of MobileNet v2 / MnasNet / EfficientNet / MobileNet v3.

    x -> [expand 1x1, norm, act] -> depthwise kxk (stride), norm, act -> [squeeze-excite]
      -> project 1x1, norm (linear: no activation) -> [drop-path] -> + x (when shapes match)

The expansion is skipped when it would not change the width (``expand_ratio == 1``);
``mid_channels`` gives the expanded width directly (MobileNet v3's table does). The residual is used when the stride
is 1 and the input and output channels are equal; only then does ``drop_path`` apply.
Families choose the activation (``'relu6'`` for MobileNet v2, ``'swish'`` for EfficientNet)
and the squeeze-excite bottleneck (``se_reduced`` channels, None for no SE; EfficientNet
sizes it from the block *input* channels, MobileNet v3 from the expanded ones).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import SqueezeExcite
from .conv import ConvNormAct
from .regularize import DropPath


class MBConv(nn.Module):
    """Inverted residual block; children ``expand``, ``depthwise``, ``se``, ``project``, ``drop_path``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, expand_ratio: float = 6, act: str = "relu6",
                 se_reduced: int | None = None, se_act: str | None = None,
                 se_gate: str = "sigmoid", drop_path: float = 0.0, norm: str = "bn",
                 mid_channels: int | None = None, tf_padding: bool = False):
        super().__init__()
        mid = mid_channels or int(round(in_channels * expand_ratio))
        self.has_residual = stride == 1 and in_channels == out_channels
        self.expand = (ConvNormAct(in_channels, mid, 1, norm=norm, act=act)
                       if mid != in_channels else None)
        # tf_padding: a strided depthwise conv pads as TensorFlow's `same` (Keras' models)
        self.depthwise = ConvNormAct(mid, mid, kernel_size, stride,
                                     "tf_same" if tf_padding and stride > 1 else None,
                                     groups=mid, norm=norm, act=act)
        self.se = (SqueezeExcite(mid, reduced=se_reduced, act=se_act or act, gate=se_gate)
                   if se_reduced else None)
        self.project = ConvNormAct(mid, out_channels, 1, norm=norm, act=None)
        self.drop_path = (DropPath(drop_path) if self.has_residual and drop_path > 0
                          else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        if not self.has_residual:
            return y
        if self.drop_path is not None:
            y = self.drop_path(y)
        return x + y


InvertedResidual = MBConv
