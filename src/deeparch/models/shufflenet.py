"""ShuffleNet v1 (Zhang et al. 2017) and ShuffleNet v2 (Ma et al. 2018).

v1, Table 1: conv1 3x3/2 (24 channels), max pool 3x3/2, then three stages of ShuffleNet
units (Figure 2): 1x1 *group* conv, BN, ReLU, channel shuffle, 3x3 depthwise conv, BN,
1x1 group conv, BN; added to the input (stride 1) or concatenated with a 3x3/2 average
pool of it (stride 2, the first unit of a stage), then ReLU. The bottleneck is a quarter
of the unit's output width; the first 1x1 conv of stage 2 is not grouped (its input has
only 24 channels). ``groups`` is g of Table 1 and ``width_mult`` the scale factor s of
Table 2 ("ShuffleNet s x": every layer's width times s, so the cost about s^2 times).

v2, Table 5: conv1 3x3/2 (24), max pool 3x3/2, three stages of units (Figure 3c/d) and
conv5 1x1. A unit splits the channels in two halves (stride 1): one passes unchanged, the
other goes 1x1 conv, BN, ReLU, 3x3 depthwise, BN, 1x1 conv, BN, ReLU; the two are
concatenated and shuffled with 2 groups. A stride-2 unit sends the whole input down both
branches (the left one: depthwise 3x3/2, BN, 1x1 conv, BN, ReLU), doubling the width.

Counting (mult-adds of convolutions and the FC, which the papers call FLOPs):

* v1, Table 1's complexities (143/140/137/133/137M for g = 1/2/3/4/8) are the convolutions
  alone, without the FC: ours are 142.50, 140.04, 136.50, 133.25, 136.83M. With the FC (as
  Megvii's reference table counts) g=3 gives 37.6/137.5/292.4/524.0M at 0.5/1/1.5/2x and
  g=8 40.5/138.4/290.2/521.9M (published: 38/138/292/524 and 40/138/290/522).
* v2 follows torchvision's layout, whose weights deeparch can load: a stride-2 unit gives
  each branch half the output width. The authors' code gives the left branch the *input*
  width and the right one the rest, which is where Table 5's 146/299/591M come from (ours
  144.9/295.8/583.3M; 0.5x is the same either way, 40.5M against a printed 41).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import ChannelShuffle, ConvNormAct, GlobalAvgPool2d
from .base import Network, init_weights
from .registry import SeedFigure, register

V1_PAPER = ("ShuffleNet: An Extremely Efficient Convolutional Neural Network for "
            "Mobile Devices")
V2_PAPER = "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design"

STEM = 24
REPEATS = (4, 8, 4)          # units in stage2..stage4: one stride-2 unit, then stride 1

# v1, Table 1: output channels of stage2..stage4 (ShuffleNet 1x) for each number of groups.
V1_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}

# v2, Table 5: output channels of stage2..stage4 and conv5 for each size.
V2_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def _stem(in_chans: int, channels: int) -> nn.Sequential:
    stem = nn.Sequential()
    stem.add_module("conv1", ConvNormAct(in_chans, channels, 3, 2, 1))
    stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
    return stem


def _head(channels: int, num_classes: int, drop_rate: float, bias: bool) -> nn.Sequential:
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), got {drop_rate!r}.")
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(channels, num_classes, bias=bias))
    return head


class ShuffleV1Unit(nn.Module):
    """Figure 2 (b) with stride 1, (c) with stride 2."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int, mid: int,
                 group_first: bool = True):
        super().__init__()
        self.stride = stride
        branch = out_ch - in_ch if stride == 2 else out_ch
        g1 = groups if group_first else 1
        if mid < 1 or branch < 1:
            raise ModelOptionError("width_mult is too small: a ShuffleNet unit would get no "
                                   "channels; use 0.25 or more.")
        for what, c in (("bottleneck", mid), ("output branch", branch)):
            if c % groups:
                raise ModelOptionError(
                    f"groups={groups} does not divide the {c} channels of a ShuffleNet "
                    f"unit's {what}; choose groups and width_mult so that it does "
                    f"(Table 1 widths with width_mult 0.5, 1, 1.5 or 2 for g=3 or 8).")
        self.gconv1 = ConvNormAct(in_ch, mid, 1, groups=g1)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dwconv = ConvNormAct(mid, mid, 3, stride, 1, groups=mid, act=None)
        self.gconv2 = ConvNormAct(mid, branch, 1, groups=groups, act=None)
        if stride == 2:
            self.shortcut = nn.AvgPool2d(3, 2, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gconv2(self.dwconv(self.shuffle(self.gconv1(x))))
        if self.stride == 2:
            return self.relu(torch.cat([self.shortcut(x), out], 1))
        return self.relu(x + out)


def v1_stem_width(width_mult: float, stage2: int, groups: int) -> int:
    """conv1's width at scale ``width_mult`` (the paper does not say): 24 halved or doubled
    with the scale's power of two, never below 12 -- 12 at 0.5x, 24 at 1x and 1.5x, 48 at 2x
    as in Megvii's reference code, 12 at 0.25x, which gives Table 2's 13 MFLOPs -- then
    raised until the first unit's branch (``stage2 - conv1``) splits into ``groups``."""
    stem = max(12, int(STEM * 2.0 ** math.floor(math.log2(width_mult))))
    while (stage2 - stem) % groups:
        stem += 1
    return stem


def shufflenet_v1(num_classes: int = 1000, in_chans: int = 3, groups: int = 3,
                  width_mult: float = 1.0, drop_rate: float = 0.0) -> Network:
    """ShuffleNet v1 with ``groups`` g in {1, 2, 3, 4, 8} and scale factor ``width_mult``."""
    if groups not in V1_CHANNELS:
        raise ModelOptionError(f"groups must be one of {sorted(V1_CHANNELS)} (Table 1), "
                               f"got {groups!r}.")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) \
            or not width_mult > 0:
        raise ModelOptionError(f"width_mult (the scale factor s) must be a number > 0, got "
                               f"{width_mult!r}; the paper uses 0.25, 0.5, 1, 1.5 or 2.")
    features = nn.Sequential()
    c = v1_stem_width(width_mult, int(V1_CHANNELS[groups][0] * width_mult), groups)
    features.add_module("stem", _stem(in_chans, c))
    for s, (repeats, out) in enumerate(zip(REPEATS, V1_CHANNELS[groups]), 2):
        out = int(out * width_mult)
        stage = nn.Sequential()
        for i in range(repeats):
            stage.add_module(f"unit{i + 1}", ShuffleV1Unit(
                c, out, 2 if i == 0 else 1, groups, out // 4, group_first=(s, i) != (2, 0)))
            c = out
        features.add_module(f"stage{s}", stage)
    # the reference code's classifier has no bias (its 5.4M at 2x, g=3, counts none)
    head = _head(c, num_classes, drop_rate, bias=False)
    return init_weights(Network(features, head, None, num_classes))


class ShuffleV2Unit(nn.Module):
    """Figure 3 (c) with stride 1 (channel split), (d) with stride 2 (no split)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        half = out_ch // 2
        if stride == 2:
            self.branch1 = nn.Sequential()
            self.branch1.add_module("dwconv", ConvNormAct(in_ch, in_ch, 3, 2, 1, groups=in_ch,
                                                          act=None))
            self.branch1.add_module("conv", ConvNormAct(in_ch, half, 1))
        elif in_ch != out_ch:
            raise ModelOptionError(f"a stride-1 ShuffleNet v2 unit keeps its width; got "
                                   f"{in_ch} -> {out_ch}.")
        self.branch2 = nn.Sequential()
        self.branch2.add_module("conv1", ConvNormAct(in_ch if stride == 2 else half, half, 1))
        self.branch2.add_module("dwconv", ConvNormAct(half, half, 3, stride, 1, groups=half,
                                                      act=None))
        self.branch2.add_module("conv2", ConvNormAct(half, half, 1))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        else:
            keep, go = x.chunk(2, dim=1)
            out = torch.cat([keep, self.branch2(go)], 1)
        return self.shuffle(out)


def shufflenet_v2(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                  drop_rate: float = 0.0) -> Network:
    """ShuffleNet v2 ``width_mult``x, one of Table 5's sizes 0.5, 1, 1.5, 2."""
    if width_mult not in V2_CHANNELS:
        raise ModelOptionError(f"width_mult must be one of {sorted(V2_CHANNELS)} (the sizes "
                               f"of Table 5), got {width_mult!r}.")
    *widths, last = V2_CHANNELS[width_mult]
    features = nn.Sequential()
    c = STEM
    features.add_module("stem", _stem(in_chans, c))
    for s, (repeats, out) in enumerate(zip(REPEATS, widths), 2):
        stage = nn.Sequential()
        for i in range(repeats):
            stage.add_module(f"unit{i + 1}", ShuffleV2Unit(c, out, 2 if i == 0 else 1))
            c = out
        features.add_module(f"stage{s}", stage)
    features.add_module("conv5", ConvNormAct(c, last, 1))
    head = _head(last, num_classes, drop_rate, bias=True)
    return init_weights(Network(features, head, None, num_classes))


# ---- the registered variants -------------------------------------------------------------
register(
    "shufflenet_v1", family="shufflenet", paper=V1_PAPER, year=2017,
    input_size=(3, 224, 224), params=1_870_000, macs=137_000_000, exact=False,
    source="params: mmpretrain ShuffleNetV1 1x (1.87M; Megvii: 1.9M); mult-adds: paper "
           "Table 1, g=3: 137M (convolutions; Table 2 rounds 1x to 140M)",
    description="ShuffleNet 1x with g=3 groups",
    seed_figures=(SeedFigure("macs", 137e6, 0.5e6, "ShuffleNet 1x (g = 3): complexity 137M",
                             "ShuffleNet paper, Table 1"),),
    groups=3, width_mult=1.0,
)(shufflenet_v1)

# params: torchvision's exact counts; mult-adds: the exact conv + FC sum at 224x224
# (torchvision rounds them to 0.04 / 0.14 / 0.30 / 0.58 GFLOPS); Table 5 prints
# 41 / 146 / 299 / 591M FLOPs for the authors' stride-2 layout (see the top of this file).
_V2_VARIANTS = [
    ("shufflenet_v2_x0_5", 0.5, 1_366_792, 40_476_448, 41),
    ("shufflenet_v2_x1_0", 1.0, 2_278_604, 144_907_992, 146),
    ("shufflenet_v2_x1_5", 1.5, 3_503_624, 295_759_392, 299),
    ("shufflenet_v2_x2_0", 2.0, 7_393_996, 583_253_464, 591),
]
for _name, _wm, _params, _macs, _paper_m in _V2_VARIANTS:
    register(
        _name, family="shufflenet", paper=V2_PAPER, year=2018, input_size=(3, 224, 224),
        params=_params, macs=_macs, exact=True,
        source=(f"params: torchvision (exact); mult-adds: conv + FC arithmetic; paper "
                f"Table 5: {_paper_m}M FLOPs with the authors' stride-2 branch widths"),
        description=f"ShuffleNet v2 {_wm}x (torchvision layout)",
        width_mult=_wm,
    )(shufflenet_v2)
