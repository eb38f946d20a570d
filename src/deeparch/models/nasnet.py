"""NASNet-A (Zoph, Vasudevan, Shlens, Le 2018), built from its searched normal and reduction cells.

Each cell reads two hidden states: ``h``, its input after ReLU -> 1x1 conv -> BN, and
``p``, the previous cell's output (brought to this cell's size: a ReLU -> 1x1 conv -> BN,
or a factorized reduction when ``p`` is twice as large). Five blocks each add two
operations; the unused states are concatenated. The cells of the paper's Figure 4:

    normal cell  (stride 1)                   reduction cell (ops on h, p at stride 2)
    b1 = sep5x5(h)  + sep3x3(p)               b1 = sep5x5(h)  + sep7x7(p)
    b2 = sep5x5(p)  + sep3x3(p)               b2 = max3x3(h)  + sep7x7(p)
    b3 = avg3x3(h)  + p                       b3 = avg3x3(h)  + sep5x5(p)
    b4 = avg3x3(p)  + avg3x3(p)               b4 = b2         + avg3x3(b1)
    b5 = sep3x3(h)  + h                       b5 = sep3x3(b1) + max3x3(h)
    out = concat(p, b1..b5): 6 x filters      out = concat(b2..b5): 4 x filters

``sepKxK`` is (ReLU -> depthwise-separable KxK -> BN) twice. The network: a stem, then three
stacks of ``N`` normal cells with a reduction cell between stacks, filters doubling at each
reduction. "N @ F" (the paper's notation, e.g. 4 @ 1056) gives N and the penultimate
filters F = 24 x the first stack's filters (6 concatenated blocks x 4 after two doublings).
The ImageNet stem is a 3x3/2 conv and two reduction cells (at 1/4 and 1/2 of the filters);
the CIFAR stem a single 3x3 conv. Counts exclude the auxiliary head used in training.

The sequential ``features`` thread the second state across stages: each stage keeps its
second-to-last map for the next stage, so run the stages in order (``features(x)`` or
``features_only``).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import DropPath, GlobalAvgPool2d, SeparableConv2d
from .base import Network, init_weights
from .registry import SeedFigure, register

PAPER = "Learning Transferable Architectures for Scalable Image Recognition"
SLIDES = "Advanced deep learning for computer vision slides, NASNet CIFAR-10 table"

# (operation, input state) pairs of the five blocks, and the states concatenated at the end
NORMAL_A = ((("sep5", "h"), ("sep3", "p")),
            (("sep5", "p"), ("sep3", "p")),
            (("avg3", "h"), ("identity", "p")),
            (("avg3", "p"), ("avg3", "p")),
            (("sep3", "h"), ("identity", "h")))
NORMAL_A_OUT = ("p", "b1", "b2", "b3", "b4", "b5")
REDUCTION_A = ((("sep5", "h"), ("sep7", "p")),
               (("max3", "h"), ("sep7", "p")),
               (("avg3", "h"), ("sep5", "p")),
               (("identity", "b2"), ("avg3", "b1")),
               (("sep3", "b1"), ("max3", "h")))
REDUCTION_A_OUT = ("b2", "b3", "b4", "b5")

BN = dict(eps=1e-3)   # TF-slim / Keras batch-norm epsilon


class SepStack(nn.Sequential):
    """ReLU -> separable KxK (stride) -> BN -> ReLU -> separable KxK -> BN."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int):
        super().__init__()
        self.act1 = nn.ReLU()
        self.sep1 = SeparableConv2d(in_ch, out_ch, k, stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch, **BN)
        self.act2 = nn.ReLU(inplace=True)
        self.sep2 = SeparableConv2d(out_ch, out_ch, k, 1, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, **BN)


class ReluConvBn(nn.Sequential):
    """ReLU -> KxK conv -> BN (1x1 by default: how a cell adapts a state's channels)."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 1, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride, dilation * (k // 2), dilation,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_ch, **BN)


class FactorizedConv(nn.Sequential):
    """ReLU -> 1xK conv -> Kx1 conv -> BN: the search list's "1x3 then 3x1" (and 1x7 / 7x1)."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int):
        super().__init__()
        self.act = nn.ReLU()
        self.conv_1xk = nn.Conv2d(in_ch, out_ch, (1, k), (1, stride), (0, k // 2), bias=False)
        self.conv_kx1 = nn.Conv2d(out_ch, out_ch, (k, 1), (stride, 1), (k // 2, 0), bias=False)
        self.bn = nn.BatchNorm2d(out_ch, **BN)


class FactorizedReduce(nn.Module):
    """Halve a map's size without losing the odd pixels: two 1x1 convs at stride 2, the second
    on the map shifted by one pixel, concatenated, then BN."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.act = nn.ReLU()
        self.path1 = nn.Sequential()
        self.path1.add_module("pool", nn.AvgPool2d(1, 2))
        self.path1.add_module("conv", nn.Conv2d(in_ch, out_ch // 2, 1, bias=False))
        self.path2 = nn.Sequential()
        self.path2.add_module("shift", nn.ZeroPad2d((-1, 1, -1, 1)))
        self.path2.add_module("pool", nn.AvgPool2d(1, 2))
        self.path2.add_module("conv", nn.Conv2d(in_ch, out_ch - out_ch // 2, 1, bias=False))
        self.bn = nn.BatchNorm2d(out_ch, **BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.bn(torch.cat([self.path1(x), self.path2(x)], 1))


# The operations a block may apply (the NASNet paper's search list, section 3):
#   identity, conv1x3_3x1 / conv1x7_7x1 (1xK then Kx1 conv), dil3 (3x3 conv, dilation 2),
#   avg3, max3, max5, max7 (pooling), conv1, conv3, sep3, sep5, sep7 (depthwise-separable)
OPERATIONS = ("identity", "conv1x3_3x1", "conv1x7_7x1", "dil3", "avg3", "max3", "max5",
              "max7", "conv1", "conv3", "sep3", "sep5", "sep7")
# operations whose output width is `filters` whatever their input's
_RESHAPING = ("conv1x3_3x1", "conv1x7_7x1", "dil3", "conv1", "conv3", "sep3", "sep5", "sep7")


def _operation(name: str, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """One operation from ``in_ch`` to ``out_ch`` channels. Convolutions are ReLU -> conv ->
    BN; pooling and identity keep the width, so a state of another width first goes through
    ReLU -> 1x1 conv -> BN, and identity at stride 2 is a factorized reduction (NASNet-A's
    own cells never need either)."""
    if name.startswith("sep"):
        return SepStack(in_ch, out_ch, int(name[3:]), stride)
    if name in ("conv1", "conv3"):
        return ReluConvBn(in_ch, out_ch, int(name[4:]), stride)
    if name == "dil3":
        return ReluConvBn(in_ch, out_ch, 3, stride, dilation=2)
    if name in ("conv1x3_3x1", "conv1x7_7x1"):
        return FactorizedConv(in_ch, out_ch, int(name[6]), stride)
    if name == "identity":
        if stride > 1:
            return FactorizedReduce(in_ch, out_ch)
        return nn.Identity() if in_ch == out_ch else ReluConvBn(in_ch, out_ch)
    if name == "avg3":
        pool: nn.Module = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    elif name in ("max3", "max5", "max7"):
        k = int(name[3])
        pool = nn.MaxPool2d(k, stride, k // 2)
    else:
        raise ModelOptionError(f"unknown NASNet operation {name!r}; the operations are "
                               f"{', '.join(OPERATIONS)}.")
    if in_ch == out_ch:
        return pool
    return nn.Sequential(ReluConvBn(in_ch, out_ch), pool)


class Block(nn.Module):
    """One block of a cell: ``left(state) + right(state)`` (``combine`` 'add'), or the two
    concatenated (``combine`` 'concat'), with drop-path on the operations."""

    def __init__(self, spec, channels: dict[str, int], filters: int, stride: int, drop_path: float,
                 combine: str = "add"):
        super().__init__()
        (self.left_op, self.left_in), (self.right_op, self.right_in) = spec
        if combine not in ("add", "concat"):
            raise ModelOptionError(f"a block combines by 'add' or 'concat', not {combine!r}.")
        self.combine = combine
        for side, (op, src) in zip(("left", "right"), spec):
            s = stride if src in ("h", "p") else 1
            self.add_module(side, _operation(op, channels[src], filters, s))
        self.drop = DropPath(drop_path) if drop_path > 0 else None
        self.out_channels = filters * (2 if combine == "concat" else 1)

    def _run(self, op: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
        y = op(x)
        return self.drop(y) if self.drop is not None and name != "identity" else y

    def forward(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        left = self._run(self.left, self.left_op, states[self.left_in])
        right = self._run(self.right, self.right_op, states[self.right_in])
        if self.combine == "concat":
            return torch.cat([left, right], 1)
        return left + right


class Cell(nn.Module):
    """A normal or reduction cell. ``prev_ch`` None marks the first cell (no previous state:
    it reads its input twice); ``prev_scale`` 2 a previous state twice this cell's size.

    ``spec`` is the cell's blocks, ``((op, input), (op, input))`` each (NASNet-A's by
    default), ``outputs`` the states concatenated at the end, ``combines`` each block's
    'add' or 'concat' (all 'add' by default). In a reduction cell an input state (h, p)
    among the outputs is brought to the reduced size by a factorized reduction."""

    def __init__(self, reduction: bool, in_ch: int, prev_ch: int | None, prev_scale: int,
                 filters: int, drop_path: float = 0.0, spec=None, outputs=None, combines=None):
        super().__init__()
        if spec is None:
            spec, outputs = ((REDUCTION_A, REDUCTION_A_OUT) if reduction
                             else (NORMAL_A, NORMAL_A_OUT))
        self.outputs = tuple(outputs)
        combines = tuple(combines) if combines is not None else ("add",) * len(spec)
        self.num_blocks = len(spec)
        self.reduction = reduction
        p_raw = in_ch if prev_ch is None else prev_ch
        # a first reduction cell whose p only feeds width-changing operations (NASNet-A's
        # stem cell: separable convs) keeps p's width; everywhere else p is brought to
        # `filters` channels, since blocks add and concatenate it
        p_free = (prev_ch is None and reduction and "p" not in self.outputs
                  and all(op in _RESHAPING for block in spec for op, src in block if src == "p"))
        if prev_scale == 2:
            self.prev = FactorizedReduce(p_raw, filters)
        elif p_raw != filters and not p_free:
            self.prev = ReluConvBn(p_raw, filters)
        else:
            self.prev = nn.Identity()
        p_ch = p_raw if isinstance(self.prev, nn.Identity) else filters
        self.conv_1x1 = ReluConvBn(in_ch, filters)
        channels = {"h": filters, "p": p_ch}
        for i, (block, combine) in enumerate(zip(spec, combines), 1):
            for _, src in block:
                if src not in channels:
                    raise ModelOptionError(f"block {i} of a NASNet cell reads {src!r}, which is "
                                           f"not h, p or an earlier block.")
            mod = Block(block, channels, filters, 2 if reduction else 1, drop_path, combine)
            self.add_module(f"block{i}", mod)
            channels[f"b{i}"] = mod.out_channels
        missing = [k for k in self.outputs if k not in channels]
        if missing or not self.outputs:
            raise ModelOptionError(f"a NASNet cell concatenates states of h, p, b1..b{len(spec)}, "
                                   f"not {list(self.outputs)}.")
        width = 0
        for k in self.outputs:
            if reduction and k in ("h", "p"):
                self.add_module(f"reduce_{k}", FactorizedReduce(channels[k], channels[k]))
            width += channels[k]
        self.out_channels = width

    def forward(self, x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        states = {"h": self.conv_1x1(x), "p": self.prev(x if p is None else p)}
        for i in range(1, self.num_blocks + 1):
            states[f"b{i}"] = getattr(self, f"block{i}")(states)
        outs = [getattr(self, f"reduce_{k}")(states[k])
                if self.reduction and k in ("h", "p") else states[k] for k in self.outputs]
        return torch.cat(outs, 1)


_NOT_RUN = object()


class CellStage(nn.Module):
    """Cells run in sequence, each on the two previous outputs; the second-to-last output is
    kept for the next stage (``source`` is the stage before, not a child module)."""

    def __init__(self, source: "CellStage | None", skip_reduction: bool = False):
        super().__init__()
        object.__setattr__(self, "_source", source)
        if source is not None:
            source._feeds_next = True
        self._feeds_next = False       # the last stage keeps nothing
        self.skip_reduction = skip_reduction
        self._carry = _NOT_RUN

    def take_carry(self):
        carry, self._carry = self._carry, _NOT_RUN
        if carry is _NOT_RUN:
            raise ModelOptionError("a NASNet stage ran before the stage that feeds it; run the "
                                   "stages in order (model.features(x) or features_only).")
        return carry

    def run_cells(self, x: torch.Tensor, p):
        for name, cell in self.named_children():
            if not isinstance(cell, Cell):
                continue
            out = cell(x, p)
            if cell.reduction and self.skip_reduction and not name.startswith("cell_stem"):
                x = out                       # the next cell still reads the pre-reduction p
            else:
                x, p = out, x
        self._carry = p if self._feeds_next else _NOT_RUN
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_cells(x, self._source.take_carry())


class Stem(CellStage):
    """3x3 conv -> BN (stride 2 and ``valid`` for ImageNet, stride 1 for CIFAR), then stem cells."""

    def __init__(self, in_chans: int, out_ch: int, imagenet: bool):
        super().__init__(None)
        self.conv0 = nn.Conv2d(in_chans, out_ch, 3, 2 if imagenet else 1, 0 if imagenet else 1,
                               bias=False)
        self.bn0 = nn.BatchNorm2d(out_ch, **BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_cells(self.bn0(self.conv0(x)), None)


def parse_nasnet_notation(text: str) -> tuple[int, int]:
    """``'6 @ 768'`` -> ``(6, 768)``: N normal cells per stack @ F penultimate filters."""
    m = re.fullmatch(r"\s*(\d+)\s*@\s*(\d+)\s*", str(text))
    if not m:
        raise ModelOptionError(f"NASNet configuration {text!r} is not 'N @ F' (e.g. '4 @ 1056').")
    return int(m.group(1)), int(m.group(2))


def nasnet_a(num_cells: int = 4, penultimate_filters: int = 1056, config: str | None = None,
             stem: str = "imagenet", stem_filters: int = 32, skip_reduction: bool = False,
             num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5,
             drop_path_rate: float = 0.0, normal_cell=None, reduction_cell=None) -> Network:
    """NASNet-A "N @ F": ``num_cells`` N normal cells per stack, ``penultimate_filters`` F
    (or both as ``config='N @ F'``); ``stem`` 'imagenet' or 'cifar'; ``drop_path_rate`` the
    drop-path probability of the last cell (earlier cells scaled down linearly).

    ``normal_cell`` / ``reduction_cell`` replace NASNet-A's cells (the search space
    ``deeparch.search.space('nasnet')`` builds through them): ``(blocks, outputs)`` or
    ``(blocks, outputs, combines)`` as :class:`Cell` takes them. F / 24 stays the first
    stack's filters per operation, whatever the cells concatenate."""
    if config is not None:
        num_cells, penultimate_filters = parse_nasnet_notation(config)
    if not isinstance(num_cells, int) or num_cells < 1:
        raise ModelOptionError(f"num_cells (N) must be a whole number >= 1, not {num_cells!r}.")
    if not isinstance(penultimate_filters, int) or penultimate_filters < 24 \
            or penultimate_filters % 24:
        raise ModelOptionError(
            f"penultimate_filters (F) must be a positive multiple of 24 (6 blocks x 4 after two "
            f"doublings), not {penultimate_filters!r}; e.g. 768, 1056, 4032.")
    if stem not in ("imagenet", "cifar"):
        raise ModelOptionError(f"stem must be 'imagenet' or 'cifar', not {stem!r}.")
    if stem_filters < 1:
        raise ModelOptionError(f"stem_filters must be >= 1, not {stem_filters}.")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ModelOptionError(f"drop_path_rate must be in [0, 1), not {drop_path_rate}.")
    filters = penultimate_filters // 24
    imagenet = stem == "imagenet"

    # the plan: (stage, cell name, reduction?, filters)
    plan = []
    if imagenet:
        plan += [("stem", "cell_stem_0", True, filters // 4),
                 ("stem", "cell_stem_1", True, filters // 2)]
    n = 0
    for s, f in enumerate((filters, 2 * filters, 4 * filters), 1):
        if s > 1:
            plan.append((f"stage{s}", f"reduction_cell_{s - 2}", True, f))
        for _ in range(num_cells):
            plan.append((f"stage{s}", f"cell_{n}", False, f))
            n += 1

    stem_mod = Stem(in_chans, stem_filters, imagenet)
    stages = {"stem": stem_mod}
    x, p = (stem_filters, 1), None          # (channels, scale) of the last two outputs
    for i, (stage, name, reduction, f) in enumerate(plan):
        if stage not in stages:
            stages[stage] = CellStage(list(stages.values())[-1], skip_reduction)
        prev_scale = 1 if p is None or p[1] == x[1] else 2
        custom = reduction_cell if reduction else normal_cell
        cell = Cell(reduction, x[0], None if p is None else p[0], prev_scale, f,
                    drop_path_rate * (i + 1) / len(plan), *(custom or ()))
        stages[stage].add_module(name, cell)
        out = (cell.out_channels, x[1] * 2 if reduction else x[1])
        if reduction and skip_reduction and stage != "stem":
            x = out
        else:
            x, p = out, x

    features = nn.Sequential()
    for name, mod in stages.items():
        features.add_module(name, mod)
    head = nn.Sequential()
    head.add_module("act", nn.ReLU())
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(x[0], num_classes))
    return init_weights(Network(features, head, None, num_classes), linear_std=None)


_COMMON = dict(family="nasnet", paper=PAPER, year=2018)
register("nasnet_a_mobile", **_COMMON, input_size=(3, 224, 224), params=5_289_978,
         macs=564_000_000, exact=False,
         source="params: Keras NASNetMobile trainable params, exact (the paper's Table 2: "
                "5.3M); mult-adds: the paper's Table 2, 564M (rounded)",
         description="NASNet-A (4 @ 1056), ImageNet 224x224", config="4 @ 1056")(nasnet_a)
register("nasnet_a_large", **_COMMON, input_size=(3, 331, 331), params=88_753_150,
         macs=23_800_000_000, exact=False,
         source="params: Keras NASNetLarge trainable params, exact (the paper's Table 2: "
                "88.9M); mult-adds: the paper's Table 2, 23.8B (rounded)",
         description="NASNet-A (6 @ 4032), ImageNet 331x331", config="6 @ 4032",
         stem_filters=96, skip_reduction=True)(nasnet_a)
register("nasnet_a_cifar", **_COMMON, input_size=(3, 32, 32), num_classes=10,
         params=3_300_000, macs=None, exact=False,
         source="the paper's Table 1 (CIFAR-10), 3.3M (rounded)",
         seed_figures=(SeedFigure("params", 3.3e6, 0.05e6,
                                  "NASNet-A (6 @ 768) - 3.3M 3.41", SLIDES),),
         description="NASNet-A (6 @ 768), CIFAR-10 32x32 (3x3 conv stem)",
         config="6 @ 768", stem="cifar", stem_filters=96, drop_rate=0.0)(nasnet_a)
register("nasnet_a_cifar_large", **_COMMON, input_size=(3, 32, 32), num_classes=10,
         params=None, macs=None,
         source="the paper's Table 1 (CIFAR-10) gives 27.6M; these cells at 7 @ 2304 count "
                "32.4M, though the same construction gives 6 @ 768 its 3.3M",
         description="NASNet-A (7 @ 2304), CIFAR-10 32x32 (3x3 conv stem)",
         config="7 @ 2304", stem="cifar", stem_filters=288, drop_rate=0.0)(nasnet_a)
