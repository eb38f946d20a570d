"""Optional packages of the ``edge`` extra, imported only when a feature needs them."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

# import name -> (pip name, extra)
OPTIONAL = {
    "onnx": ("onnx", "edge"),
    "onnxscript": ("onnxscript", "edge"),
    "onnxruntime": ("onnxruntime", "edge"),
    "torch_pruning": ("torch-pruning", "edge"),
}


def require(module: str, for_what: str) -> ModuleType:
    """``import module``, or one sentence saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pip, extra = OPTIONAL.get(module, (module, "edge"))
        raise MissingDependencyError(
            f"{for_what} needs the optional package {pip}, which is not installed; install "
            f"it with: pip install 'deeparch[{extra}]'.") from None


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
