"""Run a module on meta tensors: shapes without memory, errors that name the layer.

Both the model builders (to size a classifier for an input size) and the inspector
use this: the forward pass runs on ``device='meta'`` tensors, so no activation is
allocated, and a geometry that cannot work (an 11x11 kernel on an 8x8 input, a
classifier sized for another input) becomes a :class:`ShapeError` that names the
layer and says what to change.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from ..errors import ShapeError


def _dims(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def describe_failure(exc: Exception, name: str, module: nn.Module | None,
                     input_shape: tuple[int, ...] | None) -> ShapeError:
    """One sentence for a forward pass that failed inside ``module`` (named ``name``).

    The error keeps ``failed_name``, ``failed_module`` and ``failed_input`` (the input shape
    without batch) so that ``explain`` can show the arithmetic that does not work.
    """
    err = _sentence(exc, name, module, input_shape)
    err.failed_name, err.failed_module = name, module
    err.failed_input = list(input_shape[1:]) if input_shape else None
    err.partial = []
    return err


def _sentence(exc, name, module, input_shape) -> ShapeError:
    kind = type(module).__name__ if module is not None else "operation"
    where = f"layer '{name}' ({kind})" if name else f"the {kind}"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    spatial = input_shape[2:] if input_shape is not None and len(input_shape) > 2 else None
    k = getattr(module, "kernel_size", None)
    if spatial and k is not None and re.search(r"(?i)kernel size|too small|output size", msg):
        ks = k if isinstance(k, tuple) else (k,) * len(spatial)
        pad = getattr(module, "padding", 0)
        pads = pad if isinstance(pad, tuple) else (pad,) * len(spatial)
        padded = [int(s) + 2 * int(p) for s, p in zip(spatial, pads)] if not isinstance(
            pad, str) else list(spatial)
        return ShapeError(
            f"{where} has a {_dims(ks)} kernel but its input is only {_dims(spatial)} "
            f"({_dims(padded)} with padding); give a larger input size or a smaller kernel.")
    m = re.search(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", msg)
    if m:
        return ShapeError(
            f"{where} expects {m.group(3)} input features but receives {m.group(2)}; the model "
            f"was sized for another input size (build it for this one, e.g. with img_size).")
    shape = f" on an input of shape {_dims(input_shape)}" if input_shape else ""
    return ShapeError(f"{where} cannot run{shape}: {msg.rstrip('.')}.")


def meta_like(t: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(t, device="meta")
    out.requires_grad_(t.requires_grad)
    return out


def meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Meta copies of the parameters and buffers of ``module`` (no memory, same shapes)."""
    state = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        state[name] = meta_like(p)
    for name, b in module.named_buffers(remove_duplicate=False):
        state[name] = meta_like(b)
    return state


def is_meta(module: nn.Module) -> bool:
    t = next(iter(module.parameters()), None)
    if t is None:
        t = next(iter(module.buffers()), None)
    return t is None or t.is_meta


# Shape rules for common operations on meta tensors. Many of PyTorch's meta kernels are
# written in Python and import its compiler on first use, which costs seconds per process;
# these rules give the same shapes instantly.
T = torch.Tensor
_SAME = {F.relu, F.relu6, F.hardtanh, F.elu, F.leaky_relu, F.gelu, F.silu, F.hardswish,
         F.hardsigmoid, F.mish, F.softmax, F.log_softmax, F.batch_norm, F.layer_norm,
         F.group_norm, F.instance_norm, F.local_response_norm, torch.relu, torch.sigmoid,
         torch.tanh, torch.softmax, T.relu, T.sigmoid, T.tanh, T.softmax, F.sigmoid, F.tanh}
_INPLACE = {torch.relu_, T.relu_, F.relu_, T.sigmoid_, T.tanh_, T.add_, T.mul_, T.sub_,
            T.div_, T.__iadd__, T.__imul__, T.__isub__, T.__itruediv__, F.hardtanh_, F.elu_,
            F.leaky_relu_}
_BINARY = {torch.add, torch.mul, torch.sub, torch.div, T.add, T.mul, T.sub, T.div, T.__add__,
           T.__radd__, T.__mul__, T.__rmul__, T.__sub__, T.__rsub__, T.__truediv__}
_REDUCE = {torch.mean, torch.sum, torch.amax, torch.amin, T.mean, T.sum, T.amax, T.amin}
_IDENTITY_IN_EVAL = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout}


def meta_result(func, args, kwargs):
    """The output of ``func`` on meta tensors by a shape rule, or None to run it for real."""
    x = args[0] if args else None
    if func is torch.cat and isinstance(x, (list, tuple)) and x and all(
            isinstance(t, torch.Tensor) and t.is_meta for t in x):
        return _cat_shape(x, args[1] if len(args) > 1 else kwargs.get("dim", 0))
    if not isinstance(x, torch.Tensor) or not x.is_meta:
        return None
    if func in _INPLACE or (func in _SAME and (kwargs.get("inplace") or
                                               (len(args) > 1 and args[-1] is True))):
        return x
    if func in _SAME:
        return x.new_empty(x.shape)
    if func in _IDENTITY_IN_EVAL and not kwargs.get("training", len(args) > 2 and args[2]):
        return x
    if func in _BINARY and len(args) > 1:
        other = args[1]
        shape = _broadcast(x.shape, other.shape) if isinstance(other, torch.Tensor) else x.shape
        return x.new_empty(shape)
    if func is F.linear:
        w = args[1] if len(args) > 1 else kwargs["weight"]
        if x.shape[-1] != w.shape[1]:
            rows = x.numel() // max(1, x.shape[-1])
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{x.shape[-1]} "
                               f"and {w.shape[1]}x{w.shape[0]})")
        return x.new_empty((*x.shape[:-1], w.shape[0]))
    if func in _REDUCE:
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        dims = range(x.ndim) if dim is None or dim == () else (
            [dim] if isinstance(dim, int) else list(dim))
        dims = {d % x.ndim for d in dims}
        shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keep or i not in dims]
        return x.new_empty(shape)
    if func in (F.conv1d, F.conv2d):
        return _conv_shape(x, *args[1:], **kwargs)
    if func in (F.max_pool1d, F.max_pool2d) and not kwargs.get("return_indices"):
        return _pool_shape(x, *args[1:], **kwargs)
    if func in (F.avg_pool1d, F.avg_pool2d):
        names = ("kernel_size", "stride", "padding", "ceil_mode")
        kw = dict(zip(names, args[1:5]), **{k: v for k, v in kwargs.items() if k in names})
        return _pool_shape(x, **kw)
    if func in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and not kwargs.get("return_indices"):
        size = args[1] if len(args) > 1 else kwargs["output_size"]
        size = (size, size) if isinstance(size, int) else tuple(
            x.shape[2 + i] if v is None else v for i, v in enumerate(size))
        return x.new_empty((*x.shape[:2], *size))
    return None


def _pool_shape(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                return_indices=False):
    nd = x.ndim - 2
    k = (kernel_size,) * nd if isinstance(kernel_size, int) else tuple(kernel_size)
    st = k if not stride else ((stride,) * nd if isinstance(stride, int) else tuple(stride))
    pd = (padding,) * nd if isinstance(padding, int) else tuple(padding)
    dl = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    out = []
    for size, kk, ss, pp, dd in zip(x.shape[2:], k, st, pd, dl):
        span = size + 2 * pp - dd * (kk - 1) - 1
        n = (-(-span // ss) if ceil_mode else span // ss) + 1
        if ceil_mode and (n - 1) * ss >= size + pp:
            n -= 1
        if n < 1 or span < 0:
            raise RuntimeError(f"Output size is too small: kernel size {kk} for input {size}")
        out.append(n)
    return x.new_empty((*x.shape[:2], *out))


def _broadcast(a: tuple, b: tuple) -> tuple:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise RuntimeError(f"The size of tensor a ({x}) must match the size of tensor b "
                               f"({y}) at non-singleton dimension {max(len(a), len(b)) - i}")
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(reversed(out))


def _cat_shape(tensors, dim=0):
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    first = tensors[0]
    dim = dim % first.ndim
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if i != dim):
            raise RuntimeError(f"Sizes of tensors must match except in dimension {dim}: "
                               f"{tuple(first.shape)} and {tuple(t.shape)}")
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return first.new_empty(shape)


def _conv_shape(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    nd = weight.ndim - 2
    k = tuple(weight.shape[2:])
    st = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dl = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"expected input with {weight.shape[1] * groups} channels, "
                           f"but got {x.shape[1]} channels")
    if isinstance(padding, str):
        if padding == "same":
            return x.new_empty((x.shape[0], weight.shape[0], *x.shape[2:]))
        padding = 0
    pd = (padding,) * nd if isinstance(padding, int) else tuple(padding)
    out = []
    for size, kk, ss, pp, dd in zip(x.shape[2:], k, st, pd, dl):
        n = (size + 2 * pp - dd * (kk - 1) - 1) // ss + 1
        if n < 1:
            raise RuntimeError("Kernel size can't be greater than actual input size")
        out.append(n)
    return x.new_empty((x.shape[0], weight.shape[0], *out))


class MetaShapes(TorchFunctionMode):
    """Within it, common operations on meta tensors use :func:`meta_result`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = meta_result(func, args, kwargs)
        return func(*args, **kwargs) if out is None else out


class ModuleStack:
    """Which module is executing now, through global forward hooks (for naming failures)."""

    def __init__(self, root: nn.Module, prefix: str = ""):
        self.names = {id(m): (f"{prefix}.{n}" if prefix and n else (n or prefix))
                      for n, m in root.named_modules()}
        self.stack: list[tuple[nn.Module, tuple | None]] = []
        self.failed: tuple[str, nn.Module, tuple | None] | None = None

    def _pre(self, module, args):
        if id(module) in self.names:
            x = next((a for a in args if isinstance(a, torch.Tensor)), None)
            self.stack.append((module, tuple(x.shape) if x is not None else None))

    def _post(self, module, args, out):
        if id(module) in self.names and self.stack:
            self.stack.pop()

    @contextlib.contextmanager
    def active(self) -> Iterator["ModuleStack"]:
        h1 = nn.modules.module.register_module_forward_pre_hook(self._pre)
        h2 = nn.modules.module.register_module_forward_hook(self._post)
        try:
            yield self
        finally:
            h1.remove()
            h2.remove()

    def failure(self, exc: Exception) -> ShapeError:
        if self.stack:
            module, shape = self.stack[-1]
            return describe_failure(exc, self.names[id(module)], module, shape)
        return describe_failure(exc, "", None, None)


def meta_forward(module: nn.Module, *inputs: torch.Tensor, prefix: str = "",
                 stack: ModuleStack | None = None) -> Any:
    """``module(*inputs)`` on the meta device, in eval mode, restoring the mode afterwards."""
    stack = stack or ModuleStack(module, prefix)
    was_training = module.training
    module.eval()
    try:
        with stack.active(), torch.no_grad(), MetaShapes():
            if is_meta(module):
                return module(*inputs)
            return functional_call(module, meta_state(module), inputs)
    except (RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, ShapeError):
            raise
        raise stack.failure(exc) from None
    finally:
        module.train(was_training)


def output_shape(module: nn.Module, input_shape: tuple[int, ...], prefix: str = "") -> tuple:
    """The output shape (without batch) of ``module`` for one sample of ``input_shape``."""
    x = torch.empty((1, *input_shape), device="meta")
    return tuple(meta_forward(module, x, prefix=prefix).shape[1:])
