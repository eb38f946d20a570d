"""ResNet (He, Zhang, Ren, Sun 2015) and the families built from its units: ResNeXt,
Wide ResNet-50-2 and SENet, plus the paper's CIFAR-10 networks.

The paper's Table 1 (ImageNet, 224x224): a stem, then four stages of residual units ::

    stem    7x7, 64, stride 2 -> 3x3 max pool, stride 2                     112 -> 56
    layer1  [3x3, 64  | 3x3, 64 ]  or  [1x1, 64  | 3x3, 64  | 1x1, 256 ]   56
    layer2  [3x3, 128 | 3x3, 128]  or  [1x1, 128 | 3x3, 128 | 1x1, 512 ]   28
    layer3  [3x3, 256 | 3x3, 256]  or  [1x1, 256 | 3x3, 256 | 1x1, 1024]   14
    layer4  [3x3, 512 | 3x3, 512]  or  [1x1, 512 | 3x3, 512 | 1x1, 2048]   7
    head    global average pool, 1000-d fc

with the number of units per stage given by ``DEPTHS``. Every unit computes
``relu(branch(x) + shortcut(x))``; the shortcut is the identity unless the shape changes,
where the paper's options are A (subsample + zero-pad the new channels, no parameters),
B (1x1 projection + BN where the shape changes; the default) and C (projections everywhere).

Like torchvision (and the ResNeXt paper), the bottleneck puts the stride on its 3x3
convolution ("ResNet v1.5"); ``stride_on_1x1=True`` puts it on the first 1x1 as the paper
did, which is what its Table 1 FLOPs count. Child names follow torchvision (``conv1``,
``bn1``, ``downsample.0``...) so that its weight files map key for key.

ResNeXt (Xie et al. 2016) is the bottleneck with a grouped 3x3 convolution of
``cardinality`` groups of ``base_width`` channels each (``32x4d``: 32 groups of 4 at
layer1, doubling every stage); Wide ResNet-50-2 (Zagoruyko & Komodakis 2016) doubles the
bottleneck width (``base_width=128``). SENet (Hu et al. 2017) rescales the residual branch
by a squeeze-and-excitation gate (``se_reduction`` is the paper's reduction ratio r)
before the addition.

The CIFAR-10 networks of Section 4.2 have 6n+2 weight layers: a 3x3 conv with 16 filters,
three stages of n basic units with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, and
global pooling + fc. They use option A shortcuts, so they have no projection parameters.

``drop_path_rate`` trains with stochastic depth (Huang et al. 2016): unit l of L drops its
residual branch with probability ``drop_path_rate * l / L``. :func:`drop_blocks` removes
units at inference, the "residual networks behave like ensembles" experiment of Veit et al.
(2016).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelOptionError, UnknownLayerError
from ..layers import DropPath, SqueezeExcite
from .base import Network, init_weights
from .registry import register

PAPER = "Deep Residual Learning for Image Recognition"
RESNEXT_PAPER = "Aggregated Residual Transformations for Deep Neural Networks"
WRN_PAPER = "Wide Residual Networks"
SE_PAPER = "Squeeze-and-Excitation Networks"

# depth: (unit, units per stage) -- the paper's Table 1
DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
PLANES = (64, 128, 256, 512)      # width of conv2_x .. conv5_x (x4 at a bottleneck's output)
CIFAR_PLANES = (16, 32, 64)       # Section 4.2: 6n+2 layers, n units per stage
SHORTCUTS = ("A", "B", "C")


# --- shortcuts ----------------------------------------------------------------------------

class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and append zero channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ModelOptionError(f"a zero-padding shortcut cannot shrink {in_channels} "
                                   f"channels to {out_channels}; use shortcut='B'.")
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if not self.extra:       # subsampling only (Keras' ResNet v2 1x1 max-pool shortcut)
            return x
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int,
                  norm: bool = True, bias: bool = False) -> nn.Module | None:
    """The shortcut of one unit: None for the identity, else option A, B or C.

    A projection is a strided 1x1 convolution, followed by BN when ``norm`` (pre-activation
    units project the already normalised input, so they pass ``norm=False``)."""
    if kind == "A" or (kind == "B" and stride == 1 and in_ch == out_ch):
        return None if stride == 1 and in_ch == out_ch else PadShortcut(in_ch, out_ch, stride)
    proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=bias))
    if norm:
        proj.append(nn.BatchNorm2d(out_ch))
    return proj


# --- units ---------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """A residual unit: ``branch(x) + shortcut(x)``; ``downsample`` is the shortcut's module,
    None where it is the identity (only those units can be removed by :func:`drop_blocks`)."""

    downsample: nn.Module | None

    def _add_tail(self, in_ch: int, out_ch: int, stride: int, shortcut: str,
                  se_reduction: int | None, drop_path: float, norm: bool = True,
                  bias: bool = False) -> None:
        """The parts every unit shares: SE gate, shortcut, stochastic depth."""
        self.se = SqueezeExcite(out_ch, se_reduction) if se_reduction else None
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride, norm, bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def merge(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """Gate the branch (SE), drop it (stochastic depth), then the residual addition."""
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + shortcut

    @property
    def removable(self) -> bool:
        return self.downsample is None


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR networks)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, shortcut: str = "B",
                 se_reduction: int | None = None, drop_path: float = 0.0, bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self._add_tail(in_ch, planes, stride, shortcut, se_reduction, drop_path, bias=bias)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(self.merge(out, shortcut))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand x4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, shortcut: str = "B",
                 se_reduction: int | None = None, drop_path: float = 0.0,
                 cardinality: int = 1, base_width: int = 64, stride_on_1x1: bool = False,
                 bias: bool = False):
        super().__init__()
        width = int(planes * base_width / 64) * cardinality
        out_ch = planes * self.expansion
        s1, s3 = (stride, 1) if stride_on_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, s1, bias=bias)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, s3, 1, groups=cardinality, bias=bias)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self._add_tail(in_ch, out_ch, stride, shortcut, se_reduction, drop_path, bias=bias)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(self.merge(out, shortcut))


# --- helpers shared by the builders ---------------------------------------------------------

def drop_path_rates(drop_path_rate: float, units: int) -> list[float]:
    """Stochastic depth's linear rule: unit l of L (1-based) drops with ``rate * l / L``."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ModelOptionError(f"drop_path_rate must be in [0, 1), not {drop_path_rate}.")
    return [drop_path_rate * (i + 1) / units for i in range(units)]


def check_positive(**knobs) -> None:
    for name, value in knobs.items():
        if value is not None and value <= 0:
            raise ModelOptionError(f"{name} must be a positive number, not {value}.")


def classifier_head(features: int, num_classes: int, drop_rate: float) -> nn.Sequential:
    """Global average pool -> flatten -> (dropout) -> fc."""
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), not {drop_rate}.")
    head = nn.Sequential()
    head.add_module("pool", nn.AdaptiveAvgPool2d(1))
    head.add_module("flatten", nn.Flatten(1))
    if drop_rate > 0:
        head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(features, num_classes))
    return head


def _check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ModelOptionError(f"shortcut must be 'A' (zero-padding), 'B' (projections where "
                               f"the shape changes) or 'C' (projections everywhere), "
                               f"not {shortcut!r}.")


# --- builders --------------------------------------------------------------------------------

def imagenet_stem(in_chans: int, bias: bool = False) -> nn.Sequential:
    """conv1 7x7/2, 64 -> BN -> ReLU -> 3x3/2 max pool (224 -> 56)."""
    stem = nn.Sequential()
    stem.add_module("conv1", nn.Conv2d(in_chans, 64, 7, 2, 3, bias=bias))
    stem.add_module("bn1", nn.BatchNorm2d(64))
    stem.add_module("act1", nn.ReLU(inplace=True))
    stem.add_module("maxpool", nn.MaxPool2d(3, 2, 1))
    return stem


def add_stages(features: nn.Sequential, make_unit, units, planes, in_ch: int, expansion: int,
               drop_path_rate: float, prefix: str) -> int:
    """Append one ``nn.Sequential`` of units per stage (``prefix1``, ``prefix2``...); the
    first unit of every stage but the first has stride 2. ``make_unit(in_ch, planes, stride,
    drop_path, first)`` builds one unit; returns the channels at the end."""
    rates = iter(drop_path_rates(drop_path_rate, sum(units)))
    for s, (n, p) in enumerate(zip(units, planes), 1):
        stage = nn.Sequential()
        for i in range(n):
            stride = 2 if s > 1 and i == 0 else 1
            stage.add_module(str(i), make_unit(in_ch, p, stride, next(rates), s == 1 and i == 0))
            in_ch = p * expansion
        features.add_module(f"{prefix}{s}", stage)
    return in_ch


def resnet(depth: int = 50, num_classes: int = 1000, in_chans: int = 3, cardinality: int = 1,
           base_width: int = 64, se_reduction: int | None = None, shortcut: str = "B",
           stride_on_1x1: bool = False, drop_rate: float = 0.0,
           drop_path_rate: float = 0.0, bias: bool = False, bn_eps: float = 1e-5) -> Network:
    """ImageNet ResNet of ``depth`` 18/34/50/101/152; ResNeXt with ``cardinality`` groups of
    ``base_width`` channels; SENet with ``se_reduction``. Stages: stem, layer1..layer4.
    ``bias`` gives every convolution a bias and ``bn_eps`` is the batch-norm epsilon (Keras'
    ResNet has both, and ``stride_on_1x1``)."""
    if depth not in DEPTHS:
        raise ModelOptionError(f"ResNet depth must be one of {sorted(DEPTHS)}, not {depth}.")
    check_positive(in_chans=in_chans, cardinality=cardinality, base_width=base_width,
                   se_reduction=se_reduction, bn_eps=bn_eps)
    _check_shortcut(shortcut)
    if base_width < 1:
        raise ModelOptionError(f"base_width is channels per group, at least 1, not {base_width}.")
    kind, units = DEPTHS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    if block is BasicBlock and (cardinality != 1 or base_width != 64):
        raise ModelOptionError(f"cardinality and base_width need bottleneck units; "
                               f"ResNet-{depth} has basic units (use depth 50, 101 or 152).")

    grouped = (dict(cardinality=cardinality, base_width=base_width, stride_on_1x1=stride_on_1x1)
               if block is Bottleneck else {})

    def unit(in_ch, planes, stride, drop_path, first):
        return block(in_ch, planes, stride, shortcut=shortcut, se_reduction=se_reduction,
                     drop_path=drop_path, bias=bias, **grouped)

    features = nn.Sequential()
    features.add_module("stem", imagenet_stem(in_chans, bias))
    out = add_stages(features, unit, units, PLANES, 64, block.expansion, drop_path_rate, "layer")
    head = classifier_head(out, num_classes, drop_rate)
    model = set_bn_eps(Network(features, head, None, num_classes), bn_eps)
    return init_weights(model, linear_std=None)


def set_bn_eps(model: nn.Module, eps: float) -> nn.Module:
    """Every batch norm of ``model`` computes with epsilon ``eps``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = float(eps)
    return model


def resnet_cifar(depth: int = 20, num_classes: int = 10, in_chans: int = 3,
                 shortcut: str = "A", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> Network:
    """The paper's CIFAR-10 ResNet with 6n+2 layers. Stages: stem, stage1..stage3."""
    if depth < 8 or (depth - 2) % 6:
        raise ModelOptionError(f"a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 110...), "
                               f"not {depth}.")
    check_positive(in_chans=in_chans)
    _check_shortcut(shortcut)
    n = (depth - 2) // 6
    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv1", nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False))
    stem.add_module("bn1", nn.BatchNorm2d(16))
    stem.add_module("act1", nn.ReLU(inplace=True))
    features.add_module("stem", stem)

    def unit(in_ch, planes, stride, drop_path, first):
        return BasicBlock(in_ch, planes, stride, shortcut=shortcut, drop_path=drop_path)

    out = add_stages(features, unit, (n, n, n), CIFAR_PLANES, 16, 1, drop_path_rate, "stage")
    head = classifier_head(out, num_classes, drop_rate)
    return init_weights(Network(features, head, None, num_classes), linear_std=None)


# --- removing units at inference (Veit et al. 2016) -------------------------------------------

def residual_blocks(model: nn.Module) -> list[str]:
    """Names of the residual units of ``model`` whose shortcut is the identity: the ones
    :func:`drop_blocks` can remove (a unit that changes the shape cannot be skipped)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, ResidualBlock) and m.removable]


def drop_blocks(model: nn.Module, names: str | Iterable[str], inplace: bool = False) -> nn.Module:
    """Remove residual units: each named unit becomes the identity, ``x + branch(x)`` -> ``x``.

    This is the lesion experiment of "Residual Networks Behave Like Ensembles of Relatively
    Shallow Networks": delete unit i of a trained network and evaluate. Names are module
    names (``features.layer3.2``) or relative to the features (``layer3.2``). Only units with
    an identity shortcut can go (see :func:`residual_blocks`). Returns a copy unless
    ``inplace``; the model must be in eval mode to mean anything (BN statistics).
    """
    names = [names] if isinstance(names, str) else list(names)
    target = model if inplace else copy.deepcopy(model)
    modules = dict(target.named_modules())
    for name in names:
        full = name if name in modules else f"features.{name}"
        block = modules.get(full)
        if block is None:
            raise UnknownLayerError(f"the model has no block {name!r}; removable blocks are "
                                    f"listed by residual_blocks(model).")
        if not isinstance(block, ResidualBlock):
            raise ModelOptionError(f"{name!r} is a {type(block).__name__}, not a residual unit.")
        if not block.removable:
            raise ModelOptionError(f"block {name!r} changes the shape (its shortcut is a "
                                   f"{type(block.downsample).__name__}), so it cannot be "
                                   f"removed; only identity-shortcut units can.")
        parent_name, _, attr = full.rpartition(".")
        setattr(modules[parent_name] if parent_name else target, attr, nn.Identity())
    return target


# --- the variants ----------------------------------------------------------------------------

TV = "torchvision reference implementation (num_params exact; GFLOPS = conv + fc mult-adds)"
SE_REF = ("parameters: the authors' models as ported by Cadene's pretrainedmodels and osmr's "
          "imgclsmob (exact); mult-adds: conv + fc at 224 with the stride on the 3x3 (v1.5)")

# name, depth, params (exact), mult-adds (exact, conv + fc at 224), the reference's GFLOPS
_IMAGENET = [
    ("resnet18", 18, 11_689_512, 1_814_073_344, 1.814),
    ("resnet34", 34, 21_797_672, 3_663_761_408, 3.664),
    ("resnet50", 50, 25_557_032, 4_089_184_256, 4.089),
    ("resnet101", 101, 44_549_160, 7_801_405_440, 7.801),
    ("resnet152", 152, 60_192_808, 11_513_626_624, 11.514),
]
for _name, _depth, _params, _macs, _g in _IMAGENET:
    register(_name, family="resnet", paper=PAPER, year=2015, params=_params, macs=_macs,
             source=f"{TV}: {_g} GFLOPS (the paper's Table 1 counts the stride on the 1x1)",
             description=f"ResNet-{_depth} ({DEPTHS[_depth][0]} units); bottleneck stride on "
                         f"the 3x3 conv (v1.5), stride_on_1x1=True for the paper's",
             depth=_depth)(resnet)

# keras.applications' ResNet (the ImageNet files it downloads, Keras 2 / tf.keras / Keras 3): the
# stride on the first 1x1 of a unit (v1, the paper's), a bias on every convolution, batch-norm
# epsilon 1.001e-5. name, depth, Keras' trainable parameters (exact: count_params() less the
# batch-norm moving statistics, which PyTorch keeps as buffers: 25,636,712 - 53,120 for
# ResNet50), mult-adds (conv + fc at 224, exact)
KERAS_RESNET = [
    ("resnet50_keras", 50, 25_583_592, 3_857_973_248),
    ("resnet101_keras", 101, 44_601_832, 7_570_194_432),
    ("resnet152_keras", 152, 60_268_520, 11_282_415_616),
]
for _name, _depth, _params, _macs in KERAS_RESNET:
    register(_name, family="resnet", paper=PAPER, year=2015, params=_params, macs=_macs,
             source="keras.applications ResNet: trainable parameters (exact); mult-adds: conv + fc "
                    "at 224 with the stride on the first 1x1 (the paper's Table 1 layout)",
             description=f"ResNet-{_depth} as keras.applications builds it, reproducing its "
                         f"outputs from its weight files: stride on the first 1x1, conv "
                         f"biases, batch-norm epsilon 1.001e-5",
             depth=_depth, stride_on_1x1=True, bias=True, bn_eps=1.001e-5)(resnet)

# name, depth, cardinality, base width, params, mult-adds, reference GFLOPS (None: not torchvision)
_RESNEXT = [
    ("resnext50_32x4d", 50, 32, 4, 25_028_904, 4_230_479_872, 4.23),
    ("resnext101_32x4d", 101, 32, 4, 44_177_704, 7_969_996_800, None),
    ("resnext101_32x8d", 101, 32, 8, 88_791_336, 16_414_015_488, 16.414),
    ("resnext101_64x4d", 101, 64, 4, 83_455_272, 15_460_270_080, 15.46),
]
for _name, _depth, _c, _w, _params, _macs, _g in _RESNEXT:
    register(_name, family="resnext", paper=RESNEXT_PAPER, year=2016, params=_params,
             macs=_macs, source=(f"{TV}: {_g} GFLOPS" if _g else
                                 "osmr imgclsmob (params, exact); mult-adds: conv + fc at 224"),
             description=f"ResNeXt-{_depth} ({_c}x{_w}d): {_c} groups of {_w} channels in the "
                         f"first stage's 3x3", depth=_depth, cardinality=_c, base_width=_w)(resnet)

for _name, _depth, _params, _macs, _g in [
        ("wide_resnet50_2", 50, 68_883_240, 11_398_021_120, 11.398),
        ("wide_resnet101_2", 101, 126_886_696, 22_753_050_624, 22.753)]:
    register(_name, family="wide_resnet", paper=WRN_PAPER, year=2016, params=_params,
             macs=_macs, source=f"{TV}: {_g} GFLOPS",
             description=f"ResNet-{_depth} with twice the bottleneck width (2048-1024-2048 in "
                         f"the last units)", depth=_depth, base_width=128)(resnet)

# name, depth, cardinality, base width, params (exact), mult-adds (v1.5: the ResNet's plus
# the SE FCs' C*C/r*2 per unit); the paper's 3.87 GFLOPs for SE-ResNet-50 is v1 with the
# squeeze pooling and rescaling counted (stride_on_1x1=True gives 3.86 + 0.0025 here)
_SE = [
    ("se_resnet18", 18, 1, 64, 11_778_592, 1_814_160_384),
    ("se_resnet34", 34, 1, 64, 21_958_868, 3_663_918_592),
    ("se_resnet50", 50, 1, 64, 28_088_024, 4_091_699_200),
    ("se_resnet101", 101, 1, 64, 49_326_872, 7_806_148_608),
    ("se_resnet152", 152, 1, 64, 66_821_848, 11_520_204_800),
    ("se_resnext50_32x4d", 50, 32, 4, 27_559_896, 4_232_994_816),
    ("se_resnext101_32x4d", 101, 32, 4, 48_955_416, 7_974_739_968),
]
for _name, _depth, _c, _w, _params, _macs in _SE:
    _base = f"ResNeXt-{_depth} ({_c}x{_w}d)" if _c > 1 else f"ResNet-{_depth}"
    register(_name, family="senet", paper=SE_PAPER, year=2017, params=_params, macs=_macs,
             source=SE_REF + ("; paper Table 2: 3.87 GFLOPs (v1, pooling and rescaling "
                              "counted)" if _depth == 50 and _c == 1 else ""),
             description=f"{_base} with a squeeze-and-excitation gate (r=16) on every "
                         f"residual branch", depth=_depth, cardinality=_c, base_width=_w,
             se_reduction=16)(resnet)

# the paper's Table 6 (CIFAR-10): depth, params as the paper rounds them
_CIFAR = [(20, 270_000), (32, 460_000), (44, 660_000), (56, 850_000), (110, 1_700_000),
          (1202, 19_400_000)]
for _depth, _params in _CIFAR:
    register(f"resnet{_depth}", family="resnet_cifar", paper=PAPER, year=2015,
             input_size=(3, 32, 32), num_classes=10, params=_params, macs=None, exact=False,
             source="the paper's Table 6 (CIFAR-10), rounded; option A shortcuts have no "
                    "parameters",
             description=f"CIFAR-10 ResNet-{_depth}: 6n+2 layers with n={(_depth - 2) // 6}, "
                         f"16/32/64 filters, option A (zero-padding) shortcuts",
             depth=_depth)(resnet_cifar)
