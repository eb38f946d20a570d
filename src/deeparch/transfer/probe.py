"""Where to cut, measured: a linear probe at every cut point of a frozen network.

:func:`probe` ``(model, train, test)`` answers the transfer question "up to which layer are
these features worth keeping?" the way the seeds answer it, by experiment: for each cut
point (every point :func:`~deeparch.transfer.cut_points` lists, or the names given) it
trains a linear softmax classifier on the frozen network's features there and measures
train and test accuracy.

How, and why that way:

* **Features once, in one pass.** The network up to the deepest requested point runs once
  over the training and the test images (eval mode, no gradients, in batches of
  ``batch_size``); a forward hook at each cut point keeps that point's output, reduced at
  once to a vector per image, so memory holds ``images x feature size`` floats per point,
  never a feature map. The outputs are the network's own (the hooks sit on its modules;
  :func:`~deeparch.transfer.cut` checks each name).
* **Spatial maps are global-average-pooled** (``pool="avg"``, the default: a map of
  ``C x H x W`` gives ``C`` features) or flattened (``pool="flatten"``) up to
  ``max_features`` values, beyond which the map is average-pooled to the largest
  ``s x s`` grid that fits. Each row says which (``pooling``). Vector outputs are used as
  they are.
* **The probe is multinomial logistic regression**, fitted by full-batch L-BFGS (strong
  Wolfe line search, ``epochs`` iterations at most) from zero weights on features
  standardised with the training split's mean and standard deviation: a convex problem
  with one optimum, so the result depends on the data and the weight decay only, and is
  bit-identical for the same inputs on CPU. The L2 weight decay (on the weights, not the
  bias) is chosen per cut point from :data:`DECAYS` by the accuracy on a stratified 20 %
  of the training features held out with ``seed`` (ties go to the larger decay; the decays
  are fitted strongest first, each starting from the previous solution); the probe is then
  refitted on all training features with it. Give ``weight_decay`` to fix
  it instead. The test split is never looked at before the final measurement.
* **Duplicates are dropped by default**: a container's output is its last layer's, so of
  such a pair only one name is kept (a Network's stage name where there is one); and a
  point whose stored features equal the previous point's exactly (a pooling layer after
  global average pooling) is reported in ``notes`` instead of being fitted again. Names
  given with ``at`` are all probed.

The default image preparation is ``deeparch train``'s: images are resized to the network's
input size (:func:`~deeparch.transfer.preprocess.fit_images`, straight resize: the whole
image is the object), their channels matched to the first layer's, and normalised with the
training images' channel statistics; pass the weights' :class:`Preprocess` (a run's
mean/std, a :class:`LoadReport`'s ``preprocess``) to normalise as they were trained.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ModelOptionError
from .preprocess import Preprocess, fit_images, match_channels
from .surgery import cut, cut_points

__all__ = ["DECAYS", "ProbeResult", "ProbeRow", "probe"]

#: The weight decays the held-out split chooses from (on standardised features).
DECAYS = (1e-1, 1e-2, 1e-3, 1e-4)
VAL_FRACTION = 0.2
POOLS = ("avg", "flatten")


# --------------------------------------------------------------------------- results

@dataclasses.dataclass
class ProbeRow:
    """One cut point: what the linear probe there saw and scored."""

    cut: str                       # the cut point, as cut_points names it
    output_shape: tuple[int, ...]  # the network's output there, per image
    feature_size: int              # what the probe reads, after pooling
    pooling: str                   # "global average", "flatten", "average to 4x4", "none"
    frozen_params: int             # parameters of the network up to the cut
    trainable_params: int          # the linear head's weights and biases
    train_accuracy: float
    test_accuracy: float
    val_accuracy: float | None     # on the held-out part of the training split
    weight_decay: float
    seconds: float                 # fitting this probe (the features are shared)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output_shape"] = list(self.output_shape)
        return d


@dataclasses.dataclass
class ProbeResult:
    """What :func:`probe` measured: one :class:`ProbeRow` per cut point, in network order."""

    model: str
    data: str
    rows: list[ProbeRow]
    classes: list[str]
    n_train: int
    n_test: int
    input_size: tuple[int, int, int]
    pool: str
    preprocess: Preprocess
    epochs: int
    seed: int
    feature_seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> ProbeRow:
        """The row with the highest test accuracy (the earliest of equals)."""
        return max(self.rows, key=lambda r: r.test_accuracy)

    @property
    def pooling_sentence(self) -> str:
        if self.pool == "avg":
            return "spatial feature maps are global-average-pooled to one value per channel"
        return "spatial feature maps are flattened (average-pooled first where too large)"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "classes": list(self.classes),
                "n_train": self.n_train, "n_test": self.n_test,
                "input_size": list(self.input_size), "pool": self.pool,
                "pooling": self.pooling_sentence, "preprocess": self.preprocess.to_dict(),
                "solver": "multinomial logistic regression, full-batch L-BFGS on standardised "
                          "features; weight decay chosen on a held-out 20% of the training "
                          "split",
                "epochs": self.epochs, "seed": self.seed,
                "feature_seconds": round(self.feature_seconds, 4),
                "best": self.best.cut if self.rows else None,
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes)}

    def table(self) -> str:
        head = ("cut point", "output", "features", "frozen params", "head params",
                "train acc", "test acc", "decay", "seconds")
        body = [(r.cut, "x".join(map(str, r.output_shape)), f"{r.feature_size:,}",
                 f"{r.frozen_params:,}", f"{r.trainable_params:,}", f"{r.train_accuracy:.2%}",
                 f"{r.test_accuracy:.2%}", f"{r.weight_decay:g}", f"{r.seconds:.2f}")
                for r in self.rows]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = [f"linear probe of {self.model} on {self.data}: {self.n_train} training and "
                 f"{self.n_test} test images at {'x'.join(map(str, self.input_size))}, "
                 f"{len(self.classes)} classes",
                 f"{self.pooling_sentence}; {self.preprocess.describe()}"]
        lines += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                  for line in [head, *body]]
        if self.rows:
            b = self.best
            lines.append(f"best: {b.cut} ({b.test_accuracy:.2%} test accuracy, "
                         f"{b.feature_size:,} features); features took "
                         f"{self.feature_seconds:.2f} s")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __str__ = table

    def plot(self, path: str | os.PathLike, dpi: int = 100) -> Path:
        """Train and test accuracy per cut point, each test point annotated with its
        feature size; a PNG written atomically. Returns ``path``."""
        from matplotlib.figure import Figure

        from ..viz.plots import _save

        if not self.rows:
            raise DataError("the probe has no rows: there is nothing to plot.")
        n = len(self.rows)
        fig = Figure(figsize=(max(6.0, 0.55 * n + 2.5), 5.0), dpi=dpi)
        ax = fig.add_subplot(1, 1, 1)
        xs = list(range(n))
        test = [r.test_accuracy for r in self.rows]
        ax.plot(xs, [r.train_accuracy for r in self.rows], marker="o", markersize=4,
                linestyle="--", label="train accuracy")
        ax.plot(xs, test, marker="o", markersize=5, label="test accuracy")
        for x, r in zip(xs, self.rows):
            ax.annotate(f"{r.feature_size:,}", (x, r.test_accuracy), textcoords="offset points",
                        xytext=(0, -14), ha="center", fontsize=7, color="dimgray")
        chance = 1.0 / max(1, len(self.classes))
        ax.axhline(chance, color="gray", linewidth=0.8, linestyle=":",
                   label=f"chance (1/{len(self.classes)})")
        b = self.best
        ax.plot([self.rows.index(b)], [b.test_accuracy], marker="*", markersize=14,
                color="tab:red", linestyle="none", label=f"best: {_short(b.cut)}")
        ax.set_xticks(xs)
        ax.set_xticklabels([_short(r.cut) for r in self.rows], rotation=45, ha="right",
                           fontsize=8)
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel("accuracy of a linear classifier")
        ax.set_xlabel("cut point (numbers: features the probe reads)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        how = "global-average-pooled" if self.pool == "avg" else "flattened"
        ax.set_title(f"linear probe of {self.model} on {self.data} (features {how})",
                     fontsize=10)
        fig.tight_layout()
        return _save(fig, path, dpi)


def _short(name: str) -> str:
    return name[len("features."):] if name.startswith("features.") else name


# --------------------------------------------------------------------------- helpers

def _label(model: nn.Module) -> str:
    return str(getattr(model, "model_name", None) or type(model).__name__)


def _input_channels(model: nn.Module) -> int | None:
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return int(size[0])
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
        if isinstance(m, nn.Linear):
            return None
    return None


def _input_side(model: nn.Module) -> tuple[int, int] | None:
    """The input size the model is built for: a pattern's INPUT, a registered model's
    default input; None when unknown."""
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return int(size[1]), int(size[2])
    name = getattr(model, "model_name", None)
    if isinstance(name, str):
        from ..models.registry import list_models, model_info
        if name in list_models():
            s = model_info(name).input_size
            return int(s[1]), int(s[2])
    return None


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _points(model: nn.Module, at: Sequence[str | int] | str | int | None
            ) -> list[tuple[str, bool]]:
    """(full cut-point name, given explicitly) in network order."""
    order = cut_points(model)           # a model that cannot be cut says so here
    index = {n: i for i, n in enumerate(order)}
    if at is None:
        stages = {f"features.{s}" for s in getattr(model, "stage_names", [])
                  if isinstance(s, str)}
        kept: list[str] = []
        for name in order:
            prev = kept[-1] if kept else None
            if prev is not None and prev.startswith(name + "."):
                # a container right after its last layer computes the same output: keep
                # one name, the stage's where it is a stage
                if name in stages:
                    kept[-1] = name
                continue
            kept.append(name)
        return [(n, False) for n in kept]
    names = [at] if isinstance(at, (str, int)) else list(at)
    if not names:
        raise ModelOptionError("at lists no cut point; leave it out to probe every one, or "
                               "name some (deeparch.transfer.cut_points lists them).")
    full: list[str] = []
    for name in names:
        c = cut(model, name)             # unknown names raise UnknownLayerError, listing all
        if c.after not in full:
            full.append(c.after)
    full.sort(key=lambda n: index[n])
    return [(n, True) for n in full]


def _reduce(out: torch.Tensor, pool: str, cap: int) -> tuple[torch.Tensor, str]:
    out = out.detach()
    if out.dim() == 2:
        return out.to(torch.float32, copy=True), "none"
    if out.dim() < 2:
        raise ModelOptionError(f"a cut point gives {out.dim()}-D outputs; a probe needs one "
                               f"feature vector or map per image.")
    spatial = out.shape[2:]
    if pool == "avg":
        return out.float().mean(dim=tuple(range(2, out.dim()))), "global average"
    size = math.prod(out.shape[1:])
    if size <= cap:
        return out.reshape(len(out), -1).to(torch.float32, copy=True), "flatten"
    c = out.shape[1]
    if out.dim() == 4 and c < cap:
        s = max(1, min(int(math.isqrt(cap // c)), min(spatial)))
        if s > 1:
            pooled = F.adaptive_avg_pool2d(out.float(), s)
            return pooled.reshape(len(out), -1), f"average to {s}x{s}"
    return out.float().mean(dim=tuple(range(2, out.dim()))), "global average"


def _hook_outputs(front: nn.Module, modules: "OrderedDict[str, nn.Module]", x: torch.Tensor,
                  pool: str, cap: int) -> dict[str, tuple[torch.Tensor, str, tuple[int, ...]]]:
    got: dict[str, tuple[torch.Tensor, str, tuple[int, ...]]] = {}
    handles = []

    def hook_for(name: str):
        def hook(module, args, output):
            if name in got:              # a module run twice: its first output is the point
                return
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, torch.Tensor):
                raise ModelOptionError(f"the cut point {name} outputs a "
                                       f"{type(out).__name__}, not a tensor of features.")
            vec, how = _reduce(out, pool, cap)
            got[name] = (vec.cpu(), how, tuple(out.shape[1:]))
        return hook

    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(hook_for(name)))
        front(x)
    finally:
        for h in handles:
            h.remove()
    return got


def _features(front: nn.Module, modules: "OrderedDict[str, nn.Module]", images: torch.Tensor,
              pre: Preprocess, batch_size: int, pool: str, cap: int, device: torch.device,
              bar) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, tuple[int, ...]]]:
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    hows: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = pre.normalise(images[start:start + batch_size]).to(device)
            got = _hook_outputs(front, modules, x, pool, cap)
            for name in modules:
                vec, how, shape = got[name]
                parts[name].append(vec)
                hows[name], shapes[name] = how, shape
            bar.update(1)
    return {n: torch.cat(v) for n, v in parts.items()}, hows, shapes


def _stratified_holdout(labels: torch.Tensor, fraction: float, seed: int
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(fit indices, held-out indices): ``fraction`` of each class with at least two
    samples, chosen with ``seed``; None when too few samples to hold any out."""
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction)) if len(idx) >= 2 else 0
        k = min(k, len(idx) - 1)
        held.append(idx[:k])
        fit.append(idx[k:])
    held_t, fit_t = torch.cat(held).sort().values, torch.cat(fit).sort().values
    if len(held_t) < 2:
        return None
    return fit_t, held_t


def _standardise(x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mu, sd = stats
    return (x - mu) / sd


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = x.mean(0)
    sd = x.std(0, unbiased=False)
    return mu, torch.where(sd > 1e-6 * (1 + mu.abs()), sd, torch.ones_like(sd))


def _fit_linear(x: torch.Tensor, y: torch.Tensor, k: int, decay: float, epochs: int,
                start: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: W, b minimising mean cross-entropy +
    decay / 2 * ||W||^2, by full-batch L-BFGS from zero (or from ``start``, a nearby
    solution: the same optimum, reached in fewer steps)."""
    if start is None:
        w, b = torch.zeros(x.shape[1], k), torch.zeros(k)
    else:
        w, b = start[0].clone(), start[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=epochs, max_eval=2 * epochs,
                            tolerance_grad=1e-5, tolerance_change=1e-7, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, x, w), y) + 0.5 * decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _accuracy(x: torch.Tensor, y: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> float:
    if len(y) == 0:
        return float("nan")
    w, b = wb
    return float((torch.addmm(b, x, w).argmax(1) == y).double().mean())


def _fit_probe(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
               k: int, decay: float | None, epochs: int, seed: int
               ) -> tuple[float, float, float | None, float]:
    """(train accuracy, test accuracy, held-out accuracy, the weight decay used)."""
    val_acc, start = None, None
    if decay is None:
        split = _stratified_holdout(ytr, VAL_FRACTION, seed)
        if split is None:
            decay = 1e-3
        else:
            fit, held = split
            stats = _stats(xtr[fit])
            xf, xh = _standardise(xtr[fit], stats), _standardise(xtr[held], stats)
            scores = []
            for d in DECAYS:             # strongest first, each from the previous solution
                start = _fit_linear(xf, ytr[fit], k, d, epochs, start)
                scores.append((_accuracy(xh, ytr[held], start), d, start))
            val_acc, decay, start = max(scores, key=lambda s: (s[0], s[1]))
    stats = _stats(xtr)
    xs = _standardise(xtr, stats)
    wb = _fit_linear(xs, ytr, k, decay, epochs, start)
    return (_accuracy(xs, ytr, wb), _accuracy(_standardise(xte, stats), yte, wb), val_acc,
            float(decay))


def _positive(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ModelOptionError(f"{what} must be a whole number >= 1, got {v!r}.")
    return v


def _prepare(images: torch.Tensor, pre: Preprocess, side: tuple[int, int] | None
             ) -> tuple[torch.Tensor, list[str]]:
    """Images with the network's channels at ``side`` (H, W), and notes."""
    if side is not None and side[0] == side[1]:
        return fit_images(images, pre, size=side[0], crop=False)
    images, note = match_channels(images, pre.channels)
    notes = [note] if note else []
    if side is not None and tuple(images.shape[2:]) != tuple(side):
        from ..data import resize_images
        notes.append(f"images resized from {images.shape[2]}x{images.shape[3]} to "
                     f"{side[0]}x{side[1]}")
        images = resize_images(images, side)
    return images, notes


# --------------------------------------------------------------------------- probe

def probe(model: nn.Module, train, test, *, at: Sequence[str | int] | str | int | None = None,
          epochs: int = 100, seed: int = 0, preprocess: Preprocess | None = None,
          progress: bool | None = None, image_size: int | Sequence[int] | None = None,
          pool: str = "avg", max_features: int = 4096, weight_decay: float | None = None,
          batch_size: int = 128) -> ProbeResult:
    """A linear probe at every cut point of the frozen ``model`` (or at the points ``at``).

    ``train`` and ``test`` are :class:`~deeparch.data.ArrayDataset` s (uint8 images, labels,
    classes). ``preprocess``: how the weights expect images (mean/std, input size); default
    the training images' channel statistics, as ``deeparch train`` normalises.
    ``image_size``: the input side (default the preprocess's size, else the model's own input
    size, else the data's). ``epochs``: L-BFGS iterations per probe (each a full pass over
    the stored features). ``seed`` chooses the held-out split that picks the weight decay
    (``weight_decay`` fixes it instead). ``pool``: ``"avg"`` (global average pooling of
    spatial maps) or ``"flatten"`` (up to ``max_features`` values per image). ``progress``:
    a bar on stderr (None: when stderr is a terminal). The model's parameters and mode are
    left as they were. See the module docstring for the method."""
    from ..data import channel_stats
    from ..data.dataset import ArrayDataset
    from ..train.history import ProgressBar

    epochs = _positive(epochs, "epochs")
    batch_size = _positive(batch_size, "batch_size")
    max_features = _positive(max_features, "max_features")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ModelOptionError(f"seed must be a whole number, got {seed!r}.")
    if pool not in POOLS:
        raise ModelOptionError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}.")
    if weight_decay is not None and (isinstance(weight_decay, bool) or not isinstance(
            weight_decay, (int, float)) or not math.isfinite(weight_decay) or weight_decay < 0):
        raise ModelOptionError(f"weight_decay must be a finite number >= 0, got "
                               f"{weight_decay!r}.")
    for ds, what in ((train, "training"), (test, "test")):
        if not isinstance(ds, ArrayDataset):
            raise DataError(f"probe needs the {what} data as a deeparch ArrayDataset "
                            f"(deeparch.train.load_data gives both), not a "
                            f"{type(ds).__name__}.")
        if len(ds) == 0:
            raise DataError(f"the {what} data is empty; a probe needs images to fit and test.")
    k = max(len(train.classes), int(train.labels.max()) + 1, int(test.labels.max()) + 1)
    if len(torch.unique(train.labels)) < 2:
        raise DataError("the training data has one class only; a classifier needs two or more.")

    points = _points(model, at)
    notes: list[str] = []
    channels = _input_channels(model) or train.images.shape[1]
    if image_size is not None:
        side = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(side) != 2 or min(side) < 1:
            raise DataError(f"image_size must be N or (H, W), got {image_size!r}.")
    elif preprocess is not None and preprocess.size is not None:
        side = (preprocess.size, preprocess.size)
    else:
        side = _input_side(model) or tuple(train.images.shape[2:])
    if preprocess is None:
        stats_pre = Preprocess("data", (0.0,) * channels, (1.0,) * channels, channels=channels)
        fitted, _ = _prepare(train.images, stats_pre, side)
        mean, std = channel_stats(ArrayDataset(fitted, train.labels, train.classes))
        pre = Preprocess("training-data statistics", mean, tuple(max(s, 1e-6) for s in std),
                         size=side[0] if side[0] == side[1] else None, channels=channels)
    else:
        pre = preprocess
        if pre.channels != channels and _input_channels(model) is not None:
            raise DataError(f"the preprocessing {pre.name!r} is for {pre.channels}-channel "
                            f"images but {_label(model)} reads {channels} channels.")
    # the data's own statistics say nothing about a size the weights take: plain notes
    fit_pre = dataclasses.replace(pre, size=None) if preprocess is None else pre
    xtr, n1 = _prepare(train.images, fit_pre, side)
    xte, n2 = _prepare(test.images, fit_pre, side)
    notes += [n for i, n in enumerate(n1 + n2) if n not in (n1 + n2)[:i]]

    was_training = {m: m.training for m in model.modules()}
    device = _device_of(model)
    modules = OrderedDict((name, model.get_submodule(name)) for name, _ in points)
    batches = -(-len(xtr) // batch_size) + -(-len(xte) // batch_size)
    t0 = time.perf_counter()
    bar = ProgressBar(batches, desc="probe: features", enabled=progress)
    try:
        model.eval()
        front = cut(model, points[-1][0])
        ftr, hows, shapes = _features(front, modules, xtr, pre, batch_size, pool, max_features,
                                      device, bar)
        fte, _, _ = _features(front, modules, xte, pre, batch_size, pool, max_features, device,
                              bar)
    finally:
        bar.close()
        for m, flag in was_training.items():
            m.training = flag
    feature_seconds = time.perf_counter() - t0

    ytr, yte = train.labels, test.labels
    # torch.optim's first optimizer imports torch's compiler stack (seconds, once per
    # process): pay it here, so that no row's seconds include it
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])
    rows: list[ProbeRow] = []
    same: dict[str, list[str]] = {}
    prev: str | None = None
    bar = ProgressBar(len(points), desc="probe: linear heads", enabled=progress)
    try:
        for name, given in points:
            if not given and prev is not None and ftr[name].shape == ftr[prev].shape \
                    and torch.equal(ftr[name], ftr[prev]) and torch.equal(fte[name], fte[prev]):
                same.setdefault(prev, []).append(name)
                bar.update(1)
                continue
            t = time.perf_counter()
            tr_acc, te_acc, val_acc, decay = _fit_probe(ftr[name], ytr, fte[name], yte, k,
                                                        weight_decay, epochs, seed)
            d = ftr[name].shape[1]
            frozen = sum(p.numel() for p in cut(model, name).parameters())
            rows.append(ProbeRow(name, shapes[name], d, hows[name], frozen, d * k + k, tr_acc,
                                 te_acc, val_acc, decay, time.perf_counter() - t))
            prev = name
            bar.update(1)
    finally:
        bar.close()
    for first, later in same.items():
        notes.append(f"{', '.join(later)} give{'s' if len(later) == 1 else ''} the same "
                     f"features as {first} (after pooling); not probed again")
    return ProbeResult(model=_label(model), data=str(getattr(train, "name", "data")), rows=rows,
                       classes=list(train.classes) if len(train.classes) == k
                       else [str(i) for i in range(k)],
                       n_train=len(train), n_test=len(test),
                       input_size=(channels, *xtr.shape[2:]), pool=pool, preprocess=pre,
                       epochs=epochs, seed=seed, feature_seconds=feature_seconds, notes=notes)
