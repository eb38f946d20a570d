"""A plain-CNN macro space written in the slides' layer-pattern language.

A network is ``stages`` stages of ``[CONVk-w -> BN -> RELU]*d`` with a 2x2 max pool between
stages, then global average pooling and the classifier: the VGG recipe that the seeds teach,
with the three numbers of every stage left to the search -- its **width** ``w`` (filters),
**depth** ``d`` (conv layers) and **kernel** ``k``. With the default options (two stages;
widths 8, 12, 16, 24, 32, 48, 64; depths 1-3; kernels 3 and 5) the space holds
``(7 * 3 * 2) ** 2 = 1,764`` networks, sized for small images such as the 8 x 8 digits
(two stages: 8 x 8 then 4 x 4).

**The string is the pattern itself**, without its input and head, e.g.
``[CONV3-24 -> BN -> RELU]*1 -> POOL2 -> [CONV3-48 -> BN -> RELU]*2``; ``decode`` also takes
the whole pattern that ``build`` runs (``INPUT(8x8x1) -> ... -> GAP -> FC-10``), and any
width, depth or kernel the pattern language accepts (the option lists bound what a strategy
proposes, not what a user may paste back). So the string fixes the network on its own: what
``deeparch search`` writes to best.txt, ``deeparch summary --arch ... --space plain`` and
``deeparch train --arch ... --space plain`` read back unchanged, and ``deeparch summary`` takes
the full pattern directly.

An arch is the tuple of its stages, each ``(width, depth, kernel)``.
"""
from __future__ import annotations

import itertools
import re
from typing import Iterator, Sequence

from ..errors import SearchError
from .spaces import Space, _check_int, check_text, option_index, parse_error

WIDTHS = (8, 12, 16, 24, 32, 48, 64)
DEPTHS = (1, 2, 3)
KERNELS = (3, 5)
MAX_STAGES = 6
MAX_WIDTH = 4096
MAX_DEPTH = 32
MAX_KERNEL = 15

_STAGE = re.compile(r"\[\s*CONV(\d+)\s*-\s*(\d+)\s*->\s*BN\s*->\s*RELU\s*\]\s*(?:\*\s*(\d+))?",
                    re.IGNORECASE)
_POOL = re.compile(r"\s*->\s*POOL2\s*->\s*", re.IGNORECASE)
_HEAD = re.compile(r"\s*->\s*GAP\s*->\s*FC-\d+\s*$", re.IGNORECASE)
_INPUT = re.compile(r"^\s*INPUT\([^)]*\)\s*->\s*", re.IGNORECASE)


def _options(name: str, values, low: int, high: int) -> tuple[int, ...]:
    try:
        out = tuple(sorted(set(values)))
    except TypeError:
        raise SearchError(f"{name} must be a list of whole numbers, not {values!r}.") from None
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high
                      for v in out):
        raise SearchError(f"{name} must be whole numbers from {low} to {high}, not "
                          f"{values!r}.")
    return out


def _next_token(text: str, pos: int, end: int) -> int:
    """Where the first word after ``pos`` starts, past one leading arrow if a word follows."""
    at = pos + len(text[pos:end]) - len(text[pos:end].lstrip())
    if text.startswith("->", at) and text[at + 2:end].strip():
        at += 2 + len(text[at + 2:end]) - len(text[at + 2:end].lstrip())
    return at


class PlainSpace(Space):
    """Plain CNNs ``[CONVk-w -> BN -> RELU]*d`` per stage, max pool between stages, GAP and
    FC (see the module notes). Options: ``stages`` (2), ``widths``, ``depths``, ``kernels``
    (what a strategy may choose per stage) and ``input`` (the C x H x W the cost is measured
    at: (1, 8, 8), the digits)."""

    name = "plain"
    OPTIONS = ("stages", "widths", "depths", "kernels", "input")

    def __init__(self, stages: int = 2, widths: Sequence[int] = WIDTHS,
                 depths: Sequence[int] = DEPTHS, kernels: Sequence[int] = KERNELS,
                 input: Sequence[int] = (1, 8, 8)):
        self.stages = _check_int("stages", stages)
        if self.stages > MAX_STAGES:
            raise SearchError(f"the plain space has at most {MAX_STAGES} stages, not {stages}.")
        self.widths = _options("widths", widths, 1, MAX_WIDTH)
        self.depths = _options("depths", depths, 1, MAX_DEPTH)
        self.kernels = _options("kernels", kernels, 1, MAX_KERNEL)
        try:
            c, h, w = (int(v) for v in input)
        except (TypeError, ValueError):
            raise SearchError(f"input must be (channels, height, width), not {input!r}.") \
                from None
        side = 2 ** (self.stages - 1)
        if min(c, h, w) < 1 or h < side or w < side:
            raise SearchError(f"{self.stages} stages halve the image {self.stages - 1} "
                              f"time(s): the input must be at least {side} x {side}, not "
                              f"{h} x {w}.")
        self.input = (c, h, w)

    # -- decisions ------------------------------------------------------------------------
    def _lists(self):
        return (self.widths, self.depths, self.kernels)

    def decisions(self) -> list[tuple[str, int]]:
        out = []
        for s in range(1, self.stages + 1):
            out += [(f"stage{s}.width", len(self.widths)), (f"stage{s}.depth", len(self.depths)),
                    (f"stage{s}.kernel", len(self.kernels))]
        return out

    def from_decisions(self, choices: Sequence[int]) -> tuple:
        c = self.check_choices(choices)
        return tuple(tuple(opts[i] for opts, i in zip(self._lists(), c[3 * s:3 * s + 3]))
                     for s in range(self.stages))

    def _structure(self, arch) -> tuple:
        """``arch`` as stages of three whole numbers in range, or a SearchError."""
        try:
            stages = tuple(tuple(st) for st in arch)
            ok = len(stages) == self.stages and all(len(st) == 3 for st in stages)
        except TypeError:
            ok = False
        if not ok:
            raise SearchError(f"a plain architecture is {self.stages} stages of (width, depth, "
                              f"kernel), not {arch!r:.80}.")
        for st in stages:
            for label, v, high in zip(("width", "depth", "kernel"), st,
                                      (MAX_WIDTH, MAX_DEPTH, MAX_KERNEL)):
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                    raise SearchError(f"a stage's {label} must be a whole number from 1 to "
                                      f"{high}, not {v!r}.")
        return stages

    def to_decisions(self, arch) -> list[int]:
        return [option_index(f"stage{s}.{label}", v, opts)
                for s, st in enumerate(self._structure(arch), 1)
                for label, opts, v in zip(("width", "depth", "kernel"), self._lists(), st)]

    def check(self, arch) -> tuple:
        if isinstance(arch, str):
            return self.decode(arch)
        return self._structure(arch)

    def enumerate(self) -> Iterator[tuple]:
        per_stage = list(itertools.product(*self._lists()))
        return itertools.product(per_stage, repeat=self.stages)

    # -- strings --------------------------------------------------------------------------
    def encode(self, arch) -> str:
        return " -> POOL2 -> ".join(f"[CONV{k}-{w} -> BN -> RELU]*{d}"
                                    for w, d, k in self._structure(arch))

    def decode(self, text: str) -> tuple:
        text = check_text(text, "plain")
        start, end = 0, len(text)
        m = _INPUT.match(text)
        if m:
            start = m.end()
        h = _HEAD.search(text, start)
        if h:
            end = h.start()
        stages, pos = [], start
        while True:
            lead = pos + len(text[pos:end]) - len(text[pos:end].lstrip())
            m = _STAGE.match(text, lead, end)
            if not m:
                word = re.match(r"\S+", text[lead:end])
                raise parse_error("expected a stage [CONVk-w -> BN -> RELU]*d", text, lead,
                                  len(word.group(0)) if word else 1)
            k, w, d = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            for label, v, high, g in (("kernel", k, MAX_KERNEL, 1), ("width", w, MAX_WIDTH, 2),
                                      ("depth", d, MAX_DEPTH, 3)):
                if not 1 <= v <= high:
                    raise parse_error(f"a stage's {label} must be from 1 to {high}", text,
                                      m.start(g), len(m.group(g)))
            stages.append((w, d, k))
            pos = m.end()
            if not text[pos:end].strip():
                break
            p = _POOL.match(text, pos, end)
            if not p:
                at = _next_token(text, pos, end)
                raise parse_error("stages are joined by -> POOL2 ->", text, at,
                                  len(text[at:end].split()[0]))
            pos = p.end()
        if len(stages) != self.stages:
            raise parse_error(f"this plain space has {self.stages} stages, the string has "
                              f"{len(stages)} (give -S stages={len(stages)})", text, start,
                              max(1, end - start))
        return tuple(stages)

    # -- networks -------------------------------------------------------------------------
    def pattern(self, arch, num_classes: int = 10, in_chans: int | None = None,
                size: Sequence[int] | None = None) -> str:
        """The whole layer pattern ``build`` runs."""
        c = self.input[0] if in_chans is None else in_chans
        h, w = (self.input[1:] if size is None else size)
        return f"INPUT({h}x{w}x{c}) -> {self.encode(arch)} -> GAP -> FC-{num_classes}"

    def build(self, arch, num_classes: int = 10, in_chans: int | None = None):
        from ..pattern import from_pattern
        arch = self.check(arch)
        model = from_pattern(self.pattern(arch, num_classes, in_chans))
        model.model_name = "plain " + self.encode(arch)
        return model

    def input_size(self, arch) -> tuple[int, int, int]:
        return self.input
