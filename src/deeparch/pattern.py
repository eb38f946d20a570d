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
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .errors import PatternError
from .layers import (Conv2d, DepthwiseConv2d, GlobalAvgPool2d, GlobalMaxPool2d, LayerNorm2d,
                     LocalResponseNorm, PointwiseConv2d, SeparableConv2d, make_activation)


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


def tokenize(spec: str) -> list[Token]:
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
                        raise PatternError("this ')' closes nothing", spec, j)
                elif depth == 0 and (ch.isspace() or ch in "[]*→" or spec.startswith("->", j)):
                    break
                j += 1
            if depth > 0:
                raise PatternError("a '(' is never closed", spec, spec.index("(", i))
            tokens.append(Token(spec[i:j], i))
            i = j
    return tokens


# -- parsing into a tree: list of (Token | list) with repeat counts --------------------

@dataclass
class Node:
    item: Token | list["Node"]
    count: int = 1


class _Parser:
    def __init__(self, spec: str):
        self.spec = spec
        self.toks = tokenize(spec)
        self.i = 0

    def error(self, msg: str, tok: Token | None = None) -> PatternError:
        if tok is None:
            return PatternError(msg, self.spec, len(self.spec.rstrip()), 1)
        return PatternError(msg, self.spec, tok.pos, len(tok.text))

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
            raise self.error(f"unexpected {tok.text!r}; layers are joined by '->'", tok)
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
            inner = self.seq()
            close = self.peek()
            if close is None or close.text != "]":
                raise self.error("a '[' is never closed with ']'", tok) if close is None else \
                    self.error(f"expected ']' or '->' here, not {close.text!r}", close)
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
            if not re.fullmatch(r"\d+", num.text):
                raise self.error(f"the repeat count must be a whole number, not {num.text!r}", num)
            node.count = int(num.text)
        return node


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
_NUM = r"(\d+)"
_OPTS = r"(?:\((?P<opts>[^)]*)\))?"
_RE = {
    "input": re.compile(r"INPUT(?:\((?P<dims>[^)]*)\))?"),
    "conv": re.compile(rf"CONV(?P<k>\d+)(?:X(?P<k2>\d+))?-(?P<n>\d+)(?:/(?P<s>\d+))?{_OPTS}"),
    "dwconv": re.compile(rf"DWCONV(?P<k>\d+)(?:/(?P<s>\d+))?{_OPTS}"),
    "sepconv": re.compile(rf"SEPCONV(?P<k>\d+)-(?P<n>\d+)(?:/(?P<s>\d+))?{_OPTS}"),
    "pwconv": re.compile(rf"PWCONV-(?P<n>\d+){_OPTS}"),
    "pool": re.compile(rf"(?P<kind>MAX|AVG)?POOL(?P<k>\d+)?(?:/(?P<s>\d+))?{_OPTS}"),
    "fc": re.compile(r"(?:FC|DENSE)-?(?P<n>\d+)"),
    "dropout": re.compile(r"DROP(?:OUT)?-?\(?(?P<p>0?\.\d+|[01](?:\.\d*)?)?\)?"),
    "gn": re.compile(r"GN(?P<g>\d+)?"),
}
_HINT = ("layers are INPUT(HxWxC), CONVk-n, DWCONVk, SEPCONVk-n, PWCONV-n, POOLk, MAXPOOL, "
         "AVGPOOL, GAP, GMP, FC-n, RELU, TANH, SIGMOID, SOFTMAX, BN, LN, IN, GN, LRN, "
         "DROPOUTp, FLATTEN")


class PatternNet(nn.Sequential):
    """The network a pattern builds: an ``nn.Sequential`` that remembers its spec and input."""

    def __init__(self, layers: OrderedDict, spec: str, input_size: tuple[int, ...]):
        super().__init__(layers)
        self.spec = spec
        self.input_size = input_size
        self.model_name = "pattern"


class _Builder:
    def __init__(self, parser: _Parser, input_size):
        self.p = parser
        self.shape: tuple[int, ...] | None = tuple(input_size) if input_size else None
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.counts: dict[str, int] = {}
        self.input_size = self.shape

    def add(self, kind: str, module: nn.Module, shape: tuple[int, ...]) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.layers[f"{kind}{self.counts[kind]}"] = module
        self.shape = shape

    def need_image(self, tok: Token) -> tuple[int, int, int]:
        if self.shape is None:
            raise self.p.error("the input size is unknown: start with INPUT(HxWxC) or give "
                               "--input-size", tok)
        if len(self.shape) != 3:
            raise self.p.error(f"{tok.text} needs an image (C x H x W) but the input here is a "
                               f"flat vector of {self.shape[0]}", tok)
        return self.shape  # type: ignore[return-value]

    def opts(self, tok: Token, text: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in filter(None, (t.strip() for t in (text or "").split(","))):
            if "=" not in part:
                raise self.p.error(f"option {part!r} must be written key=value, e.g. s=2", tok)
            k, v = (x.strip().lower() for x in part.split("=", 1))
            if k not in ("s", "p", "d", "g", "bias", "stride", "padding", "dilation", "groups"):
                raise self.p.error(f"unknown option {k!r}; use s (stride), p (padding), "
                                   "d (dilation), g (groups) or bias", tok)
            out[{"stride": "s", "padding": "p", "dilation": "d", "groups": "g"}.get(k, k)] = v
        return out

    def spatial(self, tok: Token, hw, k, s, p, d=(1, 1)) -> tuple[int, int]:
        out = []
        for size, kk, ss, pp, dd in zip(hw, k, s, p, d):
            eff = dd * (kk - 1) + 1
            if size + 2 * pp < eff:
                raise self.p.error(
                    f"{tok.text} has a {k[0]}x{k[1]} kernel but its input is only "
                    f"{hw[0]}x{hw[1]} ({hw[0] + 2 * p[0]}x{hw[1] + 2 * p[1]} with padding)", tok)
            out.append((size + 2 * pp - eff) // ss + 1)
        return tuple(out)  # type: ignore[return-value]

    def conv_like(self, tok: Token, m: re.Match, kind: str) -> None:
        c, h, w = self.need_image(tok)
        gd = m.groupdict()
        o = self.opts(tok, gd.get("opts"))
        k = (int(gd.get("k") or 1), int(gd.get("k2") or gd.get("k") or 1))
        s = int(o.get("s") or gd.get("s") or 1)
        d = int(o.get("d", 1))
        g = int(o.get("g", 1))
        bias = o.get("bias", "1") not in ("0", "false", "no")
        pad = o.get("p", "same")
        if pad == "same":
            p = tuple(d * (kk - 1) // 2 for kk in k)
        elif pad == "valid":
            p = (0, 0)
        elif pad.isdigit():
            p = (int(pad), int(pad))
        else:
            raise self.p.error(f"padding must be same, valid or a number, not {pad!r}", tok)
        n = int(gd.get("n") or c)
        if kind == "conv" and (c % g or n % g):
            raise self.p.error(f"groups g={g} must divide the {c} input and {n} output channels", tok)
        oh, ow = self.spatial(tok, (h, w), k, (s, s), p, (d, d))
        if kind == "conv":
            mod: nn.Module = Conv2d(c, n, k, s, p, d, g, bias)
        elif kind == "dwconv":
            mod = DepthwiseConv2d(c, k, s, p, d, bias=bias)
        elif kind == "sepconv":
            mod = SeparableConv2d(c, n, k, s, p, d, bias=bias)
        else:
            mod = PointwiseConv2d(c, n, s, g, bias)
        self.add(kind, mod, (n, oh, ow))

    def layer(self, tok: Token, first: bool) -> None:
        u = tok.upper
        if (m := _RE["input"].fullmatch(u)) is not None:
            if not first:
                raise self.p.error("INPUT can only be the first layer", tok)
            if m.group("dims"):
                nums = re.split(r"\s*[x,]\s*", m.group("dims").strip().lower())
                if not all(x.isdigit() and int(x) > 0 for x in nums) or len(nums) not in (2, 3):
                    raise self.p.error("INPUT takes HxWxC (or HxW for one channel), e.g. "
                                       "INPUT(32x32x3)", tok)
                h, w, c = (int(nums[0]), int(nums[1]), int(nums[2]) if len(nums) == 3 else 1)
                if self.input_size is None:
                    self.shape = self.input_size = (c, h, w)
            return
        if u in ("CONV", "FC", "DENSE", "SEPCONV", "PWCONV") or re.fullmatch(r"CONV\d+", u):
            raise self.p.error(f"{tok.text} needs its sizes, e.g. CONV3-64 (3x3, 64 filters) or "
                               "FC-128", tok)
        for kind in ("conv", "dwconv", "sepconv", "pwconv"):
            if (m := _RE[kind].fullmatch(u)) is not None:
                return self.conv_like(tok, m, kind)
        if (m := _RE["pool"].fullmatch(u)) is not None:
            c, h, w = self.need_image(tok)
            k = int(m.group("k") or 2)
            s = int(m.group("s") or k)
            oh, ow = self.spatial(tok, (h, w), (k, k), (s, s), (0, 0))
            avg = (m.group("kind") or "").upper() == "AVG"
            self.add("pool", nn.AvgPool2d(k, s) if avg else nn.MaxPool2d(k, s), (c, oh, ow))
            return
        if u in ("GAP", "GLOBALAVGPOOL", "GMP", "GLOBALMAXPOOL"):
            c, _, _ = self.need_image(tok)
            mod = GlobalAvgPool2d() if u in ("GAP", "GLOBALAVGPOOL") else GlobalMaxPool2d()
            self.add("gpool", mod, (c,))
            return
        if u == "FLATTEN":
            self._flatten(tok)
            return
        if (m := _RE["fc"].fullmatch(u)) is not None:
            if self.shape is None:
                self.need_image(tok)
            if len(self.shape) == 3:
                self._flatten(tok)
            self.add("fc", nn.Linear(self.shape[0], int(m.group("n"))), (int(m.group("n")),))
            return
        if u in _ACTS:
            if self.shape is None:
                self.need_image(tok)
            self.add(_ACTS[u].replace("_", ""), make_activation(_ACTS[u]), self.shape)
            return
        if (m := _RE["dropout"].fullmatch(u)) is not None:
            p = float(m.group("p") or 0.5)
            if not 0 <= p < 1:
                raise self.p.error(f"a dropout rate must be in [0, 1), not {p}", tok)
            if self.shape is None:
                self.need_image(tok)
            self.add("dropout", nn.Dropout(p), self.shape)
            return
        if u in ("BN", "BATCHNORM", "LN", "LAYERNORM", "IN", "INSTANCENORM", "LRN") or \
                _RE["gn"].fullmatch(u):
            self._norm(tok, u)
            return
        raise self.p.error(f"unknown layer {tok.text!r}; {_HINT}", tok)

    def _flatten(self, tok: Token) -> None:
        if self.shape is None:
            self.need_image(tok)
        n = 1
        for s in self.shape:
            n *= s
        self.add("flatten", nn.Flatten(), (n,))

    def _norm(self, tok: Token, u: str) -> None:
        if self.shape is None:
            self.need_image(tok)
        c = self.shape[0]
        if len(self.shape) == 1:
            if u not in ("BN", "BATCHNORM", "LN", "LAYERNORM"):
                raise self.p.error(f"{tok.text} needs an image input, not a flat vector", tok)
            mod: nn.Module = nn.BatchNorm1d(c) if u.startswith("B") else nn.LayerNorm(c)
            self.add("bn" if u.startswith("B") else "ln", mod, self.shape)
            return
        if u in ("BN", "BATCHNORM"):
            self.add("bn", nn.BatchNorm2d(c), self.shape)
        elif u in ("LN", "LAYERNORM"):
            self.add("ln", LayerNorm2d(c), self.shape)
        elif u in ("IN", "INSTANCENORM"):
            self.add("in", nn.InstanceNorm2d(c, affine=True), self.shape)
        elif u == "LRN":
            self.add("lrn", LocalResponseNorm(), self.shape)
        else:
            g = int(_RE["gn"].fullmatch(u).group("g") or min(32, c))
            if c % g:
                raise self.p.error(f"GN{g}: {g} groups do not divide {c} channels", tok)
            self.add("gn", nn.GroupNorm(g, c), self.shape)


def parse(spec: str) -> list[Token]:
    """The flat list of layer tokens of ``spec`` (repetitions expanded)."""
    return expand(_Parser(spec).parse())


def from_pattern(spec: str, input_size=None, device=None) -> PatternNet:
    """Build the network written in the pattern language (see this module's docstring).

    ``input_size`` (C, H, W) overrides the pattern's ``INPUT(HxWxC)``. With ``device='meta'``
    nothing is allocated (what :func:`deeparch.summary` uses).
    """
    parser = _Parser(spec)
    tokens = expand(parser.parse())
    if not tokens:
        raise PatternError("the pattern has no layers (a repeat count of 0 removes them all)")
    builder = _Builder(parser, input_size)
    with torch.device(device) if device else _null():
        for i, tok in enumerate(tokens):
            builder.layer(tok, i == 0)
    if builder.input_size is None:
        raise PatternError("the input size is unknown: start the pattern with INPUT(HxWxC) or "
                           "give an input size")
    if not builder.layers:
        raise PatternError("the pattern has no layers after INPUT", spec, 0, len(spec))
    return PatternNet(builder.layers, spec, builder.input_size)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
