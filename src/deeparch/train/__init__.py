"""Training: the loop, its history, schedules, checkpoints, metrics and whole runs.

    from deeparch.train import fit, Trainer, TrainConfig, evaluate, predict
    history = fit(model, train_ds, epochs=10, lr=1e-3)        # Keras-style
    result = train("lenet5", "digits", "runs/lenet5", epochs=30)  # a whole run folder

See :mod:`deeparch.train.run` for the run folder and :class:`TrainConfig` for every
hyperparameter. Heavy modules are imported on first use.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "RECIPES": "config", "make_config": "config",
    "History": "history",
    "Trainer": "trainer", "fit": "trainer", "overfit_check": "trainer",
    "OverfitReport": "trainer",
    "evaluate": "metrics", "predict": "metrics", "confusion_matrix": "metrics",
    "metrics_from_probs": "metrics", "CROPS": "metrics",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "save_weights": "checkpoint", "load_weights": "checkpoint",
    "CheckpointWriteError": "checkpoint",
    "LRSchedule": "schedules", "build_optimizer": "schedules",
    "train": "run", "resume": "run", "evaluate_run": "run", "load_run": "run",
    "RunResult": "run",
}
_RENAMED = {"evaluate_run": "evaluate"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deeparch.train' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), _RENAMED.get(name, name))
    globals()[name] = value
    return value
