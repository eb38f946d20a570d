"""IDX files (MNIST, Fashion-MNIST), gzipped or not.

The header's shape is checked against the file before anything is allocated: a
plain file must hold exactly the declared bytes; a gzip file may declare at most
:func:`limits.decompressed_bound` of its size, is decompressed as a stream and is
refused as soon as it holds more than its header declares (a gzip bomb costs a
bounded amount of memory and time, whatever it would expand to).
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import limits
from ._common import _alloc, _open, _read_into, _short, _stat
from .dataset import _integer_labels

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
