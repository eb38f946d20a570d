"""The Keras CNN of the FashionMNIST slides ("Deep Architectures", TSM-DeLearn).

    Conv2D(32, 3x3) -> Activation('relu') -> MaxPooling2D(2x2) -> Dropout(0.2)
    -> Flatten -> Dense(128, relu) -> Dense(10, softmax)

At 1x28x28 its summary is the slides' table: 320 + 692,352 + 1,290 = 693,962 parameters.
``blocks=N`` repeats the conv-relu-pool-dropout block, "going deeper" as the slides suggest.
The last Dense returns logits: the softmax lives in the loss (cross-entropy).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..layers import Conv2d, Dense
from .base import Network, flat_features, init_weights
from .registry import register

SLIDES = "Deep Architectures (TSM-DeLearn slides): CNN for FashionMNIST"


@register("fashion_cnn", family="fashion_cnn", paper=SLIDES, year=2019, input_size=(1, 28, 28),
          num_classes=10, params=693_962, macs=888_192,
          source="slides' Keras summary() table (params); mult-adds: 26*26*32*9 + 5408*128 + 128*10",
          description="the slides' Keras CNN: conv32 3x3, maxpool 2, dropout 0.2, dense 128, dense 10")
def fashion_cnn(num_classes: int = 10, in_chans: int = 1, img_size=28, blocks: int = 1,
                filters: int = 32, hidden: int = 128, drop_rate: float = 0.2) -> Network:
    layers: dict[str, nn.Module] = {}
    stages = []
    c = in_chans
    for i in range(1, blocks + 1):
        layers[f"conv{i}"] = Conv2d(c, filters, 3, padding="valid")
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        layers[f"dropout{i}"] = nn.Dropout(drop_rate)
        stages.append(f"dropout{i}")
        c = filters
    features = nn.Sequential(OrderedDict(layers))
    head = nn.Sequential()
    head.add_module("flatten", nn.Flatten())
    head.add_module("dense1", Dense(flat_features(features, in_chans, img_size), hidden, "relu"))
    head.add_module("dense2", Dense(hidden, num_classes))
    return init_weights(Network(features, head, stages, num_classes), linear_std=None)
