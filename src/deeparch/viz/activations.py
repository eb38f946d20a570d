"""Activation maps: what the layers of a network output for an image, and how to draw them.

* :func:`activations` ``(model, x, layers)`` -- the raw outputs of the named layers (rows of
  the summary: ``features.conv1``, ``#3``, ``layer4.*``, ``act@2``), exactly the tensors the
  forward pass computes: no scaling, no copy of the graph left behind, no hook left on the
  model (also after an error).
* :func:`plot_activations` -- the input and every chosen channel of a layer as one sheet,
  labelled with the layer's name and shape, or one row per layer (``all_layers``). Scaling
  happens here only, per channel or per layer, and the legend says which.
* :func:`plot_filters` -- the kernels of a convolution.
* :func:`plot_compare` -- the maps of one layer under two networks (two checkpoints; trained
  against re-initialised), side by side, with the correlation of each pair.
* ``look_maps`` / ``look_filters`` / ``look_compare`` -- the ``deeparch look`` actions: load
  a run or model, fit the image, draw, and return the sentence the command prints.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputSizeError, ShapeError, UnknownLayerError
from .layers import (Layer, LayerError, capture, layer_table, load_network, load_shown,
                     resolve_layer, resolve_layers)

__all__ = ["MAX_CHANNELS", "activations", "parse_channels", "plot_activations",
           "plot_compare", "plot_filters", "look_compare", "look_filters", "look_maps"]

MAX_CHANNELS = 64
"""Channels drawn per layer when none are chosen (a 512-channel layer is 64 cells)."""

MAX_ROWS = 128
"""Layers in one ``all_layers`` sheet."""

_DPI = 100


# --------------------------------------------------------------------------- the API

def _batch(model: nn.Module, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputSizeError(f"x must be a tensor N x C x H x W, got {type(x).__name__}.")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] == 0:
        raise InputSizeError(f"x must be an image C x H x W or a batch N x C x H x W, got "
                             f"shape {tuple(x.shape)}.")
    want = _expected(model)
    if want is not None and int(x.shape[1]) != want[0]:
        raise InputSizeError(
            f"x has {x.shape[1]} channel{'s' if x.shape[1] != 1 else ''} but the model reads "
            f"{want[0]} (it takes {_dims(want)}); a tensor is not converted here (`deeparch "
            f"look maps --image` fits image files).")
    return x


def _expected(model: nn.Module) -> tuple[int, ...] | None:
    from ..transfer.probe import _input_channels, _input_side

    c = _input_channels(model)
    side = _input_side(model)
    if c is None:
        return None
    return (c, *side) if side else (c,)


def _dims(shape) -> str:
    return "x".join(str(int(v)) for v in shape)


def _table(model: nn.Module, x: torch.Tensor) -> list[Layer]:
    try:
        return layer_table(model, tuple(x.shape[1:]))
    except ShapeError as exc:
        want = _expected(model)
        if want is not None and len(want) == 3 and tuple(want) != tuple(x.shape[1:]):
            raise InputSizeError(f"x is {_dims(x.shape[1:])} but the model takes "
                                 f"{_dims(want)}; a tensor is not resized here (`deeparch look "
                                 f"maps --image` resizes image files).") from None
        raise exc


def activations(model: nn.Module, x: torch.Tensor, layers, input_size=None
                ) -> dict[str, torch.Tensor]:
    """The raw outputs of ``layers`` for ``x`` (an image C x H x W or a batch N x C x H x W),
    as ``{layer key: tensor N x ...}`` in table order.

    ``layers``: names, row numbers or globs as the summary shows them (see
    :func:`~deeparch.viz.layers.resolve_layers`); a shared module's later uses are keyed
    ``name@2``. The model runs in eval mode without gradients, only as far as the last
    chosen row; the tensors are exactly what the forward pass computes (bit for bit what a
    forward hook sees), never rescaled. No hook is left behind, also after an error.
    ``input_size`` is accepted for symmetry with the rest of the API: the size is ``x``'s.
    """
    x = _batch(model, x)
    table = _table(model, x)
    rows = resolve_layers(model, layers, table=table)
    _, outs = capture(model, x, rows, stop=True, table=table)
    return {r.key: o for r, o in zip(rows, outs)}


def parse_channels(spec, count: int, layer: str = "the layer",
                   limit: int | None = MAX_CHANNELS) -> list[int]:
    """``'0:6'``, ``'0,3,5'``, ``'7'``, ``'all'``, a list or None (the first ``limit``) ->
    channel indices, each checked against ``count``."""
    if spec is None:
        return list(range(count if limit is None else min(count, limit)))
    if isinstance(spec, (list, tuple, range)):
        chans = [int(c) for c in spec]
    elif isinstance(spec, int) and not isinstance(spec, bool):
        chans = [spec]
    else:
        text = str(spec).strip().lower()
        if text == "all":
            return list(range(count))
        chans = []
        for part in (p.strip() for p in text.split(",")):
            if not re.fullmatch(r"\d*:\d*|\d+|", part):
                raise LayerError(f"channels {spec!r} is not a range A:B, a list 0,3,5 or "
                                 f"'all'.")
            if ":" in part:
                a, _, b = part.partition(":")
                lo = int(a) if a else 0
                hi = int(b) if b else count
                if hi <= lo:
                    raise LayerError(f"channels {spec!r}: the range {part} is empty; write "
                                     f"A:B with A < B, e.g. 0:6.")
                chans.extend(range(lo, min(hi, lo + 100_000)))
            elif part:
                chans.append(int(part))
    if not chans:
        raise LayerError(f"channels {spec!r} names no channel.")
    bad = [c for c in chans if not 0 <= c < count]
    if bad:
        raise LayerError(f"channel {bad[0]} is out of range: {layer} has {count} channel"
                         f"{'s' if count != 1 else ''} (0 to {count - 1}).")
    return list(dict.fromkeys(chans))


# --------------------------------------------------------------------------- drawing

class _Layout:
    """Cells of a fixed size in inches on a grid, a label column on the left and a title on
    top, wrapped to the width: cheap to draw (no layout engine), the same look at any size.
    Positions are kept in inches and re-applied when the title's height is known."""

    def __init__(self, nrow: int, ncol: int, cell: float, *, label: float = 0.0,
                 gap_x: float = 0.08, gap_y: float = 0.3, right: float = 0.1,
                 bottom: float = 0.12, min_width: float = 5.0, **_):
        from matplotlib.figure import Figure

        self.nrow, self.cell, self.label_w = nrow, cell, label
        self.gap_x, self.gap_y, self.bottom = gap_x, gap_y, bottom
        self.head = 0.5
        self.width = max(min_width, 0.1 + label + ncol * cell + (ncol - 1) * gap_x + right)
        self.fig = Figure(figsize=(self.width, 1.0), dpi=_DPI)
        self.items: list = []
        self._resize()

    def _resize(self) -> None:
        self.height = self.head + self.nrow * (self.cell + self.gap_y) + self.bottom
        self.fig.set_size_inches(self.width, self.height)
        for place, where in self.items:
            place(where())

    def _frac(self, x, top, w, h):
        return (x / self.width, 1 - (top + h) / self.height, w / self.width, h / self.height)

    def _box(self, r: int, c: float, rows: int = 1, w: float | None = None):
        x = 0.1 + self.label_w + c * (self.cell + self.gap_x)
        top = self.head + r * (self.cell + self.gap_y) + self.gap_y
        h = rows * self.cell + (rows - 1) * self.gap_y
        return self._frac(x, top, self.cell if w is None else w, h)

    def place(self, where):
        """An axes at ``where()`` (a function giving the box in figure fractions)."""
        ax = self.fig.add_axes(where())
        self.items.append((ax.set_position, where))
        return ax

    def ax(self, r: int, c: int, rows: int = 1):
        return self.place(lambda: self._box(r, c, rows))

    def text(self, r: int, text: str, fontsize: float = 6.5) -> None:
        def where():
            top = self.head + r * (self.cell + self.gap_y) + self.gap_y + self.cell / 2
            return ((0.1 + self.label_w - 0.08) / self.width, 1 - top / self.height)
        t = self.fig.text(*where(), text, ha="right", va="center", fontsize=fontsize)
        self.items.append((t.set_position, where))

    def colorbar(self, im, r: int, c: int) -> None:
        def where():
            x, y, _, h = self._box(r, c)
            return (x, y, 0.12 / self.width, h)
        cax = self.place(where)
        self.fig.colorbar(im, cax=cax).ax.tick_params(labelsize=6)

    def title(self, text: str, fontsize: float = 8) -> None:
        import textwrap

        chars = max(40, int((self.width - 0.2) * _DPI / (fontsize * 0.85)))
        lines = [w for line in text.splitlines() for w in (textwrap.wrap(line, chars) or [""])]
        self.head = 0.12 + len(lines) * fontsize * 1.3 / 72
        self.fig.text(0.1 / self.width, 1 - 0.06 / self.height, "\n".join(lines), ha="left",
                      va="top", fontsize=fontsize)
        self.items.append((self.fig.texts[-1].set_position,
                           lambda: (0.1 / self.width, 1 - 0.06 / self.height)))
        self._resize()


def _save(fig, path) -> Path:
    from .plots import _save as save
    return save(fig, path, _DPI)


def _show_input(ax, image: torch.Tensor) -> None:
    img = image.detach().cpu()
    if img.dtype != torch.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = ((img - lo) / (hi - lo) * 255 if hi > lo else img * 0).round().to(torch.uint8)
    a = img.permute(1, 2, 0).numpy()
    if a.shape[2] == 3:
        ax.imshow(a, interpolation="nearest")
    else:
        ax.imshow(a[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _show_map(ax, m: np.ndarray, lo: float, hi: float):
    if hi <= lo:
        hi = lo + 1e-12
    im = ax.imshow(m, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 1e4 else f"{v:.1e}"


def _map_rows(layer: Layer, out: torch.Tensor) -> np.ndarray:
    """One image's output of a layer as C x H x W floats; refuse a layer without a map."""
    t = out[0] if isinstance(out, torch.Tensor) else None
    if t is None or t.dim() != 3 or layer.record.whole_input:
        shape = _dims(t.shape) if t is not None else "several tensors"
        raise LayerError(f"layer {layer.key} ({layer.type}) outputs {shape} per image, not "
                         f"channels of a spatial map; choose a convolution, pooling or "
                         f"activation row before the classifier.")
    return t.detach().float().cpu().numpy()


def plot_activations(model: nn.Module, x: torch.Tensor, layers, path: str | os.PathLike, *,
                     channels=None, scale: str = "channel", all_layers: bool = False,
                     image: torch.Tensor | None = None, title: str | None = None,
                     per_row: int = 8) -> Path:
    """Draw the activation maps of ``layers`` for one image ``x`` (1 x C x H x W) as one PNG.

    One layer: the input, then each chosen channel (default: the first
    :data:`MAX_CHANNELS`), ``per_row`` to a row, under a title with the layer's row, name,
    type and output shape. Several layers (a glob), or ``all_layers=True`` (every row with a
    spatial map; ``layers`` then narrows them, None for all): one row per layer, its first
    ``per_row`` channels (or ``channels``). ``scale``: ``"channel"`` stretches each map to
    its own min..max (the range is written under it), ``"layer"`` gives each layer one grey
    scale (with a colour bar). ``image``: what to draw as the input (default ``x``
    itself, stretched). Written atomically; returns ``path``."""
    if scale not in ("channel", "layer"):
        raise LayerError(f"scale must be 'channel' or 'layer', got {scale!r}.")
    x = _batch(model, x)
    if x.shape[0] != 1:
        raise InputSizeError(f"plot_activations draws one image; x holds {x.shape[0]}.")
    table = _table(model, x)
    if all_layers:
        pool = table if layers is None else resolve_layers(model, layers, table=table)
        rows = [r for r in pool if r.has_map and len(r.shape) == 3 and r.shape[1] * r.shape[2] > 1]
        if not rows:
            raise LayerError("none of the chosen layers has a spatial map (larger than 1x1) "
                             "to draw.")
        if len(rows) > MAX_ROWS:
            raise LayerError(f"{len(rows)} layers have maps, more than {MAX_ROWS} rows on one "
                             f"sheet; narrow them with a glob (e.g. 'features.*conv*').")
    else:
        if layers is None:
            raise UnknownLayerError("name a layer (a name, a row number #3 or a glob), or ask "
                                    "for all layers.")
        rows = resolve_layers(model, layers, table=table)
    _, outs = capture(model, x, rows, stop=True, table=table)
    shown = image if image is not None else x[0]
    if len(rows) == 1 and not all_layers:
        maps = _map_rows(rows[0], outs[0])
        chans = parse_channels(channels, maps.shape[0], rows[0].key)
        return _sheet(shown, rows[0], maps, chans, path, scale, title, per_row)
    blocks = []
    all_maps = [_map_rows(r, o) for r, o in zip(rows, outs)]
    widest = max(m.shape[0] for m in all_maps)
    want = parse_channels(channels, widest, "the widest chosen layer", limit=per_row)
    if len(want) > MAX_CHANNELS:
        raise LayerError(f"{len(want)} channels per layer are too many for one row each; "
                         f"choose at most {MAX_CHANNELS} (e.g. 0:16).")
    for r, maps in zip(rows, all_maps):
        chans = [c for c in want if c < maps.shape[0]]   # the same channels of every layer
        if chans:
            blocks.append((r, maps, chans))
    if not blocks:
        raise LayerError(f"channels {channels!r} are out of range for every chosen layer.")
    return _rows_sheet(shown, blocks, path, scale, title)


def _layer_title(layer: Layer) -> str:
    return f"{layer.label}  ({layer.type}, {_dims(layer.shape)})"


def _legend(scale: str, lo: float | None = None, hi: float | None = None) -> str:
    if scale == "channel":
        return ("grey per channel: black = the map's min, white = its max (min..max under "
                "each map); raw values, nothing else rescaled")
    return (f"one grey scale for the layer: black = {_fmt(lo)}, white = {_fmt(hi)}; raw "
            f"values")


def _sheet(image, layer: Layer, maps: np.ndarray, chans: list[int], path, scale, title,
           per_row) -> Path:
    from .grid import GRID_MAX_IMAGES
    n = len(chans) + 1
    if n > GRID_MAX_IMAGES:
        raise LayerError(f"{n - 1} channels are more than {GRID_MAX_IMAGES - 1} on one sheet; "
                         f"choose fewer with channels (e.g. 0:64).")
    ncol = n if n <= per_row + 1 else per_row     # 8 channels and the input: one row
    nrow = math.ceil(n / ncol)
    cell = 1.25 if maps.shape[1] >= 8 else 1.0
    lines = 3 if title else 2
    g = _Layout(nrow, ncol, cell, right=0.6 if scale == "layer" else 0.1,
                gap_y=0.36 if scale == "channel" else 0.22, text_lines=lines)
    lo_l, hi_l = float(maps[chans].min()), float(maps[chans].max())
    ax = g.ax(0, 0)
    _show_input(ax, image)
    ax.set_title("input " + _dims(image.shape), fontsize=7, pad=2)
    im = None
    for k, c in enumerate(chans, 1):
        ax = g.ax(k // ncol, k % ncol)
        m = maps[c]
        if scale == "channel":
            lo, hi = float(m.min()), float(m.max())
            im = _show_map(ax, m, lo, hi)
            ax.set_xlabel(f"{_fmt(lo)}..{_fmt(hi)}", fontsize=6, labelpad=1)
        else:
            im = _show_map(ax, m, lo_l, hi_l)
        ax.set_title(f"ch {c}", fontsize=7, pad=2)
    if scale == "layer" and im is not None:
        g.colorbar(im, 0, ncol)
    shown = f"{len(chans)} of {maps.shape[0]} channels" if len(chans) < maps.shape[0] \
        else f"all {maps.shape[0]} channels"
    head = title + "\n" if title else ""
    g.title(f"{head}{_layer_title(layer)} - {shown}\n{_legend(scale, lo_l, hi_l)}")
    return _save(g.fig, path)


def _rows_sheet(image, blocks, path, scale, title) -> Path:
    ncol = max(len(ch) for _, _, ch in blocks)
    g = _Layout(len(blocks) + 1, ncol, 0.9, label=1.9, gap_y=0.22,
                text_lines=3 if title else 2)
    ax = g.ax(0, 0)
    _show_input(ax, image)
    g.text(0, f"input\n{_dims(image.shape)}", 7)
    for i, (layer, maps, chans) in enumerate(blocks, 1):
        lo_l, hi_l = float(maps[chans].min()), float(maps[chans].max())
        rng = "" if scale == "channel" else f"\n{_fmt(lo_l)}..{_fmt(hi_l)}"
        g.text(i, f"{layer.label}\n{layer.type} {_dims(layer.shape)}{rng}")
        for k, c in enumerate(chans):
            ax = g.ax(i, k)
            m = maps[c]
            lo, hi = (float(m.min()), float(m.max())) if scale == "channel" else (lo_l, hi_l)
            _show_map(ax, m, lo, hi)
            const = f" (all {_fmt(float(m.flat[0]))})" if m.min() == m.max() else ""
            ax.set_title(f"ch {c}{const}", fontsize=5.5, pad=1.5)
    legend = ("grey per channel: black = each map's min, white = its max" if scale == "channel"
              else "one grey scale per layer: black = the layer's min, white = its max "
                   "(the range under its name)")
    head = title + "\n" if title else ""
    g.title(f"{head}{len(blocks)} layers, their first channels\n{legend}; raw values")
    return _save(g.fig, path)


# --------------------------------------------------------------------------- filters

def _conv_weight(layer: Layer) -> torch.Tensor:
    mod = layer.module
    w = getattr(mod, "weight", None) if mod is not None else None
    if not isinstance(mod, nn.modules.conv._ConvNd) or not isinstance(w, torch.Tensor):
        what = "a functional operation" if layer.record.functional else layer.type
        raise LayerError(f"layer {layer.key} is {what}, not a convolution with weights of its "
                         f"own; give a Conv2d row (look at `deeparch summary`).")
    if w.dim() != 4:
        raise LayerError(f"layer {layer.key} is a {w.dim() - 2}-d convolution; filters are "
                         f"drawn for 2-d ones.")
    return w.detach().float().cpu()


def plot_filters(model: nn.Module, layer, path: str | os.PathLike, input_size=None, *,
                 channels=None, title: str | None = None, per_row: int = 8) -> Path:
    """Draw the kernels of convolution ``layer``: one colour cell per filter when it reads
    three channels (RGB), one grey cell when it reads one, else a row per filter with a
    cell per input channel (up to 16; blue negative, red positive). Each filter is scaled by
    its own largest ``|w|``, so grey (or white) is 0. ``channels``: which filters (default
    the first :data:`MAX_CHANNELS`). Returns ``path``."""
    row = resolve_layer(model, layer, input_size)
    w = _conv_weight(row)
    o, i, kh, kw = w.shape
    chans = parse_channels(channels, o, row.key)
    head = (title + "\n") if title else ""
    desc = (f"{head}{row.label} ({row.type}): {o} filters of {i}x{kh}x{kw}"
            + (f", {len(chans)} shown" if len(chans) < o else ""))
    if i in (1, 3):
        ncol = max(1, min(per_row, len(chans)))
        nrow = math.ceil(len(chans) / ncol)
        g = _Layout(nrow, ncol, 0.9, gap_y=0.22, text_lines=3 if title else 2)
        for k, c in enumerate(chans):
            ax = g.ax(k // ncol, k % ncol)
            f = w[c]
            s = float(f.abs().max()) or 1.0
            if i == 3:
                ax.imshow((f / s * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy(),
                          interpolation="nearest")
            else:
                ax.imshow(f[0].numpy(), cmap="gray", vmin=-s, vmax=s, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{c}  |w|<={_fmt(s)}", fontsize=6, pad=2)
        legend = ("RGB, each filter scaled by its largest |w|: mid grey = 0" if i == 3 else
                  "grey, each filter scaled by its largest |w|: mid grey = 0, white positive")
    else:
        shown_in = min(i, 16)
        chans = chans[:32] if channels is None else chans
        nrow, ncol = len(chans), shown_in
        from matplotlib import colormaps

        cell = 0.45 if kh <= 7 else 0.7
        # one mosaic image (one axes: fast for hundreds of kernels), white between kernels
        mosaic = np.ones((nrow * (kh + 1) - 1, ncol * (kw + 1) - 1, 3))
        cmap = colormaps["RdBu_r"]
        for r, c in enumerate(chans):
            s = float(w[c].abs().max()) or 1.0
            for j in range(ncol):
                v = (w[c, j].numpy() / s + 1) / 2
                mosaic[r * (kh + 1):r * (kh + 1) + kh, j * (kw + 1):j * (kw + 1) + kw] = \
                    cmap(v)[..., :3]
        width, height = ncol * cell, nrow * cell
        g = _Layout(1, 1, 1.0, label=0.35, gap_y=0.15, bottom=0.1)
        g.width = max(g.width, 0.45 + width + 0.1)
        g.cell = height
        ax = g.place(lambda: g._frac(0.45, g.head + g.gap_y, width, height))
        ax.imshow(mosaic, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        for r, c in enumerate(chans):
            ax.text(-0.6, r * (kh + 1) + (kh - 1) / 2, str(c), ha="right", va="center",
                    fontsize=6)
        for j in range(ncol):
            ax.text(j * (kw + 1) + (kw - 1) / 2, -0.8, f"in {j}", ha="center", va="bottom",
                    fontsize=5.5)
        legend = (f"rows: filters (first {len(chans)}), columns: input channels "
                  f"{'(first 16)' if i > 16 else ''}; blue < 0 < red, each filter scaled by its "
                  f"largest |w|")
    g.title(f"{desc}\n{legend}")
    return _save(g.fig, path)


# --------------------------------------------------------------------------- compare

def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def plot_compare(model_a: nn.Module, model_b: nn.Module, x_a: torch.Tensor, layer,
                 path: str | os.PathLike, *, x_b: torch.Tensor | None = None,
                 names: Sequence[str] = ("A", "B"), channels=None, scale: str = "channel",
                 image: torch.Tensor | None = None, title: str | None = None) -> Path:
    """The maps of ``layer`` for one image under two networks of the same architecture
    (two checkpoints; trained against re-initialised), a row each, channel under channel;
    over each pair its Pearson correlation ``r``. ``x_b``: the image as ``model_b`` reads it
    (default ``x_a``). Returns ``path``."""
    if scale not in ("channel", "layer"):
        raise LayerError(f"scale must be 'channel' or 'layer', got {scale!r}.")
    x_a = _batch(model_a, x_a)
    x_b = _batch(model_b, x_b if x_b is not None else x_a)
    ta, tb = _table(model_a, x_a), _table(model_b, x_b)
    ra = resolve_layer(model_a, layer, table=ta)
    rb = resolve_layer(model_b, ra.key, table=tb) if any(r.key == ra.key for r in tb) else None
    if rb is None or rb.shape != ra.shape:
        raise LayerError(f"layer {ra.key} of {names[0]} has no match of the same shape in "
                         f"{names[1]}; compare two networks of the same architecture.")
    _, (oa,) = capture(model_a, x_a, [ra], stop=True, table=ta)
    _, (ob,) = capture(model_b, x_b, [rb], stop=True, table=tb)
    ma, mb = _map_rows(ra, oa), _map_rows(rb, ob)
    chans = parse_channels(channels, ma.shape[0], ra.key, limit=8)
    ncol = len(chans) + 1
    g = _Layout(2, ncol, 1.0, label=1.7, gap_y=0.34, text_lines=3 if title else 2)
    shown = image if image is not None else x_a[0]
    ax = g.ax(0, 0)
    _show_input(ax, shown)
    ax.set_title("input", fontsize=7, pad=2)
    rs = []
    for row, (name, maps) in enumerate(((names[0], ma), (names[1], mb))):
        g.text(row, _wrap(name, 24), 7)
        lo_l, hi_l = float(maps[chans].min()), float(maps[chans].max())
        for k, c in enumerate(chans, 1):
            ax = g.ax(row, k)
            m = maps[c]
            lo, hi = (float(m.min()), float(m.max())) if scale == "channel" else (lo_l, hi_l)
            _show_map(ax, m, lo, hi)
            if row == 0:
                r = _corr(ma[c], mb[c])
                rs.append(r)
                ax.set_title(f"ch {c}" + (f"  r={r:+.2f}" if r is not None else "  r=-"),
                             fontsize=6.5, pad=2)
    valid = [r for r in rs if r is not None]
    mean = f"mean r = {np.mean(valid):+.2f}" if valid else "r undefined (constant maps)"
    legend = ("grey per map (its own min..max)" if scale == "channel" else
              "one grey scale per network's layer")
    head = title + "\n" if title else ""
    g.title(f"{head}{_layer_title(ra)}; r: Pearson correlation of the two maps, {mean}"
            f"\n{legend}; raw values")
    return _save(g.fig, path)


def _wrap(text: str, n: int) -> str:
    words, lines, cur = re.split(r"(?<=[ /(])", text), [], ""
    for w in words:
        if len(cur) + len(w) > n and cur:
            lines.append(cur.rstrip())
            cur = ""
        cur += w
    lines.append(cur.rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- the CLI actions

def _notes(lines: list[str]) -> str:
    return "".join(f"note: {n}\n" for n in lines)


def look_maps(source, layer, output, *, image=None, data=None, sample=None, data_dir=None,
              channels=None, all_layers: bool = False, scale: str = "channel",
              weights=None) -> str:
    """`deeparch look maps`: load, fit the image, draw; returns what the command prints."""
    if layer is None and not all_layers:
        raise UnknownLayerError("name a layer with --layer (a name, a row number #3 or a "
                                "glob), or give --all-layers.")
    net = load_network(source, weights)
    shown = load_shown(net, image, data, sample, data_dir)
    what = shown.source if shown.label is None or not net.classes else \
        f"{shown.source} ({net.classes[shown.label]})"
    plot_activations(net.model, shown.x, layer, output, channels=channels, scale=scale,
                     all_layers=all_layers, image=shown.image,
                     title=f"{net.name}: {what}")
    return f"{_notes((net.notes or []) + shown.notes)}maps: {output}"


def look_filters(source, layer, output, *, weights=None, channels=None) -> str:
    net = load_network(source, weights)
    plot_filters(net.model, layer, output, net.input_size, channels=channels, title=net.name)
    return f"{_notes(net.notes or [])}filters: {output}"


def look_compare(source_a, source_b, layer, output, *, image=None, data=None, sample=None,
                 data_dir=None, channels=None, scale: str = "channel") -> str:
    a = load_network(source_a)
    b = load_network(source_b)
    if tuple(a.input_size) != tuple(b.input_size):
        raise InputSizeError(f"{a.source} takes {_dims(a.input_size)} and {b.source} "
                             f"{_dims(b.input_size)}; compare networks of one architecture.")
    sa = load_shown(a, image, data, sample, data_dir)
    sb = load_shown(b, image, data, sample, data_dir)
    what = sa.source if sa.label is None or not a.classes else \
        f"{sa.source} ({a.classes[sa.label]})"
    plot_compare(a.model, b.model, sa.x, layer, output, x_b=sb.x, names=(a.name, b.name),
                 channels=channels, scale=scale, image=sa.image, title=what)
    return f"{_notes(sa.notes)}compare: {output}"
