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

The readers live in their own modules: :mod:`~deeparch.data.idx`,
:mod:`~deeparch.data.cifar`, :mod:`~deeparch.data.csvfile`,
:mod:`~deeparch.data.npzfile` and :mod:`~deeparch.data.images`, with
:class:`ArrayDataset` in :mod:`~deeparch.data.dataset`. This module finds a source's
files (the layouts of the named datasets, a folder or a file) and re-exports their
public names.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import DataError, DownloadError
from . import download as _download
from ._common import _cell, _open, _short
from .cifar import (
    _cifar_meta_names,
    _text_names,
    read_cifar_batch,
    read_cifar_binary,
    read_cifar_pickle,
)
from .csvfile import LABEL_COLUMN_NAMES, _csv_unlabeled, _read_csv_table, read_csv
from .dataset import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    ArrayDataset,
    _classes_for,
    _hw,
    _size_hw,
    check_trainable,
    resize_images,
)
from .idx import _IDX_TYPES, read_idx, read_idx_pair
from .images import read_image_folder, read_image_folder_notes
from .npzfile import _npz_is_whole, read_npz
from .split import train_val_split

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
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), classes,
                        path.stem, notes, whole=_npz_is_whole(path),
                        groups=None if groups is None else torch.from_numpy(groups.astype(np.int64)))

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
