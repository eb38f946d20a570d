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
                   image is grayscale; resized to ``image_size``, default 32x32); with
                   ``train/`` and ``test/`` subfolders the split picks one.
a CSV file         Kaggle layout: a header row, the label, then C*H*W pixel columns
                   (784 -> 1x28x28; square grayscale, or square RGB planes, inferred).
a folder of files  the IDX / CIFAR / CSV files above, recognised by their names.
=================  ====================================================================

A named dataset lives in ``<root>/<name>`` (``root`` defaults to
:func:`~deeparch.data.download.cache_dir`); when ``root`` is given the files may also sit
directly in it. A name always means the named dataset: write ``./mnist`` for a folder
called ``mnist``.

CIFAR pickles are read by a restricted unpickler that builds plain containers and numpy
arrays only; anything else in the file is refused before it can run.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import os
import pickle
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, DownloadError
from . import download as _download
from .split import train_val_split

# --------------------------------------------------------------------------- dataset


@dataclass(repr=False)
class ArrayDataset:
    """Images (uint8, N x C x H x W), labels (int64, N), class names and a name.

    Kept as uint8 on purpose: small in memory; the trainer normalises each batch.
    ``ds[i]`` is ``(image uint8 CxHxW, label int)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "dataset"

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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); check that it exists "
                        f"and is readable.") from exc


def _read_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when the file is gzip (by its magic bytes)."""
    raw = _read(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({exc}); delete it "
                            f"and download it again.") from exc
    if path.suffix == ".gz":
        raise DataError(f"{path} is named .gz but is not gzip-compressed; delete it and "
                        f"download it again, or drop the .gz from its name if it is plain IDX.")
    return raw


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
                        f"{image_size!r}; for example 32 or (28, 28).")
    return size  # type: ignore[return-value]


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
    labels = np.asarray(values)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where} has labels that are not a list of whole numbers "
                        f"({labels.dtype}, shape {labels.shape}); the file is not a valid batch.")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where} has a negative label ({labels.min()}); labels start at 0.")
    return labels.astype(np.int64)


def _classes_for(labels: np.ndarray, names: list[str] | None, where: str) -> list[str]:
    """``names`` after checking every label has one, else "0".."max"."""
    top = int(labels.max()) if len(labels) else -1
    if names is None:
        return [str(i) for i in range(max(top + 1, 1))]
    if top >= len(names):
        raise DataError(f"{where} has the label {top}, but this dataset has only "
                        f"{len(names)} classes (0..{len(names) - 1}); the file belongs to "
                        f"another dataset or is corrupt.")
    return list(names)


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array, checking its header."""
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise DataError(f"{path} is not an IDX file: its magic number is 0x{data[:4].hex()} "
                        f"instead of 0x0000 + a type code + a dimension count; check the file.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header ({len(data)} bytes); "
                        f"download it again.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    count = math.prod(shape)
    expected, present = count * dtype.itemsize, len(data) - header
    if present < expected:
        raise DataError(f"{path} is truncated: its header declares shape {shape} "
                        f"({expected} bytes) but only {present} bytes follow; download it again.")
    if present > expected:
        raise DataError(f"{path} has {present - expected} bytes more than its header declares "
                        f"(shape {shape}); it is corrupt, download it again.")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


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

_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's ndarray _reconstruct


def _safe_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays may be rebuilt")
    return _RECONSTRUCT(np.ndarray, shape, dtype)


def _safe_dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy dtype {dtype} is not plain numbers")
    return np.dtype(spec, align, copy)


def _latin1_encode(text, encoding="latin1"):
    # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin1 text only")
    return text.encode("latin1")


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy number arrays; refuses all else.

    ``find_class`` is the only door through which a pickle reaches code; it opens for
    numpy's array/dtype reconstruction (wrapped to accept plain number arrays only) and
    for latin1 ``_codecs.encode``, and raises for everything else before it can run.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def read_cifar_pickle(path: str | os.PathLike) -> dict[str, object]:
    """Load a CIFAR python pickle safely; keys come back as ``str``."""
    path = Path(path)
    buffer = io.BytesIO(_read(path))
    try:
        obj = _CifarUnpickler(buffer, encoding="latin1").load()
    except _Refused as exc:
        raise DataError(f"{path} was refused: it asks to call {exc.name}, while a CIFAR batch "
                        f"holds only arrays and lists, so nothing in it was run; do not use "
                        f"this file.") from exc
    except Exception as exc:  # any malformed pickle: truncated, corrupt, wrong opcodes
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
                        f"delete it and download it again.") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch: it holds a {type(obj).__name__} instead "
                        f"of a dict with 'data' and labels.")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def read_cifar_batch(path: str | os.PathLike, label_key: str = "labels"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 3 x 32 x 32 uint8) and labels (N int64) from one CIFAR python batch."""
    path = Path(path)
    batch = read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR batch: it has the keys {sorted(batch)} but "
                        f"needs 'data' and {label_key!r}.")
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
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def _cifar_meta_names(path: Path, key: str) -> list[str] | None:
    if not path.is_file():
        return None
    meta = read_cifar_pickle(path)
    names = meta.get(key)
    if not isinstance(names, list):
        raise DataError(f"{path} has no list {key!r} of class names; it is not a CIFAR "
                        f"meta file.")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


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


def _infer_chw(n: int, path: Path) -> tuple[int, int, int]:
    side = math.isqrt(n)
    if n and side * side == n:
        return 1, side, side
    side = math.isqrt(n // 3)
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


def read_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x C x H x W uint8) and labels (N int64) from a Kaggle-style CSV.

    The first row is a header when it is not all numbers. Valid files are parsed by
    numpy's C reader; on any problem a careful pass names the line and column.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} as a text CSV file ({exc}); check the file.") from exc
    if not first:
        raise DataError(f"{path} is empty; a CSV needs a label column and pixel columns.")
    header = None if all(_is_number(c) for c in first) else [c.strip() for c in first]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": handled below
            table = np.loadtxt(path, delimiter=",", dtype=np.int64,
                               skiprows=1 if header else 0, ndmin=2, comments=None,
                               encoding="utf-8-sig")
        if table.shape[1] != len(first) or (table.size and (table[:, 1:].min() < 0 or
                                                            table[:, 1:].max() > 255 or
                                                            table[:, 0].min() < 0)):
            raise ValueError("needs the careful pass")
    except ValueError:
        table = _read_csv_carefully(path, header)
    if len(table) == 0:
        raise DataError(f"{path} has a header but no rows of data.")
    c, h, w = _infer_chw(table.shape[1] - 1, path)
    images = table[:, 1:].astype(np.uint8).reshape(-1, c, h, w)
    return images, table[:, 0].astype(np.int64)


def _read_csv_carefully(path: Path, header: list[str] | None) -> np.ndarray:
    """Parse row by row, raising a DataError that names the first bad line and column."""
    rows: list[list[int]] = []
    lines: list[int] = []
    width = len(header) if header else None
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        if header:
            next(reader)
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            line = reader.line_num
            if width is None:
                width = len(cells)
            if len(cells) != width:
                raise DataError(f"{path} line {line} has {len(cells)} columns instead of "
                                f"{width}; every row must be a label then the same pixels.")
            try:
                rows.append(list(map(int, cells)))
            except ValueError:
                col, cell = next((i, c) for i, c in enumerate(cells, 1) if not _is_int(c))
                name = f" ({header[col - 1]!r})" if header else ""
                raise DataError(f"{path} line {line}, column {col}{name} holds {cell!r}, "
                                f"which is not a whole number; fix or remove that row.") from None
            lines.append(line)
    table = np.array(rows, dtype=np.int64).reshape(len(rows), width or 0)
    bad = np.zeros(table.shape, dtype=bool)
    if table.size:
        bad[:, 0] = table[:, 0] < 0
        bad[:, 1:] = (table[:, 1:] < 0) | (table[:, 1:] > 255)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        what = "a label" if col == 0 else "a pixel"
        raise DataError(f"{path} line {lines[row]}, column {col + 1} holds {table[row, col]}, "
                        f"which is out of range for {what} (labels >= 0, pixels 0..255).")
    return table


def _is_int(cell: str) -> bool:
    try:
        int(cell)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- image folders


def _image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def read_image_folder(root: str | os.PathLike, image_size: int | Sequence[int] = 32
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and class names from ``root/<class>/<image>`` (sorted, recursive).

    Every image is converted to RGB, or to L when all of them are grayscale, and
    resized (bilinear) to ``image_size``; files PIL does not know by extension are
    skipped, a file that PIL cannot decode raises a DataError naming it.
    """
    from PIL import Image

    root = Path(root)
    h, w = _size_hw(image_size)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class subfolders; put the images in one subfolder "
                        f"per class, e.g. {root / 'cat' / '0001.png'}.")
    extensions = _image_extensions()
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        found = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not p.name.startswith(".") and p.suffix.lower() in extensions)
        if not found:
            raise DataError(f"the class folder {folder} holds no images; add some or remove it.")
        files.extend((p, label) for p in found)

    pixels = np.empty((len(files), h, w, 3), dtype=np.uint8)
    gray = True
    for i, (file, _label) in enumerate(files):
        try:
            with Image.open(file) as img:
                img.load()
                gray = gray and img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
                rgb = img.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{file} is not a readable image ({exc}); "
                            f"replace or remove it.") from exc
        if rgb.size != (w, h):
            rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
        pixels[i] = np.asarray(rgb, dtype=np.uint8)
    images = pixels.transpose(0, 3, 1, 2)
    if gray:
        images = images[:, :1]
    labels = np.array([label for _, label in files], dtype=np.int64)
    return np.ascontiguousarray(images), labels, [p.name for p in class_dirs]


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
        images, labels = read_csv(paths[0])
        classes = _classes_for(labels, spec.classes, str(paths[0]))
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


def _load_directory(path: Path, split: str, image_size) -> tuple[ArrayDataset, bool]:
    """A folder of IDX / CIFAR / CSV files, or an image folder; (dataset, was_resized)."""
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
    csvs = sorted(p for p in path.glob(f"*{split}.csv")
                  if p.name == f"{split}.csv" or p.name.endswith(f"_{split}.csv"))
    if len(csvs) == 1:
        return _load_csv(csvs[0], path.name), False
    split_dirs = [d for d in ("train", "test") if (path / d).is_dir()]
    folder = path
    if split_dirs:
        folder = path / split
        if not folder.is_dir():
            raise DataError(f"{path} has {' and '.join(split_dirs)} subfolders but no {split}/; "
                            f"add {folder} or pick split={split_dirs[0]!r}.")
    images, labels, classes = read_image_folder(folder, 32 if image_size is None else image_size)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), classes,
                        path.name), True


def _load_csv(path: Path, name: str) -> ArrayDataset:
    images, labels = read_csv(path)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels),
                        _classes_for(labels, None, str(path)), name)


def load_dataset(name_or_path: str | os.PathLike, split: str = "train",
                 root: str | os.PathLike | None = None, download: bool = False,
                 image_size: int | Sequence[int] | None = None) -> ArrayDataset:
    """Load a named dataset or a path as an in-memory uint8 :class:`ArrayDataset`.

    ``split`` is ``"train"`` or ``"test"`` (for a CSV file or a plain image folder the
    path *is* the split). ``download=True`` fetches a missing named dataset into
    ``<root or cache_dir()>/<name>``. ``image_size`` (int or (H, W)) resizes every
    image; image folders default to 32x32, other sources keep their own size.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}; take a validation "
                        f"set out of 'train' with train_val_split.")
    if image_size is not None:
        _size_hw(image_size)
    key = str(name_or_path).strip().lower()
    key = _ALIASES.get(key, key)
    resized = False
    if key == "digits":
        ds = _load_digits(split)
    elif key in _NAMED:
        ds = _load_named(key, split, root, download)
    else:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            ds, resized = _load_directory(path, split, image_size)
        elif path.is_file():
            ds = _load_csv(path, path.stem)
        else:
            raise DataError(f"{str(name_or_path)!r} is neither a known dataset "
                            f"({', '.join(DATASETS)}) nor an existing file or folder; check "
                            f"the name or the path.")
    if image_size is not None and not resized:
        ds = dataclasses.replace(ds, images=resize_images(ds.images, image_size))
    return ds


__all__ = [
    "ArrayDataset", "CIFAR100_CLASSES", "CIFAR10_CLASSES", "DATASETS", "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES", "load_dataset", "read_cifar_batch", "read_cifar_binary",
    "read_cifar_pickle", "read_csv", "read_idx", "read_idx_pair", "read_image_folder",
    "resize_images",
]
