"""One epoch of the slides' FashionMNIST CNN, timed five ways in one run, interleaved.

    python benchmarks/bench_train.py --epochs 1 --repeats 3
    python benchmarks/bench_train.py --epochs 1 --repeats 5 --write benchmarks/RESULTS.md

The paths (the same model: conv 32 3x3 valid, ReLU, max-pool 2, dropout 0.2, flatten,
dense 128 ReLU, dense 10; Adam lr 1e-3; batch 256; 48,000 images of 1x28x28):

  keras  Keras 3 ``model.fit`` (KERAS_BACKEND=torch), float32 NHWC arrays in memory,
         metrics=['accuracy'] as in the slides (skipped with a note without keras);
  plain  the textbook PyTorch loop: TensorDataset of normalised float32 tensors,
         DataLoader(batch 256, shuffle), nn.Sequential with nn.MaxPool2d / nn.Dropout,
         default Adam, ``loss.item()`` and accuracy read every step;
  fast   deeparch's loop: BatchStream over uint8 images (one permutation per epoch,
         normalisation fused on the batch), ``deeparch.create_model('fashion_cnn')``
         through ``prepare_for_training``, Adam(fused=True), zero_grad(set_to_none),
         loss and accuracy accumulated on tensors and read once per epoch;
  fit    ``deeparch.train.fit`` itself (Trainer; no validation split, mean/std given,
         no logging), when it exists; timed from the call to its return;
  aug    ``fast`` plus online augmentation (the slides' ImageDataGenerator options:
         rotation 8, shifts 0.08, shear 0.3, zoom 0.08) with deeparch.data.augment.Augment,
         every batch prepared in the training thread (``BatchStream(prefetch=False)``);
  augp   the same, the next batch prepared by a background thread while the current
         step runs (``BatchStream(prefetch=True)``): the same batches, bit for bit;
  augw   ``augp`` with Simard's elastic warping added (``slides,elastic=34:4``);
  augi   ``augp`` with the preparing thread scheduled SCHED_IDLE (an experiment);
  aug1   ``aug`` with the augmentation's kernels on the training thread alone (an
         experiment: its OpenMP count set to 1 around each call);
  augt   ``augp`` with the preparing thread's kernels at torch's process-wide thread count
         (as before ``speed.single_threaded_worker``): they start an OpenMP team of their
         own, and libgomp, over its core count, changes how it spin-waits;
  fasti  ``fast`` with an idle thread that holds an OpenMP team alive during the epoch, as
         ``augp``'s thread does: on a machine other processes keep busy, libgomp then
         throttles its barrier spin-waiting, which changes the step far more than the
         overlap does, so ``augp`` against ``fasti`` is the price of augmenting alone.

The images and labels are random (a fixed seed): the time of an epoch does not depend on
what the pixels show (no data-dependent branches in any of these kernels), so no download
is needed. Each repeat runs every path once, in turn, so that load from other processes
hits all of them alike; medians over repeats are reported, with the ratios. "other load"
is the CPU time that other processes used during each path's epochs, in cores
(from /proc/stat), so a noisy run shows itself.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

N_TRAIN = 48_000
BATCH = 256
LR = 1e-3
MEAN, STD = 0.2860, 0.3530          # FashionMNIST's channel statistics (only scale matters)
SECTION = "## Training speed: fashion_cnn, one epoch (bench_train.py)"


# ------------------------------------------------------------------ measuring
def _proc_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
        v = [int(x) for x in parts]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return float("nan")


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Timer:
    """Wall time of a block, and the CPU (in cores) that other processes used meanwhile."""

    def __enter__(self):
        self.b0, self.s0, self.t0 = _proc_busy(), _self_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        other = (_proc_busy() - self.b0) - (_self_cpu() - self.s0)
        self.other_load = max(0.0, other / self.seconds)


# ------------------------------------------------------------------ the data
def make_data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels


# ------------------------------------------------------------------ (a) Keras
class KerasPath:
    name = "keras"

    def __init__(self, images, labels):
        import keras
        from keras import layers
        keras.utils.set_random_seed(0)
        self.x = ((images.permute(0, 2, 3, 1).numpy().astype("float32") / 255.0 - MEAN) / STD)
        self.y = labels.numpy()
        self.model = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3), layers.Activation("relu"), layers.MaxPooling2D(2),
            layers.Dropout(0.2), layers.Flatten(), layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax")])
        self.model.compile(optimizer=keras.optimizers.Adam(LR),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.model.fit(self.x[:2 * BATCH], self.y[:2 * BATCH], batch_size=BATCH, epochs=1,
                       verbose=0)                                      # warm-up

    def run(self, epochs: int) -> float:
        h = self.model.fit(self.x, self.y, batch_size=BATCH, epochs=epochs, verbose=0,
                           shuffle=True)
        return float(h.history["loss"][-1])


# ------------------------------------------------------------------ (b) plain PyTorch
class PlainPath:
    name = "plain"

    def __init__(self, images, labels):
        from torch.utils.data import DataLoader, TensorDataset
        torch.manual_seed(0)
        x = (images.float() / 255.0 - MEAN) / STD
        self.loader = DataLoader(TensorDataset(x, labels), batch_size=BATCH, shuffle=True)
        self.model = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2), nn.Flatten(),
            nn.Linear(32 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, 10))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.crit = nn.CrossEntropyLoss()
        self._steps(3)

    def _steps(self, limit=None) -> float:
        self.model.train()
        running, correct, seen = 0.0, 0, 0
        for i, (xb, yb) in enumerate(self.loader):
            if limit is not None and i == limit:
                break
            self.opt.zero_grad()
            out = self.model(xb)
            loss = self.crit(out, yb)
            loss.backward()
            self.opt.step()
            running += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
        return running / seen

    def run(self, epochs: int) -> float:
        for _ in range(epochs):
            loss = self._steps()
        return loss


# ------------------------------------------------------------------ (c) deeparch fast loop
def train_epoch(model, stream, opt) -> tuple[float, float]:
    """The loop a Trainer runs: no per-step host reads, no per-sample Python."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    n = 0
    for xb, yb in stream:
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(yb)
        correct += (out.detach().argmax(1) == yb).sum()
        n += len(yb)
    return loss_sum.item() / n, correct.item() / n


class FastPath:
    name = "fast"

    def __init__(self, images, labels, augment=None, prefetch=False):
        import deeparch
        from deeparch.train.speed import BatchStream, prepare_for_training
        torch.manual_seed(0)
        self.stream = BatchStream(images, labels, BATCH, shuffle=True, seed=0, mean=(MEAN,),
                                  std=(STD,), augment=augment, prefetch=prefetch)
        self.model = prepare_for_training(deeparch.create_model("fashion_cnn"), "cpu")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, fused=True)
        self.epoch = 0
        warm = BatchStream(images[:3 * BATCH], labels[:3 * BATCH], BATCH, shuffle=True,
                           seed=0, mean=(MEAN,), std=(STD,), augment=augment,
                           prefetch=prefetch)
        train_epoch(self.model, warm, self.opt)

    def run(self, epochs: int) -> float:
        for _ in range(epochs):
            self.stream.set_epoch(self.epoch)
            self.epoch += 1
            loss, _ = train_epoch(self.model, self.stream, self.opt)
        return loss


class TimedAugment:
    """The augmentation callable, with the seconds spent inside it counted."""

    def __init__(self, augment):
        self.augment, self.seconds = augment, 0.0

    def __call__(self, x, gen):
        t = time.perf_counter()
        out = self.augment(x, gen)
        self.seconds += time.perf_counter() - t
        return out


class AugPath(FastPath):
    name = "aug"

    def __init__(self, images, labels):
        from deeparch.data.augment import Augment
        self.timed = TimedAugment(Augment(rotation_range=8, width_shift_range=0.08,
                                          height_shift_range=0.08, shear_range=0.3,
                                          zoom_range=0.08))
        super().__init__(images, labels, augment=self.timed)
        self.inside: list[float] = []

    def run(self, epochs: int) -> float:
        self.timed.seconds = 0.0
        loss = super().run(epochs)
        self.inside.append(self.timed.seconds)
        return loss


class AugThreadPath(FastPath):
    """``aug`` with the next batch prepared in a background thread (BatchStream's
    prefetch): the Augment is called there, so no time inside it is counted here."""
    name = "augp"
    spec = "slides"

    def __init__(self, images, labels):
        from deeparch.data.augment import augment_from_spec
        super().__init__(images, labels, augment=augment_from_spec(self.spec), prefetch=True)


class ElasticThreadPath(AugThreadPath):
    name = "augw"
    spec = "slides,elastic=34:4"


class IdleThreadPath(AugThreadPath):
    """``augp`` with the preparing thread scheduled SCHED_IDLE (Linux): it runs only on a
    core nothing else wants, e.g. while the training thread's OpenMP team sleeps between
    parallel regions (an experiment; BatchStream does not do this)."""
    name = "augi"

    def run(self, epochs: int) -> float:
        from deeparch.train import speed
        keep = speed.single_threaded_worker

        def idle_worker():
            ok = keep()
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return ok
        speed.single_threaded_worker = idle_worker
        try:
            return super().run(epochs)
        finally:
            speed.single_threaded_worker = keep


class OneThreadAugPath(FastPath):
    """``aug`` (serial) with the augmentation's kernels run on the training thread alone
    (its OpenMP count set to 1 around each call, then back): an experiment on whether the
    small kernels of one batch's augmentation pay for a fork/join of the team."""
    name = "aug1"

    def __init__(self, images, labels):
        from deeparch.data.augment import augment_from_spec
        from deeparch.train import speed
        inner = augment_from_spec("slides")
        setter = speed._thread_runtimes()["openmp"][0]

        def one_thread(x, gen):
            setter(1)
            try:
                return inner(x, gen)
            finally:
                setter(torch.get_num_threads())
        super().__init__(images, labels, augment=one_thread)


class TeamThreadPath(AugThreadPath):
    """``augp`` with the preparing thread left at torch's process-wide thread count, so its
    kernels start an OpenMP (and MKL) team of their own beside the training thread's: what
    BatchStream's prefetch did before :func:`deeparch.train.speed.single_threaded_worker`."""
    name = "augt"

    def run(self, epochs: int) -> float:
        from deeparch.train import speed
        keep = speed.single_threaded_worker
        speed.single_threaded_worker = lambda: False
        try:
            return super().run(epochs)
        finally:
            speed.single_threaded_worker = keep


class IdleTeamPath(FastPath):
    """``fast`` with an idle thread alive during the epoch that holds an OpenMP team (as
    the prefetching thread does): the baseline for ``augp`` / ``augw`` that changes only
    libgomp's spin-waiting, not the work (see :func:`omp_team_ab`)."""
    name = "fasti"

    def run(self, epochs: int) -> float:
        import threading
        stop = threading.Event()

        def idle():
            torch.ones(1 << 22).add_(1)
            stop.wait()

        th = threading.Thread(target=idle)
        th.start()
        try:
            return super().run(epochs)
        finally:
            stop.set()
            th.join()


# ------------------------------------------------------------------ (d) deeparch fit
class FitPath:
    name = "fit"

    def __init__(self, images, labels):
        import deeparch
        from deeparch.train import fit
        self.fit = fit
        self.data = (images, labels)
        self.model = deeparch.create_model("fashion_cnn")
        self._fit(self.data[0][:3 * BATCH], self.data[1][:3 * BATCH], 1)   # warm-up

    def _fit(self, x, y, epochs):
        h = self.fit(self.model, (x, y), epochs=epochs, batch_size=BATCH, lr=LR,
                     optimizer="adam", val_split=0.0, mean=(MEAN,), std=(STD,), log=None,
                     progress=False, seed=0)
        return h

    def run(self, epochs: int) -> float:
        h = self._fit(*self.data, epochs)
        rec = getattr(h, "history", None) or getattr(h, "records", None)
        try:
            return float(rec["loss"][-1]) if isinstance(rec, dict) else float("nan")
        except (KeyError, TypeError, IndexError):
            return float("nan")


# ------------------------------------------------------------------ ablation
class _Stop(Exception):
    pass


class AblationPath:
    """One step of the way from ``plain`` to ``fast``: every earlier trick plus one more.
    Times ``steps`` training steps (not a whole epoch) per call."""

    def __init__(self, images, labels, name, loader="dataloader", item=True, opt=None,
                 prepare=None, steps=64):
        import deeparch
        from deeparch.train.speed import BatchStream, prepare_for_training
        torch.manual_seed(0)
        self.name, self.item, self.steps = name, item, steps
        if loader == "dataloader":
            from torch.utils.data import DataLoader, TensorDataset
            x = (images.float() / 255.0 - MEAN) / STD
            self.batches = DataLoader(TensorDataset(x, labels), batch_size=BATCH, shuffle=True)
        else:
            self.batches = BatchStream(images, labels, BATCH, shuffle=True, seed=0,
                                       mean=(MEAN,), std=(STD,))
        self.model = deeparch.create_model("fashion_cnn")
        if prepare is not None:
            prepare_for_training(self.model, "cpu", **prepare)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, **(opt or {}))
        self.epoch = 0
        self.run(1, steps=3)

    def run(self, epochs: int, steps: int | None = None) -> float:
        steps = steps or self.steps
        self.model.train()
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(self.epoch)
        self.epoch += 1
        loss_sum = torch.zeros((), dtype=torch.float64)
        running = 0.0
        for i, (xb, yb) in enumerate(self.batches):
            if i == steps:
                break
            out = self.model(xb)
            loss = F.cross_entropy(out, yb)
            if self.item:                                   # the textbook's per-step reads
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                running += loss.item()
                (out.argmax(1) == yb).sum().item()
            else:
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                loss_sum += loss.detach()
                (out.detach().argmax(1) == yb).sum()
        return (running if self.item else loss_sum.item()) / steps


NO_FAST = dict(conv=False, pool=False, dropout=False, fuse=False)
ABLATION = [
    ("A0 textbook loop, deeparch model", dict()),
    ("A1 + BatchStream (uint8, fused normalise)", dict(loader="stream")),
    ("A2 + no per-step .item(), set_to_none", dict(loader="stream", item=False)),
    ("A3 + Adam(fused=True)", dict(loader="stream", item=False, opt=dict(fused=True))),
    ("A4 + im2col GEMM conv (channels-last out, so the pool runs its CL kernel)",
     dict(loader="stream", item=False, opt=dict(fused=True),
          prepare=dict(NO_FAST, conv=True, pool=True))),
    ("A5 + 16-bit dropout mask", dict(loader="stream", item=False, opt=dict(fused=True),
                                      prepare=dict(NO_FAST, conv=True, pool=True,
                                                   dropout=True))),
    ("A6 + fused conv/pool/ReLU/dropout block (PyTorch ops), flatten+dense without transposes",
     dict(loader="stream", item=False, opt=dict(fused=True), prepare=dict(compiled=False))),
    ("A7 + the compiled conv/pool/ReLU/dropout kernel = fast",
     dict(loader="stream", item=False, opt=dict(fused=True), prepare=dict())),
]


def ablation_table(results, steps: int) -> list[str]:
    med = {k: statistics.median(s for s, _ in v) / steps * 1e3 for k, v in results.items()}
    names = list(results)
    lines = [f"| step ({steps} training steps per repeat) | ms / step (median) | "
             f"other load (cores) | this trick | A0 / this |", "|---|---|---|---|---|"]
    for i, k in enumerate(names):
        load = statistics.median(l for _, l in results[k])
        gain = "-" if i == 0 else f"{med[names[i - 1]] / med[k]:.2f}x"
        lines.append(f"| {k} | {med[k]:.1f} | {load:.2f} | {gain} | "
                     f"{med[names[0]] / med[k]:.2f}x |")
    return lines


PATHS = {"keras": KerasPath, "plain": PlainPath, "fast": FastPath, "fit": FitPath,
         "aug": AugPath, "augp": AugThreadPath, "augw": ElasticThreadPath,
         "fasti": IdleTeamPath, "augt": TeamThreadPath, "augi": IdleThreadPath,
         "aug1": OneThreadAugPath}


def available(name: str) -> str | None:
    """None when the path can run, else why not."""
    try:
        if name == "keras":
            import keras  # noqa: F401
        elif name == "fit":
            from deeparch.train import fit  # noqa: F401
        elif name in ("aug", "augp", "augw", "augt", "augi", "aug1"):
            from deeparch.data.augment import Augment  # noqa: F401
            from deeparch.train.speed import BatchStream
            if name != "aug" and "prefetch" not in BatchStream.__init__.__code__.co_varnames:
                return "this BatchStream has no prefetch"
    except Exception as exc:                                  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


# ------------------------------------------------------------------ reporting
def machine() -> str:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        model = m.group(1).strip() if m else model
        flags = re.search(r"Flags:\s*(.+)", out)
        isa = [f for f in ("avx512f", "amx_bf16", "avx2") if flags and f in flags.group(1).split()]
    except OSError:
        isa = []
    return (f"{model}, {os.cpu_count()} cores ({'/'.join(isa) or 'ISA ?'}), "
            f"torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def table(results: dict[str, list[tuple[float, float]]], epochs: int,
          aug_inside: list[float] | None = None) -> list[str]:
    med = {k: statistics.median(s for s, _ in v) / epochs for k, v in results.items() if v}
    load = {k: statistics.median(l for _, l in v) for k, v in results.items() if v}
    lines = ["| path | s / epoch (median) | all repeats (other load, cores) | "
             "other load (median) | plain / path | keras / path |",
             "|---|---|---|---|---|---|"]
    for k, v in results.items():
        if not v:
            continue
        reps = ", ".join(f"{s / epochs:.2f} ({l:.1f})" for s, l in v)
        r_plain = f"{med['plain'] / med[k]:.2f}x" if "plain" in med else "-"
        r_keras = f"{med['keras'] / med[k]:.2f}x" if "keras" in med else "-"
        lines.append(f"| {k} | {med[k]:.2f} | {reps} | {load[k]:.2f} | {r_plain} | {r_keras} |")
    if "fast" in med and any(k in med for k in ("aug", "augp", "augw")):
        lines.append("")
    for k, what, base in (("aug", "serial (prepared in the training thread)", "fast"),
                          ("augp", "prefetched (prepared by a background thread)", "fast"),
                          ("augw", "prefetched, with elastic warping 34:4 added", "fast"),
                          ("augt", "prefetched by a thread with its own OpenMP team", "fast"),
                          ("augi", "prefetched by a SCHED_IDLE thread", "fast"),
                          ("aug1", "serial, its kernels on one thread", "fast"),
                          ("augp", "prefetched", "fasti"),
                          ("augw", "prefetched, with elastic warping", "fasti")):
        if k in med and base in med:
            ratios = [a / f for (a, _), (f, _) in zip(results[k], results[base])]
            lines.append(f"Online augmentation, {what}: the {k} epoch took "
                         f"{100 * (med[k] / med[base] - 1):+.1f}% against the {base} one "
                         f"(median of per-repeat ratios: "
                         f"{100 * (statistics.median(ratios) - 1):+.1f}%).")
    if "aug" in med and "fast" in med:
        if aug_inside:
            share = statistics.median(aug_inside) / epochs / med["fast"]
            lines.append(f"Time spent inside Augment itself: "
                         f"{statistics.median(aug_inside) / epochs:.2f} s per epoch, "
                         f"{100 * share:.1f}% of the fast epoch (the direct measure).")
    return lines


def bf16_note() -> str:
    from deeparch.train import speed
    ok, ratio = speed._bf16_probe(torch.device("cpu"))
    if not ok:
        return "bf16 on this CPU: the probe failed (crashed or unsupported), so autocast is off."
    verdict = ("so speed.autocast uses bf16 on CPU" if ratio < 0.9 else
               "so speed.autocast stays off on CPU")
    return (f"bf16 on this CPU: the probe runs; a bf16 convolution takes {ratio:.1f}x the "
            f"time of fp32, {verdict}.")


def write_section(path: Path, body: list[str]) -> None:
    """Replace (or append) this benchmark's ``##`` section of RESULTS.md, leaving the others."""
    text = path.read_text() if path.exists() else "# deeparch benchmarks\n"
    block = SECTION + "\n\n" + "\n".join(body).rstrip() + "\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip() + "\n\n" + block
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + block + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _steps_child(args) -> int:
    """One fresh process: 64 fast steps (after 5 warm-up), prints the median ms/step."""
    import deeparch
    from deeparch.train.speed import BatchStream, prepare_for_training
    torch.set_num_threads(int(str(args.threads).split(",")[0]) or torch.get_num_threads())
    images, labels = make_data(BATCH * (args._steps_child + 5))
    stream = BatchStream(images, labels, BATCH, shuffle=True, seed=0, mean=(MEAN,), std=(STD,))
    model = prepare_for_training(deeparch.create_model("fashion_cnn"), "cpu",
                                 retain_memory=bool(args._retain))
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    times = []
    for i, (xb, yb) in enumerate(stream):
        t = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t)
    print(f"MS {statistics.median(times) * 1e3:.2f}")
    return 0


def retain_ab(pairs: int, threads: int) -> list[str]:
    """Fresh processes, alternating without / with retain_freed_memory()."""
    res: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(pairs):
        for flag in (0, 1):
            out = subprocess.run([sys.executable, __file__, "--threads", str(threads),
                                  "--_steps-child", "64", "--_retain", str(flag)],
                                 capture_output=True, text=True).stdout
            m = re.search(r"MS ([0-9.]+)", out)
            if m:
                res[flag].append(float(m.group(1)))
    if not res[0] or not res[1]:
        return ["(retain A/B failed)"]
    a, b = statistics.median(res[0]), statistics.median(res[1])
    return [f"retain_freed_memory(), {threads} thread(s), {pairs} pairs of fresh processes "
            f"(64 fast steps each, median ms/step): without {a:.1f} "
            f"({', '.join(f'{v:.1f}' for v in res[0])}), with {b:.1f} "
            f"({', '.join(f'{v:.1f}' for v in res[1])}): {a / b:.2f}x."]


def omp_team_ab(pairs: int, threads: int, steps: int = 15) -> list[str]:
    """The fast step with and without an *idle* second Python thread that holds an OpenMP
    team of its own (it ran one parallel op and waits), alternating, in this process.

    Why: the prefetching paths keep such a thread alive for the whole epoch. With more
    OpenMP threads than cores libgomp throttles its spin-waiting at barriers, which on a
    machine other processes keep busy is worth far more than the overlap itself; this
    separates the two effects."""
    import threading
    import deeparch
    from deeparch.train.speed import prepare_for_training
    torch.set_num_threads(threads)
    images, labels = make_data(BATCH)
    model = prepare_for_training(deeparch.create_model("fashion_cnn"), "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)

    def run(k):
        t = time.perf_counter()
        for _ in range(k):
            loss = F.cross_entropy(model((images.float() - 72.9) / 90.0), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t) / k * 1e3

    run(3)
    stop = threading.Event()

    def idle():
        torch.ones(1 << 22).add_(1)        # a parallel region: this thread's own team
        stop.wait()

    res: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(pairs):
        res[0].append(run(steps))
        th = threading.Thread(target=idle)
        th.start()
        time.sleep(0.05)
        res[1].append(run(steps))
        stop.set()
        th.join()
        stop.clear()
    a, b = statistics.median(res[0]), statistics.median(res[1])
    return [f"An idle thread holding an OpenMP team, {threads} torch thread(s), {pairs} "
            f"alternating pairs of {steps} fast steps (median ms/step): without "
            f"{a:.1f} ({', '.join(f'{v:.1f}' for v in res[0])}), with {b:.1f} "
            f"({', '.join(f'{v:.1f}' for v in res[1])}): {a / b:.2f}x."]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="keras,plain,fast,fit,aug,augp,augw",
                    help="comma-separated subset of keras,plain,fast,fit,aug,augp,augw,fasti,"
                         "augt,augi,aug1")
    ap.add_argument("--n", type=int, default=N_TRAIN, help="training images")
    ap.add_argument("--threads", default="0",
                    help="torch threads; a comma list (e.g. 1,2) times every path at each "
                         "setting, interleaved (0: torch's default)")
    ap.add_argument("--ablation", type=int, default=0, metavar="STEPS",
                    help="also time each trick on its own, STEPS steps per repeat (e.g. 64)")
    ap.add_argument("--retain-ab", type=int, default=0, metavar="PAIRS",
                    help="also measure retain_freed_memory() itself: PAIRS pairs of fresh "
                         "processes running 64 fast steps without / with it")
    ap.add_argument("--omp-team-ab", type=int, default=0, metavar="PAIRS",
                    help="also measure the step with / without an idle thread that holds an "
                         "OpenMP team (what a prefetching thread changes besides overlap)")
    ap.add_argument("--_steps-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_retain", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--write", type=Path, default=None,
                    help="replace this benchmark's section of a RESULTS.md")
    args = ap.parse_args(argv)
    thread_list = [int(t) or torch.get_num_threads() for t in str(args.threads).split(",")]
    if args._steps_child:
        return _steps_child(args)
    # process-wide, and the fast and fit paths turn it on anyway: on for every path, so
    # that the comparison is of the loops and kernels (this favours plain and keras)
    from deeparch.train.speed import retain_freed_memory
    retain_freed_memory()

    images, labels = make_data(args.n)
    paths, notes = [], []
    for name in args.paths.split(","):
        why = available(name)
        if why:
            notes.append(f"{name}: skipped ({why})")
            print(f"[skip] {name}: {why}", flush=True)
            continue
        t0 = time.perf_counter()
        paths.append(PATHS[name](images, labels))
        print(f"[setup] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if args.ablation:
        for name, kw in ABLATION:
            paths.append(AblationPath(images, labels, name, steps=args.ablation, **kw))

    # results[threads][path] = [(seconds, other load), ...]
    results = {t: {p.name: [] for p in paths} for t in thread_list}
    inside: dict[int, list[float]] = {}
    for r in range(args.repeats):
        for t in thread_list:
            torch.set_num_threads(t)
            for p in paths:
                with Timer() as tm:
                    loss = p.run(args.epochs)
                results[t][p.name].append((tm.seconds, tm.other_load))
                if isinstance(p, AugPath):
                    inside.setdefault(t, []).append(p.inside[-1])
                print(f"repeat {r + 1}/{args.repeats}  threads {t}  {p.name:5s} "
                      f"{tm.seconds:7.2f} s  (other load {tm.other_load:.2f} cores, "
                      f"loss {loss:.3f})", flush=True)

    lines = []
    for t in thread_list:
        res = results[t]
        abl = {k: v for k, v in res.items() if k.startswith("A")}
        lines += [f"### {t} torch thread{'s' if t > 1 else ''}", "",
                  *table({k: v for k, v in res.items() if k not in abl}, args.epochs,
                         inside.get(t))]
        if any(k in res for k in ("augp", "augw")):
            from deeparch.train.speed import usable_cores
            auto = "the thread" if usable_cores() > t else "the serial path"
            lines.append(f"BatchStream(prefetch='auto') picks {auto} here ({usable_cores()} "
                         f"usable cores, {t} torch thread{'s' if t > 1 else ''}).")
        if abl:
            lines += ["", "What each trick buys (cumulative, one after the other; same run, "
                      "interleaved):", "", *ablation_table(abl, args.ablation)]
        lines.append("")
    if args.retain_ab:
        for t in thread_list:
            lines += retain_ab(args.retain_ab, t) + [""]
    if args.omp_team_ab:
        for t in thread_list:
            lines += omp_team_ab(args.omp_team_ab, t) + [""]
    print("\n" + "\n".join(lines))
    if args.write:
        cmd = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
        body = [f"Command: `{cmd}` (from the repository root)",
                f"Machine: {machine()}",
                f"Date: {_dt.date.today().isoformat()}. Load: 'other load' is the CPU time "
                f"other processes used while each path ran, in cores (of {os.cpu_count()}).",
                f"Data: {args.n:,} random 1x28x28 uint8 images, batch {BATCH}, "
                f"{args.epochs} epoch(s) per repeat, {args.repeats} repeats interleaved.",
                "", *lines]
        while body and body[-1] == "":
            body.pop()
        body += ["", bf16_note()]
        if notes:
            body += ["", "Skipped: " + "; ".join(notes)]
        write_section(args.write, body)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
