"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
Neural Network"): a small student learns from a larger teacher's softened outputs.

The loss, per image, with the teacher's and the student's logits ``t`` and ``s``::

    (1 - alpha) * CE(s, y)  +  alpha * T^2 * KL( softmax(t / T) || softmax(s / T) )

The soft term's gradient scales as ``1 / T^2`` (the paper, section 2.1), so the ``T^2``
factor keeps its weight relative to the hard term about the same whatever ``T``.

* :func:`distillation_loss` -- the loss alone, for anyone's training loop.
* ``Trainer(student, train, val, config, teacher=module)`` -- deeparch's trainer with a
  teacher in memory (eval mode, ``torch.no_grad``, never trained nor saved); the teacher
  reads exactly the student's batch, normalised as it is, so it must expect the same
  normalisation (a pruned or quantized copy of the teacher does). ``config.temperature`` /
  ``config.alpha`` set ``T`` and ``alpha``.
* ``train(student, data, out, teacher=RUN|FILE|HUBNAME, temperature=4, alpha=0.9)`` and
  :func:`distill` -- a run folder whose ``config.json`` records the teacher (``"distill"``:
  what was given, its kind, the weights file and its SHA-256, T and alpha); ``resume``
  reloads the teacher and refuses one that changed or is gone. Here the teacher keeps the
  normalisation it was trained with (the student's batch is mapped to it), and a teacher
  that reads another image size gets the student's batch resized for it, bilinearly, on the
  fly (the log says so): refusing would rule out the usual case of a big teacher trained at
  a larger size, and resizing the batch -- not the data set -- lets the teacher see the very
  augmented images the student sees. Other input channels or other classes are refused.

The CE part is the trainer's own hard-label loss: with ``label_smoothing`` it is the
smoothed cross-entropy; auxiliary heads (GoogLeNet) keep their hard-label terms weighted by
``aux_weight``; the trainer has no mixup. The logged training ``loss`` is this combined loss;
``val_loss`` stays the plain cross-entropy of the student.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, DeeparchError, EdgeError, TrainingError

KINDS = ("run", "file", "hub")


# --------------------------------------------------------------------------- the loss

def _check_t_alpha(temperature: Any, alpha: Any) -> tuple[float, float]:
    ok = (not isinstance(temperature, bool) and isinstance(temperature, (int, float))
          and math.isfinite(temperature) and temperature > 0)
    if not ok:
        raise TrainingError(f"temperature must be a number > 0 (Hinton et al. use 1 to 20), "
                            f"got {temperature!r}.")
    ok = (not isinstance(alpha, bool) and isinstance(alpha, (int, float))
          and math.isfinite(alpha) and 0.0 <= alpha <= 1.0)
    if not ok:
        raise TrainingError(f"alpha (the weight of the teacher's soft targets) must be a "
                            f"number in [0, 1], got {alpha!r}.")
    return float(temperature), float(alpha)


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0,
                     reduction: str = "mean") -> Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` per image (summed over classes), from
    log-softmaxes (stable for any logits); ``reduction``: ``mean``, ``sum`` or ``none``."""
    T = float(temperature)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    log_p_s = F.log_softmax(student_logits.float() / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    if reduction == "none":
        return kl
    return kl.sum() if reduction == "sum" else kl.mean()


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
                      temperature: float = 4.0, alpha: float = 0.9, *,
                      reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Hinton et al.'s loss: ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(p_t^T || p_s^T)``.

    ``reduction``: ``mean`` over the batch (default) or ``sum`` (the trainer's form);
    ``label_smoothing`` applies to the CE part. ``alpha=0`` is the plain cross-entropy."""
    T, a = _check_t_alpha(temperature, alpha)
    if reduction not in ("mean", "sum"):
        raise TrainingError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    if tuple(student_logits.shape) != tuple(teacher_logits.shape) or student_logits.dim() != 2:
        raise TrainingError(f"the student's logits {tuple(student_logits.shape)} and the "
                            f"teacher's {tuple(teacher_logits.shape)} must both be batch x "
                            f"classes of the same shape.")
    s = student_logits.float()
    ce = F.cross_entropy(s, targets, reduction=reduction, label_smoothing=label_smoothing)
    if a == 0.0:
        return ce
    soft = soft_target_loss(s, teacher_logits.detach(), T, reduction)
    return (1.0 - a) * ce + a * (T * T) * soft


# --------------------------------------------------------------------------- teachers

class TeacherInput(nn.Module):
    """A teacher that reads the student's normalised batch: the batch is mapped from the
    student's normalisation to the teacher's (one multiply-add per channel) and resized to
    the teacher's input size (bilinear, antialiased, as deeparch resizes data sets)."""

    def __init__(self, teacher: nn.Module, student_norm: tuple[Sequence[float], Sequence[float]],
                 teacher_norm: tuple[Sequence[float], Sequence[float]],
                 size: tuple[int, int] | None = None):
        super().__init__()
        self.teacher = teacher
        ms, ss = (torch.tensor(v, dtype=torch.float32) for v in student_norm)
        mt, st = (torch.tensor(v, dtype=torch.float32) for v in teacher_norm)
        self.same_norm = bool(torch.equal(ms, mt) and torch.equal(ss, st))
        # x_t = ((x_s * ss + ms) - mt) / st
        self.register_buffer("scale", (ss / st).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((ms - mt) / st).view(1, -1, 1, 1), persistent=False)
        self.size = tuple(size) if size is not None else None

    def forward(self, x: Tensor):
        if not self.same_norm:
            x = x * self.scale + self.shift
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                              antialias=True)
        return self.teacher(x)


@dataclasses.dataclass
class Teacher:
    """A loaded teacher and what is known of it."""

    module: nn.Module
    kind: str                        # run, file or hub
    given: str                       # what the record names (absolute for run/file)
    file: Path                       # the weights file read
    model: str
    classes: list[str] | None        # None: only the count is known
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _digest(path: Path) -> str:
    from ..data.download import file_digest
    return file_digest(path, "sha256")


def _build(model: str, num_classes: int, input_size: Sequence[int], options: dict | None,
           where: str) -> nn.Module:
    from ..train.run import build_recorded
    return build_recorded(model, num_classes, input_size, options,
                          where=f"{where} (the teacher)", error=EdgeError)


def _from_file(path: Path) -> Teacher:
    """A ``model.safetensors`` written by deeparch (its metadata names the model)."""
    from ..train.checkpoint import load_weights

    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
    except Exception:       # safetensors raises its own types for non-safetensors bytes
        raise EdgeError(f"the teacher {path} is not a weights file deeparch can read as a "
                        f"teacher; give a run folder, a model.safetensors written by "
                        f"deeparch train, or a hub name such as torchvision:resnet18."
                        ) from None
    try:
        model = meta["deeparch.model"]
        classes = json.loads(meta["deeparch.classes"])
        size = json.loads(meta["deeparch.input_size"])
        mean = json.loads(meta["deeparch.mean"])
        std = json.loads(meta["deeparch.std"])
        ok = (isinstance(model, str) and isinstance(classes, list) and classes
              and all(isinstance(c, str) for c in classes)
              and isinstance(size, list) and len(size) == 3
              and all(isinstance(v, int) and v > 0 for v in size)
              and all(isinstance(v, list) and len(v) == size[0] for v in (mean, std)))
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise EdgeError(f"the teacher {path} does not record its model, classes and input "
                        f"size (it was not written by deeparch train); give the run folder "
                        f"it came from or a hub name such as torchvision:resnet18.")
    net = _build(model, len(classes), size, None, str(path))
    try:
        load_weights(path, net)
    except DeeparchError as exc:
        raise EdgeError(f"the teacher {path} does not load into {model[:60]} "
                        f"({str(exc).splitlines()[0].rstrip('.')}).") from None
    return Teacher(net, "file", str(path), path, model, classes, len(classes), tuple(size),
                   tuple(map(float, mean)), tuple(map(float, std)))


def load_teacher(spec: str | Path) -> Teacher:
    """A teacher from a run folder (its ``model.safetensors``), a ``model.safetensors`` file
    written by deeparch, or a hub name (``torchvision:resnet18``); in eval mode."""
    from ..transfer import hub

    text = str(spec)
    if hub.is_hub_name(text):
        e = hub.entry(text)
        from ..transfer.weights import create_model
        path = Path(hub.resolve(text, progress=None)).resolve()
        try:
            net = create_model(e.model, weights=str(path), **e.model_kwargs)
        except DeeparchError as exc:
            raise EdgeError(f"the teacher {text} cannot be loaded "
                            f"({str(exc).splitlines()[0].rstrip('.')}).") from None
        pre = e.preprocess
        side = getattr(pre, "size", None) or 224
        out = _logits(net, torch.zeros(1, len(pre.mean), side, side))
        t = Teacher(net, "hub", text, path, e.model, None, int(out.shape[1]),
                    (len(pre.mean), side, side), tuple(pre.mean), tuple(pre.std))
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise EdgeError(f"no teacher at {text}; give a trained run folder, a "
                            f"model.safetensors written by deeparch train, or a hub name such "
                            f"as torchvision:resnet18.")
        path = path.resolve()
        if path.is_dir():
            from ..train.run import load_run, read_run_config
            run = read_run_config(path)
            weights = path / "model.safetensors"
            if not weights.is_file():
                raise EdgeError(f"the teacher run {path} has no model.safetensors (it did not "
                                f"finish); resume it first (deeparch train --resume {path}).")
            net, run = load_run(path, "model")
            t = Teacher(net, "run", str(path), weights, run["model"], list(run["classes"]),
                        int(run["num_classes"]), tuple(run["input_size"]),
                        tuple(run["mean"]), tuple(run["std"]))
        elif path.is_file():
            t = _from_file(path)
        else:
            raise EdgeError(f"the teacher {text} is neither a run folder nor a weights file.")
    t.module.eval()
    return t


def _logits(net: nn.Module, x: Tensor) -> Tensor:
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        net.train(was)
    return out[0] if isinstance(out, (tuple, list)) else out


def check_teacher(t: Teacher, classes: Sequence[str], input_size: Sequence[int]) -> list[str]:
    """Refuse a teacher that cannot teach this student (other classes, other channels);
    the notes to log (a resize)."""
    classes = list(classes)
    if t.num_classes != len(classes):
        raise EdgeError(f"the teacher {t.given} predicts {t.num_classes} classes but the "
                        f"student's data has {len(classes)}; give a teacher trained on the "
                        f"same classes.")
    if t.classes is not None and list(t.classes) != classes:
        diff = next(f"{a!r} vs {b!r}" for a, b in zip(t.classes, classes) if a != b)
        raise EdgeError(f"the teacher {t.given} was trained on other classes than the "
                        f"student's data (first difference: {diff}); give a teacher trained "
                        f"on the same classes, in the same order.")
    c, h, w = input_size
    if t.input_size[0] != c:
        raise EdgeError(f"the teacher {t.given} reads {t.input_size[0]}-channel images but the "
                        f"student's have {c}; give a teacher trained on {c}-channel images.")
    notes = []
    if tuple(t.input_size[1:]) != (h, w):
        notes.append(f"the teacher reads {t.input_size[1]}x{t.input_size[2]} images: the "
                     f"student's {h}x{w} batches are resized for it (bilinear) on the fly")
    return notes


def teacher_module(t: Teacher, mean: Sequence[float], std: Sequence[float],
                   input_size: Sequence[int]) -> nn.Module:
    """The teacher as the Trainer uses it: reading the student's normalised batches."""
    size = tuple(t.input_size[1:])
    return TeacherInput(t.module, (tuple(mean), tuple(std)), (t.mean, t.std),
                        None if size == tuple(input_size[1:]) else size).eval()


def record(t: Teacher, temperature: float, alpha: float) -> dict[str, Any]:
    """config.json's ``"distill"`` entry."""
    return {"teacher": t.given, "kind": t.kind, "file": str(t.file), "sha256": _digest(t.file),
            "model": t.model, "input_size": list(t.input_size), "mean": list(t.mean),
            "std": list(t.std), "temperature": float(temperature), "alpha": float(alpha)}


def check_record(d: Any, bad: Callable[[str, str], Exception]) -> None:
    """config.json's ``"distill"`` entry, checked before use."""
    if not isinstance(d, dict):
        raise bad("distill", "an object describing the teacher")
    for key in ("teacher", "file", "sha256", "model"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise bad(f"distill.{key}", "a non-empty string")
    if d.get("kind") not in KINDS:
        raise bad("distill.kind", "run, file or hub")
    try:
        _check_t_alpha(d.get("temperature"), d.get("alpha"))
    except TrainingError:
        raise bad("distill.temperature/alpha", "a temperature > 0 and an alpha in [0, 1]"
                  ) from None


def reload_teacher(d: dict[str, Any], out: Path) -> Teacher:
    """The teacher a stored run learns from, as it was (same file, same SHA-256)."""
    file = Path(d["file"])
    if d["kind"] != "hub" and not Path(d["teacher"]).exists():
        raise CheckpointError(f"the teacher {d['teacher']} that the run in {out} learns from "
                              f"is gone; put it back to resume the run, or train a new one.")
    if not file.is_file() or _digest(file) != d["sha256"]:
        raise CheckpointError(f"the teacher {d['teacher']} that the run in {out} learns from "
                              f"has changed since the run began (its weights are gone or have "
                              f"another SHA-256); restore it, or train a new run.")
    try:
        t = load_teacher(d["teacher"])
    except EdgeError as exc:
        raise CheckpointError(f"the teacher of the run in {out} cannot be loaded again "
                              f"({str(exc).rstrip('.')}).") from None
    if str(t.file) != str(file):
        raise CheckpointError(f"the teacher {d['teacher']} of the run in {out} now reads "
                              f"{t.file} instead of {file}; restore it, or train a new run.")
    return t


# --------------------------------------------------------------------------- a whole run

def distill(teacher: str | Path, student: str, data: str, out: str | Path, *,
            temperature: float = 4.0, alpha: float = 0.9, **train_kwargs: Any):
    """Train ``student`` (a model name or pattern) on ``data`` into the run folder ``out``
    with ``teacher`` (a run folder, a deeparch ``model.safetensors`` or a hub name):
    ``train(student, data, out, teacher=teacher, temperature=..., alpha=..., **kw)``."""
    from ..train.run import train
    return train(student, data, out, teacher=teacher, temperature=temperature, alpha=alpha,
                 **train_kwargs)


__all__ = ["Teacher", "TeacherInput", "distill", "distillation_loss", "load_teacher",
           "soft_target_loss"]
