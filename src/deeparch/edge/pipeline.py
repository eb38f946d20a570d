"""The whole edge pipeline on a trained run: prune -> fine-tune (optionally distilled) ->
int8, with every stage measured the same way.

``shrink(RUN, OUT, prune=0.5, finetune=5, quantize="int8")`` writes into ``OUT``:

* ``pruned.safetensors`` / ``finetuned.safetensors`` (the pruned architecture in the file's
  metadata, :func:`deeparch.edge.load_pruned` reads them back), one ``.onnx`` file per fp32
  stage and ``int8.onnx``;
* ``report.json`` and ``report.txt``: for each stage its test accuracy (in torch and in ONNX
  Runtime), parameters and mult-adds (from the inspector), file size, and the latency at
  batch 1 and 32 in torch eager and in ONNX Runtime, all stages timed interleaved in one
  process (min and median), with the CPU the numbers come from;
* ``tradeoff.png``: accuracy against latency at batch 1, one point per stage and runtime.

``OUT`` is deeparch's: an existing folder is refused unless a previous ``shrink`` wrote it
(``.deeparch-shrink`` marker) and ``force`` is given, and then only shrink's own files are
replaced.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import EdgeError
from ..io import write_text

MARKER = ".deeparch-shrink"
FILES = ("report.json", "report.txt", "tradeoff.png", "fp32.onnx", "pruned.safetensors",
         "pruned.onnx", "finetuned.safetensors", "finetuned.onnx", "int8.onnx")
QUANTIZE = ("int8",)


@dataclasses.dataclass
class Stage:
    name: str
    accuracy: float | None              # percent, on the run's test split, in torch
    accuracy_onnx: float | None         # the same images through ONNX Runtime
    params: int
    macs: int
    file: str
    size_bytes: int
    onnx_file: str = ""
    onnx_bytes: int = 0
    latency: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ShrinkReport:
    run: str
    out: str
    stages: list[Stage]
    settings: dict[str, Any]
    cpu: dict[str, Any]
    threads: int
    notes: list[str]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "deeparch-shrink", "run": self.run, "out": self.out,
                "settings": self.settings, "cpu": self.cpu, "threads": self.threads,
                "stages": [s.to_dict() for s in self.stages], "notes": self.notes}

    def table(self) -> str:
        """The report as a text table (one row per stage and runtime)."""
        head = ["stage", "runtime", "accuracy", "params", "mult-adds", "file",
                "b1 min/med ms", "b32 min/med ms"]
        rows = []
        for s in self.stages:
            for rt in ("torch", "onnxruntime"):
                lat = s.latency.get(rt)
                if not lat:
                    continue
                acc = s.accuracy if rt == "torch" else s.accuracy_onnx
                size = s.onnx_bytes if rt == "onnxruntime" else s.size_bytes
                cells = [s.name, rt, "-" if acc is None else f"{acc:.2f}%", _num(s.params),
                         _num(s.macs), _size(size) if size else "-"]
                for b in ("1", "32"):
                    t = lat.get(b)
                    cells.append("-" if t is None else f"{t['min_ms']:.3f}/{t['median_ms']:.3f}")
                rows.append(cells)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        line = lambda r: "  ".join(c.rjust(w) if i >= 2 else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(r, widths)))
        out = [line(head), "  ".join("-" * w for w in widths), *map(line, rows)]
        out.append(f"CPU: {self.cpu.get('model')} ({', '.join(self.cpu.get('features', []))}), "
                   f"{self.threads} thread(s); latencies measured interleaved in one process")
        return "\n".join(out)


def _num(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _size(b: int) -> str:
    return f"{b / 1024:.1f} KiB" if b < 1024 ** 2 else f"{b / 1024 ** 2:.2f} MiB"


# --------------------------------------------------------------------------- the folder

def _claim(out: Path, force: bool) -> None:
    """Make ``out`` ready for shrink's files; never touch what shrink did not write."""
    if out.exists() and not out.is_dir():
        raise EdgeError(f"{out} is a file; give a folder for shrink's results.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise EdgeError(f"{out} is not empty and was not written by deeparch shrink; "
                            f"give a new or empty folder.")
        if not force:
            raise EdgeError(f"{out} holds an earlier shrink; give force=True (--force) to "
                            f"replace its results, or another folder.")
        for name in FILES:
            p = out / name
            if p.is_file():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, "written by deeparch shrink; --force replaces only its files\n")


def _check_settings(prune, finetune, quantize, calibration, qat) -> None:
    if prune is not None:
        if isinstance(prune, bool) or not isinstance(prune, (int, float)) \
                or not math.isfinite(prune) or not 0 < prune < 1:
            raise EdgeError(f"the pruning ratio must be a number between 0 and 1 (exclusive), "
                            f"the fraction of parameters to remove; got {prune!r}.")
    for name, v in (("finetune", finetune), ("qat", qat)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise EdgeError(f"{name} is a number of epochs (a whole number >= 0), got {v!r}.")
    if finetune and prune is None:
        raise EdgeError("finetune applies to a pruned network; give a pruning ratio with it "
                        "(for int8 fine-tuning use qat).")
    if quantize is not None and quantize not in QUANTIZE:
        raise EdgeError(f"quantize must be one of {', '.join(QUANTIZE)} (or none), got "
                        f"{quantize!r}.")
    if qat and quantize is None:
        raise EdgeError("qat (quantization-aware fine-tuning) needs quantize='int8'.")
    if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1:
        raise EdgeError(f"calibration is a number of training images (>= 1), got "
                        f"{calibration!r}.")
    if prune is None and quantize is None:
        raise EdgeError("nothing to do: give a pruning ratio, quantize='int8', or both.")


# --------------------------------------------------------------------------- measuring

def _accuracy_torch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    right = 0
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            right += int((model(x[i:i + 256]).argmax(1) == y[i:i + 256]).sum())
    return 100.0 * right / max(1, len(x))


def _accuracy_onnx(session, x: torch.Tensor, y: torch.Tensor) -> float:
    import numpy as np
    right = 0
    for i in range(0, len(x), 256):
        logits = session(x[i:i + 256].numpy())
        right += int((np.asarray(logits).argmax(1) == y[i:i + 256].numpy()).sum())
    return 100.0 * right / max(1, len(x))


def _cost(model: nn.Module, input_size) -> tuple[int, int]:
    from ..inspect import summary
    s = summary(model, tuple(input_size))
    return int(s.total_params), int(s.macs)


def _finetune(model, data, epochs, teacher, lr, temperature, alpha, log, progress, seed):
    from ..train.trainer import Trainer
    cfg = data.config
    changes = dict(epochs=epochs, lr=lr if lr is not None else cfg.lr,
                   early_stopping=0, warmup_epochs=0, seed=seed)
    if teacher is not None:
        changes.update(temperature=temperature, alpha=alpha)
    trainer = Trainer(model, data.train, data.val, cfg, out=None, mean=data.mean,
                      std=data.std, classes=data.classes, log=log, progress=progress,
                      teacher=teacher, **changes)
    trainer.fit()
    return trainer.module if hasattr(trainer, "module") else model


def _load_teacher(teacher, data, say) -> nn.Module:
    """A teacher (run folder, deeparch weights file or hub name; see
    :func:`deeparch.edge.distillation.load_teacher`) checked against the run's classes and
    channels before any work, reading the run's normalised batches."""
    from .distillation import check_teacher, load_teacher, teacher_module
    t = load_teacher(teacher)
    for note in check_teacher(t, data.classes, data.input_size):
        say(f"note: {note}")
    return teacher_module(t, data.mean, data.std, data.input_size)


def _plot(report: ShrinkReport, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    marks = {"torch": "o", "onnxruntime": "s"}
    for rt, marker in marks.items():
        xs, ys, names = [], [], []
        for s in report.stages:
            t = s.latency.get(rt, {}).get("1")
            acc = s.accuracy if rt == "torch" else s.accuracy_onnx
            if t is None or acc is None:
                continue
            xs.append(t["median_ms"])
            ys.append(acc)
            names.append(s.name)
        ax.plot(xs, ys, marker=marker, linestyle="none", markersize=7, label=rt)
        for k, (x, y, n) in enumerate(zip(xs, ys, names)):
            ax.annotate(n, (x, y), textcoords="offset points", fontsize=8,
                        xytext=(6, 5 if k % 2 == 0 else -11))
    from matplotlib.ticker import FuncFormatter
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("latency at batch 1, median (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"shrinking {Path(report.run).name}: accuracy against latency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, f"{report.cpu.get('model')}, {report.threads} thread(s)", fontsize=7,
             color="grey")
    fig.tight_layout()
    from ..viz.plots import _save
    _save(fig, path, 110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the pipeline

def shrink(run: str | os.PathLike, out: str | os.PathLike, *, prune: float | None = None,
           importance: str = "l1", iterative_steps: int = 1, finetune: int = 0,
           teacher: str | os.PathLike | None = None, temperature: float = 4.0,
           alpha: float = 0.9, lr: float | None = None, quantize: str | None = "int8",
           method: str = "minmax", calibration: int = 256, qat: int = 0,
           batches: Sequence[int] = (1, 32), repeats: int = 20, threads: int | None = None,
           force: bool = False, seed: int = 0, log: Callable[[str], Any] | None = print,
           progress: bool | None = None) -> ShrinkReport:
    """Prune, fine-tune and quantize the trained network of ``run``, measuring every stage.

    ``prune``: the fraction of parameters to remove (structured channel pruning,
    :func:`deeparch.edge.prune`); ``finetune``: epochs of training the pruned network with
    the run's own recipe (at ``lr`` when given, else the run's own rate), distilled from ``teacher``
    (a run folder or weights file) when one is given; ``quantize``: ``"int8"`` for ONNX
    Runtime static int8 calibrated on ``calibration`` training images with ``method``;
    ``qat``: epochs of quantization-aware fine-tuning before int8. Returns the report that
    ``OUT/report.json`` holds."""
    from ..train.run import load_run, run_data
    from .latency import bench as run_bench
    from .cpu import cpu_info
    from .onnx import export_onnx, load_onnx

    _check_settings(prune, finetune, quantize, calibration, qat)
    say = log if log is not None else (lambda s: None)
    out = Path(out)
    model, cfg = load_run(run)                 # refuses a folder that is not a run first
    data = run_data(run)
    teacher_net = _load_teacher(teacher, data, say) if teacher is not None else None
    if teacher_net is not None and not finetune:
        raise EdgeError("a teacher is used while fine-tuning; give finetune epochs with it.")
    _claim(out, force)
    size = tuple(data.input_size)
    x_test = data.normalised("test")
    y_test = torch.as_tensor(data.test.labels).long()
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data.train), generator=g)[:calibration]
    x_train = data.normalised("train")
    x_cal = x_train[pick]
    notes: list[str] = []
    models: dict[str, nn.Module] = {"fp32": model.eval()}
    stages: list[Stage] = []

    def torch_stage(name: str, net: nn.Module, file: Path | None, extra=()):
        params, macs = _cost(net, size)
        size_bytes = file.stat().st_size if file is not None else 0
        stages.append(Stage(name, _accuracy_torch(net, x_test, y_test), None, params, macs,
                            str(file) if file else "", size_bytes, notes=list(extra)))

    run_file = Path(run) / "model.safetensors"
    torch_stage("fp32", model, run_file if run_file.is_file() else None)
    say(f"fp32: {stages[-1].accuracy:.2f}% test accuracy, {_num(stages[-1].params)} params")
    current = model
    if prune is not None:
        from .pruning import prune as do_prune, save_pruned
        say(f"pruning {prune:.0%} of the parameters ({importance} importance, "
            f"{iterative_steps} step(s))...")
        example = x_cal[:2]
        got = do_prune(model, example, prune, importance=importance,
                       iterative_steps=iterative_steps,
                       data=[(x_cal[:64], data.train.labels[pick[:64]])]
                       if importance == "taylor" else None)
        pruned = got.model.eval()
        base = {"run": str(run), "model": cfg["model"],
                "options": cfg.get("model_options") or {}, "num_classes": cfg["num_classes"],
                "in_chans": size[0], "input_size": list(size)}
        save_pruned(pruned, out / "pruned.safetensors", base)
        torch_stage("pruned", pruned, out / "pruned.safetensors")
        say(f"pruned: {stages[-1].accuracy:.2f}%, {_num(stages[-1].params)} params "
            f"({stages[-1].params / stages[0].params:.0%} of fp32)")
        models["pruned"] = pruned
        current = pruned
        if finetune:
            say(f"fine-tuning the pruned network for {finetune} epoch(s)"
                + (f", distilled from {teacher} (T={temperature:g}, alpha={alpha:g})"
                   if teacher_net is not None else "") + "...")
            tuned = _finetune(copy.deepcopy(pruned), data, finetune, teacher_net, lr,
                              temperature, alpha, log, progress, seed).eval()
            save_pruned(tuned, out / "finetuned.safetensors", base)
            torch_stage("finetuned", tuned, out / "finetuned.safetensors",
                        [f"{finetune} epoch(s)" + (f" distilled from {teacher}"
                                                   if teacher_net is not None else "")])
            say(f"fine-tuned: {stages[-1].accuracy:.2f}%")
            models["finetuned"] = tuned
            current = tuned
    # every fp32 stage also as ONNX, so that both runtimes are measured for each
    onnx_files: dict[str, Path] = {}
    for s in stages:
        path = out / f"{s.name}.onnx"
        export_onnx(models[s.name], path, size)
        onnx_files[s.name] = path
        s.onnx_file, s.onnx_bytes = str(path), path.stat().st_size
        s.accuracy_onnx = _accuracy_onnx(load_onnx(path, threads=threads), x_test, y_test)
    if quantize == "int8":
        from .quantization import qat_finetune, quantize as do_quantize
        src_name = stages[-1].name
        src_onnx = onnx_files[src_name]
        if qat:
            say(f"quantization-aware fine-tuning for {qat} epoch(s)...")
            train_y = torch.as_tensor(data.train.labels).long()
            q_model = qat_finetune(copy.deepcopy(current), x_train, train_y, epochs=qat,
                                   seed=seed, log=log)
            with tempfile.TemporaryDirectory() as tmp:
                src_onnx = Path(tmp) / "qat.onnx"
                export_onnx(q_model, src_onnx, size)
                q = do_quantize(src_onnx, out / "int8.onnx", x_cal, method=method)
        else:
            q = do_quantize(src_onnx, out / "int8.onnx", x_cal, method=method)
        session = load_onnx(out / "int8.onnx", threads=threads)
        src, int8 = stages[-1], out / "int8.onnx"
        notes_q = [f"from {src_name}", f"{method} calibration on {len(x_cal)} training images",
                   f"reduce_range={q.reduce_range} ({q.reduce_range_reason})"]
        if q.agreement is not None:
            notes_q.append(f"top-1 agreement with fp32 on the calibration data "
                           f"{q.agreement:.3f}")
        if qat:
            notes_q.append(f"{qat} epoch(s) of quantization-aware fine-tuning")
        size_q = int8.stat().st_size
        stages.append(Stage("int8", None, _accuracy_onnx(session, x_test, y_test), src.params,
                            src.macs, str(int8), size_q, str(int8), size_q, notes=notes_q))
        onnx_files["int8"] = out / "int8.onnx"
        say(f"int8: {stages[-1].accuracy_onnx:.2f}% (ONNX Runtime), "
            f"{_size(stages[-1].size_bytes)} against {_size(onnx_files[src_name].stat().st_size)}")
    # latency: every stage in both runtimes, interleaved in one process
    targets: dict[str, Any] = {}
    for s in stages:
        if s.name in models:
            targets[f"{s.name}|torch"] = models[s.name]
        targets[f"{s.name}|onnxruntime"] = str(onnx_files[s.name])
    say(f"timing {len(targets)} targets at batch {', '.join(map(str, batches))} "
        f"({repeats} interleaved rounds)...")
    timing = run_bench(targets, size, batches=tuple(batches), repeats=repeats,
                            threads=threads)
    by_name = {s.name: s for s in stages}
    for row in timing.rows:
        stage_name, _, _ = row.name.partition("|")
        by_name[stage_name].latency.setdefault(row.runtime, {})[str(row.batch)] = {
            "min_ms": row.min_ms, "median_ms": row.median_ms}
    for s in stages:
        if s.name != "int8" and s.accuracy_onnx is not None and s.accuracy is not None \
                and abs(s.accuracy - s.accuracy_onnx) > 0.5:
            notes.append(f"{s.name}: ONNX Runtime accuracy {s.accuracy_onnx:.2f}% differs from "
                         f"torch's {s.accuracy:.2f}%")
    settings = dict(prune=prune, importance=importance, iterative_steps=iterative_steps,
                    finetune=finetune, teacher=str(teacher) if teacher else None,
                    temperature=temperature, alpha=alpha, lr=lr, quantize=quantize,
                    method=method, calibration=len(x_cal), qat=qat, batches=list(batches),
                    repeats=repeats, seed=seed, test_images=len(x_test))
    report = ShrinkReport(str(run), str(out), stages, settings, cpu_info().to_dict(),
                          timing.threads, notes)
    write_text(out / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    write_text(out / "report.txt", report.table() + "\n")
    _plot(report, out / "tradeoff.png")
    return report


__all__ = ["ShrinkReport", "Stage", "shrink"]
