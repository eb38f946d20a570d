"""The model registry: one card per model, saying where it comes from and what it should weigh.

A family file registers each variant with :func:`register`, stacking decorators on
one builder, each with its own default knobs::

    @register("vgg16", family="vgg", paper=VGG_PAPER, year=2014, input_size=(3, 224, 224),
              params=138_357_544, macs=15_470_264_320, source="...", cfg="D")
    def vgg(cfg, num_classes=1000, in_chans=3, ...): ...

``create_model`` builds by name, ``list_models`` lists names, ``model_info`` returns the card.

This module does not import torch: ``deeparch models`` and ``deeparch info`` read the
committed table ``_figures.py`` (every built-in card and the params / mult-adds the
inspector computes at its default input) when it was made from the current sources
(:func:`figures_fingerprint`); otherwise, and for models registered by the user, the
figures are computed. Regenerate the table with ``python -m deeparch.models._figures``.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import inspect as _inspect
import pprint
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import ModelOptionError, UnknownModelError

if TYPE_CHECKING:
    from torch import nn


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
    return _select(_REGISTRY, lambda n: _REGISTRY[n].family, filter, family)


def _select(names: Iterable[str], family_of: Callable[[str], str], filter: str | None,
            family: str | None) -> list[str]:
    names = sorted(names)
    if family:
        names = [n for n in names if family_of(n) == family]
    if filter:
        pat = filter if any(c in filter for c in "*?[") else f"*{filter}*"
        names = [n for n in names if fnmatch.fnmatch(n, pat)]
    return names


def _unknown(name: str, known: Iterable[str]) -> UnknownModelError:
    close = difflib.get_close_matches(name.lower(), list(known), n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(close)}?" if close
            else "run `deeparch models` to see them all.")
    return UnknownModelError(f"unknown model {name!r}; {hint}")


def model_info(name: str) -> ModelCard:
    """The model card of ``name``; unknown names raise :class:`UnknownModelError` with suggestions."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name, _REGISTRY) from None


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


# --------------------------------------------------------------------------- the figures table
#
# Tracing all the zoo on meta tensors takes seconds (and torch takes one or two to import);
# `deeparch models` / `info` answer from a table committed beside this file instead. The table
# names the source files its figures were computed from (every deeparch module that building
# and summarising the zoo imported) and is used only while their fingerprint matches the files
# on disk, so an edited model is never shown with old numbers: it is computed again (slowly)
# until the table is regenerated. tests/test_models_cli.py recomputes every entry and fails
# when the table differs from the code or is stale.

_TABLE = "_figures.py"
# imported while computing, yet deciding no card or figure (only error messages, lazy exports)
_NOT_SOURCES = ("__init__.py", "errors.py", f"models/{_TABLE}")


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def figures_fingerprint(sources: Iterable[str]) -> str:
    """sha256 over the files ``sources`` (paths relative to the package, and contents) and the
    list of files in models/ (a new family file registers new models)."""
    root = _package_root()
    digest = hashlib.sha256()
    family_files = sorted(p.name for p in (root / "models").glob("*.py"))
    digest.update("\0".join(family_files).encode() + b"\0\0")
    for rel in sorted(sources):
        path = root / rel
        digest.update(rel.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-")
                      + b"\0")
    return digest.hexdigest()


def figure_sources() -> list[str]:
    """The deeparch source files imported so far, less those that decide nothing shown."""
    root, top = _package_root(), __name__.split(".")[0]
    found = set()
    for key, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (key == top or key.startswith(f"{top}.")) and file and file.endswith(".py"):
            rel = Path(file).resolve().relative_to(root).as_posix()
            if rel not in _NOT_SOURCES:
                found.add(rel)
    return sorted(found)


@functools.lru_cache(maxsize=1)
def _committed() -> dict[str, dict[str, Any]] | None:
    """The committed table, or None when it is missing or was made from other sources."""
    try:
        from . import _figures
    except ImportError:
        return None
    fingerprint = getattr(_figures, "FINGERPRINT", None)
    if fingerprint is None or fingerprint != figures_fingerprint(_figures.SOURCES):
        return None
    return _figures.MODELS


_COMPUTED: dict[str, tuple[ModelCard, dict[str, Any]]] = {}


def compute_entry(name: str) -> dict[str, Any]:
    """The table entry of ``name``: its card and the inspector's params and mult-adds at the
    card's input size (a meta trace: nothing is allocated). Kept for the process."""
    card = model_info(name)
    hit = _COMPUTED.get(name)
    if hit is not None and hit[0] is card:
        return hit[1]
    from ..inspect.summary import summary
    s = summary(name)
    entry = {"card": card.to_dict(), "params": s.total_params, "macs": s.macs}
    _COMPUTED[name] = (card, entry)
    return entry


def _index() -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, int]]]:
    """(the current committed table or {}, name -> (family, year) of every known model)."""
    table = _committed()
    if table is None:
        _ensure_loaded()
        table = {}
    index = {n: (e["card"]["family"], e["card"]["year"]) for n, e in table.items()}
    index.update({n: (c.family, c.year) for n, c in _REGISTRY.items() if n not in index})
    return table, index


def known_models(filter: str | None = None, family: str | None = None) -> list[str]:
    """:func:`list_models`, from the committed table when it is current (no torch)."""
    _, index = _index()
    return _select(index, lambda n: index[n][0], filter, family)


def catalog(filter: str | None = None, family: str | None = None) -> list[dict[str, Any]]:
    """One entry per registered model matching ``filter`` / ``family`` (as :func:`list_models`),
    sorted by name: ``{"name", "card" (ModelCard.to_dict()), "params", "macs"}``.

    Built-in models come from the committed table when it matches the sources (no torch, no
    tracing); models the user registered, or all of them when the table is stale, are
    computed by the inspector -- only those that match."""
    table, index = _index()
    return [{"name": n, **(table.get(n) or compute_entry(n))}
            for n in _select(index, lambda n: index[n][0], filter, family)]


def families() -> list[str]:
    """The model families, oldest first (by their earliest model's year), then by name."""
    first: dict[str, int] = {}
    for f, y in _index()[1].values():
        first[f] = min(y, first.get(f, y))
    return sorted(first, key=lambda f: (first[f], f))


def card_dict(name: str) -> dict[str, Any]:
    """``model_info(name).to_dict()``, from the committed table when it is current."""
    table = _committed()
    if table is not None and name not in _REGISTRY:
        if name in table:
            return dict(table[name]["card"])
        raise _unknown(name, table)
    return model_info(name).to_dict()


def builtin_models() -> list[str]:
    """The models registered by deeparch's own family files (not by the user)."""
    _ensure_loaded()
    return sorted(n for n, c in _REGISTRY.items()
                  if getattr(c.builder, "__module__", "").startswith(f"{__package__}."))


def figures_source() -> str:
    """The text of the table module for the current sources (imports every model, traces all)."""
    entries = {n: compute_entry(n) for n in builtin_models()}
    sources = figure_sources()
    return (f'"""Generated by `python -m deeparch.models._figures`: do not edit by hand.\n\n'
            f"Every built-in model's card and the params / mult-adds the inspector computes at its\n"
            f"default input, read by `deeparch models` and `deeparch info` while FINGERPRINT\n"
            f"matches SOURCES, the files they were computed from (registry.figures_fingerprint).\n"
            f'"""\n'
            f"SOURCES = {pprint.pformat(tuple(sources), width=99, compact=True)}\n\n"
            f"FINGERPRINT = {figures_fingerprint(sources)!r}\n\n"
            f"MODELS = {pprint.pformat(entries, indent=1, width=99, compact=True, sort_dicts=False)}\n\n\n"
            f'if __name__ == "__main__":\n'
            f"    from deeparch.models.registry import write_figures\n"
            f"    print(write_figures())\n")


def write_figures() -> Path:
    """Regenerate the committed table (atomically) and return its path."""
    text = figures_source()  # before importing ..io, which decides no figure
    from ..io import write_text
    path = Path(__file__).resolve().parent / _TABLE
    write_text(path, text)
    sys.modules.pop(f"{__package__}.{_TABLE[:-3]}", None)  # the next read imports the new file
    _committed.cache_clear()
    return path
