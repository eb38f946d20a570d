"""ONNX export and an ONNX Runtime session that behaves like the model it came from.

:func:`export_onnx` writes a model as one ``.onnx`` file with PyTorch's dynamo exporter
(``torch.onnx.export(..., dynamo=True)``, which needs onnxscript), a dynamic batch
dimension and, by default, a check: ONNX Runtime runs the file on a random batch and its
logits must match torch's (they do to ~1e-6 on the zoo's small models). Where the dynamo
exporter fails and the older TorchScript exporter works, the latter is used and the
report says so. The file is written to a temporary name and renamed into place, so an
export that fails leaves nothing behind.

:func:`load_onnx` opens a file in ONNX Runtime; the :class:`OnnxModel` it returns takes a
torch tensor or a numpy array (N, C, H, W) and returns numpy logits.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io as _io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import EdgeError
from ..io import atomic_path
from ._deps import require

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# protobuf cannot hold a message over 2 GiB; a model near that needs ONNX's external data
# files, which this single-file writer refuses rather than leaving several files half-made
MAX_SINGLE_FILE_BYTES = 1_800_000_000
# a largest file load_onnx reads at all (bounded memory for a wrong path)
MAX_LOAD_BYTES = 2_200_000_000

# op types that only a quantized graph contains
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
              "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd",
              "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


@dataclasses.dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how well ONNX Runtime reproduces torch on it."""

    path: str
    size_bytes: int
    opset: int
    input_size: tuple[int, int, int]
    input_names: list[str]
    output_names: list[str]
    dynamic_batch: bool
    exporter: str                      # "dynamo" or "legacy" (TorchScript)
    max_abs_error: float | None        # ORT vs torch on a random batch; None: not checked
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    def __str__(self) -> str:
        err = "not checked" if self.max_abs_error is None else \
            f"max |ORT - torch| {self.max_abs_error:.2e}"
        return (f"{self.path}: {self.size_bytes / 1e6:.2f} MB, opset {self.opset}, "
                f"{self.exporter} exporter, {err}")


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines, deprecation warnings and log records, kept out of the
    user's output (errors still come through as exceptions)."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch._dynamo",
             "torch.fx.experimental.symbolic_shapes")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    out = _io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


_OP_PATTERNS = (
    re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)'"),
    re.compile(r"operator '([^']+)' to ONNX"),
    re.compile(r"call_function\[target=torch\.ops\.([\w.]+?)(?:\.default)?\]"),
    re.compile(r"Unsupported: (.{1,80})"),
)


def _failed_op(exc: BaseException) -> str | None:
    text = str(exc)
    for pat in _OP_PATTERNS:
        m = pat.search(text)
        if m:
            return m.group(1).strip()
    if "data-dependent" in text or "GuardOnDataDependent" in type(exc).__name__:
        return "control flow that depends on tensor values"
    return None


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.startswith(("Failed to convert", "Failed to export")):
            return line[:200]
    return type(exc).__name__


def _param_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _opset_of(proto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _export_dynamo(model, x, tmp: Path, dynamic_batch: bool, opset: int | None) -> None:
    import torch
    kw: dict[str, Any] = {}
    if dynamic_batch:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1 << 20)},)
    with _quiet():
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], opset_version=opset,
                                    verbose=False, report=False, optimize=True, **kw)
        program.save(tmp, external_data=False)


def _export_legacy(model, x, tmp: Path, dynamic_batch: bool, opset: int | None) -> None:
    import torch
    kw: dict[str, Any] = {}
    if dynamic_batch:
        kw["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        # a trace records values as constants: refuse a model whose forward branches on them
        warnings.simplefilter("error", torch.jit.TracerWarning)
        with _quiet():
            warnings.simplefilter("error", torch.jit.TracerWarning)
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset or 17,
                              do_constant_folding=True, **kw)


def _strip_node_metadata(proto) -> bool:
    """Drop the exporter's per-node debugging records (source stack traces, FX node names,
    rewrite-rule names): ~600 bytes a node, 15% of a 135K-parameter ResNet's fp32 file and
    40% of its int8 file, where the file size is what edge deployment counts. The graph and
    the model-level metadata are kept."""
    changed = False
    for node in proto.graph.node:
        if len(node.metadata_props) or node.doc_string:
            del node.metadata_props[:]
            node.doc_string = ""
            changed = True
    return changed


def export_onnx(model, path: str | os.PathLike, input_size: Sequence[int] | str, *,
                dynamic_batch: bool = True, check: bool = True,
                opset: int | None = None) -> ExportReport:
    """Export ``model`` (an ``nn.Module`` taking one N,C,H,W tensor) to ``path``.

    ``input_size`` is C,H,W. ``dynamic_batch``: the file accepts any batch size (else only
    the batch of 1 it was traced with). ``check``: ONNX Runtime runs the file on a random
    batch and the largest absolute difference from torch's logits is reported; a file whose
    logits differ by more than 1e-3 of their scale is refused. ``opset``: the ONNX opset
    (default: the exporter's). A model that cannot be exported raises
    :class:`~deeparch.errors.EdgeError` naming the operation; nothing is written then.
    """
    import torch
    from ..inspect.summary import parse_input_size

    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch.onnx.export with dynamo=True)")
    if check:
        require("onnxruntime", "checking the exported ONNX file (check=False skips it)")
    if not isinstance(model, torch.nn.Module):
        raise EdgeError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}.")
    size = parse_input_size(input_size)
    if len(size) != 3:
        raise EdgeError(f"input_size must be C,H,W for an image model, got {size}.")
    if opset is not None and not (7 <= int(opset) <= 30):
        raise EdgeError(f"opset {opset} is not an ONNX opset this exporter writes; leave it "
                        f"out or give one such as 18.")
    target = Path(path)
    if target.is_dir():
        raise EdgeError(f"{target} is a folder; give the .onnx file to write.")
    nbytes = _param_bytes(model)
    if nbytes > MAX_SINGLE_FILE_BYTES:
        raise EdgeError(f"the model's weights take {nbytes / 1e9:.1f} GB, more than one ONNX "
                        f"file can hold (2 GB); export it with torch.onnx.export(..., "
                        f"external_data=True) into a folder of its own.")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if device.type == "meta":
        raise EdgeError("the model is on the meta device (no weights); build it on the CPU "
                        "to export it.")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2 if dynamic_batch else 1, *size), generator=gen).to(device)
    notes: list[str] = []
    try:
        try:
            with torch.inference_mode():
                model(x)
        except Exception as exc:  # noqa: BLE001 - the user's model, any error
            raise EdgeError(f"the model does not run on an input of size "
                            f"{','.join(map(str, size))} ({type(exc).__name__}: "
                            f"{_first_line(exc)}); give the input size it was built for."
                            ) from None
        with atomic_path(target) as tmp:
            exporter = "dynamo"
            try:
                _export_dynamo(model, x, tmp, dynamic_batch, opset)
            except Exception as exc:  # noqa: BLE001 - try the older exporter, then explain
                first = exc
                try:
                    tmp.write_bytes(b"")
                    _export_legacy(model, x, tmp, dynamic_batch, opset)
                except Exception:  # noqa: BLE001 - the dynamo failure is the one to report
                    op = _failed_op(first)
                    what = f"its operation {op}" if op else _first_line(first)
                    raise EdgeError(f"the model cannot be exported to ONNX: {what} has no ONNX "
                                    f"equivalent in either exporter; replace it with standard "
                                    f"layers or leave it out of the exported model.") from None
                exporter = "legacy"
                op = _failed_op(first)
                notes.append(f"the dynamo exporter failed ({op or _first_line(first)}); the "
                             f"TorchScript exporter wrote this file")
            proto = onnx.load(str(tmp), load_external_data=False)
            if _strip_node_metadata(proto):
                tmp.write_bytes(proto.SerializeToString())
            try:
                onnx.checker.check_model(proto)
            except Exception as exc:  # noqa: BLE001
                raise EdgeError(f"the exported graph is not valid ONNX ({_first_line(exc)}); "
                                f"nothing was written.") from None
            err = None
            if check:
                err = _check_against_torch(model, tmp, size, dynamic_batch, device)
            opset_used = _opset_of(proto)
            in_names = [i.name for i in proto.graph.input]
            out_names = [o.name for o in proto.graph.output]
        return ExportReport(str(target), target.stat().st_size, opset_used, tuple(size),
                            in_names, out_names, dynamic_batch, exporter, err, notes)
    finally:
        model.train(was_training)


def _check_against_torch(model, file: Path, size, dynamic_batch: bool, device) -> float:
    import torch
    om = load_onnx(file, threads=1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((3 if dynamic_batch else 1, *size), generator=gen)
    with torch.inference_mode():
        ref = model(x.to(device))
    if isinstance(ref, (tuple, list)):
        ref = ref[0]
    ref = ref.float().cpu().numpy()
    got = om(x)
    if got.shape != ref.shape:
        raise EdgeError(f"ONNX Runtime's output has shape {got.shape} where torch's has "
                        f"{ref.shape}; nothing was written.")
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    if not np.isfinite(err) or err > 1e-3 * scale:
        raise EdgeError(f"ONNX Runtime's logits differ from torch's by up to {err:.3g} on a "
                        f"random batch (scale {scale:.3g}); the export is wrong, nothing was "
                        f"written.")
    return err


# --------------------------------------------------------------------------- loading

class OnnxModel:
    """An ONNX Runtime session that is called like the model it came from.

    ``OnnxModel(x)``: ``x`` a torch tensor or numpy array (N, C, H, W), float32 or castable;
    returns the first output (logits) as a numpy array. ``input_size`` is (C, H, W) as the
    file declares it (a dimension the file leaves symbolic is None)."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 _proto=None):
        self.path = str(path)
        self.threads = threads
        self.size_bytes = Path(path).stat().st_size
        if _proto is None:
            _proto = require("onnx", "reading ONNX models").load(self.path)
        graph = _proto.graph
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise EdgeError(f"{self.path} has {len(inputs)} inputs; deeparch runs models with "
                            f"one image input.")
        self.input_name = inputs[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(shape) != 4:
            raise EdgeError(f"{self.path} takes a {len(shape)}-d input; deeparch runs image "
                            f"models (N, C, H, W).")
        self.batch = shape[0]                       # None: any batch
        self.input_size = tuple(shape[1:])
        self.output_names = [o.name for o in graph.output]
        self.ops = sorted({n.op_type for n in graph.node})
        self.quantized = bool(_QUANT_OPS & set(self.ops))
        self.opset = _opset_of(_proto)
        self._session = self._make_session(threads)

    def _make_session(self, threads: int | None, spinning: bool = True):
        ort = require("onnxruntime", "running ONNX models")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        if not spinning:     # idle worker threads sleep instead of spinning on the cores
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(self.path, sess_options=opts,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise EdgeError(f"ONNX Runtime cannot run {self.path}: "
                            f"{_first_line(exc)}.") from None

    def with_threads(self, threads: int | None, *, spinning: bool = True) -> "OnnxModel":
        """This model in a session with ``threads`` intra-op threads (self if the same).
        ``spinning=False``: its idle threads sleep at once rather than spin, so that they take
        no CPU from other runtimes timed in between (:func:`deeparch.edge.latency`)."""
        if threads == self.threads and spinning:
            return self
        other = object.__new__(OnnxModel)
        other.__dict__.update(self.__dict__)
        other.threads = threads
        other._session = self._make_session(threads, spinning)
        return other

    def _array(self, x) -> np.ndarray:
        if hasattr(x, "detach"):                      # a torch tensor
            x = x.detach().cpu().float().numpy()
        try:
            arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError):
            raise EdgeError(f"{self.path} takes a float array (N, C, H, W), got "
                            f"{type(x).__name__}.") from None
        if arr.ndim != 4:
            raise EdgeError(f"{self.path} takes a batch (N, C, H, W), got an array of shape "
                            f"{tuple(arr.shape)}.")
        want = self.input_size
        if any(w is not None and w != g for w, g in zip(want, arr.shape[1:])):
            raise EdgeError(f"{self.path} takes inputs of size "
                            f"{','.join(str(w) for w in want)}, got {tuple(arr.shape[1:])}.")
        if self.batch is not None and arr.shape[0] != self.batch:
            raise EdgeError(f"{self.path} was exported for batches of {self.batch}, got "
                            f"{arr.shape[0]}; export it with dynamic_batch=True.")
        return arr

    def run(self, x) -> list[np.ndarray]:
        """Every output of the graph for ``x``."""
        arr = self._array(x)
        try:
            return self._session.run(None, {self.input_name: arr})
        except Exception as exc:  # noqa: BLE001
            raise EdgeError(f"ONNX Runtime failed on {self.path}: {_first_line(exc)}.") from None

    def __call__(self, x) -> np.ndarray:
        return self.run(x)[0]

    def __repr__(self) -> str:
        size = ",".join("?" if s is None else str(s) for s in self.input_size)
        return (f"OnnxModel({self.path!r}, input {size}, {self.size_bytes / 1e6:.2f} MB"
                f"{', int8' if self.quantized else ''})")


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """Open ``path`` in ONNX Runtime (CPU). A missing, empty, truncated or non-ONNX file
    raises :class:`~deeparch.errors.EdgeError`; a missing onnx/onnxruntime package raises
    :class:`~deeparch.errors.MissingDependencyError`. ``threads``: ONNX Runtime's intra-op
    threads (default: its own choice)."""
    onnx = require("onnx", "reading ONNX models")
    require("onnxruntime", "running ONNX models")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise EdgeError(f"threads must be a positive number, got {threads!r}.")
    p = Path(path)
    if not p.exists():
        raise EdgeError(f"{p} does not exist; give the path of an .onnx file.")
    if p.is_dir():
        raise EdgeError(f"{p} is a folder; give the path of an .onnx file.")
    size = p.stat().st_size
    if size == 0:
        raise EdgeError(f"{p} is empty; it is not an ONNX model (export one with deeparch "
                        f"export).")
    if size > MAX_LOAD_BYTES:
        raise EdgeError(f"{p} is {size / 1e9:.1f} GB, more than a single-file ONNX model can "
                        f"be.")
    data = p.read_bytes()
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, ValidationError, ...
        raise EdgeError(f"{p} is not a valid ONNX model (corrupt, truncated or another "
                        f"format); export it again with deeparch export.") from None
    if not proto.graph.node:
        raise EdgeError(f"{p} is not a valid ONNX model (its graph has no operations); "
                        f"export it again with deeparch export.")
    if any(t.HasField("data_location") and t.data_location == 1
           for t in proto.graph.initializer):
        raise EdgeError(f"{p} keeps its weights in external data files, which deeparch does "
                        f"not read; export it as one file.")
    return OnnxModel(p, threads=threads, _proto=proto)
