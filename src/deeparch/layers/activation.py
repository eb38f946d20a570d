"""Activations by name, so that families and patterns can say ``act='relu6'``."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelOptionError

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "swish": lambda: nn.SiLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "hard_swish": lambda: nn.Hardswish(inplace=True),
    "hard_sigmoid": lambda: nn.Hardsigmoid(inplace=True),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=1),
    "identity": nn.Identity,
}


def activation_names() -> list[str]:
    return sorted(_ACTIVATIONS)


def make_activation(act: str | Callable[[], nn.Module] | nn.Module | None) -> nn.Module:
    """A fresh activation module from a name, a factory or a module (``None`` -> Identity)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, nn.Module):
        return act
    if callable(act):
        return act()
    key = str(act).lower().replace("-", "_")
    if key not in _ACTIVATIONS:
        raise ModelOptionError(
            f"unknown activation {act!r}; choose one of {', '.join(activation_names())}.")
    return _ACTIVATIONS[key]()


_FUNCTIONAL: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "relu6": F.relu6, "elu": F.elu, "gelu": F.gelu, "swish": F.silu,
    "silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.1), "softmax": lambda x: F.softmax(x, dim=1),
    "hard_swish": F.hardswish, "hard_sigmoid": F.hardsigmoid, "identity": lambda x: x,
}


def functional_activation(act: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function form of a named activation (for layers that fold it in, like Dense)."""
    key = str(act).lower().replace("-", "_")
    if key not in _FUNCTIONAL:
        raise ModelOptionError(
            f"unknown activation {act!r}; choose one of {', '.join(sorted(_FUNCTIONAL))}.")
    return _FUNCTIONAL[key]
