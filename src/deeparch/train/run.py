"""A whole training run in a folder: what ``deeparch train`` / ``evaluate`` do.

``train(model, data, out)`` writes, in ``out``:

=========================  ===============================================================
``config.json``            everything needed to rebuild the model, the data and the run
``history.json``           a list, one object per epoch: epoch, loss, accuracy, val_loss,
                           val_accuracy, lr, seconds (also as ``log.csv``)
``metrics.json``           test loss, accuracy, top5, per-class accuracy, confusion matrix
``model.safetensors``      the final weights (the best validation epoch's by default)
``curves.png``             accuracy and loss, training vs validation
``confusion.png``          the test confusion matrix
``checkpoints/``           ``last`` and ``best`` (``.safetensors`` + ``.json``): weights,
                           optimizer state and run state; ``resume(out)`` continues from
                           ``last`` and reaches the weights an uninterrupted run reaches
``tensorboard/``           event files, with ``tensorboard=True``
=========================  ===============================================================

Every file is written atomically. ``train`` refuses a folder that holds a previous run
unless ``force=True`` (which removes that run's files, and only those), and refuses any
other non-empty folder whatever ``force`` says; a folder being written by another process
is refused too (see :mod:`deeparch.train.runfolder`). Continue an interrupted run with
``resume(out)``: it continues with the run's own settings; only ``epochs`` may change, and
only where the result is still the run an uninterrupted training would have produced
(see :func:`resume`).

``config.json`` records a fingerprint (SHA-256) of the training and test data;
``resume`` and ``evaluate`` refuse data that no longer matches it. A run folder may come
from someone else, so ``config.json`` is checked field by field before anything in it is
used, and a data path recorded there that cannot be read is reported without quoting the
file's contents.

The model is a registry name (``lenet5``) or a layer pattern. Its classes and input
channels come from the data set. When the model cannot take the data's image size
(LeNet-5's 5x5 convolutions on 8x8 digits) the images are resized to the model's default
input size, and the log says so.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import (CheckpointError, DataError, DeeparchError, ShapeError, TrainingError,
                      WeightsError)
from ..io import WriteError, write_text
from . import distributed as D
from .checkpoint import CheckpointWriteError, load_weights, save_weights
from .config import TrainConfig, make_config
from .history import History
from .runfolder import RUN_FILES, RUN_FORMAT, RunLock, abandon, claim, has_marker, sweep_temps
from .trainer import Trainer, split_data

# schedules whose learning rate at a step depends on the run's total length: changing
# ``epochs`` on resume would change the rates of the steps already taken
LENGTH_DEPENDENT_SCHEDULES = ("cosine", "onecycle")


@dataclasses.dataclass
class RunResult:
    """The outcome of :func:`train` / :func:`resume`."""

    out: Path
    history: History = dataclasses.field(repr=False)
    metrics: dict[str, Any] = dataclasses.field(repr=False)
    config: dict[str, Any] = dataclasses.field(repr=False)
    model: nn.Module = dataclasses.field(repr=False)
    paths: dict[str, Path] = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return (f"RunResult(out={str(self.out)!r}, epochs={len(self.history)}, "
                f"test accuracy={self.accuracy:.2%})")

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    def summary_lines(self) -> list[str]:
        m = self.metrics
        return [
            f"test accuracy {m['accuracy']:.2%}  top-{m.get('top5_k', 5)} {m['top5']:.2%}  "
            f"loss {m['loss']:.4f}  ({m['n']} images, {m.get('weights', 'final')} weights)",
            f"curves:    {self.paths['curves']}",
            f"confusion: {self.paths['confusion']}",
            f"metrics:   {self.paths['metrics']}",
            f"history:   {self.paths['history']}",
            f"weights:   {self.paths['model']}",
        ]


# --------------------------------------------------------------------------- run folder

def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a deeparch run (its marker, or an older run's config.json)."""
    return Path(path).is_dir() and has_marker(path)


def read_run_config(out: str | Path) -> dict[str, Any]:
    """The checked ``config.json`` of a run folder (a :class:`CheckpointError` otherwise)."""
    out = Path(out)
    path = out / "config.json"
    if not out.is_dir():
        raise CheckpointError(f"{out} is not a folder; give the --out folder of a deeparch "
                              f"training run.")
    try:
        if path.stat().st_size > _CONFIG_BYTES:
            raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes, far more than a "
                                  f"run's config.json; the run folder is damaged.")
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{out} has no config.json, so it is not a deeparch training run; "
                              f"give the --out folder of `deeparch train`.") from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({type(exc).__name__}); the run "
                              f"folder is damaged.") from None
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} was not written by deeparch train (no "
                              f"\"format\": \"{RUN_FORMAT}\" in it).")
    _check_run_config(cfg, path)
    return cfg


_CONFIG_BYTES = 16 << 20
_MAX_CLASSES = 1_000_000


def _check_run_config(cfg: dict[str, Any], path: Path) -> None:
    """Every field of a run's config.json that deeparch uses, checked before it is used."""
    def bad(key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{path} is damaged: {key!r} must be {what}; retrain the run "
                               f"or restore its config.json.")

    def whole(v: Any, lo: int, hi: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    for key in ("model", "data", "input_size", "num_classes", "classes", "mean", "std",
                "train"):
        if key not in cfg:
            raise CheckpointError(f"{path} is damaged: it has no {key!r} entry; retrain the "
                                  f"run or restore its config.json.")
    if not isinstance(cfg["model"], str) or not cfg["model"].strip():
        raise bad("model", "a model name or a layer pattern")
    if not isinstance(cfg["data"], str) or not cfg["data"].strip():
        raise bad("data", "a data set name or path")
    if cfg.get("data_dir") is not None and not isinstance(cfg["data_dir"], str):
        raise bad("data_dir", "a folder path or null")
    opts = cfg.get("model_options", {})
    scalar = (str, int, float, bool, type(None))
    if not isinstance(opts, dict) or not all(
            isinstance(k, str) and (isinstance(v, scalar) or (isinstance(v, list) and len(v) <= 64
                                    and all(isinstance(x, scalar) for x in v)))
            for k, v in opts.items()):
        raise bad("model_options", "an object of option names and plain values")
    size = cfg.get("image_size")
    if size is not None and not (whole(size, 1, 65536) or (
            isinstance(size, list) and len(size) == 2 and all(whole(v, 1, 65536) for v in size))):
        raise bad("image_size", "null, a size or [height, width]")
    if "download" in cfg and not isinstance(cfg["download"], bool):
        raise bad("download", "true or false")
    isz = cfg["input_size"]
    if not (isinstance(isz, list) and len(isz) == 3 and whole(isz[0], 1, 4096)
            and all(whole(v, 1, 65536) for v in isz[1:]) and math.prod(isz) <= 1 << 28):
        raise bad("input_size", "[channels, height, width] of sane positive sizes")
    if not whole(cfg["num_classes"], 1, _MAX_CLASSES):
        raise bad("num_classes", f"a whole number from 1 to {_MAX_CLASSES:,}")
    classes = cfg["classes"]
    if not (isinstance(classes, list) and len(classes) == cfg["num_classes"]
            and all(isinstance(c, str) for c in classes)):
        raise bad("classes", "a list of num_classes names")
    for key in ("mean", "std"):
        v = cfg[key]
        if not (isinstance(v, list) and len(v) == isz[0] and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in v)) or (key == "std" and min(v) <= 0):
            raise bad(key, "one finite number per input channel" +
                      (", each above 0" if key == "std" else ""))
    if not isinstance(cfg["train"], dict):
        raise bad("train", "an object of training settings")
    try:
        TrainConfig.from_dict(cfg["train"])
    except DeeparchError as exc:
        raise CheckpointError(f"{path} is damaged: its training settings are invalid "
                              f"({str(exc).rstrip('.')}).") from None
    if cfg.get("transfer") is not None:
        from .pretrained import check_record
        check_record(cfg["transfer"], bad)
    if cfg.get("distill") is not None:
        from ..edge.distillation import check_record as check_distill
        check_distill(cfg["distill"], bad)
    fp = cfg.get("fingerprint")
    if fp is not None and not (isinstance(fp, dict) and all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= 128 for k, v in fp.items())):
        raise bad("fingerprint", "an object of split names and hex digests")


def _write_json(path: Path, obj: Any) -> None:
    try:
        write_text(path, json.dumps(obj, indent=2) + "\n")
    except WriteError as exc:
        raise CheckpointWriteError(f"{str(exc).rstrip('.')} and the previous file is kept."
                                   ) from exc


# --------------------------------------------------------------------------- data + model

def _is_path(data: str) -> bool:
    """Whether ``data`` is a path rather than a dataset name (a name always wins)."""
    from ..data.sources import _ALIASES, DATASETS

    key = str(data).strip().lower()
    return _ALIASES.get(key, key) not in DATASETS


def load_data(data: str, data_dir: str | None = None, download: bool = False,
              image_size: int | Sequence[int] | None = None):
    """(train, test, note) for a dataset name or path; a source without its own test split
    (a CSV or .npz file, a plain image folder: the reader marks it ``whole``) gets a fixed
    stratified 80/20 split (seed 0), by group where the data has groups (the copies of one
    image made by pre-augmentation stay on one side)."""
    from ..data import load_dataset, train_val_split

    if data_dir is not None and Path(data_dir).expanduser().exists() \
            and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"the data folder {data_dir} is a file; give the folder that holds "
                        f"the named data sets.")
    train = load_dataset(data, "train", root=data_dir, download=download, image_size=image_size)
    test = load_dataset(data, "test", root=data_dir, download=download, image_size=image_size)
    note = None
    if test.whole:
        train, test = train_val_split(train, 0.2, seed=0, stratified=True)
        note = (f"{data} has no separate test split: holding out a fixed 20% "
                f"({len(test)} images) as the test set")
    return train, test, note


def fingerprint(ds) -> str:
    """SHA-256 of a data set's images (shape and bytes) and labels: the same data, the
    same digest."""
    h = hashlib.sha256()
    h.update(json.dumps([list(ds.images.shape), list(ds.labels.shape)]).encode())
    h.update(ds.images.contiguous().numpy().tobytes())
    h.update(ds.labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def check_labels(train, test) -> None:
    """Refuse, before any training, data that cannot make a classifier: one class only,
    or test classes that the training split never shows."""
    def numbered(classes) -> bool:        # names made from the labels themselves: 0..n-1
        return list(classes) == [str(i) for i in range(len(classes))]

    if list(train.classes) != list(test.classes) and not (numbered(train.classes)
                                                           and numbered(test.classes)):
        only_train = sorted(set(train.classes) - set(test.classes))[:3]
        only_test = sorted(set(test.classes) - set(train.classes))[:3]
        detail = (f"only in training: {', '.join(only_train) or '-'}; only in test: "
                  f"{', '.join(only_test) or '-'}" if only_train or only_test
                  else "the same names in another order")
        raise DataError(f"the training and test splits name their classes differently "
                        f"({detail}), so a label would mean one class in training and another "
                        f"in testing; give both splits the same class folders.")
    from ..data.sources import check_trainable

    check_trainable(train, "the training data")
    seen = set(torch.unique(train.labels).tolist())
    missing = sorted(set(torch.unique(test.labels).tolist()) - seen)
    if missing:
        names = ", ".join(repr(test.classes[i]) if i < len(test.classes) else repr(str(i))
                          for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"the test split has {len(missing)} class(es) that the training split "
                        f"lacks ({names}{more}); no model can learn them, so fix the split.")


def _load_recorded(run: dict[str, Any], config_path: Path):
    """The data of a stored run: a data path recorded in someone else's config.json may
    point anywhere, so a failure names the path but never quotes what the file holds."""
    try:
        return load_data(run["data"], run.get("data_dir"), run.get("download", False),
                         run.get("image_size"))
    except DataError as exc:
        if not _is_path(run["data"]):
            raise
        raise DataError(f"the data recorded in {config_path} ({run['data']}) cannot be read "
                        f"as a data set ({type(exc).__name__}); if the run comes from another "
                        f"machine, its data is not here.") from None


def _check_fingerprint(run: dict[str, Any], split: str, ds, out: Path) -> None:
    want = (run.get("fingerprint") or {}).get(split)
    if want is not None and fingerprint(ds) != want:
        raise DataError(f"the {split} data of {out} ({run['data']}) is no longer the data the "
                        f"run was trained on (its fingerprint in config.json differs); restore "
                        f"that data, or train a new run on this one.")


MAX_SIDE = 16384          # pixels: a side beyond this is a typo, not a data set


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _check_image_budget(n: int, c: int, h: int, w: int) -> None:
    """Refuse an image size whose data set would not fit in half of this machine's memory
    (uint8), before anything is resized or built."""
    if max(h, w) > MAX_SIDE:
        raise DataError(f"images of {h}x{w} pixels are beyond deeparch's limit of {MAX_SIDE} "
                        f"pixels a side; give a smaller image size.")
    need, have = n * c * h * w, _memory_bytes() // 2
    if need > have:
        raise DataError(f"{n:,} images of {c}x{h}x{w} need {need / 2**30:.1f} GiB as uint8, more "
                        f"than half of this machine's {2 * have / 2**30:.1f} GiB; give a smaller "
                        f"image size or fewer images.")


def _fit(ds, input_size: Sequence[int]):
    """``ds`` as the model reads it: ``input_size`` (C, H, W) -- grey images repeated into
    three channels for a network that reads colour (pretrained weights), then resized."""
    from ..data import resize_images
    from ..transfer.preprocess import match_channels

    c, h, w = input_size
    images, _ = match_channels(ds.images, c)
    if tuple(images.shape[2:]) != (h, w):
        images = resize_images(images, (h, w))
    return ds if images is ds.images else dataclasses.replace(ds, images=images)


def _check_output(model: nn.Module, input_size: tuple[int, int, int], num_classes: int,
                  what: str) -> None:
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *input_size))
    out = out[0] if isinstance(out, (tuple, list)) else out
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise TrainingError(f"{what} outputs shape {tuple(out.shape[1:])} per image but the data "
                            f"has {num_classes} classes; end it with {num_classes} outputs "
                            f"(e.g. FC-{num_classes}).")
    model.train()


def build_model(model: str, num_classes: int, input_size: tuple[int, int, int],
                options: dict[str, Any] | None = None, seed: int = 13,
                fit_input: bool = True) -> tuple[nn.Module, tuple[int, int, int], str | None]:
    """Build a registry model or a pattern for ``num_classes`` and ``input_size`` (C, H, W).

    With ``fit_input`` a model that cannot take ``H x W`` is built at its own default size
    instead. Returns (model, the input size it takes, a note when that size differs).
    Weights are initialised from ``seed``."""
    from ..models.registry import accepts, create_model, model_info
    from ..pattern import from_pattern, looks_like_pattern, parse

    options = dict(options or {})
    c, h, w = input_size
    if model.startswith("search:"):          # an architecture of a search space
        from ..search.loop import build_for_training
        return build_for_training(model, num_classes, input_size, options, seed, fit_input)
    if looks_like_pattern(model):
        if options:
            raise TrainingError("model options (-o KEY=VALUE) apply to registered models, "
                                "not to patterns; write the sizes into the pattern.")
        tokens = parse(model)
        size = input_size
        if tokens and tokens[0].upper.startswith("INPUT"):
            torch.manual_seed(seed)
            net = from_pattern(model)
            pc, ph, pw = net.input_size
            if pc != c:
                raise DataError(f"the pattern's INPUT has {pc} channel(s) but the images have "
                                f"{c}; write INPUT({h}x{w}x{c}) or leave INPUT out.")
            size = (pc, ph, pw)
        torch.manual_seed(seed)
        net = from_pattern(model, input_size=size)
        _check_output(net, size, num_classes, "the pattern")
        note = None if size == tuple(input_size) else (
            f"resizing the images from {h}x{w} to {size[1]}x{size[2]} (the pattern's INPUT)")
        return net, tuple(size), note

    card = model_info(model)
    takes_size = accepts(model, "img_size")
    if "in_chans" in options or "num_classes" in options:
        raise TrainingError("num_classes and in_chans come from the data set; leave them out "
                            "of the model options.")

    def make(size: tuple[int, int]) -> nn.Module:
        torch.manual_seed(seed)
        kw = dict(options)
        if takes_size and "img_size" not in kw:
            kw["img_size"] = size if size[0] != size[1] else size[0]
        net = create_model(model, num_classes=num_classes, in_chans=c, **kw)
        _check_output(net, (c, *size), num_classes, f"model {model!r}")
        return net

    sizes = [(h, w)]
    if fit_input and tuple(card.input_size[1:]) != (h, w):
        sizes.append(tuple(card.input_size[1:]))
    last_exc: Exception | None = None
    for size in sizes:
        try:
            net = make(size)
        except (ShapeError, RuntimeError, ValueError) as exc:
            if isinstance(exc, DeeparchError) and not isinstance(exc, ShapeError):
                raise
            last_exc = exc
            continue
        note = None if size == (h, w) else (
            f"resizing the images from {h}x{w} to {size[0]}x{size[1]}: {model} cannot take "
            f"{h}x{w} (its default input is {card.input_size[1]}x{card.input_size[2]})")
        return net, (c, *size), note
    raise ShapeError(f"model {model!r} cannot take {c}x{h}x{w} images ({last_exc}); try another "
                     f"model or resize the data.")


@dataclasses.dataclass
class _Setup:
    model: nn.Module
    train: Any
    val: Any
    test: Any
    input_size: tuple[int, int, int]
    data_size: tuple[int, int, int]
    notes: list[str]
    fingerprint: dict[str, str]
    pretrained: Any = None            # deeparch.train.pretrained.Pretrained


def _setup(spec: dict[str, Any], cfg: TrainConfig, fit_input: bool,
           stored: Path | None = None) -> _Setup:
    """Data + model for a run spec (``model``, ``model_options``, ``data``, ``data_dir``,
    ``image_size``; for a stored run, whose folder is ``stored``, also ``input_size`` and
    the data's fingerprint, which must still match)."""
    from ..data import subset

    if stored is not None:
        train, test, note = _load_recorded(spec, stored / "config.json")
        _check_fingerprint(spec, "train", train, stored)
    else:
        train, test, note = load_data(spec["data"], spec.get("data_dir"),
                                      spec.get("download", False), spec.get("image_size"))
    check_labels(train, test)
    prints = {"train": fingerprint(train)}
    notes = []
    for n in [*train.notes, *test.notes, *([note] if note else [])]:
        if n not in notes:
            notes.append(n)
    data_size = train.input_size
    c, h, w = data_size
    if spec.get("image_size"):
        hw = spec["image_size"]
        h, w = (hw, hw) if isinstance(hw, int) else tuple(hw)
    if spec.get("input_size"):                         # a stored run: exactly as before
        c, h, w = spec["input_size"]
        fit_input = False
    _check_image_budget(len(train) + len(test), c, h, w)
    pretrained = None
    try:
        if spec.get("transfer"):
            from .pretrained import build as build_pretrained
            pretrained = build_pretrained(spec, train.num_classes, data_size[0], cfg.seed,
                                          stored)
            model, size, note = pretrained.model, pretrained.input_size, None
            notes.extend(pretrained.notes)
            if tuple(size) != tuple(data_size):
                notes.append(f"images fitted from {'x'.join(map(str, data_size))} to "
                             f"{'x'.join(map(str, size))} for the pretrained weights")
        else:
            model, size, note = build_model(spec["model"], train.num_classes, (c, h, w),
                                            spec.get("model_options"), seed=cfg.seed,
                                            fit_input=fit_input)
    except (CheckpointError, WeightsError):
        raise
    except (DeeparchError, TypeError, ValueError, RuntimeError, OverflowError,
            MemoryError) as exc:
        if stored is None:
            raise
        why = (str(exc).splitlines()[0].rstrip(".") if isinstance(exc, DeeparchError)
               else f"{type(exc).__name__}; the run folder is damaged")
        raise CheckpointError(f"the model recorded in {stored / 'config.json'} cannot be built "
                              f"({why}).") from None
    if note:
        notes.append(note)
    if stored is None and spec.get("image_size") and tuple(size[1:]) != (h, w):
        from ..pattern import looks_like_pattern
        if looks_like_pattern(spec["model"]):
            raise DataError(f"the pattern's INPUT fixes the images at {size[1]}x{size[2]}, so "
                            f"an image size of {h}x{w} cannot apply; leave the image size out "
                            f"or change INPUT.")
    _check_image_budget(len(train) + len(test), *size)
    train, test = _fit(train, size), _fit(test, size)
    train, val = split_data(train, cfg)
    if cfg.subset is not None and cfg.subset < len(test):
        test = subset(test, cfg.subset, seed=cfg.seed)
    prints["test"] = fingerprint(test)
    if stored is not None:
        _check_fingerprint(spec, "test", test, stored)
    return _Setup(model, train, val, test, tuple(size), tuple(data_size), notes, prints,
                  pretrained)


# --------------------------------------------------------------------------- train / resume

def train(model: str, data: str, out: str | Path, data_dir: str | None = None, *,
          force: bool = False, model_options: dict[str, Any] | None = None,
          image_size: int | Sequence[int] | None = None, download: bool = False,
          log: Callable[[str], Any] | None = print, progress: bool | None = None,
          config: TrainConfig | dict | None = None, weights: str | Path | None = None,
          from_run: str | Path | None = None, regime: str | None = None,
          teacher: str | Path | None = None, **changes: Any) -> RunResult:
    """Train ``model`` (a registry name or a layer pattern) on ``data`` (a dataset name or
    path) and write the run folder ``out`` (see the module docstring).

    Transfer learning: ``weights`` (a weights file or a name such as
    ``'torchvision:resnet18'``) or ``from_run`` (a run folder; ``model`` may then be None)
    start the model from pretrained weights, and ``regime`` (``full``, ``linear``,
    ``cached``, ``top:K``; see :mod:`deeparch.transfer.regime`) says what trains;
    ``lr_backbone=`` (a training setting) gives the pretrained layers their own rate. See
    :mod:`deeparch.train.pretrained`.

    Distillation: ``teacher`` (a trained run folder, a ``model.safetensors`` written by
    deeparch, or a hub name) teaches the student with ``temperature=`` (T, default 4) and
    ``alpha=`` (the soft targets' weight, default 0.9); config.json records it under
    ``"distill"`` and ``resume`` refuses a teacher that changed. See
    :mod:`deeparch.edge.distillation`.

    Keywords are :class:`TrainConfig` fields (``epochs=30, lr=1e-3, ...``). Raises
    :class:`CheckpointError` for an ``out`` that holds a previous run (unless ``force``),
    that holds anything else, or that another process is writing.
    Launched by torchrun, it trains data-parallel; rank 0 writes the files.
    """
    cfg = make_config(config, **changes)
    if teacher is None and ("temperature" in changes or "alpha" in changes
                            or (cfg.temperature, cfg.alpha) != (4.0, 0.9)):
        raise TrainingError("temperature and alpha are settings of distillation; give a "
                            "teacher (--teacher RUN) with them, or leave them out.")
    transfer = None
    if weights is not None or from_run is not None or regime is not None:
        from ..transfer.regime import parse_regime
        if weights is None and from_run is None:
            raise TrainingError(f"regime {regime} says how to train from pretrained weights; "
                                f"give them with --weights FILE|NAME or --from-run RUN.")
        if str(parse_regime(regime)) == "cached":
            _check_cached(cfg)              # before any weights are read
        transfer = {"weights": None if weights is None else str(weights),
                    "from_run": None if from_run is None else str(from_run),
                    "regime": str(parse_regime(regime))}
        from ..transfer import hub
        if weights is not None and hub.is_hub_name(str(weights)):
            e = hub.entry(str(weights))            # an unknown name: one sentence, nothing read
            given = str(model).strip() if model is not None else ""
            if given and given != e.model:
                raise TrainingError(f"{e.name} loads into {e.model}, not {given[:60]}; leave "
                                    f"the model out or give {e.model}.")
            model = e.model
            model_options = {**e.model_kwargs, **dict(model_options or {})}
        if from_run is not None:
            src = read_run_config(from_run)
            if model is not None and str(model).strip() and str(model).strip() != src["model"]:
                raise TrainingError(f"{from_run} is a run of {src['model'][:60]}, not "
                                    f"{str(model).strip()[:60]}; leave the model out or give "
                                    f"{src['model'][:60]}.")
            model = src["model"]
            model_options = {**(src.get("model_options") or {}), **dict(model_options or {})}
    elif cfg.lr_backbone is not None:
        raise TrainingError("lr_backbone is the rate of pretrained layers; give pretrained "
                            "weights (--weights or --from-run) with it.")
    if not isinstance(model, str) or not model.strip():
        raise TrainingError("train() takes a model name or a layer pattern; for your own "
                            "nn.Module use deeparch.train.Trainer or fit().")
    if not isinstance(data, str) or not data.strip():
        raise DataError("train() takes a dataset name (digits, mnist, fashion_mnist, cifar10, "
                        "cifar100) or a path.")
    D.init_from_env(cfg.device)
    D.local_device(cfg.device)            # a bad device fails here, before any work
    out = Path(out)
    lock, created = claim(out, force, main=D.is_main())
    started = False
    try:
        say = log if (log is not None and D.is_main()) else (lambda s: None)
        spec = {
            "model": model.strip(), "model_options": dict(model_options or {}),
            "data": str(Path(data).expanduser().resolve()) if _is_path(data) else data,
            "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
            "image_size": list(image_size) if isinstance(image_size, (list, tuple))
            else image_size,
            "download": bool(download),
        }
        if transfer is not None:
            spec["transfer"] = transfer
        s = _setup(spec, cfg, fit_input=True)
        for n in s.notes:
            say(n)
        from ..data import channel_stats

        pre = s.pretrained.preprocess if s.pretrained is not None else None
        if pre is not None:
            mean, std = pre.mean, pre.std
        else:
            mean, std = channel_stats(s.train)
            std = tuple(max(v, 1e-6) for v in std)
        if s.pretrained is not None:
            spec["transfer"] = s.pretrained.record
        teacher_net = None
        if teacher is not None:
            teacher_net, spec["distill"] = _teacher(teacher, s, cfg, mean, std, say)
        from .. import __version__

        run = {
            "format": RUN_FORMAT, "version": 1, "deeparch": __version__, **spec,
            "input_size": list(s.input_size), "data_input_size": list(s.data_size),
            "num_classes": s.train.num_classes, "classes": list(s.train.classes),
            "mean": list(mean), "std": list(std), "fingerprint": s.fingerprint,
            "samples": {"train": len(s.train), "val": len(s.val) if s.val is not None else 0,
                        "test": len(s.test)},
            "notes": s.notes, "world_size": D.info().world_size, "train": cfg.to_dict(),
            # float sums depend on the thread count: bit-identity needs the same one
            "torch_threads": cfg.threads or torch.get_num_threads(),
        }
        n_params = sum(p.numel() for p in s.model.parameters())
        trainer, test = _make_trainer(s, cfg, run, out, log, progress, say, teacher_net)
        if D.is_main():     # only now: a run that cannot start leaves no folder behind
            _write_json(out / "config.json", run)
        started = True
        say(f"training {spec['model'] if len(spec['model']) < 60 else 'the pattern'} "
            f"({n_params:,} parameters) on {len(s.train)} images of "
            f"{'x'.join(map(str, s.input_size))}, validating on {run['samples']['val']}, "
            f"{cfg.epochs} epochs of batch {cfg.batch_size} with {cfg.optimizer} lr {cfg.lr:g}"
            + (f" (pretrained layers {cfg.lr_backbone:g})" if cfg.lr_backbone is not None
               else ""))
        return _finish(trainer, s, run, out, say, test)
    finally:
        if not started:
            abandon(out, lock, created)
        elif lock is not None:
            lock.release()


def _teacher(teacher: str | Path, s: _Setup, cfg: TrainConfig, mean, std,
             say) -> tuple[nn.Module, dict[str, Any]]:
    """The distillation teacher of a new run, checked against the student's data, and its
    config.json record."""
    import importlib
    dist = importlib.import_module("deeparch.edge.distillation")

    if _is_cached({"transfer": s.pretrained.record if s.pretrained is not None else None}):
        raise TrainingError("the cached regime trains the classifier on stored features, "
                            "which a teacher cannot read; use --regime linear with a teacher.")
    t = dist.load_teacher(teacher)
    for n in dist.check_teacher(t, s.train.classes, s.input_size):
        say(n)
    say(f"distilling from the teacher {t.given} ({t.model[:60]}) with temperature "
        f"{cfg.temperature:g} and alpha {cfg.alpha:g}")
    return (dist.teacher_module(t, mean, std, s.input_size),
            dist.record(t, cfg.temperature, cfg.alpha))


def _resumed_teacher(run: dict[str, Any], cfg: TrainConfig, s: _Setup,
                     out: Path) -> nn.Module | None:
    """The teacher a stored run learns from, as recorded (or None)."""
    d = run.get("distill")
    if d is None:
        return None
    import importlib
    dist = importlib.import_module("deeparch.edge.distillation")

    if (d["temperature"], d["alpha"]) != (cfg.temperature, cfg.alpha):
        raise CheckpointError(f"{out / 'config.json'} is damaged: its distill entry and its "
                              f"training settings disagree on temperature or alpha; retrain "
                              f"the run or restore its config.json.")
    t = dist.reload_teacher(d, out)
    try:
        dist.check_teacher(t, run["classes"], run["input_size"])
    except DeeparchError as exc:
        raise CheckpointError(f"the teacher of the run in {out} no longer fits it "
                              f"({str(exc).rstrip('.')}).") from None
    return dist.teacher_module(t, run["mean"], run["std"], run["input_size"])


def _lock_run(out: Path) -> RunLock | None:
    """Hold a stored run folder for writing (rank 0 only) and clear what a kill left."""
    if not D.is_main():
        return None
    lock = RunLock(out).acquire()
    sweep_temps(out)
    return lock


def _pick_checkpoint(out: Path, trainer: Trainer, which: str) -> Path | None:
    """The checkpoint to resume from, or None to start at epoch 1 (nothing was trained).

    A damaged or missing ``last`` is never silently replaced by a fresh start: with a
    ``best`` checkpoint beside it the sentence offers that one; with finished epochs on
    record but no checkpoint at all, it refuses. The one exception is the state a kill
    leaves between the two writes of an epoch (``best`` is written first): no ``last`` yet,
    and a ``best`` as new as the history; then ``best`` is simply the newest checkpoint."""
    from .checkpoint import read_checkpoint_state

    if which not in ("last", "best"):
        raise CheckpointError(f"resume from 'last' or 'best', got {which!r}.")
    last, best = trainer.last_checkpoint, trainer.best_checkpoint

    def readable(p: Path) -> tuple[bool, str]:
        if not p.is_file():
            return False, "missing"
        try:
            return True, str(read_checkpoint_state(p).get("epoch", "?"))
        except CheckpointError:
            return False, "damaged"

    ok_best, best_epoch = readable(best)
    if which == "best":
        if not ok_best:
            raise CheckpointError(f"{best} is {best_epoch}, so the run cannot resume from its "
                                  f"best epoch.")
        return best
    ok_last, how = readable(last)
    if ok_last:
        return last
    done = 0
    try:
        done = len(json.loads((out / "history.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        pass
    if how == "missing" and ok_best and best_epoch.isdigit() and int(best_epoch) >= done:
        # killed between writing best and last (best is written first): best is the newest
        return best
    if how == "damaged" or ok_best:
        offer = (f"resume from the best epoch's checkpoint (epoch {best_epoch}) with "
                 f"`deeparch train --resume {out} --from best` (checkpoint='best' in Python)"
                 if ok_best else f"no best checkpoint is readable either; start over with "
                                 f"`deeparch train ... --out {out} --force`")
        raise CheckpointError(f"{last} is {how}; {offer}.")
    if done or (out / "model.safetensors").exists():
        raise CheckpointError(f"{out} has finished epochs on record but no checkpoint to "
                              f"continue from; start over with `deeparch train ... --out {out} "
                              f"--force`.")
    return None


def resume(out: str | Path, *, epochs: int | None = None, checkpoint: str = "last",
           threads: int | None = None, log: Callable[[str], Any] | None = print,
           progress: bool | None = None) -> RunResult:
    """Continue the run in ``out`` with its own settings, from ``checkpoints/last``
    (``checkpoint='best'``: from the best epoch's checkpoint, training the later epochs again).

    On CPU the result is bit-identical to a run that was never interrupted. That fixes what
    may change: only ``epochs``, and only to a number no smaller than the epochs already
    trained, and (for the ``cosine`` and ``onecycle`` schedules, whose rate at every step
    depends on the run's length) not at all. Anything else is refused with one sentence;
    to train on with other settings, start a new run. ``config.json`` records the new
    ``epochs`` once the run has resumed. ``threads`` (CPU threads, hardware rather than a
    setting of the run) may be given for the machine at hand."""
    out = Path(out)
    run = read_run_config(out)
    cfg = TrainConfig.from_dict(run["train"])
    if threads is not None:
        cfg = cfg.replace(threads=threads)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise TrainingError(f"epochs must be a whole number >= 1, got {epochs!r}.")
        if epochs != cfg.epochs and cfg.schedule in LENGTH_DEPENDENT_SCHEDULES:
            raise TrainingError(
                f"{out} uses the {cfg.schedule} schedule, laid out for its {cfg.epochs} epochs: "
                f"with epochs={epochs} every step's learning rate would change, so the result "
                f"would match no uninterrupted run; resume without changing epochs, or train "
                f"a new run with the epochs you want.")
        cfg = cfg.replace(epochs=epochs)
    D.init_from_env(cfg.device)
    lock = _lock_run(out)
    try:
        say = log if (log is not None and D.is_main()) else (lambda s: None)
        s = _setup(run, cfg, fit_input=False, stored=out)
        teacher = _resumed_teacher(run, cfg, s, out)
        trainer, test = _make_trainer(s, cfg, run, out, log, progress, say, teacher)
        path = _pick_checkpoint(out, trainer, checkpoint)
        threads = cfg.threads or torch.get_num_threads()
        if isinstance(run.get("torch_threads"), int) and run["torch_threads"] != threads:
            say(f"note: the run was trained with {run['torch_threads']} CPU threads and resumes "
                f"with {threads}; float sums then round differently, so the result will be "
                f"close to, not bit-identical with, an uninterrupted run (--threads sets it)")
        if path is not None:
            trainer.resume(path)
            if epochs is not None and epochs < trainer.epoch:
                raise TrainingError(f"{out} has already trained {trainer.epoch} epochs; "
                                    f"epochs={epochs} cannot undo them (give at least "
                                    f"{trainer.epoch}).")
            if trainer.epoch >= cfg.epochs:
                say(f"{out} already finished its {cfg.epochs} epochs; writing its results again")
            else:
                say(f"resuming {out} after epoch {trainer.epoch} of {cfg.epochs}"
                    + (" (from the best checkpoint)" if checkpoint == "best" else ""))
            if epochs is not None and epochs > trainer.epoch:
                trainer.stopped_early = False
        else:
            say(f"{out} has no checkpoint yet: starting from epoch 1")
        if epochs is not None and D.is_main() and run["train"].get("epochs") != epochs:
            run["train"] = cfg.to_dict()
            _write_json(out / "config.json", run)
        return _finish(trainer, s, run, out, say, test)
    finally:
        if lock is not None:
            lock.release()


def _is_cached(run: dict[str, Any]) -> bool:
    t = run.get("transfer")
    return bool(t) and str(t.get("regime")) == "cached"


def _check_cached(cfg: TrainConfig) -> None:
    """What the cached regime cannot do: augment on the fly, or train under torchrun."""
    if cfg.augment:
        raise TrainingError("the cached regime computes every image's features once, so the "
                            "images cannot be augmented on the fly; leave --augment out or use "
                            "--regime linear.")
    if D.info().world_size > 1:
        raise TrainingError("the cached regime trains one small layer on stored features; run "
                            "it in one process, not under torchrun.")


def _make_trainer(s: _Setup, cfg: TrainConfig, run: dict[str, Any], out: Path, log, progress,
                  say, teacher: nn.Module | None = None) -> tuple[Trainer, Any]:
    """The run's Trainer and the test data it is evaluated on: the whole model on images, or
    (the ``cached`` regime) the classifier alone on features computed once."""
    if not _is_cached(run):
        return (Trainer(s.model, s.train, s.val, cfg, out=out, mean=run["mean"],
                        std=run["std"], classes=run["classes"], log=log, progress=progress,
                        teacher=teacher),
                s.test)
    _check_cached(cfg)
    from ..transfer.regime import feature_head
    from .pretrained import cached_features
    from .speed import BatchStream

    device = D.local_device(cfg.device)
    splits = {"train": s.train, "test": s.test, **({"val": s.val} if s.val is not None else {})}
    key = {"sha256": run["transfer"]["sha256"], "data": s.fingerprint.get("train"),
           "test": s.fingerprint.get("test"), "input_size": run["input_size"],
           "mean": run["mean"], "std": run["std"], "val_split": cfg.val_split, "seed": cfg.seed,
           "subset": cfg.subset}
    feats = cached_features(s.model, splits, run["mean"], run["std"],
                            out if D.is_main() else None, key, cfg.batch_size, device, say)
    train = BatchStream(feats["train"], s.train.labels, cfg.batch_size, shuffle=True,
                        seed=cfg.seed, device=device)
    val = (BatchStream(feats["val"], s.val.labels, max(cfg.batch_size, 256), shuffle=False,
                       device=device) if s.val is not None else None)
    test = BatchStream(feats["test"], s.test.labels, max(cfg.batch_size, 256), shuffle=False,
                       device=device)
    trainer = Trainer(feature_head(s.model), train, val, cfg, out=out, mean=run["mean"],
                      std=run["std"], classes=run["classes"], log=log, progress=progress)
    return trainer, test


def _finish(trainer: Trainer, s: _Setup, run: dict[str, Any], out: Path,
            say: Callable[[str], Any], test: Any = None) -> RunResult:
    model = s.model if _is_cached(run) else trainer.module
    history = trainer.fit()
    paths = {"config": out / "config.json", "history": out / "history.json",
             "log": out / "log.csv", "metrics": out / "metrics.json",
             "model": out / "model.safetensors", "curves": out / "curves.png",
             "confusion": out / "confusion.png", "last": trainer.last_checkpoint,
             "best": trainer.best_checkpoint}
    metrics: dict[str, Any] = {}
    if D.is_main():
        metrics = trainer.evaluate(s.test if test is None else test)
        restored = (trainer.config.restore_best and trainer.best is not None
                    and history and trainer.best["epoch"] != history[-1]["epoch"])
        best_epoch = trainer.best["epoch"] if trainer.best else None
        metrics["weights"] = (f"best (epoch {best_epoch})" if restored else
                              f"last (epoch {trainer.epoch})")
        metrics["split"] = "test"
        from ..viz.plots import plot_confusion, plot_history
        try:
            history.save(paths["history"], paths["log"])
            _write_json(paths["metrics"], metrics)
            save_weights(paths["model"], model,
                         {"deeparch.model": run["model"], "deeparch.classes": run["classes"],
                          "deeparch.input_size": run["input_size"], "deeparch.mean": run["mean"],
                          "deeparch.std": run["std"]})
            plot_history(history, paths["curves"], title=_title(run))
            plot_confusion(metrics["confusion_matrix"], run["classes"], paths["confusion"],
                           title=f"{_title(run)}: test confusion matrix "
                                 f"(accuracy {metrics['accuracy']:.2%})")
        except WriteError as exc:
            if isinstance(exc, CheckpointWriteError):
                raise
            raise CheckpointWriteError(f"{str(exc).rstrip('.')} and the previous file is "
                                       f"kept.") from exc
    D.barrier()
    result = RunResult(out, history, metrics, run, model, paths)
    if metrics:
        for line in result.summary_lines():
            say(line)
    return result


def _title(run: dict[str, Any]) -> str:
    model = run["model"] if len(run["model"]) <= 40 else "pattern"
    data = Path(run["data"]).name if _is_path(run["data"]) else run["data"]
    return f"{model} on {data}"


# --------------------------------------------------------------------------- evaluate

def build_recorded(model: str, num_classes: int, input_size: Sequence[int],
                   options: dict[str, Any] | None = None, *, where: str,
                   error: type[DeeparchError] = CheckpointError) -> nn.Module:
    """The network a run (or a file's metadata, ``where``) records: a searched architecture
    (``search:SPACE:ARCH``), a pattern, or a registered model at the recorded image size.
    A record that cannot be built raises ``error`` naming ``where``."""
    from ..models.registry import accepts, create_model
    from ..pattern import from_pattern, looks_like_pattern

    c, h, w = input_size
    try:
        if model.startswith("search:"):      # an architecture of a search space
            from ..search.loop import build_arch_model
            return build_arch_model(model, num_classes, c)[0]
        if looks_like_pattern(model):
            return from_pattern(model, input_size=(c, h, w))
        kw = dict(options or {})
        if accepts(model, "img_size") and "img_size" not in kw:
            kw["img_size"] = h if h == w else (h, w)
        return create_model(model, num_classes=num_classes, in_chans=c, **kw)
    except DeeparchError as exc:
        raise error(f"the model recorded in {where} cannot be built "
                    f"({str(exc).splitlines()[0].rstrip('.')}).") from None
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise error(f"the model recorded in {where} cannot be built "
                    f"({type(exc).__name__}); the record is damaged.") from None


def load_run(out: str | Path, which: str = "model") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (``which``: ``model``, ``best`` or ``last``) and
    its config."""
    out = Path(out)
    run = read_run_config(out)
    net = build_recorded(run["model"], run["num_classes"], run["input_size"],
                         run.get("model_options"), where=str(out / "config.json"))
    files = {"model": out / "model.safetensors",
             "best": out / "checkpoints" / "best.safetensors",
             "last": out / "checkpoints" / "last.safetensors"}
    if which not in files:
        raise CheckpointError(f"which must be model, best or last, got {which!r}.")
    path = files[which]
    if which == "model" and not path.is_file():
        path = files["best"] if files["best"].is_file() else files["last"]
        if not path.is_file():
            raise CheckpointError(f"{out} has no weights yet (no model.safetensors and no "
                                  f"checkpoint); resume or retrain the run first.")
    load_weights(path, net)
    net.eval()
    return net, run


def evaluate(out: str | Path | Sequence[str | Path], *, crops: str = "none",
             crop_size: int | None = None, which: str = "model", batch_size: int = 256,
             device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a run folder on its test split; several folders make an ensemble
    (softmax averaged). ``crops``: see :data:`deeparch.train.metrics.CROPS`."""
    from .metrics import evaluate as _evaluate, metrics_from_probs, predict

    outs = [out] if isinstance(out, (str, Path)) else list(out)
    if not outs:
        raise CheckpointError("evaluate needs at least one run folder.")
    if crop_size is not None and crops == "none":
        raise DataError("a crop size applies to test-time crops only; give crops (center, "
                        "5crop, 10crop, multi) with it, or leave it out.")
    dev = D.local_device(device)
    loaded = [load_run(o, which) for o in outs]
    first = loaded[0][1]
    cfg = TrainConfig.from_dict(first["train"])
    _, test, _ = _load_recorded(first, Path(outs[0]) / "config.json")
    if cfg.subset is not None and cfg.subset < len(test):
        from ..data import subset
        test = subset(test, cfg.subset, seed=cfg.seed)
    for o, (_, run) in zip(outs, loaded):
        _check_fingerprint(run, "test", _fit(test, run["input_size"]), Path(o))
    for o, (_, run) in zip(outs[1:], loaded[1:]):
        if run["data"] != first["data"] or run["classes"] != first["classes"] \
                or run["train"].get("subset") != cfg.subset:
            raise CheckpointError(f"{o} was trained on other data or classes than {outs[0]}; "
                                  f"an ensemble needs runs on the same data set.")
    if len(loaded) == 1:
        net, run = loaded[0]
        metrics = _evaluate(net.to(dev), _fit(test, run["input_size"]),
                            batch_size=batch_size, mean=run["mean"], std=run["std"],
                            classes=run["classes"], crops=crops, crop_size=crop_size,
                            device=dev)
    else:
        probs = None
        for net, run in loaded:
            p = predict(net.to(dev), _fit(test, run["input_size"]).images, crops=crops,
                        crop_size=crop_size, mean=run["mean"], std=run["std"],
                        batch_size=batch_size, device=dev)
            probs = p if probs is None else probs + p
        metrics = metrics_from_probs(probs / len(loaded), test.labels, first["classes"])
    metrics["runs"] = [str(o) for o in outs]
    metrics["crops"] = crops
    metrics["weights"] = which
    return metrics


@dataclasses.dataclass
class RunData:
    """A run folder's own data, split as the run split it: ``train``/``val``/``test``
    datasets (uint8 images fitted to the run's input size), the normalisation and classes."""
    train: Any
    val: Any
    test: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    input_size: tuple[int, int, int]
    config: TrainConfig

    def normalised(self, split: str = "test", n: int | None = None) -> torch.Tensor:
        """The first ``n`` images of a split as float32, normalised as the model expects."""
        ds = getattr(self, split)
        if ds is None:
            raise DataError(f"the run has no {split} split.")
        images = ds.images[:n] if n is not None else ds.images
        x = torch.as_tensor(images).float() / 255.0
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std


def run_data(out: str | Path) -> RunData:
    """The data of a run folder, read from where config.json says and checked against its
    fingerprints, with the run's own validation split and test subset (for re-using a
    trained run's data: fine-tuning a pruned copy, calibrating int8, measuring accuracy)."""
    out = Path(out)
    run = read_run_config(out)
    cfg = TrainConfig.from_dict(run["train"])
    train_ds, test, _ = _load_recorded(run, out / "config.json")
    _check_fingerprint(run, "train", train_ds, out)
    size = tuple(run["input_size"])
    train_ds, test = _fit(train_ds, size), _fit(test, size)
    train_ds, val = split_data(train_ds, cfg)
    if cfg.subset is not None and cfg.subset < len(test):
        from ..data import subset
        test = subset(test, cfg.subset, seed=cfg.seed)
    _check_fingerprint(run, "test", test, out)
    return RunData(train_ds, val, test, tuple(run["mean"]), tuple(run["std"]),
                   list(run["classes"]), size, cfg)


__all__ = ["RUN_FORMAT", "RunData", "RunResult", "build_model", "evaluate", "is_run_dir",
           "load_data", "load_run", "read_run_config", "resume", "run_data", "train"]
