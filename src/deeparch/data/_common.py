"""Helpers every reader in :mod:`deeparch.data` shares.

Messages stay one short line and never echo a file's contents (:func:`_cell` cuts a
value from a file short). A file that is missing or unreadable (or, for :func:`_stat`
and :func:`_read`, not a regular file) raises a DataError that names it; streams are
read in bounded chunks, and an allocation that fails becomes a DataError saying how
much was needed.
"""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import limits

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
