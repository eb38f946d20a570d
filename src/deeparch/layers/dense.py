"""A fully connected layer with its activation folded in, as Keras' ``Dense(n, activation=...)``."""
from __future__ import annotations

import torch
from torch import nn

from .activation import functional_activation


class Dense(nn.Linear):
    """``nn.Linear`` followed by an optional activation, one layer as in Keras' summaries."""

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.activation_name = activation
        # a function, not a child module: the layer stays one leaf, one row of a summary
        self._act = functional_activation(activation) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return self._act(y) if self._act is not None else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", activation={self.activation_name}"
                                       if self.activation_name else "")
