"""Load, identify and convert weight files: torchvision's ``.pth``, keras.applications' ``.h5``
/ ``.weights.h5`` (:mod:`deeparch.transfer.keras`) and deeparch's own.

* :func:`load_weights` fills a model from a file and returns a :class:`LoadReport` saying
  what was loaded, renamed, left at its initialisation (a classifier of another size) and
  which settings were changed to compute what the source computes (batch-norm epsilon).
* :func:`identify` names the registered models whose architecture a file fits, by
  comparing tensor names and shapes with each candidate built on the meta device (no
  memory, no initialisation).
* :func:`convert` writes a file as deeparch safetensors for one model.
* :func:`create_model` is :func:`deeparch.models.create_model` plus ``weights=``.

The model is changed only once everything has been checked: a file that does not fit
raises a :class:`~deeparch.errors.WeightsMismatchError` and leaves the model as it was.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DeeparchError, WeightsError, WeightsMismatchError
from ..models.registry import create_model as _build
from ..models.registry import builder_options, list_models, model_info
from . import keras as ks
from . import preprocess as pre
from . import torchvision as tv
from .files import WeightsFile, read_weights
from .report import LoadReport

SOURCES = ("auto", "torchvision", "keras", "deeparch")
_COUNTER = "num_batches_tracked"   # BN's step counter: read by no forward pass in eval
_OPTIONAL = ("aux.",)              # heads a model may be built without (GoogLeNet's aux)


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _name_of(model: nn.Module) -> str:
    return getattr(model, "model_name", None) or type(model).__name__


# --------------------------------------------------------------------------- signatures

@dataclass(frozen=True)
class _Signature:
    """A model's state-dict shapes, and which of its tensors are the classifier's."""

    shapes: dict[str, tuple[int, ...]]
    classifier: frozenset[str]


def _classifier_keys(model: nn.Module) -> frozenset[str]:
    """The tensors whose first dimension is the number of classes: the last Linear / Conv of
    a deeparch head (and of its auxiliary heads), else the model's last Linear."""
    names: list[str] = []
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        last = None
        for n, m in head.named_modules():
            if n and isinstance(m, (nn.Linear, nn.Conv2d)):
                last = f"head.{n}"
        if last:
            names.append(last)
    aux = getattr(model, "aux", None)
    if isinstance(aux, nn.ModuleDict):
        names += [f"aux.{k}.fc" for k, m in aux.items() if isinstance(getattr(m, "fc", None),
                                                                       nn.Linear)]
    if not names:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        names = linear[-1:]
    return frozenset(f"{n}.{p}" for n in names for p in ("weight", "bias"))


def _signature_of(model: nn.Module) -> _Signature:
    return _Signature({k: tuple(v.shape) for k, v in model.state_dict().items()},
                      _classifier_keys(model))


@functools.lru_cache(maxsize=None)
def _registered_signature(name: str) -> _Signature | None:
    """The signature of ``name`` built with its defaults on the meta device (None when it
    cannot be built that way)."""
    try:
        with torch.device("meta"):
            model = _build(name)
    except Exception:  # noqa: BLE001 -- a model that cannot be built here fits nothing
        return None
    return _signature_of(model)


def _fit(sig: _Signature, shapes: dict[str, tuple[int, ...]]) -> tuple[str, int | None] | None:
    """How ``shapes`` (a file's, under the model's names) fit ``sig``: ("exact", None),
    ("classes", n) when only the classifier has another number of classes, else None."""
    own = {k for k in sig.shapes if not k.endswith(_COUNTER)}
    have = {k for k in shapes if not k.endswith(_COUNTER)
            and not (k.startswith(_OPTIONAL) and k not in sig.shapes)}
    if own != have:
        return None
    classes = set()
    for k in own:
        a, b = sig.shapes[k], shapes[k]
        if a == b:
            continue
        if k in sig.classifier and len(a) == len(b) and a[1:] == b[1:]:
            classes.add(b[0])
            continue
        return None
    if len(classes) > 1:
        return None
    return ("classes", classes.pop()) if classes else ("exact", None)


def _torchvision_shapes(arch: tv.TorchvisionArch,
                        shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]] | None:
    out = {}
    for k, s in shapes.items():
        new = arch.map_key(k)
        if new is None:
            return None
        out[new] = s
    return out


# --------------------------------------------------------------------------- identify

def identify(weights) -> list[str]:
    """The registered models whose architecture ``weights`` fits, best first.

    ``weights`` is a path (``.pth``, ``.safetensors``, a run folder) or a state dict. A
    model fits when the file has a tensor of the right shape for each of the model's (built
    with its defaults) and no tensor the model lacks; models that fit except for the number
    of classes of their classifier come after those that fit exactly. A torchvision file is
    matched to the deeparch models that compute torchvision's function (``alexnet_tv`` for
    torchvision's AlexNet, not the paper's). A deeparch file that names its model (files
    written by :func:`convert`) is compared with that model's family; any other file with
    every registered model (a few seconds the first time: each is built on the meta device).
    A Keras file is matched by its layer names to keras.applications' architectures and by
    its shapes to the deeparch models that compute them (:mod:`deeparch.transfer.keras`).
    """
    wf = read_weights(weights)
    if _is_keras(wf):
        return ks.identify(wf, _registered_signature)
    shapes = wf.shapes()
    exact: list[str] = []
    classes: list[str] = []

    def consider(name: str, mapped: dict[str, tuple[int, ...]]) -> None:
        sig = _registered_signature(name)
        found = _fit(sig, mapped) if sig is not None else None
        if found and name not in exact + classes:
            (exact if found[0] == "exact" else classes).append(name)

    named_like_torchvision = False
    for arch in tv.candidates(shapes):
        mapped = _torchvision_shapes(arch, shapes)
        if mapped is not None:
            named_like_torchvision = True
            consider(arch.model, mapped)
    # a file in torchvision's names is no deeparch file: no need to try every model
    if not named_like_torchvision:
        names = list_models()
        hinted = wf.metadata.get("model")
        if hinted in names:
            family = model_info(hinted).family
            consider(hinted, shapes)
            # the model the file names is the answer when it fits: its family's variants of
            # the same tensors (efficientnet_b0_keras beside efficientnet_b0) compute
            # other functions
            if hinted not in exact:
                for n in names:
                    if model_info(n).family == family:
                        consider(n, shapes)
        if not exact and not classes:
            for n in names:
                consider(n, shapes)
    return exact + classes


def _is_keras(wf: WeightsFile) -> bool:
    return wf.format in ks.FORMATS


def _fits_phrase(wf: WeightsFile) -> str:
    try:
        fits = identify(wf)
    except DeeparchError:
        fits = []
    if not fits:
        return "no registered model fits it with its default options"
    shown = ", ".join(fits[:3]) + (" ..." if len(fits) > 3 else "")
    return f"it fits {shown} (built with the default options)"


# --------------------------------------------------------------------------- the plan

@dataclass
class _Plan:
    source: str
    arch: tv.TorchvisionArch | None
    mapping: dict[str, str]            # file key -> model key, for every file key that maps


def _choose(wf: WeightsFile, sig: _Signature, model_name: str | None, source: str) -> _Plan:
    """Which reading of the file's names fits the model best: deeparch's own names or one
    of torchvision's architectures."""
    shapes = wf.shapes()
    own = set(sig.shapes)
    options: list[_Plan] = []
    if source in ("auto", "deeparch"):
        options.append(_Plan("deeparch", None, {k: k for k in shapes}))
    if source in ("auto", "torchvision"):
        archs = tv.candidates(shapes) or (list(tv.ARCHS.values()) if source == "torchvision"
                                          else [])
        for arch in archs:
            mapping = {k: m for k in shapes if (m := arch.map_key(k)) is not None}
            options.append(_Plan("torchvision", arch, mapping))

    def hits(p: _Plan) -> int:
        return sum(1 for m in p.mapping.values() if m in own)

    if not options:
        raise WeightsError(f"source must be one of {', '.join(SOURCES)}, not {source!r}.")
    best = max(hits(p) for p in options)
    tied = [p for p in options if hits(p) == best]
    if len(tied) > 1:
        # torchvision's ResNets (or EfficientNets...) share one naming: the architecture is
        # the one whose deeparch model the file fits, else the one this model reproduces
        def rank(p: _Plan) -> tuple[int, int]:
            if p.arch is None:
                return (2, 0)
            mapped = {p.mapping[k]: s for k, s in shapes.items() if k in p.mapping}
            reg = _registered_signature(p.arch.model)
            found = _fit(reg, mapped) if reg is not None else None
            return (2 if found and found[0] == "exact" else 1 if found else 0,
                    1 if p.arch.model == model_name else 0)
        tied.sort(key=rank, reverse=True)
    return tied[0]


def _plan_report(wf: WeightsFile, model: nn.Module, source: str,
                 strict: bool) -> tuple[LoadReport, _Plan]:
    """Check everything and say what loading would do; the model is not touched."""
    if source not in SOURCES:
        raise WeightsError(f"source must be one of {', '.join(SOURCES)}, not {source!r}.")
    name = _name_of(model)
    sig = _signature_of(model)
    if _is_keras(wf) != (source == "keras") and source != "auto":
        raise WeightsError(f"{wf.where} is {'a Keras' if _is_keras(wf) else 'not a Keras'} "
                           f"weights file; load it with source='auto' or "
                           f"'{'keras' if _is_keras(wf) else 'torchvision / deeparch'}', not "
                           f"{source!r}.")
    plan = _choose(wf, sig, getattr(model, "model_name", None), source)
    shapes = wf.shapes()
    back = {m: k for k, m in plan.mapping.items()}
    report = LoadReport(plan.source, wf.where, name, plan.arch.name if plan.arch else None,
                        total=len(sig.shapes))

    missing = [k for k in sig.shapes if k not in back and not k.endswith(_COUNTER)
               and k not in sig.classifier and not k.startswith(_OPTIONAL)]
    extra = [k for k in shapes if not k.endswith(_COUNTER)
             and (k not in plan.mapping or (plan.mapping[k] not in sig.shapes
                                            and not plan.mapping[k].startswith(_OPTIONAL)))]
    if (missing or extra) and (strict or len(missing) + len(extra) >= len(sig.shapes)):
        bits = []
        if extra:
            bits.append(f"{_count(extra, 'tensor')} of the file {'has' if len(extra) == 1 else 'have'} "
                        f"no place in the model (first: {extra[0]})")
        if missing:
            bits.append(f"{_count(missing, 'tensor')} of the model {'is' if len(missing) == 1 else 'are'} "
                        f"not in the file (first: {missing[0]})")
        raise WeightsMismatchError(f"{wf.where} holds weights of another architecture than "
                                   f"{name}: {' and '.join(bits)}; {_fits_phrase(wf)}.")

    for mk, ms in sig.shapes.items():
        fk = back.get(mk)
        if fk is None:
            if mk.endswith(_COUNTER):
                why = "a batch-norm step counter the file does not have; no forward pass reads it"
            elif mk in sig.classifier:
                why = "the classifier, which the file does not have"
            elif mk.startswith(_OPTIONAL):
                why = "an auxiliary head the file does not have"
            else:
                why = "not in the file"
            report.initialised[mk] = why
            continue
        fs = tuple(wf.tensors[fk].shape)
        if fs == ms:
            report.loaded[mk] = fk
        elif mk in sig.classifier and len(fs) == len(ms) and fs[1:] == ms[1:]:
            report.initialised[mk] = (f"the classifier: {ms[0]} classes here, {fs[0]} in the "
                                      f"file")
        else:
            raise WeightsMismatchError(
                f"{wf.where} does not fit {name}: its tensor {fk} is {_shape(fs)} but the "
                f"model's {mk} is {_shape(ms)}; {_fits_phrase(wf)}.")
    for fk, mk in plan.mapping.items():
        if mk not in sig.shapes:
            report.unused[fk] = ("an auxiliary head this model was built without (give "
                                 "aux_logits=True to load it)" if mk.startswith(_OPTIONAL)
                                 else "no such tensor in the model")
    for fk in extra:
        report.unused.setdefault(fk, "no such tensor in the model")
    if plan.arch is not None and plan.arch.note:
        report.notes.append(plan.arch.note)
    report.preprocess = _preprocess_of(plan, wf)
    return report, plan


def _preprocess_of(plan: _Plan, wf: WeightsFile) -> pre.Preprocess | None:
    """How the file's source expects images: torchvision's convention for its files, the
    recorded one for deeparch's (converted files and runs)."""
    if plan.source == "torchvision":
        return pre.torchvision()
    text = wf.metadata.get("preprocess")
    if text:
        try:
            return pre.Preprocess.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError, DeeparchError):
            return None
    mean, std = wf.metadata.get("deeparch.mean"), wf.metadata.get("deeparch.std")
    if mean and std:                     # a deeparch run's model: its data's statistics
        try:
            size = json.loads(wf.metadata.get("deeparch.input_size") or "null")
            side = int(size[-1]) if isinstance(size, list) and size else None
            return pre.from_stats(json.loads(mean), json.loads(std), size=side)
        except (ValueError, TypeError, IndexError, DeeparchError):
            return None
    return None


def _count(keys: list[str], word: str) -> str:
    return f"{len(keys)} {word}{'' if len(keys) == 1 else 's'}"


def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, s)) + ")" if s else "a scalar"


def _bn_eps(plan: _Plan, wf: WeightsFile) -> float | None:
    """The batch-norm epsilon the source computes with, when it is known."""
    if plan.arch is not None:
        return plan.arch.bn_eps
    text = wf.metadata.get("bn_eps")
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --------------------------------------------------------------------------- load

def load_weights(model: nn.Module, weights, source: str = "auto",
                 strict: bool = True) -> LoadReport:
    """Fill ``model`` from ``weights`` (a path to a ``.pth`` / ``.safetensors`` file, a
    deeparch run folder, or a state dict) and return what was done as a :class:`LoadReport`.

    ``source`` is ``'torchvision'`` (torchvision's names, mapped to deeparch's),
    ``'deeparch'`` (the model's own names) or ``'auto'`` (whichever fits). A classifier of
    another number of classes is left at its initialisation and the report says so; with
    ``strict`` (the default) any other tensor that is missing, extra or of another shape
    raises a :class:`~deeparch.errors.WeightsMismatchError` naming the first one and the
    registered models the file does fit, and the model is left untouched. Where the source
    computes with another batch-norm epsilon (torchvision's EfficientNet-B0..B4: 1e-5), the
    model's is set to it and the report says so.
    """
    wf = read_weights(weights)
    target = _unwrap(model)
    if _is_keras(wf):
        return _load_keras(wf, target, source, strict)
    report, plan = _plan_report(wf, target, source, strict)
    _set_bn_eps(target, _bn_eps(plan, wf), report,
                f"torchvision's {plan.arch.name}" if plan.arch is not None
                else "the file's model")
    state = {mk: wf.tensors[fk] for mk, fk in report.loaded.items()}
    with torch.no_grad():
        result = target.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys   # checked above
    return report


def _set_bn_eps(target: nn.Module, eps: float | None, report: LoadReport, who: str) -> None:
    """Give every batch-norm layer the epsilon the source computes with, and say so."""
    if eps is None:
        return
    changed = [m for m in target.modules() if isinstance(m, _BN) and m.eps != eps]
    if changed:
        olds = sorted({m.eps for m in changed})
        for m in changed:
            m.eps = eps
        report.settings.append(
            f"batch-norm epsilon {' / '.join(f'{e:g}' for e in olds)} -> {eps:g} in "
            f"{_count(changed, 'layer')}, as {who} computes")


def _keras_plan(wf: WeightsFile, model: nn.Module, source: str, strict: bool) -> ks.KerasPlan:
    if source not in ("auto", "keras"):
        raise WeightsError(f"{wf.where} is a Keras weights file; load it with source='auto' "
                           f"or 'keras', not {source!r}.")
    return ks.plan(wf, model, _signature_of(model), strict, lambda: _fits_phrase(wf))


def _load_keras(wf: WeightsFile, target: nn.Module, source: str, strict: bool) -> LoadReport:
    """A Keras file: every tensor converted to PyTorch's layout and checked, then the
    batch-norm epsilon set to Keras' and the state loaded."""
    plan = _keras_plan(wf, target, source, strict)
    report = plan.report
    _set_bn_eps(target, plan.arch.bn_eps, report, f"Keras' {plan.arch.name}")
    with torch.no_grad():
        result = target.load_state_dict(plan.state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys   # checked above
    return report


# --------------------------------------------------------------------------- create / convert

def _file_in_chans(name: str, wf: WeightsFile, kwargs: dict[str, Any]) -> dict[str, int]:
    """``{"in_chans": C}`` when a file under deeparch's names has a first convolution that
    reads another number of channels than the model's default (a model trained on grey
    digits), else nothing."""
    if "in_chans" not in builder_options(model_info(name).builder):
        return {}
    with torch.device("meta"):
        probe = _build(name, **kwargs)
    first = next((k for k, v in probe.state_dict().items() if v.dim() == 4), None)
    t = wf.tensors.get(first) if first is not None else None
    if t is None or t.dim() != 4:
        return {}
    want = probe.state_dict()[first].shape
    if tuple(t.shape[2:]) == tuple(want[2:]) and t.shape[0] == want[0] and t.shape[1] != want[1]:
        return {"in_chans": int(t.shape[1])}
    return {}


def create_model(name: str, *, weights=None, source: str = "auto",
                 num_classes: int | None = None, features_only: bool = False,
                 out_stages=None, **kwargs: Any) -> nn.Module:
    """:func:`deeparch.models.create_model`, and with ``weights`` (a file, run folder or
    state dict) the model is loaded with :func:`load_weights`; the report is the model's
    ``weights_report``. Without ``num_classes`` the classifier takes the file's number of
    classes; with another ``num_classes`` it is left at its initialisation (and the
    report says so)."""
    if weights is None:
        return _build(name, num_classes=num_classes, features_only=features_only,
                      out_stages=out_stages, **kwargs)
    entry = None
    if isinstance(weights, str):
        from . import hub
        if hub.is_hub_name(weights):           # the entry says which model and options
            entry = hub.entry(weights)
            if name != entry.model:
                raise WeightsMismatchError(f"{entry.name} loads into {entry.model}, not "
                                           f"{name}; create_model({entry.model!r}, "
                                           f"weights={weights!r}).")
            kwargs = {**entry.model_kwargs, **kwargs}
    wf = read_weights(weights)
    if "in_chans" not in kwargs and not _is_keras(wf):
        kwargs = {**kwargs, **_file_in_chans(name, wf, kwargs)}
    if num_classes is None and _is_keras(wf):
        with torch.device("meta"):
            probe = _build(name, **kwargs)
        probe.model_name = name
        found = _keras_plan(wf, probe, source, strict=True).file_classes
        num_classes = found
    elif num_classes is None:
        with torch.device("meta"):
            probe = _build(name, **kwargs)
        report, plan = _plan_report(wf, probe, source, strict=True)
        back = {m: k for k, m in plan.mapping.items()}
        sizes = {int(wf.tensors[back[mk]].shape[0]) for mk, why in report.initialised.items()
                 if why.startswith("the classifier:")}
        if len(sizes) == 1:
            num_classes = sizes.pop()
    model = _build(name, num_classes=num_classes, **kwargs)
    model.weights_report = load_weights(model, wf, source=source)
    if entry is not None:                       # the publisher's exact recipe
        model.weights_report.preprocess = entry.preprocess
    if features_only:
        from ..models.base import FeatureExtractor
        return FeatureExtractor(model, out_stages)
    return model


def convert(weights, model_name: str | None, out_path: str | os.PathLike,
            source: str = "auto") -> Path:
    """Write ``weights`` as a deeparch safetensors file for the registered ``model_name``
    (None: the best model :func:`identify` finds) and return its path.

    Every tensor of the model must come from the file: the classifier takes the file's
    number of classes and GoogLeNet keeps the auxiliary heads the file has. The file's
    metadata records the model, the source, and the batch-norm epsilon to compute with, so
    ``create_model(model_name, weights=out_path)`` computes what the source computes. The
    file is written atomically (``deeparch.train.checkpoint.save_weights``)."""
    from ..train.checkpoint import save_weights

    wf = read_weights(weights)
    if model_name is None:
        fits = identify(wf)
        if not fits:
            raise WeightsMismatchError(f"no registered model fits {wf.where}; give the model "
                                       f"name to see which tensor differs.")
        model_name = fits[0]
    model_info(model_name)  # an unknown name says so, with suggestions
    kwargs: dict[str, Any] = {}
    if "aux_logits" in builder_options(model_info(model_name).builder) and any(
            (m := _map_any(k, wf, model_name)) is not None and m.startswith("aux.")
            for k in wf.tensors):
        kwargs["aux_logits"] = True
    model = create_model(model_name, weights=wf, source=source, **kwargs)
    report: LoadReport = model.weights_report
    left = [k for k in report.initialised if not k.endswith(_COUNTER)]
    if left or report.unused:
        what = (f"the model's {left[0]} is not in the file" if left
                else f"the file's {next(iter(report.unused))} has no place in the model")
        raise WeightsMismatchError(f"{wf.where} does not convert to {model_name} whole: {what}; "
                                   f"{_fits_phrase(wf)}.")
    eps = {m.eps for m in model.modules() if isinstance(m, _BN)}
    meta: dict[str, Any] = {"model": model_name, "source": report.source,
                            "num_classes": getattr(model, "num_classes", None),
                            "converted_from": wf.path.name if wf.path else "a state dict"}
    if report.architecture:
        meta["architecture"] = report.architecture
    if kwargs:
        meta["options"] = kwargs
    if len(eps) == 1:
        meta["bn_eps"] = repr(eps.pop())
    if report.preprocess is not None:
        meta["preprocess"] = report.preprocess.to_dict()
    return save_weights(out_path, model, meta)


def _map_any(key: str, wf: WeightsFile, model_name: str) -> str | None:
    """``key`` under deeparch's names for ``model_name`` (torchvision's mapping when the file
    is torchvision's), None when it has none."""
    for arch in tv.by_model(model_name):
        if arch.marker in wf.tensors:
            return arch.map_key(key)
    return key
