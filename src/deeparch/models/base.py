"""The interface every deeparch model offers.

A :class:`Network` is ``features`` (an ``nn.Sequential`` whose named children are the
stem and the stages) followed by ``head`` (pooling and classifier). That one shape gives
every family, for free: ``forward_features``, ``forward_head``, ``reset_classifier``,
``stage_names`` and feature extraction by stage.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import ModelOptionError


class Network(nn.Module):
    """``features`` -> ``head``. ``stages`` names the children of ``features`` that end a stage."""

    def __init__(self, features: nn.Sequential, head: nn.Module,
                 stages: Sequence[str] | None = None, num_classes: int = 1000):
        super().__init__()
        self.features = features
        self.head = head
        names = [n for n, _ in features.named_children()]
        self.stage_names = list(stages) if stages is not None else names
        missing = [s for s in self.stage_names if s not in names]
        if missing:
            raise ValueError(f"stages {missing} are not children of features")
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return _last_classifier(self.head)[2]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last classifier layer with a fresh one for ``num_classes`` (0: remove it)."""
        parent, attr, old = _last_classifier(self.head)
        if num_classes <= 0:
            new: nn.Module = nn.Identity()
        elif isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        else:
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride,
                            old.padding, bias=old.bias is not None)
        new = new.to(next(old.parameters()).device) if any(True for _ in old.parameters()) else new
        setattr(parent, attr, new)
        self.num_classes = num_classes


def _last_classifier(head: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    found = None
    for name, mod in head.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and name:
            found = name
    if found is None:
        if isinstance(head, (nn.Linear, nn.Conv2d)):
            raise ModelOptionError("the classifier must sit inside the head module.")
        raise ModelOptionError("this model's head has no Linear or Conv2d classifier to reset.")
    *path, attr = found.split(".")
    parent = head
    for p in path:
        parent = getattr(parent, p)
    return parent, attr, getattr(parent, attr)


class FeatureExtractor(nn.Module):
    """Run a :class:`Network`'s features and return the maps at the end of chosen stages."""

    def __init__(self, model: nn.Module, out_stages: Iterable[str | int] | None = None):
        super().__init__()
        if not isinstance(model, Network):
            raise ModelOptionError("features_only needs a deeparch Network with named stages.")
        stages = model.stage_names
        wanted = list(stages) if out_stages is None else [
            _stage_name(s, stages) for s in out_stages]
        self.features = model.features
        self.out_stages = [s for s in stages if s in wanted]
        self.model_name = getattr(model, "model_name", type(model).__name__)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        last = self.out_stages[-1]
        for name, mod in self.features.named_children():
            x = mod(x)
            if name in self.out_stages:
                outs.append(x)
                if name == last:
                    break
        return outs


def _stage_name(s: str | int, stages: Sequence[str]) -> str:
    if isinstance(s, int):
        if not 1 <= s <= len(stages):
            raise ModelOptionError(f"stage {s} does not exist; this model has stages 1 to "
                                   f"{len(stages)} ({', '.join(stages)}).")
        return stages[s - 1]
    if s not in stages:
        raise ModelOptionError(f"unknown stage {s!r}; this model's stages are {', '.join(stages)}.")
    return s


def init_weights(model: nn.Module, linear_std: float | None = 0.01) -> nn.Module:
    """He (fan-out) normal for convolutions, N(0, linear_std) for linear layers (PyTorch's
    default when ``linear_std`` is None), zero biases, unit/zero batch-norm affine.

    Skipped for a model built on the meta device (nothing to fill; and normal_ on meta
    would import torch's compiler, which costs seconds)."""
    if any(p.is_meta for p in model.parameters()):
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` -> ``(224, 224)``; ``(h, w)`` stays."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def flat_features(features: nn.Module, in_chans: int, img_size: int | Sequence[int]) -> int:
    """How many values ``features`` produces for one ``in_chans x img_size`` image.

    Used by the classic networks whose first fully connected layer is sized by the input
    (LeNet, AlexNet, VGG). Impossible geometry raises a ShapeError naming the layer.
    """
    from ..layers.probe import output_shape
    shape = output_shape(features, (in_chans, *pair(img_size)), prefix="features")
    n = 1
    for s in shape:
        n *= int(s)
    return n
