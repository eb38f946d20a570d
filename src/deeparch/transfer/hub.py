"""Published ImageNet weights by name: ``torchvision:resnet50``, ``keras:VGG16_notop``...

:func:`resolve` turns a hub name into a file in the weights cache, downloading it the first
time (resumable, checksummed and renamed into place only when complete: the dataset
downloader's :func:`deeparch.data.download.download_file`); a path is returned as it is, so
``create_model(name, weights=resolve(spec))`` takes either. Each :class:`HubEntry` says
where its file comes from, the checksum its publisher gives, the registered deeparch model
it loads into (:func:`model_for`, with builder options in ``HubEntry.options``) and how its
images are to be prepared (a :class:`~deeparch.transfer.preprocess.Preprocess`).

**torchvision** (``torchvision:<builder>`` and ``torchvision:<builder>.<WEIGHTS>``): the
files of torchvision 0.14's ``*_Weights`` enums (read from Debian's python3-torchvision
0.14 source), for every builder whose architecture deeparch reproduces
(:data:`deeparch.transfer.torchvision.ARCHS` says which model that is). The plain name is
``IMAGENET1K_V1`` -- the classic file that ``pretrained=True`` loaded; ``.IMAGENET1K_V2``
names the newer recipe where torchvision publishes one (torchvision's own ``DEFAULT`` is V2
for those), and ``torchvision:vgg16.IMAGENET1K_FEATURES`` the SSD backbone whose classifier
holds no usable values. torchvision 0.14 has every architecture listed here
(``resnext101_64x4d`` and ShuffleNet v2 x1.5 / x2.0 included); its other builders (ConvNeXt,
RegNet, ViT, Swin, MNASNet, MobileNet v3, Inception v3, EfficientNet v2...) have no deeparch
counterpart and so no entry. torchvision's published checksum is the hex digits after the
last ``-`` of the file name, the leading digits of the file's SHA-256 (8, or 10 for two
ShuffleNet files); that is exactly what is checked. The ``Preprocess`` is the enum's
crop and resize (V2 recipes resize to 232; EfficientNet crops at its own resolution --
torchvision resizes those bicubically, which ``Preprocess`` does not record).

**Keras** (``keras:<Application>`` and ``keras:<Application>_notop``): the files that
``keras.applications`` fetches with ``weights="imagenet"``, with the MD5 ``file_hash`` the
Keras 3 source gives. MobileNet is ``keras:MobileNet_<alpha>_<rows>`` for every alpha
(0.25, 0.5, 0.75, 1.0) and resolution (128, 160, 192, 224) Keras accepts, and MobileNet v2
``keras:MobileNetV2_<alpha>_<rows>`` for alpha 0.35-1.0 at 96-224 plus 1.3 and 1.4 at 224
(the files published with Keras; other combinations Keras accepts were never released);
``keras:MobileNet`` / ``keras:MobileNetV2`` are alpha 1.0 at 224. Keras publishes no hash
for the MobileNet files, so those are not verified (``checksum`` is None). Which deeparch
model a Keras application loads into is decided by the Keras file loader
(``deeparch.transfer.keras``); :data:`KERAS_MODELS` is this module's copy of that choice,
one line per application: the registered ``*_keras`` variants that compute what Keras
computes (``resnet50_keras``: conv biases, the stride on the first 1x1; ``preact_resnet50_keras``;
``mobilenet_v1_keras``...; TensorFlow's padding), VGG and DenseNet as they are; MobileNet
v2's alpha is ``mobilenet_v2_keras(width_mult=alpha)``.

The cache is ``$DEEPARCH_WEIGHTS``, else ``$XDG_CACHE_HOME/deeparch/weights``, else
``~/.cache/deeparch/weights``, a folder per source. A file already under its name there is
used without a request (it was verified when it was written). ``$DEEPARCH_WEIGHTS_MIRROR``
is a base URL (or a local folder) under which every file is fetched by its file name
instead of from its publisher, for machines that cannot reach the publishers' sites.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.download import download_file, user_cache
from ..errors import DownloadError, WeightsError
from . import preprocess as pre
from .torchvision import ARCHS as TV_ARCHS

SOURCES = ("torchvision", "keras")
_TV_BASE = "https://download.pytorch.org/models/"
_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KERAS_EFFICIENTNET_BASE = "https://storage.googleapis.com/keras-applications/"


@dataclass(frozen=True)
class HubEntry:
    """One published weights file.

    ``name``: the hub name (``torchvision:resnet50.IMAGENET1K_V2``); ``url``: the
    publisher's download address; ``checksum`` / ``algorithm``: the published digest and
    what it is ("sha256-prefix" for torchvision's file-name hashes, "md5" for Keras'
    ``file_hash``; None where nothing is published); ``model``: the registered deeparch
    model it loads into, built with ``options``; ``preprocess``: how its images are made.
    """

    name: str
    source: str
    url: str
    checksum: str | None
    algorithm: str | None
    model: str
    preprocess: pre.Preprocess
    options: tuple[tuple[str, object], ...] = ()
    note: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def model_kwargs(self) -> dict:
        """The builder options: ``create_model(entry.model, **entry.model_kwargs, ...)``."""
        return dict(self.options)

    def path(self, root: str | os.PathLike | None = None) -> Path:
        """Where the file lives in the cache (whether it is there yet or not)."""
        base = Path(root).expanduser() if root is not None else cache_dir()
        return base / self.source / self.filename

    def is_cached(self, root: str | os.PathLike | None = None) -> bool:
        return self.path(root).is_file()

    @property
    def cached(self) -> bool:
        """Whether the file is in the default cache (:func:`cache_dir`) now."""
        return self.is_cached()

    def to_dict(self, root: str | os.PathLike | None = None) -> dict:
        return {"name": self.name, "source": self.source, "url": self.url,
                "checksum": self.checksum, "algorithm": self.algorithm, "model": self.model,
                "options": self.model_kwargs, "preprocess": self.preprocess.to_dict(),
                "cached": self.is_cached(root), "path": str(self.path(root)),
                "note": self.note}


# --------------------------------------------------------------------------- torchvision

# builder, weights, file name, crop, resize: transcribed from torchvision 0.14's *_Weights
# enums (url and the ImageClassification crop_size / resize_size, 256 where not given)
_TORCHVISION_FILES = (
    ("alexnet", "IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", 224, 256),
    ("vgg11", "IMAGENET1K_V1", "vgg11-8a719046.pth", 224, 256),
    ("vgg11_bn", "IMAGENET1K_V1", "vgg11_bn-6002323d.pth", 224, 256),
    ("vgg13", "IMAGENET1K_V1", "vgg13-19584684.pth", 224, 256),
    ("vgg13_bn", "IMAGENET1K_V1", "vgg13_bn-abd245e5.pth", 224, 256),
    ("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth", 224, 256),
    ("vgg16", "IMAGENET1K_FEATURES", "vgg16_features-amdegroot-88682ab5.pth", 224, 256),
    ("vgg16_bn", "IMAGENET1K_V1", "vgg16_bn-6c64b313.pth", 224, 256),
    ("vgg19", "IMAGENET1K_V1", "vgg19-dcbb9e9d.pth", 224, 256),
    ("vgg19_bn", "IMAGENET1K_V1", "vgg19_bn-c79401a0.pth", 224, 256),
    ("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 224, 256),
    ("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 224, 256),
    ("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 224, 256),
    ("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 224, 232),
    ("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 224, 256),
    ("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 224, 232),
    ("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 224, 256),
    ("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 224, 232),
    ("resnext50_32x4d", "IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 224, 256),
    ("resnext50_32x4d", "IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 224, 232),
    ("resnext101_32x8d", "IMAGENET1K_V1", "resnext101_32x8d-8ba56ff5.pth", 224, 256),
    ("resnext101_32x8d", "IMAGENET1K_V2", "resnext101_32x8d-110c445d.pth", 224, 232),
    ("resnext101_64x4d", "IMAGENET1K_V1", "resnext101_64x4d-173b62eb.pth", 224, 232),
    ("wide_resnet50_2", "IMAGENET1K_V1", "wide_resnet50_2-95faca4d.pth", 224, 256),
    ("wide_resnet50_2", "IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth", 224, 232),
    ("wide_resnet101_2", "IMAGENET1K_V1", "wide_resnet101_2-32ee1156.pth", 224, 256),
    ("wide_resnet101_2", "IMAGENET1K_V2", "wide_resnet101_2-d733dc28.pth", 224, 232),
    ("densenet121", "IMAGENET1K_V1", "densenet121-a639ec97.pth", 224, 256),
    ("densenet161", "IMAGENET1K_V1", "densenet161-8d451a50.pth", 224, 256),
    ("densenet169", "IMAGENET1K_V1", "densenet169-b2777c0a.pth", 224, 256),
    ("densenet201", "IMAGENET1K_V1", "densenet201-c1103571.pth", 224, 256),
    ("squeezenet1_0", "IMAGENET1K_V1", "squeezenet1_0-b66bff10.pth", 224, 256),
    ("squeezenet1_1", "IMAGENET1K_V1", "squeezenet1_1-b8a52dc0.pth", 224, 256),
    ("googlenet", "IMAGENET1K_V1", "googlenet-1378be20.pth", 224, 256),
    ("mobilenet_v2", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", 224, 256),
    ("mobilenet_v2", "IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth", 224, 232),
    ("shufflenet_v2_x0_5", "IMAGENET1K_V1", "shufflenetv2_x0.5-f707e7126e.pth", 224, 256),
    ("shufflenet_v2_x1_0", "IMAGENET1K_V1", "shufflenetv2_x1-5666bf0f80.pth", 224, 256),
    ("shufflenet_v2_x1_5", "IMAGENET1K_V1", "shufflenetv2_x1_5-3c479a10.pth", 224, 232),
    ("shufflenet_v2_x2_0", "IMAGENET1K_V1", "shufflenetv2_x2_0-8be3c8ee.pth", 224, 232),
    ("efficientnet_b0", "IMAGENET1K_V1", "efficientnet_b0_rwightman-3dd342df.pth", 224, 256),
    ("efficientnet_b1", "IMAGENET1K_V1", "efficientnet_b1_rwightman-533bc792.pth", 240, 256),
    ("efficientnet_b1", "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", 240, 255),
    ("efficientnet_b2", "IMAGENET1K_V1", "efficientnet_b2_rwightman-bcdf34b7.pth", 288, 288),
    ("efficientnet_b3", "IMAGENET1K_V1", "efficientnet_b3_rwightman-cf984f9c.pth", 300, 320),
    ("efficientnet_b4", "IMAGENET1K_V1", "efficientnet_b4_rwightman-7eb33cd5.pth", 380, 384),
    ("efficientnet_b5", "IMAGENET1K_V1", "efficientnet_b5_lukemelas-b6417697.pth", 456, 456),
    ("efficientnet_b6", "IMAGENET1K_V1", "efficientnet_b6_lukemelas-c76e70fd.pth", 528, 528),
    ("efficientnet_b7", "IMAGENET1K_V1", "efficientnet_b7_lukemelas-dcc49843.pth", 600, 600),
)

# builder options that make the deeparch model compute torchvision's function at every input
# size (torchvision.py's VGG note: its head average-pools the last map to 7x7)
_TORCHVISION_OPTIONS = {"vgg": (("adaptive_pool", 7),)}

_TV_HASH = re.compile(r"-([0-9a-f]{8,})\.pth$")


def _torchvision_entries() -> list[HubEntry]:
    out = []
    for builder, weights, filename, crop, resize in _TORCHVISION_FILES:
        arch = TV_ARCHS[builder]
        name = f"torchvision:{builder}" + ("" if weights == "IMAGENET1K_V1" else f".{weights}")
        prep = pre.torchvision(size=crop, resize=resize)
        note = ""
        if weights == "IMAGENET1K_FEATURES":
            # the SSD backbone was trained on Caffe-style inputs: mean in 0..1 units, std 1/255
            prep = pre.Preprocess("torchvision", (0.48235, 0.45882, 0.40784), (1 / 255.0,) * 3,
                                  size=crop, resize=resize)
            note = ("only the convolutional features hold trained values (an SSD backbone); "
                    "the classifier cannot classify.")
        elif builder.startswith("efficientnet") and weights == "IMAGENET1K_V1":
            note = "torchvision resizes these images bicubically."
        options = next((v for k, v in _TORCHVISION_OPTIONS.items() if builder.startswith(k)),
                       ())
        out.append(HubEntry(name, "torchvision", _TV_BASE + filename,
                            _TV_HASH.search(filename)[1], "sha256-prefix", arch.model, prep,
                            options, note))
    return out


# --------------------------------------------------------------------------- Keras

#: keras.applications name -> (registered deeparch model, builder options): the model the
#: Keras file loader (deeparch.transfer.keras) fills from that application's file.
KERAS_MODELS: dict[str, tuple[str, tuple[tuple[str, object], ...]]] = {
    "VGG16": ("vgg16", ()),
    "VGG19": ("vgg19", ()),
    "ResNet50": ("resnet50_keras", ()),
    "ResNet101": ("resnet101_keras", ()),
    "ResNet152": ("resnet152_keras", ()),
    "ResNet50V2": ("preact_resnet50_keras", ()),
    "ResNet101V2": ("preact_resnet101_keras", ()),
    "ResNet152V2": ("preact_resnet152_keras", ()),
    "DenseNet121": ("densenet121", ()),
    "DenseNet169": ("densenet169", ()),
    "DenseNet201": ("densenet201", ()),
    "MobileNet_1.0": ("mobilenet_v1_keras", ()),
    "MobileNet_0.75": ("mobilenet_v1_075_keras", ()),
    "MobileNet_0.5": ("mobilenet_v1_050_keras", ()),
    "MobileNet_0.25": ("mobilenet_v1_025_keras", ()),
    "MobileNetV2": ("mobilenet_v2_keras", ()),             # width_mult=alpha is added below
    "Xception": ("xception_keras", ()),
    **{f"EfficientNetB{b}": (f"efficientnet_b{b}_keras", ()) for b in range(8)},
}

# application, base URL, full file name, notop file name, MD5 (full, notop), mode, size --
# from the Keras 3 source (keras/src/applications/*.py)
_R = _KERAS_BASE + "resnet/"
_D = _KERAS_BASE + "densenet/"
_KERAS_FILES = (
    ("VGG16", _KERAS_BASE + "vgg16/", "vgg16_weights_tf_dim_ordering_tf_kernels",
     "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc", "caffe", 224),
    ("VGG19", _KERAS_BASE + "vgg19/", "vgg19_weights_tf_dim_ordering_tf_kernels",
     "cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6", "caffe", 224),
    ("ResNet50", _R, "resnet50_weights_tf_dim_ordering_tf_kernels",
     "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626", "caffe", 224),
    ("ResNet101", _R, "resnet101_weights_tf_dim_ordering_tf_kernels",
     "f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21", "caffe", 224),
    ("ResNet152", _R, "resnet152_weights_tf_dim_ordering_tf_kernels",
     "100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c", "caffe", 224),
    ("ResNet50V2", _R, "resnet50v2_weights_tf_dim_ordering_tf_kernels",
     "3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917", "tf", 224),
    ("ResNet101V2", _R, "resnet101v2_weights_tf_dim_ordering_tf_kernels",
     "6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5", "tf", 224),
    ("ResNet152V2", _R, "resnet152v2_weights_tf_dim_ordering_tf_kernels",
     "a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33", "tf", 224),
    ("DenseNet121", _D, "densenet121_weights_tf_dim_ordering_tf_kernels",
     "9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738", "torch", 224),
    ("DenseNet169", _D, "densenet169_weights_tf_dim_ordering_tf_kernels",
     "d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b", "torch", 224),
    ("DenseNet201", _D, "densenet201_weights_tf_dim_ordering_tf_kernels",
     "1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1", "torch", 224),
    ("Xception", _KERAS_BASE + "xception/", "xception_weights_tf_dim_ordering_tf_kernels",
     "0a58e3b7378bc2990ea3b43d5981f1f6", "b0042744bf5b25fce3cb969f33bebb97", "tf", 299),
)
# EfficientNet: <base>efficientnetb<n>.h5 / _notop.h5 (another bucket), MD5s, input size
_KERAS_EFFICIENTNET = (
    ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d", 224),
    ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432", 240),
    ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39", 260),
    ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226", 300),
    ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba", 380),
    ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f", 456),
    ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743", 528),
    ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a", 600),
)
# MobileNet: alpha -> the file's alpha text, for every resolution; MobileNet v2: (alpha, rows)
_KERAS_MOBILENET_ALPHAS = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
_KERAS_MOBILENET_ROWS = (128, 160, 192, 224)
_KERAS_MOBILENET_V2 = ([(a, r) for a in (0.35, 0.5, 0.75, 1.0) for r in (96, 128, 160, 192, 224)]
                       + [(1.3, 224), (1.4, 224)])


def _keras_pre(mode: str, size: int) -> pre.Preprocess:
    if mode == "efficientnet":
        # the model's own Rescaling + Normalization (+ Keras' 1/sqrt(std) fix) amount to
        # ImageNet's mean/std; deeparch's EfficientNet reads the normalised image instead
        return pre.Preprocess("keras-efficientnet", pre.IMAGENET_MEAN, pre.IMAGENET_STD,
                              size=size)
    return pre.keras(mode, size=size)


def _keras_pair(app: str, key: str, full_url: str, notop_url: str, hashes, mode: str,
                size: int, extra: tuple = ()) -> list[HubEntry]:
    model, options = KERAS_MODELS[key]
    prep = _keras_pre(mode, size)
    algorithm = "md5" if hashes[0] else None
    note = "" if hashes[0] else "Keras publishes no checksum for this file."
    return [HubEntry(f"keras:{app}", "keras", full_url, hashes[0], algorithm, model, prep,
                     options + extra, note),
            HubEntry(f"keras:{app}_notop", "keras", notop_url, hashes[1], algorithm, model,
                     prep, options + extra, note)]


def _keras_entries() -> list[HubEntry]:
    out: list[HubEntry] = []
    for app, base, stem, md5, md5_notop, mode, size in _KERAS_FILES:
        out += _keras_pair(app, app, f"{base}{stem}.h5", f"{base}{stem}_notop.h5",
                           (md5, md5_notop), mode, size)
    for b, (md5, md5_notop, size) in enumerate(_KERAS_EFFICIENTNET):
        stem = f"{_KERAS_EFFICIENTNET_BASE}efficientnetb{b}"
        out += _keras_pair(f"EfficientNetB{b}", f"EfficientNetB{b}", f"{stem}.h5",
                           f"{stem}_notop.h5", (md5, md5_notop), "efficientnet", size)
    base = _KERAS_BASE + "mobilenet/"
    for alpha, text in _KERAS_MOBILENET_ALPHAS.items():
        for rows in _KERAS_MOBILENET_ROWS:
            out += _keras_pair(f"MobileNet_{alpha}_{rows}", f"MobileNet_{alpha}",
                               f"{base}mobilenet_{text}_{rows}_tf.h5",
                               f"{base}mobilenet_{text}_{rows}_tf_no_top.h5",
                               (None, None), "tf", rows)
    base = _KERAS_BASE + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
    for alpha, rows in _KERAS_MOBILENET_V2:
        out += _keras_pair(f"MobileNetV2_{alpha}_{rows}", "MobileNetV2",
                           f"{base}{alpha}_{rows}.h5", f"{base}{alpha}_{rows}_no_top.h5",
                           (None, None), "tf", rows,
                           extra=() if alpha == 1.0 else (("width_mult", alpha),))
    return out


# --------------------------------------------------------------------------- the table

ENTRIES: dict[str, HubEntry] = {e.name: e for e in _torchvision_entries() + _keras_entries()}

# other spellings of an entry: torchvision's V1 by its weights name, Keras' defaults
_ALIASES = {
    **{f"torchvision:{b}.IMAGENET1K_V1": f"torchvision:{b}" for b, *_ in _TORCHVISION_FILES},
    "keras:MobileNet": "keras:MobileNet_1.0_224",
    "keras:MobileNet_notop": "keras:MobileNet_1.0_224_notop",
    "keras:MobileNetV2": "keras:MobileNetV2_1.0_224",
    "keras:MobileNetV2_notop": "keras:MobileNetV2_1.0_224_notop",
}
_LOOKUP: dict[str, str] = {**{n.lower(): n for n in ENTRIES},
                           **{a.lower(): n for a, n in _ALIASES.items()}}


def is_hub_name(spec) -> bool:
    """Whether ``spec`` is meant as a hub name (``torchvision:...`` or ``keras:...``), known or
    not: such a string is never read as a path."""
    if not isinstance(spec, str):
        return False
    prefix, sep, _ = spec.partition(":")
    return bool(sep) and prefix.strip().lower() in SOURCES


def entry(spec: str) -> HubEntry:
    """The :class:`HubEntry` of a hub name (case does not matter)."""
    key = spec.strip().lower() if isinstance(spec, str) else None
    if key is not None and key in _LOOKUP:
        return ENTRIES[_LOOKUP[key]]
    if key is None or not is_hub_name(spec):
        raise WeightsError(f"{spec!r} is not a hub name; hub names start with 'torchvision:' "
                           f"or 'keras:', e.g. torchvision:resnet50 or keras:VGG16.")
    # suggest the names the table lists, and the short Keras MobileNet ones
    names = {n.lower(): n for n in list(ENTRIES) + [a for a in _ALIASES if "." not in a]}
    close = [names[m] for m in difflib.get_close_matches(key, names, n=3, cutoff=0.6)]
    hint = (f"did you mean {', '.join(close)}?" if close else
            "deeparch.transfer.hub.known() lists every published file deeparch knows.")
    raise WeightsError(f"there are no published weights called {spec!r}; {hint}")


def model_for(spec: str) -> str:
    """The registered deeparch model that hub name ``spec``'s file loads into."""
    return entry(spec).model


def known(source: str | None = None) -> list[HubEntry]:
    """Every entry (of one ``source``: "torchvision" or "keras"), in table order; each says
    ``cached`` (in the default cache), ``path()``, ``url``, ``checksum``, ``model``..."""
    if source is not None and source.lower() not in SOURCES:
        raise WeightsError(f"there are no published weights from {source!r}; the sources are "
                           f"{', '.join(SOURCES)}.")
    return [e for e in ENTRIES.values() if source is None or e.source == source.lower()]


def cache_dir() -> Path:
    """``$DEEPARCH_WEIGHTS``, else ``$XDG_CACHE_HOME/deeparch/weights``, else
    ``~/.cache/deeparch/weights``."""
    return user_cache("weights", "DEEPARCH_WEIGHTS")


def mirror_url(e: HubEntry) -> str:
    """Where ``e`` is fetched from: ``$DEEPARCH_WEIGHTS_MIRROR/<file name>`` when that is set
    (a URL, or a folder), else the publisher's URL."""
    mirror = os.environ.get("DEEPARCH_WEIGHTS_MIRROR", "").strip()
    if not mirror:
        return e.url
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return mirror.rstrip("/") + "/" + e.filename


def resolve(spec, *, root: str | os.PathLike | None = None, download: bool = True,
            progress: bool | None = None) -> Path:
    """A hub name -> its file in the cache (``root``, default :func:`cache_dir`), fetched
    first when it is not there (``download=False``: a :class:`DownloadError` instead); a path
    -> itself. ``progress``: a tqdm bar on stderr -- True always, None only on a terminal.

    The download resumes a ``.part`` left by an interrupted one, is checked against the
    published checksum and is renamed into place only when it matches (a mismatch deletes
    it and raises :class:`DownloadError`)."""
    if not is_hub_name(spec):
        return Path(spec)
    e = entry(spec)
    dest = e.path(root)
    if dest.is_file():
        return dest
    by_hand = f"download {e.url} by hand into {dest.parent}"
    if not download:
        raise DownloadError(f"{e.name} is not in the weights cache ({dest}); allow the "
                            f"download (download=True), or {by_hand}.")
    checks = ({"sha256_prefix": e.checksum} if e.algorithm == "sha256-prefix" else
              {"md5": e.checksum} if e.algorithm == "md5" else {})
    return download_file(mirror_url(e), dest, manual_hint=by_hand, progress=progress,
                         folder_hint="set DEEPARCH_WEIGHTS to a folder you can write",
                         **checks)


__all__ = ["ENTRIES", "HubEntry", "KERAS_MODELS", "SOURCES", "cache_dir", "entry",
           "is_hub_name", "known", "mirror_url", "model_for", "resolve"]
