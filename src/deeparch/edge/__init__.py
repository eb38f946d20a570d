"""Shrinking a network for the edge: pruning, int8 quantization, distillation, ONNX export
and the latency that proves it (the advanced slides' edge-computing section).

The optional packages (onnx, onnxscript, onnxruntime, torch-pruning: ``pip install
'deeparch[edge]'``) are imported only by the functions that need them; a missing one is a
:class:`deeparch.errors.MissingDependencyError` naming the extra.
"""
import importlib

# public name -> the submodule that defines it (imported on first use). No submodule shares
# a public function's name: importing ``edge.x`` sets the package's attribute ``x`` to the
# module, which would shadow a function ``x``.
_LAZY = {
    "cpu_info": ".cpu", "reduce_range": ".cpu",
    "prune": ".pruning", "magnitude_prune": ".pruning", "sparsity": ".pruning",
    "save_pruned": ".pruning", "load_pruned": ".pruning",
    "export_onnx": ".onnx", "load_onnx": ".onnx", "OnnxModel": ".onnx",
    "quantize": ".quantization", "quantize_dynamic": ".quantization",
    "qat_finetune": ".quantization",
    "distillation_loss": ".distillation", "distill": ".distillation",
    "bench": ".latency", "shrink": ".pipeline", "ShrinkReport": ".pipeline",
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
