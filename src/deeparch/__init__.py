"""deeparch: build, inspect, train, look inside, transfer and shrink deep CNNs."""
import os

# Idle OpenMP threads sleep instead of spinning. On a small shared CPU, spinning workers of
# PyTorch's thread pool stole the cores from each other: the digits main job took 82 s
# instead of 27 s with 2 threads under load (measured). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import DeeparchError
from .inspect import explain, summary
from .models import create_model, list_models, model_info
from .pattern import from_pattern
from .train import fit

__version__ = "0.1.0"

__all__ = ["DeeparchError", "create_model", "explain", "fit", "from_pattern", "list_models",
           "model_info", "summary", "__version__"]
