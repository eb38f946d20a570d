"""Activation maximisation: the input that a unit or a channel of a layer likes best.

:func:`maximize` ``(model, layer, channel, unit=..., recipe=...)`` starts from a seeded random
image and climbs the gradient of one activation with respect to the input, in one of three
recipes:

* ``plain`` -- the slides' update, ``x <- x + lr * g / rms(g)`` with ``g = d a(x) / dx``: the
  gradient is divided by its root mean square (as Keras' example does) so that ``lr`` is in
  the input's own units (standard deviations of the training pixels) whatever the scale of
  the activation. No regulariser: what the unit responds to, and nothing else.
* ``yosinski`` -- Yosinski et al. 2015, "Understanding Neural Networks Through Deep
  Visualization": after each step, L2 decay ``x <- (1 - decay) x``, a Gaussian blur of width
  ``blur_radius`` every ``blur_every`` steps, and the clipping of pixels whose norm (over the
  colours) is in the lowest ``norm_pct`` percent or whose absolute contribution
  ``|sum_c x * g|`` is in the lowest ``contribution_pct`` percent. The four combinations of the
  paper's Table 1 are :data:`YOSINSKI_SETTINGS` (``setting=3`` is the one most of the paper's
  images use). The paper's step sizes are in Caffe's 0..255 pixels; here the step is taken as
  its "progress" policy defines it, scale-free: the learning rate that would raise a linear
  objective by ``progress`` per step (capped so that no step moves a pixel by more than one
  standard deviation).
* ``olah`` -- Olah et al. 2017, "Feature Visualization" (Distill): the image is parameterised
  by its Fourier coefficients scaled by ``1 / frequency`` (so that every frequency is learnt
  at the same speed), its colours are decorrelated with the square root of the colour
  covariance of the *training set* (``colors=``, see :func:`color_decorrelation`; grey
  images have nothing to decorrelate), a sigmoid keeps the pixels in 0..1, and each step sees
  a randomly padded, jittered, scaled and rotated copy (transformation robustness) with
  shifts measured in pixels of a 224 input and scaled to the model's input side. Adam, lr
  0.05, as Lucid.

The objective is one activation of the row ``layer`` (a summary row name, ``#N`` or a
:class:`~deeparch.viz.layers.Layer`): ``unit="center"`` the unit at the centre of the map,
``(i, j)`` that unit, ``"mean"`` the mean of the whole channel. For a single unit the result
carries the unit's receptive field as a box of input pixels (the summary's receptive field at
the position the inspector computes, :meth:`~deeparch.viz.layers.Layer.box`) and the image
cropped to it. Same seed, same image (on CPU, bit for bit). A degenerate objective is
warned about (:class:`DegenerateObjectiveWarning`): the mean of a channel that is a linear
function of the input (a first convolution before its ReLU) is maximised by a constant
image, and a unit whose gradient is zero everywhere cannot be climbed at all.

:func:`plot_maximized` draws the results as one sheet; the CLI is ``deeparch look maximize``.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, DeeparchError
from .activations import parse_channels
from .layers import Box, Layer, LayerError, _size, capture, layer_table, resolve_layer

__all__ = ["DegenerateObjectiveWarning", "Maximized", "RECIPES", "YOSINSKI_SETTINGS",
           "color_decorrelation", "look_maximize", "maximize", "plot_maximized"]

RECIPES = ("plain", "yosinski", "olah")

#: Table 1 of Yosinski et al. 2015, in its order (the toolbox's flags for each row):
#: L2 decay, blur width (sigma, pixels) and period, small-norm and small-contribution
#: clipping percentiles, iterations, and the toolbox's step policy.
YOSINSKI_SETTINGS: dict[int, dict[str, Any]] = {
    1: dict(decay=0.0, blur_radius=0.5, blur_every=4, norm_pct=50, contribution_pct=0,
            steps=500),
    2: dict(decay=0.3, blur_radius=0.0, blur_every=0, norm_pct=20, contribution_pct=0,
            steps=750),
    3: dict(decay=0.0001, blur_radius=1.0, blur_every=4, norm_pct=0, contribution_pct=0,
            steps=1000),
    4: dict(decay=0.0, blur_radius=0.5, blur_every=4, norm_pct=0, contribution_pct=90,
            steps=1000),
}

_DEFAULT_STEPS = {"plain": 200, "olah": 512}
_DEFAULT_LR = {"plain": 0.05, "yosinski": 2.0, "olah": 0.05}   # yosinski: progress per step

# Lucid's transformation robustness at a 224 input (pixels): pad 12, jitter 8 (a shift of
# 0..7), scales 1 +- 0.1 in steps of 0.02, rotations -10..10 degrees (0 more often), jitter 4
# (0..3): the two jitters shift by up to +-5 px about their mean. Scaled to the input side.
_PAD, _JITTER = 12, 5.0
_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
_ANGLES = tuple(range(-10, 11)) + (0,) * 5

_MAX_CHANNELS = 1024


class DegenerateObjectiveWarning(UserWarning):
    """The objective cannot show a feature: a constant image maximises it, or it has no
    gradient to climb."""


@dataclass
class Maximized:
    """One maximised activation."""

    layer: str                       # the row's key (``name`` or ``name@2``)
    row: int                         # its row number in the summary (from 1)
    channel: int
    unit: Any                        # "mean", or the (i, j) unit of the map (None: a vector)
    recipe: str
    input: torch.Tensor              # C x H x W: what the model saw (normalised input)
    image: torch.Tensor              # C x H x W: the same in 0..1 pixel units (unclipped)
    activation: float                # the objective at the end
    history: list[float] = field(default_factory=list, repr=False)
    box: Box | None = None           # the unit's receptive field (unclipped), input pixels
    receptive_field: Any = None      # the summary's receptive field of the row
    notes: list[str] = field(default_factory=list)

    @property
    def crop(self) -> torch.Tensor:
        """The image cropped to the unit's receptive field (the whole image without a box)."""
        if self.box is None:
            return self.image
        ys, xs = self.box.clip(*self.image.shape[-2:]).slices()
        return self.image[..., ys, xs]

    @property
    def input_crop(self) -> torch.Tensor:
        if self.box is None:
            return self.input
        ys, xs = self.box.clip(*self.input.shape[-2:]).slices()
        return self.input[..., ys, xs]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "row": self.row, "channel": self.channel,
                "unit": list(self.unit) if isinstance(self.unit, tuple) else self.unit,
                "recipe": self.recipe, "activation": self.activation,
                "start_activation": self.history[0] if self.history else None,
                "box": None if self.box is None else
                [self.box.top, self.box.left, self.box.bottom, self.box.right],
                "receptive_field": self.receptive_field, "notes": list(self.notes)}


# --------------------------------------------------------------------------- arguments

def _unit(unit: Any, row: Layer) -> tuple[int, ...] | str | None:
    """The unit as map coordinates, ``"mean"``, or None for a row without a map (a vector)."""
    shape = row.shape
    spatial = [int(s) for s in shape[1:]] if row.has_map else []
    if not spatial:
        if unit not in ("center", "mean", None):
            raise LayerError(f"layer {row.key} outputs a vector ({'x'.join(map(str, shape))}), "
                             f"not a map: its channels are single units, so give no unit.")
        return None
    if unit is None or unit == "center":
        return tuple(s // 2 for s in spatial)
    if unit == "mean":
        return "mean"
    if isinstance(unit, str):
        try:
            unit = tuple(int(v) for v in unit.replace("x", ",").split(","))
        except ValueError:
            raise LayerError(f"unit {unit!r} must be center, mean or map coordinates i,j."
                             ) from None
    try:
        coords = tuple(int(v) for v in unit)
    except (TypeError, ValueError):
        raise LayerError(f"unit {unit!r} must be center, mean or map coordinates (i, j)."
                         ) from None
    if len(coords) != len(spatial) or any(not 0 <= c < s for c, s in zip(coords, spatial)):
        raise LayerError(f"unit {coords} is outside the {'x'.join(map(str, spatial))} map of "
                         f"{row.key}; give coordinates from 0 to "
                         f"{', '.join(str(s - 1) for s in spatial)}.")
    return coords


def _positive(name: str, v: Any, integer: bool = False) -> Any:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    if integer:
        ok = ok and float(v).is_integer()
    if not ok:
        raise DeeparchError(f"{name}={v!r} is invalid: it must be a positive "
                            f"{'whole number' if integer else 'number'}.")
    return int(v) if integer else float(v)


def _stats(values, c: int, default: float, what: str) -> torch.Tensor:
    if values is None:
        return torch.full((c,), float(default))
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.repeat(c)
    if t.numel() != c:
        raise DataError(f"{what} has {t.numel()} values for an input of {c} channels; give one "
                        f"per channel.")
    return t


# --------------------------------------------------------------------------- colours

def color_decorrelation(images: Any) -> torch.Tensor:
    """The C x C matrix that turns decorrelated colours into the training set's colours: the
    square root ``U sqrt(S)`` of the covariance of its pixels' colours (0..1 units), divided by
    its largest column norm (as Olah et al. do with ImageNet's). ``images``: N x C x H x W
    (uint8 or 0..1 floats; a sample of a few hundred is plenty). Grey images give ``[[1]]``."""
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(images)
    if x.dim() != 4 or x.shape[0] == 0:
        raise DataError(f"colour statistics need a batch N x C x H x W, got shape "
                        f"{tuple(x.shape)}.")
    x = x.to(torch.float64) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float64)
    c = x.shape[1]
    if c == 1:
        return torch.ones(1, 1)
    flat = x.transpose(0, 1).reshape(c, -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    cov = flat @ flat.T / max(1, flat.shape[1] - 1)
    s, u = torch.linalg.eigh(cov)
    sqrt = u @ torch.diag(s.clamp_min(0).sqrt())
    norm = sqrt.norm(dim=0).max()
    if not norm > 0:
        return torch.eye(c)
    return (sqrt / norm).to(torch.float32)


# --------------------------------------------------------------------------- helpers

def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of width ``sigma`` pixels (kernel to 4 sigma, reflected edges)."""
    if sigma <= 0:
        return x
    r = max(1, int(4.0 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    h, w = x.shape[-2:]
    mode = "reflect" if min(h, w) > r else "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _below_percentile(values: torch.Tensor, pct: float) -> torch.Tensor:
    """Per image (dim 0): a mask of the positions whose value is under its ``pct`` percentile."""
    flat = values.flatten(1)
    q = torch.quantile(flat, pct / 100.0, dim=1, keepdim=True)
    return (flat < q).view_as(values)


def _seeded(seed: int, channel: int) -> torch.Generator:
    # one generator per channel: a channel's image does not depend on which others are asked
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(channel)) % 2 ** 63)


class _Objective:
    """The chosen activation of each image of a batch (image b maximises channels[b])."""

    def __init__(self, model, row: Layer, table, channels: Sequence[int], unit):
        self.model, self.row, self.table = model, row, table
        self.channels = torch.tensor(list(channels))
        self.unit = unit

    def __call__(self, x: torch.Tensor, grad: bool = True) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            a = self._output(x, grad)
        b = torch.arange(a.shape[0], device=a.device)
        per = a[b, self.channels.to(a.device)]          # B x (map...)
        if self.unit is None:
            return per
        if self.unit == "mean":
            return per.flatten(1).mean(dim=1)
        return per[(slice(None),) + tuple(self.unit)]


    def _output(self, x: torch.Tensor, grad: bool) -> torch.Tensor:
        row = self.row
        if row.module is None:        # a functional row: the inspector's tracer finds it
            _, (a,) = capture(self.model, x, row, grad=grad, stop=True, table=self.table)
            return a
        # a module row: a hook on that module alone is much cheaper than the tracer (every
        # step of the climb runs the network); it stops the pass at the row's use, so nothing
        # after it (an in-place ReLU) can touch the output, and it goes in the finally
        seen, got = [0], []

        def hook(module, args, out):
            seen[0] += 1
            if seen[0] == row.use:
                got.append(out)
                raise _Stop

        handle = row.module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not got or not isinstance(got[0], torch.Tensor):
            raise LayerError(f"layer {row.key} did not output one tensor on this input (the "
                             f"forward pass took another path than the traced one).")
        return got[0]


class _Stop(Exception):
    """Ends the forward pass once the chosen row has run."""


def _grad(objective: _Objective, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    values = objective(x)
    (g,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), g


def _degenerate(objective: _Objective, shape, device, row: Layer, unit) -> list[str]:
    """A note when the objective is the mean of a channel that is linear in the input: its
    gradient is the same at random inputs of three scales, so a constant image maximises it."""
    if unit != "mean":
        return []
    n = len(objective.channels)
    gen = torch.Generator().manual_seed(12345)
    grads = [_grad(objective, torch.randn((n, *shape), generator=gen).to(device) * s)[1]
             for s in (0.5, 1.0, 3.0)]
    scale = grads[0].abs().flatten(1).amax(dim=1)
    same = torch.ones(n, dtype=torch.bool, device=scale.device)
    for g in grads[1:]:
        same &= (g - grads[0]).abs().flatten(1).amax(dim=1) <= 1e-4 * scale.clamp_min(1e-30)
    linear = same & (scale > 0)
    if not bool(linear.any()):
        return []
    which = [int(c) for c, k in zip(objective.channels, linear) if k]
    chans = (f"channel {which[0]}" if len(which) == 1 else
             "every channel" if len(which) == n else f"{len(which)} of the channels")
    return [f"the mean of {chans} of layer {row.key} is a linear function of the input (no "
            f"non-linearity before it), so a constant image maximises it and the picture "
            f"shows no feature; maximise one unit (unit center) instead, or a layer after "
            f"the activation."]


def _dead(values: torch.Tensor, channels, row: Layer) -> list[str]:
    """A note for the images whose objective never moved (no gradient anywhere on the way)."""
    if values.shape[0] < 2:
        return []
    still = (values == values[:1]).all(dim=0)
    which = [int(c) for c, k in zip(channels, still) if k]
    if not which:
        return []
    chans = f"channel {which[0]}" if len(which) == 1 else f"channels {', '.join(map(str, which[:8]))}" + (" ..." if len(which) > 8 else "")
    return [f"{chans} of layer {row.key} never moved: the activation has no gradient with respect "
            f"to the input at the start (a dead unit); the picture is only the start."]


# --------------------------------------------------------------------------- recipes

def _plain(objective, x, steps, lr, history):
    for _ in range(steps):
        values, g = _grad(objective, x)
        history.append(values)
        rms = g.pow(2).flatten(1).mean(dim=1).sqrt().clamp_min(1e-30)
        x = x + lr * g / rms.view(-1, *([1] * (g.dim() - 1)))
    return x


def _yosinski(objective, x, steps, progress, cfg, history):
    decay, radius, every = cfg["decay"], cfg["blur_radius"], cfg["blur_every"]
    norm_pct, contrib_pct = cfg["norm_pct"], cfg["contribution_pct"]
    view = (-1,) + (1,) * (x.dim() - 1)
    for step in range(steps):
        values, g = _grad(objective, x)
        history.append(values)
        sq = g.pow(2).flatten(1).sum(dim=1)
        # the toolbox's "progress" policy: a linear objective rises by `progress` per step;
        # capped so that no step moves the picture by more than one std per pixel (rms)
        lr = progress / sq.clamp_min(1e-30)
        cap = 1.0 / (sq / g[0].numel()).sqrt().clamp_min(1e-30)
        lr = torch.minimum(lr, cap)
        x = x + lr.view(view) * g
        if decay:
            x = x * (1.0 - decay)
        if radius and every and (step + 1) % every == 0 and x.dim() == 4:
            x = _gaussian_blur(x, radius)
        if norm_pct:
            small = _below_percentile(x.norm(dim=1), norm_pct)
            x = x * (~small).unsqueeze(1)
        if contrib_pct:
            small = _below_percentile((x * g).sum(dim=1).abs(), contrib_pct)
            x = x * (~small).unsqueeze(1)
    return x


class _Fourier:
    """Olah et al.'s image: Fourier coefficients scaled by 1/frequency, decorrelated colours,
    a sigmoid to 0..1 pixels."""

    def __init__(self, n, c, h, w, colors: torch.Tensor, gens, device):
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freq = (fx ** 2 + fy ** 2).sqrt()
        self.scale = (1.0 / freq.clamp_min(1.0 / max(h, w))).to(device)
        self.h, self.w = h, w
        spec = [torch.randn((c, h, w // 2 + 1, 2), generator=g) * 0.01 for g in gens]
        self.param = torch.stack(spec).to(device).requires_grad_(True)
        self.colors = colors.to(device)

    def pixels(self) -> torch.Tensor:
        z = torch.view_as_complex(self.param) * self.scale
        img = torch.fft.irfft2(z, s=(self.h, self.w), norm="ortho") / 4.0
        img = torch.einsum("dc,nchw->ndhw", self.colors, img)
        return torch.sigmoid(img)


def _transform(pix: torch.Tensor, gens, side: int) -> torch.Tensor:
    """Pad with grey, then a random shift, scale and rotation per image, cropped back."""
    n, c, h, w = pix.shape
    f = side / 224.0
    pad = max(1, round(_PAD * f))
    jitter = _JITTER * f            # continuous: a fraction of a pixel at 28x28
    padded = F.pad(pix, (pad, pad, pad, pad), value=0.5)
    H, W = h + 2 * pad, w + 2 * pad
    thetas = []
    for g in gens:
        s = _SCALES[int(torch.randint(len(_SCALES), (1,), generator=g))]
        a = math.radians(_ANGLES[int(torch.randint(len(_ANGLES), (1,), generator=g))])
        dy, dx = ((torch.rand(2, generator=g) * 2 - 1) * jitter).tolist()
        cos, sin = math.cos(a) / s, math.sin(a) / s
        # affine_grid works in -1..1 units of the padded image
        thetas.append([[cos, -sin * H / W, 2 * dx / W], [sin * W / H, cos, 2 * dy / H]])
    theta = torch.tensor(thetas, dtype=pix.dtype, device=pix.device)
    grid = F.affine_grid(theta, (n, c, H, W), align_corners=False)
    out = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[:, :, pad:pad + h, pad:pad + w]


def _olah(objective, shape, steps, lr, colors, mean, std, gens, device, history):
    c, h, w = shape
    image = _Fourier(len(gens), c, h, w, colors, gens, device)
    opt = torch.optim.Adam([image.param], lr=lr)
    m, s = mean.view(1, c, 1, 1).to(device), std.view(1, c, 1, 1).to(device)
    for _ in range(steps):
        x = (_transform(image.pixels(), gens, min(h, w)) - m) / s
        values = objective(x)
        history.append(values.detach())
        # the gradient of the image alone: nothing accumulates in the model's parameters
        (image.param.grad,) = torch.autograd.grad(-values.sum(), image.param)
        opt.step()
    with torch.no_grad():
        return (image.pixels() - m) / s


# --------------------------------------------------------------------------- maximize

def maximize(model: nn.Module, layer: Any, channel: Any = 0, unit: Any = "center", *,
             recipe: str = "plain", steps: int | None = None, lr: float | None = None,
             seed: int = 0, input_size: Sequence[int] | None = None, mean: Any = None,
             std: Any = None, colors: Any = None, setting: int = 3,
             warn: bool = True) -> Maximized | list[Maximized]:
    """The input that maximises channel ``channel`` of row ``layer`` (see the module doc).

    ``channel``: an int (returns one :class:`Maximized`), or a list, ``"0:6"`` or ``"all"``
    (returns a list; the channels are optimised together, one image each). ``unit``:
    ``"center"``, ``"mean"`` or ``(i, j)``; a row without a map (a dense layer) takes none.
    ``recipe``: ``plain`` | ``yosinski`` (``setting`` 1-4 of the paper's Table 1) | ``olah``.
    ``steps`` and ``lr`` default per recipe (plain 200 steps of 0.05; yosinski the setting's
    iterations, ``lr`` is the progress per step, 2.0; olah 512 Adam steps of 0.05).
    ``mean``/``std`` (per channel, 0..1 pixel units) are the model's input normalisation
    (default 0 and 1); ``colors`` is the training set's :func:`color_decorrelation` matrix
    (or a batch of its images) for ``olah``. ``input_size`` (C, H, W) defaults to
    ``model.input_size``. The model runs in eval mode; its weights, modes and hooks are left
    as they were. Degenerate objectives raise a :class:`DegenerateObjectiveWarning` (and are
    named in ``notes``)."""
    if recipe not in RECIPES:
        raise DeeparchError(f"unknown recipe {recipe!r}; the recipes are "
                            f"{', '.join(RECIPES)}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DeeparchError(f"seed={seed!r} is invalid: it must be a whole number >= 0.")
    cfg = None
    if recipe == "yosinski":
        if setting not in YOSINSKI_SETTINGS:
            raise DeeparchError(f"setting={setting!r} is not one of Yosinski et al.'s four "
                                f"(1, 2, 3 or 4).")
        cfg = YOSINSKI_SETTINGS[setting]
    steps = _positive("steps", steps if steps is not None else
                      (cfg["steps"] if cfg else _DEFAULT_STEPS[recipe]), integer=True)
    lr = _positive("lr", lr if lr is not None else _DEFAULT_LR[recipe])

    table = layer_table(model, input_size)
    row = resolve_layer(model, layer, input_size, table=table)
    size = _size(model, input_size)
    c_in = size[0]
    count = row.channels if row.channels is not None else (
        int(row.shape[0]) if row.shape and not isinstance(row.shape[0], list) else None)
    if count is None:
        raise LayerError(f"layer {row.key} ({row.type}) outputs {row.shape}, not channels; "
                         f"pick a layer with one output tensor.")
    single = isinstance(channel, int) and not isinstance(channel, bool)
    channels = parse_channels(channel, count, f"layer {row.key} ({row.type})", limit=None)
    if len(channels) > _MAX_CHANNELS:
        raise LayerError(f"{len(channels)} channels are more than {_MAX_CHANNELS} at once; "
                         f"ask for fewer (e.g. 0:64).")
    where = _unit(unit, row)
    if recipe == "olah" and len(size) != 3:
        raise DeeparchError("the olah recipe needs images (C, H, W inputs).")
    mean_t = _stats(mean, c_in, 0.0, "mean")
    std_t = _stats(std, c_in, 1.0, "std")
    if bool((std_t <= 0).any()):
        raise DataError("every std must be above 0.")
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")

    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        return _maximize(model, row, table, channels, where, single, recipe, cfg, setting,
                         steps, lr, seed, size, mean_t, std_t, colors, device, warn)
    finally:
        for m, flag in modes.items():
            m.training = flag


def _start(objective: _Objective, size, gens, device) -> tuple[torch.Tensor, int]:
    """The mean image plus a little noise (0.1 std), as the toolbox starts; an image whose
    unit has no gradient there (a ReLU off at the start) is redrawn with 1 std, up to 8 times.
    Returns the start and how many images were redrawn."""
    x = torch.stack([torch.randn(size, generator=g) * 0.1 for g in gens]).to(device)
    redrawn = set()
    for _ in range(8):
        _, g = _grad(objective, x)
        dead = (g.flatten(1).abs().amax(dim=1) == 0).nonzero().flatten().tolist()
        if not dead:
            break
        for k in dead:
            redrawn.add(k)
            x[k] = torch.randn(size, generator=gens[k]).to(device)
    return x, len(redrawn)


def _maximize(model, row, table, channels, where, single, recipe, cfg, setting, steps, lr,
              seed, size, mean_t, std_t, colors, device, warn):
    c_in = size[0]
    objective = _Objective(model, row, table, channels, where)
    notes = _degenerate(objective, size, device, row, where)

    gens = [_seeded(seed, ch) for ch in channels]
    history: list[torch.Tensor] = []
    if recipe == "olah":
        if colors is None:
            mat = torch.eye(c_in)
        else:
            mat = torch.as_tensor(colors, dtype=torch.float32)
            if mat.dim() == 4:
                mat = color_decorrelation(colors)
            if tuple(mat.shape) != (c_in, c_in):
                raise DataError(f"the colour matrix is {tuple(mat.shape)} for an input of "
                                f"{c_in} channels; give a {c_in}x{c_in} matrix (see "
                                f"color_decorrelation).")
        x = _olah(objective, size, steps, lr, mat, mean_t, std_t, gens, device, history)
    else:
        x, redrawn = _start(objective, size, gens, device)
        if redrawn:
            notes.append(f"{redrawn} start{'s were' if redrawn > 1 else ' was'} redrawn with "
                         f"more noise: the unit had no gradient at the mean image")
        if recipe == "plain":
            x = _plain(objective, x, steps, lr, history)
        else:
            x = _yosinski(objective, x, steps, lr, cfg, history)
    with torch.no_grad():
        final = objective(x.detach(), grad=False).float().cpu()
    x = x.detach().float().cpu()
    image = x * std_t.view(-1, *([1] * (x.dim() - 2))) + mean_t.view(-1, *([1] * (x.dim() - 2)))
    hist = torch.stack(history).float().cpu() if history else torch.empty(0, len(channels))
    notes += _dead(torch.cat([hist, final[None]]), channels, row)
    if warn:
        for note in notes:
            if "redrawn" not in note:
                warnings.warn(note, DegenerateObjectiveWarning, stacklevel=3)
    rf = row.record.receptive_field
    results = []
    for k, ch in enumerate(channels):
        box = None
        if isinstance(where, tuple) and row.rf is not None and row.center is not None \
                and not row.record.whole_input:
            box = row.box(*where)
        results.append(Maximized(
            layer=row.key, row=row.number, channel=ch,
            unit=where, recipe=recipe if recipe != "yosinski" else f"yosinski{setting}",
            input=x[k], image=image[k], activation=float(final[k]),
            history=[float(v) for v in hist[:, k]], box=box, receptive_field=rf,
            notes=list(notes)))
    return results[0] if single else results


# --------------------------------------------------------------------------- drawing

def _display(img: torch.Tensor):
    """C x H x W -> H x W (x 3) in 0..1, stretched to the image's own min..max (the values of
    an unregularised maximisation are not pixels)."""
    a = img.detach().float()
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else torch.full_like(a, 0.5)
    if a.shape[0] == 3:
        return a.permute(1, 2, 0).numpy(), None
    return a[0].numpy(), "gray"


def plot_maximized(results: Maximized | Sequence[Maximized], path: str | os.PathLike,
                   view: str = "auto", ncol: int | None = None, title: str | None = None,
                   labels: Sequence[str] | None = None, dpi: int = 100) -> Path:
    """One PNG sheet: a cell per result, titled with its channel and final activation.

    ``view``: ``"full"`` the whole image with the unit's receptive-field box drawn; ``"crop"``
    the image cropped to that box; ``"both"`` the two side by side; ``"auto"``: both for a
    single result, crops for a sheet of units, full images for channel means. Every cell is
    stretched to its own min..max (said in the caption); ``title`` (the model's name) heads
    the caption; ``labels`` names the channels (class names for an output layer). Written
    atomically."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from .plots import _save

    res = [results] if isinstance(results, Maximized) else list(results)
    if not res:
        raise DataError("there is nothing to draw: no maximised activation was given.")
    if view not in ("auto", "full", "crop", "both"):
        raise DataError(f"view={view!r} must be auto, full, crop or both.")
    boxed = res[0].box is not None
    if view == "auto":
        view = "both" if len(res) == 1 and boxed else ("crop" if boxed else "full")
    if not boxed:
        view = "full"
    panels = ["full", "crop"] if view == "both" else [view]
    cells = len(res) * len(panels)
    ncol = ncol or (len(panels) if len(res) == 1 else min(8, cells) if len(panels) == 1
                    else min(8, cells - cells % 2 if cells > 8 else cells))
    if len(panels) == 2 and ncol % 2:
        ncol += 1
    rows = math.ceil(cells / ncol)
    cell = 1.6 if len(res) > 1 else 2.4
    fig = Figure(figsize=(ncol * cell, rows * (cell + 0.35)), dpi=dpi)
    k = 0
    for r in res:
        for panel in panels:
            ax = fig.add_subplot(rows, ncol, k + 1)
            k += 1
            ax.set_xticks([])
            ax.set_yticks([])
            img = r.crop if panel == "crop" else r.image
            arr, cmap = _display(img)
            ax.imshow(arr, cmap=cmap, interpolation="nearest")
            if panel == "full" and r.box is not None:
                b = r.box
                ax.add_patch(Rectangle((b.left - 0.5, b.top - 0.5), b.width, b.height,
                                       fill=False, edgecolor="red", linewidth=1.2))
                h, w = r.image.shape[-2:]
                ax.set_xlim(min(-0.5, b.left - 1), max(w - 0.5, b.right))
                ax.set_ylim(max(h - 0.5, b.bottom), min(-0.5, b.top - 1))
            name = f"ch {r.channel}"
            if labels is not None and 0 <= r.channel < len(labels):
                name = f"{r.channel} {str(labels[r.channel])[:14]}"
            what = " (crop)" if panel == "crop" and len(panels) == 2 else ""
            ax.set_title(f"{name}{what}\na={r.activation:.3g}", fontsize=7)
    r0 = res[0]
    unit = ("mean of the channel" if r0.unit == "mean" else
            "one unit" if r0.unit is None else f"unit {','.join(map(str, r0.unit))}")
    head = f"{r0.layer} (row #{r0.row}) maximised: {unit}, recipe {r0.recipe}"
    head = f"{title}: {head}" if title else head
    sub = "each picture stretched to its own min..max"
    if r0.box is not None:
        sub += (f"; receptive field {r0.box.height}x{r0.box.width} px" +
                (" (red box)" if "full" in panels else ", the crops"))
    import textwrap
    chars = max(30, int(ncol * cell * 13))
    caption = "\n".join(textwrap.wrap(head, chars) + textwrap.wrap(sub, chars))
    top = 0.2 + 0.14 * caption.count("\n") + 0.14
    fig.set_size_inches(ncol * cell, rows * (cell + 0.35) + top)
    fig.suptitle(caption, fontsize=8)
    height = rows * (cell + 0.35) + top
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - (top + 0.25) / height,
                        wspace=0.15, hspace=0.45)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- the command

_COLOR_SAMPLE = 512


def _run_colors(net, data, data_dir) -> tuple[torch.Tensor | None, str | None]:
    """The colour decorrelation of ``data``'s training split (a run's own data by default):
    (matrix, None), or (None, why not)."""
    if net.input_size[0] == 1:
        return torch.ones(1, 1), None
    if data is None:
        if net.run is None:
            return None, (f"{net.source} is not a run, so its training colours are unknown: "
                          f"the olah recipe uses no colour decorrelation (give --data DATA "
                          f"for the training set's colours)")
        data = net.run["data"]
        data_dir = data_dir or net.run.get("data_dir")
    from ..train.run import load_data
    train, _, _ = load_data(data, data_dir)
    if train.images.shape[1] != net.input_size[0]:
        return None, (f"{data} has {train.images.shape[1]}-channel images and the network "
                      f"reads {net.input_size[0]}: no colour decorrelation")
    step = max(1, len(train) // _COLOR_SAMPLE)
    return color_decorrelation(train.images[::step][:_COLOR_SAMPLE]), None


def look_maximize(source, layer, output, *, channels: Any = "all", unit: Any = "center",
                  recipe: str = "plain", setting: int = 3, steps: int | None = None,
                  lr: float | None = None, seed: int = 0, view: str = "auto",
                  weights=None, data=None, data_dir=None) -> dict[str, Any]:
    """`deeparch look maximize`: load a run or a model, maximise the chosen channels of one
    layer, draw the sheet. Returns what was done (the command prints it or its JSON)."""
    from .layers import load_network

    if layer is None:
        raise LayerError("name the layer to maximise with --layer (a name or a row number #3).")
    net = load_network(source, weights)
    notes = list(net.notes or [])
    colors = None
    if recipe == "olah":
        colors, why = _run_colors(net, data, data_dir)
        if why:
            notes.append(why)
    elif data is not None:
        raise DataError("--data gives the olah recipe its training colours; the other recipes "
                        "take none.")
    pre = net.preprocess
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateObjectiveWarning)
        res = maximize(net.model, layer, channels, unit, recipe=recipe, steps=steps, lr=lr,
                       seed=seed, input_size=net.input_size, mean=pre.mean, std=pre.std,
                       colors=colors, setting=setting)
    res = res if isinstance(res, list) else [res]
    warned = [str(w.message) for w in caught if issubclass(w.category,
                                                           DegenerateObjectiveWarning)]
    notes += [n for n in res[0].notes if n not in warned]
    table = layer_table(net.model, net.input_size)
    last = res[0].row == len(table)
    labels = net.classes if last and net.classes and len(net.classes) == (
        table[-1].channels or (table[-1].shape[0] if table[-1].shape else 0)) else None
    plot_maximized(res, output, view=view, title=net.name, labels=labels)
    return {"model": net.name, "layer": res[0].layer, "row": res[0].row,
            "recipe": res[0].recipe, "unit": res[0].to_dict()["unit"],
            "steps": len(res[0].history), "warnings": warned, "notes": notes,
            "channels": [r.to_dict() for r in res], "plot": str(output)}
