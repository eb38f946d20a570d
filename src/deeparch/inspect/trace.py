"""Trace one forward pass on meta tensors and record every executed leaf operation.

What gets a row:
- every leaf module call (a module without children, or one holding its own parameters),
  in execution order; a module used twice gets two rows (its parameters counted once);
- every torch operation called *outside* a leaf module on the activation path: the
  residual ``x + y``, ``torch.cat``, ``F.relu(x)`` in a user's forward, ``x.flatten(1)``.

For each row: output shape (without batch), parameters, mult-adds, the new activation
elements it stores (0 for in-place ops and views), and the receptive field and jump
(cumulative stride) of its output, propagated along the data flow so that branches and
merges are handled. Nothing real is allocated: parameters and input live on ``meta``.

Receptive field, precisely:

- a convolution or pooling gives the usual theoretical receptive field of one output
  position, ``rf + (k - 1) * dilation * jump``, not clipped to the image (it counts the
  padding, so it can exceed the input: 435 for ResNet-18's last block at 224x224);
- a dense layer, a global pooling (or any reduction of the whole map, e.g. an adaptive
  pool to 1x1) and everything computed from its output alone depend on every input
  pixel: their receptive field is the whole input, ``H x W``, and so is their jump (one
  output per image). Such rows are marked ``whole_input``;
- a merge (``x + y``, ``cat``, ``x * gate``) takes the largest receptive field of its
  operands, except that a 1x1 operand broadcast over a map (a squeeze-excitation gate, a
  global context) does not replace the map's own: the column follows the spatial path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from ..errors import ShapeError
from ..layers.probe import describe_failure, is_meta, meta_result, meta_state


@dataclass
class RF:
    """Receptive field, jump (distance between neighbouring outputs, in input pixels) and the
    extent (size) of the map, per spatial dimension."""

    rf: tuple[float, ...]
    jump: tuple[float, ...]
    extent: tuple[int, ...]
    depth: int = 0   # weight layers on the longest path from the input
    whole: bool = False   # depends on every input pixel (after a dense layer / global pool)

    def conv(self, k, s, d, extent) -> "RF":
        jump = tuple(j * s_ for j, s_ in zip(self.jump, s))
        if self.whole:   # it already sees everything; a window cannot see more
            return RF(self.rf, jump, tuple(extent), self.depth, True)
        return RF(tuple(r + d_ * (k_ - 1) * j for r, k_, d_, j in zip(self.rf, k, d, self.jump)),
                  jump, tuple(extent), self.depth)

    def full(self, input_extent: tuple[int, ...]) -> "RF":
        """Every input pixel feeds each output (a dense layer, a global pool): the receptive
        field is the whole input, and so is the jump (one output per image)."""
        whole = tuple(input_extent) if len(input_extent) == len(self.rf) else self.rf
        return RF(whole, whole, (1,) * len(self.rf), self.depth, True)

    @staticmethod
    def merge(infos: list["RF"]) -> "RF":
        # a 1x1 operand broadcast over a map (an SE gate) does not replace the map's own RF
        maps = [i for i in infos if any(e > 1 for e in i.extent)]
        use = maps if maps else infos
        return RF(tuple(max(v) for v in zip(*(i.rf for i in use))),
                  tuple(max(v) for v in zip(*(i.jump for i in use))),
                  tuple(min(v) for v in zip(*(i.extent for i in use))),
                  max(i.depth for i in infos), all(i.whole for i in use))


@dataclass
class LayerRecord:
    name: str
    type: str
    output_shape: list
    params: int
    trainable_params: int
    macs: int
    activations: int
    receptive_field: Any
    jump: Any
    input_shape: list | None = None
    geometry: dict | None = None
    bias_params: int = 0
    shared: bool = False
    functional: bool = False
    depth: int = 0
    whole_input: bool = False   # the receptive field is the whole input (see the module doc)

    @property
    def spatial(self) -> bool:
        """A convolution or pooling (its receptive field is that of a map position)."""
        return bool(self.geometry) and self.geometry.get("kind") in ("conv", "maxpool", "avgpool")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "output_shape": self.output_shape,
                "params": self.params, "macs": self.macs, "activations": self.activations,
                "receptive_field": self.receptive_field, "jump": self.jump}


def _num(v: float):
    return int(v) if float(v).is_integer() else round(float(v), 3)


def _collapse(vals: tuple):
    vals = tuple(_num(v) for v in vals)
    return vals[0] if len(set(vals)) == 1 else list(vals)


def _tup(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
             nn.AdaptiveMaxPool2d)

# operations on the activation path that only re-index (no row, information flows on)
_QUIET = {"__getitem__", "chunk", "split", "unbind", "contiguous", "detach", "to", "clone",
          "type_as", "float", "double", "half", "size", "dim", "numel", "tensor_split",
          "__setitem__", "unsqueeze", "squeeze", "expand", "expand_as", "requires_grad_"}


def module_geometry(module: nn.Module, nd: int) -> dict | None:
    """Kernel, stride, padding... of a convolution, pooling or linear layer (None for others)."""
    if isinstance(module, _CONV):
        return dict(kind="conv", kernel=_tup(module.kernel_size, nd), stride=_tup(module.stride, nd),
                    padding=module.padding if isinstance(module.padding, str)
                    else _tup(module.padding, nd),
                    dilation=_tup(module.dilation, nd), groups=module.groups,
                    in_channels=module.in_channels, out_channels=module.out_channels,
                    bias=module.bias is not None)
    if isinstance(module, _POOL):
        k = _tup(module.kernel_size, nd)
        return dict(kind="maxpool" if "Max" in type(module).__name__ else "avgpool", kernel=k,
                    stride=_tup(module.stride or k, nd), padding=_tup(module.padding, nd),
                    dilation=_tup(getattr(module, "dilation", 1), nd),
                    ceil_mode=bool(getattr(module, "ceil_mode", False)))
    if isinstance(module, nn.Linear):
        return dict(kind="linear", in_features=module.in_features,
                    out_features=module.out_features, bias=module.bias is not None)
    if isinstance(module, _ADAPTIVE):
        return dict(kind="adaptive", output_size=module.output_size)
    return None


def _op_name(func) -> str:
    name = getattr(func, "__name__", str(func))
    if name.startswith("__i") and name.endswith("__"):
        return name[3:-2] + "_"
    if name.startswith("__r") and name.endswith("__") and name not in ("__repr__",):
        return name[3:-2]
    return name.strip("_")


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _aliases(out: torch.Tensor, inputs: list[torch.Tensor]) -> bool:
    base = out._base if out._base is not None else out
    for t in inputs:
        if out is t or base is t or (t._base is not None and base is t._base):
            return True
    return False


def _shape(out) -> list:
    ts = _tensors(out)
    if len(ts) == 1:
        return list(ts[0].shape[1:])
    return [list(t.shape[1:]) for t in ts]


class Tracer(TorchFunctionMode):
    """Records :class:`LayerRecord` rows while a model runs (see the module docstring)."""

    def __init__(self, model: nn.Module, nd: int, input_extent: tuple[int, ...] | None = None):
        super().__init__()
        self.model = model
        self.nd = nd
        self.input_extent = tuple(input_extent) if input_extent is not None else (1,) * nd
        self.names = {id(m): n for n, m in model.named_modules()}
        self.leaf = {id(m): not any(True for _ in m.children()) for m in model.modules()}
        self.own = {}
        for m in model.modules():
            ps = list(m.parameters(recurse=False))
            self.own[id(m)] = (sum(p.numel() for p in ps),
                               sum(p.numel() for p in ps if p.requires_grad),
                               sum(p.numel() for n, p in m.named_parameters(recurse=False)
                                   if n.endswith("bias")))
        self.records: list[LayerRecord] = []
        self.info: dict[int, RF] = {}
        self._keep: list[torch.Tensor] = []
        self.stack: list[tuple[nn.Module, list[torch.Tensor]]] = []
        self.seen: set[int] = set()
        self.failed: ShapeError | None = None
        self._in_hook = False

    # -- data flow ---------------------------------------------------------------------
    def track(self, t: torch.Tensor, info: RF) -> None:
        self.info[id(t)] = info
        self._keep.append(t)

    def lookup(self, ts: list[torch.Tensor]) -> list[RF]:
        return [self.info[id(t)] for t in ts if id(t) in self.info]

    def _spatial(self, t: torch.Tensor) -> tuple[int, ...] | None:
        return tuple(t.shape[2:]) if t.ndim == 2 + self.nd else None

    def _propagate(self, src: RF, out: torch.Tensor, geometry: dict | None, full: bool) -> RF:
        sp = self._spatial(out)
        if geometry and "kernel" in geometry and sp is not None:
            return src.conv(geometry["kernel"], geometry["stride"], geometry["dilation"], sp)
        if full:
            return src.full(self.input_extent)
        if sp is None or sp == src.extent:
            return src
        if all(s == 1 for s in sp):
            return src.full(self.input_extent)
        # a resize we know nothing about: treat it as pooling by the size ratio
        ratio = tuple(e / s for e, s in zip(src.extent, sp))
        k = tuple(max(1, math.ceil(r)) for r in ratio)
        jump = tuple(j * r for j, r in zip(src.jump, ratio))
        if src.whole:
            return RF(src.rf, jump, sp, src.depth, True)
        return RF(tuple(r + (kk - 1) * j for r, kk, j in zip(src.rf, k, src.jump)),
                  jump, sp, src.depth)

    def _reduces_map(self, x: torch.Tensor | None, outs: list[torch.Tensor]) -> bool:
        """A map in, no map out, fewer values: a global pooling or a mean over H, W (a flatten
        keeps every value and is not one)."""
        if x is None or self._spatial(x) is None or all(e == 1 for e in x.shape[2:]):
            return False
        return all(self._spatial(y) is None and y.numel() < x.numel() for y in outs)

    # -- module rows -------------------------------------------------------------------
    def pre_hook(self, module, args):
        if id(module) in self.names and not self._in_hook:
            self.stack.append((module, _tensors(args)))

    def post_hook(self, module, args, out):
        if id(module) not in self.names or not self.stack or self._in_hook:
            return
        _, inputs = self.stack.pop()
        params, trainable, bias = self.own[id(module)]
        if not self.leaf[id(module)] and params == 0:
            return
        self._in_hook = True  # our own bookkeeping is not part of the model
        try:
            self._record_module(module, inputs, out, params, trainable, bias)
        finally:
            self._in_hook = False

    def _record_module(self, module, inputs, out, params, trainable, bias):
        outs = _tensors(out)
        if not outs:
            return
        y = outs[0]
        x = inputs[0] if inputs else None
        geometry = module_geometry(module, self.nd)
        macs, full = 0, isinstance(module, nn.Linear)
        if isinstance(module, _CONV):
            macs = y.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        elif isinstance(module, _CONVT):
            macs = (x.numel() if x is not None else 0) * (
                module.out_channels // module.groups) * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            macs = y.numel() * module.in_features
        elif isinstance(module, nn.Bilinear):
            macs = y.numel() * module.in1_features * module.in2_features
        first = id(module) not in self.seen
        self.seen.add(id(module))
        self._add(self.names[id(module)], type(module).__name__, inputs, out, x,
                  params if first else 0, trainable if first else 0, bias if first else 0,
                  macs, geometry, full, shared=not first)

    def _add(self, name, kind, inputs, out, x, params, trainable, bias, macs, geometry, full,
             shared=False, functional=False):
        outs = _tensors(out)
        srcs = self.lookup(inputs)
        if srcs:
            src = srcs[0] if len(srcs) == 1 else RF.merge(srcs)
            full = full or (geometry is None and self._reduces_map(x, outs))
            for y in outs:
                info = self._propagate(src, y, geometry, full)
                if macs:
                    info = RF(info.rf, info.jump, info.extent, info.depth + 1, info.whole)
                self.track(y, info)
        info = self.info.get(id(outs[0]))
        new = sum(0 if _aliases(y, inputs) else y.numel() for y in outs)
        self.records.append(LayerRecord(
            name=name, type=kind, output_shape=_shape(out), params=params,
            trainable_params=trainable, macs=int(macs), activations=int(new),
            receptive_field=_collapse(info.rf) if info else None,
            jump=_collapse(info.jump) if info else None,
            input_shape=list(x.shape[1:]) if x is not None else None,
            geometry=geometry, bias_params=bias, shared=shared, functional=functional,
            depth=info.depth if info else 0, whole_input=bool(info and info.whole)))

    # -- functional rows ---------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = meta_result(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if self._in_hook or (self.stack and self.leaf[id(self.stack[-1][0])]):
            return out
        inputs = _tensors(args) + _tensors(kwargs)
        srcs = self.lookup(inputs)
        outs = _tensors(out)
        if not srcs or not outs:
            return out
        name = _op_name(func)
        if name in _QUIET:
            src = srcs[0] if len(srcs) == 1 else RF.merge(srcs)
            for y in outs:
                self.track(y, src)
            return out
        geometry, macs, full = self._functional_geometry(name, args, kwargs, outs[0])
        where = self.names[id(self.stack[-1][0])] if self.stack else ""
        x = next((t for t in inputs if id(t) in self.info), None)
        self._add(f"{where}.{name}" if where else name, name, [t for t in inputs
                  if id(t) in self.info], out, x, 0, 0, 0, macs, geometry, full,
                  functional=True)
        return out

    def _functional_geometry(self, name, args, kwargs, y):
        if name in ("conv1d", "conv2d", "conv3d"):
            w = args[1] if len(args) > 1 else kwargs["weight"]
            names = ("stride", "padding", "dilation", "groups")
            vals = dict(zip(names, list(args[3:7]) + [None] * 4))
            vals.update({k: v for k, v in kwargs.items() if k in names})
            stride = _tup(vals["stride"] or 1, self.nd)
            dil = _tup(vals["dilation"] or 1, self.nd)
            groups = vals["groups"] or 1
            geo = dict(kind="conv", kernel=tuple(w.shape[2:]), stride=stride,
                       padding=vals["padding"] or 0, dilation=dil, groups=groups,
                       in_channels=w.shape[1] * groups, out_channels=w.shape[0],
                       bias=len(args) > 2 and args[2] is not None)
            return geo, y.numel() * w.shape[1] * math.prod(w.shape[2:]), False
        if name in ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d"):
            k = _tup(args[1] if len(args) > 1 else kwargs["kernel_size"], self.nd)
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            return dict(kind="maxpool" if "max" in name else "avgpool", kernel=k,
                        stride=_tup(s or k, self.nd), padding=_tup(kwargs.get("padding", 0), self.nd),
                        dilation=(1,) * self.nd), 0, False
        if name == "linear":
            w = args[1] if len(args) > 1 else kwargs["weight"]
            return dict(kind="linear", in_features=w.shape[1], out_features=w.shape[0],
                        bias=len(args) > 2 and args[2] is not None), y.numel() * w.shape[1], True
        if name in ("matmul", "mm", "bmm"):
            a = args[0]
            return None, y.numel() * a.shape[-1], False
        return None, 0, False


@dataclass
class Trace:
    records: list[LayerRecord]
    output: Any
    dtype: torch.dtype
    failure: ShapeError | None = None
    input_info: dict = field(default_factory=dict)


def run_trace(model: nn.Module, input_size: tuple[int, ...]) -> Trace:
    """Run ``model`` once on a meta tensor of ``(1, *input_size)`` and record every operation.

    A failing layer stops the trace: the rows recorded so far are kept in ``failure.partial``.
    """
    from .summary import check_size
    input_size = check_size(input_size)
    nd = len(input_size) - 1
    x = torch.empty((1, *input_size), device="meta")
    tracer = Tracer(model, nd, tuple(input_size[1:]))
    tracer.track(x, RF((1,) * nd, (1,) * nd, tuple(input_size[1:])))
    was_training = model.training
    model.eval()
    h1 = nn.modules.module.register_module_forward_pre_hook(tracer.pre_hook)
    h2 = nn.modules.module.register_module_forward_hook(tracer.post_hook)
    out, failure = None, None
    try:
        with torch.no_grad(), tracer:
            if is_meta(model):
                out = model(x)
            else:
                out = functional_call(model, meta_state(model), (x,))
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        if isinstance(exc, ShapeError):
            failure = exc
        elif tracer.stack:
            module, inputs = tracer.stack[-1]
            failure = describe_failure(exc, tracer.names[id(module)], module,
                                       tuple(inputs[0].shape) if inputs else None)
        else:
            failure = describe_failure(exc, "", None, tuple(x.shape))
        failure.partial = list(tracer.records)
    finally:
        h1.remove()
        h2.remove()
        model.train(was_training)
    p = next(iter(model.parameters()), None)
    return Trace(tracer.records, out, p.dtype if p is not None else torch.float32, failure)
