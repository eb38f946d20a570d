"""Shrinking a network for the edge: pruning, int8 quantization, distillation, ONNX export
and the latency that proves it (the advanced slides' edge-computing section).

The optional packages (onnx, onnxscript, onnxruntime, torch-pruning: ``pip install
'deeparch[edge]'``) are imported only by the functions that need them; a missing one is a
:class:`deeparch.errors.MissingDependencyError` naming the extra.
"""
from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
