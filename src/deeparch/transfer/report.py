"""What loading a weights file did to a model, tensor by tensor, said in sentences."""
from __future__ import annotations

from dataclasses import dataclass, field

from .preprocess import Preprocess


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class LoadReport:
    """The outcome of :func:`deeparch.transfer.load_weights`.

    ``loaded`` maps each model tensor filled from the file to the file's name for it;
    ``renamed`` is the part of it whose name differs (torchvision's ``layer1.0.conv1.weight``
    is deeparch's ``features.layer1.0.conv1.weight``); ``reshaped`` says how a tensor's
    layout was changed (none for torchvision, whose layouts are PyTorch's); ``initialised``
    holds the model tensors left as they were, with the reason (a classifier of another
    size, a batch-norm step counter the file lacks...); ``unused`` the file's tensors that
    went nowhere, with the reason; ``settings`` the model settings changed to compute what
    the source computes (a batch-norm epsilon); ``notes`` anything else worth knowing;
    ``preprocess`` how the source expects its images (size, crop, mean/std), None where the
    file does not say (a state dict given in memory).
    """

    source: str                                   # "torchvision" or "deeparch"
    where: str                                    # the file (or "the given state dict")
    model: str                                    # the model's registered name or class
    architecture: str | None = None               # e.g. torchvision's "resnet50"
    loaded: dict[str, str] = field(default_factory=dict)
    reshaped: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    settings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total: int = 0                                # tensors in the model's state dict
    preprocess: Preprocess | None = None

    @property
    def renamed(self) -> dict[str, str]:
        return {k: v for k, v in self.loaded.items() if k != v}

    @property
    def complete(self) -> bool:
        """Whether every tensor of the model came from the file (batch-norm step counters
        aside, which no forward pass reads)."""
        return all(k.endswith("num_batches_tracked") for k in self.initialised)

    def to_dict(self) -> dict:
        return {"source": self.source, "file": self.where, "model": self.model,
                "architecture": self.architecture, "loaded": dict(self.loaded),
                "renamed": self.renamed, "reshaped": dict(self.reshaped),
                "initialised": dict(self.initialised), "unused": dict(self.unused),
                "settings": list(self.settings), "notes": list(self.notes),
                "total": self.total,
                "preprocess": self.preprocess.to_dict() if self.preprocess else None}

    def __str__(self) -> str:
        origin = (f"torchvision's {self.architecture}" if self.source == "torchvision"
                  and self.architecture else f"{self.source} weights")
        lines = [f"Loaded {self.loaded_count} of the {self.total} tensors of {self.model} from "
                 f"{self.where} ({origin})."]
        renamed = self.renamed
        if renamed:
            first = next(iter(renamed.items()))
            lines.append(f"{_plural(len(renamed), 'tensor')} took deeparch's names for "
                         f"{self.source}'s (for example {first[1]} -> {first[0]}).")
        if self.reshaped:     # one clause per kind of change (a Keras file: nearly all)
            kinds: dict[str, list[str]] = {}
            for k, how in self.reshaped.items():
                kinds.setdefault(how.rsplit(": ", 1)[-1], []).append(k)
            lines.append("Reshaped: " + "; ".join(
                f"{_plural(len(keys), 'tensor')} {why} (for example {keys[0]})"
                for why, keys in kinds.items()) + ".")
        elif self.loaded:
            lines.append("No tensor needed another layout.")
        for reason, keys in _by_reason(self.initialised).items():
            lines.append(f"Left at their initialisation: {_names(keys)} ({reason}).")
        for reason, keys in _by_reason(self.unused).items():
            lines.append(f"Not used from the file: {_names(keys)} ({reason}).")
        for s in self.settings:
            lines.append(f"Changed on the model: {s}.")
        lines.extend(self.notes)
        if self.preprocess is not None:
            lines.append(f"Images as the source expects them: {self.preprocess.describe()}.")
        return "\n".join(lines)

    @property
    def loaded_count(self) -> int:
        return len(self.loaded)


def _by_reason(entries: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for k, why in entries.items():
        groups.setdefault(why, []).append(k)
    return groups
