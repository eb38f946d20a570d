"""Latency, measured side by side: torch eager and ONNX Runtime models on the same inputs.

Every measurement round visits every (target, batch) pair in turn, ``repeats`` rounds in
all, so that a slow phase of a shared machine (another process, the CPU's clock) falls on
every target alike; the table reports each pair's minimum and median over the rounds.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import EdgeError

_MAX_ELEMENTS = 1 << 28          # one input batch at most (1 GiB of float32)


@dataclasses.dataclass
class BenchRow:
    name: str
    runtime: str                 # "torch" or "onnxruntime"
    batch: int
    min_ms: float
    median_ms: float
    per_image_ms: float          # median / batch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class BenchResult:
    rows: list[BenchRow]
    input_size: tuple[int, int, int]
    threads: int
    repeats: int
    warmup: int
    cpu: dict[str, Any]

    def row(self, name: str, batch: int) -> BenchRow:
        for r in self.rows:
            if r.name == name and r.batch == batch:
                return r
        raise KeyError((name, batch))

    def speedup(self, name: str, baseline: str, batch: int) -> float:
        """How many times faster ``name`` is than ``baseline`` at ``batch`` (medians)."""
        return self.row(baseline, batch).median_ms / self.row(name, batch).median_ms

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "threads": self.threads,
                "repeats": self.repeats, "warmup": self.warmup, "cpu": self.cpu,
                "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> str:
        head = ("name", "runtime", "batch", "min ms", "median ms", "ms/image", "vs first")
        first = {}
        for r in self.rows:
            first.setdefault(r.batch, r.median_ms)
        body = [(r.name, r.runtime, str(r.batch), f"{r.min_ms:.3f}", f"{r.median_ms:.3f}",
                 f"{r.per_image_ms:.4f}", f"{first[r.batch] / r.median_ms:.2f}x")
                for r in self.rows]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                 for line in [head] + body]
        cpu = self.cpu.get("model", "unknown CPU")
        size = "x".join(map(str, self.input_size))
        lines.append(f"{cpu}, {self.threads} thread{'s' if self.threads != 1 else ''}, input "
                     f"{size}, {self.repeats} interleaved rounds after {self.warmup} warm-up")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise EdgeError(f"{name} must be a whole number of at least 1, got {value!r}.")
    return int(value)


def _runner(name: str, target, threads: int):
    """(runtime, call(x_numpy, x_torch)) for one target."""
    import torch

    from .onnx import OnnxModel, load_onnx
    if isinstance(target, (str, os.PathLike)):
        if Path(target).suffix.lower() != ".onnx":
            raise EdgeError(f"target {name!r} is a path but not an .onnx file ({target}); "
                            f"give an nn.Module, an OnnxModel or an .onnx path.")
        target = load_onnx(target)
    if isinstance(target, OnnxModel):
        # ONNX Runtime's workers spin for a while after each run; between the interleaved
        # calls of other targets that would steal their cores, so here they sleep at once
        om = target.with_threads(threads, spinning=False)
        return "onnxruntime", om, (lambda xn, xt: om(xn))
    if isinstance(target, torch.nn.Module):
        model = target

        def call(xn, xt):
            with torch.inference_mode():
                return model(xt)
        return "torch", model, call
    raise EdgeError(f"target {name!r} is a {type(target).__name__}; give an nn.Module, an "
                    f"OnnxModel or an .onnx path.")


def bench(targets: Mapping[str, Any], input_size: Sequence[int] | str, *,
          batches: Sequence[int] = (1, 32), repeats: int = 30, warmup: int = 5,
          threads: int | None = None) -> BenchResult:
    """Time each target on random inputs of ``input_size`` (C, H, W) at each batch size.

    ``targets``: name -> ``nn.Module`` (run in eval mode under ``torch.inference_mode``),
    :class:`~deeparch.edge.onnx.OnnxModel` or the path of an ``.onnx`` file. ``threads``:
    the CPU threads of both runtimes (torch's are restored afterwards; default: torch's
    current count). ``warmup`` untimed calls per pair come first. ONNX Runtime's idle
    threads do not spin here (they would take the cores of the target timed next)."""
    import torch

    from ..inspect.summary import parse_input_size
    from .cpu import cpu_info
    if not isinstance(targets, Mapping) or not targets:
        raise EdgeError("bench needs at least one target, as {name: model}.")
    size = parse_input_size(input_size)
    if len(size) != 3:
        raise EdgeError(f"input_size must be C,H,W, got {size}.")
    if isinstance(batches, (int, np.integer)):
        batches = (batches,)
    batches = [_positive("each batch size", b) for b in batches]
    if not batches:
        raise EdgeError("batches must name at least one batch size, e.g. (1, 32).")
    repeats = _positive("repeats", repeats)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise EdgeError(f"warmup must be a whole number of at least 0, got {warmup!r}.")
    previous = torch.get_num_threads()
    n_threads = previous if threads is None else _positive("threads", threads)
    for b in batches:
        if b * int(np.prod(size)) > _MAX_ELEMENTS:
            raise EdgeError(f"a batch of {b} at {size} is more than 1 GiB of input; use "
                            f"smaller batches.")
    runners = {name: _runner(str(name), t, n_threads) for name, t in targets.items()}
    gen = torch.Generator().manual_seed(0)
    inputs = {}
    for b in batches:
        xt = torch.randn((b, *size), generator=gen)
        inputs[b] = (xt.numpy(), xt)
    modes = {}
    torch.set_num_threads(n_threads)
    try:
        for name, (runtime, obj, _) in runners.items():
            if runtime == "torch":
                modes[name] = obj.training
                obj.eval()
        pairs = [(name, b) for b in batches for name in runners]
        for name, b in pairs:
            call = runners[name][2]
            try:
                for _ in range(warmup or 1):
                    call(*inputs[b])
            except EdgeError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's model, any error
                raise EdgeError(f"target {name!r} fails on a batch of {b} at "
                                f"{','.join(map(str, size))}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}."
                                ) from None
        times: dict[tuple[str, int], list[float]] = {p: [] for p in pairs}
        for _ in range(repeats):
            for name, b in pairs:
                call = runners[name][2]
                xn, xt = inputs[b]
                t0 = time.perf_counter()
                call(xn, xt)
                times[(name, b)].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(previous)
        for name, mode in modes.items():
            runners[name][1].train(mode)
    rows = []
    for name, b in pairs:
        t = times[(name, b)]
        med = float(np.median(t))
        rows.append(BenchRow(str(name), runners[name][0], b, float(min(t)), med, med / b))
    rows.sort(key=lambda r: (r.batch, list(runners).index(r.name)))
    return BenchResult(rows, tuple(size), n_threads, repeats, warmup, cpu_info().to_dict())


# ``deeparch.edge.latency`` names both this module and its function (see the note at the end
# of deeparch.edge.quantization): calling the module calls the function.
