"""The lesion study of Veit, Wilber & Belongie (2016), "Residual networks behave like
ensembles of relatively shallow networks": take a trained network, remove one part, measure
the test accuracy; then remove k random parts at once.

What is removed (:func:`lesion_units`):

* a **residual block** (every deeparch :class:`~deeparch.models.resnet.ResidualBlock`:
  ResNet, ResNeXt, SE-ResNet, pre-activation ResNet): its residual branch goes, its shortcut
  stays -- ``act(branch(x) + shortcut(x))`` becomes ``act(shortcut(x))``, which is ``x``
  for an identity shortcut and the subsampling / zero-padding (option A) or the projection
  (option B) of a downsampling block, as in the paper;
* in a network without residual blocks, a **layer** where the shapes allow it: a
  convolution whose output has its input's shape, together with the batch norm and
  activation that follow it (the "conv-BN-ReLU" layer of a plain network, or VGG's conv +
  ReLU); they become the identity.

Removal is temporary and in place (:func:`removed`): the parts are put back in a
``finally``, nothing is copied. :func:`lesion` measures the accuracy with each unit removed
in turn and with ``k = 1 .. n`` random units removed (``draws`` random sets per k, seeded);
:func:`lesion_run` does it for a run folder on its own test split and writes ``lesion.json``
and ``lesion.png``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import DataError, ModelOptionError, UnknownLayerError
from ..io import write_text

__all__ = ["LesionResult", "Unit", "lesion", "lesion_run", "lesion_units", "plot_lesion",
           "plot_lesion_compare", "removed"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
          nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
         nn.Hardswish, nn.PReLU, nn.SELU, nn.Mish)


@dataclasses.dataclass
class Unit:
    """A part of the network that can be removed."""

    name: str                    # the block's module name, or the layer's conv
    kind: str                    # "block" or "layer"
    downsampling: bool = False   # a block whose shortcut is not the identity
    modules: tuple[str, ...] = ()   # the modules a layer consists of (conv, norm, act)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "downsampling": self.downsampling,
                "modules": list(self.modules)}


def _blocks(model: nn.Module) -> list[Unit]:
    from ..models.resnet import ResidualBlock

    return [Unit(name, "block", m.downsample is not None, (name,))
            for name, m in model.named_modules() if isinstance(m, ResidualBlock)]


def _layers(model: nn.Module, input_size: Sequence[int]) -> list[Unit]:
    from .layers import layer_table

    rows = layer_table(model, tuple(input_size))
    uses: dict[str, int] = {}
    for r in rows:
        uses[r.name] = uses.get(r.name, 0) + 1
    units = []
    for i, r in enumerate(rows):
        if not isinstance(r.module, nn.Conv2d) or uses[r.name] > 1:
            continue
        ins = r.record.input_shape
        if ins is None or list(ins) != list(r.shape):
            continue
        names = [r.name]
        for q in rows[i + 1:]:
            if q.module is None or uses[q.name] > 1 or list(q.shape) != list(r.shape) or \
                    not isinstance(q.module, _NORMS + _ACTS):
                break
            names.append(q.name)
            if isinstance(q.module, _ACTS):
                break
        units.append(Unit(r.name, "layer", False, tuple(names)))
    return units


def lesion_units(model: nn.Module, input_size: Sequence[int] | None = None,
                 kind: str = "auto") -> list[Unit]:
    """The removable parts of ``model`` in forward order: its residual blocks, or (``kind=
    "layers"``, and by default for a network without residual blocks) its shape-keeping
    conv layers, found on the summary's rows at ``input_size`` (C, H, W)."""
    if kind not in ("auto", "blocks", "layers"):
        raise ModelOptionError(f"kind must be auto, blocks or layers, got {kind!r}.")
    blocks = _blocks(model) if kind in ("auto", "blocks") else []
    if blocks or kind == "blocks":
        if not blocks:
            raise ModelOptionError("the model has no residual blocks to remove; use "
                                   "kind='layers' for a plain network.")
        return blocks
    if input_size is None:
        input_size = getattr(model, "input_size", None)
        if input_size is None:
            raise ModelOptionError("give the input size (C, H, W) to find the layers of a "
                                   "plain network.")
    units = _layers(model, input_size)
    if not units:
        raise ModelOptionError("the model has no residual block and no convolution whose "
                               "output keeps its input's shape, so nothing can be removed.")
    return units


class _Skip(nn.Module):
    def forward(self, x):
        return x


@contextlib.contextmanager
def removed(model: nn.Module, units: Sequence[Unit]) -> Iterator[nn.Module]:
    """``model`` with ``units`` removed (see the module doc) while the block runs; put back
    afterwards, also after an error."""
    modules = dict(model.named_modules())
    undo: list[Callable[[], None]] = []
    try:
        for u in units:
            if u.kind == "block":
                block = modules.get(u.name)
                if block is None:
                    raise UnknownLayerError(f"the model has no block {u.name!r}.")
                # the branch is still computed, then dropped: act(shortcut), whatever the
                # block's own activation and shortcut are
                block.merge = lambda out, shortcut: shortcut
                undo.append(lambda b=block: b.__dict__.pop("merge", None))
            else:
                for name in u.modules:
                    parent_name, _, attr = name.rpartition(".")
                    parent = modules[parent_name] if parent_name else model
                    old = getattr(parent, attr)
                    setattr(parent, attr, _Skip())
                    undo.append(lambda p=parent, a=attr, o=old: setattr(p, a, o))
        yield model
    finally:
        for fn in reversed(undo):
            fn()


# --------------------------------------------------------------------------- measuring

@dataclasses.dataclass
class LesionResult:
    """What :func:`lesion` measured."""

    model: str
    kind: str                     # "blocks" or "layers"
    base_accuracy: float
    n: int                        # test images
    num_classes: int
    units: list[dict[str, Any]]   # name, kind, downsampling, modules, accuracy
    random: list[dict[str, Any]]  # k, mean, std, accuracies
    run: str | None = None

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "run": self.run, "kind": self.kind,
                "base_accuracy": self.base_accuracy, "test_images": self.n,
                "num_classes": self.num_classes, "chance": self.chance,
                "units": self.units, "random": self.random}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            out = out[0] if isinstance(out, (tuple, list)) else out
            hits += int((out.argmax(1) == y[i:i + batch_size]).sum())
    return hits / len(x)


def lesion(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
           units: Sequence[Unit] | None = None, kind: str = "auto",
           ks: Sequence[int] | None = None, draws: int = 4, seed: int = 0,
           batch_size: int = 500, name: str | None = None,
           log: Callable[[str], Any] | None = None) -> LesionResult:
    """Accuracy of ``model`` on ``x`` (normalised float N x C x H x W) and labels ``y``: as it
    is, with each unit removed in turn, and with ``k`` random units removed for each ``k``
    in ``ks`` (default ``1 .. n``), ``draws`` random sets per ``k`` (fewer where fewer sets
    exist), drawn from ``seed``. The model runs in eval mode; its modes are restored."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise DataError("lesion needs the normalised test images as a float tensor "
                        "N x C x H x W.")
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"lesion got {len(x)} images and {len(y)} labels; give one label per "
                        f"image, at least one image.")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ModelOptionError(f"draws={draws!r} is invalid: it must be a whole number >= 1.")
    units = list(units) if units is not None else lesion_units(model, tuple(x.shape[1:]), kind)
    n = len(units)
    ks = list(range(1, n + 1)) if ks is None else [int(k) for k in ks]
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ModelOptionError(f"k={bad[0]} random units cannot be removed: the model has {n} "
                               f"(1 to {n}).")
    say = log or (lambda s: None)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        base = _accuracy(model, x, y, batch_size)
        with torch.no_grad():
            out = model(x[:1])
        k_classes = int((out[0] if isinstance(out, (tuple, list)) else out).shape[1])
        say(f"base accuracy {base:.2%}")
        rows = []
        for u in units:
            with removed(model, [u]):
                acc = _accuracy(model, x, y, batch_size)
            rows.append({**u.to_dict(), "accuracy": acc})
            say(f"without {u.name}: {acc:.2%}")
        rng = random.Random(seed)
        curve = []
        import math
        for k in ks:
            sets: list[tuple[int, ...]] = []
            total = math.comb(n, k)
            while len(sets) < min(draws, total):
                pick = tuple(sorted(rng.sample(range(n), k)))
                if pick not in sets:
                    sets.append(pick)
            accs = []
            for pick in sets:
                if k == 1:
                    accs.append(rows[pick[0]]["accuracy"])
                    continue
                with removed(model, [units[i] for i in pick]):
                    accs.append(_accuracy(model, x, y, batch_size))
            t = torch.tensor(accs, dtype=torch.float64)
            curve.append({"k": k, "mean": float(t.mean()),
                          "std": float(t.std()) if len(accs) > 1 else 0.0,
                          "accuracies": accs, "removed": [[units[i].name for i in p]
                                                          for p in sets]})
            say(f"{k} random removed: {float(t.mean()):.2%}")
    finally:
        for m, flag in modes.items():
            m.training = flag
    kind_done = "blocks" if units and units[0].kind == "block" else "layers"
    return LesionResult(name or type(model).__name__, kind_done, base, len(x), k_classes, rows,
                        curve)


def lesion_run(run: str | os.PathLike, *, limit: int | None = None, kind: str = "auto",
               draws: int = 4, seed: int = 0, ks: Sequence[int] | None = None,
               out: str | os.PathLike | None = None, which: str = "model",
               batch_size: int = 500, log: Callable[[str], Any] | None = None
               ) -> LesionResult:
    """:func:`lesion` of a run folder's model on its own test split (``limit``: that many
    test images, stratified, seed 0), writing ``lesion.json`` and ``lesion.png`` into
    ``out`` (default: the run folder). Everything is measured before anything is written."""
    from ..data import subset
    from ..train.run import _check_fingerprint, _fit, _load_recorded, load_run

    path = Path(run)
    net, cfg = load_run(path, which)
    units = lesion_units(net, cfg["input_size"], kind)     # refused before the data is read
    _, test, _ = _load_recorded(cfg, path / "config.json")
    test = _fit(test, cfg["input_size"])
    _check_fingerprint(cfg, "test", test, path)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DataError(f"limit={limit!r} is invalid: it must be a whole number >= 1.")
        if limit < len(test):
            test = subset(test, limit, seed=0)
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    x = (test.images.float() / 255.0 - mean) / std
    y = torch.as_tensor(test.labels).long()
    p = next(net.parameters(), None)
    if p is not None:
        x, y = x.to(p.device), y.to(p.device)
    model_name = cfg["model"] if len(cfg["model"]) <= 40 else "pattern"
    res = lesion(net, x, y, units=units, ks=ks, draws=draws, seed=seed,
                 batch_size=batch_size, name=model_name, log=log)
    res.run = str(path)
    where = Path(out) if out is not None else path
    plot_lesion(res, where / "lesion.png", title=f"{model_name} ({path.name}): lesion study")
    write_text(where / "lesion.json", json.dumps(res.to_dict(), indent=2) + "\n")
    return res


# --------------------------------------------------------------------------- figures

def _panels(fig, spec, res: LesionResult, label: str) -> None:
    import numpy as np

    ax = fig.add_subplot(spec[0])
    names = [u["name"].replace("features.", "") for u in res.units]
    accs = [100 * u["accuracy"] for u in res.units]
    colors = ["tab:orange" if u["downsampling"] else "tab:blue" for u in res.units]
    xs = np.arange(len(names))
    ax.bar(xs, accs, color=colors, width=0.75)
    ax.axhline(100 * res.base_accuracy, color="black", lw=1, ls="--",
               label=f"nothing removed {100 * res.base_accuracy:.1f}%")
    ax.axhline(100 * res.chance, color="tab:red", lw=1, ls=":",
               label=f"chance {100 * res.chance:.0f}%")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("test accuracy (%)")
    what = "residual block" if res.kind == "blocks" else "layer"
    ax.set_title(f"{label}: one {what} removed", fontsize=9)
    if any(u["downsampling"] for u in res.units):
        from matplotlib.patches import Patch
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color="tab:blue", label="identity shortcut"),
                    Patch(color="tab:orange", label="downsampling block")]
        ax.legend(handles=handles, fontsize=7, loc="upper center", ncol=2)
    else:
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    ax = fig.add_subplot(spec[1])
    ks = [r["k"] for r in res.random]
    mean = [100 * r["mean"] for r in res.random]
    std = [100 * r["std"] for r in res.random]
    ax.errorbar(ks, mean, yerr=std, marker="o", ms=4, capsize=3, color="tab:blue")
    for r in res.random:
        ax.scatter([r["k"]] * len(r["accuracies"]), [100 * a for a in r["accuracies"]], s=6,
                   color="tab:gray", alpha=0.6, zorder=3)
    ax.axhline(100 * res.base_accuracy, color="black", lw=1, ls="--")
    ax.axhline(100 * res.chance, color="tab:red", lw=1, ls=":")
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xticks(ks)
    ax.set_xlabel(f"{what}s removed at random (k)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{label}: k random {what}s removed (mean ± sd)", fontsize=9)
    ax.grid(True, alpha=0.3)


def plot_lesion(res: LesionResult, path: str | os.PathLike, title: str | None = None,
                dpi: int = 100) -> Path:
    """Two panels: the accuracy with each unit removed (downsampling blocks in orange; the
    intact network dashed, chance dotted), and the accuracy against k random units removed."""
    from matplotlib.figure import Figure

    from .plots import _save

    fig = Figure(figsize=(11, 4.2), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=(1.3, 1.0))
    _panels(fig, (grid[0, 0], grid[0, 1]), res, res.model if len(res.model) <= 20
            else "network")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)


def plot_lesion_compare(results: Sequence[LesionResult], path: str | os.PathLike,
                        names: Sequence[str] | None = None, title: str | None = None,
                        dpi: int = 100) -> Path:
    """:func:`plot_lesion` for several networks, one row each (a ResNet above a plain net)."""
    from matplotlib.figure import Figure

    from .plots import _save

    names = list(names) if names is not None else [r.model for r in results]
    fig = Figure(figsize=(11, 4.2 * len(results)), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(len(results), 2, width_ratios=(1.3, 1.0))
    for i, (res, name) in enumerate(zip(results, names)):
        _panels(fig, (grid[i, 0], grid[i, 1]), res, name)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)
