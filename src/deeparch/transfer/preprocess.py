"""How a weight source expects its images: size, resize, crop and normalisation.

A :class:`Preprocess` says everything that happens between an image's pixels (uint8, RGB,
0..255) and the network's input, in the trainer's own terms: ``(pixel / 255 - mean) / std``
per channel (``mean``/``std`` in 0..1 pixel units, RGB order). Every source's convention is
written that way:

* torchvision: resize the shorter side to 256, centre-crop 224, ImageNet mean/std;
* Keras ``caffe`` (VGG, ResNet v1): BGR order, ImageNet means subtracted in 0..255 units, no
  scaling. deeparch's Keras loader reverses the first convolution's input channels, so the
  model reads RGB and ``caffe`` is a mean/std like the others (std 1/255);
* Keras ``tf`` (ResNet v2, MobileNet, MobileNet v2, Xception): pixels to -1..1;
* Keras ``torch`` (DenseNet): ImageNet mean/std, like torchvision;
* Keras EfficientNet: the model itself rescales and normalises; deeparch's EfficientNet does
  not, so the loader turns the file's normalisation layer into this mean/std;
* a deeparch run: the training data's channel statistics recorded in its config.json.

Only the facts live here (the published constants); applying them is the trainer's
``BatchStream`` (one multiply-add per batch) or :meth:`Preprocess.normalise`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import DeeparchError

#: ImageNet's RGB channel statistics in 0..1 units (torchvision's and Keras' ``torch`` mode).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Keras ``caffe`` mode's means, in 0..255 units, RGB order (Keras subtracts them from BGR).
CAFFE_MEAN_255 = (123.68, 116.779, 103.939)


@dataclass(frozen=True)
class Preprocess:
    """What a network expects of its input images.

    ``size``: the input side the weights were trained at (224 for ImageNet; None where any
    size will do). ``resize``: the shorter side images are resized to before the centre crop
    of ``size`` (torchvision's 256 for 224), None to resize straight to ``size``. ``mean``,
    ``std``: per RGB channel, 0..1 pixel units. ``channels``: what the first layer reads.
    ``name``: the convention ("torchvision", "keras-caffe", "keras-tf", "keras-torch",
    "keras-efficientnet", "deeparch").
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None
    resize: int | None = None
    channels: int = 3

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise DeeparchError(f"preprocessing {self.name!r} needs one mean and one std per "
                                f"channel, got {len(self.mean)} and {len(self.std)}.")
        if self.channels != len(self.mean):
            raise DeeparchError(f"preprocessing {self.name!r} has {len(self.mean)} means for "
                                f"{self.channels} channels; give one per channel.")
        if min(self.std) <= 0:
            raise DeeparchError(f"preprocessing {self.name!r} has a std of "
                                f"{min(self.std)}; every std must be above 0.")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std),
                "size": self.size, "resize": self.resize, "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(name=str(d["name"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   size=d.get("size"), resize=d.get("resize"),
                   channels=int(d.get("channels", len(d["mean"]))))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) ``N x C x H x W`` -> the network's float input."""
        x = images.to(torch.float32) / 255.0
        c = x.shape[1]
        if c != len(self.mean):
            raise DeeparchError(f"images have {c} channels but preprocessing {self.name!r} "
                                f"is for {len(self.mean)}.")
        mean = torch.tensor(self.mean).view(1, c, 1, 1)
        std = torch.tensor(self.std).view(1, c, 1, 1)
        return (x - mean) / std

    def describe(self) -> str:
        geo = ("any size" if self.size is None else
               f"shorter side to {self.resize}, centre crop {self.size}" if self.resize else
               f"resized to {self.size}x{self.size}")
        m = ", ".join(f"{v:.4g}" for v in self.mean)
        s = ", ".join(f"{v:.4g}" for v in self.std)
        return f"{self.name}: {geo}; (pixel/255 - ({m})) / ({s})"


def torchvision(size: int = 224, resize: int | None = 256) -> Preprocess:
    return Preprocess("torchvision", IMAGENET_MEAN, IMAGENET_STD, size=size, resize=resize)


def keras(mode: str, size: int = 224) -> Preprocess:
    """keras.applications' ``preprocess_input`` modes, as mean/std on RGB 0..1 pixels."""
    if mode == "caffe":
        return Preprocess("keras-caffe", tuple(v / 255.0 for v in CAFFE_MEAN_255),
                          (1 / 255.0,) * 3, size=size)
    if mode == "tf":
        return Preprocess("keras-tf", (0.5,) * 3, (0.5,) * 3, size=size)
    if mode == "torch":
        return Preprocess("keras-torch", IMAGENET_MEAN, IMAGENET_STD, size=size)
    raise DeeparchError(f"Keras preprocessing mode must be caffe, tf or torch, not {mode!r}.")


def from_stats(mean: Sequence[float], std: Sequence[float], size: int | None = None,
               name: str = "deeparch") -> Preprocess:
    """A deeparch run's own normalisation (its training data's channel statistics)."""
    return Preprocess(name, tuple(mean), tuple(std), size=size, channels=len(tuple(mean)))


def match_channels(images: torch.Tensor, channels: int) -> tuple[torch.Tensor, str | None]:
    """uint8 ``N x C x H x W`` images with ``channels`` channels, and a note saying what was
    done: grey images are repeated into three identical channels (what a network trained on
    colour photographs sees of a grey one); colour images become grey by ITU-R BT.601 luma."""
    c = images.shape[1]
    if c == channels:
        return images, None
    if c == 1:
        return (images.expand(-1, channels, -1, -1).contiguous(),
                f"grey images repeated into {channels} identical channels")
    if c == 3 and channels == 1:
        w = torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)
        grey = (images.to(torch.float32) * w).sum(1, keepdim=True).round_().clamp_(0, 255)
        return grey.to(torch.uint8), "colour images turned grey (ITU-R BT.601 luma)"
    raise DeeparchError(f"images have {c} channels and the network reads {channels}; only grey "
                        f"<-> colour can be converted.")


def fit_images(images: torch.Tensor, pre: Preprocess, size: int | None = None,
               crop: bool = False) -> tuple[torch.Tensor, list[str]]:
    """uint8 images shaped for a network that expects ``pre``: channels matched, then
    resized to ``size`` (default ``pre.size``; None: kept) -- with ``crop`` the way the
    source evaluates photographs (shorter side to ``pre.resize``, centre crop), else straight
    to ``size x size`` (small data sets like ``digits``, whose whole image is the object).
    Returns the images and notes saying what was done."""
    from ..data import resize_images

    images, note = match_channels(images, pre.channels)
    notes = [note] if note else []
    side = size if size is not None else pre.size
    if side is None:
        return images, notes
    h, w = images.shape[2:]
    if crop and pre.resize and (h, w) != (side, side):
        short = pre.resize
        nh, nw = (short, max(short, round(w * short / h))) if h <= w else \
            (max(short, round(h * short / w)), short)
        images = resize_images(images, (nh, nw))
        top, left = (nh - side) // 2, (nw - side) // 2
        images = images[:, :, top:top + side, left:left + side].contiguous()
        notes.append(f"images resized from {h}x{w} to {nh}x{nw} and centre-cropped to "
                     f"{side}x{side} ({pre.name})")
    elif (h, w) != (side, side):
        images = resize_images(images, (side, side))
        notes.append(f"images resized from {h}x{w} to {side}x{side} ({pre.name} weights take "
                     f"{side}x{side})" if side == pre.size else
                     f"images resized from {h}x{w} to {side}x{side}")
    return images, notes
