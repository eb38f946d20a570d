"""FractalNet (Larsson, Maire, Shakhnarovich 2017): ultra-deep networks without residuals.

One expansion rule builds a block of ``C`` columns::

    f_1(z)     = conv(z)
    f_{C+1}(z) = join( (f_C o f_C)(z), conv(z) )        join = element-wise mean

Column ``c`` (1 = shallowest) holds ``2^(c-1)`` conv units (3x3 conv -> [dropout] -> BN ->
ReLU), so a block has ``2^C - 1`` convolutions and ``2^(C-1)`` on its deepest path; each
block ends with 2x2 max pooling. ``B`` blocks with 64-128-256-512-512 filters on 32x32
CIFAR input: C=4, B=5 gives ``2^3 x 5 = 40`` convolutions on the deepest path (C=3: 20).

Drop-path (training only): a mini-batch is, with probability ``global_drop_ratio``,
*global* (one column, drawn at random, runs alone through the whole network) and
otherwise *local* (each join drops each input with probability ``drop_path_rate``,
keeping at least one). ``model(x, column=c)`` runs column ``c`` alone at any time (the
paper's per-column evaluation); ``model.deepest_column()`` extracts that column as a
plain ``Network`` with the trained weights.

The paper's Table 1 gives 38.6M parameters for the 20-layer network; the architecture
it describes counts 33.7M (33,724,618 here with a 10-way classifier, BN and no conv
biases), which independent reimplementations report as well: the card leaves the
figure out of the exact checks and the tests record the gap.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import GlobalAvgPool2d
from .base import Network, init_weights
from .registry import register

PAPER = "FractalNet: Ultra-Deep Neural Networks without Residuals"
LOCAL_DROP = 0.15                              # the paper's local drop-path rate
GLOBAL_RATIO = 0.5                             # half the mini-batches use global drop-path


class ConvUnit(nn.Sequential):
    """3x3 conv -> dropout (when the block has some) -> BN -> ReLU, as the authors' code."""

    def __init__(self, in_ch: int, out_ch: int, drop: float):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        if drop > 0:
            self.drop = nn.Dropout(drop)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)


class Join(nn.Module):
    """Element-wise mean of the columns that reach this point (the paper's join layer).

    Training with local drop-path: :meth:`survivors` draws which inputs are kept (each
    dropped with probability ``p``, at least one kept); the block then computes and joins
    only those.
    """

    def __init__(self, columns: Sequence[int], p: float = 0.0):
        super().__init__()
        self.columns = tuple(columns)
        self.p = p

    def survivors(self) -> tuple[int, ...]:
        if not self.training or self.p <= 0:
            return self.columns
        keep = torch.rand(len(self.columns), device="cpu") >= self.p
        if not bool(keep.any()):
            keep[int(torch.randint(len(self.columns), (1,), device="cpu"))] = True
        return tuple(c for c, k in zip(self.columns, keep.tolist()) if k)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out / len(xs) if len(xs) > 1 else out

    def extra_repr(self) -> str:
        return f"columns={list(self.columns)}, p={self.p}"


class FractalBlock(nn.Module):
    """``C`` columns of conv units, joined wherever several columns end together, then a pool.

    Column ``c`` has ``2^(c-1)`` units, each spanning ``2^(C-c)`` steps of the deepest
    column; at step ``d`` every column whose unit ends there is joined, and the join feeds
    the next unit of each of those columns.
    """

    def __init__(self, in_ch: int, out_ch: int, columns: int, drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.num_columns = columns
        self.depth = 2 ** (columns - 1)
        self.column = None            # set by FractalNet.forward for a single-column pass
        for c in range(1, columns + 1):
            col = nn.Sequential()
            for k in range(2 ** (c - 1)):
                col.add_module(f"conv{k + 1}", ConvUnit(in_ch if k == 0 else out_ch, out_ch, drop))
            self.add_module(f"column{c}", col)
        for d in range(1, self.depth + 1):
            ending = self._ending(d)
            if len(ending) > 1:
                self.add_module(f"join{d}", Join(ending, drop_path))
        self.pool = nn.MaxPool2d(2, 2)

    def span(self, c: int) -> int:
        """How many steps of the deepest column one unit of column ``c`` spans."""
        return 2 ** (self.num_columns - c)

    def _ending(self, d: int) -> tuple[int, ...]:
        return tuple(c for c in range(1, self.num_columns + 1) if d % self.span(c) == 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = {0: x}                      # the map entering step d, keyed by step
        for d in range(1, self.depth + 1):
            ending = self._ending(d)
            join = getattr(self, f"join{d}", None)
            if self.column is not None:
                ending = tuple(c for c in ending if c == self.column)
            elif join is not None:
                ending = join.survivors()
            if not ending:
                continue
            outs = [getattr(self, f"column{c}")[d // self.span(c) - 1](joined[d - self.span(c)])
                    for c in ending]
            joined[d] = join(*outs) if join is not None else outs[0]
        return self.pool(joined[self.depth])

    def column_units(self, c: int) -> list[nn.Module]:
        return list(getattr(self, f"column{c}").children())


class FractalNet(Network):
    """A :class:`Network` of fractal blocks that knows its columns (drop-path, extraction)."""

    def __init__(self, features, head, num_classes, columns: int, global_drop_ratio: float):
        super().__init__(features, head, None, num_classes)
        self.columns = columns
        self.global_drop_ratio = global_drop_ratio

    def _check(self, column) -> None:
        if not isinstance(column, int) or not 1 <= column <= self.columns:
            raise ModelOptionError(f"column must be 1 to {self.columns} for this network, "
                                   f"not {column!r}.")

    def blocks(self) -> list[FractalBlock]:
        return [m for m in self.features.children() if isinstance(m, FractalBlock)]

    @contextlib.contextmanager
    def single_column(self, column: int | None) -> Iterator[None]:
        """Within the context, every block runs column ``column`` alone (None: all columns)."""
        if column is not None:
            self._check(column)
        blocks = self.blocks()
        for b in blocks:
            b.column = column
        try:
            yield
        finally:
            for b in blocks:
                b.column = None

    def forward(self, x: torch.Tensor, column: int | None = None) -> torch.Tensor:
        if column is None and self.training and self.global_drop_ratio > 0:
            if float(torch.rand((), device="cpu")) < self.global_drop_ratio:
                column = int(torch.randint(1, self.columns + 1, (1,), device="cpu"))
        with self.single_column(column):
            return self.forward_head(self.forward_features(x))

    def column_network(self, column: int) -> Network:
        """Column ``column`` of every block as a plain network, with copies of its weights."""
        self._check(column)
        features = nn.Sequential()
        for name, block in self.features.named_children():
            plain = nn.Sequential()
            for k, unit in enumerate(block.column_units(column), 1):
                plain.add_module(f"conv{k}", copy.deepcopy(unit))
            plain.add_module("pool", copy.deepcopy(block.pool))
            features.add_module(name, plain)
        net = Network(features, copy.deepcopy(self.head), None, self.num_classes)
        net.model_name = f"{getattr(self, 'model_name', 'fractalnet')}_column{column}"
        return net.train(self.training)

    def deepest_column(self) -> Network:
        """The plain deep network (``B x 2^(C-1)`` convolutions) taken out of this fractal one."""
        return self.column_network(self.columns)


def _per_block(value, blocks: int, what: str) -> list[float]:
    single = isinstance(value, (int, float))
    rates = [float(value)] * blocks if single else [float(v) for v in value]
    if len(rates) != blocks:
        raise ModelOptionError(f"{what} needs one rate per block ({blocks}), got {len(rates)}.")
    if any(not 0.0 <= r < 1.0 for r in rates):
        raise ModelOptionError(f"{what} rates must be in [0, 1), got {rates}.")
    return rates


def fractalnet(columns: int = 4, blocks: int = 5, filters: Sequence[int] | None = None,
               num_classes: int = 1000, in_chans: int = 3, drop_rate=None,
               drop_path_rate: float = LOCAL_DROP,
               global_drop_ratio: float = GLOBAL_RATIO) -> FractalNet:
    """``columns`` C and ``blocks`` B; ``filters`` per block (default 64 doubling per block up
    to 512: the paper's 64-128-256-512-512 for B=5); ``drop_rate`` the dropout in each conv
    unit, one number or one per block (default 0 rising to 0.4: the paper's 0, .1, .2, .3, .4);
    ``drop_path_rate`` the local drop-path probability of each join input;
    ``global_drop_ratio`` the share of mini-batches trained with global drop-path."""
    if not isinstance(columns, int) or columns < 1:
        raise ModelOptionError(f"columns must be a whole number >= 1, not {columns!r}.")
    if not isinstance(blocks, int) or blocks < 1:
        raise ModelOptionError(f"blocks must be a whole number >= 1, not {blocks!r}.")
    if filters is None:
        filters = [min(64 * 2 ** b, 512) for b in range(blocks)]
    filters = list(filters)
    if len(filters) != blocks or any(int(f) < 1 for f in filters):
        raise ModelOptionError(f"filters needs one positive width per block ({blocks}), "
                               f"got {filters}.")
    if drop_rate is None:
        drop_rate = [round(0.4 * b / max(blocks - 1, 1), 4) for b in range(blocks)]
    drops = _per_block(drop_rate, blocks, "drop_rate")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ModelOptionError(f"drop_path_rate must be in [0, 1), not {drop_path_rate}.")
    if not 0.0 <= global_drop_ratio <= 1.0:
        raise ModelOptionError(f"global_drop_ratio must be in [0, 1], not {global_drop_ratio}.")
    features = nn.Sequential()
    c = in_chans
    for b, (width, drop) in enumerate(zip(filters, drops), 1):
        features.add_module(f"block{b}", FractalBlock(c, int(width), columns, drop, drop_path_rate))
        c = int(width)
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())   # 1x1 after five pools at 32x32: a flatten
    head.add_module("fc", nn.Linear(c, num_classes))
    model = FractalNet(features, head, num_classes, columns, global_drop_ratio)
    return init_weights(model, linear_std=None)


_COMMON = dict(family="fractalnet", paper=PAPER, year=2017, input_size=(3, 32, 32),
               num_classes=10, params=None, macs=None)
register("fractalnet", **_COMMON,
         source="the paper gives no parameter count that this configuration reproduces",
         description="C=4, B=5: 40 convolutions on the deepest path (75 in all), "
                     "64-128-256-512-512 filters, CIFAR 32x32; local + global drop-path, "
                     "per-block dropout",
         columns=4)(fractalnet)
register("fractalnet20", **_COMMON,
         source="paper Table 1 'FractalNet (20 layers, 38.6M params)'; the described "
                "architecture counts 33.7M (see the module notes)",
         description="C=3, B=5: the paper's 20-layer CIFAR network (35 convolutions in all)",
         columns=3)(fractalnet)
