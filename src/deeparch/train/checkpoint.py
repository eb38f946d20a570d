"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

A checkpoint ``NAME.safetensors`` is self-contained: it holds the model's weights
(``model.<key>``), the optimizer's state tensors (``optimizer.<param>.<name>``: momentum
buffers, Adam moments and step counts) and, in its safetensors metadata, the JSON state
of the run (epoch, step, history, schedule and early-stopping state, best metric). A
readable copy of that JSON is written beside it as ``NAME.json``. Because the
safetensors file alone is authoritative, a crash between the two writes can never pair
weights with the wrong state.

Final weights (``model.safetensors``) are plain: the model's own ``state_dict`` keys, so
``safetensors.torch.load_file`` + ``model.load_state_dict`` is all anyone needs.

Nothing is unpickled: safetensors and JSON only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import WriteError, atomic_path, write_text

FORMAT = "deeparch-checkpoint"
VERSION = "1"


class CheckpointWriteError(CheckpointError, WriteError):
    """A checkpoint or run file could not be written (full disk, no permission).

    Both a :class:`CheckpointError` and a :class:`~deeparch.io.WriteError` (an ``OSError``)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # a private contiguous CPU copy: safetensors refuses tensors that share memory
    return t.detach().to("cpu", copy=True).contiguous()


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str], what: str) -> None:
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)   # bytes: any I/O error is then Python's OSError
    try:
        with atomic_path(path, suffix=".safetensors") as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except WriteError as exc:
        raise CheckpointWriteError(f"cannot save the {what}: {exc}") from exc


def _write_json(path: Path, obj: Any, what: str) -> None:
    try:
        write_text(path, json.dumps(obj, indent=2) + "\n")
    except WriteError as exc:
        raise CheckpointWriteError(f"cannot save the {what}: {exc}") from exc


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}; check the path (a run directory holds "
                              f"model.safetensors and checkpoints/last.safetensors).")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is "
                              f"corrupt or truncated: delete it or use another checkpoint."
                              ) from exc
    return tensors, meta


def _load_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    model = unwrap(model)
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    wrong = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong:
        bits = []
        if missing:
            bits.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            bits.append(f"unexpected {', '.join(unexpected[:3])}"
                        f"{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            bits.append(f"{k} is {tuple(tensors[k].shape)} in the file but "
                        f"{tuple(own[k].shape)} in the model")
        raise CheckpointError(f"the weights in {path} do not fit this model ({'; '.join(bits)}); "
                              f"build the same architecture, classes and input size they were "
                              f"saved from.")
    model.load_state_dict(tensors, strict=True)


# --------------------------------------------------------------------------- plain weights

def save_weights(path: str | os.PathLike, model: nn.Module,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s ``state_dict`` to a safetensors file (atomically).

    ``metadata`` values are stored as strings (non-strings as JSON)."""
    path = Path(path)
    tensors = {k: _cpu(v) for k, v in unwrap(model).state_dict().items()}
    meta = {"format": "pt"}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    _write_safetensors(path, tensors, meta, f"weights {path}")
    return path


def load_weights(path: str | os.PathLike, model: nn.Module) -> dict[str, str]:
    """Load a safetensors weight file into ``model`` (strict); returns its metadata.

    Also accepts a deeparch checkpoint (it takes the ``model.`` tensors)."""
    path = Path(path)
    tensors, meta = _read_safetensors(path, "weights file")
    if meta.get("format") == FORMAT:
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _load_model_state(model, tensors, path)
    return meta


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write a self-contained checkpoint ``path`` (``.safetensors``) and its ``.json`` copy."""
    path = Path(path)
    state = dict(state or {})
    tensors = {f"model.{k}": _cpu(v) for k, v in unwrap(model).state_dict().items()}
    scalars: dict[str, Any] = {}
    if optimizer is not None:
        for idx, entry in optimizer.state_dict()["state"].items():
            for name, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{idx}.{name}"] = _cpu(value)
                else:
                    scalars[f"{idx}.{name}"] = value
    state["optimizer_scalars"] = scalars
    state["has_optimizer"] = optimizer is not None
    text = json.dumps(state)
    _write_safetensors(path, tensors, {"format": FORMAT, "version": VERSION, "state": text},
                       f"checkpoint {path}")
    _write_json(path.with_suffix(".json"), state, f"checkpoint state {path.with_suffix('.json')}")
    return path


def read_checkpoint_state(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON state stored inside a checkpoint (no tensors are loaded into anything)."""
    path = Path(path)
    _, meta = _read_safetensors(path, "checkpoint")
    return _state_of(meta, path)


def _state_of(meta: dict[str, str], path: Path) -> dict[str, Any]:
    if meta.get("format") != FORMAT or "state" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a deeparch checkpoint "
                              f"(no training state in it); use load_weights for plain weights.")
    try:
        state = json.loads(meta["state"])
    except ValueError as exc:
        raise CheckpointError(f"the training state inside {path} is not valid JSON ({exc}); "
                              f"the checkpoint is damaged.") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"the training state inside {path} is not a JSON object.")
    return state


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` and ``optimizer`` (each optional); returns its state.

    Raises :class:`CheckpointError` for a missing, corrupt or mismatched checkpoint."""
    path = Path(path)
    tensors, meta = _read_safetensors(path, "checkpoint")
    state = _state_of(meta, path)
    if model is not None:
        _load_model_state(model, {k[len("model."):]: v for k, v in tensors.items()
                                  if k.startswith("model.")}, path)
    if optimizer is not None:
        if not state.get("has_optimizer"):
            raise CheckpointError(f"{path} holds no optimizer state, so it cannot resume "
                                  f"training; start a new run from its weights instead.")
        params = [p for g in optimizer.param_groups for p in g["params"]]
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if not key.startswith("optimizer."):
                continue
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
        for key, value in state.get("optimizer_scalars", {}).items():
            idx, name = key.split(".", 1)
            opt_state.setdefault(int(idx), {})[name] = value
        for idx, entry in opt_state.items():
            if idx >= len(params):
                raise CheckpointError(f"the optimizer state in {path} is for more parameters "
                                      f"than this model has; it was saved from another model.")
            for name, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 \
                        and tuple(value.shape) != tuple(params[idx].shape):
                    raise CheckpointError(f"the optimizer state in {path} does not fit this "
                                          f"model (parameter {idx}); it was saved from another "
                                          f"model or optimizer.")
        sd = optimizer.state_dict()
        sd["state"] = opt_state
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"the optimizer state in {path} cannot be loaded ({exc}); "
                                  f"resume with the optimizer it was saved with.") from exc
    return state


__all__ = ["CheckpointWriteError", "load_checkpoint", "load_weights", "read_checkpoint_state",
           "save_checkpoint", "save_weights", "unwrap"]
