"""Pooling: max and average 1D/2D (plain PyTorch), and global pooling that flattens."""
from __future__ import annotations

import torch
from torch import nn

MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d = nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d


class GlobalAvgPool2d(nn.Module):
    """Mean over H and W: N x C x H x W -> N x C (or N x C x 1 x 1 with ``flatten=False``)."""

    def __init__(self, flatten: bool = True):
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=not self.flatten)


class GlobalMaxPool2d(nn.Module):
    """Max over H and W: N x C x H x W -> N x C (or N x C x 1 x 1 with ``flatten=False``)."""

    def __init__(self, flatten: bool = True):
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax((2, 3), keepdim=not self.flatten)
