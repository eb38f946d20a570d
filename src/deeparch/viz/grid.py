"""Grids of images as PNG files: a batch at a glance, and an augmentation preview."""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..io import atomic_path

__all__ = ["save_image_grid", "preview", "check_preview", "GRID_MAX_IMAGES", "GRID_MAX_BYTES"]

GRID_MAX_IMAGES = 1024
"""Images in one grid picture: past a thousand cells a grid is no longer read as a picture,
and each cell costs matplotlib about 10 ms (1024 cells: about ten seconds)."""

GRID_MAX_BYTES = 2 ** 30
"""The float32 working copy of the images of one grid (or one preview batch): 1 GiB."""

GRID_MAX_PIXELS = 32_768
"""Width and height of the PNG in pixels (matplotlib's Agg refuses 65,536 and more)."""


def _to_display(images: Any) -> np.ndarray:
    """N x C x H x W (tensor or array) -> N x H x W x {1,3} floats in [0, 1]."""
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[0] == 0:
        raise DataError(f"an image grid needs a non-empty batch N x C x H x W, got shape "
                        f"{tuple(x.shape)}.")
    _check_cells(x.shape[0], x.shape[1:], "an image grid")
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        a = x.float().div(255.0)
    else:
        a = x.float()
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:   # not a 0..1 image: stretch the whole grid together
            a = (a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
    if a.shape[1] not in (1, 3):
        a = a[:, :1]
    return a.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def _check_cells(cells: int, image_shape: Sequence[int], what: str) -> None:
    if cells > GRID_MAX_IMAGES:
        raise DataError(f"{what} of {cells:,} images is more than the limit of "
                        f"{GRID_MAX_IMAGES:,} (GRID_MAX_IMAGES); show fewer.")
    nbytes = cells * math.prod(int(v) for v in image_shape) * 4
    if nbytes > GRID_MAX_BYTES:
        raise DataError(f"{what} of {cells:,} images of {'x'.join(map(str, image_shape))} "
                        f"needs {nbytes / 2 ** 30:,.1f} GiB, more than the limit of "
                        f"{GRID_MAX_BYTES / 2 ** 30:g} GiB (GRID_MAX_BYTES); show fewer or "
                        "smaller images.")


def _whole(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise DataError(f"{name}={v!r} is invalid: it must be a whole number >= {lo}.")
    return int(v)


def check_preview(n: Any, samples: Any, image_shape: Sequence[int] | None = None,
                  seed: Any = 0) -> None:
    """Refuse preview arguments that are not whole numbers >= 1, or that would make a grid of
    more than :data:`GRID_MAX_IMAGES` images (``n * (samples + 1)``), or more than
    :data:`GRID_MAX_BYTES` of ``image_shape`` (C, H, W) images; a DataError says which.
    Cheap: the CLI can call it before loading a data set."""
    n = _whole("preview n", n)
    samples = _whole("preview samples", samples)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
            not 0 <= seed < 2 ** 64:
        raise DataError(f"preview seed={seed!r} is invalid: it must be a whole number from 0 "
                        "to 2**64 - 1.")
    cells = n * (samples + 1)
    if cells > GRID_MAX_IMAGES:
        raise DataError(f"a preview of n={n:,} images with samples={samples:,} copies each "
                        f"makes {cells:,} pictures, more than the limit of {GRID_MAX_IMAGES:,} "
                        "(GRID_MAX_IMAGES); ask for fewer.")
    if image_shape is not None:
        _check_cells(cells, image_shape, "a preview")


def save_image_grid(images: Any, path: str | os.PathLike, nrow: int = 8,
                    titles: Sequence[str | None] | None = None, cell_inches: float = 1.0,
                    dpi: int = 100) -> Path:
    """Save ``images`` (N x C x H x W) as a PNG grid, ``nrow`` images per row.

    uint8 images are shown on 0..255, float images on 0..1 (a float batch outside
    0..1 is stretched to its own min..max, the same for all images). One channel is
    shown in grey, three as RGB, other channel counts by their first channel.
    ``titles`` (one per image, ``None`` for none) are written above the images.
    The file is written atomically.
    """
    from matplotlib.figure import Figure   # Agg through savefig, no pyplot state

    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise DataError(f"nrow={nrow!r} is invalid: it must be a whole number >= 1.")
    for name, v in (("cell_inches", cell_inches), ("dpi", dpi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise DataError(f"{name}={v!r} is invalid: it must be a positive number.")
    arr = _to_display(images)
    n = arr.shape[0]
    if titles is not None and len(titles) != n:
        raise DataError(f"save_image_grid got {n} images but {len(titles)} titles.")
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    h, w = arr.shape[1:3]
    cw = cell_inches
    ch = cell_inches * h / w + (0.25 if titles is not None else 0.0)
    width, height = ncol * cw * dpi, rows * ch * dpi
    if max(width, height) > GRID_MAX_PIXELS:
        raise DataError(f"the grid picture would be {width:,.0f} x {height:,.0f} pixels, more "
                        f"than the limit of {GRID_MAX_PIXELS:,} on a side; use fewer images "
                        "per row, a smaller cell_inches or dpi.")
    fig = Figure(figsize=(ncol * cw, rows * ch), dpi=dpi)
    for i in range(rows * ncol):
        ax = fig.add_subplot(rows, ncol, i + 1)
        ax.set_axis_off()
        if i >= n:
            continue
        img = arr[i]
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        if titles is not None and titles[i]:
            ax.set_title(str(titles[i]), fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99 if titles is None else 0.95,
                        wspace=0.05, hspace=0.3 if titles is not None else 0.05)
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    return target


def preview(augment: Callable[..., torch.Tensor], images: Any, path: str | os.PathLike,
            n: int = 8, samples: int = 7, seed: int = 0) -> Path:
    """Save a PNG with ``n`` original images down the first column and ``samples``
    augmented versions of each beside it (the `deeparch augment --preview` grid).

    ``augment`` is an :class:`~deeparch.data.augment.Augment` (or any callable on a
    batch); it gets its own generator seeded with ``seed``, so the picture is
    reproducible and the module's own random sequence is left untouched.
    """
    check_preview(n, samples, seed=seed)       # before touching the images
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.dim() != 4 or x.shape[0] == 0:
        raise DataError(f"preview needs a non-empty batch N x C x H x W, got shape "
                        f"{tuple(x.shape)}.")
    check_preview(n, samples, tuple(x.shape[1:]), seed)
    n, samples = int(n), int(samples)
    x = x[:n]
    k = x.shape[0]
    batch = x.repeat_interleave(samples, dim=0)          # each original, samples times
    try:
        fn = augment.forward if isinstance(augment, torch.nn.Module) else augment
        takes_generator = "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_generator = False
    if takes_generator:
        aug = augment(batch, generator=torch.Generator().manual_seed(int(seed)))
    else:
        aug = augment(batch)
    aug = aug.reshape(k, samples, *x.shape[1:])
    grid = torch.cat([x.unsqueeze(1), aug.to(x.dtype)], dim=1).reshape(-1, *x.shape[1:])
    titles = (["original"] + [f"aug {j + 1}" for j in range(samples)]) + \
        [None] * ((k - 1) * (samples + 1))
    return save_image_grid(grid, path, nrow=samples + 1, titles=titles)
