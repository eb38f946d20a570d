"""The architecture zoo: one file per family, each registered with its model card.

The registry (cards, names, the committed table of figures) is imported at once and does
not need torch; ``Network`` and ``FeatureExtractor`` (torch modules) load on first use.
"""
from .registry import ModelCard, SeedFigure, create_model, list_models, model_info, register

__all__ = ["FeatureExtractor", "Network", "ModelCard", "SeedFigure", "create_model",
           "list_models", "model_info", "register"]


def __getattr__(name: str):
    if name in ("FeatureExtractor", "Network"):
        from . import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
