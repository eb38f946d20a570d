"""Pruning: structured channel pruning that makes a network physically smaller, and
unstructured magnitude pruning that only zeroes weights.

* :func:`prune` removes whole channels (filters) with torch-pruning's dependency graph
  (DepGraph, Fang et al. 2023): every layer coupled to a removed channel -- the next conv's
  input, the batch norm, a residual sum, a concatenation, a depthwise conv -- shrinks with
  it, so the result has really smaller tensors, fewer parameters and fewer mult-adds.
  ``by="params"`` reads ``ratio`` as the fraction of *parameters* to remove ("pruned to
  half its parameters") and finds the per-layer channel ratio that gives it;
  ``by="channels"`` is torch-pruning's own meaning (that fraction of every layer's channels).
* :func:`magnitude_prune` zeroes the smallest weights (Han et al. 2015). The tensors keep
  their shape: the file is as large and dense kernels are as slow as before.
* :func:`save_pruned` / :func:`load_pruned` keep a pruned model in one safetensors file
  without pickling the module: the metadata says how to build the unpruned network and
  which attributes of which modules pruning changed.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import DeeparchError, EdgeError, WeightsError
from ._deps import require

IMPORTANCES = ("l1", "l2", "taylor", "bn")
BY = ("params", "channels")
FORMAT = "deeparch.pruned"
VERSION = "1"
PARAM_TOL = 0.02          # by="params": reached fraction within this of the target
MAX_CHANNEL_RATIO = 0.95  # never ask torch-pruning to remove more of a layer than this
_MAX_TRIALS = 12


# ----------------------------------------------------------------------------- result
@dataclass
class PruneResult:
    """What :func:`prune` did. ``model`` is the pruned copy (the input is untouched)."""
    model: nn.Module
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    channel_ratio: float
    importance: str
    steps: int
    by: str
    target_ratio: float
    input_size: tuple
    classifier: str = ""
    ignored: list = field(default_factory=list)
    trials: int = 1
    notes: list = field(default_factory=list)

    @property
    def param_ratio(self) -> float:
        """The fraction of parameters removed."""
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    @property
    def macs_ratio(self) -> float:
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def to_dict(self) -> dict:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "param_ratio": round(self.param_ratio, 6),
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_ratio": round(self.macs_ratio, 6),
                "channel_ratio": round(self.channel_ratio, 6), "importance": self.importance,
                "steps": self.steps, "by": self.by, "target_ratio": self.target_ratio,
                "input_size": list(self.input_size), "classifier": self.classifier,
                "ignored": list(self.ignored), "trials": self.trials,
                "notes": list(self.notes)}


# ----------------------------------------------------------------------------- checks
def _check_ratio(ratio, what: str = "ratio") -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise EdgeError(f"{what} must be a number strictly between 0 and 1, got {ratio!r}.")
    r = float(ratio)
    if not (0.0 < r < 1.0):   # also NaN
        raise EdgeError(f"{what} must be strictly between 0 and 1 (e.g. 0.5 removes half), "
                        f"got {ratio!r}.")
    return r


def _check_int(value, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise EdgeError(f"{what} must be an integer >= {low}, got {value!r}.")
    return value


def _example(example_input) -> torch.Tensor:
    if isinstance(example_input, torch.Tensor):
        x = example_input
    elif isinstance(example_input, (tuple, list)) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in example_input):
        x = torch.randn(1, *example_input)
    else:
        raise EdgeError(f"example_input must be a tensor (N, C, H, W) or an input size "
                        f"(C, H, W), got {type(example_input).__name__}.")
    if x.dim() < 2 or x.numel() == 0:
        raise EdgeError(f"example_input must be a batch (N, C, ...) with N >= 1, got shape "
                        f"{tuple(x.shape)}.")
    if not x.is_floating_point():
        raise EdgeError(f"example_input must be a floating-point tensor, got {x.dtype}.")
    return x[:1].detach().cpu()


def _forward_where(model: nn.Module, x: torch.Tensor):
    """Run ``model(x)`` under no_grad in eval mode; on failure return (None, 'name (Type)'
    of the leaf module that was running, the exception)."""
    current: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def pre(mod, _inp):
        current.append(names.get(mod, "?"))

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()
               if not list(m.children())]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x), None, None
    except Exception as exc:  # noqa: BLE001 -- reported as one sentence
        where = current[-1] if current else ""
        mod = dict(model.named_modules()).get(where)
        return None, f"{where} ({type(mod).__name__})" if where else "", exc
    finally:
        model.train(training)
        for h in handles:
            h.remove()


# torch-pruning's functions that follow one kind of operation through the graph
_TP_OPERATIONS = {
    "update_reshape_index_mapping": "a view/reshape of the channel dimension",
    "update_split_index_mapping": "a split/chunk along the channels",
    "update_concat_index_mapping": "a concatenation along the channels",
    "update_slice_index_mapping": "a slice of the channels",
    "update_unbind_index_mapping": "an unbind",
    "update_expand_index_mapping": "an expand",
}


def _tp_operation(exc: BaseException) -> str:
    """The operation torch-pruning was following when ``exc`` was raised, if it says."""
    tb = exc.__traceback__
    found = ""
    while tb is not None:
        found = _TP_OPERATIONS.get(tb.tb_frame.f_code.co_name, found)
        tb = tb.tb_next
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _leaf_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the Conv/Linear modules in the order they run."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(names[mod]))
               for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return order


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: nn.Module, input_size) -> tuple[int, int]:
    from ..inspect import summary
    try:
        s = summary(model, tuple(input_size))
    except DeeparchError as exc:
        raise EdgeError(f"the inspector cannot count the mult-adds of this model, so the "
                        f"pruning cannot be measured: {exc}") from exc
    return int(s.total_params), int(s.macs)


# --------------------------------------------------------------------------- families
def _stream_writers(model: nn.Module, order: Sequence[str]) -> list[str]:
    """The convs that write the residual streams of a ResNet with zero-padding (option A)
    shortcuts: the stem's convs and the last conv of every residual unit's branch."""
    from ..models.resnet import ResidualBlock
    blocks = [n for n, m in model.named_modules() if isinstance(m, ResidualBlock)]
    writers, last_in = [], {}
    for name in order:
        owner = max((b for b in blocks if name.startswith(b + ".")), key=len, default=None)
        if owner is None:
            writers.append(name)
        elif not name.startswith(owner + ".downsample"):
            last_in[owner] = name
    return writers + list(last_in.values())


def _special_ignored(model: nn.Module, order: Sequence[str]) -> tuple[list[str], list[str]]:
    """Layers whose output channels must stay as built, and a note saying why.

    * DPN: torch-pruning's graph follows ``torch.split`` by the sizes it sees while tracing,
      but the dual path block splits with sizes stored in its own attributes
      (``split(x, [self.width, 2 * self.inc])``), which would cut the pruned tensor at the
      old place: the split producers (project, conv3) keep their output width.
    * ResNet option-A shortcuts append zero channels with ``F.pad``, which torch-pruning
      maps one to one although the widths differ: the residual streams keep their width.
    ``order``: the Conv/Linear names in the order they run."""
    from ..models.dpn import DualPathBlock
    from ..models.resnet import PadShortcut

    names = {m: n for n, m in model.named_modules()}
    fixed: list[str] = []
    notes: list[str] = []
    blocks = [m for m in model.modules() if isinstance(m, DualPathBlock)]
    for m in blocks:
        for sub in (m.project, m.conv3):
            if sub is not None:
                fixed.extend(names[c] for c in sub.modules()
                             if isinstance(c, nn.modules.conv._ConvNd))
    if blocks:
        notes.append("DPN dual path blocks keep the output width of project/conv3 (their "
                     "split sizes are attributes)")
    if any(isinstance(m, PadShortcut) and m.extra for m in model.modules()):
        fixed.extend(_stream_writers(model, order))
        notes.append("option-A (zero-padding) shortcuts: the residual streams keep their "
                     "width, only the inner width of each unit is pruned")
    return fixed, notes


# --------------------------------------------------------------------- channel shuffle
class _ShuffleFn(torch.autograd.Function):
    """ShuffleNet's channel shuffle as one autograd node, so that torch-pruning sees one
    operation (it reads view/transpose/reshape as a flatten and fails on it)."""

    @staticmethod
    def forward(ctx, x, groups):  # noqa: D102
        ctx.groups = groups
        n, c, h, w = x.shape
        return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        n, c, h, w = grad.shape
        g = ctx.groups
        return grad.reshape(n, c // g, g, h, w).transpose(1, 2).reshape(n, c, h, w), None


class _TracedShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return _ShuffleFn.apply(x, self.groups)


class _ShufflePruner:
    """torch-pruning's view of a channel shuffle: channels pass through it (in and out
    coupled), but nothing may be pruned across it -- the layers feeding it are ignored."""

    def prune_out_channels(self, layer, idxs):
        if len(idxs):
            raise EdgeError("pruning would remove channels across a channel shuffle, which "
                            "torch-pruning maps one to one although the shuffle permutes them.")
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return None

    get_in_channels = get_out_channels

    def get_in_channel_groups(self, layer):
        return 1

    get_out_channel_groups = get_in_channel_groups

    def __call__(self, layer, *args, **kwargs):
        return layer


def _swap_shuffles(model: nn.Module, traced: bool) -> int:
    """Replace every ChannelShuffle by the one-node version (``traced``) or back."""
    from ..layers import ChannelShuffle
    src, dst = (ChannelShuffle, _TracedShuffle) if traced else (_TracedShuffle, ChannelShuffle)
    swaps = [(n, m) for n, m in model.named_modules() if type(m) is src]
    for name, m in swaps:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, dst(m.groups))
    return len(swaps)


def _refuse_grouped_shuffle(model: nn.Module) -> None:
    """ShuffleNet v1: a channel shuffle between grouped (not depthwise) convolutions."""
    from ..layers import ChannelShuffle
    grouped = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)
               and 1 < m.groups < m.in_channels]
    shuffle = next((n for n, m in model.named_modules() if isinstance(m, ChannelShuffle)), "")
    if grouped:
        raise EdgeError(
            f"this network shuffles channels ({shuffle}) between grouped convolutions "
            f"({grouped[0]}, groups={model.get_submodule(grouped[0]).groups}), as ShuffleNet "
            f"v1 does, which structured pruning cannot do: torch-pruning maps channels "
            f"through the shuffle one to one and cannot keep every group of the grouped "
            f"convolutions equally wide; use magnitude_prune, or build it with groups=1.")


def _shuffle_producers(tp, model: nn.Module, x: torch.Tensor) -> list[str]:
    """The Conv/Linear layers whose output reaches a channel shuffle (through norms,
    activations, sums, concatenations and splits): their output width must stay."""
    names = {m: n for n, m in model.named_modules()}
    with _chunk_sizes(tp):
        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=x, customized_pruners={_TracedShuffle: _ShufflePruner()})
    found: list[str] = []
    for module, node in dg.module2node.items():
        if not isinstance(module, _TracedShuffle):
            continue
        stack, seen = list(node.inputs), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if isinstance(n.module, (nn.modules.conv._ConvNd, nn.Linear)):
                # a depthwise conv passes its channels through: keep walking
                m = n.module
                if isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.in_channels \
                        == m.out_channels and m.groups > 1:
                    stack.extend(n.inputs)
                if names.get(m) and names[m] not in found:
                    found.append(names[m])
                continue
            stack.extend(n.inputs)
    return found


@contextlib.contextmanager
def _chunk_sizes(tp):
    """Make torch-pruning read the sizes of ``tensor.chunk`` (SplitBackward0).

    torch-pruning 1.6 reads the split sizes of ``torch.split(x, [a, b])`` from the autograd
    node, but for ``chunk`` it looks for ``_saved_self_sizes``, which torch 2.x names
    ``_saved_self_sym_sizes``, and then guesses the sizes from the consumers; where a chunk
    goes into a concatenation (ShuffleNet v2's channel split) the guess is incomplete and
    the index mapping fails with an IndexError. This fills the sizes in, while we trace."""
    from torch_pruning.dependency import shape_infer
    original = shape_infer.init_shape_information

    def patched(graph):
        original(graph)
        for node in graph.module2node.values():
            fn = node.grad_fn
            if node.type != tp.ops.OPTYPE.SPLIT or not hasattr(fn, "_saved_split_size") \
                    or not hasattr(fn, "_saved_self_sym_sizes") or fn._saved_dim != 1:
                continue
            total, size = int(fn._saved_self_sym_sizes[1]), int(fn._saved_split_size)
            chs = [size] * (total // size) + ([total % size] if total % size else [])
            node.module.split_sizes = chs
            node.module.offsets = [sum(chs[:i]) for i in range(len(chs) + 1)]

    shape_infer.init_shape_information = patched
    try:
        yield
    finally:
        shape_infer.init_shape_information = original


# ----------------------------------------------------------------------------- prune
def _importance(tp, name: str):
    imp = tp.importance
    if name == "l1":
        return imp.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return imp.GroupMagnitudeImportance(p=2)
    if name == "bn":
        return imp.BNScaleImportance()
    return imp.GroupTaylorImportance()


def _check_data(data) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if data is None:
        raise EdgeError("importance='taylor' needs data: a few (x, y) batches to compute the "
                        "gradients it scores channels by; pass data=[(x, y), ...].")
    batches = []
    try:
        for i, item in enumerate(data):
            if i >= 64:
                break
            x, y = item[0], item[1]
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                raise TypeError
            batches.append((x, y))
    except (TypeError, IndexError, KeyError):
        raise EdgeError("data must be an iterable of (x, y) tensor batches (a DataLoader or a "
                        "list of pairs).") from None
    if not batches:
        raise EdgeError("data holds no batches; importance='taylor' needs at least one (x, y) "
                        "batch.")
    return batches


def _taylor_grads(model: nn.Module, batches) -> None:
    model.zero_grad(set_to_none=False)
    training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for x, y in batches:
                out = model(x)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                loss = nn.functional.cross_entropy(out, y.long())
                loss.backward()
    except Exception as exc:  # noqa: BLE001
        raise EdgeError(f"the data batches do not fit the model for the Taylor gradients "
                        f"({_first_line(exc)}); pass (x, y) with x like example_input and y "
                        f"class indices.") from exc
    finally:
        model.train(training)


def _prune_once(tp, base: nn.Module, x: torch.Tensor, channel_ratio: float, importance: str,
                steps: int, ignored_names: Sequence[str], round_to, batches) -> nn.Module:
    """One pruned deep copy of ``base`` at ``channel_ratio``."""
    model = copy.deepcopy(base)
    shuffles = _swap_shuffles(model, traced=True)
    modules = dict(model.named_modules())
    ignored = [modules[n] for n in ignored_names]
    custom = {_TracedShuffle: _ShufflePruner()} if shuffles else None
    training = model.training
    model.eval()   # tracing must not move the batch-norm statistics
    try:
        with _chunk_sizes(tp):
            pruner = tp.pruner.MetaPruner(
                model, x, importance=_importance(tp, importance), pruning_ratio=channel_ratio,
                iterative_steps=steps, ignored_layers=ignored, round_to=round_to,
                max_pruning_ratio=MAX_CHANNEL_RATIO, customized_pruners=custom)
    except Exception as exc:  # noqa: BLE001
        op = _tp_operation(exc)
        raise EdgeError(f"torch-pruning cannot trace {type(base).__name__}"
                        f"{' at ' + op if op else ''} ({type(exc).__name__}: "
                        f"{_first_line(exc)}); structured pruning needs a forward that its "
                        f"dependency graph can follow -- list the layers around that "
                        f"operation in ignored.") from exc
    try:
        for _ in range(steps):
            if importance == "taylor":
                _taylor_grads(model, batches)
            with _chunk_sizes(tp):
                pruner.step()
    except DeeparchError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise EdgeError(f"torch-pruning failed while removing channels from "
                        f"{type(base).__name__} ({type(exc).__name__}: {_first_line(exc)})."
                        ) from exc
    finally:
        model.train(training)
        if shuffles:
            _swap_shuffles(model, traced=False)
    model.zero_grad(set_to_none=True)
    return model


def prune(model: nn.Module, example_input, ratio: float, importance: str = "l1",
          iterative_steps: int = 1, ignored=None, by: str = "params", data=None,
          round_to: int | None = None) -> PruneResult:
    """Structured channel pruning: a physically smaller copy of ``model``.

    ``example_input`` is a tensor ``(N, C, H, W)`` (or an input size ``(C, H, W)``) used to
    trace the dependency graph. ``ratio`` in (0, 1): with ``by="params"`` the fraction of
    parameters to remove (the per-layer channel ratio that reaches it within
    ``PARAM_TOL`` is found by bisection on copies); with ``by="channels"`` the fraction of
    every prunable layer's channels. ``importance``: ``"l1"``/``"l2"`` (group weight
    norms), ``"bn"`` (batch-norm scale factors, Network Slimming), ``"taylor"`` (first-order
    Taylor |w * dL/dw|; needs ``data``, a few ``(x, y)`` batches). ``iterative_steps``
    removes the channels in that many rounds (importance recomputed in each).
    The final classifier (the last Conv/Linear to run) keeps its outputs, as do the
    modules (or names) in ``ignored``. The input model is never modified.
    """
    tp = require("torch_pruning", "structured pruning")
    if not isinstance(model, nn.Module):
        raise EdgeError(f"prune needs a torch.nn.Module, got {type(model).__name__}.")
    ratio = _check_ratio(ratio)
    if importance not in IMPORTANCES:
        raise EdgeError(f"unknown importance {importance!r}; choose one of "
                        f"{', '.join(IMPORTANCES)}.")
    if by not in BY:
        raise EdgeError(f"by must be 'params' (fraction of parameters) or 'channels' "
                        f"(fraction of channels per layer), got {by!r}.")
    steps = _check_int(iterative_steps, "iterative_steps")
    if steps > 100:
        raise EdgeError(f"iterative_steps must be at most 100, got {steps}.")
    if round_to is not None:
        round_to = _check_int(round_to, "round_to")
    x = _example(example_input)
    batches = _check_data(data) if importance == "taylor" else None

    work = copy.deepcopy(model).cpu()
    out, where, exc = _forward_where(work, x)
    if out is None:
        raise EdgeError(f"example_input of shape {tuple(x.shape)} does not fit the model: "
                        f"{where + ' failed: ' if where else ''}{_first_line(exc)}.")
    if isinstance(out, (tuple, list)):
        raise EdgeError("prune needs a model with one output tensor; this one returns "
                        f"{type(out).__name__}.")
    input_size = tuple(x.shape[1:])
    params_before, macs_before = _macs(work, input_size)
    if importance == "bn" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                      for m in work.modules()):
        raise EdgeError("importance='bn' scores channels by their batch-norm scale, and "
                        "this model has no BatchNorm layer; use 'l1', 'l2' or 'taylor'.")
    names = {m: n for n, m in work.named_modules()}
    orig_names = {id(m): n for n, m in model.named_modules()}
    order = _leaf_order(work, x)
    if not order:
        raise EdgeError("the model has no Conv or Linear layer that runs on example_input, "
                        "so there are no channels to prune.")
    classifier = order[-1]
    ignored_names = [classifier]
    for item in ([] if ignored is None else
                 [ignored] if isinstance(ignored, (str, nn.Module)) else list(ignored)):
        if isinstance(item, str):
            if item not in dict(work.named_modules()):
                raise EdgeError(f"ignored names {item!r}, which is not a module of the model "
                                f"(see model.named_modules()).")
            name = item
        elif isinstance(item, nn.Module):
            name = orig_names.get(id(item))
            if name is None:
                raise EdgeError(f"ignored holds a {type(item).__name__} that is not part of "
                                f"the model.")
        else:
            raise EdgeError(f"ignored must hold module names or modules, got "
                            f"{type(item).__name__}.")
        # an ignored container protects every Conv/Linear inside it
        sub = dict(work.named_modules())[name]
        for m in sub.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) \
                    and names[m] not in ignored_names:
                ignored_names.append(names[m])
    del names
    special, notes = _special_ignored(work, order)
    probe = copy.deepcopy(work)
    if _swap_shuffles(probe, traced=True):
        _refuse_grouped_shuffle(work)
        probe.eval()
        try:
            fixed = _shuffle_producers(tp, probe, x)
        except Exception as exc:  # noqa: BLE001
            op = _tp_operation(exc)
            raise EdgeError(f"torch-pruning cannot trace {type(model).__name__}"
                            f"{' at ' + op if op else ''} ({type(exc).__name__}: "
                            f"{_first_line(exc)}).") from exc
        special += fixed
        notes.append("channel shuffle: the layers feeding a shuffle keep their output width "
                     "(torch-pruning cannot follow the permutation); the widths inside the "
                     "units are pruned")
    del probe
    ignored_names += [n for n in special if n not in ignored_names]

    def attempt(r: float) -> nn.Module:
        return _prune_once(tp, work, x, r, importance, steps, ignored_names, round_to, batches)

    trials = 1
    if by == "channels":
        channel_ratio = ratio
        pruned = attempt(ratio)
    else:
        pruned, channel_ratio, trials = _search(attempt, params_before, ratio)

    out2, where, exc = _forward_where(pruned, x)
    if out2 is None:
        raise EdgeError(f"the pruned {type(model).__name__} no longer runs: {where} failed "
                        f"({_first_line(exc)}); that operation keeps channel counts of its own "
                        f"that torch-pruning cannot see -- list it in ignored.")
    if out2.shape != out.shape:
        raise EdgeError(f"pruning changed the output shape from {tuple(out.shape)} to "
                        f"{tuple(out2.shape)}; list the output layer in ignored.")
    params_after, macs_after = _macs(pruned, input_size)
    return PruneResult(model=pruned, params_before=params_before, params_after=params_after,
                       macs_before=macs_before, macs_after=macs_after,
                       channel_ratio=channel_ratio, importance=importance, steps=steps, by=by,
                       target_ratio=ratio, input_size=input_size, classifier=classifier,
                       ignored=ignored_names[1:], trials=trials, notes=notes)


def _search(attempt, params_before: int, target: float):
    """The channel ratio whose pruned copy removes ``target`` of the parameters.

    Parameters fall roughly like (1 - r)^2, so the first guess is 1 - sqrt(1 - target);
    then regula falsi on [0, MAX_CHANNEL_RATIO] (the removed fraction rises with r, in
    steps, since channels are whole)."""
    lo, f_lo = 0.0, 0.0
    hi, f_hi = None, None
    best = None   # (error, r, model)
    r = 1.0 - math.sqrt(1.0 - target)
    for trial in range(1, _MAX_TRIALS + 1):
        r = min(max(r, 1e-3), MAX_CHANNEL_RATIO)
        m = attempt(r)
        f = 1.0 - _count(m) / params_before
        err = abs(f - target)
        if best is None or err < best[0]:
            best = (err, r, m)
        if err <= PARAM_TOL:
            return m, r, trial
        if f < target:
            lo, f_lo = r, f
            if r >= MAX_CHANNEL_RATIO:
                break
        else:
            hi, f_hi = r, f
        if hi is None:
            r = min(MAX_CHANNEL_RATIO, r + (1 - r) * 0.5)
        else:
            # interpolate, but stay inside the bracket (bisect if it would stall)
            guess = lo + (target - f_lo) * (hi - lo) / max(f_hi - f_lo, 1e-9)
            mid = 0.5 * (lo + hi)
            r = guess if lo + 0.1 * (hi - lo) < guess < hi - 0.1 * (hi - lo) else mid
            if hi - lo < 1e-4:
                break
    err, r, m = best
    f = 1.0 - _count(m) / params_before
    raise EdgeError(f"no channel ratio removes {target:.1%} of the parameters: the closest "
                    f"reachable was {f:.1%} (channel ratio {r:.3f}), since the classifier and "
                    f"ignored layers keep their width; use by='channels' or another ratio.")


# ------------------------------------------------------------------ magnitude pruning
def _weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
            and isinstance(getattr(m, "weight", None), torch.Tensor)]


def magnitude_prune(model: nn.Module, amount: float, scope: str = "global") -> nn.Module:
    """Unstructured magnitude pruning: a copy of ``model`` whose smallest conv/linear weights
    are set to zero, permanently.

    ``amount`` in (0, 1) is the fraction of those weights zeroed: over all layers together
    (``scope="global"``, the smallest magnitudes anywhere) or in every layer
    (``scope="layer"``). Exactly ``round(amount * n)`` weights are zeroed (ties broken by
    position). Biases, norms and other parameters are left alone. Unlike
    ``torch.nn.utils.prune``, no masks, ``weight_orig`` parameters or forward hooks are left
    behind: the zeros are in the weight tensors themselves.

    This does *not* make the file smaller or the model faster: the tensors keep their shape
    and dense kernels multiply the zeros as before. It only pays off with sparse storage or
    sparse kernels; for a really smaller network use :func:`prune`.
    """
    if not isinstance(model, nn.Module):
        raise EdgeError(f"magnitude_prune needs a torch.nn.Module, got {type(model).__name__}.")
    amount = _check_ratio(amount, "amount")
    if scope not in ("global", "layer"):
        raise EdgeError(f"scope must be 'global' or 'layer', got {scope!r}.")
    import torch.nn.utils.prune as torch_prune
    if any(isinstance(h, torch_prune.BasePruningMethod)
           for m in model.modules() for h in m._forward_pre_hooks.values()):
        raise EdgeError("the model carries torch.nn.utils.prune masks; call "
                        "torch.nn.utils.prune.remove on its layers first.")
    out = copy.deepcopy(model)
    layers = _weighted(out)
    if not layers:
        raise EdgeError("the model has no Conv or Linear weights to prune.")
    with torch.no_grad():
        if scope == "layer":
            for _, m in layers:
                w = m.weight
                k = int(round(amount * w.numel()))
                if k:
                    idx = torch.argsort(w.detach().abs().reshape(-1), stable=True)[:k]
                    flat = w.detach().reshape(-1).clone()
                    flat[idx] = 0
                    w.copy_(flat.view_as(w))
        else:
            flat = torch.cat([m.weight.detach().abs().reshape(-1).float() for _, m in layers])
            k = int(round(amount * flat.numel()))
            if k:
                idx = torch.argsort(flat, stable=True)[:k]
                mask = torch.ones_like(flat, dtype=torch.bool)
                mask[idx] = False
                start = 0
                for _, m in layers:
                    n = m.weight.numel()
                    m.weight.mul_(mask[start:start + n].view_as(m.weight).to(m.weight.dtype))
                    start += n
    return out


def sparsity(model: nn.Module) -> dict:
    """The fraction of zero weights in the conv/linear layers of ``model``: ``{"overall":
    float, "zeros": int, "total": int, "layers": {name: float}}``."""
    layers = {}
    zeros = total = 0
    for name, m in _weighted(model):
        w = m.weight.detach()
        z = int((w == 0).sum())
        layers[name] = z / w.numel() if w.numel() else 0.0
        zeros += z
        total += w.numel()
    return {"overall": zeros / total if total else 0.0, "zeros": zeros, "total": total,
            "layers": layers}


# ------------------------------------------------------------------- save and load
_SIMPLE = (int, float, bool, str, type(None))
_SKIP_ATTRS = {"training"}


def _plain(value) -> Any:
    """``value`` as JSON if it is a simple attribute (numbers, strings, tuples of them)."""
    if isinstance(value, _SIMPLE):
        if isinstance(value, float) and not math.isfinite(value):
            return _NOT
        return value
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        if any(v is _NOT for v in items):
            return _NOT
        return {"__tuple__": items} if isinstance(value, tuple) else items
    return _NOT


_NOT = object()


def _unplain(value) -> Any:
    if isinstance(value, dict) and set(value) == {"__tuple__"}:
        return tuple(_unplain(v) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def _attrs(m: nn.Module) -> dict:
    out = {}
    for k, v in vars(m).items():
        if k.startswith("_") or k in _SKIP_ATTRS:
            continue
        p = _plain(v)
        if p is not _NOT:
            out[k] = p
    return out


def _build_base(base: dict) -> nn.Module:
    if not isinstance(base, dict):
        raise EdgeError(f"base must be a dict saying how to build the unpruned network "
                        f"({{'model': NAME, ...}} or {{'pattern': TEXT, 'input_size': ...}}), "
                        f"got {type(base).__name__}.")
    try:
        if "pattern" in base:
            from ..pattern import from_pattern
            kw = {}
            if base.get("input_size") is not None:
                kw["input_size"] = tuple(base["input_size"])
            return from_pattern(base["pattern"], **kw)
        if "model" in base:
            from .. import create_model
            from ..pattern import looks_like_pattern
            name = base["model"]
            if not isinstance(name, str):
                raise EdgeError(f"base['model'] must be a model name or a layer pattern, got "
                                f"{type(name).__name__}.")
            if "run" in base or name.startswith("search:") or looks_like_pattern(name):
                # as deeparch.train built it for a run (a pattern, a searched architecture,
                # or a registered model at the run's image size)
                from ..train.run import build_model
                size = base.get("input_size")
                if base.get("num_classes") is None or size is None:
                    raise EdgeError("base needs num_classes and input_size to rebuild "
                                    f"{name[:60]!r} as its run did.")
                return build_model(name, int(base["num_classes"]), tuple(size),
                                   dict(base.get("options") or {}), fit_input=False)[0]
            options = dict(base.get("options") or {})
            for k in ("num_classes", "in_chans"):
                if base.get(k) is not None:
                    options[k] = base[k]
            return create_model(base["model"], **options)
    except DeeparchError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise EdgeError(f"cannot build the base network {base!r}: {_first_line(exc)}.") from exc
    raise EdgeError("base must name a registered model ({'model': NAME, 'options': {...}}) or "
                    "a layer pattern ({'pattern': TEXT, 'input_size': [C, H, W]}).")


def _changes(base_model: nn.Module, pruned: nn.Module) -> dict:
    base_mods = dict(base_model.named_modules())
    changes = {}
    for name, m in pruned.named_modules():
        b = base_mods.get(name)
        if b is None or type(b) is not type(m):
            raise EdgeError(f"the pruned model's module {name or '(root)'!r} "
                            f"({type(m).__name__}) is not in the base network as the same "
                            f"type; base must describe the network that was pruned.")
        a1, a0 = _attrs(m), _attrs(b)
        diff = {k: v for k, v in a1.items() if a0.get(k, _NOT) != v}
        if diff:
            changes[name] = diff
    if len(base_mods) != len(dict(pruned.named_modules())):
        raise EdgeError("the pruned model has fewer modules than the base network; base must "
                        "describe the network that was pruned.")
    return changes


def _apply(model: nn.Module, changes: dict, shapes: dict) -> None:
    """Set the recorded attributes, then give the recorded tensors their pruned shapes
    (every other tensor keeps the base network's shape, so a strict load checks it)."""
    mods = dict(model.named_modules())
    for name, diff in changes.items():
        m = mods.get(name)
        if m is None or not isinstance(diff, dict):
            raise WeightsError(f"the pruned architecture names a module {name!r} that the "
                               f"base network does not have; the file is damaged or for "
                               f"another network.")
        for k, v in diff.items():
            setattr(m, k, _unplain(v))
    for key, shape in shapes.items():
        owner, _, attr = key.rpartition(".")
        m = mods.get(owner)
        ok = isinstance(shape, list) and all(isinstance(d, int) and 0 <= d < 2 ** 31
                                             for d in shape) and len(shape) <= 8
        if m is None or not ok or not (attr in m._parameters or attr in m._buffers):
            raise WeightsError(f"the pruned architecture resizes a tensor {key!r} that the "
                               f"base network does not have; the file is damaged or for "
                               f"another network.")
        if math.prod(shape) > 2 ** 31:
            raise WeightsError(f"the pruned architecture gives {key!r} an impossible shape.")
        if attr in m._parameters and m._parameters[attr] is not None:
            p = m._parameters[attr]
            m._parameters[attr] = nn.Parameter(torch.empty(shape, dtype=p.dtype),
                                               requires_grad=p.requires_grad)
        elif m._buffers.get(attr) is not None:
            m._buffers[attr] = torch.empty(shape, dtype=m._buffers[attr].dtype)


def _resized(base_model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict:
    want = base_model.state_dict()
    return {k: list(t.shape) for k, t in tensors.items()
            if k in want and tuple(want[k].shape) != tuple(t.shape)}


def _check_runs(model: nn.Module, base: dict, what: str, error) -> None:
    size = base.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 3
            and all(isinstance(v, int) and v > 0 for v in size)):
        return
    out, where, exc = _forward_where(model, torch.zeros(1, *size))
    if out is None:
        raise error(f"{what} does not run on a {tuple(size)} input ({where}: "
                    f"{_first_line(exc)}).")


def save_pruned(model: nn.Module, path: str | os.PathLike, base: dict) -> Path:
    """Write a pruned model to one safetensors file (atomically), without pickling it.

    ``base`` says how to build the unpruned network: ``{"model": NAME, "options": {...},
    "num_classes": N, "in_chans": C, "input_size": [C, H, W]}`` for a registered model or
    ``{"pattern": TEXT, "input_size": [C, H, W]}`` for a layer pattern (a run's model: add
    ``"run"`` and it is rebuilt as deeparch.train built it). The metadata holds ``base``,
    for every module whose attributes pruning changed the new values (Conv2d
    in/out_channels and groups, BatchNorm num_features, Linear in/out_features, any other
    plain attribute), and the new shape of every resized tensor. The file is checked before
    it is written: the rebuilt network must hold exactly these tensor shapes and run."""
    from ..train.checkpoint import _write_safetensors, unwrap

    model = unwrap(model)
    if not isinstance(model, nn.Module):
        raise EdgeError(f"save_pruned needs a torch.nn.Module, got {type(model).__name__}.")
    try:
        base_text = json.dumps(base, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EdgeError(f"base must be JSON-serialisable ({exc}).") from None
    base_model = _build_base(base)
    changes = _changes(base_model, model)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous()
               for k, v in model.state_dict().items()}
    shapes = _resized(base_model, tensors)
    try:
        _apply(base_model, changes, shapes)
        base_model.load_state_dict(tensors, strict=True)
    except (WeightsError, RuntimeError) as exc:
        raise EdgeError(f"the base network rebuilt with the recorded changes does not hold "
                        f"the pruned model's tensors ({_first_line(exc)}); base must describe "
                        f"the network that was pruned.") from None
    _check_runs(base_model, base, "the rebuilt pruned network", EdgeError)
    meta = {"format": FORMAT, "version": VERSION, "base": base_text,
            "changes": json.dumps(changes, sort_keys=True),
            "shapes": json.dumps(shapes, sort_keys=True),
            "params": str(sum(p.numel() for p in model.parameters()))}
    path = Path(path)
    _write_safetensors(path, tensors, meta, f"pruned model {path}")
    return path


def load_pruned(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a model written by :func:`save_pruned`: ``(model, base)``, in eval mode.

    Builds the base network, applies the recorded attribute changes and tensor shapes and
    loads the tensors strictly. A missing, damaged or foreign file raises
    :class:`~deeparch.errors.WeightsError`; nothing is unpickled."""
    from ..train.checkpoint import read_tensors

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no pruned model file at {path}; check the path.")
    try:
        tensors, meta = read_tensors(path)
    except Exception as exc:  # noqa: BLE001 -- safetensors' own error types
        raise WeightsError(f"{path} is not a readable safetensors file ({_first_line(exc)}); "
                           f"it is damaged or truncated.") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is a safetensors file but not a pruned deeparch model "
                           f"(no '{FORMAT}' metadata); load it with load_weights instead.")
    if meta.get("version") != VERSION:
        raise WeightsError(f"{path} is a pruned model of format version "
                           f"{meta.get('version')!r}, which this deeparch (version {VERSION}) "
                           f"cannot read.")
    try:
        base = json.loads(meta["base"])
        changes = json.loads(meta["changes"])
        shapes = json.loads(meta["shapes"])
        if not all(isinstance(v, dict) for v in (base, changes, shapes)):
            raise ValueError("not JSON objects")
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"the pruned architecture in {path} is damaged ({exc}).") from None
    try:
        model = _build_base(base)
    except DeeparchError as exc:
        raise WeightsError(f"the base network recorded in {path} cannot be built: {exc}"
                           ) from exc
    _apply(model, changes, shapes)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"the tensors in {path} do not fit the recorded pruned "
                           f"architecture ({_first_line(exc)}); the file is damaged.") from None
    _check_runs(model, base, f"the pruned model in {path}", WeightsError)
    model.eval()
    return model, base
