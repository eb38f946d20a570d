"""The record of a run, epoch by epoch (Keras' ``History``), and a tiny progress bar."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

from ..io import write_text

KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class History:
    """One dict per finished epoch: ``epoch`` (1-based), ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy`` (``None`` without a validation split), ``lr`` (the
    rate of the epoch's last step) and ``seconds``.

    ``history[-1]`` is the last epoch, ``history.history['val_accuracy']`` the Keras view
    (a dict of lists), ``history.to_json()`` what ``history.json`` holds.
    """

    def __init__(self, epochs: Iterable[dict[str, Any]] = ()):
        self.epochs: list[dict[str, Any]] = [dict(e) for e in epochs]

    def append(self, record: dict[str, Any]) -> None:
        self.epochs.append(dict(record))

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.epochs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.epochs[i]

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(0 epochs)"
        last = self.epochs[-1]
        return f"History({len(self)} epochs, last: {format_epoch(last)})"

    @property
    def history(self) -> dict[str, list[Any]]:
        keys = list(KEYS) + sorted({k for e in self.epochs for k in e} - set(KEYS))
        return {k: [e.get(k) for e in self.epochs] for k in keys if k != "epoch"}

    def monitor_key(self) -> str:
        """``val_accuracy`` when the run has validation, else ``accuracy``."""
        if self.epochs and self.epochs[-1].get("val_accuracy") is not None:
            return "val_accuracy"
        return "accuracy"

    def best(self, metric: str | None = None) -> dict[str, Any] | None:
        """The epoch record with the highest ``metric`` (lowest for a ``*loss`` metric);
        the earliest on ties; ``None`` for an empty history."""
        metric = metric or self.monitor_key()
        rows = [e for e in self.epochs if e.get(metric) is not None]
        if not rows:
            return None
        sign = -1.0 if metric.endswith("loss") else 1.0
        return max(rows, key=lambda e: (sign * e[metric], -e["epoch"]))

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.epochs]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_list(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "History":
        return cls(json.loads(text))

    def to_csv(self) -> str:
        buf = io.StringIO()
        keys = list(KEYS) + sorted({k for e in self.epochs for k in e} - set(KEYS))
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        for e in self.epochs:
            w.writerow({k: ("" if e.get(k) is None else e.get(k)) for k in keys})
        return buf.getvalue()

    def save(self, json_path: str | os.PathLike | None = None,
             csv_path: str | os.PathLike | None = None) -> None:
        """Write ``history.json`` and/or ``log.csv``, each atomically."""
        if json_path is not None:
            write_text(json_path, self.to_json() + "\n")
        if csv_path is not None:
            write_text(csv_path, self.to_csv())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def format_epoch(e: dict[str, Any], total: int | None = None) -> str:
    """``epoch 3/30  loss 0.1234  acc 0.9650  val_loss 0.1500  val_acc 0.9600  lr 1.00e-03  0.8s``"""
    head = f"epoch {e.get('epoch')}" + (f"/{total}" if total else "")
    parts = [head, f"loss {_fmt(e.get('loss'))}", f"acc {_fmt(e.get('accuracy'))}"]
    if e.get("val_loss") is not None:
        parts += [f"val_loss {_fmt(e.get('val_loss'))}", f"val_acc {_fmt(e.get('val_accuracy'))}"]
    lr = e.get("lr")
    parts.append(f"lr {lr:.2e}" if isinstance(lr, float) else f"lr {lr}")
    parts.append(f"{e.get('seconds', 0.0):.1f}s")
    return "  ".join(parts)


class ProgressBar:
    """The epoch's progress bar: tqdm on a terminal (stderr), silent when not a TTY.

    tqdm rather than a hand-drawn line: it fits the terminal's width, smooths the rate and
    the time left, and stays out of the way of log lines. It is imported only when a bar
    is shown, and it costs microseconds per update, once per training step.

    ``update(n, **postfix)``: values may be callables, evaluated only when the bar is
    redrawn (at most ~10 times a second), so a value that needs a device sync costs
    nothing on the other steps. ``close()`` clears the bar.
    """

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, width: int = 24):
        self.total = max(1, int(total))
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.n = 0
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, file=self.stream, leave=False,
                             dynamic_ncols=True, mininterval=0.1, ascii=" .#",
                             bar_format="{desc} [{bar:24}] {n_fmt}/{total_fmt}  "
                                        "{elapsed}<{remaining}  {postfix}")

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        bar = self._bar
        if bar is None:
            return
        # tqdm redraws inside update() only when mininterval has passed (its clock is
        # time.time): set the postfix then, and only then; always draw the last step
        last = self.n >= self.total
        if postfix and (last or time.time() - bar.last_print_t >= bar.mininterval):
            bar.set_postfix_str("  ".join(f"{k} {_fmt(v() if callable(v) else v)}"
                                          for k, v in postfix.items()), refresh=False)
        bar.update(n)
        if last:
            bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["History", "KEYS", "ProgressBar", "format_epoch"]
