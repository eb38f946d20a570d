"""A training run that starts from pretrained weights: ``train(..., weights=, from_run=,
regime=)``, ``deeparch train --weights FILE|NAME --from-run RUN --regime R --lr-backbone X``.

What a run records in ``config.json`` under ``"transfer"`` (and applies again, in the same
order, whenever the run is rebuilt by ``resume``):

* ``weights`` -- what the user gave (a file, a hub name such as ``torchvision:resnet18``,
  or a run folder), ``file`` -- the file read, ``sha256`` -- its digest (a resumed run
  refuses a file that changed), ``source`` -- torchvision / keras / deeparch;
* ``regime`` -- see :mod:`deeparch.transfer.regime`;
* ``preprocess`` -- how the weights' source expects images; the run's ``mean``/``std`` and
  ``input_size`` come from it (the images are resized to the size and grey images repeated
  into three channels when the weights read colour), so the pretrained layers see the
  inputs they were trained on. Weights that do not say (a bare state dict of unknown
  origin) are normalised with the training data's statistics, and the run says so.

The model is built for the data's classes and loaded (a classifier of another size is left
at its initialisation and the report says so), then :func:`apply_regime` gives it a new head
from the run's seed and freezes what the regime freezes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, DeeparchError, TrainingError, WeightsMismatchError

FEATURES_FILE = "features.safetensors"


@dataclass
class Pretrained:
    """The outcome of building a run's model from its pretrained weights."""

    model: nn.Module
    input_size: tuple[int, int, int]
    record: dict[str, Any]            # config.json's "transfer" entry
    preprocess: Any                   # deeparch.transfer.preprocess.Preprocess or None
    notes: list[str]
    report: Any                       # LoadReport
    frozen: Any                       # FrozenReport


def resolve(weights: str | None, from_run: str | None) -> tuple[Path, str, dict | None]:
    """(the file to read, what the user gave, the run's config for ``from_run``)."""
    from .run import read_run_config

    if weights is not None and from_run is not None:
        raise TrainingError("give the pretrained weights once: --weights FILE or --from-run "
                            "RUN, not both.")
    if from_run is not None:
        run_dir = Path(from_run).expanduser()
        run = read_run_config(run_dir)
        path = run_dir / "model.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{run_dir} has no model.safetensors (the run did not finish); "
                                  f"resume it first or give --weights with a checkpoint.")
        return path.resolve(), str(run_dir), run
    from ..transfer import hub

    given = str(weights)
    if hub.is_hub_name(given):
        return Path(hub.resolve(given, progress=None)).resolve(), given, None
    path = Path(given).expanduser()
    if not path.exists():
        raise TrainingError(f"no weights file or run folder at {given}; give a .pth, .h5 or "
                            f".safetensors file, a run folder, or a name such as "
                            f"torchvision:resnet18.")
    if path.is_dir():
        return resolve(None, str(path))
    return path.resolve(), given, None


def _digest(path: Path) -> str:
    from ..data.download import file_digest
    return file_digest(path, "sha256")


def build(spec: dict[str, Any], num_classes: int, data_channels: int, seed: int,
          stored: Path | None = None) -> Pretrained:
    """The run's model, loaded from its pretrained weights, with the regime applied.

    ``spec["transfer"]`` holds ``weights``/``from_run`` (a new run) or the recorded entry
    (``stored``: a resumed run, whose file must still have its digest)."""
    from ..models.registry import model_info
    from ..transfer.regime import apply_regime, parse_regime
    from ..transfer.weights import load_weights
    from ..transfer.files import read_weights
    from .run import build_model

    t = spec["transfer"]
    regime = parse_regime(t.get("regime"))
    notes: list[str] = []
    if stored is not None:
        path = Path(t["file"])
        if not path.is_file():
            raise CheckpointError(f"the run in {stored} starts from the weights {path}, which "
                                  f"are gone; put the file back to resume or evaluate it.")
        if _digest(path) != t["sha256"]:
            raise CheckpointError(f"the weights {path} that the run in {stored} starts from "
                                  f"have changed since it began (another SHA-256); restore "
                                  f"them, or train a new run.")
        run_cfg = None
    else:
        path, given, run_cfg = resolve(t.get("weights"), t.get("from_run"))
        t = {"weights": given, "file": str(path), "sha256": _digest(path),
             "regime": str(regime)}
    wf = read_weights(path)
    model_name = spec["model"]
    if stored is not None:
        c, h, w = spec["input_size"]
        candidates = [c]
    else:
        if run_cfg is not None:
            c0, h, w = run_cfg["input_size"]
            candidates = [c0]
        else:
            card = model_info(model_name) if not _is_pattern(model_name) else None
            _, h, w = card.input_size if card is not None else (None, None, None)
            if h is None:
                raise TrainingError("pretrained weights load into a registered model; a "
                                    "layer pattern has no pretrained weights to start from "
                                    "(use --from-run with a run of that pattern).")
            candidates = [3] + ([data_channels] if data_channels != 3 else [])
        size = spec.get("image_size")
        if size:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
    def load(c: int, h: int, w: int):
        model, size3, _ = build_model(model_name, num_classes, (c, h, w),
                                      spec.get("model_options"), seed=seed, fit_input=False)
        return model, tuple(size3), load_weights(model, wf)

    last: Exception | None = None
    for c in candidates:
        try:
            model, size3, report = load(c, h, w)
            break
        except WeightsMismatchError as exc:
            last = exc
    else:
        raise last  # type: ignore[misc]
    side = getattr(report.preprocess, "size", None)
    if stored is None and not spec.get("image_size") and side and (side, side) != (h, w):
        try:                          # the size the weights were trained at
            model, size3, report = load(c, side, side)
        except (DeeparchError, RuntimeError, ValueError):
            pass
    replace = any(why.startswith("the classifier") for why in report.initialised.values())
    torch.manual_seed(seed)
    frozen = apply_regime(model, regime, num_classes, replace_head=replace)
    pre = report.preprocess
    given = str(t.get("weights") or "")
    if stored is None and given:
        from ..transfer import hub
        if hub.is_hub_name(given):   # the publisher's own recipe (V2 resize 232, crop sizes)
            pre = hub.entry(given).preprocess
    if stored is None:
        t["source"] = report.source
        t["architecture"] = report.architecture
        t["preprocess"] = pre.to_dict() if pre is not None else None
        t["loaded"] = report.loaded_count
        t["total"] = report.total
        t["frozen_params"] = frozen.frozen_params
        t["trainable_params"] = frozen.trainable_params
        if pre is not None and len(pre.mean) != c:
            pre = None
        if pre is None:
            notes.append("the weights do not say how their images were normalised: using the "
                         "training data's channel statistics")
    elif t.get("preprocess"):
        from ..transfer.preprocess import Preprocess
        pre = Preprocess.from_dict(t["preprocess"])
    first = str(report).splitlines()[0]
    notes.append(first.rstrip(".") + f"; regime {regime}: {frozen.trainable_params:,} of "
                 f"{frozen.total_params:,} parameters train")
    return Pretrained(model, size3, t, pre, notes, report, frozen)


def _is_pattern(model: str) -> bool:
    from ..pattern import looks_like_pattern
    return looks_like_pattern(model)


def check_record(t: Any, bad) -> None:
    """config.json's "transfer" entry, checked before use (``bad(key, what)`` makes the
    error)."""
    from ..transfer.regime import parse_regime

    if not isinstance(t, dict):
        raise bad("transfer", "an object describing the pretrained weights")
    for key in ("file", "sha256", "regime"):
        if not isinstance(t.get(key), str) or not t[key]:
            raise bad(f"transfer.{key}", "a non-empty string")
    try:
        parse_regime(t["regime"])
    except DeeparchError:
        raise bad("transfer.regime", "full, linear, cached or top:K") from None
    if t.get("preprocess") is not None:
        from ..transfer.preprocess import Preprocess
        try:
            Preprocess.from_dict(t["preprocess"])
        except (DeeparchError, KeyError, TypeError, ValueError):
            raise bad("transfer.preprocess", "a preprocessing record (name, mean, std)"
                      ) from None


# --------------------------------------------------------------------------- cached features

def cached_features(model: nn.Module, splits: dict[str, Any], mean, std, out: Path | None,
                    key: dict[str, Any], batch_size: int, device, log) -> dict[str, torch.Tensor]:
    """What reaches the classifier for every image of each split, computed once and stored
    in ``out/features.safetensors`` (reused while ``key`` -- weights, data, regime --
    matches)."""
    from ..transfer.regime import classifier_inputs
    from .checkpoint import _read_safetensors, _write_safetensors
    from .speed import BatchStream

    stamp = json.dumps(key, sort_keys=True)
    path = out / FEATURES_FILE if out is not None else None
    if path is not None and path.is_file():
        try:
            tensors, meta = _read_safetensors(path, "feature cache")
            if meta.get("deeparch.key") == stamp and set(tensors) >= set(splits):
                log(f"reusing the stored features in {path}")
                return {k: tensors[k] for k in splits}
        except CheckpointError:
            pass
    feats: dict[str, torch.Tensor] = {}
    model = model.to(device)
    for name, ds in splits.items():
        stream = BatchStream(ds.images, ds.labels, max(batch_size, 256), shuffle=False,
                             mean=mean, std=std, device=device)
        feats[name] = classifier_inputs(model, (x for x, _ in stream))
    if path is not None:
        _write_safetensors(path, {k: v.contiguous() for k, v in feats.items()},
                           {"format": "deeparch-features", "deeparch.key": stamp},
                           f"feature cache {path}")
    d = next(iter(feats.values())).shape[1]
    log(f"computed the frozen features once: {d:,} numbers per image for "
        f"{sum(len(v) for v in feats.values()):,} images"
        + (f", stored in {path}" if path is not None else ""))
    return feats
