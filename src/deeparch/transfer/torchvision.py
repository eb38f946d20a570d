"""torchvision's weight files, architecture by architecture: which deeparch model computes
the same function, and how each of torchvision's tensor names maps to deeparch's.

Every mapping is written from the structure of the two networks -- torchvision's
``features.<i>`` indices are recomputed from deeparch's configuration tables (VGG's Table
1, SqueezeNet's stages, MobileNet v2's Table 2, EfficientNet's stages), never guessed from
the order of the tensors -- and every tensor's shape is checked before anything is copied.
No tensor needs reshaping: deeparch keeps PyTorch's layouts (OIHW kernels, ``out x in``
linear weights). What does differ is a few settings, recorded per architecture here: the
batch-norm epsilon (``bn_eps``), which the loader sets on the model and reports.

torchvision 0.14 has every architecture below, ``resnext101_64x4d`` included.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..models.efficientnet import B0_STAGES
from ..models.mobilenet import V2_CFG
from ..models.squeezenet import CFGS as SQUEEZENET_CFGS
from ..models.vgg import CFGS as VGG_CFGS

Rename = Callable[[str], "str | None"]


@dataclass(frozen=True)
class TorchvisionArch:
    """One torchvision builder (``name``) and the registered deeparch model that computes
    the same function (``model``). ``rename`` maps a torchvision *module* path
    (``layer1.0.conv1``) to deeparch's (``features.layer1.0.conv1``), None where the name
    is not this architecture's; ``marker`` is a tensor every file of the family has."""

    name: str
    model: str
    marker: str
    rename: Rename
    bn_eps: float = 1e-5
    note: str = ""

    def map_key(self, key: str) -> str | None:
        module, _, attr = key.rpartition(".")
        new = self.rename(module) if module else None
        return f"{new}.{attr}" if new is not None else None


def _table(pairs: dict[str, str]) -> Rename:
    """A rename by module prefix: the longest torchvision prefix that matches wins."""
    order = sorted(pairs, key=len, reverse=True)

    def rename(module: str) -> str | None:
        for old in order:
            if module == old or module.startswith(old + "."):
                return pairs[old] + module[len(old):]
        return None

    return rename


# --- AlexNet ----------------------------------------------------------------------------

_ALEXNET = _table({
    "features.0": "features.conv1", "features.3": "features.conv2",
    "features.6": "features.conv3", "features.8": "features.conv4",
    "features.10": "features.conv5",
    # classifier: 0 dropout, 1 fc6, 2 relu, 3 dropout, 4 fc7, 5 relu, 6 fc8
    "classifier.1": "head.fc6", "classifier.4": "head.fc7", "classifier.6": "head.fc8",
})


# --- VGG --------------------------------------------------------------------------------

def _vgg(cfg: str, batch_norm: bool) -> Rename:
    """torchvision's ``make_layers``: conv, [BN], ReLU per layer, a max pool per block."""
    pairs, i = {}, 0
    for b, layers in enumerate(VGG_CFGS[cfg], 1):
        for j, _ in enumerate(layers, 1):
            pairs[f"features.{i}"] = f"features.block{b}.conv{j}"
            i += 1
            if batch_norm:
                pairs[f"features.{i}"] = f"features.block{b}.bn{j}"
                i += 1
            i += 1                                              # ReLU
        i += 1                                                  # max pool
    # classifier: 0 fc6, 1 relu, 2 dropout, 3 fc7, 4 relu, 5 dropout, 6 fc8
    pairs.update({"classifier.0": "head.fc6", "classifier.3": "head.fc7",
                  "classifier.6": "head.fc8"})
    return _table(pairs)


_VGG_NOTE = ("torchvision's VGG average-pools the last map to 7x7 before its classifier: at "
             "224x224 the map is 7x7 already and this model computes the same; for other "
             "input sizes build it with adaptive_pool=7.")


# --- ResNet, ResNeXt, Wide ResNet -------------------------------------------------------

def _resnet(module: str) -> str | None:
    # deeparch keeps torchvision's names inside the units (conv1, bn1, downsample.0...)
    if module in ("conv1", "bn1"):
        return f"features.stem.{module}"
    if re.fullmatch(r"layer[1-4](\..+)?", module):
        return f"features.{module}"
    if module == "fc":
        return "head.fc"
    return None


# --- DenseNet ---------------------------------------------------------------------------

def _densenet(module: str) -> str | None:
    if module in ("features.conv0", "features.norm0"):
        return f"features.stem.{module.split('.')[1]}"
    # "norm.1" is the name in torchvision's published files (before PyTorch 0.4 forbade dots
    # in module names); torchvision renames it on load, and so do we
    m = re.fullmatch(r"features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)\.?([12])", module)
    if m:
        return f"features.block{m[1]}.layer{m[2]}.{m[3]}{m[4]}"
    m = re.fullmatch(r"features\.transition(\d+)\.(norm|conv)", module)
    if m:
        return f"features.transition{m[1]}.{m[2]}"
    if module == "features.norm5":
        return "features.norm5.bn"
    if module == "classifier":
        return "head.fc"
    return None


# --- SqueezeNet -------------------------------------------------------------------------

def _squeezenet(version: str) -> Rename:
    """features: 0 conv1, 1 ReLU, 2 max pool, then the fire modules, a pool opening every
    stage after the first (as deeparch's CFGS lays them out)."""
    pairs, i = {"features.0": "features.stem.conv1.conv"}, 3
    for s, fires in enumerate(SQUEEZENET_CFGS[version]["stages"], 1):
        if s > 1:
            i += 1                                              # max pool
        for n in fires:
            for part in ("squeeze", "expand1x1", "expand3x3"):
                pairs[f"features.{i}.{part}"] = f"features.stage{s}.fire{n}.{part}.conv"
            i += 1
    pairs["classifier.1"] = "head.conv10"          # 0 dropout, 1 conv10, 2 ReLU, 3 pool
    return _table(pairs)


# --- GoogLeNet --------------------------------------------------------------------------

_INCEPTION = {"3a": 3, "3b": 3, "4a": 4, "4b": 4, "4c": 4, "4d": 4, "4e": 4, "5a": 5, "5b": 5}
_GOOGLENET_PAIRS = {
    "conv1": "features.stem.conv1", "conv2": "features.stem.conv2_reduce",
    "conv3": "features.stem.conv2", "fc": "head.fc",
    # torchvision's aux1 follows 4a and aux2 follows 4d, as deeparch's aux["4a"] / aux["4d"]
    "aux1.conv": "aux.4a.conv", "aux1.fc1": "aux.4a.fc1", "aux1.fc2": "aux.4a.fc",
    "aux2.conv": "aux.4d.conv", "aux2.fc1": "aux.4d.fc1", "aux2.fc2": "aux.4d.fc",
}
for _m, _s in _INCEPTION.items():
    _p, _q = f"inception{_m}", f"features.inception{_s}.{_m}"
    _GOOGLENET_PAIRS.update({
        f"{_p}.branch1": f"{_q}.b1x1",
        f"{_p}.branch2.0": f"{_q}.b3x3.reduce", f"{_p}.branch2.1": f"{_q}.b3x3.conv",
        f"{_p}.branch3.0": f"{_q}.b5x5.reduce", f"{_p}.branch3.1": f"{_q}.b5x5.conv",
        f"{_p}.branch4.1": f"{_q}.bpool.proj",                 # branch4.0 is the max pool
    })
_GOOGLENET = _table(_GOOGLENET_PAIRS)


# --- MobileNet v2 -----------------------------------------------------------------------

def _mobilenet_v2() -> Rename:
    """features: 0 stem, 1..17 the inverted residuals of Table 2, 18 the last 1x1 conv."""
    pairs = {"features.0.0": "features.stem.conv", "features.0.1": "features.stem.bn"}
    k = 1
    for s, (t, _, n, _) in enumerate(V2_CFG, 1):
        for b in range(1, n + 1):
            src, dst = f"features.{k}.conv", f"features.stage{s}.block{b}"
            # with t == 1 there is no expansion: conv = [dw (conv, bn), project conv, bn]
            parts = (["depthwise"] if t == 1 else ["expand", "depthwise"])
            for j, part in enumerate(parts):
                pairs[f"{src}.{j}.0"] = f"{dst}.{part}.conv"
                pairs[f"{src}.{j}.1"] = f"{dst}.{part}.bn"
            pairs[f"{src}.{len(parts)}"] = f"{dst}.project.conv"
            pairs[f"{src}.{len(parts) + 1}"] = f"{dst}.project.bn"
            k += 1
    pairs.update({f"features.{k}.0": "features.conv_last.conv",
                  f"features.{k}.1": "features.conv_last.bn",
                  "classifier.1": "head.fc"})                 # 0 is the dropout
    return _table(pairs)


# --- ShuffleNet v2 ----------------------------------------------------------------------

_SHUFFLE_BRANCH1 = {"0": "dwconv.conv", "1": "dwconv.bn", "2": "conv.conv", "3": "conv.bn"}
_SHUFFLE_BRANCH2 = {"0": "conv1.conv", "1": "conv1.bn", "3": "dwconv.conv", "4": "dwconv.bn",
                    "5": "conv2.conv", "6": "conv2.bn"}        # 2 and 7 are ReLUs


def _shufflenet_v2(module: str) -> str | None:
    if module in ("conv1.0", "conv1.1"):
        return f"features.stem.conv1.{'conv' if module.endswith('0') else 'bn'}"
    if module in ("conv5.0", "conv5.1"):
        return f"features.conv5.{'conv' if module.endswith('0') else 'bn'}"
    if module == "fc":
        return "head.fc"
    m = re.fullmatch(r"stage([2-4])\.(\d+)\.branch([12])\.(\d)", module)
    if m:
        table = _SHUFFLE_BRANCH1 if m[3] == "1" else _SHUFFLE_BRANCH2
        if m[4] in table:
            return f"features.stage{m[1]}.unit{int(m[2]) + 1}.branch{m[3]}.{table[m[4]]}"
    return None


# --- EfficientNet -----------------------------------------------------------------------

def _efficientnet(module: str) -> str | None:
    """features: 0 stem, 1..7 the stages of Table 1 (``<stage>.<block>.block.<j>``), 8 the
    head conv; a block is [expand,] depthwise, squeeze-excite, project."""
    if module in ("features.0.0", "features.0.1"):
        return f"features.stem.{'conv' if module.endswith('0') else 'bn'}"
    if module in ("features.8.0", "features.8.1"):
        return f"features.head_conv.{'conv' if module.endswith('0') else 'bn'}"
    if module == "classifier.1":
        return "head.fc"                                         # 0 is the dropout
    m = re.fullmatch(r"features\.([1-7])\.(\d+)\.block\.(\d)(?:\.(0|1|fc1|fc2))?", module)
    if not m:
        return None
    stage, block, j, inner = int(m[1]), int(m[2]), int(m[3]), m[4]
    parts = ["depthwise", "se", "project"]
    if B0_STAGES[stage - 1][0] != 1:
        parts.insert(0, "expand")
    if j >= len(parts):
        return None
    part = parts[j]
    if (part == "se") != (inner in ("fc1", "fc2")) or inner is None:
        return None
    inner = {"0": "conv", "1": "bn"}.get(inner, inner)
    return f"features.stage{stage}.block{block + 1}.{part}.{inner}"


# --- the table ----------------------------------------------------------------------------

def _archs() -> dict[str, TorchvisionArch]:
    a: list[TorchvisionArch] = [
        TorchvisionArch("alexnet", "alexnet_tv", "features.10.weight", _ALEXNET),
        TorchvisionArch("googlenet", "googlenet_tv", "inception3a.branch1.conv.weight",
                        _GOOGLENET, bn_eps=1e-3),
        TorchvisionArch("mobilenet_v2", "mobilenet_v2", "features.1.conv.0.0.weight",
                        _mobilenet_v2()),
        TorchvisionArch("squeezenet1_0", "squeezenet1_0", "features.3.squeeze.weight",
                        _squeezenet("1_0")),
        TorchvisionArch("squeezenet1_1", "squeezenet1_1", "features.3.squeeze.weight",
                        _squeezenet("1_1")),
    ]
    for depth, cfg in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
        for bn in (False, True):
            name = f"vgg{depth}{'_bn' if bn else ''}"
            a.append(TorchvisionArch(name, name, "classifier.6.weight", _vgg(cfg, bn),
                                     note=_VGG_NOTE))
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                 "wide_resnet50_2", "wide_resnet101_2"):
        a.append(TorchvisionArch(name, name, "layer1.0.conv1.weight", _resnet))
    for depth in (121, 161, 169, 201):
        a.append(TorchvisionArch(f"densenet{depth}", f"densenet{depth}", "features.norm5.weight",
                                 _densenet))
    for width in ("0_5", "1_0", "1_5", "2_0"):
        a.append(TorchvisionArch(f"shufflenet_v2_x{width}", f"shufflenet_v2_x{width}",
                                 "stage2.0.branch2.0.weight", _shufflenet_v2))
    for b in range(8):
        # torchvision 0.14 builds B0-B4 with PyTorch's BatchNorm2d (eps 1e-5) and B5-B7 with
        # eps 1e-3 (its weights for those were ported from TensorFlow)
        a.append(TorchvisionArch(f"efficientnet_b{b}", f"efficientnet_b{b}",
                                 "features.1.0.block.0.0.weight", _efficientnet,
                                 bn_eps=1e-5 if b < 5 else 1e-3))
    return {x.name: x for x in a}


ARCHS: dict[str, TorchvisionArch] = _archs()


def candidates(keys) -> list[TorchvisionArch]:
    """The architectures whose family marker is among ``keys`` (a file's tensor names)."""
    keys = set(keys)
    return [a for a in ARCHS.values() if a.marker in keys]


def by_model(model_name: str | None) -> list[TorchvisionArch]:
    """The torchvision architectures that the registered ``model_name`` reproduces."""
    return [a for a in ARCHS.values() if a.model == model_name]
