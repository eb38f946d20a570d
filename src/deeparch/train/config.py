"""Every training hyperparameter in one checked, JSON-able place.

:class:`TrainConfig` is what ``fit`` / ``Trainer`` / ``deeparch train`` read. Its
defaults are a sane small-data recipe (Adam 1e-3, batch 64); the slides' recipes are
a few fields away:

* AlexNet / ResNet: ``optimizer='sgd', momentum=0.9, weight_decay=5e-4 (AlexNet) or
  1e-4 (ResNet), schedule='plateau'`` (lr / 10 when validation accuracy stops improving);
* the FashionMNIST Keras recipe: ``optimizer='adam', batch_size=256, epochs=10,
  val_split=0.2, seed=13`` (``RECIPES['fashion_keras']``).

Bad values raise :class:`~deeparch.errors.TrainingError` (or ``DataError`` for data
options) with one sentence saying which field, what it got and what it takes.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError, TrainingError

MAX_THREADS = 1024     # torch.set_num_threads(100000) segfaults (torch 2.13, seen here)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "plateau", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Named recipes from the seed documents: start from one with TrainConfig.recipe(name, **changes).
RECIPES: dict[str, dict[str, Any]] = {
    # "Deep Architectures" slides, FashionMNIST CNN in Keras: Adam, batch 256, 10 epochs,
    # train_test_split(test_size=0.2, random_state=13).
    "fashion_keras": dict(optimizer="adam", lr=1e-3, batch_size=256, epochs=10,
                          val_split=0.2, seed=13),
    # AlexNet (Krizhevsky et al. 2012): SGD momentum 0.9, weight decay 5e-4, lr 0.01,
    # divided by 10 when the validation error stops improving.
    "alexnet": dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                    batch_size=128, schedule="plateau", gamma=0.1),
    # ResNet (He et al. 2015): SGD momentum 0.9, weight decay 1e-4, lr 0.1, / 10 on plateau.
    "resnet": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                   batch_size=256, schedule="plateau", gamma=0.1),
}


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (see the module docstring for recipes).

    Schedules (the learning rate is set before every optimizer step):

    ``none``      constant ``lr``.
    ``step``      ``lr * gamma ** (epoch // step_size)``.
    ``plateau``   ``lr * gamma`` (``gamma`` 0.1 = "/10") whenever the monitored metric
                  (validation accuracy; training accuracy without a validation split)
                  has not improved for ``plateau_patience`` epochs.
    ``cosine``    cosine decay from ``lr`` to ``min_lr`` over all steps after warm-up.
    ``onecycle``  Smith's one-cycle: cosine rise from ``lr / 25`` to ``lr`` over the first
                  30% of steps, then cosine fall to ``lr / 25e4``.
    ``warmup_epochs`` (any schedule but onecycle) ramps the rate linearly from ~0 over
                  that many epochs (fractions allowed) before the schedule takes over.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9           # SGD only
    nesterov: bool = False          # SGD only
    weight_decay: float = 0.0       # L2 for SGD/Adam, decoupled for AdamW
    lr_backbone: float | None = None  # rate of pretrained layers (transfer); None = lr
    schedule: str = "none"
    step_size: int = 10             # 'step': epochs between decays
    gamma: float = 0.1              # 'step' and 'plateau': the decay factor
    plateau_patience: int = 3       # 'plateau': epochs without improvement before decaying
    min_lr: float = 0.0             # 'cosine' floor, and the floor of 'plateau'
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    early_stopping: int = 0         # patience in epochs on the monitored metric; 0 = off
    grad_clip: float = 0.0          # max global gradient norm; 0 = off
    aux_weight: float = 0.3         # weight of auxiliary logits (GoogLeNet) in the loss
    temperature: float = 4.0        # distillation (only with a teacher): softmax temperature T
    alpha: float = 0.9              # distillation: weight of the teacher's soft targets
    restore_best: bool = True       # end with the best-validation weights (else the last)
    seed: int = 13
    device: str = "auto"
    precision: str = "auto"         # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    threads: int = 0                # CPU threads while training; 0 = PyTorch's default
    augment: str | None = None      # a spec for deeparch.data.augment.augment_from_spec
    val_split: float = 0.2          # 0 = no validation split
    subset: int | None = None       # use only this many training samples (stratified)
    tensorboard: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in config.json

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        def whole(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise TrainingError(f"{name} must be a whole number >= {lo}, got {v!r}.")

        def number(name: str, lo: float, hi: float = math.inf, lo_open: bool = False,
                   hi_open: bool = False) -> None:
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if ok:
                ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                lo_s = f"> {lo}" if lo_open else f">= {lo}"
                hi_s = "" if hi == math.inf else (f" and < {hi}" if hi_open else f" and <= {hi}")
                raise TrainingError(f"{name} must be a number {lo_s}{hi_s}, got {v!r}.")
            setattr(self, name, float(v))

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            low = v.lower() if isinstance(v, str) else v
            if low not in allowed:
                raise TrainingError(f"{name} must be one of {', '.join(allowed)}, got {v!r}.")
            setattr(self, name, low)

        whole("epochs", 1)
        whole("batch_size", 1)
        choice("optimizer", OPTIMIZERS)
        number("lr", 0.0, lo_open=True)
        number("momentum", 0.0, 1.0, hi_open=True)
        if not isinstance(self.nesterov, bool):
            raise TrainingError(f"nesterov must be true or false, got {self.nesterov!r}.")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0.0):
            raise TrainingError("nesterov=True needs optimizer='sgd' with a momentum above 0.")
        number("weight_decay", 0.0)
        if self.lr_backbone is not None:
            number("lr_backbone", 0.0)
        choice("schedule", SCHEDULES)
        whole("step_size", 1)
        number("gamma", 0.0, 1.0, lo_open=True, hi_open=True)
        whole("plateau_patience", 1)
        number("min_lr", 0.0)
        number("warmup_epochs", 0.0)
        if self.warmup_epochs >= self.epochs:
            raise TrainingError(f"warmup_epochs ({self.warmup_epochs:g}) must be shorter than "
                                f"the run ({self.epochs} epochs).")
        if self.warmup_epochs and self.schedule == "onecycle":
            raise TrainingError("the one-cycle schedule has its own warm-up; leave "
                                "warmup_epochs at 0 with schedule='onecycle'.")
        number("label_smoothing", 0.0, 1.0, hi_open=True)
        whole("early_stopping", 0)
        number("grad_clip", 0.0)
        number("aux_weight", 0.0)
        number("temperature", 0.0, lo_open=True)
        number("alpha", 0.0, 1.0)
        if not isinstance(self.restore_best, bool):
            raise TrainingError(f"restore_best must be true or false, got {self.restore_best!r}.")
        whole("seed", 0)
        if not isinstance(self.device, str) or not self.device:
            raise TrainingError(f"device must be a string such as 'auto', 'cpu' or 'cuda', "
                                f"got {self.device!r}.")
        choice("precision", PRECISIONS)
        whole("threads", 0)
        if self.threads > MAX_THREADS:     # PyTorch itself crashes far beyond real machines
            raise TrainingError(f"threads must be at most {MAX_THREADS}, got {self.threads}; "
                                f"this machine has {os.cpu_count()} CPU threads.")
        if self.augment is not None and not isinstance(self.augment, str):
            raise DataError(f"augment must be a spec string such as 'rotation=8,shift=0.08' "
                            f"or a preset name, got {type(self.augment).__name__}.")
        v = self.val_split
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise DataError(f"val_split must be a fraction in [0, 1), got {v!r}; 0.2 keeps "
                            f"one fifth of the training data for validation, 0 keeps none.")
        self.val_split = float(v)
        if self.subset is not None:
            s = self.subset
            if isinstance(s, bool) or not isinstance(s, int) or s < 2:
                raise DataError(f"subset must be a whole number of samples >= 2, got {s!r}.")
        if not isinstance(self.tensorboard, bool):
            raise TrainingError(f"tensorboard must be true or false, got {self.tensorboard!r}.")
        if not isinstance(self.extra, dict):
            raise TrainingError("extra must be a dict of JSON values.")
        return self

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise TrainingError(f"unknown training option{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(map(repr, unknown))}; known options are "
                                f"{', '.join(sorted(known))}.")
        return cls(**d)

    @classmethod
    def recipe(cls, name: str, **changes: Any) -> "TrainConfig":
        """A config from one of :data:`RECIPES` with ``changes`` on top."""
        if name not in RECIPES:
            raise TrainingError(f"unknown recipe {name!r}; recipes are {', '.join(RECIPES)}.")
        return cls.from_dict({**RECIPES[name], **changes})

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def make_config(config: TrainConfig | dict[str, Any] | None = None, **changes: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a config, a dict, keywords, or a mix (keywords win)."""
    if config is None:
        return TrainConfig.from_dict(changes)
    if isinstance(config, TrainConfig):
        return config.replace(**changes) if changes else config
    if isinstance(config, dict):
        return TrainConfig.from_dict({**config, **changes})
    raise TrainingError(f"config must be a TrainConfig or a dict, got {type(config).__name__}.")


__all__ = ["OPTIMIZERS", "PRECISIONS", "RECIPES", "SCHEDULES", "TrainConfig", "make_config"]
