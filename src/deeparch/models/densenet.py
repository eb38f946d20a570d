"""DenseNet (Huang et al. 2017): each layer sees the feature maps of every layer before it
in its dense block.

A dense layer is BN-ReLU-Conv(3x3, k), or with the bottleneck (B) BN-ReLU-Conv(1x1, 4k)-
BN-ReLU-Conv(3x3, k); its k new maps (k is the growth rate) are concatenated to its input,
so the l-th layer of a block sees k0 + k(l - 1) maps. Between blocks a transition layer,
BN-ReLU-Conv(1x1)-AvgPool(2x2), halves the size and, with compression (C), keeps
floor(theta * m) of its m maps. DenseNet-BC has both, with theta = 0.5.

ImageNet (Table 1): a 7x7/2 conv with 2k maps and a 3x3/2 max pool, four dense blocks,
k = 32 (48 for DenseNet-161). CIFAR (Section 3, Table 2): a 3x3 conv with 16 maps (2k for
DenseNet-BC), three blocks of (L - 4) / 3 layers ((L - 4) / 6 bottleneck layers for BC),
global average pooling and the classifier. ``drop_rate`` is the paper's dropout after every
convolution but the first (0.2 on CIFAR without augmentation).

Names inside the stages follow torchvision (``layer<i>.norm1/conv1/norm2/conv2``,
``transition<i>.norm/conv/pool``), so its weights map over by renaming the stages.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import Conv2d, GlobalAvgPool2d
from ..layers.preact import NormAct
from .base import Network, init_weights
from .registry import SeedFigure, register

PAPER = "Densely Connected Convolutional Networks"

# ImageNet, Table 1: layers in each of the four dense blocks and the growth rate k
IMAGENET_CFGS = {
    121: ((6, 12, 24, 16), 32),
    169: ((6, 12, 32, 32), 32),
    201: ((6, 12, 48, 32), 32),
    161: ((6, 12, 36, 24), 48),
}


class DenseLayer(nn.Sequential):
    """[BN-ReLU-Conv(1x1, bn_size * k)]-BN-ReLU-Conv(3x3, k); returns ``cat([x, new maps])``."""

    def __init__(self, in_ch: int, growth_rate: int, bottleneck: bool, bn_size: int,
                 drop_rate: float):
        super().__init__()
        convs = [(1, bn_size * growth_rate)] if bottleneck else []
        convs.append((3, growth_rate))
        for i, (k, out) in enumerate(convs, 1):
            self.add_module(f"norm{i}", nn.BatchNorm2d(in_ch))
            self.add_module(f"relu{i}", nn.ReLU(inplace=True))
            self.add_module(f"conv{i}", Conv2d(in_ch, out, k, padding=k // 2, bias=False))
            if drop_rate > 0:
                self.add_module(f"drop{i}", nn.Dropout(drop_rate))
            in_ch = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, super().forward(x)], 1)


def transition(in_ch: int, out_ch: int, drop_rate: float) -> nn.Sequential:
    """BN-ReLU-Conv(1x1)-AvgPool(2x2, stride 2) between two dense blocks."""
    t = nn.Sequential()
    t.add_module("norm", nn.BatchNorm2d(in_ch))
    t.add_module("relu", nn.ReLU(inplace=True))
    t.add_module("conv", Conv2d(in_ch, out_ch, 1, bias=False))
    if drop_rate > 0:
        t.add_module("drop", nn.Dropout(drop_rate))
    t.add_module("pool", nn.AvgPool2d(2, 2))
    return t


def _check(block_config, growth_rate, num_init_features, bn_size, compression,
           drop_rate) -> None:
    if not block_config or any(int(n) != n or n < 1 for n in block_config):
        raise ModelOptionError(f"block_config must list at least one positive whole number of "
                               f"layers per dense block, not {block_config!r}.")
    if int(growth_rate) != growth_rate or growth_rate < 1:
        raise ModelOptionError(f"growth_rate must be a positive whole number of maps per "
                               f"layer (the paper uses 12 to 48), not {growth_rate!r}.")
    if int(num_init_features) != num_init_features or num_init_features < 1:
        raise ModelOptionError(f"num_init_features (the stem's maps) must be a positive whole "
                               f"number, not {num_init_features!r}.")
    if int(bn_size) != bn_size or bn_size < 1:
        raise ModelOptionError(f"bn_size (the bottleneck's width in multiples of the growth "
                               f"rate) must be a positive whole number, not {bn_size!r}.")
    if not 0 < compression <= 1:
        raise ModelOptionError(f"compression (theta) must be in (0, 1]: 1 keeps every map at "
                               f"a transition, 0.5 halves them; got {compression!r}.")
    if not 0 <= drop_rate < 1:
        raise ModelOptionError(f"drop_rate must be in [0, 1), not {drop_rate!r}.")


def _densenet(stem: nn.Sequential, channels: int, block_config, growth_rate: int,
              bottleneck: bool, bn_size: int, compression: float, drop_rate: float,
              num_classes: int) -> Network:
    features = nn.Sequential()
    features.add_module("stem", stem)
    c = channels
    for b, n_layers in enumerate(block_config, 1):
        block = nn.Sequential()
        for i in range(1, n_layers + 1):
            block.add_module(f"layer{i}",
                             DenseLayer(c, growth_rate, bottleneck, bn_size, drop_rate))
            c += growth_rate
        features.add_module(f"block{b}", block)
        if b < len(block_config):
            out = int(c * compression)
            if out < 1:
                raise ModelOptionError(f"compression={compression} leaves no maps after "
                                       f"block {b} ({c} maps); use a larger compression.")
            features.add_module(f"transition{b}", transition(c, out, drop_rate))
            c = out
    features.add_module(f"norm{len(block_config) + 1}", NormAct(c))
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    head.add_module("fc", nn.Linear(c, num_classes))
    return init_weights(Network(features, head, None, num_classes), linear_std=None)


def densenet(block_config=(6, 12, 24, 16), growth_rate: int = 32,
             num_init_features: int | None = None, bottleneck: bool = True, bn_size: int = 4,
             compression: float = 0.5, drop_rate: float = 0.0, num_classes: int = 1000,
             in_chans: int = 3) -> Network:
    """The ImageNet DenseNet of Table 1: 7x7/2 conv (2k maps), 3x3/2 max pool, dense blocks."""
    c = 2 * growth_rate if num_init_features is None else num_init_features
    _check(block_config, growth_rate, c, bn_size, compression, drop_rate)
    stem = nn.Sequential()
    stem.add_module("conv0", Conv2d(in_chans, c, 7, stride=2, padding=3, bias=False))
    stem.add_module("norm0", nn.BatchNorm2d(c))
    stem.add_module("relu0", nn.ReLU(inplace=True))
    stem.add_module("pool0", nn.MaxPool2d(3, 2, padding=1))
    return _densenet(stem, c, block_config, growth_rate, bottleneck, bn_size, compression,
                     drop_rate, num_classes)


def densenet_cifar(depth: int = 40, growth_rate: int = 12, bottleneck: bool = False,
                   compression: float = 1.0, num_init_features: int | None = None,
                   bn_size: int = 4, drop_rate: float = 0.0, num_classes: int = 10,
                   in_chans: int = 3) -> Network:
    """The CIFAR DenseNet of depth L: a 3x3 conv, then three equal dense blocks."""
    per_layer = 2 if bottleneck else 1
    if int(depth) != depth or depth < 4 + 3 * per_layer or (depth - 4) % (3 * per_layer):
        raise ModelOptionError(
            f"depth L={depth!r} does not fit three equal dense blocks: L - 4 must be a positive "
            f"multiple of {3 * per_layer} {'with' if bottleneck else 'without'} the bottleneck "
            f"(e.g. {'100 or 190' if bottleneck else '40 or 100'}).")
    n = (depth - 4) // (3 * per_layer)
    c = (2 * growth_rate if bottleneck else 16) if num_init_features is None else num_init_features
    _check((n, n, n), growth_rate, c, bn_size, compression, drop_rate)
    stem = nn.Sequential()
    stem.add_module("conv0", Conv2d(in_chans, c, 3, padding=1, bias=False))
    return _densenet(stem, c, (n, n, n), growth_rate, bottleneck, bn_size, compression,
                     drop_rate, num_classes)


# ImageNet: name, Table 1 depth, params and mult-adds at 224x224 (both exact, computed from
# the architecture; torchvision's reference lists the same parameter counts and rounds the
# mult-adds to 2.83 / 3.36 / 4.29 / 7.73 GFLOPS)
_IMAGENET = [
    ("densenet121", 121, 7_978_856, 2_834_161_664),
    ("densenet169", 169, 14_149_480, 3_359_843_328),
    ("densenet201", 201, 20_013_928, 4_291_365_888),
    ("densenet161", 161, 28_681_000, 7_727_907_072),
]
for _name, _depth, _params, _macs in _IMAGENET:
    _blocks, _k = IMAGENET_CFGS[_depth]
    register(_name, family="densenet", paper=PAPER, year=2017, input_size=(3, 224, 224),
             params=_params, macs=_macs, exact=True,
             source=f"torchvision reference implementation: {_params:,} parameters, "
                    f"{_macs / 1e9:.2f} GFLOPS",
             description=f"DenseNet-BC-{_depth} (k={_k}, blocks {'-'.join(map(str, _blocks))})",
             block_config=_blocks, growth_rate=_k)(densenet)

# CIFAR, Table 2 (Huang et al.): name, depth L, growth rate k, bottleneck B, compression
# theta, the paper's parameter count (rounded to 0.1M), its C10+ error, and the row as the
# seed slides quote it (their NASNet comparison table) where they do
_SLIDES = "Advanced deep learning slides (seed 004), CIFAR-10 comparison table"
_CIFAR = [
    ("densenet40_k12", 40, 12, False, 1.0, 1.0, 5.24,
     "DenseNet ($L = 40, k = 12$) [26] 40 1.0M 5.24"),
    ("densenet100_k12", 100, 12, False, 1.0, 7.0, 4.10,
     "DenseNet($L = 100, k = 12$) [26] 100 7.0M 4.10"),
    ("densenet100_k24", 100, 24, False, 1.0, 27.2, 3.74,
     "DenseNet ($L = 100, k = 24$) [26] 100 27.2M 3.74"),
    ("densenet_bc100_k12", 100, 12, True, 0.5, 0.8, 4.51, None),
    ("densenet_bc250_k24", 250, 24, True, 0.5, 15.3, 3.62, None),
    # the slides print "L = 100" in this row; its depth column (190) and 25.6M are L = 190
    ("densenet_bc190_k40", 190, 40, True, 0.5, 25.6, 3.46,
     "DenseNet-BC ($L = 100, k = 40$) [26] 190 25.6M 3.46"),
]
for _name, _depth, _k, _b, _theta, _m, _err, _quote in _CIFAR:
    _kind = "DenseNet-BC" if _b else "DenseNet"
    _figs = (SeedFigure("params", _m * 1e6, 0.05e6, _quote, _SLIDES),) if _quote else ()
    register(_name, family="densenet", paper=PAPER, year=2017, input_size=(3, 32, 32),
             num_classes=10, params=round(_m * 1e6), macs=None, exact=False,
             source=f"paper Table 2: {_m}M (rounded to 0.1M)", seed_figures=_figs,
             description=f"{_kind} (L={_depth}, k={_k}) for CIFAR; {_err}% error on C10+",
             depth=_depth, growth_rate=_k, bottleneck=_b, compression=_theta)(densenet_cifar)
