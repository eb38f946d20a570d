"""Int8 models for the CPU: ONNX Runtime post-training quantization, and our own
quantization-aware fine-tuning for the models it hurts.

:func:`quantize` is ONNX Runtime's static quantization (QDQ format): weights int8 per
output channel (symmetric), activations uint8 with ranges calibrated on images the caller
gives. On a CPU without VNNI the int8 kernels add pairs of u8*s8 products into int16 and
saturate; there the weights must use 7 bits (``reduce_range``): without it a small
MobileNetV2's int8 logits were wrong (relative error 0.15-0.18, top-1 agreement with fp32
0 of 32), with it 0.017. ``reduce_range=None`` decides from the CPU's flags
(:func:`deeparch.edge.cpu.reduce_range`). Every report says how far the int8 model is from
the fp32 one on the calibration images, and a poor agreement is a warning, never silent.

:func:`qat_finetune` trains a model a few epochs with its conv/linear weights and their
inputs fake-quantised the way ONNX Runtime will quantise them (straight-through
gradients), and returns a plain fp32 model for :func:`quantize`.

A PyTorch-native int8 route is not offered: on the machines measured
(torch 2.13 CPU) ``torch.ao.quantization`` is deprecated and its eager mode fails on
residual adds, and torchao's pt2e int8 run eagerly was ~20x slower than fp32 (see
benchmarks/edge_latency.py for the measurement of the routes that are offered).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import EdgeError
from ..io import atomic_path
from ._deps import require
from .onnx import OnnxModel, _first_line, load_onnx

METHODS = ("minmax", "entropy", "percentile")
AGREEMENT_WARNING = 0.9          # top-1 agreement with fp32 below this: a warning
CALIBRATION_BATCH = 32
MAX_CALIBRATION = 4096           # images used for calibration at most (bounded time)


@dataclasses.dataclass
class QuantReport:
    """What :func:`quantize` / :func:`quantize_dynamic` wrote and how close it is to fp32.

    ``agreement``: the fraction of the check images whose top-1 class is the same in int8
    and fp32. ``max_rel_error``: max |int8 - fp32| over all logits divided by max |fp32|.
    ``size_ratio``: fp32 file size / int8 file size."""

    path: str
    method: str
    per_channel: bool
    reduce_range: bool
    reduce_range_reason: str
    size_bytes: int
    fp32_size_bytes: int
    size_ratio: float
    agreement: float | None
    max_rel_error: float | None
    n_check: int
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        check = "not checked" if self.agreement is None else (
            f"top-1 agreement with fp32 {self.agreement:.1%} on {self.n_check} images, max "
            f"relative error {self.max_rel_error:.3g}")
        return (f"{self.path}: int8 ({self.method}{', per channel' if self.per_channel else ''}"
                f"{', 7-bit weights' if self.reduce_range else ''}), "
                f"{self.size_bytes / 1e6:.2f} MB ({self.size_ratio:.1f}x smaller), {check}")


def _reduce_range(value: bool | None) -> tuple[bool, str]:
    if value is not None:
        return bool(value), "given"
    from .cpu import cpu_info, reduce_range
    cpu = cpu_info()
    rr = reduce_range(cpu)
    return rr, ("this CPU lacks VNNI: 8-bit weights would saturate int16 sums" if rr
                else "this CPU has VNNI: full 8-bit weights are safe")


def _as_array(data, what: str) -> np.ndarray:
    if hasattr(data, "detach"):
        data = data.detach().cpu().float().numpy()
    try:
        arr = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise EdgeError(f"{what} must be a float tensor or array (N, C, H, W), got "
                        f"{type(data).__name__}.") from None
    return arr


def _check_images(arr: np.ndarray, model: OnnxModel, what: str) -> np.ndarray:
    if arr.ndim != 4:
        raise EdgeError(f"{what} must be a batch of images (N, C, H, W), got an array of shape "
                        f"{tuple(arr.shape)}.")
    if arr.shape[0] == 0:
        raise EdgeError(f"{what} is empty; give at least one image (a few hundred calibrate "
                        f"well).")
    want = model.input_size
    if any(w is not None and w != g for w, g in zip(want, arr.shape[1:])):
        takes = ",".join("?" if w is None else str(w) for w in want)
        raise EdgeError(f"{what} has images of size {','.join(map(str, arr.shape[1:]))} but "
                        f"{model.path} takes {takes}.")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise EdgeError(f"{what} holds {bad} NaN or infinite values; clean the images first.")
    if model.batch is not None and model.batch != 1:
        raise EdgeError(f"{model.path} takes batches of exactly {model.batch}; export it with "
                        f"a dynamic batch (deeparch export does).")
    return np.ascontiguousarray(arr[:MAX_CALIBRATION])


def _batches(arr: np.ndarray, batch: int | None) -> Iterable[np.ndarray]:
    step = batch or CALIBRATION_BATCH
    for i in range(0, len(arr), step):
        yield arr[i:i + step]


def _calibration_step(n: int) -> int:
    """A batch size for ``n`` calibration images: all of them if few, else the divisor of
    ``n`` nearest to 32 (from 16 up), else 32 (the remainder is left out)."""
    if n <= CALIBRATION_BATCH:
        return n
    for step in range(CALIBRATION_BATCH, 15, -1):
        if n % step == 0:
            return step
    return CALIBRATION_BATCH


def _compare(fp32: OnnxModel, q: OnnxModel, arr: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, max relative error of the logits) of ``q`` against ``fp32``."""
    step = 1 if fp32.batch == 1 else 64
    ref = np.concatenate([fp32(b) for b in _batches(arr, step)])
    got = np.concatenate([q(b) for b in _batches(arr, step)])
    agree = float(np.mean(ref.argmax(1) == got.argmax(1))) if ref.ndim == 2 else float(
        np.mean(ref.reshape(len(ref), -1).argmax(1) == got.reshape(len(got), -1).argmax(1)))
    scale = float(np.max(np.abs(ref))) or 1.0
    return agree, float(np.max(np.abs(got - ref)) / scale)


def _warn_agreement(report: QuantReport) -> None:
    if report.agreement is None or report.agreement >= AGREEMENT_WARNING:
        return
    tips = []
    if report.method != "dynamic":
        others = [m for m in METHODS if m != report.method]
        tips.append(f"method={others[0]!r} or {others[1]!r}")
    if not report.reduce_range:
        tips.append("reduce_range=True (7-bit weights, needed on CPUs without VNNI)")
    tips.append("qat_finetune(model, ...) before quantizing")
    warnings.warn(f"the int8 model agrees with fp32 on only {report.agreement:.1%} of "
                  f"{report.n_check} images (max relative error {report.max_rel_error:.3g}); "
                  f"try {', '.join(tips)}.", stacklevel=3)


@contextlib.contextmanager
def _silenced():
    """ONNX Runtime's quantization tools print and log advice; keep it out of our output."""
    import logging
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _prepare(onnx_in, onnx_out) -> tuple[OnnxModel, Path]:
    fp32 = load_onnx(onnx_in, threads=1)
    out = Path(onnx_out)
    if _same_file(Path(fp32.path), out):
        raise EdgeError(f"the int8 model would overwrite its fp32 input {out}; give another "
                        f"output path.")
    if out.is_dir():
        raise EdgeError(f"{out} is a folder; give the .onnx file to write.")
    if fp32.quantized:
        raise EdgeError(f"{fp32.path} is already quantized; quantize the fp32 model.")
    return fp32, out


def _preprocess(src: str, dst: Path, notes: list[str]) -> str:
    """ONNX Runtime's recommended pre-processing (symbolic shape inference and graph
    optimisation, e.g. folding BatchNorm into Conv); the original if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    try:
        with _silenced():
            quant_pre_process(src, str(dst))
        return str(dst)
    except Exception as exc:  # noqa: BLE001 - an optional step
        notes.append(f"pre-processing skipped ({_first_line(exc)})")
        return src


def quantize(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, calibration, *,
             method: str = "minmax", per_channel: bool = True, reduce_range: bool | None = None,
             check: bool = True) -> QuantReport:
    """Static int8 quantization of the fp32 file ``onnx_in`` into ``onnx_out``.

    ``calibration``: images (N, C, H, W), tensor or array, normalised the way the model
    expects (a few hundred are plenty; at most 4096 are used). ``method``: how activation
    ranges are chosen from them: ``minmax`` (the observed range), ``entropy`` (KL
    divergence, TensorRT style) or ``percentile`` (99.999th). ``per_channel``: one weight
    scale per output channel. ``reduce_range``: 7-bit weights; None decides from the CPU
    (needed without VNNI). ``check``: compare int8 with fp32 on the calibration images;
    an agreement below 90% is a warning. Bad calibration data raises
    :class:`~deeparch.errors.EdgeError` before anything is written."""
    if method not in METHODS:
        raise EdgeError(f"unknown calibration method {method!r}; choose one of "
                        f"{', '.join(METHODS)}.")
    require("onnxruntime", "int8 quantization")
    fp32, out = _prepare(onnx_in, onnx_out)
    arr = _check_images(_as_array(calibration, "the calibration data"), fp32,
                        "the calibration data")
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    rr, why = _reduce_range(reduce_range)
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    name = fp32.input_name
    # ONNX Runtime's calibrators stack the batches, so every batch must have the same size
    step = 1 if fp32.batch == 1 else _calibration_step(len(arr))
    calib_arr = arr[:len(arr) // step * step]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(_batches(calib_arr, step))

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {name: b}

        def rewind(self):
            self._it = iter(_batches(calib_arr, step))

    notes: list[str] = []
    if len(calib_arr) < len(arr):
        notes.append(f"calibrated on {len(calib_arr)} of the {len(arr)} images (equal batches "
                     f"of {step}); all {len(arr)} checked")
    with tempfile.TemporaryDirectory(prefix="deeparch-quant-") as work:
        src = _preprocess(fp32.path, Path(work) / "pre.onnx", notes)
        with atomic_path(out) as tmp:
            try:
                with _silenced():
                    quantize_static(src, str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                                    per_channel=per_channel, reduce_range=rr,
                                    activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8, calibrate_method=calib,
                                    extra_options={"CalibTensorRangeSymmetric": False})
            except EdgeError:
                raise
            except Exception as exc:  # noqa: BLE001 - ORT raises untyped errors
                raise EdgeError(f"ONNX Runtime could not quantize {fp32.path}: "
                                f"{_first_line(exc)}; nothing was written.") from None
            report = _report(fp32, tmp, out, method, per_channel, rr, why, arr if check
                             else None, notes)
    _warn_agreement(report)
    return report


def _report(fp32: OnnxModel, tmp: Path, out: Path, method: str, per_channel: bool, rr: bool,
            why: str, arr: np.ndarray | None, notes: list[str]) -> QuantReport:
    q = OnnxModel(tmp, threads=1)
    agree = err = None
    if arr is not None:
        agree, err = _compare(fp32, q, arr)
    size = tmp.stat().st_size
    return QuantReport(str(out), method, per_channel, rr, why, size, fp32.size_bytes,
                       fp32.size_bytes / max(size, 1), agree, err,
                       0 if arr is None else len(arr), notes)


def quantize_dynamic(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, *,
                     check_data=None, reduce_range: bool | None = None) -> QuantReport:
    """Dynamic int8 of the MatMul/Gemm (Linear) weights of ``onnx_in`` into ``onnx_out``:
    weights stored int8, activations quantised on the fly per batch, convolutions left fp32.

    It helps where the weights sit in fully connected layers: VGG/AlexNet-style heads
    (VGG-16's three FC layers hold 124M of its 138M parameters) shrink ~4x with no
    calibration data; a convolutional network with a small head gains almost nothing in
    size or speed (measured in benchmarks/edge_latency.py). ``check_data`` (N, C, H, W):
    images to compare int8 with fp32 on (default: 32 random normal images)."""
    require("onnxruntime", "int8 quantization")
    fp32, out = _prepare(onnx_in, onnx_out)
    if check_data is None:
        c, h, w = (s or 1 for s in fp32.input_size)
        n = 1 if fp32.batch == 1 else 32
        check_data = np.random.default_rng(0).standard_normal((n, c, h, w), dtype=np.float32)
    arr = _check_images(_as_array(check_data, "check_data"), fp32, "check_data")
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_dynamic
    rr, why = _reduce_range(reduce_range)
    notes: list[str] = []
    if not {"MatMul", "Gemm"} & set(fp32.ops):
        notes.append("the model has no MatMul/Gemm layer; nothing was quantized")
    with atomic_path(out) as tmp:
        try:
            with _silenced():
                ort_dynamic(fp32.path, str(tmp), op_types_to_quantize=["MatMul", "Gemm"],
                            per_channel=False, reduce_range=rr, weight_type=QuantType.QInt8)
        except Exception as exc:  # noqa: BLE001
            raise EdgeError(f"ONNX Runtime could not quantize {fp32.path}: "
                            f"{_first_line(exc)}; nothing was written.") from None
        report = _report(fp32, tmp, out, "dynamic", False, rr, why, arr, notes)
    _warn_agreement(report)
    return report


# --------------------------------------------------------------------------- QAT

class _ActObserver:
    """Fake-quantises a layer's input as ONNX Runtime will: affine uint8 over a range
    tracked by a moving average of each batch's min and max (the first batch sets it)."""

    def __init__(self, momentum: float = 0.01):
        self.momentum = momentum
        self.lo = self.hi = None

    def __call__(self, module, args):
        import torch
        x = args[0]
        if module.training:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo += self.momentum * (lo - self.lo)
                self.hi += self.momentum * (hi - self.hi)
        if self.lo is None:
            return None
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)      # zero must be exact
        scale = max((hi - lo) / 255.0, 1e-8)
        zero = int(min(255, max(0, round(-lo / scale))))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])


class _WeightFakeQuant:
    """A parametrization: the weight as its symmetric int8 (or 7-bit) grid sees it, per
    output channel or per tensor, with a straight-through gradient."""

    def __init__(self, per_channel: bool, reduce_range: bool):
        self.per_channel = per_channel
        self.qmax = 64 if reduce_range else 127   # ONNX Runtime's symmetric int8 ranges

    def module(self):
        import torch

        outer = self

        class FakeQuant(torch.nn.Module):
            def forward(self, w):
                return outer.apply(w)
        return FakeQuant()

    def apply(self, w):
        import torch
        q = self.qmax
        if self.per_channel:
            amax = w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-8)
            scale = (amax / q).float()
            zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
            return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -q, q)
        amax = max(float(w.detach().abs().max()), 1e-8)
        return torch.fake_quantize_per_tensor_affine(w, amax / q, 0, -q, q)


def qat_finetune(model, train_x, train_y, *, epochs: int = 2, lr: float = 1e-3,
                 batch_size: int = 64, per_channel: bool = True,
                 reduce_range: bool | None = None, seed: int = 0,
                 log: Callable[[str], None] | None = None):
    """Quantization-aware fine-tuning: train ``model`` for ``epochs`` on (``train_x``,
    ``train_y``) with every Conv/Linear weight fake-quantised (symmetric int8 per output
    channel, 7-bit with ``reduce_range``, which None decides from the CPU) and every
    Conv/Linear input fake-quantised (affine uint8, moving-average min/max), gradients
    passing straight through the rounding; Adam at ``lr``. Returns a copy of the model,
    plain fp32 (no fake quantisation left), that :func:`quantize` then turns into int8
    with a smaller loss. ``train_x`` (N, C, H, W) normalised like the model's inputs,
    ``train_y`` (N,) class indices. BatchNorm keeps its statistics frozen (eval mode):
    with per-channel weights its later folding into the convolution changes no rounding.
    """
    import copy

    import torch
    from torch.nn.utils import parametrize

    if not isinstance(model, torch.nn.Module):
        raise EdgeError(f"qat_finetune needs a torch.nn.Module, got {type(model).__name__}.")
    x = torch.as_tensor(_as_array(train_x, "train_x"))
    y = torch.as_tensor(np.asarray(train_y.detach().cpu() if hasattr(train_y, "detach")
                                   else train_y)).long()
    if x.ndim != 4 or len(x) == 0:
        raise EdgeError(f"train_x must be a non-empty batch of images (N, C, H, W), got shape "
                        f"{tuple(x.shape)}.")
    if y.shape != (len(x),):
        raise EdgeError(f"train_y must hold one class index per image ({len(x)}), got shape "
                        f"{tuple(y.shape)}.")
    if not torch.isfinite(x).all():
        raise EdgeError("train_x holds NaN or infinite values; clean the images first.")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) < 1:
            raise EdgeError(f"{name} must be a positive number, got {value!r}.")
    if not lr > 0:
        raise EdgeError(f"lr must be positive, got {lr!r}.")
    rr, why = _reduce_range(reduce_range)
    net = copy.deepcopy(model).cpu().float()
    layers = [m for m in net.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear))]
    if not layers:
        raise EdgeError("the model has no Conv or Linear layer to quantize.")
    wq = _WeightFakeQuant(per_channel, rr)
    hooks = []
    for m in layers:
        parametrize.register_parametrization(m, "weight", wq.module())
        hooks.append(m.register_forward_pre_hook(_ActObserver()))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    try:
        for epoch in range(int(epochs)):
            net.train()
            for m in net.modules():          # frozen normalisation statistics
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
            order = torch.randperm(len(x), generator=gen)
            total, count = 0.0, 0
            for i in range(0, len(x), int(batch_size)):
                idx = order[i:i + int(batch_size)]
                opt.zero_grad(set_to_none=True)
                out = net(x[idx])
                if isinstance(out, (tuple, list)):
                    out = out[0]
                loss = loss_fn(out, y[idx])
                if not torch.isfinite(loss):
                    raise EdgeError(f"quantization-aware training diverged (loss {loss.item()})"
                                    f" in epoch {epoch + 1}; lower lr.")
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            if log:
                log(f"qat epoch {epoch + 1}/{epochs}: loss {total / count:.4f} "
                    f"({'7-bit' if rr else '8-bit'} weights: {why})")
    finally:
        for h in hooks:
            h.remove()
        for m in layers:
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    net.eval()
    return net


# ``deeparch.edge.quantization`` names both this module and its main function: once anything
# imports the module (``from deeparch.edge.quantization import ...``, or the lazy export of
# qat_finetune), Python binds the package attribute to the module, and ``from deeparch.edge
# import quantize`` would hand out a module. Calling the module calls the function, so both
# spellings work whatever was imported first.
