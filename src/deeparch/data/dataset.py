"""The in-memory data set every reader returns, its class names and its labels.

:class:`ArrayDataset` holds uint8 images (N x C x H x W), int64 labels and class names.
Labels without class names become the classes 0..max only while that numbering is dense
(see :func:`_classes_for` and :mod:`deeparch.data.limits`): one stray label of 10**9
must not create 10**9 classes. This module reads no files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from . import limits
from ._common import _cell


# --------------------------------------------------------------------------- dataset


@dataclass(repr=False)
class ArrayDataset:
    """Images (uint8, N x C x H x W), labels (int64, N), class names and a name.

    Kept as uint8 on purpose: small in memory; the trainer normalises each batch.
    ``ds[i]`` is ``(image uint8 CxHxW, label int)``. ``notes`` are sentences saying what
    the reader did to the data beyond decoding it (resized, rescaled, which split stands
    in for a missing one); a caller shows them to the user.

    ``whole`` is true when the source has no such split and this is all of its data (a CSV
    or ``.npz`` file, an image folder without ``train/`` and ``test/``): a caller that needs
    a test set holds part of it out. ``groups`` (optional, int64, one per image) names the
    original image each one was made from (``augment --save --expand N`` writes N copies of
    every image): splits keep a group on one side, so no copy of a training image is
    tested on.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "dataset"
    notes: list[str] = field(default_factory=list, compare=False)
    whole: bool = field(default=False, compare=False)
    groups: torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        images = torch.as_tensor(self.images)
        labels = torch.as_tensor(self.labels)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"dataset {self.name!r} needs uint8 images shaped N x C x H x W, "
                            f"got {images.dtype} {tuple(images.shape)}; convert them first.")
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise DataError(f"dataset {self.name!r} needs one integer label per image, got "
                            f"{labels.dtype} {tuple(labels.shape)}.")
        if len(labels) != len(images):
            raise DataError(f"dataset {self.name!r} has {len(images)} images but "
                            f"{len(labels)} labels; give exactly one label per image.")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = [str(c) for c in self.classes]
        self.notes = [str(n) for n in (self.notes or ())]
        if self.groups is not None:
            groups = torch.as_tensor(self.groups)
            if groups.dim() != 1 or len(groups) != len(labels) or groups.dtype.is_floating_point \
                    or groups.dtype == torch.bool:
                raise DataError(f"dataset {self.name!r} has groups shaped "
                                f"{tuple(groups.shape)} for {len(labels)} images; give one "
                                f"whole-number group per image.")
            self.groups = groups.to(torch.int64)
        if len(self.labels) and (int(self.labels.min()) < 0
                                 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(f"dataset {self.name!r} has labels from {int(self.labels.min())} "
                            f"to {int(self.labels.max())} but {len(self.classes)} class "
                            f"names; labels must lie in 0..{len(self.classes) - 1}.")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        c, h, w = self.input_size
        return (f"ArrayDataset(name={self.name!r}, samples={len(self)}, "
                f"input_size=({c}, {h}, {w}), classes={self.num_classes})")


def check_trainable(ds: ArrayDataset, what: str | None = None) -> None:
    """Raise a DataError unless ``ds`` holds images of at least two different classes."""
    what = what or f"the data set {ds.name!r}"
    if len(ds) == 0:
        raise DataError(f"{what} holds no images; a classifier needs examples of at least "
                        f"two classes.")
    present = torch.unique(ds.labels)
    if len(present) < 2:
        name = ds.classes[int(present[0])] if len(ds.classes) > int(present[0]) else "?"
        raise DataError(f"{what} holds only one class ({_cell(name)}, {len(ds)} images); a "
                        f"classifier needs examples of at least two classes.")


# --------------------------------------------------------------------------- class names

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split()


# --------------------------------------------------------------------------- image sizes

def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    else:
        try:
            size = tuple(int(v) for v in image_size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            size = ()
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image_size must be a positive int or (height, width), got "
                        f"{_cell(image_size, 40)}; for example 32 or (28, 28).")
    if size[0] * size[1] > limits.MAX_IMAGE_PIXELS:
        raise DataError(f"image_size {size[0]}x{size[1]} is {size[0] * size[1]:,} pixels per "
                        f"image, more than the {limits.MAX_IMAGE_PIXELS:,} deeparch allows; "
                        f"ask for a smaller size.")
    return size  # type: ignore[return-value]


def _hw(shape) -> str:
    return f"{int(shape[0])}x{int(shape[1])}"


def resize_images(images: torch.Tensor, image_size: int | Sequence[int],
                  batch_size: int = 2048) -> torch.Tensor:
    """Resize uint8 N x C x H x W images (bilinear, antialiased); same size: unchanged."""
    h, w = _size_hw(image_size)
    if tuple(images.shape[2:]) == (h, w):
        return images
    out = torch.empty((images.shape[0], images.shape[1], h, w), dtype=torch.uint8)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(torch.float32)
        y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + batch_size] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------- labels

def _integer_labels(values, where: str) -> np.ndarray:
    """One int64 label per image from a list of ints or an integer array, checked."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise DataError(f"{where} has labels that are not a list of whole numbers "
                            f"({values.dtype}, shape {values.shape}); the file is not a valid "
                            f"batch.")
        if values.dtype == np.uint64 and len(values) and int(values.max()) >= 2**63:
            raise DataError(f"{where} has a label beyond 2**63; the file is not a valid batch.")
        labels = values.astype(np.int64)
    elif isinstance(values, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in values):
            bad = next(v for v in values if not isinstance(v, (int, np.integer))
                       or isinstance(v, (bool, np.bool_)))
            raise DataError(f"{where} has a label that is a {type(bad).__name__}, not a whole "
                            f"number; the file is not a valid batch.")
        try:
            labels = np.array(values, dtype=np.int64).reshape(len(values))
        except OverflowError:
            raise DataError(f"{where} has a label beyond 2**63; the file is not a valid "
                            f"batch.") from None
    else:
        raise DataError(f"{where} has labels that are a {type(values).__name__}, not a list of "
                        f"whole numbers; the file is not a valid batch.")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where} has a negative label ({labels.min()}); labels start at 0.")
    return labels


def _at_index(i: int) -> str:
    return f" at index {i}"


def _classes_for(labels: np.ndarray, names: list[str] | None, where: str,
                 locate: Callable[[int], str] = _at_index) -> list[str]:
    """``names`` after checking every label has one, else "0".."max" when that is dense.

    Without names, labels become the classes 0..max only while max < limits.MAX_CLASSES
    and max + 1 <= 2 * (distinct labels) + limits.CLASS_SLACK: one stray label of 10**9
    must not create 10**9 classes. ``locate(i)`` says where row ``i`` is (" on line 57").
    """
    top = int(labels.max()) if len(labels) else -1
    if names is not None:
        if top >= len(names):
            row = int(np.argmax(labels == top))
            raise DataError(f"{where} has the label {top}{locate(row)}, but this dataset has "
                            f"only {len(names)} classes (0..{len(names) - 1}); the file belongs "
                            f"to another dataset or is corrupt.")
        return list(names)
    if top < 0:
        return ["0"]
    distinct = np.unique(labels)
    if limits.dense_enough(top, len(distinct)):
        return [str(i) for i in range(top + 1)]
    counts = np.arange(1, len(distinct) + 1)
    dense = (distinct < limits.MAX_CLASSES) & (distinct + 1 <= 2 * counts + limits.CLASS_SLACK)
    if not dense.any():
        raise DataError(f"{where} has labels from {int(distinct[0])} to {top} "
                        f"({len(distinct)} distinct values), too sparse to number the classes "
                        f"0..{top}; renumber the labels 0..{len(distinct) - 1}.")
    k = int(np.nonzero(dense)[0][-1])
    value = int(distinct[k + 1])
    if value >= limits.MAX_CLASSES and value + 1 <= 2 * (k + 2) + limits.CLASS_SLACK:
        raise DataError(f"{where} has labels up to {top}, more than the "
                        f"{limits.MAX_CLASSES:,} classes deeparch numbers without class names; "
                        f"this is not a classification data set deeparch can train on.")
    row = int(np.argmax(labels == value))
    raise DataError(f"{where} has the label {value}{locate(row)}, far beyond the others "
                    f"({int(distinct[0])}..{int(distinct[k])}), which would make {top + 1:,} "
                    f"mostly empty classes; fix that row, or renumber the labels "
                    f"0..{len(distinct) - 1}.")
