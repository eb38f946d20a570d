"""Attribution: which input pixels (saliency) and which map positions of a layer (Grad-CAM)
a class score depends on.

* :func:`saliency` ``(model, x, target, method=...)`` -- one value per input value, the raw
  numbers, shaped like ``x``:

  - ``grad``: the gradient of the target's score (the logit) with respect to the input
    (Simonyan et al. 2013), signed;
  - ``smoothgrad``: the gradient averaged over ``samples`` noisy copies of the image
    (Smilkov et al. 2017), noise of ``noise`` times the image's value range;
  - ``guided``: guided backpropagation (Springenberg et al. 2014): through every ReLU only
    positive gradients flow back, and only where the ReLU's input was positive;
  - ``integrated``: integrated gradients (Sundararajan et al. 2017) from ``baseline``
    (zeros) to ``x`` in ``steps`` midpoint steps; the values sum to ``f(x) - f(baseline)``;
  - ``occlusion``: how much the score drops when a ``window`` x ``window`` patch is replaced
    by ``baseline`` (Zeiler & Fergus 2013), averaged over the windows that cover the pixel.

* :func:`gradcam` ``(model, x, target, layer="auto", plus=False)`` -- Grad-CAM (Selvaraju
  et al. 2017): ``relu(sum_k mean_ij(dy/dA_k) * A_k)`` at ``layer``, upsampled bilinearly to
  the input size (Captum's ``LayerGradCam`` + ``LayerAttribution.interpolate``); ``plus``
  gives Grad-CAM++ (Chattopadhyay et al. 2018). Returns ``N x H x W`` raw values, not
  normalised. ``layer="auto"`` takes the last row of the summary with a spatial map.

Targets: ``None`` / ``"top1"`` (each image's predicted class), one class index for all, or
one per image (a list or tensor of N). Every image in a batch is computed exactly as it is
alone (the model runs in eval mode: batch norm uses its running statistics). The model's
modes are restored, its parameters' ``.grad`` are not touched and no hook is left behind,
also after an error. In-place ReLUs and a module used twice are safe: the captured map is
cloned before the rest of the network can overwrite it, and guided backpropagation replaces
the ReLU *functions* (``F.relu``, ``torch.relu_``, ``nn.ReLU``), not module hooks.

:func:`plot_attribution` draws each image, its map and the map over the image as one PNG.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import DataError, ModelOptionError

__all__ = ["METHODS", "CAM", "saliency", "gradcam", "gradcam_result", "resolve_targets",
           "plot_attribution", "look_attribution"]

METHODS = ("grad", "smoothgrad", "guided", "integrated", "occlusion")


# --------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call; every module's own mode restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for m, flag in modes.items():
            m.training = flag


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batch(x: Any) -> tuple[torch.Tensor, bool]:
    """The input as a float N x C x H x W tensor (a C x H x W image gets a batch of one)."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"attribution needs the model's input as a tensor N x C x H x W, got "
                        f"{type(x).__name__}.")
    single = x.dim() == 3
    if single:
        x = x[None]
    if x.dim() != 4 or x.shape[0] == 0:
        raise DataError(f"attribution needs images N x C x H x W (or one C x H x W), got shape "
                        f"{tuple(x.shape)}.")
    if not x.is_floating_point():
        raise DataError(f"attribution needs the normalised float input the model takes, got "
                        f"{x.dtype} (normalise uint8 images first).")
    return x.detach(), single


def _refused(exc: RuntimeError, x: torch.Tensor) -> DataError:
    """The one sentence for an input the model's layers cannot take."""
    first = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
    return DataError(f"the model cannot take an input of shape {tuple(x.shape[1:])} "
                     f"({first}); give images with the channels and size it was built for.")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        out = model(x)
    except RuntimeError as exc:
        raise _refused(exc, x) from None
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelOptionError(f"the model outputs {shape} per image, not one score per class; "
                               f"attribution needs a classifier.")
    return out


def resolve_targets(target: Any, logits: torch.Tensor,
                    classes: Sequence[str] | None = None) -> torch.Tensor:
    """One class index per image: ``None``/``"top1"`` -> the predicted class; an int, a class
    name (with ``classes``), or one of those per image (list or tensor of N)."""
    n, k = logits.shape

    def one(t: Any) -> int:
        if isinstance(t, torch.Tensor) and t.dim() == 0:
            t = t.item()
        if isinstance(t, str):
            if classes is not None and t in classes:
                return list(classes).index(t)
            if t.lstrip("-").isdigit():
                t = int(t)
            else:
                known = ", ".join(list(classes)[:12]) if classes is not None else None
                raise ModelOptionError(
                    f"target {t!r} is not a class of the model" +
                    (f"; its classes are {known}{', ...' if len(classes) > 12 else ''}."
                     if known else "; give a class index from 0 to " f"{k - 1}."))
        if isinstance(t, bool) or not isinstance(t, int):
            raise ModelOptionError(f"target {t!r} is not a class index; give top1, a class "
                                   f"index from 0 to {k - 1} or one per image.")
        if not 0 <= t < k:
            raise ModelOptionError(f"target {t} is out of range: the model has {k} classes "
                                   f"(0 to {k - 1}).")
        return int(t)

    if target is None or (isinstance(target, str) and target.lower() == "top1"):
        return logits.detach().argmax(1)
    if isinstance(target, torch.Tensor) and target.dim() == 1 or \
            isinstance(target, (list, tuple)):
        ts = list(target)
        if len(ts) != n:
            raise ModelOptionError(f"{len(ts)} targets were given for {n} images; give one "
                                   f"per image, or one for all.")
        if any(t is None or (isinstance(t, str) and t.lower() == "top1") for t in ts):
            top = logits.detach().argmax(1)
            ts = [top[i] if t is None or (isinstance(t, str) and t.lower() == "top1") else t
                  for i, t in enumerate(ts)]
        return torch.tensor([one(t) for t in ts], device=logits.device)
    return torch.full((n,), one(target), dtype=torch.long, device=logits.device)


def _score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The sum of each image's target logit: its gradient is each image's own gradient."""
    return logits.gather(1, targets.view(-1, 1)).sum()


def _input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | Any,
                classes=None) -> tuple[torch.Tensor, torch.Tensor]:
    xx = x.clone().requires_grad_(True)
    logits = _logits(model, xx)
    t = targets if isinstance(targets, torch.Tensor) else resolve_targets(targets, logits,
                                                                            classes)
    (g,) = torch.autograd.grad(_score(logits, t), xx)
    return g, t


# --------------------------------------------------------------------------- guided ReLU

class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
if hasattr(F, "relu_"):
    _RELUS.add(F.relu_)


class _GuidedMode(TorchFunctionMode):
    """Every ReLU called while active (module, functional or in-place) is the guided one; an
    in-place ReLU becomes out-of-place (its result is what the caller uses)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS and args and isinstance(args[0], torch.Tensor):
            self.count += 1
            return _GuidedReLU.apply(args[0])
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- saliency

def _check_count(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ModelOptionError(f"{name}={v!r} is invalid: it must be a whole number >= {lo}.")
    return v


def _baseline(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(b, x.shape).clone()
    except RuntimeError:
        raise DataError(f"the baseline of shape {tuple(b.shape)} does not fit the input "
                        f"{tuple(x.shape)}.") from None


def saliency(model: nn.Module, x: torch.Tensor, target: Any = None, method: str = "grad", *,
             samples: int = 25, noise: float = 0.15, steps: int = 50,
             baseline: Any = None, window: int | None = None, stride: int | None = None,
             seed: int = 0, classes: Sequence[str] | None = None,
             batch_size: int = 64) -> torch.Tensor:
    """The attribution of the target class score to each input value (see the module doc).

    ``x``: the model's input, N x C x H x W (or C x H x W), already normalised. Returns raw
    values shaped like ``x`` (signed; take ``.abs()`` or the max over channels to draw).
    ``samples``/``noise``/``seed``: SmoothGrad; ``steps``/``baseline``: integrated gradients;
    ``window``/``stride``/``baseline``: occlusion (default window: an eighth of the shorter
    side, at least 2; stride half the window)."""
    if method not in METHODS:
        raise ModelOptionError(f"unknown saliency method {method!r}; choose one of "
                               f"{', '.join(METHODS)}.")
    x, single = _batch(x)
    x = x.to(_device(model))
    with _eval_mode(model):
        if method == "grad":
            g, _ = _input_grad(model, x, target, classes)
        elif method == "guided":
            mode = _GuidedMode()
            with mode:
                g, _ = _input_grad(model, x, target, classes)
            if mode.count == 0:
                raise ModelOptionError("guided backpropagation needs ReLU activations, and "
                                       "this model calls none; use grad or integrated.")
        elif method == "smoothgrad":
            samples = _check_count("samples", samples)
            if isinstance(noise, bool) or not isinstance(noise, (int, float)) or \
                    not 0 <= noise < math.inf:
                raise ModelOptionError(f"noise={noise!r} is invalid: it must be a number >= 0 "
                                       f"(a fraction of the image's value range).")
            with torch.no_grad():
                t = resolve_targets(target, _logits(model, x), classes)
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
            g = torch.zeros_like(x)
            for _ in range(samples):
                eps = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
                gi, _ = _input_grad(model, x + eps * noise * span, t)
                g += gi
            g /= samples
        elif method == "integrated":
            steps = _check_count("steps", steps)
            base = _baseline(baseline, x)
            with torch.no_grad():
                t = resolve_targets(target, _logits(model, x), classes)
            total = torch.zeros_like(x)
            for k in range(steps):
                a = (k + 0.5) / steps
                gi, _ = _input_grad(model, base + a * (x - base), t)
                total += gi
            g = (x - base) * total / steps
        else:
            g = _occlusion(model, x, target, window, stride, baseline, classes, batch_size)
    g = g.detach()
    return g[0] if single else g


def _occlusion(model, x, target, window, stride, baseline, classes, batch_size):
    n, c, h, w = x.shape
    if window is None:
        window = max(2, round(min(h, w) / 8))
    window = _check_count("window", window)
    if window > min(h, w):
        raise ModelOptionError(f"the occlusion window {window} is larger than the image "
                               f"({h}x{w}).")
    stride = _check_count("stride", stride if stride is not None else max(1, window // 2))
    base = _baseline(baseline, x)
    # like Captum: enough windows to reach the last row and column (the last one clipped)
    tops = list(range(0, math.ceil((h - window) / stride) * stride + 1, stride))
    lefts = list(range(0, math.ceil((w - window) / stride) * stride + 1, stride))
    with torch.no_grad():
        logits = _logits(model, x)
        t = resolve_targets(target, logits, classes)
        ref = logits.gather(1, t.view(-1, 1)).view(-1)
        total = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
        count = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
        boxes = [(i, j) for i in tops for j in lefts]
        per = max(1, batch_size // n)
        for start in range(0, len(boxes), per):
            chunk = boxes[start:start + per]
            xs = x.unsqueeze(0).repeat(len(chunk), 1, 1, 1, 1)
            for b, (i, j) in enumerate(chunk):
                xs[b, :, :, i:i + window, j:j + window] = base[:, :, i:i + window, j:j + window]
            out = _logits(model, xs.view(-1, c, h, w)).view(len(chunk), n, -1)
            drop = ref.view(1, n) - out.gather(2, t.view(1, n, 1).expand(len(chunk), n, 1))[..., 0]
            for b, (i, j) in enumerate(chunk):
                total[:, 0, i:i + window, j:j + window] += drop[b].view(n, 1, 1)
                count[:, :, i:i + window, j:j + window] += 1
    return (total / count.clamp(min=1)).expand(n, c, h, w).clone()


# --------------------------------------------------------------------------- Grad-CAM

@dataclass
class CAM:
    """A Grad-CAM result with what it was computed from."""

    maps: torch.Tensor               # N x H x W, upsampled to the input, raw values
    low: torch.Tensor                # N x h x w at the layer's resolution
    layer: str                       # the layer's name (a summary row name)
    targets: list[int]
    probabilities: list[float] = field(default_factory=list)   # softmax of each target
    shape: tuple[int, ...] = ()      # the layer's output shape (C, h, w)


def _auto_layer(table):
    """The last row of the summary whose output is a spatial map (more than one position)."""
    for row in reversed(table):
        shape = row.shape
        if row.has_map and len(shape) == 3 and shape[1] * shape[2] > 1:
            return row
    raise ModelOptionError("the model has no layer with a spatial map, so Grad-CAM has nothing "
                           "to explain; give a convolutional network.")


def _resolve_map_layer(model: nn.Module, layer: Any, input_size: tuple[int, ...]):
    """The summary row (a :class:`~deeparch.viz.layers.Layer`) Grad-CAM works at, and the
    table it comes from."""
    from .layers import layer_table, resolve_layer

    table = layer_table(model, input_size)
    row = _auto_layer(table) if layer is None or layer == "auto" else \
        resolve_layer(model, layer, table=table)
    shape = row.shape
    if not row.has_map or len(shape) != 3:
        from .layers import LayerError
        raise LayerError(f"layer {row.key} ({row.type}) outputs {shape} per image, not a "
                         f"spatial map C x H x W; Grad-CAM needs a convolutional layer (try "
                         f"layer='auto').")
    return row, table


def gradcam_result(model: nn.Module, x: torch.Tensor, target: Any = None,
                   layer: Any = "auto", *, plus: bool = False, relu: bool = True,
                   classes: Sequence[str] | None = None) -> CAM:
    """Grad-CAM (or Grad-CAM++) of ``x`` with the layer's name, the targets and their
    probabilities (:func:`gradcam` returns only the maps)."""
    x, _ = _batch(x)
    x = x.to(_device(model))
    from .layers import capture

    row, table = _resolve_map_layer(model, layer, tuple(x.shape[1:]))
    name = row.key
    with _eval_mode(model):
        xx = x.clone().requires_grad_(True)
        try:
            out, (a,) = capture(model, xx, [row], grad=True, table=table)
        except RuntimeError as exc:
            raise _refused(exc, x) from None
        logits = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ModelOptionError("the model does not output one score per class; Grad-CAM "
                                   "needs a classifier.")
        t = resolve_targets(target, logits, classes)
        (g,) = torch.autograd.grad(_score(logits, t), a)
        a, g = a.detach(), g.detach()
        if plus:
            g2, g3 = g.pow(2), g.pow(3)
            denom = 2 * g2 + (a * g3).sum((2, 3), keepdim=True)
            alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
            weights = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
        else:
            weights = g.mean((2, 3), keepdim=True)
        low = (weights * a).sum(1, keepdim=True)
        if relu:
            low = low.clamp(min=0)
        up = F.interpolate(low, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
        probs = torch.softmax(logits.detach().float(), 1).gather(1, t.view(-1, 1)).view(-1)
    return CAM(up[:, 0], low[:, 0], name, [int(v) for v in t], [float(p) for p in probs],
               tuple(a.shape[1:]))


def gradcam(model: nn.Module, x: torch.Tensor, target: Any = None, layer: Any = "auto", *,
            plus: bool = False, relu: bool = True,
            classes: Sequence[str] | None = None) -> torch.Tensor:
    """Grad-CAM maps of ``x`` (N x C x H x W) for ``target`` at ``layer``: N x H x W raw values
    (a C x H x W image gives H x W), bilinearly upsampled from the layer's map. ``plus``:
    Grad-CAM++; ``relu=False`` keeps the negative evidence. ``layer``: a summary row name
    (``features.conv3``), a row number (``#7``) or ``auto`` (the last spatial map)."""
    single = isinstance(x, torch.Tensor) and x.dim() == 3
    cam = gradcam_result(model, x, target, layer, plus=plus, relu=relu, classes=classes)
    return cam.maps[0] if single else cam.maps


# --------------------------------------------------------------------------- drawing

def plot_attribution(images: torch.Tensor, maps: torch.Tensor, path: str | os.PathLike, *,
                     titles: Sequence[str] | None = None, map_label: str = "map",
                     title: str | None = None, signed: bool = False, alpha: float = 0.5,
                     dpi: int = 100) -> Path:
    """One row per image: the image as the network saw it, the map (its own colour scale,
    raw values on the colour bar) and the map over the image. ``images``: N x C x H x W
    (uint8, or floats shown on their own range); ``maps``: N x H x W (or N x C x H x W, drawn
    as the max of |value| over channels). Written atomically; returns ``path``."""
    from matplotlib.figure import Figure

    from .plots import _save

    imgs = images if images.dim() == 4 else images[None]
    m = maps.detach().float().cpu()
    if m.dim() == 4:
        m = m.abs().amax(1)
        signed = False
    if m.dim() == 2:
        m = m[None]
    if m.shape[0] != imgs.shape[0]:
        raise DataError(f"{imgs.shape[0]} images but {m.shape[0]} maps were given.")
    n = imgs.shape[0]
    fig = Figure(figsize=(9.0, 2.6 * n + (0.4 if title else 0.0)), dpi=dpi,
                 layout="constrained")
    interp = "nearest" if imgs.shape[-1] < 64 else "antialiased"
    for i in range(n):
        im = imgs[i].detach().cpu()
        im = im.float() / 255.0 if im.dtype == torch.uint8 else im.float()
        if im.dtype != torch.uint8 and (im.min() < 0 or im.max() > 1):
            lo, hi = float(im.min()), float(im.max())
            im = (im - lo) / (hi - lo) if hi > lo else torch.zeros_like(im)
        arr = im.clamp(0, 1).permute(1, 2, 0).numpy()
        grey = arr.shape[2] == 1
        mi = m[i].numpy()
        lo, hi = float(mi.min()), float(mi.max())
        if signed:
            v = max(abs(lo), abs(hi)) or 1.0
            kw = dict(cmap="RdBu_r", vmin=-v, vmax=v)
        else:
            kw = dict(cmap="jet", vmin=lo, vmax=hi if hi > lo else lo + 1.0)
        ax = fig.add_subplot(n, 3, 3 * i + 1)
        ax.imshow(arr[:, :, 0] if grey else arr[:, :, :3], cmap="gray" if grey else None,
                  vmin=0, vmax=1, interpolation=interp)
        ax.set_title(titles[i] if titles else "input", fontsize=8)
        ax.set_axis_off()
        ax = fig.add_subplot(n, 3, 3 * i + 2)
        h = ax.imshow(mi, interpolation=interp, **kw)
        ax.set_title(f"{map_label}\nraw {lo:.3g} .. {hi:.3g}", fontsize=8)
        ax.set_axis_off()
        fig.colorbar(h, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        ax = fig.add_subplot(n, 3, 3 * i + 3)
        ax.imshow(arr[:, :, 0] if grey else arr[:, :, :3], cmap="gray" if grey else None,
                  vmin=0, vmax=1, interpolation=interp)
        ax.imshow(mi, alpha=alpha, interpolation="bilinear", **kw)
        ax.set_title("overlay (map scaled to its\nown min..max)" if not signed else
                     "overlay (symmetric scale)", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- files (CLI)

_NAMES = {"grad": "gradient", "smoothgrad": "SmoothGrad", "guided": "guided backprop",
          "integrated": "integrated gradients", "occlusion": "occlusion"}


def look_attribution(source: str | os.PathLike, output: str | os.PathLike, *,
                     kind: str = "gradcam", images: Sequence[str | os.PathLike] | None = None,
                     data: str | None = None, samples: Sequence[int] | None = None,
                     data_dir: str | None = None, method: str = "grad", target: Any = "top1",
                     layer: Any = "auto", plus: bool = False,
                     weights: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Any]:
    """`deeparch look gradcam|saliency`: images (files, or test samples of a data set) through
    a run (or a model and its weights), each fitted the way the network reads images (the
    notes say what was done), the maps drawn beside and over the images into ``output``.
    Every image is read and the layer and target checked before anything is written.
    Returns what was done: the layer, each image's target, its probability, and notes."""
    from .layers import load_network, load_shown

    if kind not in ("gradcam", "saliency"):
        raise ModelOptionError(f"kind must be gradcam or saliency, got {kind!r}.")
    if kind == "saliency" and method not in METHODS:
        raise ModelOptionError(f"unknown saliency method {method!r}; choose one of "
                               f"{', '.join(METHODS)}.")
    images, samples = list(images or []), list(samples or [])
    if images and samples:
        raise DataError("give either --image or --sample, not both.")
    net = load_network(source, weights, seed=seed)
    shown = [load_shown(net, image=f, data_dir=data_dir) for f in images] if images else \
        [load_shown(net, data=data, sample=k, data_dir=data_dir) for k in samples] if samples \
        else [load_shown(net, data=data, data_dir=data_dir)]     # says what to give
    notes = list(net.notes or []) + [n for s in shown for n in s.notes]
    x = torch.cat([s.x for s in shown]).to(_device(net.model))
    fitted = torch.stack([s.image for s in shown])
    model = net.model
    with _eval_mode(model), torch.no_grad():
        logits = _logits(model, x)
    classes = net.classes or [str(i) for i in range(logits.shape[1])]
    t = resolve_targets(target, logits, classes)
    probs = torch.softmax(logits.float(), 1)
    if kind == "gradcam":
        cam = gradcam_result(model, x, t, layer, plus=plus)
        maps = cam.maps
        short = "Grad-CAM++" if plus else "Grad-CAM"
        label = f"{short} at {cam.layer} ({'x'.join(map(str, cam.shape))}), bilinear " \
                f"upsampling"
        where = cam.layer
    else:
        # integrated gradients and occlusion start from / fill in a black image (pixel 0),
        # not the input's zero (which is the data set's mean colour after normalising)
        black = net.preprocess.normalise(torch.zeros_like(fitted[:1])).to(x.device)
        maps = saliency(model, x, t, method, seed=seed, baseline=black)
        short = f"{_NAMES[method]}, |value|" if x.shape[1] == 1 else \
            f"{_NAMES[method]}, max |value| over channels"
        label = short + (", baseline: a black image" if method in ("integrated", "occlusion")
                         else "")
        where = None
    rows = []
    titles = []
    for s, ti, pi in zip(shown, t.tolist(), probs):
        top = int(pi.argmax())
        name = Path(s.source).name if images else s.source
        truth = f", label {classes[s.label]}" if s.label is not None else ""
        titles.append(f"{name[:30]}{truth}\ntarget {classes[ti][:18]} (p={float(pi[ti]):.2f})"
                      + (f", top1 {classes[top][:14]}" if top != ti else ""))
        rows.append({"image": s.source, "target": classes[ti], "index": ti,
                     "probability": float(pi[ti]), "top1": classes[top]})
    plot_attribution(fitted, maps, output, titles=titles, map_label=short,
                     title=f"{net.name}: {label}")
    return {"model": net.name, "kind": kind, "method": None if kind == "gradcam" else method,
            "layer": where, "plot": str(output), "notes": notes, "images": rows}
