"""Dataset readers: every source becomes one in-memory :class:`ArrayDataset` of uint8.

Sources (``load_dataset(name_or_path, split)``):

=================  ====================================================================
``digits``         scikit-learn's embedded 8x8 digits (no download); 0..16 scaled to
                   0..255, 1x8x8. It has no official test split, so train/test are a
                   fixed stratified 80/20 split with seed 0 (1438 / 359 images).
``mnist``          IDX files ``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``,
``fashion_mnist``  gzipped or not (in the dataset folder or its ``raw/``); the Kaggle
                   CSVs ``mnist_train.csv`` / ``fashion-mnist_test.csv`` work too.
``cifar10``        python pickles (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``)
                   or the binary version (``cifar-10-batches-bin/*.bin``, 3073-byte records).
``cifar100``       python (``cifar-100-python/train``, ``test``; fine labels) or binary
                   (``cifar-100-binary/*.bin``, 3074-byte records: coarse, fine, pixels).
a folder           one subfolder per class (any image PIL reads; RGB, or L when every
                   image is grayscale) read at the images' own size when they all share
                   one, else at ``image_size``; with ``train/`` and ``test/`` subfolders
                   the split picks one.
a CSV file         Kaggle layout: a header row, the label, then C*H*W pixel columns
                   (784 -> 1x28x28; square grayscale, or square RGB planes, inferred);
                   a label column named ``label`` (``class``, ``target``...) may sit
                   anywhere.
an ``.npz`` file   ``images`` (uint8 N x C x H x W or N x H x W) and ``labels``, as
                   ``deeparch augment --save`` writes them, optionally ``classes``; or
                   Keras' ``x_train`` / ``y_train`` / ``x_test`` / ``y_test``.
a folder of files  the IDX / CIFAR / CSV files above, recognised by their names.
=================  ====================================================================

A named dataset lives in ``<root>/<name>`` (``root`` defaults to
:func:`~deeparch.data.download.cache_dir`); when ``root`` is given the files may also sit
directly in it. A name always means the named dataset: write ``./mnist`` for a folder
called ``mnist``. A source with no split of its own (a CSV or .npz file, a plain image
folder, a Kaggle folder whose ``test.csv`` has no labels) gives the same data for
``train`` and ``test``; the caller holds part of it out.

Every reader trusts what a file says about itself (an IDX header, a zip directory, a
pickle's lengths) only after checking it against the bytes on disk and the bounds of
:mod:`deeparch.data.limits`, so a small file can never make deeparch allocate GBs. What
a reader does to the data beyond decoding it (resizing, scaling 16-bit pixels to 8 bits,
dropping an alpha channel) is written to :attr:`ArrayDataset.notes`.

CIFAR pickles are read by a restricted unpickler that builds plain containers and numpy
number arrays only; anything else in the file is refused before it can run.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import io
import math
import os
import pickle
import re
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, DownloadError
from . import download as _download
from . import limits
from .split import train_val_split

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


# --------------------------------------------------------------------------- small helpers

_READ_CHUNK = 4 * 2**20


def _short(exc: BaseException, limit: int = 100) -> str:
    """An exception as a short one-line text, for the parenthesis of a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _cell(value, limit: int = 24) -> str:
    """``repr`` of a value from a file, cut short: messages never echo a file's contents."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _stat(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or _short(exc)}); check that it "
                        f"exists and is readable.") from exc
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path} is not a regular file (a folder, a device or a pipe); give "
                        f"the path of a data file.")
    return st


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or _short(exc)}); check that it "
                        f"exists and is readable.") from exc


def _read(path: Path) -> bytes:
    _stat(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or _short(exc)}); check that it "
                        f"exists and is readable.") from exc


def _read_into(stream, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream`` in bounded chunks; the number of bytes read."""
    done, total = 0, len(buffer)
    while done < total:
        n = stream.readinto(buffer[done:min(total, done + _READ_CHUNK)])
        if not n:
            break
        done += n
    return done


def _alloc(shape: tuple[int, ...], dtype, what: str) -> np.ndarray:
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as exc:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        raise DataError(f"cannot allocate the {limits.human_bytes(nbytes)} that {what} need; "
                        f"free some memory, or use fewer or smaller images.") from exc


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


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, struct.error)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array, checking its header.

    The header's shape is checked against the file before anything is allocated: a
    plain file must hold exactly the declared bytes; a gzip file may declare at most
    :func:`limits.decompressed_bound` of its size, is decompressed as a stream and is
    refused as soon as it holds more than its header declares (a gzip bomb costs a
    bounded amount of memory and time, whatever it would expand to).
    """
    path = Path(path)
    size = _stat(path).st_size
    with _open(path) as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not gz and path.suffix == ".gz":
            raise DataError(f"{path} is named .gz but is not gzip-compressed; delete it and "
                            f"download it again, or drop the .gz from its name if it is plain "
                            f"IDX.")
        if not gz:
            try:
                return _read_idx_stream(raw, path, size, gz=False)
            except OSError as exc:
                raise DataError(f"cannot read {path} ({exc.strerror or _short(exc)}); check "
                                f"the file.") from exc
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_idx_stream(stream, path, size, gz=True)
        except _GZIP_ERRORS + (OSError,) as exc:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({_short(exc)}); "
                            f"delete it and download it again.") from exc


def _read_idx_stream(stream, path: Path, size: int, gz: bool) -> np.ndarray:
    head = stream.read(4)
    if not head:
        raise DataError(f"{path} is empty; delete it and download it again.")
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES \
            or head[3] == 0:
        raise DataError(f"{path} is not an IDX file: its magic number is 0x{head.hex()} "
                        f"instead of 0x0000 + a type code + a dimension count; check the file.")
    ndim = head[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its header ({4 + len(dims)} bytes); "
                        f"download it again.")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = np.dtype(_IDX_TYPES[head[2]])
    header = 4 + 4 * ndim
    expected = math.prod(shape) * dtype.itemsize
    shown = shape if ndim <= 6 else f"({ndim} dimensions)"
    if gz:
        bound = limits.decompressed_bound(size)
        if header + expected > bound:
            raise DataError(f"{path} declares shape {shown} ({limits.human_bytes(expected)}) "
                            f"in its header, more than a {limits.human_bytes(size)} gzip file "
                            f"may expand to, so it is corrupt or a decompression bomb and was "
                            f"not decompressed; gunzip it yourself if it is real.")
    else:
        present = size - header
        if present < expected:
            raise DataError(f"{path} is truncated: its header declares shape {shown} "
                            f"({expected} bytes) but only {present} bytes follow; download it "
                            f"again.")
        if present > expected:
            raise DataError(f"{path} has {present - expected} bytes more than its header "
                            f"declares (shape {shown}); it is corrupt, download it again.")
    buffer = _alloc((expected,), np.uint8, f"the data of {path}")
    got = _read_into(stream, memoryview(buffer))
    if got < expected:
        raise DataError(f"{path} is truncated: its header declares shape {shown} "
                        f"({expected} bytes) but only {got} bytes follow; download it again.")
    if gz:
        extra = stream.read(2**20)
        if extra:
            more = "more than 1 MB" if len(extra) == 2**20 else f"{len(extra)} bytes"
            raise DataError(f"{path} expands to {more} beyond what its header declares "
                            f"(shape {shown}); it is corrupt or a decompression bomb, "
                            f"download it again.")
    array = buffer.view(dtype).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 1 x H x W uint8) and labels (N int64) from an IDX image + label file."""
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path} holds {images.dtype} data shaped {images.shape}, not "
                        f"uint8 images shaped N x H x W; is it a label file?")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path} holds data shaped {labels.shape}, not one label per "
                        f"image; is it an image file?")
    if len(labels) != len(images):
        raise DataError(f"{labels_path} holds {len(labels)} labels but {images_path} holds "
                        f"{len(images)} images; both files must come from the same split.")
    return images[:, None], _integer_labels(labels, str(labels_path))


# --------------------------------------------------------------------------- CIFAR python
#
# Three layers keep a pickle from costing more than its size or running anything:
# 1. _scan_pickle walks the opcodes first (no objects built): every counted string must
#    fit in the file, memo indices stay below the number of opcodes (CPython's unpickler
#    sizes its memo table by the largest index), and opcodes a CIFAR batch never uses
#    (persistent ids, extension codes, NEWOBJ, out-of-band buffers) are refused.
# 2. find_class opens only for numpy's array / dtype / scalar reconstruction and latin1
#    _codecs.encode, each replaced by a function of ours that allocates nothing the
#    file does not carry: an array is a stub until its __setstate__ brings bytes whose
#    length matches the declared shape, and is then a view of those bytes.
# 3. A budget (2 x the file size + 1 MiB) is spent by every new buffer those functions
#    make, so memo references cannot multiply the data.


class _Budget(pickle.UnpicklingError):
    pass


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


_NDARRAY = type("ndarray_marker", (), {"__repr__": lambda self: "numpy.ndarray"})()
# opcode kinds for _scan_pickle: no argument, n fixed bytes, n text lines, a counted
# string (n length bytes), a memo index (fixed or text), refused
_PLAIN, _FIXED, _LINES, _COUNTED, _MEMO_FIXED, _MEMO_LINE, _REFUSED_OP, _STOP = range(8)
_SCAN_REFUSED = ("PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ",
                 "NEWOBJ_EX", "NEXT_BUFFER", "READONLY_BUFFER")


def _scan_table() -> list:
    import pickletools

    counted = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
               pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
               pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
               pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
    table: list = [None] * 256
    for op in pickletools.opcodes:
        code = op.code.encode("latin1")[0]
        if op.name in _SCAN_REFUSED:
            entry = (_REFUSED_OP, 0, op.name)
        elif op.name == "STOP":
            entry = (_STOP, 0, False)
        elif op.name in ("BINPUT", "LONG_BINPUT"):
            entry = (_MEMO_FIXED, op.arg.n, False)
        elif op.name == "PUT":
            entry = (_MEMO_LINE, 1, False)
        elif op.arg is None:
            entry = (_PLAIN, 0, False)
        elif op.arg.n >= 0:
            entry = (_FIXED, op.arg.n, False)
        elif op.arg.n == pickletools.UP_TO_NEWLINE:
            entry = (_LINES, 2 if op.name in ("GLOBAL", "INST") else 1, False)
        else:
            entry = (_COUNTED, *counted[op.arg.n])
        table[code] = entry
    return table


_SCAN = _scan_table()


def _scan_pickle(data: bytes, path: Path) -> None:
    """Check a pickle's opcodes and lengths before any object is built (see above)."""
    def unreadable(why: str) -> DataError:
        return DataError(f"{path} is not a readable CIFAR pickle ({why}); delete it and "
                         f"download it again.")

    pos, end, ops = 0, len(data), 0
    table = _SCAN
    while pos < end:
        start = pos
        entry = table[data[pos]]
        if entry is None:
            raise unreadable(f"byte 0x{data[pos]:02x} at offset {pos} is not a pickle "
                             f"instruction")
        kind, n, extra = entry
        pos += 1
        ops += 1
        if kind == _PLAIN:
            continue
        if kind == _FIXED:
            pos += n
        elif kind == _COUNTED:
            length = int.from_bytes(data[pos:pos + n], "little", signed=extra)
            pos += n + length
            if length < 0 or pos > end:
                raise unreadable(f"a {max(length, 0):,}-byte string declared at offset {start} "
                                 f"runs past the end of the {end:,}-byte file")
        elif kind == _LINES:
            for _ in range(n):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    raise unreadable(f"it ends inside the text argument at offset {start}")
                pos = nl + 1
        elif kind == _MEMO_FIXED or kind == _MEMO_LINE:
            if kind == _MEMO_FIXED:
                index = int.from_bytes(data[pos:pos + n], "little")
                pos += n
            else:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    raise unreadable(f"it ends inside the text argument at offset {start}")
                try:
                    index = int(data[pos:nl])
                except ValueError:
                    raise unreadable(f"a memo index at offset {start} is not a number") from None
                pos = nl + 1
            if not 0 <= index <= ops:
                raise unreadable(f"memo index {index:,} at offset {start} is far beyond the "
                                 f"{ops:,} instructions before it")
        elif kind == _REFUSED_OP:
            raise DataError(f"{path} was refused: it uses the pickle instruction {extra}, "
                            f"which a CIFAR batch never needs, so nothing in it was run; do "
                            f"not use this file.")
        else:  # STOP
            return
        if pos > end:
            raise unreadable(f"it ends inside the instruction at offset {start}")
    raise unreadable("it ends before the pickle's STOP instruction")


class _DtypeStub:
    """numpy.dtype(spec, align, copy) for plain numbers; its __setstate__ keeps only the
    byte order (numpy's own dtype __setstate__ is never handed data from the file)."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("a numpy dtype carries an unknown state")
        if self.dtype.itemsize > 1 and state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayStub:
    """What numpy's ``_reconstruct(ndarray, shape, dtype)`` returns here: nothing
    allocated; ``__setstate__`` checks the carried bytes against the declared shape and
    makes the array a view of them."""

    __slots__ = ("array", "_spend")

    def __init__(self, spend: Callable[[int], None]):
        self.array = None
        self._spend = spend

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("a numpy array carries an unknown state")
        shape, dtype, fortran, data = state[-4:]
        self.array = _array_from(data, _plain_dtype(dtype), shape, "F" if fortran else "C",
                                 self._spend)


def _plain_dtype(dtype) -> np.dtype:
    if isinstance(dtype, _DtypeStub):
        return dtype.dtype
    raise pickle.UnpicklingError(f"an array's dtype is a {type(dtype).__name__}")


def _array_from(data, dtype: np.dtype, shape, order: str, spend) -> np.ndarray:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise pickle.UnpicklingError("an array's shape is not a tuple of sizes")
    if isinstance(data, str):
        spend(len(data))
        try:
            data = data.encode("latin1")
        except UnicodeEncodeError:
            raise pickle.UnpicklingError("an array's data is not latin1 text") from None
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"an array's data is a {type(data).__name__}, not bytes")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data):
        shown = shape if len(shape) <= 6 else f"({len(shape)} dimensions)"
        raise pickle.UnpicklingError(f"an array declares shape {shown} "
                                     f"({count * dtype.itemsize:,} bytes) but carries "
                                     f"{len(data):,} bytes")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError("an array's order is neither C nor F")
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order=order)


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy number arrays; refuses all else.

    ``find_class`` is the only door through which a pickle reaches code; it opens for
    numpy's array/dtype/scalar reconstruction (our own functions, see above), for
    latin1 ``_codecs.encode`` and an argument-less ``bytes()``, and raises for everything
    else before it can run.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy.core.multiarray", "scalar"): "_scalar",
        ("numpy._core.multiarray", "scalar"): "_scalar",
        ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
        ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
        ("numpy", "ndarray"): "_ndarray",
        ("numpy", "dtype"): "_dtype",
        ("_codecs", "encode"): "_encode",
        ("__builtin__", "bytes"): "_empty_bytes",  # protocols 0-1 write b"" as bytes()
        ("builtins", "bytes"): "_empty_bytes",
    }

    def __init__(self, file, budget: int):
        super().__init__(file, encoding="latin1")
        self._budget = budget

    def find_class(self, module: str, name: str):
        attr = self._ALLOWED.get((module, name))
        if attr is None:
            raise _Refused(f"{module}.{name}"[:80])
        return _NDARRAY if attr == "_ndarray" else getattr(self, attr)

    def persistent_load(self, pid):
        raise _Refused("a persistent id")

    def _spend(self, n: int) -> None:
        self._budget -= n
        if self._budget < 0:
            raise _Budget("it builds more data than the file holds")

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("only plain numpy arrays may be rebuilt")
        return _ArrayStub(self._spend)

    def _dtype(self, spec, align=False, copy=False):
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 8:
            raise pickle.UnpicklingError("a numpy dtype is not a short type code")
        try:
            dtype = np.dtype(spec)
        except TypeError:
            raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not plain numbers") from None
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise pickle.UnpicklingError(f"numpy dtype {dtype} is not plain numbers")
        return _DtypeStub(dtype)

    def _scalar(self, dtype, data=None):
        array = _array_from(data, _plain_dtype(dtype), (1,), "C", self._spend)
        return array[0]

    def _frombuffer(self, buffer, dtype, shape, order="C"):
        return _array_from(buffer, _plain_dtype(dtype), shape, order, self._spend)

    def _empty_bytes(self, *args):
        if args:
            raise _Refused("builtins.bytes with arguments")
        return b""

    def _encode(self, text, encoding="latin1", errors="strict"):
        # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
        if not isinstance(text, str) or not isinstance(encoding, str) or \
                encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
            raise pickle.UnpicklingError("_codecs.encode is allowed for latin1 text only")
        self._spend(len(text))
        return text.encode("latin1")


def _unstub(value, path: Path):
    if isinstance(value, _ArrayStub):
        if value.array is None:
            raise DataError(f"{path} is not a readable CIFAR pickle (an array in it carries "
                            f"no data); delete it and download it again.")
        return value.array
    return value


def read_cifar_pickle(path: str | os.PathLike) -> dict[str, object]:
    """Load a CIFAR python pickle safely; keys come back as ``str``.

    Arrays come back read-only (views of the file's bytes); copy what you keep.
    """
    path = Path(path)
    raw = _read(path)
    if not raw:
        raise DataError(f"{path} is empty; delete it and download it again.")
    _scan_pickle(raw, path)
    unpickler = _CifarUnpickler(io.BytesIO(raw), budget=2 * len(raw) + 2**20)
    try:
        obj = unpickler.load()
    except _Refused as exc:
        raise DataError(f"{path} was refused: it asks to call {exc.name}, while a CIFAR batch "
                        f"holds only arrays and lists, so nothing in it was run; do not use "
                        f"this file.") from exc
    except _Budget as exc:
        raise DataError(f"{path} was refused: {exc} ({limits.human_bytes(len(raw))}), as a "
                        f"pickle bomb would; do not use this file.") from exc
    except MemoryError:
        raise
    except Exception as exc:  # any malformed pickle: truncated, corrupt, wrong opcodes
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: "
                        f"{_short(exc)}); delete it and download it again.") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch: it holds a {type(obj).__name__} instead "
                        f"of a dict with 'data' and labels.")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, (str, bytes)):
            raise DataError(f"{path} is not a CIFAR batch: it has a key that is a "
                            f"{type(key).__name__}, not a name.")
        out[key.decode("latin1") if isinstance(key, bytes) else key] = _unstub(value, path)
    return out


def read_cifar_batch(path: str | os.PathLike, label_key: str = "labels"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 3 x 32 x 32 uint8) and labels (N int64) from one CIFAR python batch."""
    path = Path(path)
    batch = read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        keys = sorted(batch)
        shown = [_cell(k) for k in keys[:8]] + (["..."] if len(keys) > 8 else [])
        raise DataError(f"{path} is not a CIFAR batch: it has the keys [{', '.join(shown)}] "
                        f"but needs 'data' and {label_key!r}.")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim not in (2, 4) \
            or math.prod(data.shape[1:]) != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path} is not a CIFAR batch: its 'data' is {type(data).__name__} "
                        f"{shape}, not uint8 rows of 3072 pixels.")
    labels = _integer_labels(batch[label_key], str(path))
    if len(labels) != len(data):
        raise DataError(f"{path} holds {len(labels)} labels for {len(data)} images; the "
                        f"batch is corrupt, download it again.")
    return np.array(data.reshape(-1, 3, 32, 32)), labels


def _cifar_meta_names(path: Path, key: str) -> list[str] | None:
    if not path.is_file():
        return None
    meta = read_cifar_pickle(path)
    names = meta.get(key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path} has no list {key!r} of class names; it is not a CIFAR "
                        f"meta file.")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


# --------------------------------------------------------------------------- CIFAR binary


def read_cifar_binary(path: str | os.PathLike, label_bytes: int = 1, label_index: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from a CIFAR ``.bin`` file of (labels..., 3072 pixels) records.

    CIFAR-10: ``label_bytes=1``; CIFAR-100: ``label_bytes=2`` (coarse, fine) and
    ``label_index=1`` for the fine label.
    """
    path = Path(path)
    raw = _read(path)
    record = label_bytes + 3072
    if not raw or len(raw) % record:
        raise DataError(f"{path} has {len(raw)} bytes, which is not a whole number of "
                        f"{record}-byte CIFAR records; it is truncated or not a "
                        f"CIFAR-{10 if label_bytes == 1 else 100} binary file.")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy()
    return images, rows[:, label_index].astype(np.int64)


def _text_names(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    names = [line.strip() for line in _read(path).decode("utf-8", "replace").splitlines()]
    return [n for n in names if n] or None


# --------------------------------------------------------------------------- CSV (Kaggle)

#: Header names that mark the label column, wherever it sits.
LABEL_COLUMN_NAMES = ("label", "labels", "class", "target", "y")
_INDEX_COLUMN_NAMES = ("id", "index", "unnamed: 0", "imageid", "image_id")
_CSV_CHUNK_BYTES = 8 * 2**20  # text parsed at a time: memory stays ~ the output + this
_INT_CELL = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def _image_shaped(n: int) -> bool:
    side = math.isqrt(n)
    if n and side * side == n:
        return True
    side = math.isqrt(n // 3)
    return bool(n) and n % 3 == 0 and side * side * 3 == n


def _infer_chw(n: int, path: Path) -> tuple[int, int, int]:
    side = math.isqrt(max(n, 0))
    if n and side * side == n:
        return 1, side, side
    side = math.isqrt(max(n, 0) // 3)
    if n and n % 3 == 0 and side * side * 3 == n:
        return 3, side, side
    raise DataError(f"{path} has {n} pixel columns after the label, which is no square "
                    f"grayscale or RGB image; expected label + C*H*W columns, e.g. 1 + 784.")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@dataclass
class _CsvHead:
    header: list[str] | None
    width: int
    label_col: int | None  # None: the file has no label column
    data_offset: int       # byte offset of the first data line
    data_line: int         # its 1-based line number
    why_unlabeled: str = ""


def _csv_head(path: Path) -> _CsvHead:
    """Read the first line of a CSV: header or not, width, where the label column is."""
    _stat(path)
    first, offset, line_no = b"", 0, 1
    with _open(path) as fh:
        try:
            while not first:
                raw = fh.readline()  # up to a \n; old Mac files end lines at a lone \r
                if not raw:
                    break
                pos = 0
                while pos < len(raw):
                    cr = raw.find(b"\r", pos)
                    lone = 0 <= cr < len(raw) - 1 and raw[cr + 1] != 0x0A
                    line = raw[pos:cr + 1] if lone else raw[pos:]
                    if line.replace(b"\xef\xbb\xbf", b"").strip():  # a BOM alone is blank
                        first = line
                        break
                    pos += len(line)
                    line_no += 1
                offset += pos if first else len(raw)
        except OSError as exc:
            raise DataError(f"cannot read {path} ({exc.strerror or _short(exc)}); check "
                            f"the file.") from exc
    if not first:
        raise DataError(f"{path} is empty; a CSV needs a label column and pixel columns.")
    if first[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); "
                        f"save it as UTF-8 or plain ASCII CSV.")
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} line {line_no} is not UTF-8 text (byte "
                        f"0x{first[exc.start]:02x}); save the file as UTF-8 or plain "
                        f"ASCII.") from None
    if "\x00" in text:
        raise DataError(f"{path} line {line_no} holds NUL bytes, so it is not a text CSV "
                        f"file; check the file.")
    try:
        cells = next(csv.reader([text]))
    except (csv.Error, StopIteration) as exc:
        raise DataError(f"{path} line {line_no} is not CSV text ({_short(exc)}); check the "
                        f"file.") from exc
    if len(cells) == 1 and any(sep in text for sep in (";", "\t")):
        sep = "';'" if ";" in text else "tabs"
        raise DataError(f"{path} separates its cells with {sep}, not commas; deeparch reads "
                        f"comma-separated files, so save it as CSV with commas.")
    is_header = not all(_is_number(c) for c in cells)
    width = len(cells)
    header = [c.strip() for c in cells] if is_header else None
    data_offset = offset + len(first) if is_header else offset
    data_line = line_no + 1 if is_header else line_no
    names = [c.lower() for c in header] if header else []
    label_col = next((i for i, n in enumerate(names) if n in LABEL_COLUMN_NAMES), None)
    head = _CsvHead(header, width, label_col, data_offset, data_line)
    if label_col is not None:
        return head
    if names and names[0] in _INDEX_COLUMN_NAMES + ("",):
        raise DataError(f"{path} starts with the column {_cell(header[0])}, an id or index "
                        f"column rather than a label; remove it, or name the label column "
                        f"'label'.")
    unlabeled = (names and names[0].startswith("pixel")) or (
        width >= 4 and _image_shaped(width) and not _image_shaped(width - 1))
    if unlabeled:
        starts = f", header starts with {_cell(header[0])}" if header else ""
        head.label_col = None
        head.why_unlabeled = (f"{path.name} has no label column ({width} pixel "
                              f"columns{starts})")
    else:
        head.label_col = 0
    return head


def _csv_unlabeled(path: Path) -> str:
    """Why a CSV file has no label column ('' when it has one)."""
    try:
        return _csv_head(path).why_unlabeled
    except DataError:
        return ""


def read_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x C x H x W uint8) and labels (N int64) from a Kaggle-style CSV.

    The first row is a header when it is not all numbers. The label is the column
    named ``label`` (``labels``, ``class``, ``target``, ``y``), else the first one; a
    file whose columns are all pixels (Kaggle's unlabeled ``test.csv``) is refused.
    The file is parsed a chunk at a time (numpy's C reader; a careful pass names the
    line and column of the first bad cell), straight into uint8.
    """
    images, labels, _lines = _read_csv_table(Path(path))
    return images, labels


def _read_csv_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, the line number of each row)."""
    head = _csv_head(path)
    if head.label_col is None:
        raise DataError(f"{path} has no label column ({head.width} pixel columns"
                        f"{', header starts with ' + _cell(head.header[0]) if head.header else ''}"
                        f"), so it can neither train nor score a model; deeparch needs a label "
                        f"column (first, or named 'label').")
    c, h, w = _infer_chw(head.width - 1, path)
    xs, ys, lines = [], [], []
    line0 = head.data_line
    with _open(path) as fh:
        fh.seek(head.data_offset)
        rest = b""
        while True:
            try:
                chunk = fh.read(_CSV_CHUNK_BYTES)
            except OSError as exc:
                raise DataError(f"cannot read {path} ({exc.strerror or _short(exc)}); check "
                                f"the file.") from exc
            if chunk:
                data = rest + chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                data, rest = data[:cut + 1], data[cut + 1:]
            else:
                data, rest = rest, b""
            if data:
                x, y, at, line0 = _csv_block(data, line0, head, path)
                if len(x):
                    xs.append(x)
                    ys.append(y)
                    lines.append(at)
            if not chunk:
                break
    if not xs:
        raise DataError(f"{path} has a header but no rows of data." if head.header else
                        f"{path} holds no rows of data.")
    images = np.concatenate(xs) if len(xs) > 1 else xs[0]
    return (images.reshape(-1, c, h, w), np.concatenate(ys), np.concatenate(lines))


def _csv_block(data: bytes, line0: int, head: _CsvHead, path: Path):
    """Parse whole lines ``data`` starting at line ``line0``: (pixels uint8, labels,
    line of each row, the next line number)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = line0 + data.count(b"\n", 0, exc.start)
        raise DataError(f"{path} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                        f"save the file as UTF-8 or plain ASCII.") from None
    crs = text.count("\r")
    if crs and crs != text.count("\r\n"):  # old Mac line ends (loadtxt reads \r\n itself)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = text.split("\n")  # one str per line: less memory than a StringIO
    del text
    if parts[-1] == "":
        parts.pop()
    n_lines = len(parts)
    table = at = None
    if not any("\x00" in p for p in parts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": handled below
                table = np.loadtxt(parts, delimiter=",", dtype=np.int64, ndmin=2,
                                   comments=None)
        except ValueError:
            table = None
        if table is not None and table.size and table.shape[1] != head.width:
            table = None
    if table is not None:
        if len(table) == n_lines:
            at = np.arange(line0, line0 + n_lines, dtype=np.int64)
        else:  # empty lines were skipped
            at = np.array([line0 + i for i, s in enumerate(parts) if s], dtype=np.int64)
            if len(at) != len(table):
                table = None
    if table is None:
        table, at = _csv_block_carefully(parts, line0, head, path)
    table = table.reshape(-1, head.width)
    labels = table[:, head.label_col]
    pixels = table[:, 1:] if head.label_col == 0 else np.delete(table, head.label_col, axis=1)
    if table.size and (table.min() < 0 or pixels.max() > 255):
        bad_label = labels < 0
        bad_pixel = (pixels < 0) | (pixels > 255)
        rows = []
        if bad_label.any():
            rows.append((int(np.argmax(bad_label)), head.label_col))
        if bad_pixel.any():
            r, k = (int(v) for v in np.argwhere(bad_pixel)[0])
            rows.append((r, k + (k >= head.label_col)))
        row, col = min(rows)
        what = "a label" if col == head.label_col else "a pixel"
        raise DataError(f"{path} line {at[row]}, column {col + 1} holds {table[row, col]}, "
                        f"which is out of range for {what} (labels >= 0, pixels 0..255).")
    return pixels.astype(np.uint8), labels.copy(), at, line0 + n_lines


def _csv_block_carefully(parts: list[str], line0: int, head: _CsvHead, path: Path
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Row by row into an int64 block, raising a DataError at the first bad cell."""
    width = head.width
    out = np.empty((len(parts), width), dtype=np.int64)
    at = np.empty(len(parts), dtype=np.int64)
    k = 0
    reader = csv.reader(parts)
    line = line0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path} line {line0 + reader.line_num - 1} is not CSV text "
                            f"({_short(exc)}); fix or remove that row.") from None
        line = line0 + reader.line_num - 1
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != width:
            raise DataError(f"{path} line {line} has {len(cells)} columns instead of "
                            f"{width}; every row must be a label then the same pixels.")
        for col, cell in enumerate(cells, 1):
            if not _INT_CELL.fullmatch(cell):
                name = f" ({_cell(head.header[col - 1])})" if head.header else ""
                raise DataError(f"{path} line {line}, column {col}{name} holds {_cell(cell)}, "
                                f"which is not a whole number; fix or remove that row.")
        values = [int(cell) for cell in cells]
        try:
            out[k] = values
        except OverflowError:
            col = next(i for i, v in enumerate(values) if not -2**63 <= v < 2**63)
            raise DataError(f"{path} line {line}, column {col + 1} holds a number of "
                            f"{len(cells[col].strip())} digits, far out of range for a label "
                            f"or a pixel; fix or remove that row.") from None
        at[k] = line
        k += 1
    return out[:k], at[:k]


# --------------------------------------------------------------------------- .npz files

def _npz_members(path: Path) -> zipfile.ZipFile:
    size = _stat(path).st_size
    with _open(path) as fh:
        fh.seek(max(0, size - 65557))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise DataError(f"{path} is not a readable .npz file (no zip directory at its end); "
                        f"write it again with numpy.savez or deeparch augment --save.")
    entries = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if entries > limits.MAX_NPZ_MEMBERS:
        raise DataError(f"{path} lists {entries:,} members in its zip directory, while an .npz "
                        f"data set holds a few arrays; it is not a data set file.")
    try:
        zf = zipfile.ZipFile(path)
    except MemoryError:
        raise
    except Exception as exc:  # BadZipFile, OSError, struct/Unicode errors of a bad directory
        raise DataError(f"{path} is not a readable .npz file ({_short(exc)}); write it again "
                        f"with numpy.savez or deeparch augment --save.") from exc
    if len(zf.infolist()) > limits.MAX_NPZ_MEMBERS:
        zf.close()
        raise DataError(f"{path} lists more than {limits.MAX_NPZ_MEMBERS} members in its zip "
                        f"directory, while an .npz data set holds a few arrays; it is not a "
                        f"data set file.")
    return zf


def _npz_array(zf: zipfile.ZipFile, name: str, path: Path, size: int) -> np.ndarray:
    """One member ``name.npy``, read without pickles and within its declared sizes."""
    info = zf.getinfo(name + ".npy")
    where = f"{path} member {name}.npy"
    if info.flag_bits & 0x1:
        raise DataError(f"{where} is encrypted; write the file again without a password.")
    if info.header_offset + info.compress_size > size:
        raise DataError(f"{where} declares {limits.human_bytes(info.compress_size)} of data "
                        f"beyond the end of the {limits.human_bytes(size)} file; it is "
                        f"truncated, write it again.")
    bound = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
        limits.decompressed_bound(info.compress_size)
    if info.file_size > bound:
        raise DataError(f"{where} declares {limits.human_bytes(info.file_size)} when "
                        f"decompressed, more than its {limits.human_bytes(info.compress_size)} "
                        f"may expand to, so it is corrupt or a zip bomb and was not read.")
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                    fh, max_header_size=10000)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                    fh, max_header_size=10000)
            else:
                raise ValueError(f"npy format version {version} is not supported")
            if dtype.hasobject or dtype.kind not in "biufUS" or dtype.fields is not None \
                    or dtype.subdtype is not None:
                raise DataError(f"{where} holds {_cell(str(dtype), 40)} values, not plain "
                                f"numbers or text; deeparch reads no pickled objects.")
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            if nbytes != info.file_size - fh.tell():
                raise DataError(f"{where} declares shape {shape} ({limits.human_bytes(nbytes)})"
                                f" but holds {limits.human_bytes(info.file_size - fh.tell())} "
                                f"of data; it is corrupt, write it again.")
            array = _alloc((count,), dtype, f"the data of {where}")
            got = _read_into(fh, memoryview(array.view(np.uint8)) if nbytes else memoryview(b""))
            if got != nbytes or fh.read(1):
                raise DataError(f"{where} does not hold the {nbytes:,} bytes its header "
                                f"declares; it is corrupt, write it again.")
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # BadZipFile (CRC), zlib/lzma errors, EOF, a bad .npy header
        raise DataError(f"{where} is not readable ({_short(exc)}); write the file "
                        f"again.") from exc
    array = array.reshape(shape, order="F" if fortran else "C")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def read_npz(path: str | os.PathLike, split: str = "train"
             ) -> tuple[np.ndarray, np.ndarray, list[str] | None, list[str], np.ndarray | None]:
    """Images (uint8 N x C x H x W), labels, class names (or None), notes and groups (or
    None) from an ``.npz`` file: ``images`` / ``labels`` / optional ``classes`` and
    ``groups`` (``deeparch augment --save``; the same data for either split), or Keras'
    ``x_train`` / ``y_train`` /
    ``x_test`` / ``y_test`` (``split`` picks). Read with no pickles, every member's
    declared sizes checked against the file before anything is allocated."""
    path = Path(path)
    size = _stat(path).st_size
    with _npz_members(path) as zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        notes: list[str] = []
        if {"images", "labels"} <= names:
            x_name, y_name = "images", "labels"
        elif {"x_train", "y_train"} <= names:
            x_name, y_name = ("x_test", "y_test") if split == "test" else ("x_train", "y_train")
            if not {x_name, y_name} <= names:
                raise DataError(f"{path} holds x_train and y_train but no {x_name} and "
                                f"{y_name}; ask for split='train'.")
        else:
            shown = sorted(names)[:8]
            if "images" in names:
                raise DataError(f"{path} holds images but no labels; a data set to train on "
                                f"needs one label per image (save them with the images).")
            raise DataError(f"{path} holds the arrays [{', '.join(_cell(n) for n in shown)}] "
                            f"but no 'images' and 'labels' (nor Keras' x_train and y_train); "
                            f"save the data set under those names.")
        images = _npz_array(zf, x_name, path, size)
        labels = _npz_array(zf, y_name, path, size)
        classes = _npz_array(zf, "classes", path, size) if "classes" in names else None
        groups = _npz_array(zf, "groups", path, size) \
            if "groups" in names and x_name == "images" else None
    where = f"{path} ({x_name})"
    if images.dtype != np.uint8:
        raise DataError(f"{where} holds {images.dtype} images; deeparch data sets are uint8 "
                        f"0..255, so save them as uint8.")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        notes.append(f"{path.name}: read the images as channels-last (N x H x W x C) and "
                     f"moved the channels first")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"{where} holds images shaped {images.shape}; expected N x C x H x W "
                        f"or N x H x W with 1 or 3 channels.")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{path} ({y_name}) holds {labels.dtype} labels shaped {labels.shape}, "
                        f"not one whole number per image.")
    if len(labels) != len(images):
        raise DataError(f"{path} holds {len(labels)} labels for {len(images)} images; give "
                        f"exactly one label per image.")
    labels = _integer_labels(labels, f"{path} ({y_name})")
    names_out = None
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(f"{path} (classes) holds {classes.dtype} shaped {classes.shape}, "
                            f"not a list of class names.")
        names_out = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                     for c in classes.tolist()]
    if groups is not None and (groups.dtype.kind not in "iu" or groups.shape != labels.shape):
        raise DataError(f"{path} (groups) holds {groups.dtype} shaped {groups.shape}, not one "
                        f"whole number per image.")
    return images, labels, names_out, notes, groups


# --------------------------------------------------------------------------- image folders

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}


def _image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _class_files(folder: Path, extensions: set[str]) -> list[Path]:
    """Image files under ``folder``, following links to folders but never in a loop."""
    found, seen, stack = [], set(), [folder]
    while stack:
        current = stack.pop()
        try:
            st = current.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue  # a link back to a folder already read
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            raise DataError(f"cannot read the folder {current} ({exc.strerror or _short(exc)}); "
                            f"check its permissions.") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                stack.append(path)
            elif is_file:
                if path.suffix.lower() in extensions:
                    found.append(path)
            elif entry.is_symlink() and path.suffix.lower() in extensions:
                raise DataError(f"{path} is a link to a file that does not exist; fix or "
                                f"remove the link.")
    return sorted(found)


class _Decoded:
    """What the reader did to one image beyond decoding it."""

    def __init__(self):
        self.resized = 0
        self.wide = 0
        self.floats = 0
        self.alpha = 0
        self.gray_to_rgb = 0


def _image_info(file: Path):
    """(width, height, mode) from the header only, refusing images above the pixel bound."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                w, h = img.size
                mode = img.mode
    except Image.DecompressionBombError as exc:
        raise DataError(f"{file} has more than {limits.MAX_IMAGE_PIXELS:,} pixels, the most "
                        f"deeparch decodes per image (a decompression-bomb guard); shrink it "
                        f"or remove it.") from exc
    except MemoryError:
        raise
    except Exception as exc:  # PIL raises many kinds for a file it cannot read
        raise DataError(f"{file} is not a readable image ({_short(exc)}); replace or remove "
                        f"it.") from exc
    if w * h > limits.MAX_IMAGE_PIXELS:
        raise DataError(f"{file} is {h}x{w} = {w * h:,} pixels, more than the "
                        f"{limits.MAX_IMAGE_PIXELS:,} deeparch decodes per image (a "
                        f"decompression-bomb guard); shrink it or remove it.")
    return w, h, mode


def _wide_to_255(a: np.ndarray, mode: str, file: Path, report: _Decoded) -> np.ndarray:
    """High-bit-depth pixels as float32 on 0..255 (see read_image_folder)."""
    if mode == "F":
        if not np.isfinite(a).all():
            raise DataError(f"{file} holds NaN or infinite float pixels; fix or remove it.")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise DataError(f"{file} holds float pixels from {lo:g} to {hi:g}, outside both "
                            f"0..1 and 0..255, so their range is unknown; convert it to 8 or "
                            f"16 bits.")
        report.floats += 1
        return (a * 255.0 if hi <= 1.0 else a).astype(np.float32)
    a = a.astype(np.int64)
    if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
        raise DataError(f"{file} holds integer pixels from {int(a.min())} to {int(a.max())}, "
                        f"outside the 16-bit range 0..65535, so their scale is unknown; "
                        f"convert it to 8 or 16 bits.")
    report.wide += 1
    return (a * (255.0 / 65535.0)).astype(np.float32)


def _decode(file: Path, gray: bool, size: tuple[int, int], report: _Decoded) -> np.ndarray:
    """One image as uint8 C x H x W at ``size`` = (width, height)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                img.load()
                mode = img.mode
                if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
                    report.alpha += 1
                if mode in _WIDE_MODES:
                    values = _wide_to_255(np.asarray(img), mode, file, report)
                    if img.size != size:
                        values = np.asarray(Image.fromarray(values).resize(
                            size, Image.Resampling.BILINEAR))
                        report.resized += 1
                    pixels = np.clip(np.rint(values), 0, 255).astype(np.uint8)
                    if not gray:
                        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
                        report.gray_to_rgb += 1
                else:
                    if not gray and mode in _GRAY_MODES:
                        report.gray_to_rgb += 1
                    out = img.convert("L" if gray else "RGB")
                    if out.size != size:
                        out = out.resize(size, Image.Resampling.BILINEAR)
                        report.resized += 1
                    pixels = np.asarray(out, dtype=np.uint8)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # PIL raises many kinds for a file it cannot decode
        raise DataError(f"{file} is not a readable image ({_short(exc)}); replace or remove "
                        f"it.") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_image_folder(root: str | os.PathLike, image_size: int | Sequence[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and class names from ``root/<class>/<image>`` (sorted, recursive).

    See :func:`read_image_folder_notes`, which also says what was done to the images.
    """
    images, labels, classes, _notes = read_image_folder_notes(root, image_size)
    return images, labels, classes


def read_image_folder_notes(root: str | os.PathLike,
                            image_size: int | Sequence[int] | None = None
                            ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Images, labels, class names and notes from ``root/<class>/<image>``.

    Without ``image_size`` the images keep their own size, which they must share (else
    a DataError asks for an ``image_size``); with it, each image is resized (bilinear)
    from its original file. Every image becomes RGB, or L when all are grayscale.
    Pixels of more than 8 bits are scaled, never clipped: 16-bit integers (modes I;16*,
    and mode I, read as 16-bit when it lies in 0..65535) by 255/65535, rounded; floats
    (mode F) by 255 when they lie in 0..1, as they are in 0..255; any other range is
    refused. (Pillow itself reads 16-bit RGB PNGs as their high bytes, value // 256.)
    Files PIL does not know by extension are skipped; one that cannot be decoded, or
    that has more than limits.MAX_IMAGE_PIXELS pixels, raises a DataError naming it.
    Only headers are read before the output is allocated, then one image at a time.
    """
    root = Path(root)
    size = _size_hw(image_size) if image_size is not None else None
    try:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot read the folder {root} ({exc.strerror or _short(exc)}); check "
                        f"its permissions.") from exc
    if not class_dirs:
        raise DataError(f"{root} has no class subfolders; put the images in one subfolder "
                        f"per class, e.g. {root / 'cat' / '0001.png'}.")
    extensions = _image_extensions()
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        found = _class_files(folder, extensions)
        if not found:
            raise DataError(f"the class folder {folder} holds no images; add some or remove it.")
        files.extend((p, label) for p in found)

    infos = [_image_info(file) for file, _ in files]
    gray = all(mode in _GRAY_MODES for _, _, mode in infos)
    shapes = [(h, w) for w, h, _ in infos]
    sizes = set(shapes)
    if size is None:
        if len(sizes) > 1:
            j = next(j for j, s in enumerate(shapes) if s != shapes[0])
            common = max(collections.Counter(shapes).items(), key=lambda kv: (kv[1], kv[0]))[0]
            raise DataError(f"{root} holds images of {len(sizes)} different sizes "
                            f"({files[0][0].name} is {_hw(shapes[0])}, {files[j][0].name} is "
                            f"{_hw(shapes[j])}); ask for one size with image_size (the most "
                            f"common here is {_hw(common)}).")
        size = shapes[0]
    h, w = size
    channels = 1 if gray else 3
    out = _alloc((len(files), channels, h, w), np.uint8,
                 f"the {len(files)} images of {root} at {h}x{w}")
    report = _Decoded()
    for i, (file, _label) in enumerate(files):
        out[i] = _decode(file, gray, (w, h), report)
    notes = []

    def images(n: int) -> str:
        return f"{n} of {len(files)} image{'s' if len(files) != 1 else ''}"

    if report.resized:
        if len(sizes) == 1:
            native = _hw(shapes[0])
        else:
            shown = ", ".join(_hw(s) for s in sorted(sizes)[:2])
            native = f"{len(sizes)} different sizes (e.g. {shown})"
        notes.append(f"{root.name}: resized {images(report.resized)} from {native} to "
                     f"{h}x{w} (image_size)")
    if report.wide:
        notes.append(f"{root.name}: scaled the 16-bit pixels of {images(report.wide)} to "
                     f"8 bits (value x 255 / 65535, rounded)")
    if report.floats:
        notes.append(f"{root.name}: scaled the float pixels of {images(report.floats)} to "
                     f"0..255")
    if report.alpha:
        notes.append(f"{root.name}: dropped the alpha (transparency) channel of "
                     f"{images(report.alpha)}")
    if report.gray_to_rgb:
        notes.append(f"{root.name}: repeated {images(report.gray_to_rgb)} (grayscale) to 3 "
                     f"channels, as the others are colour")
    labels = np.array([label for _, label in files], dtype=np.int64)
    return out, labels, [p.name for p in class_dirs], notes


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class _Layout:
    """Where the files of one on-disk format sit, by split."""

    kind: str
    subdirs: tuple[str, ...]          # folders to look in besides the folder itself
    files: dict[str, tuple[str, ...]]  # split -> file names
    gz_optional: bool = False         # IDX files may carry .gz

    def candidates(self, folder: Path) -> list[Path]:
        return [folder / s for s in self.subdirs] + [folder]

    def _resolve(self, folder: Path, name: str) -> Path | None:
        for option in ((name, name + ".gz") if self.gz_optional else (name,)):
            if (folder / option).is_file():
                return folder / option
        return None

    def locate(self, folders: Sequence[Path], split: str) -> tuple[Path, list[Path]] | None:
        for base in folders:
            for folder in self.candidates(base):
                paths = [self._resolve(folder, n) for n in self.files[split]]
                if all(paths):
                    return folder, paths  # type: ignore[return-value]
        return None

    def present(self, folder: Path) -> Path | None:
        """The folder holding any file of this layout, if one does."""
        for candidate in self.candidates(folder):
            for names in self.files.values():
                if any(self._resolve(candidate, n) for n in names):
                    return candidate
        return None

    def describe(self, split: str) -> str:
        names = list(self.files[split])
        gz = " (each may end in .gz)" if self.gz_optional else ""
        return ", ".join(names) + gz


_IDX = _Layout("idx", ("raw",), {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}, gz_optional=True)
_CIFAR10_PY = _Layout("cifar10-python", ("cifar-10-batches-py",), {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)})
_CIFAR10_BIN = _Layout("cifar10-binary", ("cifar-10-batches-bin",), {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)})
_CIFAR100_PY = _Layout("cifar100-python", ("cifar-100-python",), {
    "train": ("train",), "test": ("test",)})
_CIFAR100_BIN = _Layout("cifar100-binary", ("cifar-100-binary",), {
    "train": ("train.bin",), "test": ("test.bin",)})
_DIRECTORY_LAYOUTS = (_IDX, _CIFAR10_PY, _CIFAR10_BIN, _CIFAR100_PY, _CIFAR100_BIN)


def _read_layout(layout: _Layout, folder: Path, paths: list[Path], names: list[str] | None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the files of one split; ``names`` are the class names known in advance."""
    if layout is _IDX:
        images, labels = read_idx_pair(*paths)
    elif layout is _CIFAR10_PY:
        parts = [read_cifar_batch(p, "labels") for p in paths]
        names = _cifar_meta_names(folder / "batches.meta", "label_names") or names
    elif layout is _CIFAR100_PY:
        parts = [read_cifar_batch(p, "fine_labels") for p in paths]
        names = _cifar_meta_names(folder / "meta", "fine_label_names") or names
    elif layout is _CIFAR10_BIN:
        parts = [read_cifar_binary(p, 1, 0) for p in paths]
        names = _text_names(folder / "batches.meta.txt") or names
    else:
        parts = [read_cifar_binary(p, 2, 1) for p in paths]
        names = _text_names(folder / "fine_label_names.txt") or names
    if layout is not _IDX:
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    where = str(paths[-1]) if len(paths) == 1 or layout is _IDX else f"{folder} ({layout.kind})"
    return images, labels, _classes_for(labels, names, where)


# --------------------------------------------------------------------------- named datasets


@dataclass(frozen=True)
class _Named:
    layouts: tuple[_Layout, ...]
    classes: list[str]
    csv_prefix: str | None = None  # Kaggle CSV files <prefix>_<split>.csv


_NAMED = {
    "mnist": _Named((_IDX,), MNIST_CLASSES, "mnist"),
    "fashion_mnist": _Named((_IDX,), FASHION_MNIST_CLASSES, "fashion-mnist"),
    "cifar10": _Named((_CIFAR10_PY, _CIFAR10_BIN), CIFAR10_CLASSES),
    "cifar100": _Named((_CIFAR100_PY, _CIFAR100_BIN), CIFAR100_CLASSES),
}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist",
            "cifar-10": "cifar10", "cifar-100": "cifar100"}
DATASETS = ("digits", *_NAMED)


def _find_named(spec: _Named, folders: list[Path], split: str
                ) -> tuple[_Layout | None, Path, list[Path]] | None:
    for layout in spec.layouts:
        found = layout.locate(folders, split)
        if found:
            return layout, found[0], found[1]
    if spec.csv_prefix:
        for folder in folders:
            path = folder / f"{spec.csv_prefix}_{split}.csv"
            if path.is_file():
                return None, folder, [path]
    return None


def _load_named(name: str, split: str, root, download: bool) -> ArrayDataset:
    spec = _NAMED[name]
    home = _download.dataset_dir(name, root)
    folders = [home] + ([Path(root).expanduser()] if root is not None else [])
    found = _find_named(spec, folders, split)
    if found is None and download:
        _download.fetch(name, root)
        found = _find_named(spec, folders, split)
        if found is None:
            raise DataError(f"the files fetched for {name} into {home} do not hold its {split} "
                            f"split ({spec.layouts[0].describe(split)}); delete {home} and "
                            f"download again.")
    if found is None:
        layout = spec.layouts[0]
        where = layout.subdirs[0] if layout is not _IDX else None
        folder = home / where if where else home
        resources = _download.SOURCES[name]
        wanted = [r for r in resources if r.filename.removesuffix(".gz") in layout.files[split]]
        hint = _download.manual_hint(name, tuple(wanted) or resources, home)
        raise DownloadError(f"{name} ({split}) is not in {home}: expected "
                            f"{layout.describe(split)} in {folder}; {hint}, or ask for "
                            f"download=True.")
    layout, folder, paths = found
    if layout is None:
        images, labels, lines = _read_csv_table(paths[0])
        classes = _classes_for(labels, spec.classes, str(paths[0]), _on_line(lines))
    else:
        images, labels, classes = _read_layout(layout, folder, paths, spec.classes)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, name)


def _load_digits(split: str) -> ArrayDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    full = ArrayDataset(torch.from_numpy(images), torch.from_numpy(digits.target.astype(np.int64)),
                        MNIST_CLASSES, "digits")
    train, test = train_val_split(full, val_fraction=0.2, seed=0, stratified=True)
    return train if split == "train" else test


# --------------------------------------------------------------------------- paths


def _on_line(lines: np.ndarray) -> Callable[[int], str]:
    return lambda row: f" on line {int(lines[row])}"


def _split_csvs(path: Path, split: str) -> list[Path]:
    return sorted(p for p in path.glob(f"*{split}.csv") if p.is_file()
                  and (p.name == f"{split}.csv" or p.name.endswith(f"_{split}.csv")))


def _load_directory(path: Path, split: str, image_size) -> tuple[ArrayDataset, bool]:
    """A folder of IDX / CIFAR / CSV files, or an image folder; (dataset, was_sized)."""
    for layout in _DIRECTORY_LAYOUTS:
        folder = layout.present(path)
        if folder is None:
            continue
        found = layout.locate([folder], split)
        if found is None:
            raise DataError(f"{folder} holds {layout.kind} files but not the {split} split: "
                            f"expected {layout.describe(split)} there.")
        images, labels, classes = _read_layout(layout, found[0], found[1], None)
        return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), classes,
                            path.name), False
    other = "test" if split == "train" else "train"
    mine, theirs = _split_csvs(path, split), _split_csvs(path, other)
    for found in (mine, theirs):
        if len(found) > 1:
            raise DataError(f"{path} holds several {other if found is theirs else split} CSV "
                            f"files ({', '.join(p.name for p in found[:4])}); give the one "
                            f"you mean as the path.")
    if mine:
        why = _csv_unlabeled(mine[0]) if split == "test" else ""
        if why and theirs and not _csv_unlabeled(theirs[0]):
            ds = _load_csv(theirs[0], path.name)
            ds.notes.append(f"{why}, so it cannot score a model; the test split is "
                            f"{theirs[0].name} itself (hold part of it out)")
            return ds, False
        # a real split only when both CSVs are there and both carry labels
        paired = bool(theirs) and not _csv_unlabeled(theirs[0]) and not _csv_unlabeled(mine[0])
        return _load_csv(mine[0], path.name, whole=not paired), False
    try:
        has_subdirs = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
    except OSError as exc:
        raise DataError(f"cannot read the folder {path} ({exc.strerror or _short(exc)}); "
                        f"check its permissions.") from exc
    if theirs and not has_subdirs:
        ds = _load_csv(theirs[0], path.name)
        ds.notes.append(f"{path.name} has no {split} CSV file; the {split} split is "
                        f"{theirs[0].name} itself (hold part of it out)")
        return ds, False
    split_dirs = [d for d in ("train", "test") if (path / d).is_dir()]
    folder = path
    if split_dirs:
        folder = path / split
        if not folder.is_dir():
            raise DataError(f"{path} has {' and '.join(split_dirs)} subfolders but no {split}/; "
                            f"add {folder} or pick split={split_dirs[0]!r}.")
    images, labels, classes, notes = read_image_folder_notes(folder, image_size)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), classes,
                        path.name, notes, whole=not split_dirs), True


def _load_csv(path: Path, name: str, whole: bool = True) -> ArrayDataset:
    images, labels, lines = _read_csv_table(path)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels),
                        _classes_for(labels, None, str(path), _on_line(lines)), name,
                        whole=whole)


def _load_npz(path: Path, split: str) -> ArrayDataset:
    images, labels, names, notes, groups = read_npz(path, split)
    classes = _classes_for(labels, names, str(path))
    keras = names is None and groups is None and not _npz_is_whole(path)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), classes,
                        path.stem, notes, whole=not keras,
                        groups=None if groups is None else torch.from_numpy(groups.astype(np.int64)))


def _npz_is_whole(path: Path) -> bool:
    """Whether an .npz holds one data set (images/labels) rather than Keras' splits."""
    with _npz_members(path) as zf:
        return "images.npy" in zf.namelist()


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _load_file(path: Path, split: str) -> ArrayDataset:
    """A CSV or .npz file; other data files get a sentence saying what to give instead."""
    with _open(path) as fh:
        head = fh.read(4)
    if not head:
        raise DataError(f"{path} is empty; give a CSV or .npz data file, or a folder.")
    suffix = path.suffix.lower()
    if suffix == ".npz" or head in (b"PK\x03\x04", b"PK\x05\x06"):
        return _load_npz(path, split)
    if suffix != ".csv":
        if head[:2] == b"\x1f\x8b" or (len(head) > 2 and head[:2] == b"\0\0"
                                        and head[2] in _IDX_TYPES):
            raise DataError(f"{path} is a single IDX file; give the folder that holds the "
                            f"image and label files of both splits "
                            f"({_IDX.describe('train')}).")
        if head == b"\x93NUM":
            raise DataError(f"{path} is a single .npy array; save the images and the labels "
                            f"together with numpy.savez(path, images=..., labels=...).")
        if head[0] == 0x80:
            raise DataError(f"{path} is a pickle (a CIFAR batch?); give the folder that holds "
                            f"cifar-10-batches-py or cifar-100-python.")
        if suffix in _IMAGE_SUFFIXES:
            raise DataError(f"{path} is a single image; give a folder with one subfolder of "
                            f"images per class.")
    return _load_csv(path, path.stem)


def load_dataset(name_or_path: str | os.PathLike, split: str = "train",
                 root: str | os.PathLike | None = None, download: bool = False,
                 image_size: int | Sequence[int] | None = None) -> ArrayDataset:
    """Load a named dataset or a path as an in-memory uint8 :class:`ArrayDataset`.

    ``split`` is ``"train"`` or ``"test"`` (for a CSV or .npz file or a plain image
    folder the path *is* the split: both give the same data, and ``notes`` say so where
    a folder's own split was missing). ``download=True`` fetches a missing named dataset
    into ``<root or cache_dir()>/<name>``. ``image_size`` (int or (H, W)) resizes every
    image (an image folder straight from its files); without it every source keeps its
    own size, and an image folder whose images differ in size raises a DataError.
    What was changed is said in the dataset's ``notes``.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {_cell(split)}; take a "
                        f"validation set out of 'train' with train_val_split.")
    if image_size is not None:
        _size_hw(image_size)
    key = str(name_or_path).strip().lower()
    key = _ALIASES.get(key, key)
    sized = False
    if key == "digits":
        ds = _load_digits(split)
    elif key in _NAMED:
        ds = _load_named(key, split, root, download)
    else:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            ds, sized = _load_directory(path, split, image_size)
        elif path.is_file():
            ds = _load_file(path, split)
        elif path.exists():
            raise DataError(f"{path} is neither a file nor a folder (a device or a pipe); give "
                            f"the path of a data file or folder.")
        else:
            raise DataError(f"{_cell(str(name_or_path), 80)} is neither a known dataset "
                            f"({', '.join(DATASETS)}) nor an existing file or folder; check "
                            f"the name or the path.")
    if len(ds) == 0:
        raise DataError(f"{name_or_path} ({split}) holds no images; check the files.")
    if image_size is not None and not sized:
        h, w = _size_hw(image_size)
        old = tuple(ds.images.shape[2:])
        if old != (h, w):
            ds = dataclasses.replace(ds, images=resize_images(ds.images, (h, w)),
                                     notes=ds.notes + [f"{ds.name}: resized the images from "
                                                       f"{_hw(old)} to {h}x{w} (image_size)"])
    return ds


__all__ = [
    "ArrayDataset", "CIFAR100_CLASSES", "CIFAR10_CLASSES", "DATASETS", "FASHION_MNIST_CLASSES",
    "LABEL_COLUMN_NAMES", "MNIST_CLASSES", "check_trainable", "load_dataset", "read_cifar_batch",
    "read_cifar_binary", "read_cifar_pickle", "read_csv", "read_idx", "read_idx_pair",
    "read_image_folder", "read_image_folder_notes", "read_npz", "resize_images",
]
