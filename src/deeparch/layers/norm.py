"""Normalisation layers: batch, layer, instance, group, and AlexNet's local response norm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelOptionError


class LocalResponseNorm(nn.Module):
    """Local response normalisation as written in the AlexNet paper.

    ``b = a / (k + alpha * sum_{n neighbouring channels} a^2) ** beta`` with the
    paper's constants k=2, n=5, alpha=1e-4, beta=0.75. Note that PyTorch's
    ``nn.LocalResponseNorm`` divides alpha by n; here alpha means what the paper says.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, self.size, self.alpha * self.size, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class LayerNorm2d(nn.GroupNorm):
    """Layer norm over (C, H, W) of each sample, with a per-channel affine (GroupNorm, 1 group)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(1, channels, eps)


def make_norm2d(kind: str | None, channels: int, groups: int = 32) -> nn.Module:
    """A normalisation for ``channels`` feature maps by name.

    ``'bn'`` batch, ``'ln'`` layer, ``'in'`` instance (affine), ``'gn'`` group
    (``groups`` groups, fewer if they do not divide), ``'lrn'`` local response, ``None`` identity.
    """
    if kind is None:
        return nn.Identity()
    k = kind.lower()
    if k in ("bn", "batch", "batchnorm"):
        return nn.BatchNorm2d(channels)
    if k in ("ln", "layer", "layernorm"):
        return LayerNorm2d(channels)
    if k in ("in", "instance", "instancenorm"):
        return nn.InstanceNorm2d(channels, affine=True)
    if k in ("gn", "group", "groupnorm"):
        g = min(groups, channels)
        while channels % g:
            g -= 1
        return nn.GroupNorm(g, channels)
    if k in ("lrn",):
        return LocalResponseNorm()
    raise ModelOptionError(f"unknown normalisation {kind!r}; choose bn, ln, in, gn or lrn.")
