"""Training pictures: accuracy and loss curves (train vs validation, like the slides'
Keras plots) and the confusion matrix. PNG files through matplotlib's Agg, written
atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from ..io import atomic_path


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    return target


def _records(history: Any) -> list[dict[str, Any]]:
    rows = history.to_list() if hasattr(history, "to_list") else list(history)
    if not rows:
        raise DataError("the history is empty: there is nothing to plot yet.")
    return rows


def plot_history(history: Any, path: str | os.PathLike, title: str | None = None,
                 dpi: int = 100) -> Path:
    """Two panels, accuracy and loss per epoch, training vs validation; returns ``path``.

    ``history``: a :class:`~deeparch.train.History` or a list of epoch dicts with
    ``epoch``, ``loss``, ``accuracy`` and optionally ``val_loss`` / ``val_accuracy``.
    """
    from matplotlib.figure import Figure

    rows = _records(history)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    fig = Figure(figsize=(10, 4), dpi=dpi)
    for i, (key, label) in enumerate((("accuracy", "accuracy"), ("loss", "loss"))):
        ax = fig.add_subplot(1, 2, i + 1)
        train = [r.get(key) for r in rows]
        val = [r.get(f"val_{key}") for r in rows]
        marker = "o" if len(rows) <= 30 else None
        if any(v is not None for v in train):
            ax.plot(epochs, [float("nan") if v is None else v for v in train], marker=marker,
                    markersize=3, label=f"training {label}")
        if any(v is not None for v in val):
            ax.plot(epochs, [float("nan") if v is None else v for v in val], marker=marker,
                    markersize=3, label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"training and validation {label}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _fit_title(fig, ax, text: str) -> None:
    """Set ``text`` as the axes title, wrapped at word boundaries until every line fits
    inside the figure (a small figure for 2 or 3 classes cut a long title at both ends)."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    width = max(len(line) for line in text.splitlines() or [""])
    while True:
        wrapped = "\n".join(textwrap.fill(line, width) for line in text.splitlines())
        title = ax.set_title(wrapped)
        fig.tight_layout()
        box = title.get_window_extent(renderer)
        inside = box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
        if inside or width <= 12:
            return
        # shrink in proportion to the overflow, by at least one character
        width = max(12, min(width - 1, int(width * fig.bbox.width / box.width * 0.95)))


def confusion_figure(cm: Any, classes: Sequence[str] | None = None, title: str | None = None,
                     normalize: bool = False, dpi: int = 100):
    """The matplotlib ``Figure`` that :func:`plot_confusion` saves."""
    import numpy as np
    from matplotlib.figure import Figure

    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise DataError(f"a confusion matrix must be square K x K, got shape {m.shape}.")
    k = m.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise DataError(f"the confusion matrix has {k} classes but {len(names)} names were given.")
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize else m
    side = min(16.0, max(4.5, 0.45 * k + 2.5))
    fig = Figure(figsize=(side, side * 0.9), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= 30:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=45 if max(len(n) for n in names) > 2 else 0,
                           ha="right" if max(len(n) for n in names) > 2 else "center",
                           fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
        top = shown.max() if shown.size else 0
        for i in range(k):
            for j in range(k):
                v = shown[i, j]
                if v == 0 and i != j:
                    continue
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = m.sum()
    acc = float(np.trace(m) / total) if total else 0.0
    _fit_title(fig, ax, title or f"confusion matrix (accuracy {acc:.2%}, {int(total)} samples)")
    return fig


def plot_confusion(cm: Any, classes: Sequence[str] | None, path: str | os.PathLike,
                   title: str | None = None, normalize: bool = False, dpi: int = 100) -> Path:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map with counts.

    ``normalize=True`` shows each row as fractions of that class. A title too long for the
    figure is wrapped onto more lines."""
    return _save(confusion_figure(cm, classes, title, normalize, dpi), path, dpi)


__all__ = ["confusion_figure", "plot_confusion", "plot_history"]
