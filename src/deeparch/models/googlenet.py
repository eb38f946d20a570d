"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going deeper with convolutions").

Table 1 of the paper, written as data below (channels of each inception module):

    type            patch/stride  output      #1x1 #3x3red #3x3 #5x5red #5x5 poolproj
    convolution     7x7/2         112x112x64
    max pool        3x3/2         56x56x64        (then LRN)
    convolution     3x3/1         56x56x192         64     192   (1x1 reduce, then 3x3; LRN)
    max pool        3x3/2         28x28x192
    inception (3a)                28x28x256   64    96     128    16     32    32
    inception (3b)                28x28x480  128   128     192    32     96    64
    max pool        3x3/2         14x14x480
    inception (4a) ... (4e)       14x14x512..832   (see INCEPTION)
    max pool        3x3/2         7x7x832
    inception (5a), (5b)          7x7x832, 7x7x1024
    avg pool        7x7/1         1x1x1024
    dropout (40%), linear, softmax

An inception module runs four branches on the same input and concatenates them along
the channels: a 1x1 conv; a 1x1 "reduce" then a 3x3; a 1x1 reduce then a 5x5; a 3x3/1
max pool then a 1x1 "pool projection". Every convolution is followed by a ReLU. Pools
round up (``ceil_mode``) as in the reference Caffe model, so 112 -> 56 -> 28 -> 14 -> 7.

The network is 22 weight layers deep along its longest path (conv1, the two stem convs,
two per inception module, the classifier) and has nine inception modules.

``aux_logits=True`` adds the paper's two auxiliary classifiers (the course notes'
``softmax0`` / ``softmax1``) on the outputs of 4a and 4d: 5x5/3 average pool, 1x1 conv
with 128 filters + ReLU, FC-1024 + ReLU, 70% dropout, FC-classes. They only run in
training mode, where ``forward`` returns ``(logits, aux1, aux2)`` (the paper adds their
losses with weight 0.3); in eval mode ``forward`` returns the logits alone. They are not
part of ``features`` and their parameters are not in the published counts (the paper
discards them at inference). They are off by default so that the model is a plain
classifier that fits any training loop; ``img_size`` sizes their FC-1024 layer.

``bn=True`` is the batch-normalised variant of the reference implementations (conv
without bias -> BN -> ReLU, no LRN); the paper has plain conv + ReLU and two LRNs.

``variant="torchvision"`` (registered as ``googlenet_tv``) is torchvision's GoogLeNet, which
its weight files need: batch norm with epsilon 1e-3 after every convolution (no LRN), 3x3
kernels in the "5x5" branch, a 2x2/2 max pool before 5a (the paper: 3x3/2), dropout 0.2,
auxiliary heads that average-pool to 4x4 whatever the input (FC-1024 on 2048 values), and
``transform_input``: the input, normalised with ImageNet's mean and std, is mapped to
(x - 0.5) / 0.5, as torchvision does for its pretrained weights.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelOptionError
from ..layers import ConvNormAct, GlobalAvgPool2d, LocalResponseNorm
from ..layers.probe import output_shape
from .base import Network, init_weights, pair
from .registry import SeedFigure, register

PAPER = "Going Deeper with Convolutions"

#   module: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)      paper Table 1
INCEPTION: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# stage: its inception modules (a 3x3/2 max pool opens every stage after the first)
STAGES = {"inception3": ("3a", "3b"), "inception4": ("4a", "4b", "4c", "4d", "4e"),
          "inception5": ("5a", "5b")}
AUX_AFTER = ("4a", "4d")  # softmax0 and softmax1 of the paper's Figure 3


VARIANTS = ("paper", "torchvision")
TV_BN_EPS = 1e-3        # torchvision's BasicConv2d


def _conv(in_ch: int, out_ch: int, k: int, bn: bool, stride: int = 1) -> ConvNormAct:
    return ConvNormAct(in_ch, out_ch, k, stride, norm="bn" if bn else None)


class InputTransform(nn.Module):
    """torchvision's ``transform_input``: per channel ``x * std / 0.5 + (mean - 0.5) / 0.5``,
    which turns an input normalised with ImageNet's mean and std into one scaled to [-1, 1]
    (the range the ported weights were trained on). Written as torchvision writes it."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.unsqueeze(x[:, i], 1) * (s / 0.5) + (m - 0.5) / 0.5
                          for i, (m, s) in enumerate(zip(self.MEAN, self.STD))], 1)


def _lrn() -> LocalResponseNorm:
    # the BVLC Caffe reference: local_size 5, alpha 1e-4 (Caffe divides it by n), beta 0.75, k 1
    return LocalResponseNorm(5, 1e-4 / 5, 0.75, 1.0)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, ceil_mode=True)


class Inception(nn.Module):
    """Four parallel branches, concatenated: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1."""

    def __init__(self, in_ch: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int,
                 n5x5: int, pool_proj: int, bn: bool = False, k5: int = 5):
        super().__init__()
        self.b1x1 = _conv(in_ch, n1x1, 1, bn)
        self.b3x3 = nn.Sequential()
        self.b3x3.add_module("reduce", _conv(in_ch, n3x3red, 1, bn))
        self.b3x3.add_module("conv", _conv(n3x3red, n3x3, 3, bn))
        self.b5x5 = nn.Sequential()
        self.b5x5.add_module("reduce", _conv(in_ch, n5x5red, 1, bn))
        self.b5x5.add_module("conv", _conv(n5x5red, n5x5, k5, bn))
        self.bpool = nn.Sequential()
        self.bpool.add_module("pool", nn.MaxPool2d(3, 1, padding=1, ceil_mode=True))
        self.bpool.add_module("proj", _conv(in_ch, pool_proj, 1, bn))
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1x1(x), self.b3x3(x), self.b5x5(x), self.bpool(x)], 1)


class AuxClassifier(nn.Sequential):
    """The auxiliary head: 5x5/3 avg pool, 1x1 conv 128 + ReLU, FC-1024 + ReLU, dropout 0.7, FC.

    ``adaptive=True``: torchvision's, an average pool to ``pooled`` whatever the input."""

    def __init__(self, in_ch: int, num_classes: int, pooled: tuple[int, int], bn: bool = False,
                 adaptive: bool = False):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pooled) if adaptive else nn.AvgPool2d(5, 3)
        self.conv = _conv(in_ch, 128, 1, bn)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * pooled[0] * pooled[1], 1024)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.7)
        self.fc = nn.Linear(1024, num_classes)


class GoogLeNet(Network):
    """A :class:`Network` whose training-mode forward also returns the auxiliary logits."""

    def __init__(self, features: nn.Sequential, head: nn.Module, num_classes: int,
                 aux: nn.ModuleDict | None = None):
        super().__init__(features, head, None, num_classes)  # stem, inception3..5
        self.aux = aux

    def forward(self, x: torch.Tensor):
        if self.aux is None or not self.training:
            return super().forward(x)
        f = self.features
        x = f.inception3(f.stem(x))
        aux_logits = []
        for name, block in f.inception4.named_children():
            x = block(x)
            if name in self.aux:
                aux_logits.append(self.aux[name](x))
        x = f.inception5(x)
        return (self.forward_head(x), *aux_logits)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for head in (self.aux.values() if self.aux is not None else ()):
            head.fc = (nn.Linear(head.fc.in_features, num_classes).to(head.fc1.weight.device)
                       if num_classes > 0 else nn.Identity())


def _stem(in_chans: int, bn: bool, transform_input: bool = False) -> nn.Sequential:
    stem = nn.Sequential()
    if transform_input:
        stem.add_module("transform", InputTransform())
    stem.add_module("conv1", _conv(in_chans, 64, 7, bn, stride=2))
    stem.add_module("pool1", _pool())
    if not bn:
        stem.add_module("norm1", _lrn())
    stem.add_module("conv2_reduce", _conv(64, 64, 1, bn))
    stem.add_module("conv2", _conv(64, 192, 3, bn))
    if not bn:
        stem.add_module("norm2", _lrn())
    stem.add_module("pool2", _pool())
    return stem


@register("googlenet", family="googlenet", paper=PAPER, year=2014, input_size=(3, 224, 224),
          params=6_998_552, macs=1_550_000_000, exact=False,
          source="params: the BVLC Caffe reference bvlc_googlenet (6,998,552, as CaffeJS counts "
                 "it; Table 1's rows sum to 6.8M); mult-adds: MobileNet paper Table 8 (1550M; "
                 "the paper: 1.5G, its Table 1 counts conv1 as 34M instead of 118M)",
          seed_figures=(
              SeedFigure("params", 5e6, 0.5e6, "Only 5 million parameters!",
                         "Deep Architectures slides, GoogLeNet [2014]"),
              SeedFigure("params", 6.8e6, 0.05e6, "GoogleNet 69.8% 1550 6.8",
                         "Advanced deep learning slides, MobileNet Table 8"),
              SeedFigure("macs", 1550e6, 0.5e6, "GoogleNet 69.8% 1550 6.8",
                         "Advanced deep learning slides, MobileNet Table 8")),
          description="Inception v1: nine inception modules, 22 layers; aux_logits=True adds "
                      "the two auxiliary classifiers for training")
def googlenet(num_classes: int = 1000, in_chans: int = 3, img_size=224, aux_logits: bool = False,
              bn: bool | None = None, drop_rate: float = 0.4, variant: str = "paper",
              transform_input: bool | None = None) -> GoogLeNet:
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), not {drop_rate}.")
    if variant not in VARIANTS:
        raise ModelOptionError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}.")
    tv = variant == "torchvision"
    if bn is None:
        bn = tv
    if tv and not bn:
        raise ModelOptionError("torchvision's GoogLeNet has batch norm after every convolution; "
                               "bn=False is the paper's variant='paper'.")
    if transform_input is None:          # torchvision's weights expect it (RGB input only)
        transform_input = tv and in_chans == 3
    if transform_input and in_chans != 3:
        raise ModelOptionError(f"transform_input rescales the three ImageNet channels; it "
                               f"cannot take in_chans={in_chans} (give transform_input=False).")
    features = nn.Sequential()
    features.add_module("stem", _stem(in_chans, bn, transform_input))
    c = 192
    for s, (stage, modules) in enumerate(STAGES.items()):
        block = nn.Sequential()
        if s:
            # torchvision pools 2x2/2 before 5a (same 14 -> 7 at 224x224)
            block.add_module("pool", nn.MaxPool2d(2, 2, ceil_mode=True)
                             if tv and stage == "inception5" else _pool())
        for name in modules:
            block.add_module(name, Inception(c, *INCEPTION[name], bn=bn, k5=3 if tv else 5))
            c = block[-1].out_channels
        features.add_module(stage, block)
    head = nn.Sequential()
    head.add_module("pool", GlobalAvgPool2d())  # the paper's 7x7/1 average pool at 224x224
    head.add_module("drop", nn.Dropout(drop_rate))
    head.add_module("fc", nn.Linear(c, num_classes))
    aux = None
    if aux_logits:
        aux = (_tv_aux_heads(features, num_classes) if tv else
               _aux_heads(features, in_chans, pair(img_size), num_classes, bn))
    model = init_weights(GoogLeNet(features, head, num_classes, aux))
    if tv:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = TV_BN_EPS
    return model


register("googlenet_tv", family="googlenet", paper=PAPER, year=2014, input_size=(3, 224, 224),
         params=6_624_904, macs=1_498_376_192,
         source="torchvision's GoogLeNet (the reference implementation of its weight files): "
                "num_params 6,624,904, 1.498 GFLOPS at 224x224",
         description="torchvision's GoogLeNet, which its weight files need: batch norm "
                     "(eps 1e-3), 3x3 kernels in the \"5x5\" branch, a 2x2 pool before 5a, "
                     "transform_input, dropout 0.2; aux_logits=True adds its auxiliary heads",
         variant="torchvision", drop_rate=0.2)(googlenet)


def _tv_aux_heads(features: nn.Sequential, num_classes: int) -> nn.ModuleDict:
    """torchvision's auxiliary classifiers: 4x4 adaptive average pool, so any input works."""
    return nn.ModuleDict({name: AuxClassifier(getattr(features.inception4, name).out_channels,
                                              num_classes, (4, 4), True, adaptive=True)
                          for name in AUX_AFTER})


def _aux_heads(features: nn.Sequential, in_chans: int, img_size: tuple[int, int],
               num_classes: int, bn: bool) -> nn.ModuleDict:
    """The auxiliary classifiers after 4a and 4d, their FC-1024 sized for ``img_size``."""
    trunk = nn.Sequential(features.stem, features.inception3, features.inception4.pool)
    c, h, w = output_shape(trunk, (in_chans, *img_size), prefix="features")
    if min(h, w) < 5:
        raise ModelOptionError(
            f"the auxiliary classifiers need the 4a map to be at least 5x5 for their 5x5 "
            f"average pool, but a {img_size[0]}x{img_size[1]} input gives {h}x{w}; use an "
            f"input of at least 79x79 (give img_size) or aux_logits=False.")
    pooled = ((h - 5) // 3 + 1, (w - 5) // 3 + 1)
    return nn.ModuleDict({name: AuxClassifier(getattr(features.inception4, name).out_channels,
                                              num_classes, pooled, bn)
                          for name in AUX_AFTER})
