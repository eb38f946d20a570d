"""The seeds' transfer regimes, as ``deeparch train --regime`` applies them.

=========  ====================================================================================
``full``   the pretrained weights are only the initialisation: everything trains (with
           ``lr_backbone`` the pretrained layers at a smaller rate than the new head)
``top:K``  the last ``K`` stages and the head train; the stages before them are frozen
``linear`` everything but a new softmax head is frozen (batch norm included: held in eval)
``cached`` as ``linear``, but the frozen network runs once: the features that reach the
           classifier are computed for every image, stored on disk, and the head trains on
           the stored features (the course notes' "compute the frozen features once, save
           them to disk, train a shallow softmax on them" -- fast, and no augmentation)
=========  ====================================================================================

A regime changes the model's structure (a new head) and which parameters train; none of that
is in a state dict, so a run records its regime and applies it again whenever the run is
rebuilt (resume, evaluate), always in the same order: build, load, new head, freeze.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import TrainingError
from ..models.base import Network
from .surgery import FrozenReport, freeze, frozen_report, new_head

REGIMES = ("full", "top:K", "linear", "cached")


@dataclass(frozen=True)
class Regime:
    """A parsed ``--regime``: ``kind`` is full, top, linear or cached; ``k`` the stages of
    ``top:K``."""

    kind: str
    k: int = 0

    def __str__(self) -> str:
        return f"top:{self.k}" if self.kind == "top" else self.kind

    @property
    def new_head(self) -> bool:
        """Whether the classifier is always a fresh one (every frozen regime)."""
        return self.kind != "full"


def parse_regime(text: str | Regime | None) -> Regime:
    """``'full'``, ``'linear'``, ``'cached'`` or ``'top:K'`` (K >= 1 stages)."""
    if isinstance(text, Regime):
        return text
    if text is None:
        return Regime("full")
    t = str(text).strip().lower()
    if t in ("full", "linear", "cached"):
        return Regime(t)
    m = re.fullmatch(r"top:(\d{1,6})", t)
    if m and int(m.group(1)) >= 1:
        return Regime("top", int(m.group(1)))
    raise TrainingError(f"regime must be full, linear, cached or top:K (K stages to fine-tune, "
                        f"e.g. top:2), got {text!r}.")


def stage_names(model: nn.Module) -> list[str]:
    names = list(model.stage_names) if isinstance(model, Network) else []
    return names


def apply_regime(model: nn.Module, regime: Regime, num_classes: int,
                 replace_head: bool) -> FrozenReport:
    """Give ``model`` a new head for ``num_classes`` (every regime but ``full``, and ``full``
    when ``replace_head``: the file's classifier did not fit), then freeze what the regime
    freezes. The head is drawn from torch's global generator: seed it first."""
    if regime.new_head or replace_head:
        new_head(model, num_classes)
    if regime.kind in ("linear", "cached"):
        return freeze(model)
    if regime.kind == "top":
        stages = stage_names(model)
        if not stages:
            raise TrainingError(f"{getattr(model, 'model_name', type(model).__name__)} has no "
                                f"named stages, so top:{regime.k} cannot say which to train; "
                                f"use full, linear or cached.")
        if regime.k > len(stages):
            raise TrainingError(f"top:{regime.k} asks for more stages than the "
                                f"{len(stages)} of {model.model_name} "
                                f"({', '.join(stages)}); give K from 1 to {len(stages)}, or "
                                f"full to train everything.")
        if regime.k == len(stages):
            return frozen_report(model)
        return freeze(model, stages[len(stages) - regime.k - 1])
    return frozen_report(model)


# --------------------------------------------------------------------------- cached features

def _linear_classifier(model: nn.Module) -> nn.Linear:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        raise TrainingError(f"the cached regime trains a softmax layer on stored features, but "
                            f"the classifier of {getattr(model, 'model_name', 'this model')} is "
                            f"{type(head).__name__ if head is not None else 'missing'}, not a "
                            f"Linear layer; use --regime linear instead.")
    return head


class FeatureHead(nn.Module):
    """The classifier alone, reading stored features (``N x D x 1 x 1``)."""

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))


def feature_head(model: nn.Module) -> FeatureHead:
    """The trainable part of a ``cached`` run: the model's own classifier (shared, so
    training it trains the model's)."""
    return FeatureHead(_linear_classifier(model))


@torch.no_grad()
def classifier_inputs(model: nn.Module, batches: Iterator[torch.Tensor]) -> torch.Tensor:
    """What reaches the classifier for every image of ``batches`` (normalised float
    batches), computed in eval mode: ``N x D x 1 x 1`` float32."""
    head = _linear_classifier(model)
    seen: list[torch.Tensor] = []

    def grab(_module, args):
        seen.append(args[0].detach().to(torch.float32).flatten(1).cpu())

    was = model.training
    model.eval()
    hook = head.register_forward_pre_hook(grab)
    try:
        for x in batches:
            model(x)
    finally:
        hook.remove()
        model.train(was)
    feats = torch.cat(seen) if seen else torch.empty(0, head.in_features)
    return feats.view(len(feats), -1, 1, 1)


__all__ = ["REGIMES", "FeatureHead", "Regime", "apply_regime", "classifier_inputs",
           "feature_head", "parse_regime", "stage_names"]
