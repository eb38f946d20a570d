"""keras.applications' weight files, read with h5py and mapped onto deeparch's models.

Two formats, both HDF5, both read without importing Keras (nothing in a file runs):

* the legacy ``.h5`` of Keras 2 / tf.keras (``model.save_weights('x.h5')``,
  ``model.save('x.h5')`` -- its ``model_weights`` group --, and the ImageNet files
  keras.applications downloads, e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``): the
  root's ``layer_names`` attribute lists the layers, each layer's group lists its
  ``weight_names`` (``conv1_conv/kernel:0``) and holds the arrays under them;
* Keras 3's ``.weights.h5`` (``model.save_weights('x.weights.h5')``): one group per layer
  under ``layers/``, keyed by an *object path* made of the layer's class and a counter
  (``layers/conv2d_3/vars/0``), not by the layer's name. Those paths depend on how many layers
  of a class came before, so they are no ground to map on; what the file does record is the
  layer's own name, as the ``name`` attribute of each ``vars`` group (Keras 3.6 and later).
  The reader keys every array by that name and the variable's meaning, which the class
  fixes (a ``batch_normalization``'s vars 0..3 are gamma, beta, moving mean, moving
  variance). A file without those names is refused with one sentence: mapping by position
  would be a guess.

Either way a file becomes ``{"<layer name>/<variable>": tensor}`` in Keras' layouts. The
mapping onto deeparch's modules is written from the structure of both networks: the Keras
layer names (``conv2_block1_1_conv``, ``block_3_expand_BN``, ``block6c_se_reduce``...) are
computed from deeparch's configuration tables (ResNet's ``DEPTHS``, DenseNet's
``IMAGENET_CFGS``, MobileNet's ``V1_STAGES`` / ``V2_CFG``, EfficientNet's ``B0_STAGES``...).
Layers Keras leaves unnamed (Xception's four shortcut convolutions and their batch norms,
EfficientNet's ``Normalization``) carry Keras' automatic names, ``conv2d``, ``conv2d_1``...;
their counter is their order of creation, which is the order of the blocks.

Layouts: convolution kernels HWIO -> OIHW; depthwise kernels (H, W, C, 1) -> (C, 1, H, W);
dense kernels (in, out) -> (out, in); MobileNet's 1x1 ``conv_preds`` -> a Linear; VGG's
``fc1`` reads a channels-last Flatten, so its input features are permuted from (H, W, C) to
deeparch's (C, H, W) order; the models Keras feeds ``caffe``-preprocessed (BGR) images get
their first convolution's input channels reversed, so the loaded model reads RGB.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import WeightsError, WeightsMismatchError
from . import preprocess as pre
from .report import LoadReport

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FORMATS = ("keras-h5", "keras-weights-h5")

# what each variable of a Keras 3 layer is, by the layer's class (the order of its weights)
_VARS = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "normalization": ("mean", "variance", "count"),
}
# Keras 1 / 2.0 names (VGG's ``block1_conv1_W_1:0``) for the same variables
_OLD_NAMES = {"W": "kernel", "b": "bias", "running_mean": "moving_mean",
              "running_std": "moving_variance"}
_KNOWN = {v for vs in _VARS.values() for v in vs}


def is_hdf5(head: bytes) -> bool:
    return head[:8] == HDF5_SIGNATURE


# --------------------------------------------------------------------------- reading

def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _variable(weight_name: str) -> str:
    """``conv1_conv/kernel:0`` -> ``kernel``; ``block1_conv1_W_1:0`` -> ``kernel``."""
    last = re.sub(r":\d+$", "", weight_name.split("/")[-1])
    if last in _KNOWN or last == "depthwise_kernel":
        return last
    m = re.search(r"_(depthwise_kernel|pointwise_kernel|kernel|bias|W|b|gamma|beta|running_mean"
                  r"|running_std|moving_mean|moving_variance)(?:_\d+)?$", last)
    if m:
        return _OLD_NAMES.get(m[1], m[1])
    return last


def read_keras(path: Path):
    """The arrays of a Keras ``.h5`` / ``.weights.h5`` file as a :class:`WeightsFile` of
    ``{"<layer>/<variable>": tensor}`` (Keras' layouts)."""
    import h5py

    from .files import WeightsFile

    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "model_weights" in f:
                root = f if "layer_names" in f.attrs else f["model_weights"]
                tensors, order = _read_legacy(root, path)
                fmt = "keras-h5"
                meta = {k: _text(f.attrs[k]) for k in ("keras_version", "backend")
                        if k in f.attrs}
                if "keras_version" not in meta and "keras_version" in root.attrs:
                    meta["keras_version"] = _text(root.attrs["keras_version"])
            elif "layers" in f or "vars" in f:
                tensors, order = _read_v3(f, path)
                fmt, meta = "keras-weights-h5", {}
            else:
                raise WeightsError(f"{path} is an HDF5 file but holds no Keras weights: it has "
                                   f"neither the layer_names of a Keras 2 .h5 nor the layers/ "
                                   f"of a Keras 3 .weights.h5.")
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a readable Keras .h5 file ({first.rstrip('.')}): it "
                           f"is truncated or corrupt.") from None
    if not tensors:
        raise WeightsError(f"{path} is a Keras weights file with no weights in it.")
    meta["keras_layers"] = json.dumps(order)
    return WeightsFile(tensors, fmt, path, meta)


def _tensor(value) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.array(value, dtype=np.float32))


def _read_legacy(root, path) -> tuple[dict[str, torch.Tensor], list[str]]:
    tensors: dict[str, torch.Tensor] = {}
    order = []
    for name in (_text(n) for n in root.attrs["layer_names"]):
        g = root[name]
        names = [_text(n) for n in g.attrs.get("weight_names", [])]
        if len(names):
            order.append(name)
        for i, wn in enumerate(names):
            var = _variable(wn)
            key = f"{name}/{var}"
            if key in tensors:                  # two variables of one name: keep their order
                key = f"{name}/{i}"
            tensors[key] = _tensor(g[wn][()])
    return tensors, order


def _read_v3(f, path) -> tuple[dict[str, torch.Tensor], list[str]]:
    import h5py

    tensors: dict[str, torch.Tensor] = {}
    order: list[str] = []
    found: list[tuple[str, object]] = []

    def visit(p, obj):
        if isinstance(obj, h5py.Group) and p.split("/")[-1] == "vars" and len(obj):
            found.append((p, obj))

    f.visititems(visit)
    for p, g in found:
        name = g.attrs.get("name")
        if name is None:
            raise WeightsError(f"{path} is a Keras 3 .weights.h5 file that does not record its "
                               f"layers' names (written before Keras 3.6): its {p} could be any "
                               f"layer, and weights are not mapped by guesswork; save it again "
                               f"with a newer Keras, or as a legacy .h5.")
        name = _text(name)
        cls = re.sub(r"_\d+$", "", p.split("/")[-2])
        known = _VARS.get(cls, ())
        keys = sorted(g.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
        if cls == "batch_normalization" and len(keys) != 4:
            known = ()            # without scale or centre the order is ambiguous: by index
        order.append(name)
        for k in keys:
            i = int(k) if k.isdigit() else None
            var = known[i] if i is not None and i < len(known) else k
            tensors[f"{name}/{var}"] = _tensor(g[k][()])
    return tensors, order


def layers_of(wf) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in wf.tensors.items():
        layer, _, var = k.rpartition("/")
        out.setdefault(layer, {})[var] = v
    return out


# --------------------------------------------------------------------------- architectures

@dataclass(frozen=True)
class KLayer:
    """One Keras layer with weights: its name (``conv2d#1`` stands for the first of the
    automatically named ``conv2d`` layers), what it is, and the deeparch module it fills."""

    name: str
    kind: str            # conv, dwconv, sepconv, bn, dense, flat_dense, conv_dense, norm
    module: str
    top: bool = False    # part of include_top: the classifier


@dataclass(frozen=True)
class KerasArch:
    name: str                          # keras.applications' name, e.g. "ResNet50"
    model: str                         # the registered deeparch model that computes it
    layers: tuple[KLayer, ...]
    bn_eps: float | None
    preprocess: str                    # caffe, tf, torch or efficientnet
    size: int = 224
    note: str = ""

    @property
    def bgr(self) -> bool:
        return self.preprocess == "caffe"

    def names(self, top: bool = True) -> set[str]:
        return {x.name for x in self.layers if top or not x.top}


def _conv_bn(keras: str, module: str, bn: str | None = None, kind: str = "conv") -> list[KLayer]:
    out = [KLayer(keras, kind, f"{module}.conv")]
    out.append(KLayer(bn or f"{keras}_bn", "bn", f"{module}.bn"))
    return out


def _vgg(cfg: str) -> list[KLayer]:
    from ..models.vgg import CFGS

    layers = []
    for b, convs in enumerate(CFGS[cfg], 1):
        for j, _ in enumerate(convs, 1):
            layers.append(KLayer(f"block{b}_conv{j}", "conv", f"features.block{b}.conv{j}"))
    return layers + [KLayer("fc1", "flat_dense", "head.fc6", True),
                     KLayer("fc2", "dense", "head.fc7", True),
                     KLayer("predictions", "dense", "head.fc8", True)]


def _resnet(depth: int) -> list[KLayer]:
    from ..models.resnet import DEPTHS

    layers = [KLayer("conv1_conv", "conv", "features.stem.conv1"),
              KLayer("conv1_bn", "bn", "features.stem.bn1")]
    for s, n in enumerate(DEPTHS[depth][1]):
        for i in range(n):
            p, m = f"conv{s + 2}_block{i + 1}", f"features.layer{s + 1}.{i}"
            if i == 0:
                layers += [KLayer(f"{p}_0_conv", "conv", f"{m}.downsample.0"),
                           KLayer(f"{p}_0_bn", "bn", f"{m}.downsample.1")]
            for j in (1, 2, 3):
                layers += [KLayer(f"{p}_{j}_conv", "conv", f"{m}.conv{j}"),
                           KLayer(f"{p}_{j}_bn", "bn", f"{m}.bn{j}")]
    return layers + [KLayer("predictions", "dense", "head.fc", True)]


def _resnet_v2(depth: int) -> list[KLayer]:
    from ..models.resnet import DEPTHS

    layers = [KLayer("conv1_conv", "conv", "features.stem.conv1")]
    for s, n in enumerate(DEPTHS[depth][1]):
        for i in range(n):
            p, m = f"conv{s + 2}_block{i + 1}", f"features.layer{s + 1}.{i}"
            layers.append(KLayer(f"{p}_preact_bn", "bn", f"{m}.preact_bn"))
            if i == 0:
                layers.append(KLayer(f"{p}_0_conv", "conv", f"{m}.downsample"))
            for j in (1, 2):
                layers += [KLayer(f"{p}_{j}_conv", "conv", f"{m}.conv{j}"),
                           KLayer(f"{p}_{j}_bn", "bn", f"{m}.bn{j}")]
            layers.append(KLayer(f"{p}_3_conv", "conv", f"{m}.conv3"))
    return layers + [KLayer("post_bn", "bn", "features.layer4.bn"),
                     KLayer("predictions", "dense", "head.fc", True)]


def _densenet(depth: int) -> list[KLayer]:
    from ..models.densenet import IMAGENET_CFGS

    blocks, _ = IMAGENET_CFGS[depth]
    layers = [KLayer("conv1_conv", "conv", "features.stem.conv0"),
              KLayer("conv1_bn", "bn", "features.stem.norm0")]
    for b, n in enumerate(blocks, 1):
        for i in range(1, n + 1):
            p, m = f"conv{b + 1}_block{i}", f"features.block{b}.layer{i}"
            layers += [KLayer(f"{p}_0_bn", "bn", f"{m}.norm1"),
                       KLayer(f"{p}_1_conv", "conv", f"{m}.conv1"),
                       KLayer(f"{p}_1_bn", "bn", f"{m}.norm2"),
                       KLayer(f"{p}_2_conv", "conv", f"{m}.conv2")]
        if b < len(blocks):
            layers += [KLayer(f"pool{b + 1}_bn", "bn", f"features.transition{b}.norm"),
                       KLayer(f"pool{b + 1}_conv", "conv", f"features.transition{b}.conv")]
    return layers + [KLayer("bn", "bn", f"features.norm{len(blocks) + 1}.bn"),
                     KLayer("predictions", "dense", "head.fc", True)]


def _mobilenet_v1() -> list[KLayer]:
    from ..models.mobilenet import V1_STAGES

    layers = _conv_bn("conv1", "features.stem")
    k = 0
    for s, stage in enumerate(V1_STAGES, 1):
        for i, _ in enumerate(stage, 1):
            k += 1
            m = f"features.stage{s}.block{i}"
            layers += _conv_bn(f"conv_dw_{k}", f"{m}.dw", kind="dwconv")
            layers += _conv_bn(f"conv_pw_{k}", f"{m}.pw")
    return layers + [KLayer("conv_preds", "conv_dense", "head.fc", True)]


def _mobilenet_v2() -> list[KLayer]:
    from ..models.mobilenet import V2_CFG

    layers = _conv_bn("Conv1", "features.stem", "bn_Conv1")
    k = 0
    for s, (_, _, n, _) in enumerate(V2_CFG, 1):
        for b in range(1, n + 1):
            p, m = ("expanded_conv_" if k == 0 else f"block_{k}_"), f"features.stage{s}.block{b}"
            if k:
                layers += _conv_bn(f"{p}expand", f"{m}.expand", f"{p}expand_BN")
            layers += _conv_bn(f"{p}depthwise", f"{m}.depthwise", f"{p}depthwise_BN", "dwconv")
            layers += _conv_bn(f"{p}project", f"{m}.project", f"{p}project_BN")
            k += 1
    return layers + _conv_bn("Conv_1", "features.conv_last") + [
        KLayer("predictions", "dense", "head.fc", True)]


def _xception() -> list[KLayer]:
    from ..models.xception import ENTRY, MIDDLE

    layers = (_conv_bn("block1_conv1", "features.stem.conv1")
              + _conv_bn("block1_conv2", "features.stem.conv2"))
    shortcut = 0

    def block(keras_block: int, module: str, widths, projected: bool):
        nonlocal shortcut
        out = []
        if projected:                   # Keras creates the shortcut first: its counter is next
            shortcut += 1
            out += [KLayer(f"conv2d#{shortcut}", "conv", f"{module}.shortcut.conv"),
                    KLayer(f"batch_normalization#{shortcut}", "bn", f"{module}.shortcut.bn")]
        for j, _ in enumerate(widths, 1):
            out += [KLayer(f"block{keras_block}_sepconv{j}", "sepconv",
                           f"{module}.body.sep{j}.conv"),
                    KLayer(f"block{keras_block}_sepconv{j}_bn", "bn", f"{module}.body.sep{j}.bn")]
        return out

    for i, widths in enumerate(ENTRY, 1):
        layers += block(i + 1, f"features.entry.block{i}", widths, True)
    for i in range(1, 9):
        layers += block(i + 4, f"features.middle.block{i}", MIDDLE, False)
    layers += block(13, "features.exit.block1", (728, 1024), True)
    for j in (1, 2):
        layers += [KLayer(f"block14_sepconv{j}", "sepconv", f"features.exit.sep{j}.conv"),
                   KLayer(f"block14_sepconv{j}_bn", "bn", f"features.exit.sep{j}.bn")]
    return layers + [KLayer("predictions", "dense", "head.fc", True)]


def _efficientnet(depth_mult: float) -> list[KLayer]:
    from ..models.efficientnet import B0_STAGES

    layers = [KLayer("normalization#1", "norm", "")]
    layers += _conv_bn("stem_conv", "features.stem", "stem_bn")
    for i, (expand, _, _, _, n) in enumerate(B0_STAGES, 1):
        for j in range(math.ceil(n * depth_mult)):
            p, m = f"block{i}{chr(97 + j)}_", f"features.stage{i}.block{j + 1}"
            if expand != 1:
                layers += _conv_bn(f"{p}expand_conv", f"{m}.expand", f"{p}expand_bn")
            layers += _conv_bn(f"{p}dwconv", f"{m}.depthwise", f"{p}bn", "dwconv")
            layers += [KLayer(f"{p}se_reduce", "conv", f"{m}.se.fc1"),
                       KLayer(f"{p}se_expand", "conv", f"{m}.se.fc2")]
            layers += _conv_bn(f"{p}project_conv", f"{m}.project", f"{p}project_bn")
    return layers + _conv_bn("top_conv", "features.head_conv", "top_bn") + [
        KLayer("predictions", "dense", "head.fc", True)]


def _archs() -> dict[str, KerasArch]:
    from ..models.efficientnet import SETTINGS

    a = [KerasArch("VGG16", "vgg16", tuple(_vgg("D")), None, "caffe"),
         KerasArch("VGG19", "vgg19", tuple(_vgg("E")), None, "caffe")]
    for d in (50, 101, 152):
        a.append(KerasArch(f"ResNet{d}", f"resnet{d}_keras", tuple(_resnet(d)), 1.001e-5,
                           "caffe"))
    for d in (50, 101, 152):
        a.append(KerasArch(f"ResNet{d}V2", f"preact_resnet{d}_keras", tuple(_resnet_v2(d)),
                           1.001e-5, "tf"))
    for d in (121, 169, 201):
        a.append(KerasArch(f"DenseNet{d}", f"densenet{d}", tuple(_densenet(d)), 1.001e-5,
                           "torch"))
    v1 = tuple(_mobilenet_v1())
    for alpha, suffix in ((1.0, ""), (0.75, "_075"), (0.5, "_050"), (0.25, "_025")):
        a.append(KerasArch(f"MobileNet(alpha={alpha})", f"mobilenet_v1{suffix}_keras", v1,
                           1e-3, "tf"))
    a.append(KerasArch("MobileNetV2", "mobilenet_v2_keras", tuple(_mobilenet_v2()), 1e-3, "tf"))
    a.append(KerasArch("Xception", "xception_keras", tuple(_xception()), 1e-3, "tf", size=299))
    for v, (_, depth, res, _) in SETTINGS.items():
        a.append(KerasArch(f"EfficientNet{v.upper()}", f"efficientnet_{v}_keras",
                           tuple(_efficientnet(depth)), 1e-3, "efficientnet", size=res))
    return {x.name: x for x in a}


_ARCHS: dict[str, KerasArch] | None = None


def archs() -> dict[str, KerasArch]:
    global _ARCHS
    if _ARCHS is None:
        _ARCHS = _archs()
    return _ARCHS


def by_model(model_name: str | None) -> list[KerasArch]:
    return [a for a in archs().values() if a.model == model_name]


# --------------------------------------------------------------------------- resolving names

_AUTO = re.compile(r"(conv2d|batch_normalization|normalization)(?:_(\d+))?")


def _resolve(arch: KerasArch, file_layers) -> dict[str, str]:
    """Keras name -> the file's name, for every layer of ``arch``: the automatically named
    ones (``conv2d#2``) become the file's second ``conv2d*`` layer by creation counter."""
    auto: dict[str, list[tuple[int, str]]] = {}
    taken = {x.name for x in arch.layers}
    for name in file_layers:
        m = _AUTO.fullmatch(name)
        if m and name not in taken:
            auto.setdefault(m[1], []).append((int(m[2] or 0), name))
    for v in auto.values():
        v.sort()
    out = {}
    for x in arch.layers:
        if "#" in x.name:
            base, k = x.name.split("#")
            seq = auto.get(base, [])
            out[x.name] = seq[int(k) - 1][1] if int(k) <= len(seq) else x.name
        else:
            out[x.name] = x.name
    return out


def candidates(wf) -> list[KerasArch]:
    """The architectures whose layer names the file's fit: every layer but the classifier's
    is there, and the file has no layer the architecture lacks."""
    have = set(layers_of(wf))
    out = []
    for arch in archs().values():
        names = _resolve(arch, have)
        need = {names[x.name] for x in arch.layers if not x.top}
        allowed = {names[x.name] for x in arch.layers}
        if need <= have and have <= allowed:
            out.append(arch)
    return out


def _overlap(arch: KerasArch, have: set[str]) -> int:
    names = _resolve(arch, have)
    return len({names[x.name] for x in arch.layers} & have)


# --------------------------------------------------------------------------- conversion

@dataclass
class Tensor:
    """One model tensor from the file: the file's key, the tensor in PyTorch's layout, how
    its layout changed, and the shape it has in the file."""

    file_key: str
    value: torch.Tensor
    how: str | None
    file_shape: tuple[int, ...]


def _get(vars_: dict[str, torch.Tensor], wanted: tuple[str, ...], kind: str):
    """The layer's variables by meaning; by position only where the file's names are no
    names (``0``, ``1``...)."""
    out = {}
    for var in wanted:
        aliases = (var, "depthwise_kernel") if kind == "dwconv" and var == "kernel" else (var,)
        for alias in aliases:
            if alias in vars_:
                out[var] = (alias, vars_[alias])
                break
    if not out and vars_ and all(k.isdigit() for k in vars_):
        for i, var in enumerate(wanted):
            if str(i) in vars_:
                out[var] = (str(i), vars_[str(i)])
    return out


_WANTED = {
    "conv": ("kernel", "bias"), "dwconv": ("kernel", "bias"),
    "sepconv": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"), "flat_dense": ("kernel", "bias"),
    "conv_dense": ("kernel", "bias"), "norm": ("mean", "variance", "count"),
}
_BN_PARAM = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}


def _convert(layer: KLayer, var: str, t: torch.Tensor, flat_channels: int | None
             ) -> tuple[str, torch.Tensor, str | None] | None:
    """(model key, tensor in PyTorch's layout, how the layout changed) for one variable."""
    kind, m = layer.kind, layer.module
    if kind == "bn":
        return f"{m}.{_BN_PARAM[var]}", t, None
    if var == "bias":
        target = f"{m}.pointwise.bias" if kind == "sepconv" else f"{m}.bias"
        return target, t, None
    if t.dim() == 4 and kind in ("conv", "sepconv") and var in ("kernel", "pointwise_kernel"):
        target = f"{m}.pointwise.weight" if kind == "sepconv" else f"{m}.weight"
        return target, t.permute(3, 2, 0, 1).contiguous(), "HWIO -> OIHW"
    if t.dim() == 4 and (kind == "dwconv" or var == "depthwise_kernel"):
        h, w, c, mult = t.shape
        target = f"{m}.depthwise.weight" if kind == "sepconv" else f"{m}.weight"
        return (target, t.permute(2, 3, 0, 1).reshape(c * mult, 1, h, w).contiguous(),
                "depthwise (H, W, C, 1) -> (C, 1, H, W)")
    if kind == "dense" and t.dim() == 2:
        return f"{m}.weight", t.t().contiguous(), "(in, out) -> (out, in)"
    if kind == "conv_dense" and t.dim() == 4 and t.shape[:2] == (1, 1):
        return (f"{m}.weight", t[0, 0].t().contiguous(),
                "1x1 conv (1, 1, in, out) -> Linear (out, in)")
    if kind == "flat_dense" and t.dim() == 2 and flat_channels and t.shape[0] % flat_channels == 0:
        n_in, n_out = t.shape
        hw = n_in // flat_channels
        w = t.reshape(hw, flat_channels, n_out).permute(2, 1, 0).reshape(n_out, n_in)
        return (f"{m}.weight", w.contiguous(),
                f"(in, out) -> (out, in), input features from Keras' channels-last flatten "
                f"(H, W, {flat_channels}) to (C, H, W) order")
    return None


@dataclass
class KerasPlan:
    arch: KerasArch
    report: LoadReport
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    file_classes: int | None = None


def _flat_channels(arch: KerasArch) -> int | None:
    if not any(x.kind == "flat_dense" for x in arch.layers):
        return None
    from ..models.vgg import CFGS
    cfg = "D" if arch.name == "VGG16" else "E"
    return CFGS[cfg][-1][-1]


def convert_file(wf, arch: KerasArch) -> tuple[dict[str, Tensor], dict[str, str], dict]:
    """Every variable of the file that ``arch`` places: model key -> :class:`Tensor`; the
    file's keys it does not place (with why); and the Normalization's arrays (EfficientNet)."""
    layers = layers_of(wf)
    names = _resolve(arch, layers)
    flat = _flat_channels(arch)
    out: dict[str, Tensor] = {}
    unplaced: dict[str, str] = {}
    norm: dict[str, torch.Tensor] = {}
    placed_layers = set()
    for x in arch.layers:
        fname = names[x.name]
        vars_ = layers.get(fname)
        if vars_ is None:
            continue
        placed_layers.add(fname)
        got = _get(vars_, _WANTED[x.kind], x.kind)
        used = set()
        for var, (alias, t) in got.items():
            used.add(alias)
            if x.kind == "norm":
                norm[var] = t
                continue
            conv = _convert(x, var, t, flat)
            if conv is None:
                unplaced[f"{fname}/{alias}"] = (f"a {x.kind} variable {var} of shape "
                                                f"{tuple(t.shape)} that this layer cannot have")
                continue
            key, value, how = conv
            out[key] = Tensor(f"{fname}/{alias}", value, how, tuple(t.shape))
        for alias in vars_:
            if alias not in used:
                unplaced[f"{fname}/{alias}"] = f"a variable {x.kind} layers do not have"
    for fname, vars_ in layers.items():
        if fname not in placed_layers:
            for alias in vars_:
                unplaced[f"{fname}/{alias}"] = f"no layer {fname} in Keras' {arch.name}"
    return out, unplaced, norm


def mapped_shapes(wf, arch: KerasArch) -> dict[str, tuple[int, ...]]:
    conv, _, _ = convert_file(wf, arch)
    return {k: tuple(t.value.shape) for k, t in conv.items()}


def top_keys(arch: KerasArch, sig_shapes) -> set[str]:
    mods = [x.module for x in arch.layers if x.top]
    return {k for k in sig_shapes if any(k.startswith(m + ".") for m in mods)}


def fit(arch: KerasArch, wf, sig) -> str | None:
    """How the file fits ``sig`` read as ``arch``: "exact", "classes" (another number of
    classes), "notop" (saved without the classifier), or None."""
    shapes = mapped_shapes(wf, arch)
    own = {k for k in sig.shapes if not k.endswith("num_batches_tracked")}
    top = top_keys(arch, sig.shapes)
    notop = not (set(shapes) & top)
    if notop:
        own -= top
    if set(shapes) != own:
        return None
    classes = False
    for k in own:
        a, b = sig.shapes[k], shapes[k]
        if a == b:
            continue
        if k in sig.classifier and len(a) == len(b) and a[1:] == b[1:]:
            classes = True
            continue
        return None
    return "notop" if notop else "classes" if classes else "exact"


# --------------------------------------------------------------------------- the plan

def _shape(s) -> str:
    return "(" + ", ".join(map(str, s)) + ")" if s else "a scalar"


def _count(keys, word: str) -> str:
    return f"{len(keys)} {word}{'' if len(keys) == 1 else 's'}"


def choose(wf, sig, model_name: str | None) -> KerasArch:
    """The Keras architecture to read the file as, for a model of signature ``sig``: the
    one whose names and shapes fit the model, else the one the model reproduces, else the
    one whose layer names the file shares most."""
    cands = candidates(wf)
    for arch in cands:
        if arch.model == model_name and fit(arch, wf, sig):
            return arch
    for arch in cands:
        if fit(arch, wf, sig):
            return arch
    mine = [a for a in cands if a.model == model_name]
    if mine:
        return mine[0]
    if cands:
        return cands[0]
    have = set(layers_of(wf))
    return max(archs().values(), key=lambda a: _overlap(a, have))


def plan(wf, model, sig, strict: bool, fits_phrase: Callable[[], str]) -> KerasPlan:
    """Check everything and say what loading ``wf`` into ``model`` would do (the model is
    not touched): a :class:`KerasPlan` with the report and the state dict to load."""
    name = getattr(model, "model_name", None) or type(model).__name__
    arch = choose(wf, sig, getattr(model, "model_name", None))
    conv, unplaced, norm = convert_file(wf, arch)
    report = LoadReport("keras", wf.where, name, arch.name, total=len(sig.shapes))
    top = top_keys(arch, sig.shapes)
    notop = not (set(conv) & top)
    extra = [t.file_key for k, t in conv.items() if k not in sig.shapes] + list(unplaced)
    missing = [k for k in sig.shapes if k not in conv and not k.endswith("num_batches_tracked")
               and not (notop and k in top) and k not in sig.classifier]
    if extra or missing:
        bits = []
        if extra:
            verb = "has" if len(extra) == 1 else "have"
            bits.append(f"{_count(extra, 'tensor')} of the file {verb} no place in the model "
                        f"(first: {extra[0]})")
        if missing:
            bits.append(f"{_count(missing, 'tensor')} of the model "
                        f"{'is' if len(missing) == 1 else 'are'} not in the file (first: "
                        f"{missing[0]})")
        if strict or len(missing) + len(extra) >= len(sig.shapes):
            raise WeightsMismatchError(
                f"{wf.where} holds weights of another architecture than {name}: "
                f"{' and '.join(bits)}; {fits_phrase()}.")
    classes = None
    for mk, ms in sig.shapes.items():
        t = conv.get(mk)
        if t is None:
            if mk.endswith("num_batches_tracked"):
                why = "a batch-norm step counter the file does not have; no forward pass reads it"
            elif notop and mk in top:
                why = "the classifier, which the file does not have (saved with include_top=False)"
            elif mk in sig.classifier:
                why = "the classifier, which the file does not have"
            else:
                why = "not in the file"
            report.initialised[mk] = why
            continue
        fs = tuple(t.value.shape)
        if fs == ms:
            report.loaded[mk] = t.file_key
            if t.how:
                report.reshaped[mk] = f"{t.file_key} {_shape(t.file_shape)}: {t.how}"
        elif mk in sig.classifier and len(fs) == len(ms) and fs[1:] == ms[1:]:
            classes = fs[0]
            report.initialised[mk] = (f"the classifier: {ms[0]} classes here, {fs[0]} in the "
                                      f"file")
        else:
            hint = ""
            if arch.bgr and "fc6" in mk:
                hint = " (its first fully connected layer is sized by the input: build the " \
                       "model with the img_size the file was saved at)"
            raise WeightsMismatchError(
                f"{wf.where} does not fit {name}: its tensor {t.file_key} is "
                f"{_shape(t.file_shape)} (PyTorch layout {_shape(fs)}) but the model's {mk} "
                f"is {_shape(ms)}{hint}; {fits_phrase()}.")
    for k in extra:
        report.unused[k] = unplaced.get(k, "no such tensor in the model")
    for k, why in unplaced.items():
        report.unused.setdefault(k, why)
    state = {mk: conv[mk].value for mk in report.loaded}
    # Keras' caffe mode feeds BGR: the first convolution reads RGB once its inputs are reversed
    if arch.bgr:
        first = next((x for x in arch.layers if x.kind == "conv"), None)
        key = f"{first.module}.weight" if first else None
        if key in state and state[key].shape[1] == 3:
            state[key] = state[key].flip(1).contiguous()
            report.reshaped[key] = (report.reshaped.get(key, "") +
                                    "; input channels reversed (Keras' caffe preprocessing "
                                    "feeds BGR, this model reads RGB)").lstrip("; ")
    if arch.model != getattr(model, "model_name", arch.model):
        report.notes.append(f"Keras' {arch.name} is computed exactly by deeparch's {arch.model}; "
                            f"{name} holds the same tensors but may compute another function "
                            f"(activations, padding), so its outputs can differ from Keras'.")
    report.preprocess = _preprocess(arch, norm, report)
    return KerasPlan(arch, report, state, classes)


def _preprocess(arch: KerasArch, norm: dict[str, torch.Tensor],
                report: LoadReport) -> pre.Preprocess | None:
    if arch.preprocess != "efficientnet":
        return pre.keras(arch.preprocess, size=arch.size)
    mean, var = norm.get("mean"), norm.get("variance")
    if mean is None or var is None or mean.numel() != 3 or var.numel() != 3:
        report.notes.append("The file has no Normalization layer with three channels: how "
                            "Keras normalised the images is unknown.")
        return None
    mean, var = mean.double().flatten(), var.double().flatten()
    std = torch.clamp(var.sqrt(), min=1e-7)
    imagenet = torch.tensor(pre.IMAGENET_STD, dtype=torch.float64)
    if torch.allclose(var, imagenet, atol=1e-4):
        # keras.applications' ImageNet weights store the standard deviations as variances and
        # Keras builds the model with weights="imagenet" with a Rescaling(1/sqrt(std)) after
        # the Normalization to make up for it: together they divide by the std itself
        std = var
        report.notes.append("The file's Normalization holds ImageNet's standard deviations as "
                            "its variances; with them keras.applications (weights='imagenet') "
                            "adds a Rescaling(1/sqrt(std)), so the images are divided by the "
                            "standard deviations themselves.")
    report.notes.append("Keras' EfficientNet rescales (1/255) and normalises inside the model; "
                        "deeparch's takes normalised images, so the file's Normalization is the "
                        "preprocess below.")
    return pre.Preprocess("keras-efficientnet", tuple(mean.tolist()), tuple(std.tolist()),
                          size=arch.size)


def identify(wf, signature_of: Callable[[str], object]) -> list[str]:
    """The registered models a Keras file fits, best first (exact, then another number of
    classes or no classifier)."""
    exact, other = [], []
    for arch in candidates(wf):
        sig = signature_of(arch.model)
        found = fit(arch, wf, sig) if sig is not None else None
        if found == "exact":
            exact.append(arch.model)
        elif found:
            other.append(arch.model)
    return exact + [m for m in other if m not in exact]


def num_classes(wf, model_name: str) -> int | None:
    """The file's number of classes for ``model_name`` (its classifier's width), None where
    the file has no classifier or does not read as that model's architecture."""
    layers = layers_of(wf)
    for arch in by_model(model_name):
        last = [x for x in arch.layers if x.top][-1]
        vars_ = layers.get(last.name, {})
        kernel = vars_.get("kernel", vars_.get("0"))
        if kernel is not None:
            return int(kernel.shape[-1])
    return None
