"""Evaluation (loss, top-1, top-5, per-class accuracy, confusion matrix) and prediction
with multi-crop testing and model ensembles.

Test-time views (``crops=``), after AlexNet / GoogLeNet / VGG:

``none``    the image as it is.
``flip``    the image and its mirror.
``center``  one centre crop of ``crop_size`` (default 87.5% of the side).
``5crop``   the four corner crops and the centre crop (no mirrors: digits, text).
``10crop``  the four corner crops and the centre crop, and the mirror of each (AlexNet).
``multi``   the image and its mirror, plus ``10crop`` at 87.5% and at 75% of the side
            (22 views: several scales, as GoogLeNet and VGG test).

Every crop is resized (bilinear) back to the image's own size, so that a network with a
fixed input size sees what it was trained on. The class probabilities (softmax) are
averaged over views and over the models of an ensemble.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError, TrainingError

CROPS = ("none", "flip", "center", "5crop", "10crop", "multi")


# --------------------------------------------------------------------------- batches

def _logits(out: Any) -> Tensor:
    """The main logits of a model output (GoogLeNet's training output is a tuple)."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _stream(data: Any, batch_size: int, mean: Sequence[float] | None,
            std: Sequence[float] | None, device: torch.device, rank: int = 0,
            world_size: int = 1) -> Iterable[tuple[Tensor, Tensor]]:
    """Batches ``(x float normalised, y)`` from a BatchStream, an ArrayDataset or (x, y)."""
    from .speed import BatchStream

    if isinstance(data, BatchStream):
        return data
    if hasattr(data, "images") and hasattr(data, "labels"):          # ArrayDataset
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    else:
        raise DataError(f"evaluation data must be a BatchStream, an ArrayDataset or a pair "
                        f"(images, labels), got {type(data).__name__}.")
    if len(images) != len(labels):
        raise DataError(f"evaluation data has {len(images)} images but {len(labels)} labels.")
    if len(images) == 0:
        raise DataError("the evaluation data is empty.")
    if images.dtype == torch.uint8:
        return BatchStream(images, labels, batch_size, shuffle=False,
                           mean=tuple(mean) if mean is not None else (0.0,),
                           std=tuple(std) if std is not None else (1.0,), device=device,
                           rank=rank, world_size=world_size)
    # float images: already normalised
    x_all = images.to(torch.float32)
    y_all = labels.to(torch.int64)

    def gen():
        for s in range(0, len(x_all), batch_size):
            yield x_all[s:s + batch_size].to(device), y_all[s:s + batch_size].to(device)
    return gen()


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- metrics

def confusion_matrix(targets: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """K x K int64 counts: row = true class, column = predicted class."""
    idx = targets.long() * num_classes + predictions.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes,
                                                                           num_classes)


def _summarise(loss_sum: float, correct1: int, correct5: int, n: int, cm: Tensor,
               classes: Sequence[str] | None) -> dict[str, Any]:
    k = cm.shape[0]
    support = cm.sum(dim=1)
    per_class = [(float(cm[i, i]) / float(support[i])) if int(support[i]) else None
                 for i in range(k)]
    out = {
        "loss": loss_sum / n,
        "accuracy": correct1 / n,
        "top5": correct5 / n,
        "top5_k": min(5, k),
        "n": n,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if classes is not None:
        out["classes"] = [str(c) for c in classes]
    return out


@torch.no_grad()
def evaluate(model: nn.Module | Sequence[nn.Module], data: Any, *, batch_size: int = 256,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             device: str | torch.device | None = None, label_smoothing: float = 0.0,
             classes: Sequence[str] | None = None, crops: str = "none",
             crop_size: int | None = None, amp: bool = False,
             distributed: bool = False) -> dict[str, Any]:
    """Loss, top-1 ``accuracy``, ``top5``, ``per_class_accuracy`` and ``confusion_matrix``.

    ``data``: a :class:`~deeparch.train.speed.BatchStream`, an ``ArrayDataset`` (uint8,
    normalised with ``mean``/``std`` in 0..1 pixel units; default: pixel / 255) or a pair
    ``(images, labels)`` (uint8 as above, or float images already normalised).

    ``model`` may be a list (an ensemble: softmax averaged) and ``crops`` one of
    :data:`CROPS`; then ``loss`` is the negative log of the averaged probability of the
    true class. Otherwise it is the cross-entropy (with ``label_smoothing``) of the
    logits. The model is put in eval mode and left there.
    With ``distributed=True`` (inside torch.distributed) ``data`` must already be this
    rank's shard, and the counts are summed over all ranks.
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise TrainingError("evaluate needs at least one model.")
    if crops not in CROPS:
        raise DataError(f"crops must be one of {', '.join(CROPS)}, got {crops!r}.")
    dev = torch.device(device) if device is not None else _device_of(models[0])
    for m in models:
        m.eval()
    ensemble = len(models) > 1 or crops != "none"
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    c1 = torch.zeros((), dtype=torch.int64, device=dev)
    c5 = torch.zeros((), dtype=torch.int64, device=dev)
    n = torch.zeros((), dtype=torch.int64, device=dev)
    cm: Tensor | None = None
    amp_ctx = _amp(dev, amp)
    for x, y in _stream(data, batch_size, mean, std, dev):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with amp_ctx():
            if ensemble:
                probs = _predict_batch(models, x, crops, crop_size)
                logits = None
            else:
                logits = _logits(models[0](x)).float()
                probs = None
        k = (logits if logits is not None else probs).shape[1]
        if cm is None:
            cm = torch.zeros((k, k), dtype=torch.int64, device=dev)
        if int(y.max()) >= k or int(y.min()) < 0:
            raise DataError(f"the data has label {int(y.max())} but the model predicts only "
                            f"{k} classes; evaluate with a model built for this data set.")
        if logits is not None:
            loss_sum += F.cross_entropy(logits, y, reduction="sum",
                                        label_smoothing=label_smoothing).double()
            scores = logits
        else:
            p_true = probs.gather(1, y[:, None]).clamp_min(1e-12)
            loss_sum += (-p_true.log()).sum().double()
            scores = probs
        top = scores.topk(min(5, k), dim=1).indices
        pred = top[:, 0]
        c1 += (pred == y).sum()
        c5 += (top == y[:, None]).any(dim=1).sum()
        n += y.numel()
        cm += confusion_matrix(y, pred, k)
    if cm is None:
        raise DataError("the evaluation data is empty.")
    if distributed:
        import torch.distributed as dist
        packed = torch.stack([loss_sum, c1.double(), c5.double(), n.double()])
        dist.all_reduce(packed)
        dist.all_reduce(cm)
        loss_sum, c1, c5, n = packed[0], packed[1].long(), packed[2].long(), packed[3].long()
    return _summarise(float(loss_sum), int(c1), int(c5), int(n), cm.cpu(), classes)


def _amp(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext
    from .speed import autocast

    return lambda: autocast(device, True)


# --------------------------------------------------------------------------- prediction

def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > size[1])


def _ten(x: Tensor, cs: int, out: tuple[int, int], mirror: bool = True) -> list[Tensor]:
    h, w = x.shape[-2:]
    cs_h, cs_w = min(cs, h), min(cs, w)
    top, left = (h - cs_h) // 2, (w - cs_w) // 2
    boxes = [(0, 0), (0, w - cs_w), (h - cs_h, 0), (h - cs_h, w - cs_w), (top, left)]
    crops = [_resize(x[..., r:r + cs_h, c:c + cs_w], out) for r, c in boxes]
    return crops + [c.flip(-1) for c in crops] if mirror else crops


def tta_views(x: Tensor, crops: str = "none", crop_size: int | None = None) -> list[Tensor]:
    """The test-time views of a batch (see the module docstring), each at the input size."""
    if crops not in CROPS:
        raise DataError(f"crops must be one of {', '.join(CROPS)}, got {crops!r}.")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    side = min(h, w)
    if crop_size is not None and (isinstance(crop_size, bool) or not isinstance(crop_size, int)
                                  or not 1 <= crop_size <= side):
        raise DataError(f"crop_size must be a whole number of pixels in 1..{side}, got "
                        f"{crop_size!r}.")
    cs = crop_size or max(1, int(round(0.875 * side)))
    out = (h, w)
    if crops == "none":
        return [x]
    if crops == "flip":
        return [x, x.flip(-1)]
    if crops == "center":
        top, left = (h - cs) // 2, (w - cs) // 2
        return [_resize(x[..., top:top + cs, left:left + cs], out)]
    if crops in ("5crop", "10crop"):
        return _ten(x, cs, out, mirror=crops == "10crop")
    views = [x, x.flip(-1)]
    for frac in (0.875, 0.75):
        views += _ten(x, max(1, int(round(frac * side))), out)
    return views


def _predict_batch(models: Sequence[nn.Module], x: Tensor, crops: str,
                   crop_size: int | None) -> Tensor:
    views = tta_views(x, crops, crop_size)
    total = None
    for m in models:
        for v in views:
            p = _logits(m(v)).float().softmax(dim=1)
            total = p if total is None else total + p
    return total / (len(models) * len(views))


def metrics_from_probs(probs: Tensor, labels: Tensor,
                       classes: Sequence[str] | None = None) -> dict[str, Any]:
    """The metrics of :func:`evaluate` from class probabilities (e.g. an ensemble's);
    ``loss`` is the mean negative log probability of the true class."""
    probs = torch.as_tensor(probs).detach().to(torch.float32)
    labels = torch.as_tensor(labels).long()
    if probs.dim() != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise DataError(f"metrics need N x K probabilities and N labels, got "
                        f"{tuple(probs.shape)} and {tuple(labels.shape)}.")
    k = probs.shape[1]
    loss = float((-probs.gather(1, labels[:, None]).clamp_min(1e-12).log()).sum())
    top = probs.topk(min(5, k), dim=1).indices
    c1 = int((top[:, 0] == labels).sum())
    c5 = int((top == labels[:, None]).any(dim=1).sum())
    return _summarise(loss, c1, c5, len(labels), confusion_matrix(labels, top[:, 0], k), classes)


@torch.no_grad()
def predict(models: nn.Module | Sequence[nn.Module], images: Tensor, *, crops: str = "none",
            crop_size: int | None = None, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, batch_size: int = 256,
            device: str | torch.device | None = None) -> Tensor:
    """Class probabilities (N x K float32, on the CPU), averaged over test views and models.

    ``images``: uint8 N x C x H x W (normalised here with ``mean``/``std`` in 0..1 units,
    default pixel / 255) or float images already normalised. ``models``: one model or an
    ensemble (all must predict the same classes). Models are put in eval mode.
    """
    ms = list(models) if isinstance(models, (list, tuple)) else [models]
    if not ms:
        raise TrainingError("predict needs at least one model.")
    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise DataError(f"predict needs images N x C x H x W, got shape {tuple(images.shape)}.")
    dev = torch.device(device) if device is not None else _device_of(ms[0])
    for m in ms:
        m.eval()
    labels = torch.zeros(len(images), dtype=torch.int64)
    out = []
    for x, _ in _stream((images, labels), batch_size, mean, std, dev):
        out.append(_predict_batch(ms, x, crops, crop_size).cpu())
    if not out:
        raise DataError("predict got no images.")
    return torch.cat(out)


__all__ = ["CROPS", "confusion_matrix", "evaluate", "metrics_from_probs", "predict", "tta_views"]
