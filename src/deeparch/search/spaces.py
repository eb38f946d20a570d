"""Architecture search spaces: ``space(name, **options)`` returns one of :data:`SPACES`.

Every space describes its architectures two ways at once:

* an **arch**, a hashable tuple (what strategies pass around, compare with ``==`` and keep
  in sets), with ``encode(arch)`` / ``decode(text)`` between it and a readable string that a
  user can paste back (a bad string raises :class:`SearchError` with a caret under the bad
  token, as the pattern language does);
* a fixed-length list of **decisions**, ``decisions() -> [(name, number of options), ...]``,
  with ``to_decisions(arch)`` / ``from_decisions(choices)``: the token sequence a controller
  (REINFORCE, PPO) emits. Every choice vector within the option counts is an architecture.

``sample(rng)`` draws every decision uniformly; ``mutate(arch, rng)`` changes exactly one
decision to another value (so the result always differs from ``arch``); ``build(arch)``
returns an ``nn.Module`` that ``deeparch.summary`` sizes, taking ``input_size(arch)``.

The spaces (see their modules):

    nb201   NAS-Bench-201's cell (Dong & Yang 2020): 6 edges x 5 operations = 15,625 cells,
            built in the benchmark's CIFAR skeleton (space_nb201.py)
    nasnet  NASNet's cell space (Zoph et al. 2018): B blocks of two inputs, two operations
            and a combine, a normal and a reduction cell, "N @ F" (space_nasnet.py)
    mobile  a MobileNet / EfficientNet macro space: per stage width, depth, kernel,
            expansion and squeeze-excitation, and the input resolution; compound scaling
            of EfficientNet-B0 lies inside it (space_mobile.py)
    plain   plain CNNs in the layer-pattern language: per stage the width, depth and
            kernel of [CONVk-w -> BN -> RELU]*d, max pools between (space_plain.py)
"""
from __future__ import annotations

import abc
import random
from typing import Any, Iterator, Sequence

from ..errors import SearchError

SPACES = ("nb201", "nasnet", "mobile", "plain")


def parse_error(reason: str, text: str, pos: int, length: int = 1) -> SearchError:
    """A :class:`SearchError` quoting ``text`` with a caret under ``text[pos:pos+length]``."""
    shown = text if len(text) <= 400 else text[:400] + "..."
    pos = max(0, min(pos, len(shown)))
    caret = " " * pos + "^" * max(1, min(length, max(1, len(shown) - pos)))
    return SearchError(f"{reason}\n  {shown}\n  {caret}")


def option_index(label: str, value: Any, options: Sequence) -> int:
    """Where ``value`` is in ``options`` (a decision's choices), or a SearchError naming
    the decision and listing them."""
    if value not in options:
        raise SearchError(f"{label} {value!r} is not among this space's options "
                          f"{', '.join(map(str, options))}.")
    return list(options).index(value)


def check_text(text: Any, what: str, limit: int = 20_000) -> str:
    """``text`` as a string of bounded length, or a SearchError."""
    if not isinstance(text, str):
        raise SearchError(f"a {what} architecture is given as a string, not {type(text).__name__}.")
    if len(text) > limit:
        raise SearchError(f"that {what} architecture string is {len(text)} characters long; "
                          f"no architecture of this space needs more than {limit}.")
    if not text.strip():
        raise SearchError(f"the {what} architecture string is empty.")
    return text


class Space(abc.ABC):
    """The shared interface; subclasses give ``name``, ``decisions``, ``from_decisions``,
    ``to_decisions``, ``encode``, ``decode``, ``build`` and ``input_size``."""

    name: str = ""

    # -- decisions ------------------------------------------------------------------------
    @abc.abstractmethod
    def decisions(self) -> list[tuple[str, int]]:
        """Each subclass defines it."""

    @abc.abstractmethod
    def from_decisions(self, choices: Sequence[int]) -> tuple:
        """Each subclass defines it."""

    @abc.abstractmethod
    def to_decisions(self, arch) -> list[int]:
        """Each subclass defines it."""

    def check_choices(self, choices: Sequence[int]) -> list[int]:
        """``choices`` as a list of ints within :meth:`decisions`' option counts."""
        dec = self.decisions()
        try:
            values = list(choices)
        except TypeError:
            raise SearchError(f"decisions for the {self.name} space are a sequence of "
                              f"{len(dec)} integers, not {type(choices).__name__}.") from None
        if len(values) != len(dec):
            raise SearchError(f"the {self.name} space takes {len(dec)} decisions, "
                              f"not {len(values)}.")
        out = []
        for (label, n), v in zip(dec, values):
            if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
                raise SearchError(f"decision {label!r} must be an integer, not {v!r}.")
            v = int(v)
            if not 0 <= v < n:
                raise SearchError(f"decision {label!r} takes 0..{n - 1}, not {v}.")
            out.append(v)
        return out

    # -- strategies' helpers --------------------------------------------------------------
    def sample(self, rng: random.Random) -> tuple:
        """A random architecture: every decision drawn uniformly."""
        return self.from_decisions([rng.randrange(n) for _, n in self.decisions()])

    def mutate(self, arch, rng: random.Random) -> tuple:
        """One random neighbour: exactly one decision changed to another of its values."""
        choices = self.to_decisions(arch)
        dec = self.decisions()
        free = [i for i, (_, n) in enumerate(dec) if n > 1]
        if not free:
            raise SearchError(f"the {self.name} space has a single architecture: nothing to "
                              f"mutate.")
        i = rng.choice(free)
        v = rng.randrange(dec[i][1] - 1)
        choices[i] = v + (v >= choices[i])
        return self.from_decisions(choices)

    def size(self) -> int | None:
        """The number of architectures (the product of the option counts)."""
        total = 1
        for _, n in self.decisions():
            total *= n
        return total

    def enumerate(self) -> Iterator[tuple]:
        raise SearchError(f"the {self.name} space has {self.size():.3g} architectures: too "
                          f"many to enumerate; sample it instead.")

    # -- architectures --------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, arch) -> str:
        """Each subclass defines it."""

    @abc.abstractmethod
    def decode(self, text: str) -> tuple:
        """Each subclass defines it."""

    @abc.abstractmethod
    def build(self, arch, num_classes: int = 10, in_chans: int = 3):
        """Each subclass defines it."""

    @abc.abstractmethod
    def input_size(self, arch) -> tuple[int, int, int]:
        """Each subclass defines it."""

    def check(self, arch) -> tuple:
        """``arch`` if it is an architecture of this space (a string is decoded), else a
        SearchError saying what is wrong."""
        if isinstance(arch, str):
            return self.decode(arch)
        try:
            back = self.from_decisions(self.to_decisions(arch))
        except SearchError:
            raise
        except Exception:
            raise SearchError(f"{_short(arch)} is not an architecture of the {self.name} "
                              f"space; decode its string with space.decode(...).") from None
        if not self._same(back, arch):
            raise SearchError(f"{_short(arch)} is not an architecture of the {self.name} space.")
        return arch

    def _same(self, back, arch) -> bool:
        return back == arch

    def __repr__(self) -> str:
        return f"<search space {self.name}: {len(self.decisions())} decisions>"


def _short(value, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SearchError(f"{name} must be a whole number >= {low}, not {value!r}.")
    return value


def space(name: str, **options) -> Space:
    """The search space ``name`` (one of :data:`SPACES`), configured by ``options``:

    * ``nb201``: ``channels`` (16), ``cells`` per stage (5), ``stages`` (3; fewer keep only
      the first stages, for small images);
    * ``nasnet``: ``blocks`` (5), ``config`` ('N @ F', '2 @ 96'), ``stem`` ('cifar'),
      ``stem_filters`` (3 x F / 24);
    * ``mobile``: ``max_phi`` (4: the largest compound-scaling step inside the space),
      ``resolutions``, ``width_mults``;
    * ``plain``: ``stages`` (2), ``widths``, ``depths``, ``kernels``, ``input`` ((1, 8, 8)).
    """
    if not isinstance(name, str) or name.strip().lower() not in SPACES:
        raise SearchError(f"unknown search space {name!r}; the spaces are "
                          f"{', '.join(SPACES)}.")
    key = name.strip().lower()
    if key == "nb201":
        from .space_nb201 import NB201Space as cls
    elif key == "nasnet":
        from .space_nasnet import NASNetSpace as cls
    elif key == "plain":
        from .space_plain import PlainSpace as cls
    else:
        from .space_mobile import MobileSpace as cls
    try:
        return cls(**options)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        bad = str(exc).split("'")[1] if "'" in str(exc) else "?"
        raise SearchError(f"the {key} space has no option {bad!r}; its options are "
                          f"{', '.join(cls.OPTIONS)}.") from None


def find_space(text: str, **options) -> tuple[Space, tuple]:
    """The space an architecture string belongs to, and its arch: ``|op~i|+...`` is nb201,
    ``... normal: ... | reduction: ...`` nasnet (B read from the string), ``[CONV...`` or
    ``INPUT(...`` plain (its stages counted), anything else mobile. ``options`` configure
    the space found. Errors are the space's own (with a caret)."""
    text = check_text(text, "search-space")
    stripped = text.strip()
    if stripped.startswith("|"):
        name = "nb201"
    elif "normal" in stripped and "reduction" in stripped:
        name = "nasnet"
        if "blocks" not in options:
            normal = stripped.split("normal", 1)[1].split("|", 1)[0].split("->", 1)[0]
            options = {**options, "blocks": min(20, normal.count(";") + 1)}
    elif stripped.startswith("[") or stripped.upper().startswith("INPUT"):
        name = "plain"
        if "stages" not in options:
            options = {**options, "stages": max(1, min(6, stripped.upper().count("POOL2") + 1))}
    else:
        name = "mobile"
    sp = space(name, **options)
    return sp, sp.decode(text)
