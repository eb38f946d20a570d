"""The bounds every data reader keeps, whatever the file says about itself.

A reader trusts a file's own declarations (an IDX header's shape, a zip member's size,
a pickle's string lengths) only after checking them against these bounds and against
the bytes actually on disk, so that a file of a few MB can never make deeparch allocate
GBs or run for minutes. They are plain module constants: a test (or a user with an
unusual data set) may change them.
"""
from __future__ import annotations

#: Any compressed file (gzip, a deflated zip member) may expand to this many bytes ...
FREE_EXPANSION_BYTES = 64 * 2**20
#: ... and beyond that to at most this many times its compressed size. Image data
#: compresses 2:1 to 10:1 (MNIST 4.7:1); deflate itself cannot exceed about 1032:1.
#: A real file above the bound can still be read after decompressing it by hand
#: (``gunzip``), because an uncompressed file is bounded by its own size.
MAX_EXPANSION_RATIO = 100

#: Pixels one image may have (Pillow's own decompression-bomb warning threshold);
#: above it an image is refused before it is decoded.
MAX_IMAGE_PIXELS = 89_478_485

#: Labels without class names become the classes 0..max only while max < this ...
MAX_CLASSES = 100_000
#: ... and while 0..max is dense: max + 1 <= 2 * (distinct labels) + this slack.
CLASS_SLACK = 16

#: Members an .npz file may list in its zip directory (ours hold two or three).
MAX_NPZ_MEMBERS = 64


def decompressed_bound(compressed_bytes: int) -> int:
    """The most bytes a compressed stream of ``compressed_bytes`` may expand to."""
    return max(FREE_EXPANSION_BYTES, MAX_EXPANSION_RATIO * int(compressed_bytes))


def dense_enough(top: int, distinct: int) -> bool:
    """Whether labels with maximum ``top`` and ``distinct`` values may be classes 0..top."""
    return 0 <= top < MAX_CLASSES and top + 1 <= 2 * distinct + CLASS_SLACK


def human_bytes(n: int) -> str:
    """``n`` bytes as a short figure: 512 bytes, 4.0 KB, 47.0 MB, 1.1 TB."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} bytes"  # pragma: no cover
