"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

v1, Table 1: a 3x3 convolution (stride 2, 32 channels), then thirteen depthwise separable
layers -- a 3x3 depthwise conv and a 1x1 pointwise conv, each followed by BN and ReLU --
then global average pooling and FC-1000. Its cost is ``3*3*C*H*W + C*O*H*W`` mult-adds
where a full 3x3 convolution costs ``3*3*C*O*H*W``.

* ``alpha`` (width multiplier) thins every layer to ``int(alpha * channels)``;
* the resolution multiplier rho is the input size: ``img_size = rho * 224``;
* ``separable=False`` is the paper's full-convolution baseline (Table 4, "Conv MobileNet"):
  each depthwise separable pair becomes one standard 3x3 convolution.

The mult-adds here are conv + FC multiply-accumulates. They reproduce Tables 6-8 within the
tables' rounding except two rows: 1.0 MobileNet-160 is 290,675,200 (the paper prints 290,
TF-slim's model table 291) and the Conv MobileNet is 4,867,293,184 (printed 4866: the
convolutions alone, 4,866,269,184, round to it -- that row seems to leave out the FC).

v2, Table 2: inverted residual bottlenecks (``layers.mbconv.MBConv``) -- expand 1x1
(ReLU6), depthwise 3x3 (ReLU6), project 1x1 *linear* -- with an identity shortcut
``x + out`` when the stride is 1 and the width does not change. ``width_mult`` scales
every layer to a multiple of 8 except the last 1x1 conv, which only grows (multipliers
above 1). Its mult-adds match TF-slim's table, which cuts them to whole millions:
582/300/209/97/59M at widths 1.4/1/0.75/0.5/0.35.
"""
from __future__ import annotations

from torch import nn

from ..errors import ModelOptionError
from ..layers import ConvNormAct, GlobalAvgPool2d, make_divisible
from ..layers.mbconv import MBConv
from .base import Network, init_weights, pair
from .registry import SeedFigure, register
from .resnet import set_bn_eps

V1_PAPER = "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
V2_PAPER = "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
SLIDES = "Advanced deep learning slides (seed 004), MobileNet"

# v1, Table 1, after the stem: (output channels, stride of the depthwise conv) of each
# depthwise separable layer, one list per stage (a stage = one resolution).
# Table 1 prints "s2" for the last depthwise conv too; its output stays 7x7, so stride 1.
V1_STAGES = [
    [(64, 1)],                                  # stage1  112x112
    [(128, 2), (128, 1)],                       # stage2   56x56
    [(256, 2), (256, 1)],                       # stage3   28x28
    [(512, 2)] + [(512, 1)] * 5,                # stage4   14x14
    [(1024, 2), (1024, 1)],                     # stage5    7x7
]
V1_STEM = 32

# v2, Table 2: t expansion factor, c output channels, n repeats, s stride of the first.
V2_CFG = [
    # t,  c,  n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
V2_STEM, V2_LAST = 32, 1280


def _check_width(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelOptionError(
            f"{name} (width multiplier) must be a number > 0, got {value!r}; the paper uses "
            f"1.0, 0.75, 0.5 or 0.25.")
    return float(value)


def _check_size(in_chans: int, img_size) -> tuple[int, int, int]:
    h, w = pair(img_size)
    if h < 1 or w < 1:
        raise ModelOptionError(f"img_size must be positive, got {img_size!r}.")
    return (in_chans, h, w)


def _head(channels: int, num_classes: int, drop_rate: float) -> nn.Sequential:
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), got {drop_rate!r}.")
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(channels, num_classes))
    return head


class DepthwiseSeparable(nn.Sequential):
    """Figure 3 (right): 3x3 depthwise conv, BN, ReLU; 1x1 pointwise conv, BN, ReLU.
    ``padding`` of the depthwise conv: 1, or Keras' ``(0, 1, 0, 1)`` where it strides."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, act: str = "relu",
                 padding=1):
        super().__init__()
        self.dw = ConvNormAct(in_ch, in_ch, 3, stride, padding, groups=in_ch, act=act)
        self.pw = ConvNormAct(in_ch, out_ch, 1, act=act)


def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, alpha: float = 1.0,
                 img_size=224, separable: bool = True, drop_rate: float = 0.0,
                 act: str = "relu", tf_padding: bool = False, bn_eps: float = 1e-5) -> Network:
    """MobileNet v1 with width multiplier ``alpha``; ``separable=False``: Conv MobileNet.

    keras.applications' MobileNet is ``act='relu6'``, ``tf_padding=True`` (the stem conv
    pads as TensorFlow's `same`, a strided depthwise conv zero-pads right and bottom by one,
    Keras' ``ZeroPadding2D(((0, 1), (0, 1)))``) and ``bn_eps=1e-3``."""
    alpha = _check_width("alpha", alpha)
    input_size = _check_size(in_chans, img_size)

    def width(c: int) -> int:
        return max(1, int(alpha * c))

    features = nn.Sequential()
    c = width(V1_STEM)
    features.add_module("stem", ConvNormAct(in_chans, c, 3, 2, "tf_same" if tf_padding else 1,
                                            act=act))
    for s, layers in enumerate(V1_STAGES, 1):
        stage = nn.Sequential()
        for i, (out, stride) in enumerate(layers, 1):
            out = width(out)
            pad = (0, 1, 0, 1) if tf_padding and stride > 1 else 1
            block = (DepthwiseSeparable(c, out, stride, act, pad) if separable
                     else ConvNormAct(c, out, 3, stride, pad, act=act))
            stage.add_module(f"block{i}", block)
            c = out
        features.add_module(f"stage{s}", stage)
    model = Network(features, _head(c, num_classes, drop_rate), None, num_classes)
    model.input_size = input_size
    return init_weights(set_bn_eps(model, bn_eps))


def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 img_size=224, drop_rate: float = 0.2, tf_padding: bool = False,
                 bn_eps: float = 1e-5) -> Network:
    """MobileNet v2 with width multiplier ``width_mult`` (channels rounded to multiples of 8).

    keras.applications' MobileNetV2 is ``tf_padding=True`` (its strided convolutions pad as
    TensorFlow's `same`: right and bottom on an even map) and ``bn_eps=1e-3``."""
    width_mult = _check_width("width_mult", width_mult)
    input_size = _check_size(in_chans, img_size)
    features = nn.Sequential()
    c = make_divisible(V2_STEM * width_mult, 8)
    features.add_module("stem", ConvNormAct(in_chans, c, 3, 2, "tf_same" if tf_padding else 1,
                                            act="relu6"))
    for s, (t, out, n, stride) in enumerate(V2_CFG, 1):
        out = make_divisible(out * width_mult, 8)
        stage = nn.Sequential()
        for i in range(n):
            stage.add_module(f"block{i + 1}", MBConv(c, out, 3, stride if i == 0 else 1, t,
                                                     act="relu6", tf_padding=tf_padding))
            c = out
        features.add_module(f"stage{s}", stage)
    last = make_divisible(V2_LAST * max(1.0, width_mult), 8)
    features.add_module("conv_last", ConvNormAct(c, last, 1, act="relu6"))
    model = Network(features, _head(last, num_classes, drop_rate), None, num_classes)
    model.input_size = input_size
    return init_weights(set_bn_eps(model, bn_eps))


# ---- the registered variants -------------------------------------------------------------
# v1 params: the reference implementation's exact count (Keras / TF-slim trainable
# parameters: convs without bias, BN scale and shift, FC-1000 with bias), which the paper
# rounds; mult-adds: the exact conv + FC sum at 224x224, which the paper rounds. The Conv
# MobileNet has no reference implementation: its card keeps Table 4's rounded figures.
# name, alpha, separable, params, mult-adds, paper's params (M), paper's mult-adds (M), table
_V1_VARIANTS = [
    ("mobilenet_v1", 1.0, True, 4_231_976, 568_740_352, 4.2, 569, "Tables 6-8"),
    ("mobilenet_v1_075", 0.75, True, 2_585_560, 325_400_448, 2.6, 325, "Table 6"),
    ("mobilenet_v1_050", 0.5, True, 1_331_592, 149_497_088, 1.3, 149, "Table 6"),
    ("mobilenet_v1_025", 0.25, True, 470_072, 41_030_272, 0.5, 41, "Table 6"),
    ("mobilenet_v1_conv", 1.0, False, 29_300_000, 4_866_000_000, 29.3, 4866, "Table 4"),
]

for _name, _alpha, _sep, _params, _macs, _paper_p, _paper_m, _table in _V1_VARIANTS:
    _label = f"{_alpha} MobileNet-224" if _sep else "Conv MobileNet"
    register(
        _name, family="mobilenet", paper=V1_PAPER, year=2017, input_size=(3, 224, 224),
        params=_params, macs=_macs, exact=_sep,
        source=(f"params: Keras applications MobileNet(alpha={_alpha}) trainable parameters; "
                f"mult-adds: conv + FC arithmetic; paper {_table}: {_paper_p}M params, "
                f"{_paper_m}M mult-adds" if _sep else
                f"paper {_table} (rounded; our exact sums: 29,294,088 params, "
                f"4,867,293,184 mult-adds)"),
        description=(f"width multiplier alpha={_alpha}" if _sep else
                     "the paper's full-convolution baseline: each depthwise separable pair "
                     "is one standard 3x3 convolution"),
        seed_figures=(
            SeedFigure("params", _paper_p * 1e6, 0.05e6,
                       f"{_label}: {_paper_p} million parameters", f"{SLIDES}, {_table}"),
            SeedFigure("macs", _paper_m * 1e6, 0.5e6,
                       f"{_label}: {_paper_m} million mult-adds", f"{SLIDES}, {_table}"),
        ),
        alpha=_alpha, separable=_sep,
    )(mobilenet_v1)

register(
    "mobilenet_v2", family="mobilenet", paper=V2_PAPER, year=2018, input_size=(3, 224, 224),
    params=3_504_872, macs=300_774_272, exact=True,
    source="params: torchvision / Keras MobileNetV2 (exact); mult-adds: conv + FC arithmetic "
           "(torchvision: 0.30 GFLOPS); paper Table 4: 3.4M params, 300M mult-adds",
    description="inverted residuals with linear bottlenecks, width multiplier 1.0",
    # the paper and TF-slim cut mult-adds to whole millions (300.77M -> 300M)
    seed_figures=(SeedFigure("macs", 300e6, 1e6, "MobileNetV2: 300M mult-adds",
                             "MobileNetV2 paper, Table 4"),),
    width_mult=1.0,
)(mobilenet_v2)


# keras.applications' MobileNet (alpha 1.0 / 0.75 / 0.5 / 0.25) and MobileNetV2 (1.0), the
# functions its ImageNet weight files compute: ReLU6 (v1), TensorFlow's padding on strided
# convolutions, batch-norm epsilon 1e-3. Same parameters and mult-adds as the paper's
# versions above (Keras' trainable parameters: count_params() less the BN moving statistics).
for _name, _alpha, _sep, _params, _macs, *_ in _V1_VARIANTS:
    if not _sep:
        continue
    register(
        f"{_name}_keras", family="mobilenet", paper=V1_PAPER, year=2017,
        input_size=(3, 224, 224), params=_params, macs=_macs, exact=True,
        source=f"params: keras.applications MobileNet(alpha={_alpha}) trainable parameters "
               f"(exact); mult-adds: conv + FC arithmetic (exact)",
        description=f"MobileNet alpha={_alpha} as keras.applications builds it, reproducing "
                    f"its outputs from its weight files: ReLU6, TensorFlow's padding on "
                    f"strided convolutions, batch-norm epsilon 1e-3",
        alpha=_alpha, act="relu6", tf_padding=True, bn_eps=1e-3)(mobilenet_v1)

register(
    "mobilenet_v2_keras", family="mobilenet", paper=V2_PAPER, year=2018,
    input_size=(3, 224, 224), params=3_504_872, macs=300_774_272, exact=True,
    source="params: keras.applications MobileNetV2 trainable parameters (exact); mult-adds: "
           "conv + FC arithmetic (exact)",
    description="MobileNetV2 (alpha 1.0) as keras.applications builds it, reproducing its "
                "outputs from its weight files: TensorFlow's padding on strided convolutions, "
                "batch-norm epsilon 1e-3",
    width_mult=1.0, tf_padding=True, bn_eps=1e-3)(mobilenet_v2)
