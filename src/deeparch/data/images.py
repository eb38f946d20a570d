"""Image folders: ``root/<class>/<image>``, any image PIL reads.

Only headers are read before the output is allocated, then one image at a time; an
image with more than ``limits.MAX_IMAGE_PIXELS`` pixels is refused before it is
decoded (a decompression-bomb guard). Pixels of more than 8 bits are scaled, never
clipped; what was done to the images beyond decoding them is returned as notes.
"""
from __future__ import annotations

import collections
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from . import limits
from ._common import _alloc, _short
from .dataset import _hw, _size_hw

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
