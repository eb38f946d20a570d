"""VGG (Simonyan & Zisserman 2014): the configurations of Table 1, written as the table.

Each entry is a convolution ``conv<k>-<channels>`` (an int means conv3), ``"LRN"`` or
``"M"`` (2x2 max pool, stride 2); convolutions have stride 1 and `same` padding. Three
fully connected layers follow: FC-4096, FC-4096, FC-num_classes. ``img_size`` sizes the
first FC layer (7x7x512 at 224x224; 1x1x512 for the CIFAR-10 32x32 adaptation).

``adaptive_pool=7`` is torchvision's head: the last map is average-pooled to 7x7 before the
classifier, so that any input of 32x32 or more feeds the same FC-4096 (at 224x224 the map
is already 7x7 and the pool changes nothing). Its weight files load either way; give it to
run them at another input size.
"""
from __future__ import annotations

from torch import nn

from ..errors import ModelOptionError
from ..layers import Conv2d, LocalResponseNorm
from .base import Network, flat_features, init_weights
from .registry import SeedFigure, register

PAPER = "Very Deep Convolutional Networks for Large-Scale Image Recognition"
REF = "torchvision reference implementation (the paper's Table 2 rounds to millions)"

#        block 1          block 2            block 3                        block 4 / 5
CFGS: dict[str, list[list]] = {
    "A":     [[64],        [128],      [256, 256],           [512, 512],           [512, 512]],
    "A-LRN": [[64, "LRN"], [128],      [256, 256],           [512, 512],           [512, 512]],
    "B":     [[64, 64],    [128, 128], [256, 256],           [512, 512],           [512, 512]],
    "C":     [[64, 64],    [128, 128], [256, 256, "1-256"],  [512, 512, "1-512"],  [512, 512, "1-512"]],
    "D":     [[64, 64],    [128, 128], [256, 256, 256],      [512, 512, 512],      [512, 512, 512]],
    "E":     [[64, 64],    [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}

SLIDES_VGG16 = ("Deep Architectures slides, VGG16 table",)


def _block(layers: list, in_ch: int, batch_norm: bool) -> tuple[nn.Sequential, int]:
    block = nn.Sequential()
    i = 0
    for item in layers:
        if item == "LRN":
            block.add_module("norm", LocalResponseNorm(5, 1e-4, 0.75, 2.0))
            continue
        k, ch = (1, int(item.split("-")[1])) if isinstance(item, str) else (3, item)
        i += 1
        block.add_module(f"conv{i}", Conv2d(in_ch, ch, k, padding="same"))
        if batch_norm:
            block.add_module(f"bn{i}", nn.BatchNorm2d(ch))
        block.add_module(f"relu{i}", nn.ReLU(inplace=True))
        in_ch = ch
    block.add_module("pool", nn.MaxPool2d(2, 2))
    return block, in_ch


def vgg(cfg: str = "D", num_classes: int = 1000, in_chans: int = 3, img_size=224,
        batch_norm: bool = False, drop_rate: float = 0.5, hidden: int = 4096,
        adaptive_pool: int | None = None) -> Network:
    if adaptive_pool is not None and (isinstance(adaptive_pool, bool)
                                      or not isinstance(adaptive_pool, int) or adaptive_pool < 1):
        raise ModelOptionError(f"adaptive_pool is the side of the pooled map (torchvision: 7), "
                               f"a positive whole number or None, not {adaptive_pool!r}.")
    features = nn.Sequential()
    c = in_chans
    for b, layers in enumerate(CFGS[cfg], 1):
        block, c = _block(layers, c, batch_norm)
        features.add_module(f"block{b}", block)
    head = nn.Sequential()
    if adaptive_pool is None:
        flat = flat_features(features, in_chans, img_size)
    else:
        head.add_module("pool", nn.AdaptiveAvgPool2d(adaptive_pool))
        flat = c * adaptive_pool * adaptive_pool
    head.add_module("flatten", nn.Flatten())
    head.add_module("fc6", nn.Linear(flat, hidden))
    head.add_module("relu6", nn.ReLU(inplace=True))
    head.add_module("drop6", nn.Dropout(drop_rate))
    head.add_module("fc7", nn.Linear(hidden, hidden))
    head.add_module("relu7", nn.ReLU(inplace=True))
    head.add_module("drop7", nn.Dropout(drop_rate))
    head.add_module("fc8", nn.Linear(hidden, num_classes))
    return init_weights(Network(features, head, None, num_classes))


# name, configuration, weight layers, params (exact), mult-adds (exact, conv + FC at 224),
# the paper's Table 2 figure in millions
_VARIANTS = [
    ("vgg11", "A", 11, 132_863_336, 7_609_090_048, 133),
    ("vgg11_lrn", "A-LRN", 11, 132_863_336, 7_609_090_048, 133),
    ("vgg13", "B", 13, 133_047_848, 11_308_466_176, 133),
    ("vgg16_c", "C", 16, 133_638_952, 11_770_888_192, 134),
    ("vgg16", "D", 16, 138_357_544, 15_470_264_320, 138),
    ("vgg19", "E", 19, 143_667_240, 19_632_062_464, 144),
]
_VGG16_FIGURES = (
    SeedFigure("activations", 24e6, 0.5e6, "TOTAL memory: 24M * 4 bytes ~= 96MB / image",
               "Deep Architectures slides, VGG16 table"),
    SeedFigure("params", 138e6, 0.5e6, "TOTAL params: 138M parameters",
               "Deep Architectures slides, VGG16 table"),
)

for _name, _cfg, _depth, _params, _macs, _paper_m in _VARIANTS:
    _figs = _VGG16_FIGURES if _name == "vgg16" else ()
    _common = dict(family="vgg", paper=PAPER, year=2014, cfg=_cfg)
    register(_name, input_size=(3, 224, 224), params=_params, macs=_macs, seed_figures=_figs,
             source=f"{REF}; paper: {_paper_m}M", exact=True,
             description=f"configuration {_cfg}, {_depth} weight layers", **_common)(vgg)
    if _cfg != "A-LRN":
        register(f"{_name}_bn", input_size=(3, 224, 224), params=None, macs=_macs,
                 source=f"{_name} plus two parameters per channel of each BatchNorm",
                 description=f"configuration {_cfg} with batch normalisation after each conv",
                 batch_norm=True, **_common)(vgg)
    register(f"{_name}_cifar", input_size=(3, 32, 32), num_classes=10, params=None, macs=None,
             source="the slides' CIFAR-10 exercise: the configuration on 32x32x3 input",
             description=f"configuration {_cfg} on 32x32 CIFAR-10 input (FC-4096 on 1x1x512)",
             img_size=32, **_common)(vgg)
