"""The architecture zoo: one file per family, each registered with its model card."""
from .base import FeatureExtractor, Network
from .registry import ModelCard, SeedFigure, create_model, list_models, model_info, register

__all__ = ["FeatureExtractor", "Network", "ModelCard", "SeedFigure", "create_model",
           "list_models", "model_info", "register"]
