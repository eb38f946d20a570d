"""The training loop: ``Trainer(model, train, val, config).fit() -> History``.

One epoch, in order (everything random depends only on ``(seed, epoch)``, which is what
makes ``resume`` bit-identical on CPU):

1. reseed torch's global generator from ``(seed, epoch)`` (dropout, drop-path);
2. for every batch of the ``BatchStream`` (shuffled and augmented from ``(seed, epoch)``):
   set the learning rate of this global step, forward (under autocast on CUDA), stop on a
   NaN/inf loss, backward, clip, step;
3. evaluate on the validation data; update the plateau schedule;
4. write ``history.json``, ``log.csv`` and ``checkpoints/last`` (+ ``best`` when the
   monitored metric improved), print one line; stop early when told to.

The monitored metric is the validation accuracy (training accuracy without validation).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError, DeeparchError, TrainingError
from . import distributed as D
from .checkpoint import load_checkpoint, save_checkpoint, unwrap
from .config import TrainConfig, make_config
from .history import History, ProgressBar, format_epoch
from .metrics import evaluate
from .schedules import LRSchedule, build_optimizer, set_lr

Callback = Callable[["Trainer", dict], Any]


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while the block runs; deliver the first one after it.

    An epoch's files (history, ``best``, ``last`` and their ``.json`` copies) are written
    as one step: a stop asked for in between waits the few milliseconds until they agree,
    so the state a clean stop leaves always says one epoch. (SIGKILL cannot be held; the
    write order and :func:`run._pick_checkpoint` cover that case.) Outside the main
    thread, where handlers cannot be set, the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []

    def hold(signum, frame):
        pending.append((signum, frame))

    kept = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        kept[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if pending:
            signum, frame = pending[0]
            handler = kept[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The trainer's seeds (dropout, drop-path: stream 1000): :func:`speed.epoch_seed`
    salted apart from the batch streams."""
    from .speed import epoch_seed as mixed

    return mixed(seed, epoch, stream, 0x7EA1)


# --------------------------------------------------------------------------- data

def split_data(train: Any, config: TrainConfig) -> tuple[Any, Any]:
    """Apply ``subset`` then the stratified ``val_split`` (seeded by ``config.seed``) to an
    ArrayDataset; returns (train, val or None)."""
    from ..data import subset, train_val_split

    if config.subset is not None:
        if config.subset < len(train):
            train = subset(train, config.subset, seed=config.seed)
    if config.val_split > 0:
        return train_val_split(train, config.val_split, seed=config.seed, stratified=True)
    return train, None


def _arrays(data: Any, what: str) -> tuple[Tensor, Tensor]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(f"{what} images must be uint8 N x C x H x W (the trainer normalises "
                            f"them), got {x.dtype} {tuple(x.shape)}.")
        return x, y.long()
    raise DataError(f"{what} must be an ArrayDataset, a BatchStream or a pair (uint8 images, "
                    f"labels), got {type(data).__name__}.")


# --------------------------------------------------------------------------- precision

class _Precision:
    """Autocast + grad scaling for one device and ``config.precision``."""

    def __init__(self, precision: str, device: torch.device):
        from .speed import autocast, bf16_supported

        self.enabled = False
        self.scaler = None
        self._ctx = None
        if precision == "fp32":
            return
        if device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            if precision == "fp16" or (precision in ("auto", "bf16") and not bf16):
                dtype = torch.float16
                self.scaler = torch.amp.GradScaler("cuda")
            else:
                dtype = torch.bfloat16
            self.enabled = True
            self._ctx = lambda: torch.autocast("cuda", dtype=dtype)
            return
        if precision == "auto":
            return                       # CPU: fp32, exact and reproducible
        if precision == "fp16":
            raise TrainingError("fp16 training needs a CUDA GPU; on the CPU use --precision "
                                "bf16 or fp32.")
        if not bf16_supported(device):
            raise TrainingError("bf16 is not usable on this CPU (a test run of bf16 kernels in "
                                "a subprocess failed); train with --precision fp32.")
        self.enabled = True
        self._ctx = lambda: autocast(device, True)

    def __call__(self):
        import contextlib

        return self._ctx() if self._ctx is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Train ``model`` on ``train_data``, validating on ``val_data``.

    ``train_data`` / ``val_data``: ArrayDatasets (uint8; normalised on the fly with
    ``mean``/``std``, by default the training data's channel statistics), pairs
    ``(uint8 images, labels)``, or ready :class:`~deeparch.train.speed.BatchStream` s.
    Without ``val_data``, ``config.val_split`` of an ArrayDataset is held out (stratified,
    seeded); ``config.subset`` is applied first.

    ``config`` is a :class:`TrainConfig` or a dict; keyword ``changes`` override it.
    ``out``: a folder for ``checkpoints/{last,best}.safetensors`` (+ ``.json``),
    ``history.json`` and ``log.csv`` (rank 0 only). ``log``: where the one-line epoch
    summaries go (``print``; ``None`` for silence). ``progress``: a progress bar on stderr
    (default: when stderr is a terminal). ``callbacks``: ``f(trainer, record)`` after every
    epoch; returning ``True`` stops training.

    ``teacher``: an ``nn.Module`` to distil from (knowledge distillation, Hinton et al.
    2015; see :mod:`deeparch.edge.distillation`). It is kept in eval mode and run under
    ``torch.no_grad`` on exactly the student's (augmented, normalised) batch -- so it must
    expect the student's normalisation, as a pruned or quantized copy of it does -- and its
    logits turn the loss into ``(1 - alpha) * CE + alpha * T^2 * KL`` with
    ``config.temperature`` and ``config.alpha``. It is not trained and not saved in the
    checkpoints (it is moved to the trainer's device); give the same teacher again to
    ``resume``.
    """

    def __init__(self, model: nn.Module, train_data: Any, val_data: Any = None,
                 config: TrainConfig | dict | None = None, *, out: str | Path | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 classes: Sequence[str] | None = None, log: Callable[[str], Any] | None = print,
                 progress: bool | None = None, callbacks: Iterable[Callback] = (),
                 param_groups: list[dict[str, Any]] | None = None,
                 teacher: nn.Module | None = None, **changes: Any):
        from .speed import BatchStream, prepare_for_training

        self.config = c = make_config(config, **changes)
        self.dist = D.info()
        self.device = D.local_device(c.device)
        self.precision = _Precision(c.precision, self.device)
        self.out = Path(out) if out is not None else None
        self.log = log if (log is not None and self.dist.is_main) else (lambda s: None)
        self.progress = progress
        self.callbacks = list(callbacks)
        self.classes = list(classes) if classes is not None else getattr(train_data, "classes",
                                                                         None)
        world = self.dist.world_size
        if c.tensorboard and self.dist.is_main:     # before any work: not after an epoch
            import importlib.util
            if importlib.util.find_spec("tensorboard") is None:
                raise TrainingError("TensorBoard logging needs the tensorboard package: pip "
                                    "install tensorboard (or train without --tensorboard).")
        if c.batch_size % world:
            raise TrainingError(f"batch_size {c.batch_size} is the global batch and must be "
                                f"divisible by the {world} processes.")

        # ---- data
        if isinstance(train_data, BatchStream):
            self.train_stream = train_data
            self.mean, self.std = train_data.mean, train_data.std
            if val_data is not None and not isinstance(val_data, BatchStream):
                vx, vy = _arrays(val_data, "val_data")
                val_data = BatchStream(vx, vy, c.batch_size, shuffle=False, mean=self.mean,
                                       std=self.std, device=self.device)
            self.val_stream = val_data
        else:
            if val_data is None and hasattr(train_data, "images"):
                train_data, val_data = split_data(train_data, c)
            x, y = _arrays(train_data, "train_data")
            if len(x) == 0:
                raise DataError("the training data is empty.")
            if mean is None or std is None:
                from ..data import channel_stats
                from ..data.sources import ArrayDataset
                m, s = channel_stats(ArrayDataset(x, y, [str(i) for i in
                                                         range(int(y.max()) + 1)], "train"))
                mean = mean if mean is not None else m
                std = std if std is not None else tuple(max(v, 1e-6) for v in s)
            self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
            augment = None
            if c.augment:
                from ..data.augment import augment_from_spec
                augment = augment_from_spec(c.augment)
                if not augment.enabled:
                    augment = None
            try:
                self.train_stream = BatchStream(
                    x, y, c.batch_size // world, shuffle=True, seed=c.seed, mean=self.mean,
                    std=self.std, augment=augment, device=self.device,
                    rank=self.dist.rank, world_size=world)
            except ValueError as exc:
                raise DataError(f"cannot batch the training data: {exc}") from exc
            self.val_stream = None
            if val_data is not None:
                vx, vy = _arrays(val_data, "val_data")
                if world > 1:   # every process evaluates its own contiguous share
                    part = torch.tensor_split(torch.arange(len(vx)), world)[self.dist.rank]
                    vx, vy = vx[part], vy[part]
                self.val_stream = BatchStream(vx, vy, max(c.batch_size, 256), shuffle=False,
                                              mean=self.mean, std=self.std, device=self.device)
        self.n_train = len(self.train_stream.labels)
        self.steps_per_epoch = len(self.train_stream)
        if self.steps_per_epoch == 0:
            raise DataError(f"{self.n_train} training samples make no batch for {world} "
                            f"processes; use more data.")

        # ---- model and optimisation
        self.module = prepare_for_training(unwrap(model), self.device)
        self.model = D.wrap(self.module, self.device)
        if param_groups is None and c.lr_backbone is not None:
            # pretrained layers at lr_backbone, the classifier (and new heads) at lr
            from ..transfer.surgery import param_groups as _groups
            param_groups = _groups(self.module, c.lr, c.lr_backbone)
        self.optimizer = build_optimizer(self.module, c, param_groups)
        self.schedule = LRSchedule(c, self.steps_per_epoch)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.teacher = self._prepare_teacher(teacher) if teacher is not None else None

        # ---- state
        self.history = History()
        self.epoch = 0          # epochs finished
        self.step = 0           # optimizer steps taken
        self.best: dict[str, Any] | None = None
        self.stopped_early = False
        self._best_weights: dict[str, Tensor] | None = None
        self.last_lr = self.schedule.lr_at(0)

    def _prepare_teacher(self, teacher: Any) -> nn.Module:
        """The distillation teacher: on the device, in eval mode, checked to read the
        student's batches and to predict as many classes as the student."""
        if not isinstance(teacher, nn.Module):
            raise TrainingError(f"teacher must be an nn.Module (or None), got "
                                f"{type(teacher).__name__}.")
        teacher = unwrap(teacher)
        mine = {id(p) for p in self.module.parameters()}
        if teacher is self.module or any(id(p) in mine for p in teacher.parameters()):
            raise TrainingError("the teacher shares weights with the student; give a separate "
                                "model (a copy) as the teacher.")
        teacher = teacher.to(self.device).eval()
        shape = tuple(self.train_stream.images.shape[1:])
        x = torch.zeros((2, *shape), device=self.device)
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                s = self.module(x)
                try:
                    t = teacher(x)
                except (RuntimeError, ValueError, DeeparchError) as exc:
                    raise TrainingError(
                        f"the teacher cannot read the student's {'x'.join(map(str, shape))} "
                        f"batches ({str(exc).splitlines()[0].rstrip('.')[:160]}); give a "
                        f"teacher trained on the same kind of images.") from None
        finally:
            self.module.train(was)
        s = s[0] if isinstance(s, (tuple, list)) else s
        t = t[0] if isinstance(t, (tuple, list)) else t
        if not isinstance(t, Tensor) or tuple(t.shape) != tuple(s.shape):
            got = tuple(t.shape[1:]) if isinstance(t, Tensor) else type(t).__name__
            raise TrainingError(f"the teacher outputs {got} per image but the student "
                                f"{tuple(s.shape[1:])}; give a teacher with the student's "
                                f"classes.")
        return teacher

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_dir(self) -> Path | None:
        return self.out / "checkpoints" if self.out is not None else None

    @property
    def last_checkpoint(self) -> Path | None:
        d = self.checkpoint_dir
        return d / "last.safetensors" if d is not None else None

    @property
    def best_checkpoint(self) -> Path | None:
        d = self.checkpoint_dir
        return d / "best.safetensors" if d is not None else None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The run state a checkpoint stores: everything but wall-clock time (the epochs'
        ``seconds`` go to the checkpoint's ``.json`` copy), so identical runs write
        identical checkpoints."""
        history = [{k: v for k, v in e.items() if k != "seconds"} for e in self.history]
        return {
            "epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch,
            "history": history, "schedule": self.schedule.state_dict(),
            "best": self.best, "stopped_early": self.stopped_early,
            "config": self.config.to_dict(), "world_size": self.dist.world_size,
            "mean": list(self.mean), "std": list(self.std),
        }

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint of the model, optimizer and run state to ``path``."""
        return save_checkpoint(path, self.module, self.optimizer, self.state(),
                               {"seconds": [e.get("seconds") for e in self.history]})

    def resume(self, path: str | Path | None = None) -> "Trainer":
        """Load a checkpoint (default: ``out/checkpoints/last.safetensors``) to continue from."""
        path = Path(path) if path is not None else self.last_checkpoint
        if path is None:
            raise TrainingError("resume needs a checkpoint path or a trainer with out=DIR.")
        state = load_checkpoint(path, self.module, self.optimizer)
        if int(state.get("steps_per_epoch", -1)) != self.steps_per_epoch:
            from ..errors import CheckpointError
            raise CheckpointError(f"{path} was written with {state.get('steps_per_epoch')} "
                                  f"steps per epoch but this run has {self.steps_per_epoch}; "
                                  f"resume with the same data, subset and batch size.")
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        records = [dict(e) for e in state.get("history", [])]
        seconds = _seconds_beside(path, len(records))
        for e, sec in zip(records, seconds):
            e.setdefault("seconds", sec)
        self.history = History(records)
        self.schedule.load_state_dict(state.get("schedule", {}))
        self.best = state.get("best")
        self.stopped_early = bool(state.get("stopped_early", False))
        if self.history:
            self.last_lr = self.history[-1].get("lr", self.last_lr)
        return self

    # ------------------------------------------------------------------ training
    def fit(self) -> History:
        """Train until ``config.epochs`` (or early stopping); returns the :class:`History`."""
        c = self.config
        tb = self._tensorboard()
        threads = torch.get_num_threads()
        if c.threads:
            torch.set_num_threads(c.threads)
        try:
            while self.epoch < c.epochs and not self.stopped_early:
                record = self._epoch(self.epoch)
                self._end_epoch(record, tb)
        finally:
            torch.set_num_threads(threads)
            if tb is not None:
                tb.close()
        if c.restore_best:
            self.restore_best()
        return self.history

    def restore_best(self) -> bool:
        """Put the best epoch's weights back into the model; True if they differed from the last."""
        if not self.best or not self.history or self.best["epoch"] == self.history[-1]["epoch"]:
            return False
        if self._best_weights is not None:
            self.module.load_state_dict(self._best_weights)
        elif self.best_checkpoint is not None and self.best_checkpoint.is_file():
            from .checkpoint import read_checkpoint_state
            found = read_checkpoint_state(self.best_checkpoint).get("epoch")
            if found != self.best["epoch"]:
                from ..errors import CheckpointError
                raise CheckpointError(f"{self.best_checkpoint} holds epoch {found}, but the run "
                                      f"recorded its best epoch as {self.best['epoch']}; the "
                                      f"folder was changed by hand; keep the last weights "
                                      f"(--last-weights) or retrain.")
            load_checkpoint(self.best_checkpoint, self.module)
        else:
            return False
        self.log(f"restored the weights of epoch {self.best['epoch']} (best "
                 f"{self.best['metric']} {self.best['value']:.4f})")
        return True

    def _epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        world = self.dist.world_size
        torch.manual_seed(epoch_seed(c.seed, epoch, 1000))   # dropout, drop-path
        self.train_stream.set_epoch(epoch)
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count = torch.zeros((), dtype=torch.int64, device=self.device)
        show = self.progress if self.progress is not None else None
        bar = ProgressBar(self.steps_per_epoch, desc=f"epoch {epoch + 1}/{c.epochs}",
                          enabled=(show if self.dist.is_main else False))
        gb = c.batch_size
        scaler = self.precision.scaler
        for k, (x, y) in enumerate(self.train_stream):
            lr = self.schedule.lr_at(self.step)
            set_lr(self.optimizer, lr)
            global_n = y.shape[0] if world == 1 else min(gb, self.n_train - k * gb)
            with self.precision():
                out = self.model(x)
            logits, aux = (out[0], out[1:]) if isinstance(out, (tuple, list)) else (out, ())
            if self.teacher is not None:     # distillation: hard CE + the teacher's soft targets
                total = self._distill_sum(x, logits, y)
            else:
                total = F.cross_entropy(logits.float(), y, reduction="sum",
                                        label_smoothing=c.label_smoothing)
            for a in aux:
                total = total + c.aux_weight * F.cross_entropy(
                    a.float(), y, reduction="sum", label_smoothing=c.label_smoothing)
            finite = torch.isfinite(total)
            if world > 1:
                finite = D.all_min(finite.float()) > 0
            if not bool(finite):
                self._nonfinite(epoch, k, total, lr)
            loss = total * (world / global_n)
            self.optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if c.grad_clip:
                    scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.params, c.grad_clip)
                scaler.step(self.optimizer)
                scaler.update()
            else:
                loss.backward()
                if c.grad_clip:
                    nn.utils.clip_grad_norm_(self.params, c.grad_clip)
                self.optimizer.step()
            self.step += 1
            self.last_lr = lr
            with torch.no_grad():
                loss_sum += total.detach().double()
                correct += (logits.detach().argmax(dim=1) == y).sum()
                count += y.numel()
            if bar.enabled:
                bar.update(1, loss=lambda: float(loss_sum) / max(1, int(count)),
                           acc=lambda: int(correct) / max(1, int(count)))
        bar.close()
        if world > 1:
            packed = D.all_sum(torch.stack([loss_sum, correct.double(), count.double()]))
            loss_sum, correct, count = packed[0], packed[1], packed[2]
        n = max(1.0, float(count))
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(loss_sum) / n,
                                  "accuracy": float(correct) / n}
        if self.val_stream is not None:
            v = evaluate(self.module, self.val_stream, label_smoothing=c.label_smoothing,
                         amp=self.precision.enabled, distributed=world > 1)
            record["val_loss"], record["val_accuracy"] = v["loss"], v["accuracy"]
        else:
            record["val_loss"] = record["val_accuracy"] = None
        record["lr"] = float(self.last_lr)
        record["seconds"] = time.perf_counter() - start
        return record

    def _distill_sum(self, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        from ..edge.distillation import distillation_loss

        c = self.config
        self.teacher.eval()
        with torch.no_grad(), self.precision():
            t = self.teacher(x)
        t = t[0] if isinstance(t, (tuple, list)) else t
        return distillation_loss(logits.float(), t.float(), y, c.temperature, c.alpha,
                                 reduction="sum", label_smoothing=c.label_smoothing)

    def _nonfinite(self, epoch: int, k: int, total: Tensor, lr: float) -> None:
        what = "nan" if bool(torch.isnan(total).all()) else "infinite"
        last = self.last_checkpoint
        if last is not None and last.is_file() and self.epoch > 0:
            keep = f"the last good checkpoint is {last} (epoch {self.epoch})"
        else:
            keep = "no checkpoint had been saved yet"
        raise TrainingError(f"the loss became {what} at epoch {epoch + 1} step {k + 1}; {keep}; "
                            f"lower the learning rate (it was {lr:.3g}) or clip the gradients "
                            f"(grad_clip).")

    def _end_epoch(self, record: dict[str, Any], tb) -> None:
        c = self.config
        self.history.append(record)
        self.epoch = record["epoch"]
        key = "val_accuracy" if record.get("val_accuracy") is not None else "accuracy"
        value = record[key]
        improved = self.best is None or value > self.best["value"]
        if improved:
            self.best = {"metric": key, "value": value, "epoch": record["epoch"]}
        dropped = self.schedule.epoch_end(value)
        wait = record["epoch"] - self.best["epoch"]
        if c.early_stopping and wait >= c.early_stopping and self.epoch < c.epochs:
            self.stopped_early = True
        if self.dist.is_main:
            if self.out is not None:
                with signals_held():
                    self.history.save(self.out / "history.json", self.out / "log.csv")
                    # best before last: a process killed between the two then resumes from
                    # the previous last and trains this epoch again, rewriting best
                    # identically; the other order would leave a best file older than the
                    # state says
                    if improved:
                        self.save(self.best_checkpoint)
                    self.save(self.last_checkpoint)
            elif improved and c.restore_best:
                self._best_weights = {k: v.detach().clone()
                                      for k, v in self.module.state_dict().items()}
            if tb is not None:
                for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
                    if record.get(k) is not None:
                        tb.add_scalar(k, record[k], record["epoch"])
                tb.flush()
        self.log(format_epoch(record, c.epochs))
        if dropped:
            self.log(f"{key} has not improved for {c.plateau_patience} epochs: learning rate "
                     f"x {c.gamma:g} -> {self.schedule.lr_at(self.step):.2e}")
        if self.stopped_early:
            self.log(f"early stopping: {key} has not improved for {wait} epochs (best "
                     f"{self.best['value']:.4f} at epoch {self.best['epoch']})")
        for cb in self.callbacks:
            if cb(self, record) is True:
                self.stopped_early = True

    def _tensorboard(self):
        if not self.config.tensorboard or not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise TrainingError("TensorBoard logging needs the tensorboard package: pip "
                                "install tensorboard (or train without --tensorboard).") from exc
        where = (self.out / "tensorboard") if self.out is not None else None
        return SummaryWriter(log_dir=str(where) if where else None)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data: Any, **kw: Any) -> dict[str, Any]:
        """Metrics of the current model on ``data`` (normalised like the training data)."""
        kw.setdefault("mean", self.mean)
        kw.setdefault("std", self.std)
        kw.setdefault("classes", self.classes)
        kw.setdefault("batch_size", max(256, self.config.batch_size))
        kw.setdefault("amp", self.precision.enabled)
        return evaluate(self.module, data, device=self.device, **kw)


def _seconds_beside(path: Path, n: int) -> list[Any]:
    """The epochs' wall-clock seconds from a checkpoint's ``.json`` copy, when it belongs to
    the same epochs (else ``None`` each: the times are informative, never needed)."""
    import json

    try:
        seconds = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["seconds"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return [None] * n
    if not isinstance(seconds, list) or len(seconds) != n:
        return [None] * n
    return [s if isinstance(s, (int, float)) and not isinstance(s, bool) else None
            for s in seconds]


_TRAINER_KEYS = {"out", "mean", "std", "classes", "log", "progress", "callbacks",
                 "param_groups", "teacher"}


def fit(model: nn.Module, train_data: Any, val_data: Any = None,
        config: TrainConfig | dict | None = None, **kw: Any) -> History:
    """Train ``model`` (Keras' ``model.fit``): ``fit(model, ds, epochs=5, lr=1e-3)``.

    Keywords are :class:`TrainConfig` fields or :class:`Trainer` options (``out``,
    ``mean``, ``std``, ``classes``, ``log``, ``progress``, ``callbacks``)."""
    trainer_kw = {k: kw.pop(k) for k in list(kw) if k in _TRAINER_KEYS}
    return Trainer(model, train_data, val_data, config, **trainer_kw, **kw).fit()


# --------------------------------------------------------------------------- overfit check

@dataclasses.dataclass
class OverfitReport:
    """What :func:`overfit_check` found: can the model drive its loss to ~0 on a few samples?"""

    passed: bool
    n: int
    steps: int
    loss: float
    accuracy: float
    first_loss: float

    def message(self) -> str:
        verdict = ("the model and the training loop can learn" if self.passed else
                   "the model could not memorise them: look for a bug (labels, normalisation, "
                   "learning rate, a frozen or disconnected layer) before training for real")
        return (f"overfit {self.n} samples: loss {self.first_loss:.4f} -> {self.loss:.4f}, "
                f"accuracy {self.accuracy:.1%} after {self.steps} steps; {verdict}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def overfit_check(model: nn.Module, data: Any, n: int = 50, *, steps: int = 300,
                  lr: float = 1e-3, optimizer: str = "adam", seed: int = 13,
                  loss_target: float = 0.05, device: str = "auto",
                  mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> OverfitReport:
    """The crash course's first debugging step: "overfit a small sample first".

    Trains a *copy* of ``model`` on ``n`` training samples (stratified, no augmentation,
    no weight decay, full batch) for up to ``steps`` steps, and passes when the
    evaluation-mode loss drops below ``loss_target`` with 100% accuracy. A model that
    cannot memorise 50 samples has a bug that more data will not fix.
    """
    from ..data import channel_stats, subset
    from ..data.sources import ArrayDataset
    from .speed import prepare_for_training

    x, y = _arrays(data, "overfit data")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"the overfit check needs a positive number of samples, got {n!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TrainingError(f"steps must be a whole number >= 1, got {steps!r}.")
    classes = getattr(data, "classes", None) or [str(i) for i in range(int(y.max()) + 1)]
    ds = ArrayDataset(x, y, classes, "overfit")
    if n < len(ds):
        ds = subset(ds, n, seed=seed)
    if mean is None or std is None:
        m, s = channel_stats(ds)
        mean = mean if mean is not None else m
        std = std if std is not None else tuple(max(v, 1e-6) for v in s)
    cfg = TrainConfig(epochs=1, batch_size=len(ds), optimizer=optimizer, lr=lr, seed=seed,
                      device=device, val_split=0.0, restore_best=False)
    dev = D.local_device(device)
    torch.manual_seed(seed)
    net = prepare_for_training(copy.deepcopy(unwrap(model)), dev)
    opt = build_optimizer(net, cfg)
    scale = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    xb = ((ds.images.float() - shift) / scale).to(dev)
    yb = ds.labels.to(dev)

    def measure() -> tuple[float, float]:
        net.eval()
        with torch.no_grad():
            logits = net(xb)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            loss = float(F.cross_entropy(logits.float(), yb))
            acc = float((logits.argmax(1) == yb).float().mean())
        net.train()
        return loss, acc

    first, _ = measure()
    loss, acc, taken = first, 0.0, 0
    net.train()
    for taken in range(1, steps + 1):
        out = net(xb)
        out = out[0] if isinstance(out, (tuple, list)) else out
        train_loss = F.cross_entropy(out.float(), yb)
        if not torch.isfinite(train_loss):
            raise TrainingError(f"the loss became {float(train_loss)} at step {taken} of the "
                                f"overfit check; lower the learning rate (it was {lr:g}).")
        opt.zero_grad(set_to_none=True)
        train_loss.backward()
        opt.step()
        if taken % 10 == 0 or taken == steps:
            loss, acc = measure()
            if loss < loss_target and acc == 1.0:
                break
    passed = loss < loss_target and acc == 1.0
    return OverfitReport(passed=passed, n=len(ds), steps=taken, loss=loss, accuracy=acc,
                         first_loss=first)


__all__ = ["OverfitReport", "Trainer", "epoch_seed", "fit", "overfit_check", "split_data"]
