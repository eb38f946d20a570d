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


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
# safetensors' own order of its dtypes (its Rust enum), largest first in a file
_RANK = {torch.bool: 0, torch.uint8: 4, torch.int8: 5, torch.int16: 9, torch.float16: 11,
         torch.bfloat16: 12, torch.int32: 13, torch.float32: 15, torch.float64: 17,
         torch.int64: 18}


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of ``tensors`` with ``metadata``, the same for the same input.

    ``safetensors.torch.save`` writes the metadata in a random order (a hash map), so two
    identical runs would write different files; this writes the format itself (an 8-byte
    little-endian header length, the JSON header, the data) with the metadata keys sorted
    and the tensors in safetensors' own order (by dtype, then name), so that
    ``sha256sum`` can check that two runs agree. The files load with safetensors as usual."""
    order = sorted(tensors, key=lambda k: (-_RANK.get(tensors[k].dtype, 0), k))
    header: dict[str, object] = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    chunks, offset = [], 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise CheckpointError(f"cannot save tensor {name!r} of type {t.dtype} in a "
                                  f"safetensors file.")
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() \
            if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str], what: str) -> None:
    data = serialize(tensors, metadata)   # bytes: any I/O error is then Python's OSError
    try:
        with atomic_path(path) as tmp:
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


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor and the metadata of a safetensors file, on the CPU. Bytes that are not
    safetensors raise safetensors' own errors: callers say what the file should have been."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}; check the path (a run directory holds "
                              f"model.safetensors and checkpoints/last.safetensors).")
    try:
        return read_tensors(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is "
                              f"corrupt or truncated: delete it or use another checkpoint."
                              ) from exc


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
                    state: dict[str, Any] | None = None,
                    json_extra: dict[str, Any] | None = None) -> Path:
    """Write a self-contained checkpoint ``path`` (``.safetensors``) and its ``.json`` copy.

    ``json_extra`` goes into the ``.json`` copy only: what may differ between two identical
    runs (wall-clock seconds) stays out of the safetensors file, so that identical runs
    write byte-identical checkpoints."""
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
    _write_json(path.with_suffix(".json"), {**state, **(json_extra or {})},
                f"checkpoint state {path.with_suffix('.json')}")
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
