"""``summary(model | name | pattern, input_size)``: what every layer outputs, weighs and costs."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputSizeError, ShapeError
from ..pattern import MAX_INPUT_CHANNELS, MAX_SIDE, input_size_problem
from .trace import LayerRecord, run_trace


@dataclass
class Summary:
    """The result of :func:`summary`; ``to_dict()`` is the JSON schema of DESIGN.md."""

    model: str
    input_size: tuple[int, ...]
    layers: list[LayerRecord]
    total_params: int
    trainable_params: int
    macs: int
    activations: int
    bytes_per_value: int = 4
    bias_params: int = 0
    card: Any = None
    output_shape: list = field(default_factory=list)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def param_bytes(self) -> int:
        return self.total_params * self.bytes_per_value

    @property
    def activation_bytes(self) -> int:
        return self.activations * self.bytes_per_value

    @property
    def receptive_field(self):
        """The receptive field of the last feature map: the largest of any convolution or
        pooling output whose units still see a window of the input (212 for VGG-16, 435 for
        ResNet-18 at 224x224; it may exceed the input, as it counts the padding). This is the
        figure papers quote and :func:`~deeparch.inspect.compare.compare` shows.

        Rows from a dense layer or a global pooling on see every input pixel: their
        receptive field is the whole input (``whole_input`` rows, see
        :mod:`deeparch.inspect.trace`), which :attr:`output_receptive_field` reports."""
        rfs = [r.receptive_field for r in self.layers
               if r.spatial and r.receptive_field and not r.whole_input]
        return max(rfs, key=lambda v: max(v) if isinstance(v, list) else v) if rfs else None

    @property
    def output_receptive_field(self):
        """The receptive field of the network's output (its last row): the whole input
        ``H x W`` for a classifier that ends in a dense layer or a global pooling, the last
        feature map's (:attr:`receptive_field`) for a fully convolutional network."""
        for r in reversed(self.layers):
            if r.receptive_field is not None:
                return r.receptive_field
        return None

    @property
    def sees_whole_input(self) -> bool:
        """True when the output depends on every input pixel (it ends in a dense layer or a
        global pooling)."""
        last = next((r for r in reversed(self.layers) if r.receptive_field is not None), None)
        return bool(last and last.whole_input)

    @property
    def depth(self) -> int:
        """Weight layers (convolutions, fully connected) on the longest path from the input:
        16 for VGG-16, 22 for GoogLeNet, 50 for ResNet-50."""
        return max((r.depth for r in self.layers), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "input_size": list(self.input_size),
            "total_params": self.total_params, "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params, "macs": self.macs,
            "activations": self.activations, "param_bytes": self.param_bytes,
            "activation_bytes": self.activation_bytes, "output_shape": self.output_shape,
            "layers": [r.to_dict() for r in self.layers],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self, format: str = "table") -> str:
        from .render import render
        return render(self, format)

    def __str__(self) -> str:
        return self.render("table")


def parse_input_size(value: str | Sequence[int]) -> tuple[int, ...]:
    """``'3,224,224'`` (or a sequence) -> ``(3, 224, 224)``; anything else is an InputSizeError.

    Besides being whole positive numbers, C,H,W must be within the bounds of
    :func:`check_size` (65,536 on a side, 100,000 channels, 2**32 values), so that no shape
    arithmetic downstream can overflow; 3x4096x4096 is fine (the inspector runs on meta).
    """
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace("x", ",").split(",")]
        nums = []
        for p in parts:
            if re.fullmatch(r"[+]?[0-9_]{20,}", p):   # too many digits to be a size at all
                raise InputSizeError(f"input size {_short(value)!r} has a value of {len(p)} "
                                     f"digits; the limits are {MAX_INPUT_CHANNELS:,} channels "
                                     f"and {MAX_SIDE:,} per side.")
            try:
                nums.append(int(p))
            except ValueError:
                raise InputSizeError(f"input size {_short(value)!r} is not numeric; write it as "
                                     "C,H,W, e.g. 3,224,224.") from None
    else:
        try:
            vals = list(value)
            if any(isinstance(v, bool) or (isinstance(v, float) and not v.is_integer())
                   for v in vals):
                raise ValueError
            nums = [int(v) for v in vals]
        except (TypeError, ValueError, OverflowError):
            raise InputSizeError(f"input size {_short(repr(value))} is not whole numbers; give it "
                                 "as (C, H, W), e.g. (3, 224, 224).") from None
    if len(nums) != 3 and (isinstance(value, str) or len(nums) != 2):
        raise InputSizeError(
            f"input size {_short(repr(value))} has {len(nums)} values; give three, C,H,W, e.g. "
            "3,224,224.")
    return check_size(nums, value)


def check_size(size: Sequence[int], shown=None) -> tuple[int, ...]:
    """``size`` (C, then the spatial sides) as a tuple, if its values are positive and within
    the bounds shared with the pattern language: at most ``MAX_INPUT_CHANNELS`` (100,000)
    channels, ``MAX_SIDE`` (65,536) per side and ``MAX_INPUT_VALUES`` (2**32) values in all;
    otherwise an :class:`InputSizeError` saying which bound."""
    shown = _short(repr(size if shown is None else shown))
    try:
        nums = tuple(int(v) for v in size)
    except (TypeError, ValueError, OverflowError):
        raise InputSizeError(f"input size {shown} is not whole numbers C,H,W.") from None
    if not nums or any(n <= 0 for n in nums):
        raise InputSizeError(f"input size {shown} must be positive numbers, as C,H,W.")
    problem = input_size_problem(nums)
    if problem:
        raise InputSizeError(f"input size {shown}: {problem}.")
    return nums


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def resolve(target: nn.Module | str, input_size=None, meta: bool = True):
    """A model, its display name, its input size and its card, from a module, name or pattern."""
    from ..models.registry import _REGISTRY, accepts, create_model, model_info
    from ..pattern import from_pattern, looks_like_pattern

    size = parse_input_size(input_size) if input_size is not None else None
    if isinstance(target, nn.Module):
        if size is None:
            size = getattr(target, "input_size", None)
            if size is None:
                raise InputSizeError("give the input size (C, H, W) for a model of your own.")
            size = check_size(size)
        return target, getattr(target, "model_name", type(target).__name__), tuple(size), None
    if isinstance(target, str) and looks_like_pattern(target) and target not in _REGISTRY:
        model = from_pattern(target, input_size=size, device="meta" if meta else None)
        return model, target, tuple(model.input_size), None
    card = model_info(target)
    size = size or card.input_size
    kw = {}
    if accepts(target, "in_chans"):
        kw["in_chans"] = size[0]
    if accepts(target, "img_size") and len(size) == 3:
        kw["img_size"] = tuple(size[1:])
    if meta:
        with torch.device("meta"):
            model = create_model(target, **kw)
    else:
        model = create_model(target, **kw)
    return model, target, tuple(size), card


def summarize_model(model: nn.Module, name: str, size: tuple[int, ...], card=None) -> Summary:
    trace = run_trace(model, size)
    if trace.failure is not None:
        raise trace.failure
    return _from_trace(model, name, size, card, trace.records, trace.output)


def _from_trace(model, name, size, card, records, output) -> Summary:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bias = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    p = next(iter(model.parameters()), None)
    nbytes = p.element_size() if p is not None else 4
    input_elems = 1
    for s in size:
        input_elems *= s
    return Summary(
        model=name, input_size=tuple(size), layers=records, total_params=total,
        trainable_params=trainable, macs=sum(r.macs for r in records),
        activations=input_elems + sum(r.activations for r in records),
        bytes_per_value=nbytes, bias_params=bias, card=card,
        output_shape=list(output.shape[1:]) if isinstance(output, torch.Tensor) else [])


def smallest_input(name: str, channels: int | None = None) -> int | None:
    """The smallest square input side that registered model ``name`` accepts (None if none
    up to its default size). Found by bisection: tracing on meta tensors costs milliseconds."""
    from ..models.registry import model_info
    c, h, _ = model_info(name).input_size
    c = channels or c

    def ok(side: int) -> bool:
        try:
            model, _, size, card = resolve(name, (c, side, side))
            return run_trace(model, size).failure is None
        except ShapeError:
            return False

    if not ok(h):
        return None
    lo, hi = 1, h          # invariant: hi works
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def summary(target: nn.Module | str, input_size=None) -> Summary:
    """Per-layer output shapes, parameters, mult-adds, memory and receptive field.

    ``target`` is an ``nn.Module`` (any, yours included), a registered model name or a
    layer pattern. ``input_size`` is ``(C, H, W)`` (or ``'C,H,W'``); a registered model or
    a pattern with ``INPUT(...)`` has its own default. Runs on meta tensors: no activation
    memory is allocated, whatever the model's size.
    """
    try:
        model, name, size, card = resolve(target, input_size)
        return summarize_model(model, name, size, card)
    except ShapeError as exc:
        if not isinstance(target, str) or input_size is None or exc.args[0].endswith(")."):
            raise
        from ..models.registry import _REGISTRY
        if target not in _REGISTRY:
            raise
        side = smallest_input(target, parse_input_size(input_size)[0])
        if side is None:
            raise
        raise ShapeError(f"{exc.args[0].rstrip('.')} ({target} accepts square inputs from "
                         f"{side}x{side} up).") from None
