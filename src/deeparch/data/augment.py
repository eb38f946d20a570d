"""Batched online data augmentation on tensors, with Keras ImageDataGenerator meaning.

The slides train their FashionMNIST CNN with::

    ImageDataGenerator(rotation_range=8, width_shift_range=0.08, shear_range=0.3,
                       height_shift_range=0.08, zoom_range=0.08)

:class:`Augment` takes the same options with the same meaning and units, but draws
the random parameters for a whole batch at once and applies them with tensor
kernels on the batch's own device (no Python loop over images):

* every geometric option (rotation, shifts, shear, zoom, flips, random crop) is
  composed into ONE affine matrix per image, and the batch is resampled with ONE
  ``F.grid_sample`` call (skipped when no geometric option is on; flips alone are a
  ``torch.flip``). The sampling grid is what ``F.affine_grid`` would give, built by
  broadcasting instead, which is several times faster on CPU for small images;
* local (elastic) warping (Simard et al. 2003, :mod:`deeparch.data.elastic`): a smoothed
  random displacement field per image, added to the same sampling grid, so it costs no
  second resampling: ``out(o) = x(M o + alpha * (G_sigma * u)(o))``;
* colour options (Keras channel shift, a per-channel colour shift, AlexNet's PCA
  lighting) are broadcast additions; cutout is one boolean mask.

Both strategies of the slides are here: *online* augmentation (call the module on every
batch; each call draws new transforms) and *pre-augmentation* (:func:`pre_augment`
expands a data set ``times`` times once, in memory, and :func:`save_augmented`
writes it to disk).

Conventions (kept from Keras, ``keras.preprocessing.image.apply_affine_transform``):

* coordinates are (row, col) pixel indices; the matrix maps an *output* pixel to the
  *input* position it samples (like ``scipy.ndimage.affine_transform``), composed as
  ``rotation @ shift @ shear @ zoom`` about the image centre;
* ``height_shift_range`` moves rows, ``width_shift_range`` moves columns; a value < 1
  is a fraction of the height/width, a float >= 1 is pixels, an int is whole pixels
  drawn from the open interval ``(-r, r)``;
* ``shear_range`` is a shear angle in degrees (Keras >= 2.2; older Keras used radians);
* ``zoom_range=z`` draws the row and column zoom independently in ``[1-z, 1+z]``;
  a zoom factor > 1 samples a larger area, so the content looks smaller (zoom out);
* flips are applied after the affine transform, each with probability 1/2;
* ``fill_mode`` 'constant' (with ``cval``), 'nearest', 'reflect' (abcddcba|abcd|dcba),
  'wrap' (abcd|abcd|abcd).

Deliberate differences from Keras: the centre of rotation is the true image centre
``((H-1)/2, (W-1)/2)`` (Keras uses ``H/2 + 0.5``, one pixel off, so a Keras rotation
also shifts the image by about a pixel), and 'constant' also blends the one-pixel
ring just outside the image with ``cval`` (scipy's 'grid-constant'; Keras hands scipy
'constant', which cuts it off sharply). Randomness comes from ``torch``, so the draws
are not Keras' draws; their distributions are.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError
from ..io import atomic_path
from . import elastic as _elastic

__all__ = [
    "Augment",
    "AugmentParams",
    "FILL_MODES",
    "INTERPOLATIONS",
    "PRESETS",
    "IMAGENET_PCA_EIGVALS",
    "IMAGENET_PCA_EIGVECS",
    "affine_matrices",
    "augment_from_spec",
    "pre_augment",
    "save_augmented",
    "load_augmented",
    "PRE_AUGMENT_MAX_BYTES",
    "check_pre_augment",
    "ELASTIC_SIMARD",
]

# -- bounds -------------------------------------------------------------------------------
PRE_AUGMENT_MAX_BYTES = 8 * 2 ** 30
"""The largest data set :func:`pre_augment` makes: 8 GiB (a third of this 24 GiB machine;
80 copies of CIFAR-10's 50,000 uint8 images), checked from the sizes before anything is
allocated. The result is written in place into one tensor, so this is also its peak memory."""

MAX_PIXELS = 65_536
"""Shifts in pixels, crop padding and cutout sides: no image is larger than 65536 pixels."""

MAX_CUTOUT_COUNT = 100
"""Cutout squares per image (DeVries & Taylor use one)."""

MAX_ZOOM = 100.0
"""The largest zoom factor of a (lo, hi) zoom range: 100x zoom out leaves a dot."""

MAX_PCA_SIGMA = 10.0
"""The largest PCA-lighting sigma (100x AlexNet's 0.1)."""

MAX_INTENSITY = 1e6
"""The largest channel shift and |cval|, in the tensor's own scale (255 for uint8)."""

ELASTIC_SIMARD = (34.0, 4.0)
"""Simard et al.'s (alpha, sigma) for 28 x 28 MNIST digits: bare ``elastic`` in a spec."""

FILL_MODES = ("constant", "nearest", "reflect", "wrap")
INTERPOLATIONS = ("bilinear", "nearest")
# grid_sample padding modes that implement the Keras fill modes directly ('wrap' is
# done by wrapping the sampling grid, 'constant' by sampling (x - cval) with zeros).
_PADDING = {"constant": "zeros", "nearest": "border", "reflect": "reflection", "wrap": "border"}

# AlexNet-style PCA lighting for ImageNet RGB on a 0..1 scale (the values used by
# fb.resnet.torch and many later reimplementations). Columns are eigenvectors.
IMAGENET_PCA_EIGVALS = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVECS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


# --------------------------------------------------------------------------- params

@dataclass
class AugmentParams:
    """The random draws for one batch (``None`` where an option is off).

    Angles are in degrees, shifts in pixels, all in Keras' (row, col) convention.
    Build one with :meth:`Augment.sample`, change fields if you want an exact
    transform, and apply it with :meth:`Augment.apply`.
    """

    theta: Tensor | None = None          # (N,) rotation, degrees
    tx: Tensor | None = None             # (N,) row shift, pixels (height_shift_range)
    ty: Tensor | None = None             # (N,) column shift, pixels (width_shift_range)
    shear: Tensor | None = None          # (N,) shear angle, degrees
    zx: Tensor | None = None             # (N,) row zoom factor
    zy: Tensor | None = None             # (N,) column zoom factor
    hflip: Tensor | None = None          # (N,) bool
    vflip: Tensor | None = None          # (N,) bool
    crop: Tensor | None = None           # (N, 2) int64 (row, col) offset in [-p, p]
    channel_shift: Tensor | None = None  # (N, 1) or (N, C), in the tensor's scale
    pca_alpha: Tensor | None = None      # (N, K) AlexNet's alpha ~ N(0, sigma)
    cutout: Tensor | None = None         # (N, K, 2) int64 (row, col) centres
    elastic: Tensor | None = None        # (N, 2, H, W) float raw field, uniform in [-1, 1]

    def __len__(self) -> int:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                return int(v.shape[0])
        return 0

    def __getitem__(self, index: Any) -> "AugmentParams":
        """The parameters of a subset of the images (a slice or an index tensor)."""
        return AugmentParams(**{f.name: (None if getattr(self, f.name) is None
                                         else getattr(self, f.name)[index])
                                for f in fields(self)})


def _affine_2x3(params: AugmentParams, height: int, width: int,
                n: int | None = None) -> Tensor | None:
    """Closed form of :func:`affine_matrices` as (N, 2, 3) float64, on the CPU.

    Elementwise on (N,) vectors, in NumPy: a few microseconds per op instead of a
    chain of batched 3x3 torch products (which cost more than the resampling itself
    for a batch of 28x28 images).
    """
    keras = (params.theta, params.tx, params.ty, params.shear, params.zx, params.zy)
    if all(v is None for v in keras + (params.hflip, params.vflip, params.crop)):
        return None
    if n is None:
        n = len(params)

    def vec(v: Tensor | None, default: float) -> np.ndarray | float:
        if v is None:
            return default
        return v.detach().to("cpu", torch.float64).numpy().reshape(n)

    # Keras: rotation @ shift @ shear @ zoom, about the centre
    t = np.deg2rad(vec(params.theta, 0.0))
    c, s = np.cos(t), np.sin(t)
    a = np.deg2rad(vec(params.shear, 0.0))
    ssh, csh = np.sin(a), np.cos(a)
    zx, zy = vec(params.zx, 1.0), vec(params.zy, 1.0)
    tx, ty = vec(params.tx, 0.0), vec(params.ty, 0.0)
    l00, l10 = c * zx, s * zx
    l01 = (-c * ssh - s * csh) * zy
    l11 = (-s * ssh + c * csh) * zy
    cr, cc = (height - 1) / 2.0, (width - 1) / 2.0
    t0 = c * tx - s * ty + cr - (l00 * cr + l01 * cc)
    t1 = s * tx + c * ty + cc - (l10 * cr + l11 * cc)
    # then, on the output: vflip @ hflip @ crop, i.e. o -> (sv (r + dr) + ov, sh (c + dc) + oh)
    sv = sh = 1.0
    ov = oh = 0.0
    if params.vflip is not None:
        f = params.vflip.detach().cpu().numpy().reshape(n)
        sv, ov = np.where(f, -1.0, 1.0), np.where(f, height - 1.0, 0.0)
    if params.hflip is not None:
        f = params.hflip.detach().cpu().numpy().reshape(n)
        sh, oh = np.where(f, -1.0, 1.0), np.where(f, width - 1.0, 0.0)
    crop = (0.0, 0.0) if params.crop is None else \
        params.crop.detach().to("cpu", torch.float64).numpy().reshape(n, 2).T
    dr = sv * crop[0] + ov
    dc = sh * crop[1] + oh
    out = np.empty((n, 2, 3), dtype=np.float64)
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = l00 * sv, l01 * sh, l00 * dr + l01 * dc + t0
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = l10 * sv, l11 * sh, l10 * dr + l11 * dc + t1
    return torch.from_numpy(out)


def affine_matrices(params: AugmentParams, height: int, width: int,
                    n: int | None = None) -> Tensor | None:
    """The (N, 3, 3) float64 matrices mapping output (row, col, 1) to input (row, col).

    Same convention as ``scipy.ndimage.affine_transform(x, m[:2, :2], m[:2, 2])``:
    the output pixel ``o`` takes the input value at ``m @ o``, and the same
    composition as Keras: ``centre @ rotation @ shift @ shear @ zoom @ centre^-1``,
    then (on the output) vertical flip, horizontal flip and crop offset. Returns
    ``None`` when ``params`` holds no geometric transform.
    """
    m = _affine_2x3(params, height, width, n)
    if m is None:
        return None
    last = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(m.shape[0], 1, 3)
    return torch.cat([m, last], dim=1)


# --------------------------------------------------------------------------- options

def _bad(name: str, allowed: str, value: Any) -> DataError:
    return DataError(f"augmentation option {name}={_short(repr(value))} is invalid: it must be "
                     f"{allowed}.")


def _number(name: str, value: Any, allowed: str, *, lo: float = 0.0,
            lo_open: bool = False, hi: float = math.inf, hi_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _bad(name, allowed, value)
    try:
        v = float(value)
    except OverflowError:       # an int with hundreds of digits
        raise _bad(name, allowed, value) from None
    if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
        raise _bad(name, allowed, value)
    return v


def _shift(name: str, value: Any) -> tuple[float, bool]:
    """Keras shift range -> (range, integer pixels?)."""
    allowed = (f"a number >= 0 (a fraction of the size if < 1, pixels up to {MAX_PIXELS:,} "
               "if >= 1)")
    v = _number(name, value, allowed, hi=MAX_PIXELS, hi_open=False)
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    return v, is_int


def _whole(name: str, value: Any, lo: int, hi: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise _bad(name, f"a whole number{unit} from {lo} to {hi:,}", value)
    return int(value)


def _seed(name: str, seed: Any) -> int:
    """A seed for ``torch.Generator.manual_seed``: a whole number in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
            not 0 <= int(seed) < 2 ** 64:
        raise _bad(name, "a whole number from 0 to 2**64 - 1", seed)
    return int(seed)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _bad(name, "True or False", value)
    return bool(value)


class Augment(nn.Module):
    """Random augmentation of a batch ``N x C x H x W`` (uint8 or float), any device.

    Options (all off by default, so ``Augment()`` is the identity):

    rotation_range
        degrees; each image is rotated by a uniform angle in ``[-r, r]``.
    width_shift_range, height_shift_range
        fraction of the width/height if < 1, pixels if a float >= 1 (uniform in
        ``[-r, r]``), whole pixels in ``(-r, r)`` if an int, as in Keras.
    shear_range
        degrees; shear angle uniform in ``[-r, r]``, counter-clockwise.
    zoom_range
        ``z`` -> row and column zoom drawn independently in ``[1-z, 1+z]``; or a pair
        ``(lo, hi)``. Factors > 1 zoom out (Keras' meaning).
    horizontal_flip, vertical_flip
        flip half of the images left-right / upside-down.
    fill_mode, cval
        how points outside the input are filled: 'constant' (value ``cval``, in the
        tensor's own scale: 0..255 for uint8), 'nearest' (Keras' default), 'reflect',
        'wrap'.
    interpolation
        'bilinear' (Keras' ``interpolation_order=1``) or 'nearest'.
    random_crop
        padding ``p`` in pixels: pad by ``p`` on every side and crop back to
        ``H x W`` at a random place, i.e. a random whole-pixel shift in ``[-p, p]``.
        The padding is filled by ``fill_mode``; for the CIFAR recipe (zero padding)
        use ``fill_mode='constant'``.
    channel_shift_range
        Keras' channel shift: one intensity uniform in ``[-r, r]`` added to every
        channel of an image, then clipped to that image's own min/max. Units are the
        tensor's own scale (0..255 for uint8, 0..1 for images in 0..1).
    channel_shift_per_channel
        draw one intensity per channel instead (the "colour shifting" of the course:
        add a small random amount to each of R, G and B).
    pca_color
        AlexNet's PCA lighting, ``sigma`` of ``alpha ~ N(0, sigma)`` (``True`` means
        AlexNet's 0.1): each image gets ``sum_i p_i * alpha_i * lambda_i`` added to
        every pixel, where ``p_i, lambda_i`` are eigenvectors/eigenvalues of the RGB
        covariance of the training set, computed by :meth:`fit` (or given as
        ``pca_eigen=(eigvals, eigvecs)``, e.g. ``IMAGENET_PCA_EIGVALS/VECS``).
        Eigenvalues are on the 0..1 scale (uint8 data is divided by 255 for them),
        so float images should be in 0..1 for the shift to mean what AlexNet meant.
    cutout, cutout_count
        side in pixels of ``cutout_count`` squares set to 0 per image, centred
        anywhere in the image and clipped at its border (DeVries & Taylor, 2017).
    elastic
        local (elastic) warping, Simard et al. 2003: ``(alpha, sigma)`` in pixels, or just
        alpha (sigma 4). Each image gets a random field uniform in [-1, 1] per pixel and
        component, smoothed by a Gaussian of standard deviation sigma, times alpha, as its
        displacement: the output pixel ``o`` samples the input at ``M o + d(o)`` (``M`` the
        affine matrix of the options above), in the same single resampling and with the
        same fill mode. Simard et al. used ``(34, 4)`` on 28 x 28 digits; alpha 0 is off.
        See :mod:`deeparch.data.elastic`.
    seed
        seeds this module's own ``torch.Generator``; the same seed gives a bit-identical
        sequence of batches on CPU. ``None`` uses torch's global generator
        (``torch.manual_seed``). A ``generator=`` given to :meth:`forward` wins.

    Order of operations: geometry (one resampling), channel/colour shift, PCA lighting,
    cutout. uint8 input is converted to float once and rounded back once.
    """

    def __init__(self, *, rotation_range: float = 0.0, width_shift_range: float = 0.0,
                 height_shift_range: float = 0.0, shear_range: float = 0.0,
                 zoom_range: float | Sequence[float] = 0.0, horizontal_flip: bool = False,
                 vertical_flip: bool = False, fill_mode: str = "nearest", cval: float = 0.0,
                 interpolation: str = "bilinear", random_crop: int = 0,
                 channel_shift_range: float = 0.0, channel_shift_per_channel: bool = False,
                 pca_color: float | bool = 0.0,
                 pca_eigen: tuple[Any, Any] | None = None,
                 cutout: int = 0, cutout_count: int = 1,
                 elastic: float | Sequence[float] = 0.0, seed: int | None = None):
        super().__init__()
        self.rotation_range = _number("rotation_range", rotation_range,
                                      "a number of degrees >= 0", hi=360.0, hi_open=False)
        self.width_shift_range, self._wshift_int = _shift("width_shift_range", width_shift_range)
        self.height_shift_range, self._hshift_int = _shift("height_shift_range",
                                                           height_shift_range)
        self.shear_range = _number("shear_range", shear_range,
                                   "an angle in degrees in [0, 90)", hi=90.0)
        self.zoom_range = self._zoom(zoom_range)
        self.horizontal_flip = _flag("horizontal_flip", horizontal_flip)
        self.vertical_flip = _flag("vertical_flip", vertical_flip)
        if fill_mode not in FILL_MODES:
            raise _bad("fill_mode", "one of " + ", ".join(map(repr, FILL_MODES)), fill_mode)
        self.fill_mode = fill_mode
        self.cval = _number("cval", cval, f"a number from -{MAX_INTENSITY:g} to {MAX_INTENSITY:g}",
                            lo=-MAX_INTENSITY, hi=MAX_INTENSITY, hi_open=False)
        if interpolation not in INTERPOLATIONS:
            raise _bad("interpolation", "one of " + ", ".join(map(repr, INTERPOLATIONS)),
                       interpolation)
        self.interpolation = interpolation
        self.random_crop = _whole("random_crop", random_crop, 0, MAX_PIXELS, " of pixels")
        self.channel_shift_range = _number(
            "channel_shift_range", channel_shift_range,
            f"a number from 0 to {MAX_INTENSITY:g} (in the tensor's own scale)",
            hi=MAX_INTENSITY, hi_open=False)
        self.channel_shift_per_channel = _flag("channel_shift_per_channel",
                                               channel_shift_per_channel)
        if pca_color is True:
            pca_color = 0.1
        elif pca_color is False:
            pca_color = 0.0
        self.pca_color = _number("pca_color", pca_color,
                                 f"a standard deviation from 0 to {MAX_PCA_SIGMA:g} (AlexNet "
                                 "used 0.1)", hi=MAX_PCA_SIGMA, hi_open=False)
        self.cutout = _whole("cutout", cutout, 0, MAX_PIXELS, " of pixels")
        self.cutout_count = _whole("cutout_count", cutout_count, 1, MAX_CUTOUT_COUNT)
        self.elastic = self._elastic(elastic)
        self._elastic_cache: dict = {}
        self.register_buffer("pca_eigvals", None)
        self.register_buffer("pca_eigvecs", None)
        if pca_eigen is not None:
            self.set_pca(*pca_eigen)
        self.seed = seed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.manual_seed(seed)

    # ----------------------------------------------------------------- set-up
    @staticmethod
    def _zoom(zoom_range: Any) -> tuple[float, float]:
        allowed = ("a number z in [0, 1) meaning [1-z, 1+z], or a pair (lo, hi) with "
                   f"0 < lo <= hi <= {MAX_ZOOM:g}")
        if isinstance(zoom_range, (list, tuple)):
            if len(zoom_range) != 2:
                raise _bad("zoom_range", allowed, zoom_range)
            lo = _number("zoom_range", zoom_range[0], allowed, lo_open=True, hi=MAX_ZOOM,
                         hi_open=False)
            hi = _number("zoom_range", zoom_range[1], allowed, lo_open=True, hi=MAX_ZOOM,
                         hi_open=False)
            if lo > hi:
                raise _bad("zoom_range", allowed, zoom_range)
            return lo, hi
        z = _number("zoom_range", zoom_range, allowed, hi=1.0)
        return 1.0 - z, 1.0 + z

    @staticmethod
    def _elastic(value: Any) -> tuple[float, float]:
        allowed = (f"alpha or a pair (alpha, sigma): alpha in pixels from 0 to {MAX_PIXELS:,}, "
                   f"sigma in pixels > 0 and at most {MAX_PIXELS:,} (Simard et al.: 34, 4)")
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise _bad("elastic", allowed, value)
            alpha, sigma = value
        else:
            alpha, sigma = value, ELASTIC_SIMARD[1]
        alpha = _number("elastic", alpha, allowed, hi=MAX_PIXELS, hi_open=False)
        sigma = _number("elastic", sigma, allowed, lo_open=True, hi=MAX_PIXELS, hi_open=False)
        return alpha, sigma

    def manual_seed(self, seed: int) -> "Augment":
        """Restart this module's random sequence from ``seed``."""
        self.seed = _seed("seed", seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        return self

    def set_pca(self, eigvals: Any, eigvecs: Any) -> "Augment":
        """Use given eigenvalues (K,) and eigenvectors (C, K) (columns) for ``pca_color``."""
        vals = torch.as_tensor(eigvals, dtype=torch.float32).flatten()
        vecs = torch.as_tensor(eigvecs, dtype=torch.float32)
        if vecs.dim() != 2 or vecs.shape[1] != vals.shape[0]:
            raise DataError(f"pca_eigen has eigenvalues of shape {tuple(vals.shape)} and "
                            f"eigenvectors of shape {tuple(vecs.shape)}: it must be (K,) and "
                            "(C, K), one eigenvector per column.")
        self.pca_eigvals, self.pca_eigvecs = vals, vecs
        return self

    @torch.no_grad()
    def fit(self, images: Any, batch_size: int = 4096) -> "Augment":
        """Compute the per-channel covariance eigen-decomposition for ``pca_color``.

        ``images`` is ``N x C x H x W`` (tensor or array), uint8 (divided by 255) or
        float (taken on its own scale, expected 0..1). Streams in chunks, so a whole
        training set fits.
        """
        x = _as_batch(images, "fit")
        c = x.shape[1]
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        total = 0
        s1 = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, c, dtype=torch.float64)
        for i in range(0, x.shape[0], batch_size):
            p = x[i:i + batch_size].to("cpu", torch.float64).div_(scale)
            p = p.transpose(0, 1).reshape(c, -1)
            total += p.shape[1]
            s1 += p.sum(1)
            s2 += p @ p.T
        if total < 2:
            raise DataError("fit needs at least two pixels to compute a colour covariance.")
        mean = s1 / total
        cov = (s2 - total * torch.outer(mean, mean)) / (total - 1)
        vals, vecs = torch.linalg.eigh(cov)
        order = torch.argsort(vals, descending=True)
        self.set_pca(vals[order].clamp_min(0.0), vecs[:, order])
        return self

    # ----------------------------------------------------------------- queries
    @property
    def geometric(self) -> bool:
        """True when some option moves pixels (so a resampling is needed)."""
        return bool(self.rotation_range or self.width_shift_range or self.height_shift_range
                    or self.shear_range or self.zoom_range != (1.0, 1.0) or self.random_crop
                    or self.elastic[0])

    @property
    def enabled(self) -> bool:
        """True unless every option is off (then the module returns its input)."""
        return bool(self.geometric or self.horizontal_flip or self.vertical_flip
                    or self.channel_shift_range or self.pca_color or self.cutout)

    def options(self) -> dict[str, Any]:
        """The options that differ from their defaults (Keras names)."""
        out: dict[str, Any] = {}
        defaults = Augment()
        for k in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range",
                  "zoom_range", "horizontal_flip", "vertical_flip", "fill_mode", "cval",
                  "interpolation", "random_crop", "channel_shift_range",
                  "channel_shift_per_channel", "pca_color", "cutout", "cutout_count",
                  "elastic"):
            v = getattr(self, k)
            if v != getattr(defaults, k):
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, height: int, width: int, channels: int = 1,
               generator: torch.Generator | None = None, *, field: bool = True
               ) -> AugmentParams:
        """Draw the random parameters for ``n`` images (on the generator's device).

        ``field=False`` leaves out the elastic field (the largest draw: 2 values a pixel),
        to be drawn later, batch by batch, with :meth:`sample_field` from the same
        generator (what :func:`pre_augment` does to keep its memory to one batch)."""
        g = generator if generator is not None else self.generator
        dev = g.device if g is not None else torch.device("cpu")
        f64 = dict(dtype=torch.float64, device=dev, generator=g)

        def uniform(r: float, shape: tuple[int, ...] = (n,)) -> Tensor:
            return (torch.rand(shape, **f64) * 2.0 - 1.0) * r

        def integers(lo: int, hi: int, shape: tuple[int, ...]) -> Tensor:  # [lo, hi]
            return torch.randint(lo, hi + 1, shape, device=dev, generator=g)

        def shift(r: float, is_int: bool, size: int) -> Tensor:
            if is_int:   # Keras: whole pixels from the open interval (-r, r)
                return integers(-(int(r) - 1), int(r) - 1, (n,)).to(torch.float64)
            return uniform(r * size if r < 1 else r)

        p = AugmentParams()
        if self.rotation_range:
            p.theta = uniform(self.rotation_range)
        if self.height_shift_range:
            p.tx = shift(self.height_shift_range, self._hshift_int, height)
        if self.width_shift_range:
            p.ty = shift(self.width_shift_range, self._wshift_int, width)
        if self.shear_range:
            p.shear = uniform(self.shear_range)
        if self.zoom_range != (1.0, 1.0):
            lo, hi = self.zoom_range
            z = lo + torch.rand((n, 2), **f64) * (hi - lo)
            p.zx, p.zy = z[:, 0], z[:, 1]
        if self.horizontal_flip:
            p.hflip = torch.rand((n,), **f64) < 0.5
        if self.vertical_flip:
            p.vflip = torch.rand((n,), **f64) < 0.5
        if self.random_crop:
            p.crop = integers(-self.random_crop, self.random_crop, (n, 2))
        if self.channel_shift_range:
            k = channels if self.channel_shift_per_channel else 1
            p.channel_shift = uniform(self.channel_shift_range, (n, k))
        if self.pca_color:
            k = self.pca_eigvals.shape[0] if self.pca_eigvals is not None else channels
            p.pca_alpha = torch.randn((n, k), **f64) * self.pca_color
        if self.cutout:
            rows = integers(0, height - 1, (n, self.cutout_count, 1))
            cols = integers(0, width - 1, (n, self.cutout_count, 1))
            p.cutout = torch.cat([rows, cols], dim=2)
        if self.elastic[0] and field:       # last: the other draws stay as they were
            p.elastic = self.sample_field(n, height, width, generator=g)
        return p

    def check_input(self, height: int, width: int) -> None:
        """A :class:`DataError` now, rather than at the first batch, when images of this size
        cannot be augmented as asked (elastic warping of too small images, or with a sigma
        too large for them)."""
        if self.elastic[0]:
            _elastic.check_elastic(*self.elastic, int(height), int(width))

    def sample_field(self, n: int, height: int, width: int,
                     generator: torch.Generator | None = None) -> Tensor:
        """The raw elastic fields of ``n`` images, (N, 2, H, W) uniform in [-1, 1] (see
        :func:`deeparch.data.elastic.random_field`): what :meth:`sample` puts in
        ``AugmentParams.elastic``."""
        _elastic.check_elastic(*self.elastic, height, width)
        g = generator if generator is not None else self.generator
        return _elastic.random_field(n, height, width, generator=g)

    def displacement(self, params: AugmentParams) -> Tensor | None:
        """The elastic displacement (N, 2, H, W) in pixels (rows, columns) that
        :meth:`apply` adds to the sampling positions, or None without a field."""
        if params.elastic is None:
            return None
        h, w = params.elastic.shape[-2:]
        _elastic.check_elastic(*self.elastic, h, w)
        return _elastic.elastic_displacement(params.elastic, *self.elastic,
                                             cache=self._elastic_cache)

    # ----------------------------------------------------------------- applying
    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch with new random transforms (same dtype, shape and device)."""
        if not isinstance(images, Tensor):
            raise DataError(f"Augment expects a torch.Tensor batch N x C x H x W, "
                            f"got {type(images).__name__}.")
        if not self.enabled:
            return images
        single = images.dim() == 3
        x = images.unsqueeze(0) if single else images
        _check_batch(x, "Augment")
        n, c, h, w = x.shape
        params = self.sample(n, h, w, c, generator=generator)
        out = self.apply(x, params)
        return out.squeeze(0) if single else out

    @torch.no_grad()
    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Apply given parameters (from :meth:`sample`, possibly edited) to a batch."""
        x = images
        _check_batch(x, "Augment.apply")
        n, c, h, w = x.shape
        dev = x.device
        is_uint8 = x.dtype == torch.uint8
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        needs_float = (params.channel_shift is not None or params.pca_alpha is not None
                       or any(v is not None for v in (params.theta, params.tx, params.ty,
                                                      params.shear, params.zx, params.zy,
                                                      params.crop, params.elastic)))
        if needs_float and x.dtype != cdtype:
            x = x.to(cdtype)

        resample = needs_float and any(
            v is not None for v in (params.theta, params.tx, params.ty, params.shear,
                                    params.zx, params.zy, params.crop, params.elastic))
        if resample:
            x = self._resample(x, params)
        elif params.hflip is not None or params.vflip is not None:
            # flips alone: exact and cheap, no resampling
            if params.hflip is not None:
                m = params.hflip.to(dev).view(n, 1, 1, 1)
                x = torch.where(m, x.flip(-1), x)
            if params.vflip is not None:
                m = params.vflip.to(dev).view(n, 1, 1, 1)
                x = torch.where(m, x.flip(-2), x)

        if params.channel_shift is not None:
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            s = params.channel_shift.to(dev, cdtype).view(n, -1, 1, 1)
            x = torch.clamp(x + s, lo, hi)
        if params.pca_alpha is not None:
            if self.pca_eigvals is None:
                raise DataError("pca_color needs the colour eigenvectors of the data: call "
                                "Augment.fit(train_images) first, or pass pca_eigen=.")
            vecs = self.pca_eigvecs.to(dev, cdtype)
            if vecs.shape[0] != c:
                raise DataError(f"pca_color was fitted on {vecs.shape[0]}-channel images but "
                                f"the batch has {c} channels; fit it on the same data.")
            vals = self.pca_eigvals.to(dev, cdtype)
            alpha = params.pca_alpha.to(dev, cdtype)
            rgb = (alpha * vals) @ vecs.T                     # (N, C)
            if is_uint8:
                rgb = rgb * 255.0
            x = x + rgb.view(n, c, 1, 1)
        if params.cutout is not None:
            x = x.masked_fill(_cutout_mask(params.cutout.to(dev), self.cutout, h, w), 0)

        if x.dtype != images.dtype:
            if is_uint8:
                x = x.round_().clamp_(0, 255)
            x = x.to(images.dtype)
        return x

    def _resample(self, x: Tensor, params: AugmentParams) -> Tensor:
        n, c, h, w = x.shape
        m = _affine_2x3(params, h, w, n)
        if m is None:                       # an elastic field alone: the identity matrix
            m = torch.zeros(n, 2, 3, dtype=torch.float64)
            m[:, 0, 0] = m[:, 1, 1] = 1.0
        warp = None
        if params.elastic is not None:
            if tuple(params.elastic.shape) != (n, 2, h, w):
                raise DataError(f"the elastic field has shape {tuple(params.elastic.shape)} "
                                f"but the batch needs ({n}, 2, {h}, {w}).")
            _elastic.check_elastic(*self.elastic, h, w)
            warp = (params.elastic.to(x.device), *self.elastic, self._elastic_cache)
        mode = self.interpolation
        if mode == "bilinear" and self._integer_only(params):
            mode = "nearest"   # whole-pixel moves: exact, and cheaper than bilinear
        fill = self.fill_mode
        # The sampling grid by broadcasting (see _grid): F.affine_grid would cost more
        # than grid_sample itself on CPU for small images. grid_sample wants
        # (x=col, y=row), normalised for align_corners=False: g = (2 pixel + 1) / size - 1.
        coef = m[:, [1, 0], :]                                   # rows -> (x, y)
        size = torch.tensor([w, h], dtype=torch.float64)
        if fill == "wrap":
            # wrap the sampling positions into [0, size) and sample a copy of the image
            # padded by one wrapped pixel, so that bilinear taps across the seam are right
            grid = _grid(coef, h, w, x, warp)              # the warp in pixels
            grid = torch.remainder(grid, size.to(x.device, x.dtype)).add_(1.0)
            grid = grid.mul_((2.0 / (size + 2)).to(x.device, x.dtype)).add_(
                (1.0 / (size + 2) - 1.0).to(x.device, x.dtype))
            x = F.pad(x, (1, 1, 1, 1), mode="circular")
        else:
            coef = coef * (2.0 / size).view(1, 2, 1)
            coef[:, :, 2] += 1.0 / size - 1.0
            grid = _grid(coef, h, w, x, warp, (2.0 / w, 2.0 / h))   # pixels -> normalised
        if fill == "constant" and self.cval != 0.0:
            out = F.grid_sample(x - self.cval, grid, mode=mode, padding_mode="zeros",
                                align_corners=False)
            return out.add_(self.cval)
        return F.grid_sample(x, grid, mode=mode, padding_mode=_PADDING[fill],
                             align_corners=False)

    def _integer_only(self, params: AugmentParams) -> bool:
        if any(v is not None for v in (params.theta, params.shear, params.zx, params.zy,
                                       params.elastic)):
            return False
        for v in (params.tx, params.ty):
            if v is not None and not bool(torch.all(v == torch.round(v))):
                return False
        return True


def _grid(coef: Tensor, h: int, w: int, like: Tensor, warp: tuple | None = None,
          scale: tuple[float, float] = (1.0, 1.0)) -> Tensor:
    """(N, H, W, 2) grid ``coef[:, k, 0] * row + coef[:, k, 1] * col + coef[:, k, 2]``
    (grid plane 0 is x = col, plane 1 is y = row), plus, with ``warp = (field, alpha,
    sigma, cache)``, ``scale[k] *`` the elastic displacement of ``field`` (N, 2, H, W).

    Without a warp the grid is ONE broadcast multiply-add, ``rest + row * coef0`` over
    (N, H, W * 2) with the two planes interleaved in its contiguous last dimension (``rest``
    = ``coef1 * col + coef2``, (N, 1, W * 2)): cheaper on CPU than a broadcast add per
    strided plane (``Augment(slides)`` 1.6-2.3 ms a batch against 2.5-2.6 ms before,
    ``bench_augment.py --only-elastic``), and ~10x faster than ``F.affine_grid``'s batched
    matmul. With a warp
    the whole grid comes out of the smoothing's GEMMs
    (:func:`deeparch.data.elastic.warped_grid`), stored (H, N, 2, W) and returned as the
    (N, H, W, 2) view that ``grid_sample`` reads as fast as a contiguous grid.
    """
    n = coef.shape[0]
    coef = coef.to(like.device, like.dtype)
    cols = torch.arange(w, device=like.device, dtype=like.dtype).view(1, 1, w)
    if warp is not None:
        field, alpha, sigma, cache = warp
        rest = torch.addcmul(coef[:, :, 2:3], coef[:, :, 1:2], cols)       # (N, 2, W)
        store = _elastic.warped_grid(field.to(like.dtype), alpha, sigma, coef[:, :, 0], rest,
                                     scale, cache)
        return store.permute(1, 0, 3, 2)
    rows = torch.arange(h, device=like.device, dtype=like.dtype).view(1, h, 1)
    cf = coef.transpose(1, 2)                                          # (N, 3, 2)
    rest = torch.addcmul(cf[:, 2:3, :], cf[:, 1:2, :], cols.view(1, w, 1))   # (N, W, 2)
    row_coef = cf[:, 0:1, :].expand(n, w, 2)
    return torch.addcmul(rest.reshape(n, 1, 2 * w), rows,
                         row_coef.reshape(n, 1, 2 * w)).view(n, h, w, 2)


def _cutout_mask(centres: Tensor, size: int, h: int, w: int) -> Tensor:
    """(N, 1, H, W) bool: union of the squares of side ``size`` around ``centres``.

    One square at a time, so the memory is one mask whatever the number of squares."""
    start = centres - size // 2                                # (N, K, 2)
    rows = torch.arange(h, device=centres.device)
    cols = torch.arange(w, device=centres.device)
    in_r = (rows >= start[..., 0:1]) & (rows < start[..., 0:1] + size)   # (N, K, H)
    in_c = (cols >= start[..., 1:2]) & (cols < start[..., 1:2] + size)   # (N, K, W)
    mask = in_r[:, 0, :, None] & in_c[:, 0, None, :]
    for k in range(1, centres.shape[1]):
        mask |= in_r[:, k, :, None] & in_c[:, k, None, :]
    return mask.unsqueeze(1)


def _check_batch(x: Tensor, where: str) -> None:
    if x.dim() != 4:
        raise DataError(f"{where} expects a batch N x C x H x W, got a tensor of shape "
                        f"{tuple(x.shape)}.")
    if not (x.dtype == torch.uint8 or x.dtype.is_floating_point):
        raise DataError(f"{where} expects uint8 or floating-point images, got {x.dtype}.")


def _as_batch(images: Any, where: str) -> Tensor:
    x = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    _check_batch(x, where)
    return x


# --------------------------------------------------------------------------- pre-augmentation

def pre_augment(images: Any, labels: Any, augment: Augment, times: int,
                seed: int | None = None, *, include_original: bool = True,
                batch_size: int = 1024, path: str | os.PathLike | None = None,
                classes: Sequence[str] | None = None, groups: Any = None
                ) -> tuple[Tensor, Tensor | None]:
    """Pre-augmentation: expand a data set ``times`` times, once.

    Returns ``times * N`` images (and labels repeated to match): copy 0 is the
    originals when ``include_original`` (the default), every other copy is a fresh
    random augmentation of every image. ``seed`` gives a reproducible expansion
    (``None`` uses ``augment``'s own generator). With ``path`` the result is also
    saved (see :func:`save_augmented`) with ``classes`` and the group of every image
    (:func:`expanded_groups`: which original it was made from), so that a split of the
    saved file never tests on a copy of a training image.
    """
    x = _as_batch(images, "pre_augment")
    y = None if labels is None else torch.as_tensor(labels)
    if y is not None and (y.dim() == 0 or y.shape[0] != x.shape[0]):
        raise DataError(f"pre_augment got {x.shape[0]} images but "
                        f"{y.shape[0] if y.dim() else 'no'} labels.")
    times = check_pre_augment(x.shape, x.element_size(), times,
                              0 if y is None else y.numel() * y.element_size())
    batch_size = _whole("batch_size", batch_size, 1, 2 ** 31)
    g = torch.Generator().manual_seed(_seed("seed", seed)) if seed is not None else None
    n, c, h, w = x.shape
    # one tensor, filled copy by copy: the peak memory is the result plus one batch
    try:
        out_x = torch.empty((times * n, c, h, w), dtype=x.dtype, device=x.device)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower():
            raise
        raise DataError(f"there is not enough memory to pre-augment {n:,} images {times:,} "
                        f"times ({_human_bytes(times * n * c * h * w * x.element_size())}); "
                        "expand fewer times.") from None
    for k in range(times):
        part = out_x[k * n:(k + 1) * n]
        if (k == 0 and include_original) or not augment.enabled or n == 0:
            part.copy_(x)
            continue
        # one draw for the whole copy, so the result does not depend on batch_size
        params = augment.sample(n, h, w, c, generator=g, field=False)
        for i in range(0, n, batch_size):
            p = params[i:i + batch_size]
            if augment.elastic[0]:          # drawn batch by batch: the same fields, less memory
                p.elastic = augment.sample_field(min(batch_size, n - i), h, w, generator=g)
            part[i:i + batch_size] = augment.apply(x[i:i + batch_size], p)
    out_y = None if y is None else y.repeat(times, *([1] * (y.dim() - 1)))
    if path is not None:
        save_augmented(path, out_x, out_y, groups=expanded_groups(n, times, groups),
                       classes=classes)
    return out_x, out_y


def expanded_groups(n: int, times: int, groups: Any = None) -> Tensor:
    """The group of each image of a ``times``-fold expansion of ``n`` images (copy-major,
    as :func:`pre_augment` lays them out): the index of its original, or the original's
    own group when the data set already had groups."""
    base = torch.arange(n, dtype=torch.int64) if groups is None else \
        torch.as_tensor(groups).to(torch.int64)
    if base.shape != (n,):
        raise DataError(f"pre_augment got {tuple(base.shape)} groups for {n} images; give one "
                        f"group per image.")
    return base.repeat(int(times))


def check_pre_augment(shape: Sequence[int], bytes_per_value: int, times: Any,
                      label_bytes: int = 0) -> int:
    """``times`` as an int, if expanding ``shape`` (N, C, H, W) that many times stays within
    :data:`PRE_AUGMENT_MAX_BYTES`; otherwise a :class:`DataError` saying so. Cheap: call it
    before loading anything (the CLI's ``--expand``)."""
    if isinstance(times, bool) or not isinstance(times, (int, np.integer)) or times < 1:
        raise DataError(f"pre_augment times={_short(repr(times))} (--expand) is invalid: it must "
                        "be a whole number >= 1, the number of copies (1 = the originals).")
    times = int(times)
    per_copy = math.prod(int(v) for v in shape) * int(bytes_per_value) + int(label_bytes)
    total = per_copy * times
    if total > PRE_AUGMENT_MAX_BYTES:
        n = int(shape[0])
        raise DataError(f"pre-augmenting {n:,} images {times:,} times would take "
                        f"{_human_bytes(total)}, more than the limit of "
                        f"{_human_bytes(PRE_AUGMENT_MAX_BYTES)} (PRE_AUGMENT_MAX_BYTES); "
                        f"expand at most {max(PRE_AUGMENT_MAX_BYTES // max(per_copy, 1), 0):,} "
                        "times, or augment online while training.")
    return times


def _human_bytes(n: int) -> str:
    for unit, size in (("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20),
                       ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def save_augmented(path: str | os.PathLike, images: Tensor, labels: Tensor | None = None, *,
                   groups: Tensor | None = None, classes: Sequence[str] | None = None) -> Path:
    """Write images (and labels, groups, class names) to an ``.npz`` file, atomically;
    ``deeparch train --data FILE.npz`` reads it (no pickles)."""
    target = Path(path)
    arrays = {"images": torch.as_tensor(images).detach().cpu().numpy()}
    if labels is not None:
        arrays["labels"] = torch.as_tensor(labels).detach().cpu().numpy()
    if groups is not None:
        arrays["groups"] = torch.as_tensor(groups).detach().cpu().to(torch.int64).numpy()
    if classes is not None:
        arrays["classes"] = np.array([str(c) for c in classes], dtype=np.str_)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return target


def load_augmented(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """Read a file written by :func:`save_augmented` (no pickles are loaded)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            images = torch.from_numpy(data["images"].copy())
            labels = torch.from_numpy(data["labels"].copy()) if "labels" in data else None
    except FileNotFoundError as exc:
        raise DataError(f"no pre-augmented data set at {path}.") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a pre-augmented data set written by "
                        f"save_augmented ({exc}).") from exc
    return images, labels


# --------------------------------------------------------------------------- spec strings

PRESETS: dict[str, dict[str, Any]] = {
    # the FashionMNIST slides' ImageDataGenerator
    "slides": dict(rotation_range=8, width_shift_range=0.08, shear_range=0.3,
                   height_shift_range=0.08, zoom_range=0.08),
    # the usual CIFAR recipe: pad 4 with zeros, crop back, mirror
    "cifar": dict(random_crop=4, fill_mode="constant", horizontal_flip=True),
    # AlexNet's colour part (mirroring + PCA lighting; needs fit())
    "alexnet": dict(horizontal_flip=True, pca_color=0.1),
}

_ALIASES = {
    "rotation": "rotation_range", "rotate": "rotation_range",
    "shift": "shift", "wshift": "width_shift_range", "width_shift": "width_shift_range",
    "hshift": "height_shift_range", "height_shift": "height_shift_range",
    "shear": "shear_range", "zoom": "zoom_range",
    "hflip": "horizontal_flip", "vflip": "vertical_flip",
    "fill": "fill_mode", "interp": "interpolation",
    "crop": "random_crop", "channel_shift": "channel_shift_range",
    "color_shift": "color_shift", "colour_shift": "color_shift",
    "pca": "pca_color",
    "elastic": "elastic", "warp": "elastic",
}
_KERAS_KEYS = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range",
               "zoom_range", "horizontal_flip", "vertical_flip", "fill_mode", "cval",
               "interpolation", "random_crop", "channel_shift_range",
               "channel_shift_per_channel", "pca_color", "cutout", "cutout_count", "elastic")
_FLAGS = ("horizontal_flip", "vertical_flip", "channel_shift_per_channel")


def _spec_keys() -> str:
    short = sorted(k for k in _ALIASES if k not in _KERAS_KEYS)
    return ", ".join(short + list(_KERAS_KEYS))


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def _parse_value(key: str, raw: str | None) -> Any:
    if key in _FLAGS:
        if raw is None:
            return True
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise DataError(f"augmentation option {key}={_short(repr(raw))} is invalid: it must be "
                        "true or false (or the bare key).")
    if key == "pca_color" and raw is None:
        return 0.1
    if key == "elastic" and raw is None:
        return ELASTIC_SIMARD
    if raw is None or raw.strip() == "":
        raise DataError(f"augmentation option {key} needs a value, e.g. {key}=0.1.")
    raw = raw.strip()
    if key in ("fill_mode", "interpolation"):
        return raw
    if key in ("zoom_range", "elastic") and ":" in raw:
        return tuple(_parse_value(key, part) for part in raw.split(":", 1))
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise DataError(f"augmentation option {key}={_short(repr(raw))} is invalid: it must be a "
                        "number.") from None


def augment_from_spec(spec: str | None, seed: int | None = None) -> Augment:
    """Build an :class:`Augment` from a CLI string.

    ``"rotation=8,shift=0.08,shear=0.3,zoom=0.08,hflip"``; Keras names work too
    (``width_shift_range=0.08``). ``shift`` sets both shifts, ``color_shift=r`` is a
    per-channel channel shift, ``zoom=0.9:1.1`` a (lo, hi) pair, bare ``pca`` is
    AlexNet's sigma 0.1, ``elastic=ALPHA:SIGMA`` local warping (bare ``elastic`` is
    Simard et al.'s 34:4, ``elastic=ALPHA`` keeps sigma 4). Preset names (``slides``,
    ``cifar``, ``alexnet``) may start the list and be followed by overrides:
    ``"slides,hflip"``. ``""`` or ``"none"`` is the identity.
    """
    opts: dict[str, Any] = {}
    if spec is None:
        spec = ""
    if not isinstance(spec, str):
        raise DataError(f"an augmentation spec must be a string, got {type(spec).__name__}.")
    if spec.strip().lower() in ("", "none"):
        return Augment(seed=seed)
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            raise DataError(f"the augmentation spec {_short(spec)!r} has an empty item (two "
                            "commas, or one at an end); write options like rotation=8,hflip.")
        if item.lower() == "none":
            raise DataError(f"'none' in {_short(spec)!r} must stand alone: it means no "
                            "augmentation.")
        name, eq, raw = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not eq and name in PRESETS:
            opts.update(PRESETS[name])
            continue
        key = _ALIASES.get(name, name)
        if key not in _KERAS_KEYS and key not in ("shift", "color_shift"):
            raise DataError(f"unknown augmentation option {_short(name)!r} in {_short(spec)!r}; "
                            f"known options "
                            f"are {_spec_keys()}, and the presets {', '.join(PRESETS)}.")
        value = _parse_value(key if key not in ("shift", "color_shift") else key,
                             raw if eq else None)
        if key == "shift":
            opts["width_shift_range"] = opts["height_shift_range"] = value
        elif key == "color_shift":
            opts["channel_shift_range"] = value
            opts["channel_shift_per_channel"] = True
        else:
            opts[key] = value
    return Augment(**opts, seed=seed)
