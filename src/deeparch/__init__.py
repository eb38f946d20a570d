"""deeparch: build, inspect, train, look inside, transfer and shrink deep CNNs.

The public names below are imported on first use (module ``__getattr__``), so that
``import deeparch`` -- and every ``deeparch`` command -- loads only what it uses:
``deeparch --help`` and ``deeparch info`` never import torch.
"""
import importlib
import importlib.util
import os

# Idle OpenMP threads sleep instead of spinning. On a small shared CPU, spinning workers of
# PyTorch's thread pool stole the cores from each other: the digits main job took 82 s
# instead of 27 s with 2 threads under load (measured). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import DeeparchError  # noqa: E402  (torch-free, and every caller wants it)

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    # deeparch.models.create_model plus weights=PATH: the loading lives in transfer, above the
    # models in the import order (models never import transfer)
    "create_model": ".transfer", "list_models": ".models", "model_info": ".models",
    "explain": ".inspect", "summary": ".inspect",
    "from_pattern": ".pattern",
    "fit": ".train",
}

__all__ = ["DeeparchError", "create_model", "explain", "fit", "from_pattern", "list_models",
           "model_info", "summary", "__version__"]


def __getattr__(name: str):
    where = _LAZY.get(name)
    if where is not None:
        value = getattr(importlib.import_module(where, __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f".{name}", __name__)  # deeparch.train, deeparch.data...
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
