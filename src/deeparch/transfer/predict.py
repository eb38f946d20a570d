"""Predict: a trained network's top classes for image files, as the weights' source sees them.

* :func:`predict` ``(model, images, preprocess=..., classes=...)`` -- for each image its
  top-k classes with their probabilities (the softmax of the logits), as
  :class:`Prediction` s. Each image is fitted on its own the way the weights' source
  evaluates (:func:`~deeparch.transfer.preprocess.fit_images` with ``crop=True``:
  torchvision's shorter side to 256 and centre crop 224; a deeparch run's images resized to
  its input size) and normalised with the source's mean/std.
* :func:`load_predictor` ``(RUN | MODEL, weights=..., labels=...)`` -- the model, how it
  wants its images, and its class names: a run folder's model with its config.json's mean,
  std, input size and classes; a registered model (or a layer pattern) with a weights file
  loaded by :func:`~deeparch.transfer.create_model`, its preprocessing from the file's
  :class:`LoadReport`. Class names come from the run, else a labels file (one per line),
  else ImageNet's 1000 names when the classifier has 1000 outputs and the weights are
  ImageNet's, else the class indices.
* :func:`read_images` -- image files (anything PIL reads) as uint8 tensors; an unreadable
  file is a :class:`~deeparch.errors.DataError` naming it, raised before anything is
  predicted or written.
* :func:`plot_predictions` -- one PNG: each image as the network saw it beside its top-k
  bars.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import DataError, ModelOptionError
from .preprocess import Preprocess, fit_images
from .probe import _input_channels, _input_side, _label, _prepare

__all__ = ["Loaded", "Prediction", "Predictor", "load_model", "load_predictor",
           "plot_predictions", "predict", "read_images", "read_labels"]

_MAX_LABELS_BYTES = 16 << 20


# --------------------------------------------------------------------------- results

@dataclasses.dataclass
class Prediction:
    """One image's top classes, most probable first."""

    source: str                         # the file, or "image 3"
    indices: list[int]
    classes: list[str]
    probabilities: list[float]
    image: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def top1(self) -> str:
        return self.classes[0]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.source,
                "top": [{"rank": i + 1, "index": j, "class": c, "probability": p}
                        for i, (j, c, p) in enumerate(zip(self.indices, self.classes,
                                                          self.probabilities))]}


# --------------------------------------------------------------------------- predict

def _side(preprocess: Preprocess, image_size, model: nn.Module) -> tuple[int, int] | None:
    if image_size is not None:
        side = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(side) != 2 or min(side) < 1:
            raise DataError(f"image_size must be N or (H, W), got {image_size!r}.")
        return side
    if preprocess.size is not None:
        return preprocess.size, preprocess.size
    return _input_side(model)


def _fit_one(image: torch.Tensor, pre: Preprocess, side: tuple[int, int] | None,
             ) -> torch.Tensor:
    x = image[None]
    if side is not None and side[0] == side[1]:
        return fit_images(x, pre, size=side[0], crop=True)[0][0]
    return _prepare(x, pre, side)[0][0]


def _as_images(images: Any) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4:
            raise DataError(f"predict needs uint8 images C x H x W or N x C x H x W, got shape "
                            f"{tuple(images.shape)}.")
        out = list(images)
    elif isinstance(images, (str, os.PathLike)):
        out = read_images([images])
    else:
        out = []
        for im in images:
            out.extend(read_images([im]) if isinstance(im, (str, os.PathLike))
                       else _as_images(im))
    for im in out:
        if im.dtype != torch.uint8:
            raise DataError(f"predict needs uint8 pixels (0..255), got {im.dtype}; give the "
                            f"images as read, the preprocessing normalises them.")
    if not out:
        raise DataError("predict got no images.")
    return out


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelOptionError(f"{_label(model)} outputs {shape} per image, not one score per "
                               f"class; predict needs a classifier (a cut network or a "
                               f"features_only model gives features instead).")
    return out


def predict(model: nn.Module, images: Any, *, preprocess: Preprocess,
            classes: Sequence[str] | None = None, topk: int = 5,
            sources: Sequence[str] | None = None, image_size: int | Sequence[int] | None = None,
            batch_size: int = 32) -> list[Prediction]:
    """The ``topk`` most probable classes of each image, with their softmax probabilities.

    ``images``: uint8 tensors (``C x H x W`` each, any sizes, or one ``N x C x H x W``
    batch) or image file paths. Each is fitted as ``preprocess`` says (channels matched;
    shorter side to ``preprocess.resize`` and centre-cropped to ``preprocess.size``, or
    resized to that size; ``image_size`` overrides the size) and normalised with its
    mean/std. ``classes``: the names of the model's outputs (default: their indices).
    ``sources`` names the images in the results (default the file names, else
    ``image 1``...). The model is run in eval mode, without gradients; its mode is restored."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ModelOptionError(f"topk must be a whole number >= 1, got {topk!r}.")
    if not isinstance(preprocess, Preprocess):
        raise ModelOptionError("predict needs the weights' preprocess (a deeparch Preprocess: "
                               "LoadReport.preprocess, or load_predictor's).")
    pre = preprocess
    names = None
    if sources is None:
        if isinstance(images, (str, os.PathLike)):
            names = [str(images)]
        elif not isinstance(images, torch.Tensor):
            try:
                items = list(images)
            except TypeError:
                items = []
            if items and all(isinstance(i, (str, os.PathLike)) for i in items):
                names = [str(i) for i in items]
                images = items
    imgs = _as_images(images)
    if sources is not None:
        names = [str(s) for s in sources]
        if len(names) != len(imgs):
            raise DataError(f"{len(names)} names were given for {len(imgs)} images.")
    names = names or [f"image {i + 1}" for i in range(len(imgs))]
    side = _side(pre, image_size, model)
    fitted = [_fit_one(im, pre, side) for im in imgs]
    shapes = {tuple(f.shape) for f in fitted}
    if len(shapes) > 1:
        raise DataError(f"the images come out in {len(shapes)} different sizes; give an "
                        f"image size so that all are resized alike.")
    batch = torch.stack(fitted)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    probs = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(batch), batch_size):
                x = pre.normalise(batch[start:start + batch_size]).to(device)
                probs.append(torch.softmax(_logits(model, x).float(), dim=1).cpu())
    finally:
        for m, flag in modes.items():
            m.training = flag
    prob = torch.cat(probs)
    k = prob.shape[1]
    if classes is not None and len(classes) != k:
        raise DataError(f"{len(classes)} class names were given but {_label(model)} has {k} "
                        f"outputs; give one name per output.")
    if topk > k:
        raise ModelOptionError(f"topk={topk} is more than the {k} classes {_label(model)} "
                               f"tells apart; give at most {k}.")
    names_of = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    values, indices = prob.topk(topk, dim=1)
    return [Prediction(src, [int(j) for j in idx], [names_of[int(j)] for j in idx],
                       [float(v) for v in val], image=img)
            for src, idx, val, img in zip(names, indices, values, fitted)]


# --------------------------------------------------------------------------- files

def read_images(paths: Sequence[str | os.PathLike]) -> list[torch.Tensor]:
    """Each file as a uint8 ``C x H x W`` tensor (1 channel for grey images, else RGB; more
    than 8 bits scaled, never clipped; alpha dropped). Every file is read before anything
    is returned: the first that cannot be read raises a :class:`DataError` naming it."""
    from ..data.images import _GRAY_MODES, _Decoded, _decode, _image_info

    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(f"{path} does not exist; give the path of an image file.")
        if path.is_dir():
            raise DataError(f"{path} is a folder; give image files (e.g. {path}/*.jpg).")
        w, h, mode = _image_info(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = _decode(path, mode in _GRAY_MODES, (w, h), _Decoded())
        out.append(torch.from_numpy(pixels.copy()))
    return out


def read_labels(path: str | os.PathLike, count: int | None = None) -> list[str]:
    """Class names from a text file, one per line (a trailing empty line is allowed); with
    ``count``, exactly that many."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_LABELS_BYTES:
            raise DataError(f"{path} is {path.stat().st_size:,} bytes, far more than a list of "
                            f"class names; give a text file with one name per line.")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"the labels file {path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"the labels file {path} is a folder; give a text file with one class "
                        f"name per line.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; give a text file with one class name per "
                        f"line.") from None
    except OSError as exc:
        raise DataError(f"cannot read the labels file {path} ({exc.strerror or exc}).") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for i, line in enumerate(lines):
        if not line:
            raise DataError(f"line {i + 1} of {path} is empty; give one class name per line.")
    if not lines:
        raise DataError(f"{path} holds no class names; give one name per line.")
    if count is not None and len(lines) != count:
        raise DataError(f"{path} has {len(lines)} class name{'s' if len(lines) != 1 else ''} "
                        f"but the model has {count} outputs; give one name per line, one for "
                        f"each output.")
    return lines


# --------------------------------------------------------------------------- loading

@dataclasses.dataclass
class Loaded:
    """A model named on the command line, with what is known of its inputs and classes."""

    model: nn.Module
    name: str
    kind: str                              # "run", "weights" or "init" (no weights)
    preprocess: Preprocess | None          # None: nothing says how the weights want images
    classes: list[str] | None              # a run's class names
    input_size: tuple[int, int, int] | None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def imagenet(self) -> bool:
        """Whether the weights are ImageNet's (torchvision's or Keras' conventions)."""
        p = self.preprocess
        return self.kind == "weights" and p is not None and (
            p.name == "torchvision" or p.name.startswith("keras"))


def _run_preprocess(cfg: dict[str, Any]) -> Preprocess:
    c, h, w = cfg["input_size"]
    return Preprocess("deeparch", tuple(cfg["mean"]), tuple(cfg["std"]),
                      size=h if h == w else None, channels=c)


def load_model(source: str | os.PathLike, *, weights: str | os.PathLike | None = None,
               input_size: Sequence[int] | None = None, seed: int = 0) -> Loaded:
    """``source``: a deeparch run folder (its trained model), or a registered model name or
    layer pattern, loaded from ``weights`` when given (else at its initialisation, from
    ``seed``). ``input_size`` (C, H, W) builds a pattern without ``INPUT``."""
    from ..train.run import is_run_dir, load_run

    text = str(source)
    path = Path(text)
    if is_run_dir(path) or (path.is_dir() and (path / "config.json").is_file()):
        if weights is not None:
            raise ModelOptionError(f"{text} is a run folder, which brings its own weights; "
                                   f"leave weights out (or give a model name with them).")
        net, cfg = load_run(path)
        c, h, w = cfg["input_size"]
        return Loaded(net, f"{cfg['model'] if len(cfg['model']) <= 40 else 'pattern'} "
                           f"({path.name})", "run", _run_preprocess(cfg), list(cfg["classes"]),
                      (c, h, w))
    from ..pattern import from_pattern, looks_like_pattern
    from .weights import create_model, load_weights

    if path.is_dir():
        raise ModelOptionError(f"{text} is a folder but not a deeparch run (no config.json); "
                               f"give a run folder or a model name.")
    torch.manual_seed(seed)
    if looks_like_pattern(text):
        net = from_pattern(text, input_size=tuple(input_size) if input_size else None)
        report = load_weights(net, weights) if weights is not None else None
    else:
        net = create_model(text, weights=weights)
        report = getattr(net, "weights_report", None)
    notes = []
    if weights is None:
        notes.append("no weights given: the model is at its random initialisation")
        pre = None
    else:
        pre = report.preprocess if report is not None else None
        if pre is None:
            notes.append(f"{weights} does not say how its images were prepared")
    size = getattr(net, "input_size", None)
    side = _input_side(net)
    ch = _input_channels(net)
    shape = tuple(size) if isinstance(size, (tuple, list)) and len(size) == 3 else (
        (ch or 3, *side) if side else None)
    return Loaded(net, _label(net), "weights" if weights is not None else "init", pre, None,
                  shape, notes)


@dataclasses.dataclass
class Predictor:
    """A model ready to predict: how it wants its images and what its outputs are called."""

    model: nn.Module
    name: str
    preprocess: Preprocess
    classes: list[str]
    image_size: tuple[int, int] | None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def predict(self, images: Any, topk: int = 5,
                sources: Sequence[str] | None = None) -> list[Prediction]:
        return predict(self.model, images, preprocess=self.preprocess, classes=self.classes,
                       topk=topk, sources=sources, image_size=self.image_size)

    def describe(self) -> str:
        if self.image_size is not None and self.preprocess.size is None:
            h, w = self.image_size
            return f"{self.preprocess.describe().split(';')[0]}; resized to {h}x{w}"
        return self.preprocess.describe()


def _num_outputs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            out = _logits(model, torch.zeros(1, *shape, device=device))
    finally:
        for m, flag in modes.items():
            m.training = flag
    return int(out.shape[1])


def load_predictor(source: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                   labels: str | os.PathLike | Sequence[str] | None = None,
                   image_size: int | None = None) -> Predictor:
    """The model of ``source`` (see :func:`load_model`) with its preprocessing and class
    names. Names: ``labels`` (a file, one per line, or a list) where given, else the run's,
    else ImageNet's when the classifier has 1000 outputs and the weights are ImageNet's, else
    the output indices. A model whose output is not one score per class, or names of the
    wrong count, are refused with one sentence."""
    from .imagenet import imagenet_classes

    got = load_model(source, weights=weights)
    notes = list(got.notes)
    pre = got.preprocess
    c = got.input_size[0] if got.input_size else (_input_channels(got.model) or 3)
    if image_size is not None:
        side: tuple[int, int] | None = (image_size, image_size)
    elif got.kind == "run" and got.input_size is not None:
        side = tuple(got.input_size[1:])
    elif pre is not None and pre.size is not None:
        side = (pre.size, pre.size)
    else:
        side = tuple(got.input_size[1:]) if got.input_size else None
    if side is None:
        raise ModelOptionError(f"nothing says what image size {got.name} takes; give an image "
                               f"size.")
    if pre is None:
        pre = Preprocess("pixel/255", (0.0,) * c, (1.0,) * c, size=side[0] if side[0] == side[1]
                         else None, channels=c)
        notes.append("images are only scaled to 0..1 (nothing says how the weights were "
                     "trained to see them)")
    k = _num_outputs(got.model, (pre.channels, *side))
    if labels is not None:
        names = (read_labels(labels, k) if isinstance(labels, (str, os.PathLike))
                 else [str(n) for n in labels])
        if len(names) != k:
            raise DataError(f"{len(names)} class names were given but {got.name} has {k} "
                            f"outputs; give one name per output.")
    elif got.classes is not None and len(got.classes) == k:
        names = list(got.classes)
    elif k == 1000 and got.imagenet:
        names = imagenet_classes()
    else:
        names = [str(i) for i in range(k)]
        if got.kind != "init":
            notes.append(f"no class names known: the {k} outputs are shown by index (give a "
                         f"labels file with one name per line)")
    return Predictor(got.model, got.name, pre, names, side, notes)


# --------------------------------------------------------------------------- plot

def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def plot_predictions(predictions: Sequence[Prediction], path: str | os.PathLike,
                     title: str | None = None, dpi: int = 100) -> Path:
    """One PNG: a row per image, the image as the network saw it (after resizing and
    cropping) beside horizontal bars of its top-k classes with their probabilities.
    Written atomically; returns ``path``."""
    from matplotlib.figure import Figure

    from ..viz.plots import _save

    preds = list(predictions)
    if not preds:
        raise DataError("there are no predictions to plot.")
    k = max(len(p.classes) for p in preds)
    row_h = max(1.9, 0.3 * k + 0.9)
    fig = Figure(figsize=(9.0, row_h * len(preds) + (0.5 if title else 0.1)), dpi=dpi,
                 layout="constrained")
    grid = fig.add_gridspec(len(preds), 2, width_ratios=(1.0, 2.6))
    for i, p in enumerate(preds):
        ax_img = fig.add_subplot(grid[i, 0])
        if p.image is not None:
            img = p.image.permute(1, 2, 0).numpy()
            if img.shape[2] == 1:
                ax_img.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255,
                              interpolation="nearest" if img.shape[0] < 64 else "antialiased")
            else:
                ax_img.imshow(img[:, :, :3], interpolation="nearest" if img.shape[0] < 64
                              else "antialiased")
            size = f"{img.shape[0]}x{img.shape[1]}"
        else:
            size = ""
        ax_img.set_axis_off()
        ax_img.set_title(_cut(Path(p.source).name, 32) + (f"\n{size} input" if size else ""),
                         fontsize=8)
        ax = fig.add_subplot(grid[i, 1])
        n = len(p.classes)
        ys = list(range(n))
        colors = ["tab:blue"] + ["lightsteelblue"] * (n - 1)
        ax.barh(ys, p.probabilities, color=colors, height=0.7)
        ax.set_yticks(ys)
        ax.set_yticklabels([_cut(c, 30) for c in p.classes], fontsize=9)
        ax.set_xlim(0.0, 1.16)
        ax.set_ylim(k - 0.5, -0.5)
        for y, v in zip(ys, p.probabilities):
            ax.text(v + 0.01, y, f"{v:.1%}", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.grid(True, axis="x", alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if i == 0:
            ax.set_title(f"top-{k} classes (softmax probability)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)
