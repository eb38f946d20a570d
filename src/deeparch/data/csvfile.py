"""Kaggle-style CSV files: a header row, the label, then C*H*W pixel columns.

784 pixel columns are 1x28x28; square grayscale, or square RGB planes, are inferred. A
label column named ``label`` (``class``, ``target``...) may sit anywhere. The file is
parsed a chunk of :data:`_CSV_CHUNK_BYTES` at a time (numpy's C reader; a careful pass
names the line and column of the first bad cell), straight into uint8, so memory stays
about the output plus one chunk.
"""
from __future__ import annotations

import csv
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import _cell, _open, _short, _stat

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
