"""Dual Path Networks (Chen et al. 2017): a residual path and a densely connected path,
side by side, sharing one bottleneck.

Each block is a ResNeXt bottleneck, BN-ReLU-Conv(1x1)-BN-ReLU-Conv(3x3, G groups)-BN-ReLU-
Conv(1x1), run on the concatenation of the two paths. Its output is split: the first
``width`` maps are added to the residual path (feature re-use), the last ``inc`` maps are
concatenated to the dense path (new features), so the dense path grows by ``inc`` per block
(the "+k" of the paper's Table 1). The first block of a stage projects its input with a
1x1 conv (stride 2 from conv3 on) into a fresh residual path and a dense path of 2 * inc.

The table below is the paper's Table 1 (DPN-92, "32 x 3d") and the authors' released DPN-68
("32 x 4d", a 3x3/2 stem with 10 maps and residual paths four times narrower): per stage
conv2..conv5, the bottleneck width is cardinality * d * 2^(stage - 2).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import ConvNormAct, GlobalAvgPool2d
from ..layers.preact import NormAct, NormActConv
from .base import Network, init_weights
from .registry import register

PAPER = "Dual Path Networks"

#         stem (k, maps)  G  d   residual width per stage  dense "+k" per stage  blocks
CFGS = {
    "dpn68": ((3, 10),      32, 4, (64, 128, 256, 512),     (16, 32, 32, 64),    (3, 4, 12, 3)),
    "dpn92": ((7, 64),      32, 3, (256, 512, 1024, 2048),  (16, 32, 24, 128),   (3, 4, 20, 3)),
}


class DualPathBlock(nn.Module):
    """One dual path block: ``(residual, dense) -> (residual + r, cat(dense, d))``."""

    def __init__(self, in_ch: int, mid: int, width: int, inc: int, groups: int,
                 stride: int = 1, project: bool = False):
        super().__init__()
        self.width, self.inc = width, inc
        self.project = NormActConv(in_ch, width + 2 * inc, 1, stride) if project else None
        self.conv1 = NormActConv(in_ch, mid, 1)
        self.conv2 = NormActConv(mid, mid, 3, stride, groups=groups)
        self.conv3 = NormActConv(mid, width + inc, 1)

    def forward(self, resid: torch.Tensor, dense: torch.Tensor | None = None):
        x = resid if dense is None else torch.cat([resid, dense], 1)
        if self.project is not None:
            resid, dense = torch.split(self.project(x), [self.width, 2 * self.inc], 1)
        r, d = torch.split(self.conv3(self.conv2(self.conv1(x))), [self.width, self.inc], 1)
        return resid + r, torch.cat([dense, d], 1)


class DualPathStage(nn.Sequential):
    """Blocks ``block1..blockN`` carrying the two paths; returns them concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resid, dense = x, None
        for block in self:
            resid, dense = block(resid, dense)
        return torch.cat([resid, dense], 1)


def dpn(depths=(3, 4, 20, 3), increments=(16, 32, 24, 128), cardinality: int = 32,
        group_width: int = 3, widths=(256, 512, 1024, 2048), num_init_features: int = 64,
        stem_kernel: int = 7, num_classes: int = 1000, in_chans: int = 3,
        drop_rate: float = 0.0) -> Network:
    """A DPN: ``depths`` blocks per stage conv2..conv5, dense path growing by ``increments``,
    3x3 convs of ``cardinality`` groups of ``group_width`` channels (doubling per stage)."""
    stages = (depths, increments, widths)
    if any(len(s) != len(depths) or any(int(v) != v or v < 1 for v in s) for s in stages) \
            or not depths:
        raise ModelOptionError(
            f"depths, increments and widths must list one positive whole number per stage, "
            f"the same number of stages each; got {depths!r}, {increments!r}, {widths!r}.")
    if int(cardinality) != cardinality or cardinality < 1 \
            or int(group_width) != group_width or group_width < 1:
        raise ModelOptionError(f"cardinality and group_width (the paper's 'G x d') must be "
                               f"positive whole numbers, not {cardinality!r} x {group_width!r}.")
    if int(num_init_features) != num_init_features or num_init_features < 1 \
            or stem_kernel not in (3, 5, 7):
        raise ModelOptionError(f"the stem needs a positive whole num_init_features and an odd "
                               f"stem_kernel of 3, 5 or 7; got {num_init_features!r} and "
                               f"{stem_kernel!r}.")
    if not 0 <= drop_rate < 1:
        raise ModelOptionError(f"drop_rate must be in [0, 1), not {drop_rate!r}.")
    features = nn.Sequential()
    stem = nn.Sequential()
    stem.add_module("conv1", ConvNormAct(in_chans, num_init_features, stem_kernel, stride=2))
    stem.add_module("pool1", nn.MaxPool2d(3, 2, padding=1))
    features.add_module("stem", stem)
    c = num_init_features
    mid = cardinality * group_width
    for s, (n, inc, width) in enumerate(zip(depths, increments, widths)):
        stage = DualPathStage()
        for i in range(1, n + 1):
            stage.add_module(f"block{i}", DualPathBlock(
                c, mid, width, inc, cardinality, stride=2 if i == 1 and s > 0 else 1,
                project=i == 1))
            c = width + (i + 2) * inc  # residual + 2 inc from the projection + inc per block
        features.add_module(f"conv{s + 2}", stage)
        mid *= 2
    features.add_module("norm", NormAct(c))  # BN-ReLU on cat(residual, dense)
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())
    if drop_rate > 0:
        head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(c, num_classes))
    return init_weights(Network(features, head, None, num_classes), linear_std=None)


# name, params and mult-adds at 224x224 (exact, computed from the architecture: the
# parameters equal timm's port of the authors' MXNet models), the authors' own figures
_VARIANTS = [
    ("dpn68", 12_611_602, 2_326_163_456,
     "authors' release (cypw/DPNs README, not in the paper): 49 MB, 2.5 GFLOPs"),
    ("dpn92", 37_668_392, 6_501_684_224,
     "paper Table 1 (32 x 3d) and the authors' release: 145 MB, 6.5 GFLOPs"),
]
for _name, _params, _macs, _pub in _VARIANTS:
    _stem, _g, _d, _widths, _incs, _depths = CFGS[_name]
    register(_name, family="dpn", paper=PAPER, year=2017, input_size=(3, 224, 224),
             params=_params, macs=_macs, exact=True,
             source=f"timm reference implementation (port of the authors' models): "
                    f"{_params:,} parameters; {_pub}",
             description=f"DPN-{_name[3:]} ({_g} x {_d}d), blocks {'-'.join(map(str, _depths))}",
             depths=_depths, increments=_incs, cardinality=_g, group_width=_d, widths=_widths,
             num_init_features=_stem[1], stem_kernel=_stem[0])(dpn)
