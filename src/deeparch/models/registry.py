"""The model registry: one card per model, saying where it comes from and what it should weigh.

A family file registers each variant with :func:`register`, stacking decorators on
one builder, each with its own default knobs::

    @register("vgg16", family="vgg", paper=VGG_PAPER, year=2014, input_size=(3, 224, 224),
              params=138_357_544, macs=15_470_264_320, source="...", cfg="D")
    def vgg(cfg, num_classes=1000, in_chans=3, ...): ...

``create_model`` builds by name, ``list_models`` lists names, ``model_info`` returns the card.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect as _inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import ModelOptionError, UnknownModelError


@dataclass(frozen=True)
class SeedFigure:
    """A figure that a seed document states about a model, kept to check it against the code.

    ``quantity`` is ``params``, ``macs`` or ``activations`` (a total), ``value`` the number as
    the document gives it and ``tolerance`` the half-unit of its last digit (``24M`` -> 0.5M).
    """

    quantity: str
    value: float
    tolerance: float
    quote: str
    source: str


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    paper: str
    year: int
    input_size: tuple[int, int, int]
    num_classes: int
    params: int | None
    macs: int | None
    source: str
    exact: bool = True
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    builder: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)
    seed_figures: tuple[SeedFigure, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "family": self.family, "paper": self.paper, "year": self.year,
            "input_size": list(self.input_size), "num_classes": self.num_classes,
            "published_params": self.params, "published_macs": self.macs,
            "source": self.source, "exact": self.exact, "description": self.description,
            "defaults": dict(self.defaults), "options": builder_options(self.builder),
        }


_REGISTRY: dict[str, ModelCard] = {}


def register(name: str, *, family: str, paper: str, year: int,
             input_size: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000,
             params: int | None = None, macs: int | None = None, source: str = "",
             exact: bool = True, description: str = "", seed_figures: tuple = (),
             **defaults: Any) -> Callable:
    """Decorator: register ``builder`` under ``name`` with its model card and default knobs."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelCard(
            name=name, family=family, paper=paper, year=year, input_size=tuple(input_size),
            num_classes=num_classes, params=params, macs=macs, source=source, exact=exact,
            description=description, defaults=dict(defaults), builder=builder,
            seed_figures=tuple(seed_figures))
        return builder

    return deco


def _ensure_loaded() -> None:
    from . import _all  # noqa: F401  (importing the family files fills the registry)


def list_models(filter: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, sorted; ``filter`` is a glob (``'vgg*'``) or a substring."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if family:
        names = [n for n in names if _REGISTRY[n].family == family]
    if filter:
        pat = filter if any(c in filter for c in "*?[") else f"*{filter}*"
        names = [n for n in names if fnmatch.fnmatch(n, pat)]
    return names


def model_info(name: str) -> ModelCard:
    """The model card of ``name``; unknown names raise :class:`UnknownModelError` with suggestions."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.5)
        hint = (f"did you mean {', '.join(close)}?" if close
                else "run `deeparch models` to see them all.")
        raise UnknownModelError(f"unknown model {name!r}; {hint}") from None


def builder_options(builder: Callable | None) -> list[str]:
    if builder is None:
        return []
    return [p.name for p in _inspect.signature(builder).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def accepts(name: str, option: str) -> bool:
    """Whether the builder of ``name`` takes the keyword ``option``."""
    return option in builder_options(model_info(name).builder)


def create_model(name: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 features_only: bool = False, out_stages=None, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    ``num_classes`` / ``in_chans`` override the card's defaults; other keywords are the
    family's paper knobs (``alpha``, ``growth_rate``, ``img_size``...). With
    ``features_only=True`` the result returns the feature maps of ``out_stages``
    (stage names or 1-based indices; all stages by default).
    """
    card = model_info(name)
    opts = builder_options(card.builder)
    kw: dict[str, Any] = {"num_classes": card.num_classes, "in_chans": card.input_size[0]}
    kw = {k: v for k, v in kw.items() if k in opts}
    kw.update(card.defaults)
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if in_chans is not None:
        kw["in_chans"] = in_chans
    kw.update(kwargs)
    unknown = sorted(k for k in kw if k not in opts)
    if unknown:
        knobs = ", ".join(o for o in opts if o not in card.defaults) or "none"
        raise ModelOptionError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {knobs}.")
    model = card.builder(**kw)
    model.model_name = name
    if features_only:
        from .base import FeatureExtractor
        return FeatureExtractor(model, out_stages)
    return model
