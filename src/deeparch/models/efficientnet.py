"""EfficientNet (Tan & Le 2019): the B0 baseline of Table 1 and its compound-scaled B1-B7.

B0 is a stem (3x3 conv, stride 2), seven stages of mobile inverted bottlenecks (MBConv:
expand 1x1 -> depthwise kxk -> squeeze-excite -> project 1x1, swish activations, a residual
with stochastic depth when the shape is kept) and a head (1x1 conv to 1280, global pooling,
dropout, FC). The variants scale B0 by a width coefficient (channels, rounded to a multiple
of 8 by ``make_divisible``), a depth coefficient (repeats, rounded up) and an input
resolution. The compound-scaling arithmetic itself (alpha^phi, beta^phi, gamma^phi) lives in
``deeparch.search.scaling``; this file keeps the reference implementation's settings.

Batch norm uses TensorFlow's epsilon 1e-3, as the paper's code and torchvision's B5-B7 do.
torchvision's B0-B4 use PyTorch's default 1e-5 instead: ``bn_eps=1e-5`` reproduces them
(``deeparch.transfer.load_weights`` sets it, and says so, when it loads their files).
"""
from __future__ import annotations

import math

from torch import nn

from ..errors import ModelOptionError
from ..layers import ConvNormAct, GlobalAvgPool2d, make_divisible
from ..layers.mbconv import MBConv
from .base import Network, init_weights
from .registry import register

PAPER = "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"

# Table 1 (EfficientNet-B0), one row per MBConv stage:
#   expand ratio, kernel, stride, output channels, repeats
B0_STAGES = [
    (1, 3, 1, 16, 1),    # stage1  MBConv1, k3x3   112 x 112
    (6, 3, 2, 24, 2),    # stage2  MBConv6, k3x3    56 x 56
    (6, 5, 2, 40, 2),    # stage3  MBConv6, k5x5    28 x 28
    (6, 3, 2, 80, 3),    # stage4  MBConv6, k3x3    14 x 14
    (6, 5, 1, 112, 3),   # stage5  MBConv6, k5x5    14 x 14
    (6, 5, 2, 192, 4),   # stage6  MBConv6, k5x5     7 x 7
    (6, 3, 1, 320, 1),   # stage7  MBConv6, k3x3     7 x 7
]
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
SE_RATIO = 0.25                      # of the block's input channels
BN_EPS, BN_MOMENTUM = 1e-3, 0.01     # TF's epsilon 1e-3 and decay 0.99

# The reference implementation's settings (not exactly alpha^phi, beta^phi, gamma^phi: see
# deeparch.search.scaling): width coefficient, depth coefficient, resolution, dropout.
SETTINGS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def efficientnet(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 depth_mult: float = 1.0, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.2, bn_eps: float = BN_EPS,
                 tf_padding: bool = False) -> Network:
    """EfficientNet-B0 scaled by ``width_mult`` (channels) and ``depth_mult`` (repeats).

    ``drop_path_rate`` is the stochastic-depth rate of the last block; block ``i`` of ``n``
    drops its residual branch with probability ``drop_path_rate * i / n``. ``bn_eps`` is the
    batch-norm epsilon (1e-5 for torchvision's B0-B4). ``tf_padding`` pads the strided
    convolutions (the stem, the first depthwise conv of stages 2, 3, 4 and 6) as TensorFlow's
    `same` -- on an even map one pixel right and bottom for a 3x3, (1, 2) for a 5x5 -- which
    is what keras.applications' EfficientNet computes (``efficientnet_b0_keras``...).
    """
    for knob, value in (("width_mult", width_mult), ("depth_mult", depth_mult)):
        if not value > 0:
            raise ModelOptionError(f"{knob} must be a positive number, not {value}.")
    for knob, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= value < 1.0:
            raise ModelOptionError(f"{knob} must be in [0, 1), not {value}.")
    if isinstance(bn_eps, bool) or not isinstance(bn_eps, (int, float)) or not bn_eps > 0:
        raise ModelOptionError(f"bn_eps must be a positive number (1e-3 here, 1e-5 for "
                               f"torchvision's B0-B4), not {bn_eps!r}.")

    def width(channels: int) -> int:
        return make_divisible(channels * width_mult, 8)

    repeats = [math.ceil(n * depth_mult) for *_, n in B0_STAGES]
    total, done = sum(repeats), 0
    features = nn.Sequential()
    c = width(STEM_CHANNELS)
    features.add_module("stem", ConvNormAct(in_chans, c, 3, 2, "tf_same" if tf_padding else None,
                                            act="swish"))
    for s, ((expand, k, stride, out, _), n) in enumerate(zip(B0_STAGES, repeats), 1):
        stage = nn.Sequential()
        for i in range(n):
            stage.add_module(f"block{i + 1}", MBConv(
                c, width(out), k, stride if i == 0 else 1, expand, act="swish",
                se_reduced=max(1, int(c * SE_RATIO)), drop_path=drop_path_rate * done / total,
                tf_padding=tf_padding))
            c, done = width(out), done + 1
        features.add_module(f"stage{s}", stage)
    features.add_module("head_conv", ConvNormAct(c, width(HEAD_CHANNELS), 1, act="swish"))
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(width(HEAD_CHANNELS), num_classes))
    model = Network(features, head, None, num_classes)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = float(bn_eps), BN_MOMENTUM
    init_weights(model, linear_std=None)
    if not any(p.is_meta for p in model.parameters()):   # the reference's FC init
        bound = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(head.fc.weight, -bound, bound)
        nn.init.zeros_(head.fc.bias)
    return model


# Published figures per variant: parameters (torchvision's num_params, exact), mult-adds at
# the card's resolution (torchvision's GFLOPS, given to 3 decimals, so rounded), the paper's
# Table 2 (params, FLOPS). torchvision measures B2 at 288 (1.088 GFLOPS), not the paper's 260.
PUBLISHED = {
    "b0": (5_288_548, 386_000_000, "torchvision 0.386 GFLOPS at 224", "5.3M, 0.39B"),
    "b1": (7_794_184, 687_000_000, "torchvision 0.687 GFLOPS at 240", "7.8M, 0.70B"),
    "b2": (9_109_994, 1_000_000_000, "paper 1.0B FLOPS at 260", "9.2M, 1.0B"),
    "b3": (12_233_232, 1_827_000_000, "torchvision 1.827 GFLOPS at 300", "12M, 1.8B"),
    "b4": (19_341_616, 4_394_000_000, "torchvision 4.394 GFLOPS at 380", "19M, 4.2B"),
    "b5": (30_389_784, 10_266_000_000, "torchvision 10.266 GFLOPS at 456", "30M, 9.9B"),
    "b6": (43_040_704, 19_068_000_000, "torchvision 19.068 GFLOPS at 528", "43M, 19B"),
    "b7": (66_347_960, 37_746_000_000, "torchvision 37.746 GFLOPS at 600", "66M, 37B"),
}

for _v, (_w, _d, _res, _drop) in SETTINGS.items():
    _params, _macs, _macs_src, _table2 = PUBLISHED[_v]
    register(f"efficientnet_{_v}", family="efficientnet", paper=PAPER, year=2019,
             input_size=(3, _res, _res), params=_params, macs=_macs, exact=False,
             source=(f"params: torchvision num_params (exact); mult-adds: {_macs_src} "
                     f"(rounded); paper Table 2: {_table2}"),
             description=(f"EfficientNet-{_v.upper()}: width x{_w}, depth x{_d}, {_res}x{_res} "
                          f"input, dropout {_drop}"),
             width_mult=_w, depth_mult=_d, drop_rate=_drop)(efficientnet)


# keras.applications' EfficientNetB0-B7, the functions its ImageNet weight files compute:
# TensorFlow's padding on strided convolutions; batch-norm epsilon 1e-3 as above. Keras keeps
# the input's Rescaling(1/255) and Normalization inside the model; deeparch's loader turns them
# into the LoadReport's ``preprocess`` (the model itself takes normalised images, as every
# deeparch model does). Parameters: Keras' trainable parameters (count_params() less the BN
# moving statistics and the Normalization's mean / variance / count), the same network as
# torchvision's; mult-adds: conv + fc at the card's resolution (exact).
KERAS_MACS = {"b0": 385_814_752, "b1": 686_802_832, "b2": 993_561_872, "b3": 1_827_141_392,
              "b4": 4_393_771_024, "b5": 10_266_384_752, "b6": 19_067_593_536,
              "b7": 37_745_884_192}
for _v, (_w, _d, _res, _drop) in SETTINGS.items():
    register(f"efficientnet_{_v}_keras", family="efficientnet", paper=PAPER, year=2019,
             input_size=(3, _res, _res), params=PUBLISHED[_v][0], macs=KERAS_MACS[_v],
             exact=True,
             source="params: keras.applications EfficientNet%s trainable parameters (exact); "
                    "mult-adds: conv + fc at %d (exact)" % (_v.upper(), _res),
             description=(f"EfficientNet-{_v.upper()} as keras.applications builds it, "
                          f"reproducing its outputs from its weight files: TensorFlow's "
                          f"padding on strided convolutions; Keras' input normalisation is the "
                          f"loader's preprocess"),
             width_mult=_w, depth_mult=_d, drop_rate=_drop, tf_padding=True)(efficientnet)
