"""Does knowledge distillation help a small student on digits? (Hinton et al. 2015, measured.)

1. Train a teacher CNN (~60k parameters) on scikit-learn's 8x8 digits (embedded, offline):
   the whole training split (1438 images), 30 epochs.
2. Train two students -- a tiny CNN (690 parameters) and a mid-sized one (17k) -- for the
   same epochs with and without the teacher, over several seeds, on (a) the whole training
   split and (b) a 200-image stratified subset (the "transfer set" case of the paper, where
   the teacher's soft targets carry what the few hard labels do not).

Every run: Adam lr 3e-3, cosine decay, batch 64, no augmentation, val_split=0 and the last
epoch's weights (no validation images taken, no test-set peeking); every student is tested
on the same, whole digits test split (359 images). Conditions per seed: ``plain`` (CE),
``kd T=4 a=0.9`` and ``kd T=2 a=0.5`` (train(..., teacher=RUN, temperature=, alpha=)).

Usage (from the repository root; about three minutes on one CPU thread):

    .venv/bin/python benchmarks/distill_digits.py [--seeds 1 2 3] [--epochs 30]
                                                  [--teacher-epochs 30] [--students tiny mid]
                                                  [--workdir /tmp/deeparch-distill-digits]

It prints a table (mean +- std of the test accuracy over seeds, and each seed's paired
difference against ``plain``) and writes WORKDIR/distill_digits.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

TEACHER = ("INPUT(8x8x1) -> CONV3-32 -> RELU -> CONV3-32 -> RELU -> POOL2 -> CONV3-64 -> RELU "
           "-> POOL2 -> FC-128 -> RELU -> FC-10")
STUDENTS = {"tiny": "INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> FC-10",
            "mid": "INPUT(8x8x1) -> CONV3-16 -> RELU -> POOL2 -> FC-64 -> RELU -> FC-10"}
COMMON = dict(batch_size=64, optimizer="adam", lr=3e-3, schedule="cosine", val_split=0.0,
              restore_best=False, threads=1, progress=False, log=None, force=True)
CONDITIONS = {"plain": None, "kd T=4 a=0.9": (4.0, 0.9), "kd T=2 a=0.5": (2.0, 0.5)}
SUBSETS = {"all 1438": None, "subset 200": 200}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=30, help="the students' epochs")
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--workdir", default="/tmp/deeparch-distill-digits")
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from deeparch.train import run as runmod
    from deeparch.train.metrics import evaluate

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    train_data, test, _ = runmod.load_data("digits")
    start = time.perf_counter()

    def test_accuracy(r) -> float:
        run = r.config
        return float(evaluate(r.model, test, mean=run["mean"], std=run["std"],
                              classes=run["classes"])["accuracy"])

    teacher = runmod.train(TEACHER, "digits", work / "teacher", epochs=args.teacher_epochs,
                           seed=0, **COMMON)
    t_acc = test_accuracy(teacher)
    t_params = sum(p.numel() for p in teacher.model.parameters())
    # how soft are the teacher's targets on its training images? (mean top probability)
    run = teacher.config
    x = train_data.images.float() / 255
    x = (x - torch.tensor(run["mean"]).view(1, -1, 1, 1)) / torch.tensor(run["std"]).view(
        1, -1, 1, 1)
    with torch.no_grad():
        logits = teacher.model.eval()(x)
    top = {T: float(torch.softmax(logits / T, 1).max(1).values.mean()) for T in (1.0, 2.0, 4.0)}
    results: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    params = {}
    for student in args.students:
        for sname, subset in SUBSETS.items():
            for cname, kd in CONDITIONS.items():
                for seed in args.seeds:
                    out = work / (f"{student}-{sname.replace(' ', '')}-"
                                  f"{cname.replace(' ', '_')}-s{seed}")
                    kw = dict(COMMON, epochs=args.epochs, seed=seed, subset=subset)
                    if kd is not None:
                        kw.update(teacher=work / "teacher", temperature=kd[0], alpha=kd[1])
                    r = runmod.train(STUDENTS[student], "digits", out, **kw)
                    params[student] = sum(p.numel() for p in r.model.parameters())
                    acc = test_accuracy(r)
                    results.setdefault(student, {}).setdefault(sname, {}).setdefault(
                        cname, {})[seed] = acc
                    print(f"{student:5s} {sname:10s}  {cname:14s}  seed {seed}: {acc:.4f}",
                          flush=True)
    seconds = time.perf_counter() - start

    print(f"\nteacher {t_params:,} parameters: test accuracy {t_acc:.4f}; mean top "
          f"probability on its training images: "
          + ", ".join(f"T={T:g} {p:.3f}" for T, p in top.items()))
    print(f"{args.epochs} epochs, seeds {args.seeds}, test = all {len(test)} digits test "
          f"images\n")
    print(f"{'student':14s}{'train data':12s}{'condition':16s}{'mean':>8s}{'std':>8s}   "
          f"{'paired diff vs plain, per seed'}")
    for student, by_subset in results.items():
        for sname, conds in by_subset.items():
            base = conds["plain"]
            for cname, accs in conds.items():
                vals = [accs[s] for s in args.seeds]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                diff = "" if cname == "plain" else "  ".join(
                    f"{accs[s] - base[s]:+.4f}" for s in args.seeds)
                who = f"{student} ({params[student]:,})"
                print(f"{who:14s}{sname:12s}{cname:16s}{statistics.mean(vals):8.4f}"
                      f"{sd:8.4f}   {diff}")
    print(f"\n{seconds:.0f} s on {_cpu()}, torch {torch.__version__}, 1 thread")
    record = {"teacher": {"pattern": TEACHER, "params": t_params, "test_accuracy": t_acc},
              "teacher_top_probability": top,
              "students": {k: {"pattern": STUDENTS[k], "params": params.get(k)}
                           for k in args.students},
              "epochs": args.epochs, "teacher_epochs": args.teacher_epochs,
              "seeds": args.seeds, "settings": {
                  k: v for k, v in COMMON.items() if k not in ("log", "progress", "force")},
              "results": results, "seconds": seconds, "cpu": _cpu(),
              "torch": torch.__version__, "command": " ".join(sys.argv)}
    (work / "distill_digits.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {work / 'distill_digits.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
