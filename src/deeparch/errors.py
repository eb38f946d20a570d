"""Errors a user can cause.

Every one carries one clear sentence: what was wrong, where, and what to do.
The CLI prints that sentence and exits with status 2; the API raises the typed
exception so that callers can catch exactly what they expect.
"""
from __future__ import annotations


class DeeparchError(Exception):
    """Base class of every error a user of deeparch can cause."""


class UnknownModelError(DeeparchError, KeyError):
    """A model name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelOptionError(DeeparchError, TypeError):
    """An option (keyword) that a model builder does not accept, or a bad value for one."""


class PatternError(DeeparchError, ValueError):
    """A layer pattern that cannot be read or built.

    The message quotes the pattern with a caret under the offending token.
    """

    def __init__(self, message: str, spec: str | None = None, pos: int | None = None,
                 length: int = 1):
        self.reason = message
        self.spec = spec
        self.pos = pos
        self.length = max(1, length)
        super().__init__(self._render())

    def _render(self) -> str:
        if self.spec is None or self.pos is None:
            return self.reason
        caret = " " * self.pos + "^" * self.length
        return f"{self.reason}\n  {self.spec}\n  {caret}"


class ShapeError(DeeparchError, ValueError):
    """A geometry that cannot work: a kernel larger than its input, mismatched features..."""


class InputSizeError(DeeparchError, ValueError):
    """An input size that is not three positive integers C,H,W."""


class DataError(DeeparchError, ValueError):
    """A data file or folder that cannot be read: truncated, corrupt, wrong format."""


class DownloadError(DeeparchError, OSError):
    """A file that could not be fetched (offline, bad checksum...)."""


class CheckpointError(DeeparchError, ValueError):
    """A checkpoint or run directory that cannot be read or written."""


class TrainingError(DeeparchError, RuntimeError):
    """Training that cannot go on (a NaN loss, a diverging run...)."""


class UnknownLayerError(DeeparchError, KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightsError(DeeparchError, ValueError):
    """A weights file that cannot be read: not weights at all, truncated, or corrupt."""


class UnsafeWeightsError(WeightsError):
    """A pickle that would run code (or build arbitrary Python objects) when loaded: refused
    unread, nothing of it was executed."""


class WeightsMismatchError(WeightsError):
    """Weights that do not fit the model: another architecture, or a tensor of another shape."""


class EdgeError(DeeparchError, ValueError):
    """A shrinking step that cannot be done: a bad ratio, a model that cannot be traced or
    exported, an empty calibration set, a teacher of other classes, a corrupt .onnx file."""


class MissingDependencyError(DeeparchError, ImportError):
    """An optional package that a feature needs is not installed; the message names the
    ``pip install 'deeparch[EXTRA]'`` that brings it."""


class SearchError(DeeparchError, ValueError):
    """An architecture search that cannot run: an unknown space, strategy or objective, an
    architecture string that does not parse, a budget or constraint that cannot be met."""
