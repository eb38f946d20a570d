"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), as the crash course walks through it.

    input 1x32x32
    C1  conv 6 @ 5x5          -> 6x28x28     (5*5 + 1) * 6       =    156
    S2  subsample 2x2 / 2     -> 6x14x14
    C3  conv 16 @ 5x5         -> 16x10x10    (6*5*5 + 1) * 16    =  2,416
    S4  subsample 2x2 / 2     -> 16x5x5
    C5  conv 120 @ 5x5        -> 120x1x1     (16*5*5 + 1) * 120  = 48,120
    F6  full 84                              (120 + 1) * 84      = 10,164
    output full 10                           (84 + 1) * 10       =    850

Modern by default (max pooling, ReLU); ``original=True`` gives average-pool subsampling
and tanh. C3 is fully connected to S2 (the crash course's simplification of the paper's
connection table), and the output is a linear layer instead of Gaussian connections.
"""
from __future__ import annotations

from torch import nn

from ..layers import Conv2d
from .base import Network, flat_features, init_weights
from .registry import register

PAPER = "Gradient-Based Learning Applied to Document Recognition"


@register("lenet5", family="lenet", paper=PAPER, year=1998, input_size=(1, 32, 32),
          num_classes=10, params=61_706, macs=416_520,
          source="crash course's layer-by-layer counts (156 + 2,416 + 48,120 + 10,164 + 850); "
                 "mult-adds: 28*28*6*25 + 10*10*16*150 + 120*400 + 120*84 + 84*10")
def lenet5(num_classes: int = 10, in_chans: int = 1, img_size=32, original: bool = False) -> Network:
    pool = nn.AvgPool2d if original else nn.MaxPool2d
    act = nn.Tanh if original else (lambda: nn.ReLU(inplace=True))
    features = nn.Sequential()
    features.add_module("c1", Conv2d(in_chans, 6, 5))
    features.add_module("act1", act())
    features.add_module("s2", pool(2, 2))
    features.add_module("c3", Conv2d(6, 16, 5))
    features.add_module("act3", act())
    features.add_module("s4", pool(2, 2))
    features.add_module("c5", Conv2d(16, 120, 5))
    features.add_module("act5", act())
    head = nn.Sequential()
    head.add_module("flatten", nn.Flatten())
    head.add_module("f6", nn.Linear(flat_features(features, in_chans, img_size), 84))
    head.add_module("act6", act())
    head.add_module("output", nn.Linear(84, num_classes))
    return init_weights(Network(features, head, ["s2", "s4", "act5"], num_classes), None)
