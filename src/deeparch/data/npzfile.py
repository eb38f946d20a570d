"""``.npz`` files: ``images`` / ``labels`` (``deeparch augment --save``) or Keras' splits.

Read with no pickles, every member's declared sizes checked against the file before
anything is allocated: the zip directory may list at most ``limits.MAX_NPZ_MEMBERS``
members, and a compressed member may declare at most :func:`limits.decompressed_bound`
of its compressed size.
"""
from __future__ import annotations

import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import limits
from ._common import _alloc, _cell, _open, _read_into, _short, _stat
from .dataset import _integer_labels


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


def _npz_is_whole(path: Path) -> bool:
    """Whether an .npz holds one data set (images/labels) rather than Keras' splits."""
    with _npz_members(path) as zf:
        return "images.npy" in zf.namelist()
