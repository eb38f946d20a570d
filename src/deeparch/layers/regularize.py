"""Dropout and stochastic depth (drop-path)."""
from __future__ import annotations

import torch
from torch import nn

Dropout = nn.Dropout


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p``; rescale the rest by 1/(1-p)."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            from ..errors import ModelOptionError
            raise ModelOptionError(f"drop-path probability must be in [0, 1), not {p}.")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
