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
import zlib
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


# --------------------------------------------------------------------------- npz, Kaggle


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray | None = None,
              classes=None, compressed: bool = False, **extra) -> Path:
    """An .npz with ``images`` (and ``labels``, ``classes``), like ``save_augmented``."""
    arrays = {"images": images, **extra}
    if labels is not None:
        arrays["labels"] = labels
    if classes is not None:
        arrays["classes"] = np.array(classes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_kaggle_digits(folder: Path, n_train: int = 30, n_test: int = 10, seed: int = 0):
    """Kaggle's digit-recognizer folder: ``train.csv`` (label,pixel0..pixel783), an
    unlabeled ``test.csv`` (pixel0..pixel783) and ``sample_submission.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_images(n_train, (1, 28, 28), seed), make_labels(n_train, 10, seed)
    names = [f"pixel{i}" for i in range(784)]
    with open(folder / "train.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["label"] + names)
        for label, row in zip(y, x.reshape(n_train, -1)):
            writer.writerow([int(label)] + row.tolist())
    tx = make_images(n_test, (1, 28, 28), seed + 1)
    with open(folder / "test.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(names)
        for row in tx.reshape(n_test, -1):
            writer.writerow(row.tolist())
    (folder / "sample_submission.csv").write_text(
        "ImageId,Label\n" + "".join(f"{i + 1},0\n" for i in range(n_test)))
    return x, y


# --------------------------------------------------------------------------- hostile files
#
# Bombs are built without ever holding their expanded size: deflate output for a block of
# zeros after a full flush does not depend on what came before, so one compressed MiB of
# zeros (~1 KB) is repeated. A test file of a few MB thus stands for GBs.

_ZERO_BLOCK = 1 << 20


def deflate_zeros(prefix: bytes, zeros: int, wbits: int = -15) -> bytes:
    """A deflate stream (raw: wbits=-15, gzip: 31) of ``prefix`` then ``zeros`` zero
    bytes (a multiple of 1 MiB). The gzip trailer's CRC covers only the first MiB, so a
    reader that decompresses it all ends in a CRC error; a bounded one never gets there."""
    if zeros % _ZERO_BLOCK:
        raise ValueError("zeros must be a multiple of 1 MiB")
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    c.compress(bytes(_ZERO_BLOCK))
    c.flush(zlib.Z_FULL_FLUSH)                          # the stream settles after one block
    block = c.compress(bytes(_ZERO_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
    body = block * (zeros // _ZERO_BLOCK)
    return head + body + c.flush(zlib.Z_FINISH)


def zlib_zeros(n: int) -> bytes:
    """A valid zlib stream of ``n`` zero bytes, built in memory proportional to n / 1000."""
    full, rest = divmod(n, _ZERO_BLOCK)
    body = deflate_zeros(b"", full * _ZERO_BLOCK)[:-2] if full else b""  # drop the final block
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH)
    adler = ((n % 65521) << 16) | 1                    # adler32 of n zero bytes
    return b"\x78\xda" + body + tail + struct.pack(">I", adler)


def png_bytes(pixels: np.ndarray, width: int | None = None, height: int | None = None,
              idat: bytes | None = None) -> bytes:
    """A PNG of ``pixels`` (H x W gray or H x W x 3 RGB, uint8 or uint16 = 16-bit).

    ``width``/``height`` override the IHDR (a lying header), ``idat`` the compressed data.
    """
    pixels = np.asarray(pixels)
    h, w = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else {3: 2, 4: 6}[pixels.shape[2]]
    depth = 16 if pixels.dtype == np.uint16 else 8
    if idat is None:
        rows = pixels.astype(">u2" if depth == 16 else "u1").reshape(h, -1).view(np.uint8)
        raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)
        idat = zlib.compress(raw.tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width or w, height or h, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zip_bytes(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive from (name, stored data, method, crc32, declared file_size) members,
    written by hand so that a test can make the directory lie."""
    out, directory = b"", b""
    for name, data, method, crc, file_size in members:
        name_b = name.encode()
        local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc,
                            len(data), file_size, len(name_b), 0)
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0,
                                 0, crc, len(data), file_size, len(name_b), 0, 0, 0, 0, 0,
                                 len(out)) + name_b
        out += local + name_b + data
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(directory), len(out), 0)
    return out + directory + end


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """The .npy header (format 1.0) declaring ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def pickle_ops(*parts: bytes) -> bytes:
    """A protocol-2 pickle assembled from raw opcode bytes (for hostile pickles)."""
    return b"\x80\x02" + b"".join(parts) + b"."


def pickle_reconstruct(shape: tuple[int, ...], dtype: bytes = b"b", state: bytes = b"") -> bytes:
    """``numpy.core.multiarray._reconstruct(numpy.ndarray, shape, dtype)`` then BUILD with
    the raw ``state`` opcodes (none: no BUILD), as a dict {'data': array, 'labels': []}."""
    shape_ops = b"(" + b"".join(b"J" + struct.pack("<i", d) if d < 2**31 else
                                b"\x8a\x08" + struct.pack("<q", d) for d in shape) + b"t"
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + shape_ops +
             b"U" + bytes([len(dtype)]) + dtype + b"\x87R" + state)
    return pickle_ops(b"}(U\x04data", array, b"U\x06labels]u")
