"""Transfer learning on little data: do the frozen regimes win with few samples, and
fine-tuning win as the data grows? (The course notes' advice, measured.)

1. Pretrain resnet20 (batch norm everywhere; stages stem, stage1, stage2, stage3) on
   FashionMNIST, 1x28x28, from Debian's IDX files (nothing is downloaded).
2. Transfer it to scikit-learn's 8x8 digits (fitted to the pretrained run's 28x28 input by
   deeparch itself) with 5, 10, 50 and all training samples per class, under each regime:
   linear, cached, top:1, top:2, full, full with a smaller backbone rate, top:4 (everything
   trains, from a new head) -- and from scratch (resnet20, random init, the same 28x28
   input) -- over several seeds.

Every condition is tested on the same, whole digits test split (359 images): each
(samples, seed) training set is written as a Keras-style .npz (x_train / y_train /
x_test / y_test) whose x_test is always the full test split, and every run uses
val_split=0 and restore_best=False (no validation images are taken from a tiny training
set, no test-set peeking: the last epoch's weights are tested).

Usage (from the repository root):

    .venv/bin/python benchmarks/transfer_digits.py            # the committed numbers
    .venv/bin/python benchmarks/transfer_digits.py --quick    # a smoke test (a few minutes)
    ... --reuse-pretrained     # keep the workdir's pretrained run (same settings)
    ... --resume               # keep the runs already in the JSON, train the missing ones

Run folders go under --workdir (default /tmp/deeparch-transfer-digits). The full run writes
benchmarks/transfer_digits.json and benchmarks/transfer_digits.png; --quick writes its
JSON and PNG into the workdir instead.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# --------------------------------------------------------------------------- the recipe
PRETRAIN = dict(epochs=3, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle",
                val_split=0.0, restore_best=False, seed=13)
SAMPLES = (5, 10, 50, None)        # per class; None = the whole training split (1438)
SEEDS = (1, 2, 3)
BATCH = 32                          # small batches: 5 per class is 50 images, 2 steps
# epochs per training-set size: about MIN_STEPS optimizer steps, at least MIN_EPOCHS epochs
# (so that the batch-norm running statistics of the layers that train settle on the new
# data), at most MAX_EPOCHS
MIN_STEPS, MIN_EPOCHS, MAX_EPOCHS = 200, 8, 100
# regime -> train() settings. Every run: Adam, cosine decay to 0, no augmentation, no
# weight decay. The head-only regimes (linear, cached) train one softmax layer, a convex
# problem, and get a larger rate and ~2000 steps (``min_steps``): enough to (nearly) fit
# the training set. Pilots on the stored features: lr 1e-2 for 200 steps left the 5-per-class
# training loss at 0.47 (accuracy 0.92); lr 3e-2 for 600 steps, 0.06 at 5 per class but
# 0.31 (accuracy 0.92) on all 1438 images, where 5000 steps reach 0.12 and the exact
# optimum (L-BFGS) separates the training set. cached and linear share every setting, so
# they train the same head on the same features and differ only in time.
HEAD_STEPS = 2000
REGIMES = {
    "linear":      dict(regime="linear", lr=3e-2, min_steps=HEAD_STEPS, max_epochs=1000),
    "cached":      dict(regime="cached", lr=3e-2, min_steps=HEAD_STEPS, max_epochs=1000),
    "top:1":       dict(regime="top:1", lr=1e-3),
    "top:2":       dict(regime="top:2", lr=1e-3),
    "full":        dict(regime="full", lr=1e-3),
    "full lr_bb=1e-4": dict(regime="full", lr=1e-3, lr_backbone=1e-4),
    # 'full' keeps the source's classifier when it has the data's size (FashionMNIST's
    # 10-way head on the 10 digits); top:4 -- all four stages -- trains everything too, but
    # from a fresh head, as the course notes' fine-tuning does
    "top:4 (new head)": dict(regime="top:4", lr=1e-3),
    "scratch":     dict(regime=None, lr=1e-3),
}
COMMON = dict(batch_size=BATCH, optimizer="adam", schedule="cosine", val_split=0.0,
              restore_best=False)


def epochs_for(n: int, quick: bool, min_steps: int = MIN_STEPS,
               max_epochs: int = MAX_EPOCHS) -> int:
    steps = math.ceil(n / BATCH)
    e = min(max_epochs, max(MIN_EPOCHS, math.ceil(min_steps / steps)))
    return max(2, e // 10) if quick else e


# --------------------------------------------------------------------------- helpers

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def digits_sets(workdir: Path, samples, seeds) -> dict:
    """One .npz per (samples per class, seed): a stratified draw from digits' training split
    (the seed draws it), and always the whole test split."""
    from deeparch.data import load_dataset

    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    x, y = tr.images.numpy()[:, 0], tr.labels.numpy().astype(np.int64)
    xt, yt = te.images.numpy()[:, 0], te.labels.numpy().astype(np.int64)
    out = {}
    folder = workdir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for k in samples:
        for seed in seeds:
            if k is None:
                idx = np.arange(len(y))
            else:
                rng = np.random.default_rng(1000 + seed)
                idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k,
                                                         replace=False)
                                              for c in range(10)]))
            path = folder / f"digits_{'all' if k is None else k}_s{seed}.npz"
            np.savez(path, x_train=x[idx], y_train=y[idx], x_test=xt, y_test=yt)
            out[(k, seed)] = (path, len(idx))
    return out, len(yt)


def timed(fn):
    load0, w0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - w0, time.process_time() - c0, (load0 + os.getloadavg()[0]) / 2


# --------------------------------------------------------------------------- the experiment

def pretrain(workdir: Path, quick: bool, reuse: bool, threads: int) -> dict:
    from deeparch.train.run import read_run_config, train

    out = workdir / "pretrain"
    settings = dict(PRETRAIN, **(dict(epochs=1, subset=3000) if quick else {}))
    meta_path = workdir / "pretrain.json"
    if reuse and meta_path.is_file() and (out / "model.safetensors").is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            print(f"reusing the pretrained run in {out} ({meta['accuracy']:.2%})", flush=True)
            meta["reused"] = True
            return meta
    print(f"pretraining resnet20 on FashionMNIST ({settings})", flush=True)
    r, wall, cpu, load = timed(lambda: train(
        "resnet20", "fashion_mnist", out, data_dir=FASHION_DIR, force=True, progress=False,
        threads=threads, **settings))
    hist = [dict(h) for h in r.history]
    meta = {"run": str(out), "settings": settings, "accuracy": r.accuracy,
            "top5": float(r.metrics["top5"]), "test_images": int(r.metrics["n"]),
            "train_images": r.config["samples"]["train"], "wall_s": wall, "cpu_s": cpu,
            "load": load, "epoch_s": [float(h["seconds"]) for h in hist],
            "train_accuracy": [float(h["accuracy"]) for h in hist], "reused": False}
    write_atomic(meta_path, json.dumps(meta, indent=2))
    print(f"pretrained: test accuracy {r.accuracy:.2%} in {wall:.0f} s", flush=True)
    return meta


def transfer(workdir: Path, pre_run: Path, sets: dict, regimes: dict, quick: bool,
             threads: int, on_result, done: set = frozenset()) -> None:
    from deeparch.train.run import train

    # seed by seed: every finished seed covers every column
    jobs = [(name, k, seed) for seed in SEEDS_RUN for k in SAMPLES_RUN for name in regimes]
    for i, (name, k, seed) in enumerate(jobs, 1):
        if (name, k, seed) in done:
            continue
        path, n = sets[(k, seed)]
        spec = dict(regimes[name])
        regime = spec.pop("regime")
        epochs = epochs_for(n, quick, spec.pop("min_steps", MIN_STEPS),
                            spec.pop("max_epochs", MAX_EPOCHS))
        tag = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)
        out = workdir / "runs" / f"{tag}" \
                                 f"_{'all' if k is None else k}_s{seed}"
        kw = dict(COMMON, **spec, epochs=epochs, seed=seed, threads=threads, force=True,
                  log=None, progress=False)
        if regime is None:           # scratch: the same network at the same 28x28 input
            call = lambda: train("resnet20", str(path), out, image_size=28, **kw)  # noqa: E731
        else:
            call = lambda: train(None, str(path), out, from_run=str(pre_run),  # noqa: E731
                                 regime=regime, **kw)
        r, wall, cpu, load = timed(call)
        epoch_s = sum(float(h["seconds"]) for h in r.history)
        steps = epochs * math.ceil(n / BATCH)
        res = {"regime": name, "samples_per_class": k, "train_images": n, "seed": seed,
               "accuracy": r.accuracy, "train_accuracy": float(r.history[-1]["accuracy"]),
               "train_loss": float(r.history[-1]["loss"]), "epochs": epochs, "steps": steps, "wall_s": wall,
               "cpu_s": cpu, "epochs_s": epoch_s, "load": load,
               "trainable_params": (r.config.get("transfer") or {}).get(
                   "trainable_params", sum(p.numel() for p in r.model.parameters()))}
        on_result(res)
        print(f"[{i:3d}/{len(jobs)}] {name:22s} {('all' if k is None else k)!s:>4s}/class "
              f"seed {seed}: {r.accuracy:7.2%}  {epochs:3d} epochs  {wall:6.1f} s "
              f"(epochs {epoch_s:.1f} s, load {load:.1f})", flush=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)   # keep /tmp small


def summarise(results: list[dict]) -> dict:
    table: dict[str, dict[str, dict]] = {}
    for r in results:
        key = "all" if r["samples_per_class"] is None else str(r["samples_per_class"])
        table.setdefault(r["regime"], {}).setdefault(key, []).append(r)
    out = {}
    for name, cols in table.items():
        out[name] = {}
        for key, rs in cols.items():
            acc = np.array([x["accuracy"] for x in rs])
            out[name][key] = {"mean": float(acc.mean()), "std": float(acc.std(ddof=1))
                              if len(acc) > 1 else 0.0, "n": len(acc),
                              "wall_s": float(np.mean([x["wall_s"] for x in rs])),
                              "epochs_s": float(np.mean([x["epochs_s"] for x in rs])),
                              "cpu_s": float(np.mean([x["cpu_s"] for x in rs])),
                              "epochs": rs[0]["epochs"], "train_images": rs[0]["train_images"]}
    return out


STYLE = {  # colour, marker, line style
    "linear": ("tab:blue", "o", "-"), "cached": ("tab:cyan", "x", "--"),
    "top:1": ("tab:green", "s", "-"), "top:2": ("tab:olive", "D", "-"),
    "full": ("tab:red", "^", "-"), "full lr_bb=1e-4": ("tab:orange", "v", "--"),
    "top:4 (new head)": ("tab:purple", "P", "-."),
    "scratch": ("black", "*", ":"),
}


def plot(summary: dict, pre: dict, path: Path, n_all: int, n_seeds: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.8), dpi=120)
    x_all = n_all / 10
    names = list(summary)
    for j, name in enumerate(names):
        cols = summary[name]
        keys = [k for k in ("5", "10", "50", "all") if k in cols]
        shift = 1.025 ** (j - (len(names) - 1) / 2)     # spread the error bars apart
        xs = [(x_all if k == "all" else int(k)) * shift for k in keys]
        m = np.array([cols[k]["mean"] for k in keys]) * 100
        s = np.array([cols[k]["std"] for k in keys]) * 100
        c, mk, ls = STYLE.get(name, ("grey", ".", "-"))
        label = {"scratch": "scratch (random init)",
                 "cached": "cached (the linear head, on stored features)",
                 "full": "full (keeps the FashionMNIST head)",
                 "top:4 (new head)": "top:4 = full with a new head",
                 "full lr_bb=1e-4": "full, backbone lr 1e-4 (head 1e-3)"}.get(name, name)
        ax.errorbar(xs, m, yerr=s, color=c, marker=mk, linestyle=ls, capsize=3, lw=1.6,
                    ms=6, label=label)
    ax.set_xscale("log")
    xt = [5, 10, 50, x_all]
    ax.set_xticks(xt)
    ax.set_xticklabels(["5", "10", "50", f"all (~{x_all:.0f})"])
    ax.minorticks_off()
    ax.set_xlabel("training samples per class (log scale)")
    ax.set_ylabel("test accuracy, % (359 test digits)")
    ax.set_title(f"resnet20 pretrained on FashionMNIST ({pre['accuracy']:.1%}) -> 8x8 digits "
                 f"at 28x28\nmean ± std over {n_seeds} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, title="regime")
    fig.tight_layout()
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    global SAMPLES_RUN, SEEDS_RUN
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny pretraining, "
                   "2 sizes, 1 seed, few epochs; writes into the workdir")
    p.add_argument("--workdir", default="/tmp/deeparch-transfer-digits")
    p.add_argument("--reuse-pretrained", action="store_true",
                   help="reuse the workdir's pretrained run if it has the same settings")
    # one torch thread: on this shared 2-core machine, with other processes running, two
    # threads measured 88-110 ms per training image against 17 ms with one (each parallel
    # region waits for its slowest thread); unloaded, two threads are ~1.6x faster
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--regimes", default=",".join(REGIMES),
                   help="comma-separated subset of: " + ", ".join(REGIMES))
    p.add_argument("--out", default=None, help="JSON path (PNG beside it)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in the JSON (same settings and pretrained "
                        "run) and train only the missing ones; every run is deterministic "
                        "on CPU, so the numbers are those of an uninterrupted run")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    SAMPLES_RUN = (5, None) if a.quick else SAMPLES
    SEEDS_RUN = SEEDS[:1] if a.quick else SEEDS
    regimes = {k: REGIMES[k] for k in a.regimes.split(",")}
    out_json = Path(a.out) if a.out else (workdir / "transfer_digits_quick.json" if a.quick
                                          else HERE / "transfer_digits.json")
    out_png = out_json.with_suffix(".png")

    t0 = time.perf_counter()
    import deeparch
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
               "python": platform.python_version(), "threads": a.threads,
               "deeparch": deeparch.__version__}
    print(f"machine: {machine}", flush=True)
    pre = pretrain(workdir, a.quick, a.reuse_pretrained, a.threads)
    sets, n_test = digits_sets(workdir, SAMPLES_RUN, SEEDS_RUN)
    n_all = sets[(None, SEEDS_RUN[0])][1]
    results: list[dict] = []
    doc = {"command": " ".join(["python", "benchmarks/transfer_digits.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d"), "machine": machine, "pretrain": pre,
           "settings": {"samples_per_class": [k if k is not None else "all"
                                              for k in SAMPLES_RUN],
                        "seeds": list(SEEDS_RUN), "batch_size": BATCH,
                        "epochs": {name: {("all" if k is None else str(k)):
                                          epochs_for(sets[(k, SEEDS_RUN[0])][1], a.quick,
                                                     spec.get("min_steps", MIN_STEPS),
                                                     spec.get("max_epochs", MAX_EPOCHS))
                                          for k in SAMPLES_RUN}
                                   for name, spec in regimes.items()},
                        "regimes": regimes, "common": COMMON, "test_images": n_test,
                        "all_train_images": n_all},
           "results": results}

    done: set = set()
    if a.resume and out_json.is_file():
        old = json.loads(out_json.read_text())
        if old.get("settings") != json.loads(json.dumps(doc["settings"])) or \
                old["pretrain"].get("run") != pre["run"] or \
                old["pretrain"].get("accuracy") != pre["accuracy"]:
            raise SystemExit(f"{out_json} holds another experiment (other settings or "
                             f"pretrained run); run without --resume.")
        results.extend(old["results"])
        done = {(r["regime"], r["samples_per_class"], r["seed"]) for r in results}
        doc["sessions"] = old.get("sessions", []) + [
            {"command": old["command"], "total_s": old.get("total_s"), "runs": len(results)}]
        print(f"resuming: {len(results)} runs already in {out_json}", flush=True)

    def on_result(r):
        results.append(r)
        doc["summary"] = summarise(results)
        write_atomic(out_json, json.dumps(doc, indent=2) + "\n")

    transfer(workdir, Path(pre["run"]), sets, regimes, a.quick, a.threads, on_result, done)
    doc["total_s"] = time.perf_counter() - t0
    doc["summary"] = summarise(results)
    write_atomic(out_json, json.dumps(doc, indent=2) + "\n")
    plot(doc["summary"], pre, out_png, n_all, len(SEEDS_RUN))
    print(f"\ndone in {doc['total_s'] / 60:.1f} min; wrote {out_json} and {out_png}\n")
    cols = [("all" if k is None else str(k)) for k in SAMPLES_RUN]
    print(f"{'regime':24s}" + "".join(f"{c:>16s}" for c in cols))
    for name, row in doc["summary"].items():
        print(f"{name:24s}" + "".join(f"{row[c]['mean']*100:9.1f} ± {row[c]['std']*100:4.1f}"
                                      for c in cols if c in row))
    return 0


SAMPLES_RUN = SAMPLES
SEEDS_RUN = SEEDS

if __name__ == "__main__":
    sys.exit(main())
