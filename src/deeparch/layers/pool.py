"""Pooling: max and average 1D/2D (plain PyTorch), and global pooling that flattens."""
from __future__ import annotations

import torch
import torch.nn.functional as F
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


class TFMaxPool2d(nn.MaxPool2d):
    """Max pooling with TensorFlow's ``padding='same'`` (Keras' ``MaxPooling2D(3, 2,
    padding='same')``): the uneven padding goes at the end, where PyTorch's ``padding=1``
    pads both sides and shifts every window of an even map by one pixel."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .conv import tf_same_pads
        k, s = self.kernel_size, self.stride
        pads = (*tf_same_pads(x.shape[-1], k, s), *tf_same_pads(x.shape[-2], k, s))
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool2d(x, k, s)
