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

Every file is written atomically. ``train`` refuses a non-empty ``out`` unless
``force=True`` (which clears a previous run's files there first); continue an
interrupted run with ``resume(out)``.

The model is a registry name (``lenet5``) or a layer pattern. Its classes and input
channels come from the data set. When the model cannot take the data's image size
(LeNet-5's 5x5 convolutions on 8x8 digits) the images are resized to the model's default
input size, and the log says so.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import (CheckpointError, DataError, DeeparchError, ShapeError, TrainingError)
from ..io import WriteError, write_text
from . import distributed as D
from .checkpoint import CheckpointWriteError, load_weights, save_weights
from .config import TrainConfig, make_config
from .history import History
from .trainer import Trainer, split_data

RUN_FORMAT = "deeparch-run"
RUN_FILES = ("config.json", "history.json", "log.csv", "metrics.json", "model.safetensors",
             "curves.png", "confusion.png")
RUN_DIRS = ("checkpoints", "tensorboard")


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
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_run_config(out: str | Path) -> dict[str, Any]:
    out = Path(out)
    path = out / "config.json"
    if not out.is_dir():
        raise CheckpointError(f"{out} is not a folder; give the --out folder of a deeparch "
                              f"training run.")
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{out} has no config.json, so it is not a deeparch training run; "
                              f"give the --out folder of `deeparch train`.") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({exc}); the run folder is "
                              f"damaged.") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} was not written by deeparch train (no "
                              f"\"format\": \"{RUN_FORMAT}\" in it).")
    return cfg


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; give a folder for the run.")
    if not out.exists() or not any(out.iterdir()):
        return
    if is_run_dir(out):
        if not force:
            raise CheckpointError(f"{out} already holds a deeparch run; continue it with "
                                  f"`deeparch train --resume {out}`, or add --force to start "
                                  f"over there.")
    elif not force:
        raise CheckpointError(f"{out} exists and is not empty; choose a new --out folder, or "
                              f"add --force to write the run into it anyway.")
    if D.is_main():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)


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


def load_data(data: str, data_dir: str | None = None, download: bool = False):
    """(train, test, note) for a dataset name or path; a source without its own test split
    (a CSV file, a plain image folder) gets a fixed stratified 80/20 split (seed 0)."""
    from ..data import load_dataset, train_val_split

    train = load_dataset(data, "train", root=data_dir, download=download)
    test = load_dataset(data, "test", root=data_dir, download=download)
    note = None
    if train.images.shape == test.images.shape and torch.equal(train.images, test.images) \
            and torch.equal(train.labels, test.labels):
        train, test = train_val_split(train, 0.2, seed=0, stratified=True)
        note = (f"{data} has no separate test split: holding out a fixed 20% "
                f"({len(test)} images) as the test set")
    return train, test, note


def _resize(ds, size: tuple[int, int]):
    from ..data import resize_images

    if tuple(ds.images.shape[2:]) == tuple(size):
        return ds
    return dataclasses.replace(ds, images=resize_images(ds.images, size))


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


def _setup(spec: dict[str, Any], cfg: TrainConfig, fit_input: bool) -> _Setup:
    """Data + model for a run spec (``model``, ``model_options``, ``data``, ``data_dir``,
    ``image_size``; for a stored run also ``input_size``)."""
    from ..data import subset

    train, test, note = load_data(spec["data"], spec.get("data_dir"),
                                  spec.get("download", False))
    notes = [note] if note else []
    data_size = train.input_size
    c, h, w = data_size
    if spec.get("image_size"):
        hw = spec["image_size"]
        h, w = (hw, hw) if isinstance(hw, int) else tuple(hw)
    if spec.get("input_size"):                         # a stored run: exactly as before
        c, h, w = spec["input_size"]
        fit_input = False
    model, size, note = build_model(spec["model"], train.num_classes, (c, h, w),
                                    spec.get("model_options"), seed=cfg.seed, fit_input=fit_input)
    if note:
        notes.append(note)
    train, test = _resize(train, size[1:]), _resize(test, size[1:])
    train, val = split_data(train, cfg)
    if cfg.subset is not None and cfg.subset < len(test):
        test = subset(test, cfg.subset, seed=cfg.seed)
    return _Setup(model, train, val, test, tuple(size), tuple(data_size), notes)


# --------------------------------------------------------------------------- train / resume

def train(model: str, data: str, out: str | Path, data_dir: str | None = None, *,
          force: bool = False, model_options: dict[str, Any] | None = None,
          image_size: int | Sequence[int] | None = None, download: bool = False,
          log: Callable[[str], Any] | None = print, progress: bool | None = None,
          config: TrainConfig | dict | None = None, **changes: Any) -> RunResult:
    """Train ``model`` (a registry name or a layer pattern) on ``data`` (a dataset name or
    path) and write the run folder ``out`` (see the module docstring).

    Keywords are :class:`TrainConfig` fields (``epochs=30, lr=1e-3, ...``). Raises
    :class:`CheckpointError` for an ``out`` that already holds files (unless ``force``).
    Launched by torchrun, it trains data-parallel; rank 0 writes the files.
    """
    cfg = make_config(config, **changes)
    if not isinstance(model, str) or not model.strip():
        raise TrainingError("train() takes a model name or a layer pattern; for your own "
                            "nn.Module use deeparch.train.Trainer or fit().")
    if not isinstance(data, str) or not data.strip():
        raise DataError("train() takes a dataset name (digits, mnist, fashion_mnist, cifar10, "
                        "cifar100) or a path.")
    D.init_from_env(cfg.device)
    D.local_device(cfg.device)            # a bad device fails here, before any work
    out = Path(out)
    _prepare_out(out, force)
    say = log if (log is not None and D.is_main()) else (lambda s: None)
    spec = {
        "model": model.strip(), "model_options": dict(model_options or {}),
        "data": str(Path(data).expanduser().resolve()) if _is_path(data) else data,
        "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        "image_size": list(image_size) if isinstance(image_size, (list, tuple)) else image_size,
        "download": bool(download),
    }
    s = _setup(spec, cfg, fit_input=True)
    for n in s.notes:
        say(n)
    from ..data import channel_stats

    mean, std = channel_stats(s.train)
    std = tuple(max(v, 1e-6) for v in std)
    from .. import __version__

    run = {
        "format": RUN_FORMAT, "version": 1, "deeparch": __version__, **spec,
        "input_size": list(s.input_size), "data_input_size": list(s.data_size),
        "num_classes": s.train.num_classes, "classes": list(s.train.classes),
        "mean": list(mean), "std": list(std),
        "samples": {"train": len(s.train), "val": len(s.val) if s.val is not None else 0,
                    "test": len(s.test)},
        "notes": s.notes, "world_size": D.info().world_size, "train": cfg.to_dict(),
    }
    n_params = sum(p.numel() for p in s.model.parameters())
    trainer = Trainer(s.model, s.train, s.val, cfg, out=out, mean=mean, std=std,
                      classes=s.train.classes, log=log, progress=progress)
    if D.is_main():     # only now: a run that cannot start leaves no folder behind
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", run)
    say(f"training {spec['model'] if len(spec['model']) < 60 else 'the pattern'} "
        f"({n_params:,} parameters) on {len(s.train)} images of "
        f"{'x'.join(map(str, s.input_size))}, validating on {run['samples']['val']}, "
        f"{cfg.epochs} epochs of batch {cfg.batch_size} with {cfg.optimizer} lr {cfg.lr:g}")
    return _finish(trainer, s, run, out, say)


def resume(out: str | Path, *, epochs: int | None = None, log: Callable[[str], Any] | None = print,
           progress: bool | None = None) -> RunResult:
    """Continue the run in ``out`` from ``checkpoints/last`` (to ``epochs`` if given, else to
    the run's own number of epochs). On CPU the final weights are bit-identical to those
    of a run that was never interrupted."""
    out = Path(out)
    run = read_run_config(out)
    cfg = TrainConfig.from_dict(run["train"])
    if epochs is not None:
        cfg = cfg.replace(epochs=epochs)
    D.init_from_env(cfg.device)
    say = log if (log is not None and D.is_main()) else (lambda s: None)
    s = _setup(run, cfg, fit_input=False)
    trainer = Trainer(s.model, s.train, s.val, cfg, out=out, mean=run["mean"], std=run["std"],
                      classes=run["classes"], log=log, progress=progress)
    last = trainer.last_checkpoint
    if last.is_file():
        trainer.resume(last)
        if trainer.epoch >= cfg.epochs and epochs is None:
            say(f"{out} already finished its {cfg.epochs} epochs; writing its results again")
        else:
            say(f"resuming {out} after epoch {trainer.epoch} of {cfg.epochs}")
        if epochs is not None and epochs > trainer.epoch:
            trainer.stopped_early = False
    else:
        say(f"{out} has no checkpoint yet: starting from epoch 1")
    if epochs is not None and D.is_main():
        run["train"] = cfg.to_dict()
        _write_json(out / "config.json", run)
    return _finish(trainer, s, run, out, say)


def _finish(trainer: Trainer, s: _Setup, run: dict[str, Any], out: Path,
            say: Callable[[str], Any]) -> RunResult:
    history = trainer.fit()
    paths = {"config": out / "config.json", "history": out / "history.json",
             "log": out / "log.csv", "metrics": out / "metrics.json",
             "model": out / "model.safetensors", "curves": out / "curves.png",
             "confusion": out / "confusion.png", "last": trainer.last_checkpoint,
             "best": trainer.best_checkpoint}
    metrics: dict[str, Any] = {}
    if D.is_main():
        metrics = trainer.evaluate(s.test)
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
            save_weights(paths["model"], trainer.module,
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
    result = RunResult(out, history, metrics, run, trainer.module, paths)
    if metrics:
        for line in result.summary_lines():
            say(line)
    return result


def _title(run: dict[str, Any]) -> str:
    model = run["model"] if len(run["model"]) <= 40 else "pattern"
    data = Path(run["data"]).name if _is_path(run["data"]) else run["data"]
    return f"{model} on {data}"


# --------------------------------------------------------------------------- evaluate

def load_run(out: str | Path, which: str = "model") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (``which``: ``model``, ``best`` or ``last``) and
    its config."""
    out = Path(out)
    run = read_run_config(out)
    from ..models.registry import accepts, create_model
    from ..pattern import from_pattern, looks_like_pattern

    c, h, w = run["input_size"]
    if looks_like_pattern(run["model"]):
        net = from_pattern(run["model"], input_size=(c, h, w))
    else:
        kw = dict(run.get("model_options") or {})
        if accepts(run["model"], "img_size") and "img_size" not in kw:
            kw["img_size"] = h if h == w else (h, w)
        net = create_model(run["model"], num_classes=run["num_classes"], in_chans=c, **kw)
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
    from .speed import select_device

    outs = [out] if isinstance(out, (str, Path)) else list(out)
    if not outs:
        raise CheckpointError("evaluate needs at least one run folder.")
    dev = select_device(device)
    loaded = [load_run(o, which) for o in outs]
    first = loaded[0][1]
    cfg = TrainConfig.from_dict(first["train"])
    _, test, _ = load_data(first["data"], first.get("data_dir"))
    if cfg.subset is not None and cfg.subset < len(test):
        from ..data import subset
        test = subset(test, cfg.subset, seed=cfg.seed)
    for o, (_, run) in zip(outs[1:], loaded[1:]):
        if run["data"] != first["data"] or run["classes"] != first["classes"] \
                or run["train"].get("subset") != cfg.subset:
            raise CheckpointError(f"{o} was trained on other data or classes than {outs[0]}; "
                                  f"an ensemble needs runs on the same data set.")
    if len(loaded) == 1:
        net, run = loaded[0]
        metrics = _evaluate(net.to(dev), _resize(test, run["input_size"][1:]),
                            batch_size=batch_size, mean=run["mean"], std=run["std"],
                            classes=run["classes"], crops=crops, crop_size=crop_size,
                            device=dev)
    else:
        probs = None
        for net, run in loaded:
            p = predict(net.to(dev), _resize(test, run["input_size"][1:]).images, crops=crops,
                        crop_size=crop_size, mean=run["mean"], std=run["std"],
                        batch_size=batch_size, device=dev)
            probs = p if probs is None else probs + p
        metrics = metrics_from_probs(probs / len(loaded), test.labels, first["classes"])
    metrics["runs"] = [str(o) for o in outs]
    metrics["crops"] = crops
    metrics["weights"] = which
    return metrics


__all__ = ["RUN_FORMAT", "RunResult", "build_model", "evaluate", "is_run_dir", "load_data",
           "load_run", "read_run_config", "resume", "train"]
