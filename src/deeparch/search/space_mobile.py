"""A MobileNet / EfficientNet macro search space (MnasNet's factorized hierarchy, Tan et al.
2019, over EfficientNet-B0's seven stages).

Per stage: the output **width** (B0's channels times one of ``width_mults``, rounded as
EfficientNet rounds them), the **depth** (blocks), the depthwise **kernel** (3, 5, 7), the
**expansion** ratio of the inverted bottleneck (1, 3, 4, 6) and **squeeze-excitation** (on or
off); and for the whole network the input **resolution**, the stem's and the head's widths.
The strides stay B0's (1, 2, 2, 2, 1, 2, 1 after the stride-2 stem), the blocks are
EfficientNet's MBConv (swish, SE sized from the block's input channels at ratio 0.25).

An arch is ``(resolution, stem, ((expand, kernel, width, depth, se), ... 7 stages), head)``;
its string reads ``224 | stem 32 | e1 k3 c16 x1 se | e6 k3 c24 x2 se | ... | head 1280``
(``x`` the depth, ``se`` present or not).

**Compound scaling is a special case.** The default options put EfficientNet-B0 and
``deeparch.search.scale(phi)`` of it, for every whole ``phi`` from 0 to ``max_phi``, inside
the space: ``width_mults`` holds 1.1**phi, the depths reach ceil(n * 1.2**max_phi), the
resolutions hold ``scale(phi).resolution``. :meth:`MobileSpace.from_scaling` gives that arch,
and its network has the parameter count of ``efficientnet_b0`` built with
``scale(phi).model_kwargs()``.
"""
from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from ..errors import SearchError
from .scaling import ALPHA, BETA, round_filters, round_repeats, scale
from .spaces import Space, _check_int, check_text, option_index, parse_error

KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 4, 6)
SE_RATIO = 0.25


def _b0():
    from ..models.efficientnet import B0_STAGES, HEAD_CHANNELS, STEM_CHANNELS
    return B0_STAGES, STEM_CHANNELS, HEAD_CHANNELS


class MobileSpace(Space):
    """EfficientNet-B0's stages as a search space (see the module notes). Options:
    ``max_phi`` (4), ``width_mults`` (0.5, 0.75 and 1.1**phi for phi = 0..max_phi),
    ``resolutions`` (96, 128, 160, 192 and ``scale(phi).resolution``), ``drop_rate`` (0.2)."""

    name = "mobile"
    OPTIONS = ("max_phi", "width_mults", "resolutions", "drop_rate")

    def __init__(self, max_phi: int = 4, width_mults: Sequence[float] | None = None,
                 resolutions: Sequence[int] | None = None, drop_rate: float = 0.2):
        self.max_phi = _check_int("max_phi", max_phi, 0)
        if self.max_phi > 8:
            raise SearchError(f"max_phi must be at most 8 (EfficientNet-B7 is about 7), "
                              f"not {max_phi}.")
        if width_mults is None:
            width_mults = (0.5, 0.75) + tuple(BETA ** p for p in range(self.max_phi + 1))
        if resolutions is None:
            resolutions = (96, 128, 160, 192) + tuple(scale(p).resolution
                                                      for p in range(self.max_phi + 1))
        mults = sorted(set(float(m) for m in width_mults))
        if not mults or any(not m > 0 for m in mults):
            raise SearchError(f"width_mults must be positive numbers, not {width_mults!r}.")
        res = sorted(set(resolutions))
        if not res or any(isinstance(r, bool) or not isinstance(r, int) or r < 32 for r in res):
            raise SearchError(f"resolutions must be whole numbers >= 32, not {resolutions!r}.")
        if not 0.0 <= drop_rate < 1.0:
            raise SearchError(f"drop_rate must be in [0, 1), not {drop_rate}.")
        self.drop_rate = drop_rate
        self.width_mults = tuple(mults)
        self.resolutions = tuple(res)
        stages, stem, head = _b0()
        self.strides = tuple(s for _, _, s, _, _ in stages)
        self.stem_widths = tuple(sorted({round_filters(stem, m) for m in mults}))
        self.head_widths = tuple(sorted({round_filters(head, m) for m in mults}))
        self.stage_widths = tuple(tuple(sorted({round_filters(c, m) for m in mults}))
                                  for _, _, _, c, _ in stages)
        top = ALPHA ** self.max_phi
        self.stage_depths = tuple(tuple(range(1, max(round_repeats(n, top), 1) + 1))
                                  for *_, n in stages)
        self._options = [("resolution", self.resolutions), ("stem", self.stem_widths)]
        for s, (widths, depths) in enumerate(zip(self.stage_widths, self.stage_depths), 1):
            self._options += [(f"stage{s}.expand", EXPANSIONS), (f"stage{s}.kernel", KERNELS),
                              (f"stage{s}.width", widths), (f"stage{s}.depth", depths),
                              (f"stage{s}.se", (0, 1))]
        self._options.append(("head", self.head_widths))

    # -- decisions ------------------------------------------------------------------------
    def decisions(self) -> list[tuple[str, int]]:
        return [(name, len(values)) for name, values in self._options]

    def from_decisions(self, choices: Sequence[int]) -> tuple:
        c = self.check_choices(choices)
        values = [opts[i] for (_, opts), i in zip(self._options, c)]
        stages = tuple(tuple(values[2 + 5 * s: 7 + 5 * s]) for s in range(len(self.strides)))
        return (values[0], values[1], stages, values[-1])

    def _flat(self, arch) -> list:
        try:
            res, stem, stages, head = arch
            flat = [res, stem]
            if len(stages) != len(self.strides):
                raise ValueError
            for st in stages:
                e, k, w, d, se = st
                flat += [e, k, w, d, int(se)]
            flat.append(head)
        except (TypeError, ValueError):
            raise SearchError(f"a mobile architecture is (resolution, stem, 7 stages of "
                              f"(expand, kernel, width, depth, se), head), not "
                              f"{arch!r:.80}.") from None
        return flat

    def to_decisions(self, arch) -> list[int]:
        return [option_index(name, v, opts)
                for (name, opts), v in zip(self._options, self._flat(arch))]

    # -- compound scaling -----------------------------------------------------------------
    def from_scaling(self, phi: float = 0) -> tuple:
        """The arch of EfficientNet-B0 scaled by ``scale(phi)`` (phi 0: B0 itself)."""
        sc = scale(phi)
        stages, stem, head = _b0()
        arch = (sc.resolution, round_filters(stem, sc.width),
                tuple((e, k, round_filters(c, sc.width), round_repeats(n, sc.depth), 1)
                      for e, k, _, c, n in stages),
                round_filters(head, sc.width))
        try:
            self.to_decisions(arch)
        except SearchError as exc:
            raise SearchError(f"scale({phi}) of EfficientNet-B0 lies outside this space "
                              f"({exc}).") from None
        return arch

    # -- strings --------------------------------------------------------------------------
    def encode(self, arch) -> str:
        self.to_decisions(arch)
        res, stem, stages, head = arch
        parts = [str(res), f"stem {stem}"]
        for e, k, w, d, se in stages:
            parts.append(f"e{e} k{k} c{w} x{d}" + (" se" if se else ""))
        parts.append(f"head {head}")
        return " | ".join(parts)

    def decode(self, text: str) -> tuple:
        text = check_text(text, "mobile")
        fields, start = [], 0
        for k, ch in enumerate(text + "|"):
            if ch == "|":
                fields.append((start, text[start:k]))
                start = k + 1
        want = 3 + len(self.strides)
        if len(fields) != want:
            pos = len(text) if len(fields) < want else fields[want][0] - 1
            raise parse_error(f"a mobile architecture has {want} fields separated by '|' "
                              f"(resolution, stem, {len(self.strides)} stages, head), this "
                              f"string has {len(fields)}", text, pos)

        def tokens(offset, field):
            return [(offset + m.start(), m.group()) for m in re.finditer(r"\S+", field)]

        def number(pos, tok, prefix, opts, what):
            m = re.fullmatch(re.escape(prefix) + r"(\d+)", tok)
            if not m:
                raise parse_error(f"expected {what} as {prefix}N", text, pos, len(tok))
            v = int(m.group(1))
            if v not in opts:
                raise parse_error(f"{what} {v} is not among {', '.join(map(str, opts))}",
                                  text, pos, len(tok))
            return v

        def keyword_number(offset, field, word, opts, what):
            toks = tokens(offset, field)
            if len(toks) != 2 or toks[0][1] != word:
                p, t = toks[0] if toks else (offset, " ")
                raise parse_error(f"expected '{word} N' ({what})", text, p, len(t))
            return number(toks[1][0], toks[1][1], "", opts, what)

        toks = tokens(*fields[0])
        if len(toks) != 1:
            p, t = toks[1] if len(toks) > 1 else (fields[0][0], " ")
            raise parse_error("expected the input resolution (e.g. 224)", text, p, len(t))
        res = number(toks[0][0], toks[0][1], "", self.resolutions, "resolution")
        stem = keyword_number(*fields[1], "stem", self.stem_widths, "the stem's width")
        stages = []
        for s, (offset, field) in enumerate(fields[2:-1]):
            toks = tokens(offset, field)
            if len(toks) not in (4, 5):
                p, t = toks[-1] if toks else (offset, " ")
                raise parse_error(f"stage {s + 1} reads eE kK cC xD [se]", text, p, len(t))
            e = number(*toks[0], "e", EXPANSIONS, "expansion")
            k = number(*toks[1], "k", KERNELS, "kernel")
            w = number(*toks[2], "c", self.stage_widths[s], f"stage {s + 1}'s width")
            d = number(*toks[3], "x", self.stage_depths[s], f"stage {s + 1}'s depth")
            se = 0
            if len(toks) == 5:
                if toks[4][1] != "se":
                    raise parse_error("expected 'se' or nothing", text, *toks[4][:1],
                                      len(toks[4][1]))
                se = 1
            stages.append((e, k, w, d, se))
        head = keyword_number(*fields[-1], "head", self.head_widths, "the head's width")
        return (res, stem, tuple(stages), head)

    # -- networks -------------------------------------------------------------------------
    def input_size(self, arch) -> tuple[int, int, int]:
        res = self.check(arch)[0]
        return (3, res, res)

    def build(self, arch, num_classes: int = 10, in_chans: int = 3):
        from ..layers import ConvNormAct, GlobalAvgPool2d
        from ..layers.mbconv import MBConv
        from ..models.base import Network, init_weights
        from ..models.efficientnet import BN_EPS, BN_MOMENTUM
        arch = self.check(arch)
        res, stem, stages, head_width = arch
        features = nn.Sequential()
        features.add_module("stem", ConvNormAct(in_chans, stem, 3, 2, act="swish"))
        c = stem
        for s, ((e, k, w, d, se), stride) in enumerate(zip(stages, self.strides), 1):
            stage = nn.Sequential()
            for i in range(d):
                stage.add_module(f"block{i + 1}", MBConv(
                    c, w, k, stride if i == 0 else 1, e, act="swish",
                    se_reduced=max(1, int(c * SE_RATIO)) if se else None))
                c = w
            features.add_module(f"stage{s}", stage)
        features.add_module("head_conv", ConvNormAct(c, head_width, 1, act="swish"))
        head = nn.Sequential()
        head.add_module("pool", GlobalAvgPool2d())
        head.add_module("drop", nn.Dropout(self.drop_rate))
        head.add_module("fc", nn.Linear(head_width, num_classes))
        model = Network(features, head, None, num_classes)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = BN_EPS, BN_MOMENTUM
        init_weights(model, linear_std=None)
        model.input_size = (in_chans, res, res)
        model.model_name = "mobile " + self.encode(arch)
        return model
