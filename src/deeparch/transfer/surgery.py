"""Cut and freeze: the transfer regimes of the seeds, on deeparch Networks and nn.Sequential.

* :func:`cut` ``(model, after)`` - the front of a network, up to and including a cut point:
  a stage (``"layer3"``), or a row name of ``deeparch summary`` (``"features.layer3"``,
  ``"features.layer3.0"``, ``"head.flatten"``; for a pattern ``"pool2"``). Its output is
  exactly what the network computes at that point. A network can only end where its
  forward is a plain sequence of layers: at a stage, at a block inside a stage, at a layer
  of a sequential stem or head - not inside a residual or branching block, whose output
  also needs the skip path (:func:`cut_points` lists every valid point, in order).
* :func:`freeze` ``(model, upto)`` - ``requires_grad=False`` for every parameter up to and
  including ``upto`` (default: everything but the classifier) *and* the normalisation
  layers there held in eval mode, so that their running statistics never move, whatever
  ``model.train()`` says (the transfer pitfall: a frozen ResNet in train mode still
  rewrites every batch-norm mean and variance). :func:`unfreeze` undoes it;
  :func:`frozen_report` counts what is frozen.
* :func:`new_head` ``(model, num_classes)`` - a fresh classifier; :func:`param_groups`
  ``(model, lr, lr_backbone)`` - optimizer groups with a smaller rate for the pretrained
  layers.

How frozen batch norm stays frozen: :func:`freeze` registers a forward pre-hook,
:func:`_hold_eval`, on each frozen layer with running statistics, which sets
``module.training = False`` before every forward. A pre-hook rather than an overridden
``train()`` or a swapped class because it (1) runs however the mode was changed
(``model.train()``, ``nn.Module.train`` of a wrapper such as DDP, ``module.training = True``
by hand); (2) is copied by ``copy.deepcopy`` and pickled by reference (a module-level
function); (3) leaves the class, the ``state_dict`` keys and every value in it unchanged,
so weights load into and out of a frozen model as usual and ``load_state_dict`` keeps it
frozen (it copies into the existing parameters); (4) runs on every path that calls the
module - ``prepare_for_training`` never fuses a norm layer, and its fused runs leave
hooked modules alone. Which parameters :func:`freeze` switched off is recorded on their
module (``_deeparch_frozen``, a tuple of names, copied with the module), so that
:func:`unfreeze` gives back exactly those and leaves parameters you froze yourself as they
were. Dropout and drop-path in the frozen part keep following ``model.train()`` (as
Keras' ``trainable = False`` does); they hold no state.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from collections import OrderedDict
from typing import Any, Iterable, Iterator, Sequence

from torch import nn

from ..errors import DeeparchError, ModelOptionError, TrainingError, UnknownLayerError
from ..models.base import Network

__all__ = ["Cut", "FrozenReport", "cut", "cut_points", "freeze", "frozen_report", "new_head",
           "param_groups", "unfreeze"]

_SHOWN = 20          # names listed in an error message before "..."
_MARK = "_deeparch_frozen"
_NEW = "_deeparch_new_head"     # set on the layers new_head created


# ---------------------------------------------------------------------- the structure
class Cut(nn.Sequential):
    """The front of a network up to a cut point (:func:`cut`).

    It shares its modules and weights with the network it came from (``copy.deepcopy`` it
    for an independent one); its ``state_dict`` keys are the network's own, a subset of
    them. ``source`` names that network and ``after`` the cut point."""

    def __init__(self, modules: "OrderedDict[str, nn.Module]", source: str, after: str):
        super().__init__(modules)
        self.source = source
        self.after = after
        self.model_name = f"{source}[:{after}]"


def _is_chain(m: nn.Module) -> bool:
    """A module whose forward is ``nn.Sequential``'s: its children, one after another."""
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _label(model: nn.Module) -> str:
    return str(getattr(model, "model_name", None) or type(model).__name__)


def _root_children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The chain the model runs at its top level: ``features -> head`` for a Network, its
    children for an ``nn.Sequential``."""
    if isinstance(model, Network):
        if type(model).forward_features is not Network.forward_features \
                or not _is_chain(model.features):
            raise ModelOptionError(f"{_label(model)} computes its features with its own "
                                   f"forward_features, so it cannot be cut by layer name.")
        return [("features", model.features), ("head", model.head)]
    if _is_chain(model):
        return [(n, m) for n, m in model.named_children() if m is not None]
    raise ModelOptionError(f"cut and freeze need a deeparch Network or an nn.Sequential; a "
                           f"{type(model).__name__} runs its layers in its own forward, so no "
                           f"layer name marks where the network ends (wrap its layers in an "
                           f"nn.Sequential).")


def _children(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, c) for n, c in m.named_children() if c is not None]


def _walk_points(children: list[tuple[str, nn.Module]], prefix: str) -> Iterator[str]:
    for name, child in children:
        q = f"{prefix}{name}"
        if _is_chain(child):
            yield from _walk_points(_children(child), q + ".")
        yield q


def cut_points(model: nn.Module) -> list[str]:
    """Every name :func:`cut` and :func:`freeze` accept (besides a Network's stage names), in
    the order the network runs them; the output at a container's name equals the output at
    its last layer's."""
    return list(_walk_points(_root_children(model), ""))


def _stage_aliases(model: nn.Module) -> list[str]:
    return list(model.stage_names) if isinstance(model, Network) else []


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def _valid_sentence(model: nn.Module) -> str:
    points = cut_points(model)
    stages = _stage_aliases(model)
    where = f"the stages {', '.join(stages)}, or " if stages else ""
    return (f"{where}one of its {len(points)} cut points {_listing(points)} "
            f"(deeparch.transfer.cut_points(model) lists them all)")


def _resolve(model: nn.Module, after: str | int) -> list[str]:
    """The path of names from the root chain to the cut point; raises UnknownLayerError."""
    root = _root_children(model)
    label = _label(model)
    if isinstance(after, bool) or not isinstance(after, (str, int)):
        raise UnknownLayerError(f"a cut point is a stage or layer name (a string), not "
                                f"{type(after).__name__}; {label} has {_valid_sentence(model)}.")
    if isinstance(after, int):
        stages = _stage_aliases(model)
        if not stages:
            raise UnknownLayerError(f"{label} has no numbered stages; cut at one of its layers: "
                                    f"{_listing(cut_points(model))}.")
        if not 1 <= after <= len(stages):
            raise UnknownLayerError(f"{label} has stages 1 to {len(stages)} "
                                    f"({', '.join(stages)}), not {after}.")
        after = stages[after - 1]
    name = after.strip()
    parts = name.split(".") if name else [""]
    if isinstance(model, Network) and parts[0] not in ("features", "head") \
            and parts[0] in dict(_children(model.features)):
        parts = ["features", *parts]          # a stage name: "layer3" -> features.layer3
    children = root
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth])
        found = dict(children).get(part)
        if found is None:
            if depth == 0:
                names = cut_points(model) + _stage_aliases(model)
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownLayerError(f"{label} has no layer {name!r} to cut at{hint}; "
                                        f"use {_valid_sentence(model)}.")
            sibs = [f"{here}.{n}" for n, _ in children]
            stages = _stage_aliases(model)
            also = f", or at a stage: {', '.join(stages)}" if stages else ""
            raise UnknownLayerError(f"{label} has no layer {name!r}: {here} holds "
                                    f"{_listing(sibs)}; cut at one of these{also}.")
        if depth + 1 < len(parts) and not _is_chain(found):
            block = ".".join(parts[:depth + 1])
            sibs = [f"{here}.{n}" if here else n for n, _ in children]
            stages = _stage_aliases(model)
            also = f"; or a stage: {', '.join(stages)}" if stages else ""
            if not _children(found):
                why = (f"{block} is a single layer ({type(found).__name__}) with nothing "
                       f"inside to cut at")
            else:
                why = (f"it lies inside {block} ({type(found).__name__}), whose forward is "
                       f"not a plain sequence of layers (a residual or branching block), so "
                       f"no network ends there")
            raise UnknownLayerError(f"{label} cannot be cut at {name!r}: {why}; cut at a "
                                    f"block boundary instead: {_listing(sibs)}{also}.")
        children = _children(found) if depth + 1 < len(parts) else children
    return parts


def _front(children: list[tuple[str, nn.Module]], parts: Sequence[str]
           ) -> tuple["OrderedDict[str, nn.Module]", list[nn.Module]]:
    """The truncated chain (new containers, shared leaves) and the original modules that
    lie wholly in front of the cut point."""
    kept: "OrderedDict[str, nn.Module]" = OrderedDict()
    whole: list[nn.Module] = []
    for name, child in children:
        if name != parts[0]:
            kept[name] = child
            whole.append(child)
            continue
        if len(parts) == 1:
            kept[name] = child
            whole.append(child)
        else:
            sub, inner = _front(_children(child), parts[1:])
            container = nn.Sequential(sub)
            container.training = child.training
            kept[name] = container
            whole.extend(inner)
        break
    return kept, whole


def cut(model: nn.Module, after: str | int) -> Cut:
    """The network up to and including ``after``: a stage name or number (``"layer3"``,
    ``3``) or a layer name as ``deeparch summary`` prints it (``"features.layer3.0"``,
    ``"head.flatten"``; ``"conv2"`` for a pattern). ``cut(net, "features")`` is
    ``net.forward_features``.

    The result is a :class:`Cut` (an ``nn.Sequential``) that shares modules with
    ``model``; for any input its output equals ``model``'s output at that point exactly.
    An unknown name, or one inside a residual block, raises :class:`UnknownLayerError`
    listing the valid cut points."""
    parts = _resolve(model, after)
    kept, _ = _front(_root_children(model), parts)
    out = Cut(kept, _label(model), ".".join(parts))
    out.training = model.training
    return out


# ---------------------------------------------------------------------- freezing
def _hold_eval(module: nn.Module, args: Any) -> None:
    """Forward pre-hook of a frozen normalisation layer: run it in eval mode (its running
    statistics are used, never updated), whatever mode the model is in."""
    module.training = False


def _has_running_stats(m: nn.Module) -> bool:
    if isinstance(m, nn.modules.batchnorm._NormBase):
        return bool(m.track_running_stats) and m.running_mean is not None
    return any(n.startswith("running_") for n, _ in m.named_buffers(recurse=False))


def _held(m: nn.Module) -> bool:
    return any(h is _hold_eval for h in m._forward_pre_hooks.values())


def _classifier(model: nn.Module) -> nn.Module | None:
    """The classifier :func:`freeze` leaves trainable and :func:`param_groups` calls the
    head: ``get_classifier()`` where the model has it, else an ``nn.Sequential``'s last
    Linear or 1x1 convolution; ``None`` for a :class:`Cut` or a model without one."""
    if isinstance(model, Cut):
        return None
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            found = get()
        except DeeparchError:
            return None
        if isinstance(found, nn.Module) and any(True for _ in found.parameters()):
            return found
        return None
    if _is_chain(model):
        found = _last_weight_layer(model)
        if found is not None and _is_classifier_layer(found[2]):
            return found[2]
    return None


def _head_modules(model: nn.Module) -> list[nn.Module]:
    """The classifier plus every layer :func:`new_head` made (GoogLeNet's auxiliary
    classifiers are reset with the main one): what :func:`freeze` spares by default and
    :func:`param_groups` trains at the full rate."""
    found = {id(m): m for m in model.modules() if getattr(m, _NEW, False)}
    keep = _classifier(model)
    if keep is not None:
        found.setdefault(id(keep), keep)
    return list(found.values())


def _is_classifier_layer(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d)
                                        and tuple(m.kernel_size) == (1, 1))


def _last_weight_layer(seq: nn.Module) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute, module) of the last layer with parameters in a chain, looking
    into nested chains; None when there is none."""
    for name, child in reversed(_children(seq)):
        if _is_chain(child):
            found = _last_weight_layer(child)
            if found is not None:
                return found
            continue
        if any(True for _ in child.parameters()):
            return seq, name, child
    return None


def _freeze_module(m: nn.Module) -> None:
    mine = list(getattr(m, _MARK, ()))
    for name, p in m.named_parameters(recurse=False):
        if p.requires_grad:
            p.requires_grad_(False)
            mine.append(name)
        p.grad = None                      # a stale gradient would still move it (SGD, Adam)
    if mine:
        setattr(m, _MARK, tuple(dict.fromkeys(mine)))
    if _has_running_stats(m):
        if not _held(m):
            m.register_forward_pre_hook(_hold_eval)
        m.training = False


def freeze(model: nn.Module, upto: str | int | None = None) -> "FrozenReport":
    """Freeze everything up to and including ``upto`` (a stage name or number, or a layer
    name as :func:`cut` takes them); ``None``: everything but the classifier
    (``get_classifier()``, or an ``nn.Sequential``'s last Linear / 1x1 convolution) and
    the layers :func:`new_head` made, or everything when there is none (a :class:`Cut`).

    Frozen parameters get ``requires_grad=False`` (and lose any gradient they held);
    frozen normalisation layers with running statistics run in eval mode from now on, even
    after ``model.train()``, in deep copies and after ``load_state_dict``. Adds to what is
    already frozen (:func:`unfreeze` first to freeze less). Returns :func:`frozen_report`."""
    if upto is None:
        spared = {id(m) for h in _head_modules(model) for m in h.modules()}
        targets = [m for m in model.modules() if id(m) not in spared]
    else:
        parts = _resolve(model, upto)
        _, whole = _front(_root_children(model), parts)
        seen: dict[int, nn.Module] = {}
        for top in whole:
            for m in top.modules():
                seen.setdefault(id(m), m)
        targets = list(seen.values())
    for m in targets:
        _freeze_module(m)
    return frozen_report(model)


def unfreeze(model: nn.Module) -> "FrozenReport":
    """Undo :func:`freeze`: the parameters it froze are trainable again (those frozen by
    other means stay as they are) and its normalisation layers follow ``model.train()`` /
    ``model.eval()`` again (they take ``model``'s current mode now)."""
    for m in model.modules():
        names = m.__dict__.pop(_MARK, ())
        for name in names:
            p = m._parameters.get(name)
            if p is not None:
                p.requires_grad_(True)
        hooks = [k for k, h in m._forward_pre_hooks.items() if h is _hold_eval]
        for k in hooks:
            del m._forward_pre_hooks[k]
            getattr(m, "_forward_pre_hooks_with_kwargs", {}).pop(k, None)
            getattr(m, "_forward_pre_hooks_always_called", {}).pop(k, None)
        if hooks:
            m.training = model.training
    return frozen_report(model)


@dataclasses.dataclass
class FrozenReport:
    """What is frozen in a model (:func:`frozen_report`). Counts are parameter values."""

    frozen_params: int
    trainable_params: int
    frozen_tensors: int
    trainable_tensors: int
    held_norms: list[str]                # normalisation layers held in eval mode
    parts: list[tuple[str, int, int]]    # (stage or top-level part, frozen, trainable)

    @property
    def total_params(self) -> int:
        return self.frozen_params + self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["parts"] = [{"name": n, "frozen": f, "trainable": t} for n, f, t in self.parts]
        return d

    def __str__(self) -> str:
        n = len(self.held_norms)
        return (f"frozen {self.frozen_params:,} parameters in {self.frozen_tensors} tensors "
                f"({n} normalisation layer{'' if n == 1 else 's'} held in eval mode), "
                f"trainable {self.trainable_params:,} in {self.trainable_tensors} tensors")


def _parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(model, Network):
        out = [(f"features.{n}", m) for n, m in _children(model.features)]
        return out + [(n, m) for n, m in _children(model) if n != "features"]
    return _children(model)


def _count(params: Iterable[nn.Parameter]) -> tuple[int, int, int, int]:
    ff = tt = nf = nt = 0
    for p in params:
        if p.requires_grad:
            tt += p.numel()
            nt += 1
        else:
            ff += p.numel()
            nf += 1
    return ff, tt, nf, nt


def frozen_report(model: nn.Module) -> FrozenReport:
    """Frozen and trainable parameter counts (shared parameters counted once), per stage
    (top-level part), and the normalisation layers held in eval mode."""
    ff, tt, nf, nt = _count(model.parameters())
    parts = []
    for name, m in _parts(model):
        f, t, _, _ = _count(m.parameters())
        parts.append((name, f, t))
    held = [n for n, m in model.named_modules() if _held(m)]
    return FrozenReport(ff, tt, nf, nt, held, parts)


# ---------------------------------------------------------------------- head, groups
def _positive_int(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ModelOptionError(f"{what} must be a whole number >= 1, got {n!r}.")
    return n


def new_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier with a fresh, trainable one for ``num_classes`` (PyTorch's
    default initialisation, from torch's global generator); returns the new layer.

    A Network uses its ``reset_classifier``; an ``nn.Sequential`` (a pattern) has its last
    Linear (or 1x1 convolution) replaced by one of the same kind, device and dtype."""
    n = _positive_int(num_classes, "num_classes")
    if isinstance(model, Cut):
        raise ModelOptionError(f"{model.model_name} is a cut network without a classifier; "
                               f"add your own head (nn.Sequential(cut, head)) instead.")
    if callable(getattr(model, "reset_classifier", None)) \
            and callable(getattr(model, "get_classifier", None)):
        old = model.get_classifier()
        ref = next(old.parameters(), None)
        before = list(model.parameters())    # held, so no new tensor can reuse an old id
        had = {id(p) for p in before}
        model.reset_classifier(n)
        new = model.get_classifier()
        for m in model.modules():           # the classifier and any others reset with it
            if any(id(p) not in had for p in m.parameters(recurse=False)):
                if ref is not None:
                    m.to(device=ref.device, dtype=ref.dtype)
                setattr(m, _NEW, True)
        del before
        return new
    if not _is_chain(model):
        raise ModelOptionError(f"new_head needs a deeparch Network or an nn.Sequential, not a "
                               f"{type(model).__name__}.")
    found = _last_weight_layer(model)
    if found is None or not _is_classifier_layer(found[2]):
        what = (f"{found[1]!r} ({type(found[2]).__name__})" if found is not None
                else "nothing")
        raise ModelOptionError(f"{_label(model)} has no classifier to replace: its last layer "
                               f"with weights is {what}, not a Linear or 1x1 convolution.")
    parent, attr, old = found
    bias = old.bias is not None
    if isinstance(old, nn.Linear):
        from ..layers.dense import Dense
        if isinstance(old, Dense):
            new: nn.Module = Dense(old.in_features, n, old.activation_name, bias=bias)
        else:
            new = nn.Linear(old.in_features, n, bias=bias)
    else:
        new = nn.Conv2d(old.in_channels, n, 1, old.stride, old.padding, bias=bias)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    new.train(old.training)
    setattr(new, _NEW, True)
    setattr(parent, attr, new)
    if hasattr(model, "num_classes"):
        model.num_classes = n
    return new


def _rate(v: Any, what: str, zero_ok: bool) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(v, bool) or not math.isfinite(x) or x < 0 or (x == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ModelOptionError(f"{what} must be a finite number {bound}, got {v!r}.")
    return x


def param_groups(model: nn.Module, lr: float, lr_backbone: float, *,
                 head: nn.Module | Iterable[nn.Module] | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the head (by default the classifier and the layers
    :func:`new_head` made; or the module(s) given) at ``lr``, every other trainable
    parameter - the pretrained layers - at ``lr_backbone``. Frozen parameters are left out;
    every trainable one is in exactly one group; empty groups are dropped.

    Each group carries ``name`` (``"backbone"``/``"head"``) and ``lr_scale``
    (its rate / ``lr``): a schedule that sets one rate per step must set
    ``group["lr"] = rate * group["lr_scale"]`` to keep the ratio."""
    lr = _rate(lr, "lr", zero_ok=False)
    lr_backbone = _rate(lr_backbone, "lr_backbone", zero_ok=True)
    if head is None:
        heads = _head_modules(model)
    else:
        heads = [head] if isinstance(head, nn.Module) else list(head)
    in_head = {id(p) for h in heads for p in h.parameters()}
    backbone, top = [], []
    for p in model.parameters():
        if p.requires_grad:
            (top if id(p) in in_head else backbone).append(p)
    if not backbone and not top:
        raise TrainingError("the model has no trainable parameters; unfreeze some layers "
                            "before training.")
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": lr_backbone, "lr_scale": lr_backbone / lr,
                       "name": "backbone"})
    if top:
        groups.append({"params": top, "lr": lr, "lr_scale": 1.0, "name": "head"})
    return groups
