"""SqueezeNet (Iandola et al. 2016): AlexNet-level accuracy with 50x fewer parameters.

A fire module squeezes its input with a 1x1 convolution (``s1x1`` filters), then expands
it with ``e1x1`` 1x1 filters and ``e3x3`` 3x3 filters side by side and concatenates the
two; every convolution is followed by a ReLU. The paper's Table 1 (v1.0):

    layer     output               s1x1  e1x1  e3x3
    conv1     111x111x96           96 filters 7x7/2
    maxpool1  55x55x96             3x3/2
    fire2     55x55x128            16    64    64
    fire3     55x55x128            16    64    64
    fire4     55x55x256            32   128   128
    maxpool4  27x27x256
    fire5     27x27x256            32   128   128
    fire6     27x27x384            48   192   192
    fire7     27x27x384            48   192   192
    fire8     27x27x512            64   256   256
    maxpool8  13x13x512
    fire9     13x13x512            64   256   256
    conv10    13x13x1000           1x1 (after 50% dropout), then global average pool

Those widths follow the paper's metaparameters (Section 5): fire module ``i`` (0 for fire2)
has ``e_i = base_e + incr_e * floor(i / freq)`` expand filters, of which ``pct_3x3`` are
3x3, and ``squeeze_ratio * e_i`` squeeze filters; the defaults (128, 128, 2, 0.5, 0.125)
give the table. v1.1 (the authors' repository) has a 3x3 conv1 with 64 filters and moves
the pools earlier (after conv1, fire3 and fire5): 2.4x less computation, same accuracy.
``bypass=True`` adds the paper's simple bypass (a residual connection around the fire
modules whose input and output widths match: fire3, 5, 7 and 9), which costs nothing.
Pools round up as in the reference Caffe models. The card's input is the paper's 224x224
(Table 1's 111x111 conv1 map comes from the 227x227 crops of the Caffe models: summary at
3,227,227 gives 832,667,936 / 387,747,520 mult-adds instead of 818,924,576 / 349,151,936).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import ConvNormAct, GlobalAvgPool2d
from .base import Network, init_weights
from .registry import register

PAPER = "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size"
REPO = "github.com/forresti/SqueezeNet"

# version: conv1 (filters, kernel), then the fire modules of each stage; a 3x3/2 max pool
# follows conv1 and opens every stage after the first
CFGS = {
    "1_0": dict(conv1=(96, 7), stages=((2, 3, 4), (5, 6, 7, 8), (9,))),
    "1_1": dict(conv1=(64, 3), stages=((2, 3), (4, 5), (6, 7, 8, 9))),
}


def _conv(in_ch: int, out_ch: int, k: int) -> ConvNormAct:
    return ConvNormAct(in_ch, out_ch, k, norm=None)


class Fire(nn.Module):
    """squeeze 1x1 -> (expand 1x1 | expand 3x3), concatenated; optional simple bypass."""

    def __init__(self, in_ch: int, s1x1: int, e1x1: int, e3x3: int, bypass: bool = False):
        super().__init__()
        self.squeeze = _conv(in_ch, s1x1, 1)
        self.expand1x1 = _conv(s1x1, e1x1, 1)
        self.expand3x3 = _conv(s1x1, e3x3, 3)
        self.out_channels = e1x1 + e3x3
        self.bypass = bypass and in_ch == self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        out = torch.cat([self.expand1x1(s), self.expand3x3(s)], 1)
        return out + x if self.bypass else out


def fire_widths(i: int, base_e: int, incr_e: int, freq: int, pct_3x3: float,
                squeeze_ratio: float) -> tuple[int, int, int]:
    """(s1x1, e1x1, e3x3) of fire module ``i`` (0 = fire2) from the paper's metaparameters."""
    e = base_e + incr_e * (i // freq)
    e3x3 = max(1, round(e * pct_3x3))
    return max(1, round(e * squeeze_ratio)), max(1, e - e3x3), e3x3


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, ceil_mode=True)


def squeezenet(version: str = "1_0", num_classes: int = 1000, in_chans: int = 3,
               base_e: int = 128, incr_e: int = 128, freq: int = 2, pct_3x3: float = 0.5,
               squeeze_ratio: float = 0.125, bypass: bool = False,
               drop_rate: float = 0.5) -> Network:
    if version not in CFGS:
        raise ModelOptionError(f"unknown SqueezeNet version {version!r}; choose 1_0 or 1_1.")
    if not 0.0 < pct_3x3 < 1.0:
        raise ModelOptionError(f"pct_3x3 must be between 0 and 1 (exclusive), not {pct_3x3}.")
    if not 0.0 < squeeze_ratio <= 1.0:
        raise ModelOptionError(f"squeeze_ratio must be in (0, 1], not {squeeze_ratio}.")
    if base_e < 2 or incr_e < 0 or freq < 1:
        raise ModelOptionError(
            f"base_e must be at least 2, incr_e at least 0 and freq at least 1 "
            f"(got {base_e}, {incr_e}, {freq}).")
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), not {drop_rate}.")
    cfg = CFGS[version]
    width, k = cfg["conv1"]
    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv1", ConvNormAct(in_chans, width, k, 2, padding=0, norm=None))
    stem.add_module("pool1", _pool())
    features.add_module("stem", stem)
    c = width
    for s, fires in enumerate(cfg["stages"], 1):
        stage = nn.Sequential()
        if s > 1:
            stage.add_module("pool", _pool())
        for n in fires:
            widths = fire_widths(n - 2, base_e, incr_e, freq, pct_3x3, squeeze_ratio)
            stage.add_module(f"fire{n}", Fire(c, *widths, bypass=bypass))
            c = stage[-1].out_channels
        features.add_module(f"stage{s}", stage)
    head = nn.Sequential()
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("conv10", nn.Conv2d(c, num_classes, 1))  # the classifier is a 1x1 conv
    head.add_module("relu", nn.ReLU(inplace=True))
    head.add_module("pool", GlobalAvgPool2d())
    model = init_weights(Network(features, head, None, num_classes))
    if not any(p.is_meta for p in model.parameters()):
        nn.init.normal_(head.conv10.weight, 0.0, 0.01)  # the reference model's conv10 filler
    return model


_COMMON = dict(family="squeezenet", paper=PAPER, year=2016, input_size=(3, 224, 224), exact=False)
register("squeezenet1_0", params=1_248_424, macs=820_000_000,
         source="params: paper Table 1 (1,248,424 before compression); mult-adds: torchvision "
                "(0.82 GFLOPS at 224x224)",
         description="SqueezeNet v1.0: 7x7 conv1 with 96 filters, eight fire modules, conv10",
         version="1_0", **_COMMON)(squeezenet)
register("squeezenet1_1", params=1_235_496, macs=350_000_000,
         source=f"params: the {REPO} v1.1 reference model (torchvision: 1,235,496); "
                "mult-adds: torchvision (0.35 GFLOPS at 224x224)",
         description="SqueezeNet v1.1: 3x3 conv1 with 64 filters, earlier pools, "
                     "2.4x less computation than v1.0",
         version="1_1", **_COMMON)(squeezenet)
