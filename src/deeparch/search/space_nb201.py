"""The NAS-Bench-201 cell space (Dong & Yang 2020) and its CIFAR macro skeleton.

A cell is a DAG of 4 nodes: node 0 is the cell's input, node ``j`` sums one operation on
every earlier node, node 3 is the output. Each of the 6 edges takes one of 5 operations:

    none          the zero map (the edge is absent)
    skip_connect  identity
    nor_conv_1x1  ReLU -> 1x1 conv -> BN
    nor_conv_3x3  ReLU -> 3x3 conv -> BN
    avg_pool_3x3  3x3 average pooling, stride 1 (padding not counted)

so 5**6 = 15,625 cells (isomorphic ones are not merged, as the benchmark does not merge them).

**The arch and its string (the table's key).** An arch is the tuple of the 6 operations'
indices in the order above, the edges in the benchmark's own order, grouped by target node:
``(1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)``. ``encode`` writes the benchmark's own notation,
``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|`` (``op~source``, one ``|...|`` group per
target node, joined by ``+``): that string is the canonical key of
:class:`deeparch.search.table.Table`. ``decode`` reads it back (the groups may list their
sources in any order; spaces are ignored).

**The network** (the benchmark's CIFAR skeleton): a 3x3 conv with 16 filters + BN; three
stages of N = 5 cells with C = 16, 32, 64 channels; between stages a residual reduction block
(ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a shortcut of 2x2 average pooling and a 1x1 conv);
then BN-ReLU, global average pooling and a linear classifier. Every edge's operation is
built and run, even one whose input is the zero map or a cell whose output node is cut off
from its input (the output is then all zeros): the benchmark counts costs that way, so the
inspector gives the published range exactly, 0.073 M params / 7.78 M mult-adds for the
cheapest cells (only none / skip / pooling edges: the skeleton alone) to 1.532 M / 220.12 M
for the all-conv3x3 cell.
"""
from __future__ import annotations

import itertools
import re
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import SearchError
from .spaces import Space, _check_int, check_text, parse_error

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))      # (target, source)
NODES = 4


class ReLUConvBN(nn.Sequential):
    """ReLU -> KxK conv (no bias) -> BN: the benchmark's ``nor_conv`` operation order."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int = 1):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)


class Zero(nn.Module):
    """The ``none`` edge: a map of zeros shaped like its input (no parameters, no mult-adds)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise SearchError(f"unknown NAS-Bench-201 operation {name!r}; the operations are "
                      f"{', '.join(OPS)}.")


class NB201Cell(nn.Module):
    """One cell: ``node_j = sum_i edge_{j<-i}(node_i)``, the output is node 3. The edges are
    children named ``edge_{j}_{i}`` (target, source)."""

    def __init__(self, arch: Sequence[int], channels: int):
        super().__init__()
        self.arch = tuple(arch)
        for (j, i), op in zip(EDGES, self.arch):
            self.add_module(f"edge_{j}_{i}", make_op(OPS[op], channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NODES):
            total = None
            for i in range(j):
                y = getattr(self, f"edge_{j}_{i}")(nodes[i])
                total = y if total is None else total + y
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's reduction block between stages (a ResNet basic block at stride 2):
    ReLU-conv3x3/2-BN -> ReLU-conv3x3-BN, plus avgpool2x2 -> conv1x1 on the shortcut."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv_a = ReLUConvBN(in_ch, out_ch, 3, 2)
        self.conv_b = ReLUConvBN(out_ch, out_ch, 3, 1)
        self.shortcut = nn.Sequential()
        self.shortcut.add_module("pool", nn.AvgPool2d(2, 2))
        self.shortcut.add_module("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def nb201_network(arch: Sequence[int], num_classes: int = 10, in_chans: int = 3,
                  channels: int = 16, cells: int = 5, stages: int = 3):
    """The benchmark's CIFAR network around ``arch`` (C = ``channels``, N = ``cells``);
    ``stages`` < 3 keeps only the first stages (fewer reductions, for small images)."""
    from ..layers import GlobalAvgPool2d
    from ..models.base import Network, init_weights

    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv", nn.Conv2d(in_chans, channels, 3, 1, 1, bias=False))
    stem.add_module("bn", nn.BatchNorm2d(channels))
    features.add_module("stem", stem)
    c = channels
    for s in range(stages):
        if s:
            features.add_module(f"reduction{s}", ResidualReduction(c, 2 * c))
            c *= 2
        stage = nn.Sequential()
        for n in range(cells):
            stage.add_module(f"cell{n}", NB201Cell(arch, c))
        features.add_module(f"stage{s + 1}", stage)
    last = nn.Sequential()
    last.add_module("bn", nn.BatchNorm2d(c))
    last.add_module("act", nn.ReLU())
    features.add_module("lastact", last)
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("fc", nn.Linear(c, num_classes))
    model = Network(features, head,
                    ["stem"] + [f"stage{s + 1}" for s in range(stages)] + ["lastact"],
                    num_classes)
    return init_weights(model, linear_std=None)


def connected(arch: Sequence[int]) -> bool:
    """Whether the output node is reachable from the input through edges other than none
    (when not, the benchmark's network outputs a constant: 10% accuracy on CIFAR-10)."""
    reach = {0}
    for (j, i), op in zip(EDGES, arch):
        if OPS[op] != "none" and i in reach:
            reach.add(j)
    return NODES - 1 in reach


_GROUP = re.compile(r"\s*([A-Za-z0-9_]+)\s*~\s*(\d+)\s*")


class NB201Space(Space):
    """NAS-Bench-201's 15,625 cells (see the module notes). Options: ``channels`` (C of the
    first stage, 16) and ``cells`` (N per stage, 5) of the built network."""

    name = "nb201"
    OPTIONS = ("channels", "cells", "stages")
    OPS = OPS
    EDGES = EDGES

    def __init__(self, channels: int = 16, cells: int = 5, stages: int = 3):
        self.channels = _check_int("channels", channels)
        self.cells = _check_int("cells", cells)
        self.stages = _check_int("stages", stages)
        if self.stages > 3:
            raise SearchError(f"the NAS-Bench-201 skeleton has at most 3 stages, not "
                              f"{stages!r}.")

    def decisions(self) -> list[tuple[str, int]]:
        return [(f"{j}<-{i}", len(OPS)) for j, i in EDGES]

    def from_decisions(self, choices: Sequence[int]) -> tuple:
        return tuple(self.check_choices(choices))

    def to_decisions(self, arch) -> list[int]:
        if not (isinstance(arch, tuple) and len(arch) == len(EDGES)):
            raise SearchError(f"an nb201 architecture is a tuple of {len(EDGES)} operation "
                              f"indices, not {arch!r:.80}.")
        return self.check_choices(arch)

    def size(self) -> int:
        return len(OPS) ** len(EDGES)

    def enumerate(self) -> Iterator[tuple]:
        """Every cell, in the order of the index tuples (0,0,0,0,0,0), (0,0,0,0,0,1), ..."""
        return itertools.product(range(len(OPS)), repeat=len(EDGES))

    def encode(self, arch) -> str:
        ops = self.to_decisions(arch)
        groups = []
        for j in range(1, NODES):
            groups.append("|" + "|".join(f"{OPS[ops[EDGES.index((j, i))]]}~{i}"
                                         for i in range(j)) + "|")
        return "+".join(groups)

    def decode(self, text: str) -> tuple:
        text = check_text(text, "NAS-Bench-201")
        ops: dict[tuple[int, int], int] = {}
        parts, start = [], 0
        for k, ch in enumerate(text + "+"):
            if ch == "+":
                parts.append((start, text[start:k]))
                start = k + 1
        if len(parts) != NODES - 1:
            pos = 0 if len(parts) < NODES - 1 else parts[NODES - 1][0] - 1
            raise parse_error(f"a NAS-Bench-201 cell has {NODES - 1} node groups joined by "
                              f"'+', this string has {len(parts)}", text, pos,
                              1 if pos else len(text))
        for j, (offset, part) in enumerate(parts, 1):
            stripped = part.strip()
            lead = offset + (len(part) - len(part.lstrip()))
            if not (stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1):
                raise parse_error(f"node {j}'s group must be written |op~source|...|", text,
                                  lead, max(1, len(stripped)))
            pos = lead + 1
            seen = set()
            for tok in stripped[1:-1].split("|"):
                m = _GROUP.fullmatch(tok)
                if not m:
                    raise parse_error("expected op~source (e.g. nor_conv_3x3~0)", text, pos,
                                      max(1, len(tok)))
                op, src = m.group(1), int(m.group(2))
                op_pos = pos + m.start(1)
                if op not in OPS:
                    raise parse_error(f"unknown operation {op!r}; the operations are "
                                      f"{', '.join(OPS)}", text, op_pos, len(op))
                if src >= j or src in seen:
                    why = (f"node {j} reads nodes 0..{j - 1}" if src >= j
                           else f"node {j} reads node {src} twice")
                    raise parse_error(why, text, pos + m.start(2), len(m.group(2)))
                seen.add(src)
                ops[(j, src)] = OPS.index(op)
                pos += len(tok) + 1
            if len(seen) != j:
                missing = sorted(set(range(j)) - seen)
                raise parse_error(f"node {j} needs one edge from each of nodes 0..{j - 1}; "
                                  f"the edge from node {missing[0]} is missing", text, lead,
                                  len(stripped))
        return tuple(ops[e] for e in EDGES)

    def build(self, arch, num_classes: int = 10, in_chans: int = 3):
        arch = self.check(arch)
        model = nb201_network(arch, num_classes, in_chans, self.channels, self.cells,
                              self.stages)
        model.input_size = self.input_size(arch)
        model.model_name = "nb201 " + self.encode(arch)
        return model

    def input_size(self, arch) -> tuple[int, int, int]:
        return (3, 32, 32)

    def connected(self, arch) -> bool:
        return connected(self.check(arch))
