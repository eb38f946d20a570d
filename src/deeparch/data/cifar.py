"""CIFAR-10 and CIFAR-100 batches: python pickles and the binary version.

CIFAR pickles are read by a restricted unpickler that builds plain containers and numpy
number arrays only; anything else in the file is refused before it can run.

Three layers keep a pickle from costing more than its size or running anything:
1. _scan_pickle walks the opcodes first (no objects built): every counted string must
   fit in the file, memo indices stay below the number of opcodes (CPython's unpickler
   sizes its memo table by the largest index), and opcodes a CIFAR batch never uses
   (persistent ids, extension codes, NEWOBJ, out-of-band buffers) are refused.
2. find_class opens only for numpy's array / dtype / scalar reconstruction and latin1
   _codecs.encode, each replaced by a function of ours that allocates nothing the
   file does not carry: an array is a stub until its __setstate__ brings bytes whose
   length matches the declared shape, and is then a view of those bytes.
3. A budget (2 x the file size + 1 MiB) is spent by every new buffer those functions
   make, so memo references cannot multiply the data.

The binary version is a whole number of records (labels..., 3072 pixels): 3073 bytes for
CIFAR-10, 3074 for CIFAR-100 (coarse, fine, pixels).
"""
from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from . import limits
from ._common import _cell, _read, _short
from .dataset import _integer_labels


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
