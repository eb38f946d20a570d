"""Pre-activation ResNet (He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual
Networks") and the CIFAR Wide ResNets (Zagoruyko & Komodakis 2016) built from its unit.

The unit moves BN and ReLU in front of each convolution and leaves the sum alone::

    original (post-activation):  x -> conv-BN-ReLU-conv-BN -> (+x) -> ReLU
    pre-activation:              x -> BN-ReLU-conv-BN-ReLU-conv -> (+x)

so that the shortcut path is a pure identity from one unit to the next. The ImageNet
layout is ResNet's (Table 1, see :mod:`.resnet`): stem, layer1..layer4, with the authors'
code's two special cases, which the paper's appendix states: the first unit, which follows
the stem's own conv-BN-ReLU, has no pre-activation of its own; and an extra BN-ReLU follows
the last addition (here the end of ``layer4``, so ``forward_features`` is activated). Where a
unit changes the shape, the 1x1 projection reads the pre-activated input (the shortcut has
no BN). The bottleneck strides on its 3x3, as in the authors' code.

Wide ResNet WRN-d-k on CIFAR: a 3x3 conv with 16 filters, then three groups of N = (d-4)/6
pre-activation basic units with 16k, 32k and 64k filters on 32, 16 and 8 maps, BN-ReLU,
global pooling and fc; ``dropout`` between the two convolutions of each unit (the paper's
WRN-28-10-dropout uses 0.3).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelOptionError
from .base import Network, init_weights
from .registry import register
from ..layers import DropPath
from .resnet import (DEPTHS, PLANES, PadShortcut, ResidualBlock, add_stages, check_positive,
                     classifier_head, drop_path_rates, imagenet_stem, set_bn_eps)

PAPER = "Identity Mappings in Deep Residual Networks"
WRN_PAPER = "Wide Residual Networks"

# the ImageNet depths of ResNet, plus the paper's ResNet-200
PREACT_DEPTHS = {**DEPTHS, 200: ("bottleneck", (3, 24, 36, 3))}
WRN_PLANES = (16, 32, 64)          # times the widening factor k


class PreActBlock(ResidualBlock):
    """A pre-activation unit: ``BN-ReLU-conv`` x 2 (basic) or x 3 (bottleneck, 1x1-3x3-1x1
    with x4 expansion), summed with the shortcut and nothing after the sum."""

    def __init__(self, in_ch: int, planes: int, stride: int = 1, bottleneck: bool = False,
                 preact: bool = True, dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        out_ch = planes * self.expansion
        # (in, out, kernel, stride) of each convolution; the stride sits on the 3x3
        convs = ([(in_ch, planes, 1, 1), (planes, planes, 3, stride), (planes, out_ch, 1, 1)]
                 if bottleneck else [(in_ch, planes, 3, stride), (planes, planes, 3, 1)])
        for i, (cin, cout, k, s) in enumerate(convs, 1):
            if i > 1 or preact:
                self.add_module(f"bn{i}", nn.BatchNorm2d(cin))
                self.add_module(f"act{i}", nn.ReLU(inplace=True))
            if i == len(convs) and dropout > 0:
                self.add_module("drop", nn.Dropout(dropout))
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, k, s, k // 2, bias=False))
        self.depth = len(convs)
        self.preact = preact
        self._add_tail(in_ch, out_ch, stride, "B", None, drop_path, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x)) if self.preact else x
        # a projection reads the pre-activated input; the identity reads x itself
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"act{i}")(getattr(self, f"bn{i}")(out))
            if i == self.depth and hasattr(self, "drop"):
                out = self.drop(out)
            out = getattr(self, f"conv{i}")(out)
        return self.merge(out, shortcut)


def _post_activation(stage: nn.Sequential, channels: int) -> None:
    """The extra BN-ReLU after the last addition, at the end of the last stage."""
    stage.add_module("bn", nn.BatchNorm2d(channels))
    stage.add_module("act", nn.ReLU(inplace=True))


def preact_resnet(depth: int = 50, num_classes: int = 1000, in_chans: int = 3,
                  drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> Network:
    """ImageNet pre-activation ResNet of ``depth`` 18/34/50/101/152/200.
    Stages: stem, layer1..layer4."""
    if depth not in PREACT_DEPTHS:
        raise ModelOptionError(f"PreActResNet depth must be one of {sorted(PREACT_DEPTHS)}, "
                               f"not {depth}.")
    check_positive(in_chans=in_chans)
    kind, units = PREACT_DEPTHS[depth]
    bottleneck = kind == "bottleneck"

    def unit(in_ch, planes, stride, drop_path, first):
        # the stem's BN-ReLU is the first unit's pre-activation
        return PreActBlock(in_ch, planes, stride, bottleneck, preact=not first,
                           drop_path=drop_path)

    features = nn.Sequential()
    features.add_module("stem", imagenet_stem(in_chans))
    out = add_stages(features, unit, units, PLANES, 64, 4 if bottleneck else 1,
                     drop_path_rate, "layer")
    _post_activation(features.layer4, out)
    head = classifier_head(out, num_classes, drop_rate)
    return init_weights(Network(features, head, None, num_classes), linear_std=None)


def wide_resnet_cifar(depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
                      in_chans: int = 3, dropout: float = 0.0, drop_rate: float = 0.0,
                      drop_path_rate: float = 0.0) -> Network:
    """WRN-``depth``-``widen_factor`` for 32x32 input. Stages: stem, stage1..stage3."""
    if depth < 10 or (depth - 4) % 6:
        raise ModelOptionError(f"a Wide ResNet has 6N+4 layers (10, 16, 22, 28, 40...), "
                               f"not {depth}.")
    check_positive(in_chans=in_chans, widen_factor=widen_factor)
    if not 0.0 <= dropout < 1.0:
        raise ModelOptionError(f"dropout must be in [0, 1), not {dropout}.")
    n = (depth - 4) // 6
    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv1", nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False))
    features.add_module("stem", stem)

    def unit(in_ch, planes, stride, drop_path, first):
        return PreActBlock(in_ch, planes, stride, dropout=dropout, drop_path=drop_path)

    planes = [round(p * widen_factor) for p in WRN_PLANES]
    out = add_stages(features, unit, (n, n, n), planes, 16, 1, drop_path_rate, "stage")
    _post_activation(features.stage3, out)
    head = classifier_head(out, num_classes, drop_rate)
    return init_weights(Network(features, head, None, num_classes), linear_std=None)


# --- the variants ----------------------------------------------------------------------------

GLUON = ("osmr imgclsmob preresnet (= MXNet Gluon resnet_v2), exact: {:,}; it has one more "
         "BN(64) (128 parameters) than the paper's layout, a pre-activation on the first unit "
         "after the stem's own BN-ReLU")

# name, depth, reference params (exact, Gluon layout), mult-adds (ours: the convolutions and fc
# of resnet<depth> exactly, conv + fc at 224)
_PREACT = [
    ("preact_resnet18", 18, 11_687_848, 1_814_073_344),
    ("preact_resnet34", 34, 21_796_008, 3_663_761_408),
    ("preact_resnet50", 50, 25_549_480, 4_089_184_256),
    ("preact_resnet101", 101, 44_541_608, 7_801_405_440),
    ("preact_resnet152", 152, 60_185_256, 11_513_626_624),
    ("preact_resnet200", 200, 64_666_280, 15_007_481_856),
]
for _name, _depth, _params, _macs in _PREACT:
    register(_name, family="preact_resnet", paper=PAPER, year=2016, params=_params,
             macs=_macs, exact=False,
             source=GLUON.format(_params) + "; mult-adds: the same convolutions and fc as "
                    "ResNet v1.5 (torchvision: 1.814, 3.664, 4.089, 7.801, 11.514 GFLOPS)",
             description=f"pre-activation ResNet-{_depth} (BN-ReLU-conv units)",
             depth=_depth)(preact_resnet)

# the WRN paper's Table 4 (CIFAR-10): depth, widening factor, params in millions as printed
_WRN = [(40, 4, 8_900_000), (16, 8, 11_000_000), (28, 10, 36_500_000)]
for _depth, _k, _params in _WRN:
    register(f"wrn{_depth}_{_k}", family="wide_resnet_cifar", paper=WRN_PAPER, year=2016,
             input_size=(3, 32, 32), num_classes=10, params=_params, macs=None, exact=False,
             source="the WRN paper's Table 4 (CIFAR-10), rounded to 0.1M",
             description=f"WRN-{_depth}-{_k}: {(_depth - 4) // 6} pre-activation units per "
                         f"group, widths {16 * _k}/{32 * _k}/{64 * _k}",
             depth=_depth, widen_factor=_k)(wide_resnet_cifar)


# --- keras.applications' ResNet v2 -------------------------------------------------------------
#
# Keras' ResNet50V2/101V2/152V2 (its ImageNet weight files) differ from the authors' layout:
#   stem   7x7/2 conv with a bias and no BN-ReLU of its own; zero padding 1 and a 3x3/2 max pool
#          (zeros, not -inf: the map has not been through a ReLU);
#   units  every unit pre-activates (the first one too: its BN-ReLU reads the pooled stem);
#          the first unit of a stage projects the pre-activated input (1x1 with a bias, stride
#          1), the *last* unit of conv2..conv4 has the stride, on its 3x3, with a 1x1/2 max
#          pool (a subsampling) as its shortcut; the closing 1x1 has a bias;
#   end    BN-ReLU after the last addition (``post_bn``), batch-norm epsilon 1.001e-5.

class KerasPreActBottleneck(ResidualBlock):
    """Keras' ``block2``: BN-ReLU, [1x1 projection of it | subsample | identity] as the
    shortcut, 1x1-BN-ReLU, 3x3 (stride)-BN-ReLU, 1x1 (bias), summed."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, project: bool = False,
                 drop_path: float = 0.0):
        super().__init__()
        out_ch = planes * self.expansion
        self.preact_bn = nn.BatchNorm2d(in_ch)
        self.preact_act = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_ch, 1)
        self.se = None
        self.project = project
        self.downsample = (nn.Conv2d(in_ch, out_ch, 1, stride) if project else
                           PadShortcut(in_ch, in_ch, stride) if stride > 1 else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact_act(self.preact_bn(x))
        shortcut = (self.downsample(pre) if self.project else
                    x if self.downsample is None else self.downsample(x))
        out = self.act1(self.bn1(self.conv1(pre)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.merge(self.conv3(out), shortcut)


def preact_resnet_keras(depth: int = 50, num_classes: int = 1000, in_chans: int = 3,
                        drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                        bn_eps: float = 1.001e-5) -> Network:
    """keras.applications' ResNet``depth``V2 (50/101/152). Stages: stem, layer1..layer4."""
    if depth not in (50, 101, 152):
        raise ModelOptionError(f"Keras' ResNet v2 has depth 50, 101 or 152, not {depth}.")
    check_positive(in_chans=in_chans, bn_eps=bn_eps)
    units = DEPTHS[depth][1]
    rates = iter(drop_path_rates(drop_path_rate, sum(units)))
    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv1", nn.Conv2d(in_chans, 64, 7, 2, 3))
    stem.add_module("pad", nn.ZeroPad2d(1))
    stem.add_module("maxpool", nn.MaxPool2d(3, 2))
    features.add_module("stem", stem)
    c = 64
    for s, (n, planes) in enumerate(zip(units, PLANES), 1):
        stage = nn.Sequential()
        for i in range(n):
            stride = 2 if i == n - 1 and s < len(units) else 1
            stage.add_module(str(i), KerasPreActBottleneck(c, planes, stride, project=i == 0,
                                                           drop_path=next(rates)))
            c = planes * 4
        features.add_module(f"layer{s}", stage)
    _post_activation(features.layer4, c)
    head = classifier_head(c, num_classes, drop_rate)
    model = set_bn_eps(Network(features, head, None, num_classes), bn_eps)
    return init_weights(model, linear_std=None)


# name, depth, Keras' trainable parameters (count_params() less the BN moving statistics),
# mult-adds (conv + fc at 224, exact)
KERAS_V2 = [
    ("preact_resnet50_keras", 50, 25_568_360, 3_482_255_360),
    ("preact_resnet101_keras", 101, 44_577_896, 7_194_476_544),
    ("preact_resnet152_keras", 152, 60_236_904, 10_906_697_728),
]
for _name, _depth, _params, _macs in KERAS_V2:
    register(_name, family="preact_resnet", paper=PAPER, year=2016, params=_params,
             macs=_macs, exact=True,
             source="keras.applications ResNet{}V2: count_params() less the batch-norm moving "
                    "statistics (exact); mult-adds: conv + fc at 224 (exact)".format(_depth),
             description=f"ResNet{_depth}V2 as keras.applications builds it, reproducing its "
                         f"outputs from its weight files: stride in the last unit of a stage, "
                         f"conv biases, pre-activation of every unit, BN-ReLU at the end",
             depth=_depth)(preact_resnet_keras)
