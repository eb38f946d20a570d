"""The layer-pattern language of the slides, with concrete sizes, turned into a network.

    INPUT(32x32x3) -> [[CONV3-32 -> RELU]*2 -> POOL2]*3 -> [FC-512 -> RELU]*2 -> FC-10

Grammar (keywords are case-insensitive; ``->`` or ``→`` separates layers)::

    pattern := seq
    seq     := term ( "->" term )*
    term    := ( layer | "[" seq "]" ) ( "*" COUNT )?

Layers (``k`` kernel, ``n`` filters or units, ``/s`` stride; options in parentheses):

    INPUT(HxWxC)        input size, channels last as in the slides (INPUT(28x28) = 1 channel)
    CONVk-n             k x k convolution, n filters, stride 1, `same` padding (the VGG paper's
                        conv3-64); CONVkxj-n for k x j; CONV11-96/4 for stride 4;
                        options (s=2, p=valid|same|N, d=2, g=2, bias=0)
    DWCONVk[/s]         depthwise k x k;  SEPCONVk-n[/s] depthwise-separable;  PWCONV-n 1x1
    POOL, POOLk, POOLk/s, MAXPOOL..., AVGPOOL...     (default 2x2, stride = kernel)
    GAP / GLOBALAVGPOOL, GMP / GLOBALMAXPOOL         global pooling (flattens)
    FC-n, DENSE-n       fully connected (flattens an image input first)
    RELU RELU6 LEAKYRELU ELU GELU SWISH TANH SIGMOID SOFTMAX (= SOFT-MAX)
    BN LN IN GN[g] LRN  normalisation;  DROPOUT[p] (DROPOUT0.5, DROPOUT(0.5); default 0.5)
    FLATTEN

Errors quote the pattern with a caret under the offending token.

Limits (module constants; each refusal is a :class:`PatternError` naming the limit, raised
before anything is expanded or allocated, so a few bytes of pattern can never run for
minutes, recurse without end or ask for gigabytes): :data:`MAX_SPEC_LENGTH` characters,
:data:`MAX_DEPTH` nested brackets, :data:`MAX_REPEAT` per ``*N``, :data:`MAX_LAYERS`
layers after expansion, :data:`MAX_WIDTH` filters / units / groups, :data:`MAX_SIDE` for
kernels, strides, dilations, paddings and every side of a feature map,
:data:`MAX_INPUT_CHANNELS` and :data:`MAX_INPUT_VALUES` for the input, and
:data:`MAX_PARAMS` parameters for the whole network (counted from the shapes first).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import InputSizeError, PatternError
from .layers import (Conv2d, DepthwiseConv2d, GlobalAvgPool2d, GlobalMaxPool2d, LayerNorm2d,
                     LocalResponseNorm, PointwiseConv2d, SeparableConv2d, make_activation)

# -- limits --------------------------------------------------------------------------------
# Each is far beyond any network of the seed documents (VGG-16: 16 weight layers, 138M
# parameters, 4096 units, 224x224 input) and far below what would exhaust this machine.

MAX_SPEC_LENGTH = 100_000
"""Characters in a pattern: a thousand times the longest pattern anyone types."""

MAX_DEPTH = 32
"""Nested ``[...]`` groups; deeper nesting is refused before the parser recurses into it."""

MAX_REPEAT = 1_000
"""The largest repeat count ``*N`` (nested repeats multiply; :data:`MAX_LAYERS` caps that)."""

MAX_LAYERS = 10_000
"""Layers after expanding every repeat (ResNet-1202 has 1202); computed from the counts
before anything is expanded, so ``[[[[X]*1000]*1000]*1000]*1000`` costs nothing."""

MAX_WIDTH = 1_000_000
"""Filters of a convolution, units of a dense layer, groups of GN (classifier heads over
a million classes exist; a wider layer is a typo)."""

MAX_SIDE = 65_536
"""Kernel, stride, dilation and padding sizes, and every side of a feature map (the input
included): no image or feature map is larger than 65536 on a side."""

MAX_INPUT_CHANNELS = 100_000
"""Channels of the input (an image has 1, 3 or a few hundred spectral bands)."""

MAX_INPUT_VALUES = 2 ** 32
"""C x H x W of one input (16 GiB for one float32 image); keeps every shape product of the
inspector far inside 64-bit integers."""

MAX_PARAMS = 2 ** 31
"""Parameters of a whole network: 8 GiB of float32 weights (32 GiB to train with Adam),
15 times VGG-16, and the size at which one weight tensor outgrows 32-bit indexing."""

_QUOTE_WINDOW = 60   # characters of context either side of the caret in a long pattern


def _short(text: str, n: int = 40) -> str:
    """``text`` cut to ``n`` characters (with '...') for quoting in a message."""
    return text if len(text) <= n else text[:n - 3] + "..."


def _big(v: int) -> str:
    """A count for a message: with thousands separators, or in digits if absurdly long."""
    s = f"{v:,}"
    return s if len(s) <= 40 else f"a {len(str(v))}-digit number"


def _bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def _error(msg: str, spec: str | None, pos: int | None = None, length: int = 1) -> PatternError:
    """A PatternError quoting ``spec`` on one line (whitespace and control characters shown
    as spaces so that the caret stays under the token), cut to a window around the caret
    when the pattern is long."""
    if spec is None or pos is None:
        return PatternError(msg)
    flat = "".join(" " if c.isspace() or not c.isprintable() else c for c in spec)
    length = max(1, length)
    if len(flat) > 3 * _QUOTE_WINDOW:
        start = max(0, pos - _QUOTE_WINDOW)
        end = min(len(flat), pos + min(length, _QUOTE_WINDOW) + _QUOTE_WINDOW)
        length = max(1, min(length, end - pos))
        text, pos = flat[start:end], pos - start
        if start > 0:
            text, pos = "..." + text, pos + 3
        if end < len(flat):
            text += "..."
        flat = text
    return PatternError(msg, flat, pos, length)


def input_size_problem(size: tuple[int, ...]) -> str | None:
    """What is wrong with a (C, H, W) or (C, L) input size of positive integers, or None.

    The bounds are :data:`MAX_INPUT_CHANNELS`, :data:`MAX_SIDE` per spatial side and
    :data:`MAX_INPUT_VALUES` for the product.
    """
    c, *spatial = size
    if c > MAX_INPUT_CHANNELS:
        return (f"the input has {_big(c)} channels; the limit is {MAX_INPUT_CHANNELS:,}")
    for s in spatial:
        if s > MAX_SIDE:
            return f"an input side of {_big(s)} is larger than the limit of {MAX_SIDE:,}"
    total = 1
    for v in size:
        total *= v
    if total > MAX_INPUT_VALUES:
        return (f"the input has {_big(total)} values (C x H x W); the limit is "
                f"{MAX_INPUT_VALUES:,} ({_bytes(4 * MAX_INPUT_VALUES)} at 4 bytes)")
    return None


def check_input_size(size) -> tuple[int, int, int]:
    """``size`` as a (C, H, W) tuple of ints within the limits, or an InputSizeError."""
    try:
        vals = tuple(size)
    except TypeError:
        vals = ()
    if len(vals) != 3 or any(isinstance(v, bool) or not hasattr(v, "__index__") for v in vals):
        raise InputSizeError(f"the input size of a pattern must be three whole numbers C,H,W, "
                             f"not {_short(repr(size))}.")
    vals = tuple(int(v) for v in vals)
    if any(v < 1 for v in vals):
        raise InputSizeError(f"the input size {_short(repr(vals))} must be positive numbers "
                             "C,H,W.")
    problem = input_size_problem(vals)
    if problem:
        raise InputSizeError(f"{problem}.")
    return vals  # type: ignore[return-value]


@dataclass
class Token:
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def looks_like_pattern(text: str) -> bool:
    t = text.strip()
    return "->" in t or "→" in t or "[" in t or t.upper().startswith("INPUT")


def _check_spec(spec) -> str:
    if not isinstance(spec, str):
        raise PatternError(f"a pattern must be a string, not {type(spec).__name__}.")
    if len(spec) > MAX_SPEC_LENGTH:
        raise _error(f"the pattern is {len(spec):,} characters long; the limit is "
                     f"{MAX_SPEC_LENGTH:,}", spec, MAX_SPEC_LENGTH, 1)
    return spec


def tokenize(spec: str) -> list[Token]:
    spec = _check_spec(spec)
    tokens: list[Token] = []
    i, n = 0, len(spec)
    while i < n:
        c = spec[i]
        if c.isspace():
            i += 1
        elif spec.startswith("->", i):
            tokens.append(Token("->", i))
            i += 2
        elif c == "→":
            tokens.append(Token("->", i))
            i += 1
        elif c in "[]*":
            tokens.append(Token(c, i))
            i += 1
        else:
            j, depth = i, 0
            while j < n:
                ch = spec[j]
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth < 0:
                        raise _error("this ')' closes nothing", spec, j)
                elif depth == 0 and (ch.isspace() or ch in "[]*→" or spec.startswith("->", j)):
                    break
                j += 1
            if depth > 0:
                raise _error("a '(' is never closed", spec, spec.index("(", i))
            tokens.append(Token(spec[i:j], i))
            i = j
    return tokens


# -- parsing into a tree: list of (Token | list) with repeat counts --------------------

@dataclass
class Node:
    item: Token | list["Node"]
    count: int = 1
    count_tok: Token | None = None   # the N of "*N", for the caret of a limit

    @property
    def where(self) -> Token:
        """The token a message about this term points at: its count, else its layer."""
        if self.count_tok is not None:
            return self.count_tok
        item = self.item
        while isinstance(item, list):
            item = item[0].item
        return item


class _Parser:
    def __init__(self, spec: str):
        self.spec = _check_spec(spec)
        self.toks = tokenize(spec)
        self.i = 0
        self.depth = 0

    def error(self, msg: str, tok: Token | None = None) -> PatternError:
        if tok is None:
            return _error(msg, self.spec, len(self.spec.rstrip()), 1)
        return _error(msg, self.spec, tok.pos, len(tok.text))

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.error("the pattern ends where a layer was expected")
        self.i += 1
        return tok

    def parse(self) -> list[Node]:
        if not self.toks:
            raise PatternError("the pattern is empty; write layers like CONV3-32 -> RELU -> FC-10")
        seq = self.seq()
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected {_short(tok.text)!r}; layers are joined by '->'", tok)
        self.check_size(seq)
        return seq

    def seq(self) -> list[Node]:
        nodes = [self.term()]
        while (tok := self.peek()) is not None and tok.text == "->":
            self.take()
            nodes.append(self.term())
        return nodes

    def term(self) -> Node:
        tok = self.take()
        if tok.text == "[":
            if self.depth >= MAX_DEPTH:
                raise self.error(f"this '[' nests groups {self.depth + 1} deep; the limit is "
                                 f"{MAX_DEPTH}", tok)
            self.depth += 1
            inner = self.seq()
            self.depth -= 1
            close = self.peek()
            if close is None or close.text != "]":
                raise self.error("a '[' is never closed with ']'", tok) if close is None else \
                    self.error(f"expected ']' or '->' here, not {_short(close.text)!r}", close)
            self.take()
            node = Node(inner)
        elif tok.text in ("]", "*", "->"):
            raise self.error(f"expected a layer here, not {tok.text!r}", tok)
        else:
            node = Node(tok)
        if (star := self.peek()) is not None and star.text == "*":
            self.take()
            num = self.peek()
            if num is None:
                raise self.error("'*' needs a repeat count after it", star)
            self.take()
            if not re.fullmatch(r"[0-9]+", num.text):
                raise self.error(f"the repeat count must be a whole number, not "
                                 f"{_short(num.text)!r}", num)
            digits = num.text.lstrip("0") or "0"
            if len(digits) > len(str(MAX_REPEAT)) or int(digits) > MAX_REPEAT:
                raise self.error(f"the repeat count {_short(num.text)} is above the limit of "
                                 f"{MAX_REPEAT:,}", num)
            node.count, node.count_tok = int(digits), num
        return node

    def check_size(self, nodes: list[Node]) -> None:
        """Refuse a tree that expands to more than MAX_LAYERS layers, before expanding it
        (the caret points at the innermost repeat that crosses the limit)."""
        total = _size(nodes)
        if total > MAX_LAYERS:
            raise self.error(f"the pattern expands to {_big(total)} layers; the limit is "
                             f"{MAX_LAYERS:,}", _culprit(nodes))


def _size(nodes: list[Node]) -> int:
    """The number of layers ``nodes`` expand to, computed from the counts (no expansion)."""
    return sum(node.count * (_size(node.item) if isinstance(node.item, list) else 1)
               for node in nodes)


def _culprit(nodes: list[Node]) -> Token:
    """The token of the innermost term whose expansion passes MAX_LAYERS."""
    total = 0
    for node in nodes:
        inner = _size(node.item) if isinstance(node.item, list) else 1
        if node.count and inner > MAX_LAYERS:
            return _culprit(node.item)  # type: ignore[arg-type]
        total += node.count * inner
        if total > MAX_LAYERS:
            return node.where
    return nodes[-1].where


def expand(nodes: list[Node]) -> list[Token]:
    out: list[Token] = []
    for node in nodes:
        for _ in range(node.count):
            out.extend(expand(node.item) if isinstance(node.item, list) else [node.item])
    return out


# -- layers ------------------------------------------------------------------------------

_ACTS = {"RELU": "relu", "RELU6": "relu6", "LEAKYRELU": "leaky_relu", "ELU": "elu",
         "GELU": "gelu", "SWISH": "swish", "SILU": "silu", "TANH": "tanh",
         "SIGMOID": "sigmoid", "SOFTMAX": "softmax", "SOFT-MAX": "softmax"}
_OPTS = r"(?:\((?P<opts>[^)]*)\))?"
_A = re.ASCII   # digits are 0-9 only: int() of other Unicode digits is not what was meant
_RE = {
    "input": re.compile(r"INPUT(?:\((?P<dims>[^)]*)\))?", _A),
    "conv": re.compile(rf"CONV(?P<k>\d+)(?:X(?P<k2>\d+))?-(?P<n>\d+)(?:/(?P<s>\d+))?{_OPTS}", _A),
    "dwconv": re.compile(rf"DWCONV(?P<k>\d+)(?:/(?P<s>\d+))?{_OPTS}", _A),
    "sepconv": re.compile(rf"SEPCONV(?P<k>\d+)-(?P<n>\d+)(?:/(?P<s>\d+))?{_OPTS}", _A),
    "pwconv": re.compile(rf"PWCONV-(?P<n>\d+){_OPTS}", _A),
    "pool": re.compile(rf"(?P<kind>MAX|AVG)?POOL(?P<k>\d+)?(?:/(?P<s>\d+))?{_OPTS}", _A),
    "fc": re.compile(r"(?:FC|DENSE)-?(?P<n>\d+)", _A),
    "dropout": re.compile(r"DROP(?:OUT)?-?\(?(?P<p>0?\.\d+|[01](?:\.\d*)?)?\)?", _A),
    "gn": re.compile(r"GN(?P<g>\d+)?", _A),
}
_HINT = ("layers are INPUT(HxWxC), CONVk-n, DWCONVk, SEPCONVk-n, PWCONV-n, POOLk, MAXPOOL, "
         "AVGPOOL, GAP, GMP, FC-n, RELU, TANH, SIGMOID, SOFTMAX, BN, LN, IN, GN, LRN, "
         "DROPOUTp, FLATTEN")
_OPTION_NAMES = {"s": "stride", "d": "dilation", "g": "groups", "p": "padding"}


class PatternNet(nn.Sequential):
    """The network a pattern builds: an ``nn.Sequential`` that remembers its spec and input."""

    def __init__(self, layers: OrderedDict, spec: str, input_size: tuple[int, ...]):
        super().__init__(layers)
        self.spec = spec
        self.input_size = input_size
        self.model_name = "pattern"


@dataclass
class _Planned:
    """One layer: its name, how to make its module, its parameter count and its token."""

    name: str
    make: Callable[[], nn.Module]
    params: int
    tok: Token


class _Builder:
    """Walks the expanded tokens once and plans every layer: output shape and exact parameter
    count, without creating a module. :func:`from_pattern` checks the total against
    MAX_PARAMS and only then creates the modules."""

    def __init__(self, parser: _Parser, input_size):
        self.p = parser
        self.shape: tuple[int, ...] | None = tuple(input_size) if input_size else None
        self.plan: list[_Planned] = []
        self.counts: dict[str, int] = {}
        self.input_size = self.shape
        self.params = 0
        self.over: Token | None = None   # the layer at which the parameters pass MAX_PARAMS

    def add(self, kind: str, make: Callable[[], nn.Module], shape: tuple[int, ...],
            tok: Token, params: int = 0) -> None:
        for side in shape[1:]:
            if side > MAX_SIDE:
                raise self.p.error(f"{_short(tok.text)} makes a feature map "
                                   f"{'x'.join(_big(s) for s in shape[1:])}; the limit is "
                                   f"{MAX_SIDE:,} on a side", tok)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.plan.append(_Planned(f"{kind}{self.counts[kind]}", make, params, tok))
        self.shape = shape
        self.params += params
        if self.over is None and self.params > MAX_PARAMS:
            self.over = tok

    def params_error(self, complete: bool = True) -> PatternError:
        n = self.params
        at_least = "" if complete else "at least "
        return self.p.error(
            f"the pattern needs {at_least}{_big(n)} parameters ({_bytes(4 * n)} at 4 bytes); "
            f"the limit is {MAX_PARAMS:,} ({_bytes(4 * MAX_PARAMS)}), passed at this layer",
            self.over)

    def need_image(self, tok: Token) -> tuple[int, int, int]:
        if self.shape is None:
            raise self.p.error("the input size is unknown: start with INPUT(HxWxC) or give "
                               "--input-size", tok)
        if len(self.shape) != 3:
            raise self.p.error(f"{_short(tok.text)} needs an image (C x H x W) but the input "
                               f"here is a flat vector of {self.shape[0]:,}", tok)
        return self.shape  # type: ignore[return-value]

    def number(self, tok: Token, text: str, what: str, lo: int, hi: int) -> int:
        """An integer literal of the pattern, within [lo, hi] (checked on the digits, so an
        absurd literal never becomes a huge int)."""
        if not re.fullmatch(r"[0-9]+", text):
            raise self.p.error(f"{_short(tok.text)}: the {what} must be a whole number, not "
                               f"{_short(text)!r}", tok)
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(hi)) or int(digits) > hi:
            raise self.p.error(f"{_short(tok.text)}: a {what} of {_short(text)} is above the "
                               f"limit of {hi:,}", tok)
        v = int(digits)
        if v < lo:
            raise self.p.error(f"{_short(tok.text)}: the {what} must be at least {lo}, not {v}",
                               tok)
        return v

    def opts(self, tok: Token, text: str | None, allowed: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in filter(None, (t.strip() for t in (text or "").split(","))):
            if "=" not in part:
                raise self.p.error(f"option {_short(part)!r} must be written key=value, e.g. "
                                   "s=2", tok)
            k, v = (x.strip().lower() for x in part.split("=", 1))
            k = {"stride": "s", "padding": "p", "dilation": "d", "groups": "g"}.get(k, k)
            if k not in ("s", "p", "d", "g", "bias"):
                raise self.p.error(f"unknown option {_short(k)!r}; use s (stride), p (padding), "
                                   "d (dilation), g (groups) or bias", tok)
            if k not in allowed:
                raise self.p.error(f"{_short(tok.text)} takes no {_OPTION_NAMES.get(k, k)} "
                                   f"option; it takes {', '.join(allowed)}", tok)
            out[k] = v
        return out

    def spatial(self, tok: Token, hw, k, s, p, d=(1, 1)) -> tuple[int, int]:
        out = []
        for size, kk, ss, pp, dd in zip(hw, k, s, p, d):
            eff = dd * (kk - 1) + 1
            if size + 2 * pp < eff:
                raise self.p.error(
                    f"{_short(tok.text)} has a {k[0]}x{k[1]} kernel but its input is only "
                    f"{hw[0]}x{hw[1]} ({hw[0] + 2 * p[0]}x{hw[1] + 2 * p[1]} with padding)", tok)
            out.append((size + 2 * pp - eff) // ss + 1)
        return tuple(out)  # type: ignore[return-value]

    def conv_like(self, tok: Token, m: re.Match, kind: str) -> None:
        c, h, w = self.need_image(tok)
        gd = m.groupdict()
        allowed = {"conv": ("s", "p", "d", "g", "bias"), "pwconv": ("s", "g", "bias")}.get(
            kind, ("s", "p", "d", "bias"))
        o = self.opts(tok, gd.get("opts"), allowed)
        side = lambda text, what, lo=1: self.number(tok, text, what, lo, MAX_SIDE)  # noqa: E731
        k = (side(gd.get("k") or "1", "kernel size"),
             side(gd.get("k2") or gd.get("k") or "1", "kernel size"))
        s = side(o.get("s") or gd.get("s") or "1", "stride")
        d = side(o.get("d", "1"), "dilation")
        g = self.number(tok, o.get("g", "1"), "number of groups", 1, MAX_WIDTH)
        bias_text = o.get("bias", "1")
        if bias_text not in ("0", "1", "false", "true", "no", "yes"):
            raise self.p.error(f"bias must be 0 or 1 (false or true), not {_short(bias_text)!r}",
                               tok)
        bias = bias_text in ("1", "true", "yes")
        pad = o.get("p", "same")
        if pad == "same":
            p = tuple(d * (kk - 1) // 2 for kk in k)
        elif pad == "valid":
            p = (0, 0)
        elif re.fullmatch(r"[0-9]+", pad):
            p = (side(pad, "padding", 0),) * 2
        else:
            raise self.p.error(f"padding must be same, valid or a number, not {_short(pad)!r}",
                               tok)
        n = self.number(tok, gd["n"], "number of filters", 1, MAX_WIDTH) if gd.get("n") else c
        if kind in ("conv", "pwconv") and (c % g or n % g):
            raise self.p.error(f"groups g={g} must divide the {c} input and {n} output channels",
                               tok)
        oh, ow = self.spatial(tok, (h, w), k, (s, s), p, (d, d))
        kk = k[0] * k[1]
        if kind == "conv":
            make = lambda: Conv2d(c, n, k, s, p, d, g, bias)  # noqa: E731
            params = n * (c // g) * kk + (n if bias else 0)
        elif kind == "dwconv":
            make = lambda: DepthwiseConv2d(c, k, s, p, d, bias=bias)  # noqa: E731
            params = c * kk + (c if bias else 0)
        elif kind == "sepconv":
            make = lambda: SeparableConv2d(c, n, k, s, p, d, bias=bias)  # noqa: E731
            params = c * kk + n * c + ((c + n) if bias else 0)
        else:
            make = lambda: PointwiseConv2d(c, n, s, g, bias)  # noqa: E731
            params = n * (c // g) + (n if bias else 0)
        self.add(kind, make, (n, oh, ow), tok, params)

    def input(self, tok: Token, m: re.Match) -> None:
        dims = m.group("dims")
        if not dims:
            return
        nums = re.split(r"\s*[x,]\s*", dims.strip().lower())
        if not all(re.fullmatch(r"[0-9]+", x) for x in nums) or len(nums) not in (2, 3):
            raise self.p.error("INPUT takes HxWxC (or HxW for one channel), e.g. "
                               "INPUT(32x32x3)", tok)
        h = self.number(tok, nums[0], "height", 1, MAX_SIDE)
        w = self.number(tok, nums[1], "width", 1, MAX_SIDE)
        c = self.number(tok, nums[2], "number of channels", 1, MAX_INPUT_CHANNELS) \
            if len(nums) == 3 else 1
        problem = input_size_problem((c, h, w))
        if problem:
            raise self.p.error(problem, tok)
        if self.input_size is None:
            self.shape = self.input_size = (c, h, w)

    def layer(self, tok: Token, first: bool) -> None:
        u = tok.upper
        if (m := _RE["input"].fullmatch(u)) is not None:
            if not first:
                raise self.p.error("INPUT can only be the first layer", tok)
            return self.input(tok, m)
        if u in ("CONV", "FC", "DENSE", "SEPCONV", "PWCONV") or re.fullmatch(r"CONV[0-9]+", u):
            raise self.p.error(f"{_short(tok.text)} needs its sizes, e.g. CONV3-64 (3x3, 64 "
                               "filters) or FC-128", tok)
        for kind in ("conv", "dwconv", "sepconv", "pwconv"):
            if (m := _RE[kind].fullmatch(u)) is not None:
                return self.conv_like(tok, m, kind)
        if (m := _RE["pool"].fullmatch(u)) is not None:
            c, h, w = self.need_image(tok)
            if m.group("opts") is not None:
                raise self.p.error(f"{_short(tok.text)}: pooling takes no options; write "
                                   "POOLk/s, e.g. MAXPOOL3/2", tok)
            k = self.number(tok, m.group("k") or "2", "pool size", 1, MAX_SIDE)
            s = self.number(tok, m.group("s"), "stride", 1, MAX_SIDE) if m.group("s") else k
            oh, ow = self.spatial(tok, (h, w), (k, k), (s, s), (0, 0))
            avg = (m.group("kind") or "").upper() == "AVG"
            self.add("pool", (lambda: nn.AvgPool2d(k, s)) if avg else (lambda: nn.MaxPool2d(k, s)),
                     (c, oh, ow), tok)
            return
        if u in ("GAP", "GLOBALAVGPOOL", "GMP", "GLOBALMAXPOOL"):
            c, _, _ = self.need_image(tok)
            make = GlobalAvgPool2d if u in ("GAP", "GLOBALAVGPOOL") else GlobalMaxPool2d
            self.add("gpool", make, (c,), tok)
            return
        if u == "FLATTEN":
            self._flatten(tok)
            return
        if (m := _RE["fc"].fullmatch(u)) is not None:
            if self.shape is None:
                self.need_image(tok)
            if len(self.shape) == 3:
                self._flatten(tok)
            n = self.number(tok, m.group("n"), "number of units", 1, MAX_WIDTH)
            fan_in = self.shape[0]
            self.add("fc", lambda: nn.Linear(fan_in, n), (n,), tok, fan_in * n + n)
            return
        if u in _ACTS:
            if self.shape is None:
                self.need_image(tok)
            act = _ACTS[u]
            self.add(act.replace("_", ""), lambda: make_activation(act), self.shape, tok)
            return
        if (m := _RE["dropout"].fullmatch(u)) is not None:
            p = float(m.group("p") or 0.5)
            if not 0 <= p < 1:
                raise self.p.error(f"a dropout rate must be in [0, 1), not {p}", tok)
            if self.shape is None:
                self.need_image(tok)
            self.add("dropout", lambda: nn.Dropout(p), self.shape, tok)
            return
        if u in ("BN", "BATCHNORM", "LN", "LAYERNORM", "IN", "INSTANCENORM", "LRN") or \
                _RE["gn"].fullmatch(u):
            self._norm(tok, u)
            return
        raise self.p.error(f"unknown layer {_short(tok.text)!r}; {_HINT}", tok)

    def _flatten(self, tok: Token) -> None:
        if self.shape is None:
            self.need_image(tok)
        n = 1
        for s in self.shape:
            n *= s
        self.add("flatten", nn.Flatten, (n,), tok)

    def _norm(self, tok: Token, u: str) -> None:
        if self.shape is None:
            self.need_image(tok)
        c = self.shape[0]
        shape = self.shape
        if len(shape) == 1:
            if u not in ("BN", "BATCHNORM", "LN", "LAYERNORM"):
                raise self.p.error(f"{_short(tok.text)} needs an image input, not a flat vector",
                                   tok)
            bn = u.startswith("B")
            self.add("bn" if bn else "ln", (lambda: nn.BatchNorm1d(c)) if bn else
                     (lambda: nn.LayerNorm(c)), shape, tok, 2 * c)
            return
        if u in ("BN", "BATCHNORM"):
            self.add("bn", lambda: nn.BatchNorm2d(c), shape, tok, 2 * c)
        elif u in ("LN", "LAYERNORM"):
            self.add("ln", lambda: LayerNorm2d(c), shape, tok, 2 * c)
        elif u in ("IN", "INSTANCENORM"):
            self.add("in", lambda: nn.InstanceNorm2d(c, affine=True), shape, tok, 2 * c)
        elif u == "LRN":
            self.add("lrn", LocalResponseNorm, shape, tok)
        else:
            text = _RE["gn"].fullmatch(u).group("g")
            g = self.number(tok, text, "number of groups", 1, MAX_WIDTH) if text else min(32, c)
            if c % g:
                raise self.p.error(f"GN{g}: {g} groups do not divide {c} channels", tok)
            self.add("gn", lambda: nn.GroupNorm(g, c), shape, tok, 2 * c)


def parse(spec: str) -> list[Token]:
    """The flat list of layer tokens of ``spec`` (repetitions expanded, within the limits)."""
    return expand(_Parser(spec).parse())


def plan(spec: str, input_size=None) -> tuple[list[_Planned], tuple[int, ...], int]:
    """Check ``spec`` completely without creating a module: its layers, input size and exact
    parameter count. Every error :func:`from_pattern` can raise for the pattern is raised here."""
    parser = _Parser(spec)
    tokens = expand(parser.parse())
    if not tokens:
        raise PatternError("the pattern has no layers (a repeat count of 0 removes them all)")
    builder = _Builder(parser, check_input_size(input_size) if input_size is not None else None)
    for i, tok in enumerate(tokens):
        try:
            builder.layer(tok, i == 0)
        except PatternError:
            if builder.over is not None:     # the parameter limit was passed first
                raise builder.params_error(complete=False) from None
            raise
    if builder.over is not None:
        raise builder.params_error()
    if builder.input_size is None:
        raise PatternError("the input size is unknown: start the pattern with INPUT(HxWxC) or "
                           "give an input size")
    if not builder.plan:
        raise _error("the pattern has no layers after INPUT", spec, 0, len(spec))
    return builder.plan, builder.input_size, builder.params


def from_pattern(spec: str, input_size=None, device=None) -> PatternNet:
    """Build the network written in the pattern language (see this module's docstring).

    ``input_size`` (C, H, W) overrides the pattern's ``INPUT(HxWxC)``. With ``device='meta'``
    nothing is allocated (what :func:`deeparch.summary` uses). The whole pattern is checked,
    and its parameters counted from the shapes, before any weight is allocated: a pattern
    beyond the module's limits (:data:`MAX_PARAMS` and the others) is a :class:`PatternError`,
    a bad ``input_size`` an :class:`~deeparch.errors.InputSizeError`.
    """
    layers, size, params = plan(spec, input_size)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    try:
        with torch.device(device) if device else _null():
            for item in layers:
                modules[item.name] = item.make()
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower():
            raise
        modules.clear()
        raise PatternError(f"there is not enough memory for the {_big(params)} parameters of the "
                           f"pattern ({_bytes(4 * params)} at 4 bytes)") from None
    return PatternNet(modules, spec, size)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
