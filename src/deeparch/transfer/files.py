"""Reading weight files safely: safetensors, PyTorch ``.pth`` (zip or legacy), Keras ``.h5`` /
``.weights.h5`` (read with h5py: :mod:`deeparch.transfer.keras`), run folders.

Nothing here runs code from a file. A ``.pth`` is read with ``torch.load(...,
weights_only=True)``, whose unpickler only rebuilds tensors and plain containers: a pickle
that asks for anything else (``os.system``, ``builtins.open``...) is refused before it runs,
and the refusal is an :class:`~deeparch.errors.UnsafeWeightsError`. Everything that is not
a readable weights file -- text, random bytes, a truncated download -- is a
:class:`~deeparch.errors.WeightsError` with one sentence, never a traceback from the
unpickler or the zip reader.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UnsafeWeightsError, WeightsError

CHECKPOINT_FORMAT = "deeparch-checkpoint"     # deeparch.train.checkpoint.FORMAT
# where a training checkpoint keeps the model's state dict (torchvision's references, timm,
# Lightning's "state_dict", plain scripts' "model" / "model_state_dict" / "net")
_NESTED = ("state_dict", "model_state_dict", "model", "net", "state_dict_ema", "model_ema")


@dataclass
class WeightsFile:
    """The tensors of a weights file by name, and what is known about where they come from."""

    tensors: dict[str, torch.Tensor]
    format: str                       # "safetensors", "pth", "keras-h5", "keras-weights-h5" or
                                      # "state_dict" (given in memory)
    path: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "the given state dict"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.tensors.items()}


def read_weights(source) -> WeightsFile:
    """Read ``source``: a path to a ``.safetensors``, ``.pth`` or Keras ``.h5`` /
    ``.weights.h5`` file, a deeparch run folder (its ``model.safetensors``), a state dict, or
    an already read :class:`WeightsFile`. A Keras file's tensors are keyed
    ``<layer name>/<variable>`` in Keras' layouts (see :mod:`deeparch.transfer.keras`)."""
    if isinstance(source, WeightsFile):
        return source
    if isinstance(source, Mapping):
        return WeightsFile(_state_dict(source, "the given state dict"), "state_dict")
    if not isinstance(source, (str, os.PathLike)):
        raise WeightsError(f"weights must be a file path or a state dict, not a "
                           f"{type(source).__name__}.")
    from . import hub
    if hub.is_hub_name(source):     # torchvision:resnet18 -> the cached (or fetched) file
        path = hub.resolve(source, progress=None)
    else:
        path = Path(source)
    if path.is_dir():
        path = _run_weights(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}; check the path.")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}.") from None
    if _is_safetensors(head, size):
        return _read_safetensors(path)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return WeightsFile(_state_dict(_torch_load(path), str(path)), "pth", path)
    from .keras import is_hdf5, read_keras
    if is_hdf5(head):
        return read_keras(path)
    kind = ("an empty file" if not head else
            "text" if _looks_like_text(head) else "bytes of no weights format")
    raise WeightsError(f"{path} is not a weights file: it holds {kind}, not a safetensors file, "
                       f"a PyTorch .pth state dict or a Keras .h5.")


def _run_weights(folder: Path) -> Path:
    for rel in ("model.safetensors", "checkpoints/last.safetensors"):
        if (folder / rel).is_file():
            return folder / rel
    raise WeightsError(f"{folder} is a folder without model.safetensors or "
                       f"checkpoints/last.safetensors; give a weights file or a deeparch run "
                       f"folder.")


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\n\r" for c in head)


def _is_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> WeightsFile:
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"{path} is not a readable safetensors file ({_short(exc)}): it is "
                           f"truncated or corrupt.") from None
    if meta.get("format") == CHECKPOINT_FORMAT:      # a training checkpoint: its model part
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return WeightsFile(tensors, "safetensors", path, meta)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")     # torch names the global it refused


def _torch_load(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # "Detected pickle protocol 4..."
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found and not _torch_name_is_truncated(found.group(1)):
            raise UnsafeWeightsError(
                f"{path} is a pickle that would call {found.group(1)} when loaded, which "
                f"weights never need; it was refused unread and nothing in it ran (load only "
                f"files you trust, or ask for a safetensors file).") from None
        raise WeightsError(f"{path} is not a readable PyTorch weights file: its pickle is "
                           f"truncated or corrupt, or holds more than tensors, and nothing in "
                           f"it ran.") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError,
            AttributeError, TypeError, MemoryError) as exc:
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({_short(exc)}): "
                           f"it is truncated or corrupt.") from None


def _torch_name_is_truncated(name: str) -> bool:
    """A torch name that does not exist (``torch._utils._rebuild_tens``) comes from a cut
    file, not from a payload: the stream ended inside the name."""
    parts = name.split(".")
    if parts[0] != "torch":
        return False
    obj = torch
    for p in parts[1:]:
        obj = getattr(obj, p, None)
        if obj is None:
            return True
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120].rstrip(".")


def _state_dict(obj, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded object: a state dict, or a checkpoint dict holding one."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where} holds a {type(obj).__name__}, not a state dict of "
                           f"tensors.")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = dict(obj)
    else:
        for key in _NESTED:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                sd = dict(inner)
                break
        else:
            raise WeightsError(f"{where} holds no state dict: no mapping of names to tensors "
                               f"at the top or under {', '.join(_NESTED)}.")
    bad = next((k for k in sd if not isinstance(k, str)), None)
    if bad is not None:
        raise WeightsError(f"{where} has a tensor named {bad!r}, not a string: not a state "
                           f"dict.")
    if all(k.startswith("module.") for k in sd):       # saved from DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd
