"""deeparch: build, inspect, train, look inside, transfer and shrink deep CNNs."""
from .errors import DeeparchError
from .inspect import explain, summary
from .models import create_model, list_models, model_info
from .pattern import from_pattern

__version__ = "0.1.0"

__all__ = ["DeeparchError", "create_model", "explain", "from_pattern", "list_models",
           "model_info", "summary", "__version__"]
