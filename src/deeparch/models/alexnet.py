"""AlexNet (Krizhevsky, Sutskever, Hinton 2012), as the slides' table lays it out.

    [227x227x3]  INPUT
    [55x55x96]   CONV1: 96 11x11 filters at stride 4, pad 0
    [27x27x96]   MAX POOL1: 3x3 filters at stride 2
    [27x27x96]   NORM1: local response normalisation
    [27x27x256]  CONV2: 256 5x5 filters at stride 1, pad 2
    [13x13x256]  MAX POOL2: 3x3 filters at stride 2
    [13x13x256]  NORM2
    [13x13x384]  CONV3: 384 3x3 filters at stride 1, pad 1
    [13x13x384]  CONV4: 384 3x3 filters at stride 1, pad 1
    [13x13x256]  CONV5: 256 3x3 filters at stride 1, pad 1
    [6x6x256]    MAX POOL3: 3x3 filters at stride 2
    [4096] FC6, [4096] FC7 (dropout 0.5 on both), [1000] FC8

``groups=2`` restores the paper's two-GPU split: CONV2, CONV4 and CONV5 only see the
feature maps on their own GPU, which brings the total from 62,378,344 to the paper's
60,965,224 ("60 million parameters").
"""
from __future__ import annotations

from torch import nn

from ..layers import Conv2d, LocalResponseNorm
from .base import Network, flat_features, init_weights
from .registry import SeedFigure, register

PAPER = "ImageNet Classification with Deep Convolutional Neural Networks"
SLIDES = "Deep Architectures slides, AlexNet"


@register("alexnet", family="alexnet", paper=PAPER, year=2012, input_size=(3, 227, 227),
          params=62_378_344, macs=1_135_256_096,
          source="sum of the slides' AlexNet table (one tower); the paper's two-GPU version "
                 "(groups=2) has 60,965,224",
          seed_figures=(SeedFigure("params", 60e6, 0.5e6, "Total of 60M parameters!", SLIDES),),
          description="the slides' single-tower AlexNet with LRN; groups=2 for the paper's split")
def alexnet(num_classes: int = 1000, in_chans: int = 3, img_size=227, groups: int = 1,
            drop_rate: float = 0.5, lrn: bool = True) -> Network:
    def norm():
        return LocalResponseNorm(5, 1e-4, 0.75, 2.0) if lrn else nn.Identity()

    f = nn.Sequential()
    f.add_module("conv1", Conv2d(in_chans, 96, 11, stride=4, padding=0))
    f.add_module("relu1", nn.ReLU(inplace=True))
    f.add_module("pool1", nn.MaxPool2d(3, 2))
    f.add_module("norm1", norm())
    f.add_module("conv2", Conv2d(96, 256, 5, padding=2, groups=groups))
    f.add_module("relu2", nn.ReLU(inplace=True))
    f.add_module("pool2", nn.MaxPool2d(3, 2))
    f.add_module("norm2", norm())
    f.add_module("conv3", Conv2d(256, 384, 3, padding=1))
    f.add_module("relu3", nn.ReLU(inplace=True))
    f.add_module("conv4", Conv2d(384, 384, 3, padding=1, groups=groups))
    f.add_module("relu4", nn.ReLU(inplace=True))
    f.add_module("conv5", Conv2d(384, 256, 3, padding=1, groups=groups))
    f.add_module("relu5", nn.ReLU(inplace=True))
    f.add_module("pool3", nn.MaxPool2d(3, 2))
    head = nn.Sequential()
    head.add_module("flatten", nn.Flatten())
    head.add_module("fc6", nn.Linear(flat_features(f, in_chans, img_size), 4096))
    head.add_module("relu6", nn.ReLU(inplace=True))
    head.add_module("drop6", nn.Dropout(drop_rate))
    head.add_module("fc7", nn.Linear(4096, 4096))
    head.add_module("relu7", nn.ReLU(inplace=True))
    head.add_module("drop7", nn.Dropout(drop_rate))
    head.add_module("fc8", nn.Linear(4096, num_classes))
    return init_weights(Network(f, head, ["norm1", "norm2", "pool3"], num_classes))


TV_PAPER = "One weird trick for parallelizing convolutional neural networks"


@register("alexnet_tv", family="alexnet", paper=TV_PAPER, year=2014, input_size=(3, 224, 224),
          params=61_100_840, macs=714_188_480,
          source="torchvision's AlexNet (the reference implementation of its weight files): "
                 "num_params 61,100,840, 0.714 GFLOPS at 224x224",
          description="torchvision's AlexNet, which its weight files need: 64-192-384-256-256 "
                      "filters (the paper's 96-256-384-384-256), conv1 padded by 2, no LRN, "
                      "the last map average-pooled to 6x6 (any input from 63x63), dropout "
                      "before fc6 and fc7")
def alexnet_tv(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5,
               hidden: int = 4096) -> Network:
    """torchvision's ``alexnet`` layer for layer, under the paper's layer names (its weight
    files load with ``deeparch.transfer``, which maps ``features.0`` to ``conv1`` and so on).
    ``hidden`` is the width of fc6 and fc7."""
    f = nn.Sequential()
    f.add_module("conv1", Conv2d(in_chans, 64, 11, stride=4, padding=2))
    f.add_module("relu1", nn.ReLU(inplace=True))
    f.add_module("pool1", nn.MaxPool2d(3, 2))
    f.add_module("conv2", Conv2d(64, 192, 5, padding=2))
    f.add_module("relu2", nn.ReLU(inplace=True))
    f.add_module("pool2", nn.MaxPool2d(3, 2))
    f.add_module("conv3", Conv2d(192, 384, 3, padding=1))
    f.add_module("relu3", nn.ReLU(inplace=True))
    f.add_module("conv4", Conv2d(384, 256, 3, padding=1))
    f.add_module("relu4", nn.ReLU(inplace=True))
    f.add_module("conv5", Conv2d(256, 256, 3, padding=1))
    f.add_module("relu5", nn.ReLU(inplace=True))
    f.add_module("pool3", nn.MaxPool2d(3, 2))
    head = nn.Sequential()
    head.add_module("pool", nn.AdaptiveAvgPool2d(6))
    head.add_module("flatten", nn.Flatten())
    head.add_module("drop6", nn.Dropout(drop_rate))
    head.add_module("fc6", nn.Linear(256 * 6 * 6, hidden))
    head.add_module("relu6", nn.ReLU(inplace=True))
    head.add_module("drop7", nn.Dropout(drop_rate))
    head.add_module("fc7", nn.Linear(hidden, hidden))
    head.add_module("relu7", nn.ReLU(inplace=True))
    head.add_module("fc8", nn.Linear(hidden, num_classes))
    return init_weights(Network(f, head, ["pool1", "pool2", "pool3"], num_classes))
