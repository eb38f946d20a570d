"""Shrinking a network for the edge: pruning, int8 quantization, distillation, ONNX export
and the latency that proves it (the advanced slides' edge-computing section).

The optional packages (onnx, onnxscript, onnxruntime, torch-pruning: ``pip install
'deeparch[edge]'``) are imported only by the functions that need them; a missing one is a
:class:`deeparch.errors.MissingDependencyError` naming the extra.
"""
import importlib

# public name -> the submodule that defines it (imported on first use)
_LAZY = {
    "cpu_info": ".cpu", "reduce_range": ".cpu",
    "prune": ".prune", "magnitude_prune": ".prune", "sparsity": ".prune",
    "save_pruned": ".prune", "load_pruned": ".prune",
    "export_onnx": ".onnx", "load_onnx": ".onnx", "OnnxModel": ".onnx",
    "quantize": ".quantize", "quantize_dynamic": ".quantize", "qat_finetune": ".quantize",
    "distillation_loss": ".distill", "distill": ".distill",
    "bench": ".bench", "shrink": ".shrink",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
