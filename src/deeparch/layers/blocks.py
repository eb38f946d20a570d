"""Small blocks that several families share: squeeze-and-excitation, channel shuffle,
channel rounding for width multipliers."""
from __future__ import annotations

import torch
from torch import nn

from .activation import make_activation


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%.

    The rule of the MobileNet v2 / EfficientNet reference code, used by width multipliers.
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global pool, FC down, act, FC up, gate, rescale.

    ``reduced`` channels in the bottleneck (``channels // reduction`` when not given).
    The two FCs are 1x1 convolutions named ``fc1`` / ``fc2``.
    """

    def __init__(self, channels: int, reduction: int = 16, reduced: int | None = None,
                 act: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        reduced = reduced or max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = make_activation(act)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = make_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * s


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: reshape to (groups, C/groups), transpose, flatten."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
