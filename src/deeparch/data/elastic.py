"""Local (elastic) warping, as Simard, Steinkraus & Platt (2003) define it for digits.

"Best practices for convolutional neural networks applied to visual document analysis",
ICDAR 2003, section 2: for every image draw a random displacement field, each component
uniform in [-1, 1] at every pixel; convolve it with a Gaussian of standard deviation
``sigma`` (pixels); multiply it by ``alpha`` (pixels); the new image takes at every pixel
the old one at the displaced position (bilinear interpolation). The paper trains MNIST
with ``sigma = 4, alpha = 34``; a small sigma gives an almost random field, a large one
an almost affine (near-constant) one.

Here, batched (this module holds the field arithmetic; :class:`~deeparch.data.augment.Augment`
adds the displacement to its affine sampling grid, so an elastic warp costs no second
resampling):

* the random field is drawn from 16 random bits per value: ``(k + 0.5) / 32768`` for a
  uniform 16-bit ``k`` in ``[-32768, 32767]``, so uniform on 65,536 points of [-1, 1],
  symmetric around 0 (a quarter of the generator calls of ``torch.rand``);
* the Gaussian is truncated at ``TRUNCATE = 4`` sigmas and normalised to sum 1 (scipy's
  ``gaussian_filter`` defaults), and outside the image the field is 0
  (``gaussian_filter(mode='constant')``);
* the separable smoothing is two matrix products with the banded Toeplitz matrices of the
  kernel, ``G_H @ field @ G_W^T``, over the whole batch at once (the field is stored
  (H, N, 2, W), so each pass is ONE GEMM): for small images this is 10x faster than a
  ``conv2d`` with a 33-tap kernel on CPU, and the result is the zero-padded convolution
  exactly (taps beyond the image see zeros, so the band needs no more than the image's
  size, whatever sigma is). The returned fields and displacements are (N, 2, H, W) views
  of that storage;
* :func:`warped_grid` gives ``Augment`` the whole sampling grid from those products (the
  row pass writes into the grid's planes, the column pass adds the affine base), so the
  displacement is never stored on its own.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["TRUNCATE", "MIN_SIZE", "MAX_SIDE", "gaussian_kernel", "smoothing_matrix",
           "check_elastic", "random_field", "elastic_displacement", "warped_grid"]

TRUNCATE = 4.0
"""The Gaussian is cut at this many sigmas (scipy.ndimage.gaussian_filter's default)."""

MIN_SIZE = 2
"""Elastic warping needs images of at least 2 x 2 pixels (a 1-pixel side has nothing to
interpolate between)."""

MAX_SIDE = 4096
"""... and at most 4096 pixels a side: the smoothing matrices are side x side (64 MiB at
4096) and the two products cost ``2 H W (H + W)`` multiply-adds an image."""


def kernel_radius(sigma: float) -> int:
    return int(math.ceil(TRUNCATE * float(sigma)))


def gaussian_kernel(sigma: float) -> Tensor:
    """The normalised 1-D Gaussian, ``2 r + 1`` taps with ``r = ceil(4 sigma)``, float64."""
    r = kernel_radius(sigma)
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (k / float(sigma)) ** 2)
    return g / g.sum()


def smoothing_matrix(n: int, sigma: float, scale: float = 1.0) -> Tensor:
    """(n, n) float64 ``M[i, j] = scale * g[i - j]``: ``M @ v`` is the zero-padded
    convolution of ``v`` (length n) with :func:`gaussian_kernel`."""
    g = gaussian_kernel(sigma) * float(scale)
    r = (g.numel() - 1) // 2
    i = torch.arange(n)
    d = i.view(-1, 1) - i.view(1, -1)
    m = torch.zeros(n, n, dtype=torch.float64)
    inside = d.abs() <= r
    m[inside] = g[d[inside] + r]
    return m


def check_elastic(alpha: float, sigma: float, height: int, width: int) -> None:
    """A :class:`DataError` (one sentence) when ``height x width`` images cannot be warped
    with this field: a side below :data:`MIN_SIZE`, or a sigma whose kernel holds more taps
    than an image holds pixels (its field would be a near-constant shift, and its kernel
    more memory than the batch's images)."""
    if height < MIN_SIZE or width < MIN_SIZE:
        raise DataError(f"elastic warping needs images of at least {MIN_SIZE} x {MIN_SIZE} "
                        f"pixels, got {height} x {width}; leave elastic out for these inputs.")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise DataError(f"elastic warping handles images of at most {MAX_SIDE} pixels a side, "
                        f"got {height} x {width}; resize the images first or leave elastic "
                        "out.")
    taps = 2 * kernel_radius(sigma) + 1
    if taps > height * width:
        most = (height * width - 1) // 2 / TRUNCATE
        raise DataError(f"elastic sigma={sigma:g} is too large for {height} x {width} images: "
                        f"its Gaussian kernel ({taps:,} taps) is larger than an image "
                        f"({height * width:,} pixels) and would only shift the whole image; "
                        f"use a sigma of at most {math.floor(most * 100) / 100:g} (Simard et "
                        "al. used 4 on 28 x 28 digits).")


def random_field(n: int, height: int, width: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """(n, 2, H, W) float32 uniform in [-1, 1] (16 bits a value; ``[:, 0]`` moves rows,
    ``[:, 1]`` columns), from ``generator`` (on its device) or torch's global one. Image
    ``i``'s field uses the generator's words ``i * k .. (i + 1) * k`` only, so on CPU
    ``random_field(a) ++ random_field(b)`` equals ``random_field(a + b)``."""
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    per_image = 2 * height * width
    # whole 64-bit words per image, so drawing n images in chunks gives the same fields
    words = torch.empty((n, (per_image + 3) // 4), dtype=torch.int64, device=device)
    words.random_(-2 ** 63, None, generator=generator)      # full 64 bits: four 16-bit lanes
    lanes = words.view(torch.int16)[:, :per_image].reshape(n, 2, height, width)
    # stored (H, N, 2, W), the layout elastic_displacement smooths without transposes;
    # converted and laid out in one copy, then (k + 0.5) / 32768, exact in float32
    out = torch.empty((height, n, 2, width), dtype=torch.float32, device=device)
    out.permute(1, 2, 0, 3).copy_(lanes)
    return out.add_(0.5).mul_(1.0 / 32768.0).permute(1, 2, 0, 3)


def _matrices(h: int, w: int, sigma: float, device, dtype,
              cache: dict | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(G_H, G_W^T, [G_H | rows | 1])`` from ``cache`` when it has them: the two smoothing
    matrices, and G_H widened by the row index and a column of ones (H x (H + 2)), with
    which one GEMM both smooths along the columns and adds an affine grid's base."""
    key = (h, w, float(sigma), device, dtype)
    mats = cache.get(key) if cache is not None else None
    if mats is None:
        # the column pass left-multiplies by G_H; the row pass right-multiplies by the
        # transpose of G_W (the matrix is symmetric, but say what is meant)
        g = smoothing_matrix(h, sigma)
        wide = torch.cat([g, torch.arange(h, dtype=g.dtype).view(h, 1),
                          torch.ones(h, 1, dtype=g.dtype)], 1)
        mats = (g.to(device, dtype), smoothing_matrix(w, sigma).T.contiguous().to(device, dtype),
                wide.to(device, dtype))
        if cache is not None:
            if len(cache) >= 8:
                cache.clear()
            cache[key] = mats
    return mats


def _layout(field: Tensor) -> tuple[Tensor, torch.dtype]:
    """``field`` (N, 2, H, W) as its contiguous (H, N, 2, W) storage (no copy when it is
    :func:`random_field`'s own), float32 or float64."""
    if field.dim() != 4 or field.shape[1] != 2:
        raise DataError(f"an elastic field has 2 components (rows, columns) per pixel, got "
                        f"a tensor of shape {tuple(field.shape)}.")
    dtype = field.dtype if field.dtype in (torch.float32, torch.float64) else torch.float32
    return field.permute(2, 0, 1, 3).to(dtype).contiguous(), dtype


def elastic_displacement(field: Tensor, alpha: float, sigma: float,
                         cache: dict | None = None) -> Tensor:
    """``alpha * (Gaussian(sigma) * field)``: (N, 2, H, W) displacements in pixels, in
    ``field``'s dtype (float32 or float64) and device. ``cache`` (a dict) keeps the
    smoothing matrices for the next call with the same sizes."""
    n, _, h, w = field.shape
    s, dtype = _layout(field)
    gh, gw, _ = _matrices(h, w, sigma, field.device, dtype, cache)
    # In the layout (H, N, 2, W) both passes are one GEMM each over the whole batch: W is
    # innermost (right-multiply by G_W^T), H outermost (left-multiply by G_H): no batched
    # small products, no transposes. random_field draws in this layout already.
    a = s.view(h * n * 2, w) @ gw                             # along each row (W)
    b = (gh @ a.view(h, n * 2 * w)).mul_(float(alpha))       # along each column (H)
    return b.view(h, n, 2, w).permute(1, 2, 0, 3)


def warped_grid(field: Tensor, alpha: float, sigma: float, row_coef: Tensor,
                rest: Tensor, scale: tuple[float, float] = (1.0, 1.0),
                cache: dict | None = None) -> Tensor:
    """A sampling grid with the elastic displacement of ``field`` (N, 2, H, W) added, stored
    (H, N, 2, W): plane 0 holds the x (column) coordinates, plane 1 the y (row) ones, as
    ``grid_sample`` reads them from the view ``grid.permute(1, 0, 3, 2)``.

    Plane ``k`` at row ``i``, column ``j`` of image ``n`` is
    ``row_coef[n, k] * i + rest[n, k, j] + scale[k] * d[n, 1 - k, i, j]`` with ``d`` what
    :func:`elastic_displacement` returns (``row_coef`` (N, 2) and ``rest`` (N, 2, W) give
    an affine grid's base). Three GEMMs and no other pass over the grid: the row pass of
    the smoothing writes the two components, swapped and scaled, into the grid's planes;
    the column pass is ONE product with ``[G_H | rows | 1]``, whose two extra columns add
    the base from two more rows of its right-hand side (where ``row_coef`` and ``rest``
    are written), so the base is never a pass of its own."""
    n, _, h, w = field.shape
    s, dtype = _layout(field)
    _, gw, wide = _matrices(h, w, sigma, field.device, dtype, cache)
    rhs = torch.empty(h + 2, n, 2, w, device=field.device, dtype=dtype)
    for plane, comp in ((0, 1), (1, 0)):          # x <- column displacement, y <- row
        rhs[:h, :, plane, :].flatten(0, 1).addmm_(s[:, :, comp, :].flatten(0, 1), gw,
                                                  beta=0.0, alpha=float(alpha * scale[plane]))
    rhs[h].copy_(row_coef.to(dtype).view(n, 2, 1).expand(n, 2, w))
    rhs[h + 1].copy_(rest.to(dtype))
    return (wide @ rhs.view(h + 2, n * 2 * w)).view(h, n, 2, w)
