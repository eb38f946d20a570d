"""Write small files in the real dataset formats, for round-trip tests.

Each writer returns what it wrote (uint8 images N x C x H x W and int64 labels), so a
test can compare the loaded dataset pixel for pixel. Nothing here downloads anything.
"""
from __future__ import annotations

import csv
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
                  np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def make_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Random uint8 images N x C x H x W."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def make_labels(n: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """Labels with every class present (cycled, then shuffled)."""
    labels = np.arange(n, dtype=np.int64) % num_classes
    np.random.default_rng(seed + 1).shuffle(labels)
    return labels


# --------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: 0x0000, type code, ndim, big-endian dims, data."""
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = IDX_TYPE_CODES[np.dtype(dtype)]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX; gzipped when ``path`` ends in ``.gz``."""
    data = idx_bytes(array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


MNIST_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 12, gz: bool = True,
                size: int = 28, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four MNIST IDX files (standard names) in ``folder``; returns split -> (x, y)."""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = make_images(n, (1, size, size), seed + (split == "test"))
        labels = make_labels(n, 10, seed + (split == "test"))
        suffix = ".gz" if gz else ""
        write_idx(Path(folder) / (MNIST_NAMES[split][0] + suffix), images[:, 0])
        write_idx(Path(folder) / (MNIST_NAMES[split][1] + suffix), labels.astype(np.uint8))
        out[split] = (images, labels)
    return out


# --------------------------------------------------------------------------- CSV


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray, header: bool = True) -> Path:
    """Kaggle layout: ``label,pixel1,...,pixelK`` then one row per image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(["label"] + [f"pixel{i + 1}" for i in range(flat.shape[1])])
        for label, row in zip(labels, flat):
            writer.writerow([int(label)] + row.tolist())
    return path


# --------------------------------------------------------------------------- CIFAR python


class _Py2Pickler(pickle._Pickler):  # the pure-python pickler lets us change one opcode
    """Protocol 2 with bytes written as Python 2 ``str`` (BINSTRING), like the real files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    """Pickle ``obj`` the way Python 2 + numpy 1.x wrote the CIFAR batches."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    # numpy 2 names its module numpy._core; the real files say numpy.core.
    return data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_pickle(obj, style: str = "py2") -> bytes:
    """``py2`` (like the real files), ``py3-2`` (Python 3, protocol 2) or ``py3`` (protocol 4)."""
    if style == "py2":
        return py2_pickle(obj)
    return pickle.dumps(obj, protocol=2 if style == "py3-2" else 4)


def _batch(images: np.ndarray, labels: np.ndarray, label_key: str, style: str, extra=None):
    as_key = (lambda k: k.encode()) if style == "py2" else (lambda k: k)
    batch = {as_key("batch_label"): as_key("testing batch"),
             as_key("data"): images.reshape(len(images), 3072),
             as_key(label_key): [int(v) for v in labels],
             as_key("filenames"): [as_key(f"img_{i}.png") for i in range(len(images))]}
    batch.update({as_key(k): v for k, v in (extra or {}).items()})
    return batch


def write_cifar10_python(folder: Path, per_batch: int = 8, n_test: int = 10, style: str = "py2",
                         meta: bool = True, seed: int = 0):
    """``folder/cifar-10-batches-py/`` with data_batch_1..5, test_batch, batches.meta."""
    out_dir = Path(folder) / "cifar-10-batches-py"
    out_dir.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = make_images(per_batch, (3, 32, 32), seed + i)
        y = make_labels(per_batch, 10, seed + i)
        batch = _batch(x, y, "labels", style)
        (out_dir / f"data_batch_{i}").write_bytes(cifar_pickle(batch, style))
        train_x.append(x)
        train_y.append(y)
    tx, ty = make_images(n_test, (3, 32, 32), seed + 9), make_labels(n_test, 10, seed + 9)
    (out_dir / "test_batch").write_bytes(cifar_pickle(_batch(tx, ty, "labels", style), style))
    if meta:
        names = [f"class{i}" for i in range(10)]
        as_key = (lambda k: k.encode()) if style == "py2" else (lambda k: k)
        content = {as_key("label_names"): [as_key(n) for n in names],
                   as_key("num_cases_per_batch"): per_batch, as_key("num_vis"): 3072}
        (out_dir / "batches.meta").write_bytes(cifar_pickle(content, style))
    return {"train": (np.concatenate(train_x), np.concatenate(train_y)), "test": (tx, ty)}


def write_cifar100_python(folder: Path, n_train: int = 30, n_test: int = 10, style: str = "py2",
                          seed: int = 0):
    """``folder/cifar-100-python/`` with train, test (fine + coarse labels) and meta."""
    out_dir = Path(folder) / "cifar-100-python"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = make_images(n, (3, 32, 32), seed + (split == "test"))
        fine = make_labels(n, 100, seed + (split == "test"))
        coarse = {"coarse_labels": [int(v) // 5 for v in fine]}
        batch = _batch(x, fine, "fine_labels", style, coarse)
        (out_dir / split).write_bytes(cifar_pickle(batch, style))
        out[split] = (x, fine)
    as_key = (lambda k: k.encode()) if style == "py2" else (lambda k: k)
    meta = {as_key("fine_label_names"): [as_key(f"fine{i}") for i in range(100)],
            as_key("coarse_label_names"): [as_key(f"coarse{i}") for i in range(20)]}
    (out_dir / "meta").write_bytes(cifar_pickle(meta, style))
    return out


# --------------------------------------------------------------------------- CIFAR binary


def cifar_records(images: np.ndarray, *label_columns: np.ndarray) -> bytes:
    """Records of (label bytes..., 3072 pixel bytes), as in the .bin files."""
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, images.reshape(len(images), 3072)], axis=1).tobytes()


def write_cifar10_binary(folder: Path, per_batch: int = 6, n_test: int = 8, seed: int = 0):
    """``folder/cifar-10-batches-bin/`` with data_batch_1..5.bin, test_batch.bin, meta txt."""
    out_dir = Path(folder) / "cifar-10-batches-bin"
    out_dir.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = make_images(per_batch, (3, 32, 32), seed + i), make_labels(per_batch, 10, seed + i)
        (out_dir / f"data_batch_{i}.bin").write_bytes(cifar_records(x, y))
        xs.append(x)
        ys.append(y)
    tx, ty = make_images(n_test, (3, 32, 32), seed + 9), make_labels(n_test, 10, seed + 9)
    (out_dir / "test_batch.bin").write_bytes(cifar_records(tx, ty))
    (out_dir / "batches.meta.txt").write_text("\n".join(f"bin{i}" for i in range(10)) + "\n\n")
    return {"train": (np.concatenate(xs), np.concatenate(ys)), "test": (tx, ty)}


def write_cifar100_binary(folder: Path, n_train: int = 20, n_test: int = 8, seed: int = 0):
    """``folder/cifar-100-binary/`` with train.bin, test.bin (coarse, fine) and names."""
    out_dir = Path(folder) / "cifar-100-binary"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = make_images(n, (3, 32, 32), seed + (split == "test"))
        fine = make_labels(n, 100, seed + (split == "test"))
        (out_dir / f"{split}.bin").write_bytes(cifar_records(x, fine // 5, fine))
        out[split] = (x, fine)
    (out_dir / "fine_label_names.txt").write_text("\n".join(f"f{i}" for i in range(100)) + "\n")
    (out_dir / "coarse_label_names.txt").write_text("\n".join(f"c{i}" for i in range(20)) + "\n")
    return out


# --------------------------------------------------------------------------- image folders


def write_image_folder(root: Path, classes=("cat", "dog", "frog"), per_class: int = 4,
                       size: tuple[int, int] = (12, 10), mode: str = "RGB", fmt: str = "png",
                       seed: int = 0):
    """``root/<class>/<i>.<fmt>``; returns (images N x C x H x W, labels) in load order.

    ``size`` is (height, width). PNG is lossless, so a round trip is exact; JPEG is not.
    """
    from PIL import Image

    channels = 1 if mode == "L" else 3
    images, labels = [], []
    for label, name in enumerate(sorted(classes)):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        pixels = make_images(per_class, (channels, *size), seed + label)
        for i, img in enumerate(pixels):
            array = img[0] if channels == 1 else img.transpose(1, 2, 0)
            Image.fromarray(array, mode=mode).save(folder / f"{i:03d}.{fmt}")
            images.append(img)
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- archives


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    """A gzipped tar archive holding ``members`` (name -> content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def folder_tar_gz(folder: Path, arcname: str) -> bytes:
    """A gzipped tar archive of ``folder`` stored under ``arcname``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buffer.getvalue()
