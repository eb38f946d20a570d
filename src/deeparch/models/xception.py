"""Xception (Chollet 2017): Inception modules replaced by depthwise-separable convolutions.

Figure 5 of the paper, written as data below. Every convolution is followed by batch
norm; a separable convolution is a 3x3 depthwise conv then a 1x1 pointwise conv with
nothing in between (``mid_act`` tries the paper's Figure 10 alternatives):

    entry flow   conv 32 3x3/2 valid, ReLU; conv 64 3x3 valid, ReLU         299 -> 147
                 3 blocks: [ReLU] SepConv w, ReLU, SepConv w, MaxPool 3x3/2 -> 74, 37, 19
                           w = 128, 256, 728; shortcut: 1x1 conv w, stride 2
    middle flow  8 blocks: (ReLU, SepConv 728) x 3; identity shortcut          19x19x728
    exit flow    ReLU, SepConv 728, ReLU, SepConv 1024, MaxPool 3x3/2;          10x10x1024
                 shortcut: 1x1 conv 1024, stride 2
                 SepConv 1536, ReLU, SepConv 2048, ReLU                        10x10x2048
    global average pool, dropout 0.5 (ImageNet), logistic regression

The first entry block has no leading ReLU (its input has just been through one).
``tf_padding=True`` pools as TensorFlow's `same` (the uneven padding at the end: on an even
map every window moves by one pixel against PyTorch's ``padding=1``) and with
``bn_eps=1e-3`` this is keras.applications' Xception (``xception_keras``).
``residual=False`` removes every shortcut (the paper's Figure 9 comparison);
``middle_blocks`` changes how often the middle flow repeats (8 in the paper).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import ConvNormAct, GlobalAvgPool2d, SeparableConv2d, TFMaxPool2d
from .base import Network, init_weights
from .registry import register
from .resnet import set_bn_eps

PAPER = "Xception: Deep Learning with Depthwise Separable Convolutions"

ENTRY = ((128, 128), (256, 256), (728, 728))  # separable conv widths of each entry block
MIDDLE = (728, 728, 728)                      # one middle block, repeated middle_blocks times
EXIT = (728, 1024)                            # the exit block (then a max pool)
TAIL = (1536, 2048)                           # the last two separable convs, each + ReLU


def _sep_bn(in_ch: int, out_ch: int, mid_act: str | None) -> nn.Sequential:
    layer = nn.Sequential()
    layer.add_module("conv", SeparableConv2d(in_ch, out_ch, 3, mid_act=mid_act, bias=False))
    layer.add_module("bn", nn.BatchNorm2d(out_ch))
    return layer


class XceptionBlock(nn.Module):
    """(ReLU, SepConv, BN) per width, then an optional 3x3/2 max pool, plus the shortcut."""

    def __init__(self, in_ch: int, widths: tuple[int, ...], downsample: bool,
                 first_relu: bool = True, residual: bool = True, mid_act: str | None = None,
                 tf_padding: bool = False):
        super().__init__()
        self.body = nn.Sequential()
        c = in_ch
        for i, w in enumerate(widths, 1):
            if i > 1 or first_relu:  # not in place: the shortcut still reads the block input
                self.body.add_module(f"relu{i}", nn.ReLU())
            self.body.add_module(f"sep{i}", _sep_bn(c, w, mid_act))
            c = w
        if downsample:
            self.body.add_module("pool", TFMaxPool2d(3, 2) if tf_padding
                                 else nn.MaxPool2d(3, 2, padding=1))
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (ConvNormAct(in_ch, c, 1, 2 if downsample else 1, act=None)
                             if downsample or in_ch != c else nn.Identity())
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + self.shortcut(x) if self.shortcut is not None else out


@register("xception", family="xception", paper=PAPER, year=2017, input_size=(3, 299, 299),
          params=22_855_952, macs=8_403_630_000, exact=False,
          source="params: paper Table 3 (22,855,952; Keras: the same trainable params); "
                 "mult-adds: osmr/imgclsmob model table (8,403.63M, which also counts a few "
                 "non-convolution operations)",
          description="entry flow, 8 middle-flow blocks, exit flow; separable convs, residuals")
def xception(num_classes: int = 1000, in_chans: int = 3, middle_blocks: int = 8,
             residual: bool = True, mid_act: str | None = None,
             drop_rate: float = 0.5, tf_padding: bool = False, bn_eps: float = 1e-5) -> Network:
    if middle_blocks < 0:
        raise ModelOptionError(f"middle_blocks must be 0 or more, not {middle_blocks}.")
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), not {drop_rate}.")
    block_args = dict(residual=residual, mid_act=mid_act, tf_padding=tf_padding)
    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv1", ConvNormAct(in_chans, 32, 3, 2, padding=0))
    stem.add_module("conv2", ConvNormAct(32, 64, 3, 1, padding=0))
    features.add_module("stem", stem)
    entry, c = nn.Sequential(), 64
    for i, widths in enumerate(ENTRY, 1):
        entry.add_module(f"block{i}", XceptionBlock(c, widths, True, i > 1, **block_args))
        c = widths[-1]
    features.add_module("entry", entry)
    middle = nn.Sequential()
    for i in range(1, middle_blocks + 1):
        middle.add_module(f"block{i}", XceptionBlock(c, MIDDLE, False, **block_args))
    features.add_module("middle", middle)
    exit_flow = nn.Sequential()
    exit_flow.add_module("block1", XceptionBlock(c, EXIT, True, **block_args))
    c = EXIT[-1]
    for i, w in enumerate(TAIL, 1):
        exit_flow.add_module(f"sep{i}", _sep_bn(c, w, mid_act))
        exit_flow.add_module(f"relu{i}", nn.ReLU(inplace=True))
        c = w
    features.add_module("exit", exit_flow)
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(c, num_classes))
    model = Network(features, head, ["entry", "middle", "exit"], num_classes)
    return init_weights(set_bn_eps(model, bn_eps), linear_std=None)


register("xception_keras", family="xception", paper=PAPER, year=2017,
         input_size=(3, 299, 299), params=22_855_952, macs=8_357_403_496, exact=True,
         source="params: keras.applications Xception trainable parameters (exact); mult-adds: "
                "conv + fc at 299 (exact)",
         description="Xception as keras.applications builds it, reproducing its outputs from "
                     "its weight files: TensorFlow's `same` max pooling, batch-norm epsilon "
                     "1e-3", tf_padding=True, bn_eps=1e-3)(xception)
