"""The residual lesion study (Veit, Wilber & Belongie 2016, "Residual networks behave like
ensembles of relatively shallow networks") on FashionMNIST: a ResNet-20 against a plain
20-layer network of the same shape (He et al. 2015's "plain-20": the ResNet without its
shortcuts).

    python benchmarks/lesion.py [--data-dir DIR] [--runs runs/lesion] [--subset 12000]
                                [--epochs 3] [--limit 1000] [--draws 3]

1. trains both with the same recipe (``deeparch train``; Adam 2e-3, batch 128, cosine, on
   ``--subset`` stratified training images, 10% held out for validation) -- skipped when a
   run folder already holds a model;
2. ``deeparch lesion RUN`` on each: every residual block in turn made the identity (its
   shortcut kept: ``x`` or, in a downsampling block, the zero-padding shortcut), then k
   random blocks at once; for the plain network every layer whose input and output shapes
   agree (conv + BN + ReLU) removed in turn, and k random ones;
3. writes benchmarks/lesion.json (both results) and benchmarks/lesion.png (both figures
   side by side), and prints the RESULTS.md table.

The paper's finding to compare with: on CIFAR-10 a 110-layer ResNet barely changes when one
block is removed, except downsampling blocks, while removing any layer of VGG drops it to
chance. DIR must hold fashion_mnist/ with the four IDX files (default: Debian's
/usr/share/datasets/fashion-mnist, linked under the runs folder).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from deeparch.train.run import train

# He et al. 2015's plain-20 for 28x28 grey images: 3x3 convs, 16/32/64 filters on
# 28/14/7 maps (stride-2 convs where the width doubles), BN + ReLU after each, global average
# pooling and a 10-way dense layer: 19 convolutions + 1 dense = 20 weight layers, like
# ResNet-20 (which adds its parameter-free option-A shortcuts).
PLAIN20 = ("INPUT(28x28x1) -> [CONV3-16 -> BN -> RELU]*7 -> CONV3-32/2 -> BN -> RELU -> "
           "[CONV3-32 -> BN -> RELU]*5 -> CONV3-64/2 -> BN -> RELU -> "
           "[CONV3-64 -> BN -> RELU]*5 -> GAP -> FC-10")
MODELS = {"resnet20": "resnet20", "plain20": PLAIN20}
RECIPE = dict(optimizer="adam", lr=2e-3, batch_size=128, schedule="cosine", val_split=0.1,
              seed=0)


def data_dir(given: str | None, runs: Path) -> str:
    if given:
        return given
    debian = Path("/usr/share/datasets/fashion-mnist")
    if not debian.is_dir():
        sys.exit("give --data-dir DIR (DIR/fashion_mnist/ holds the four IDX files)")
    home = runs / "data"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "fashion_mnist"
    if not link.exists():
        link.symlink_to(debian)
    return str(home)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="holds fashion_mnist/*.gz")
    ap.add_argument("--runs", default="runs/lesion", help="where the two runs go")
    ap.add_argument("--subset", type=int, default=12000, help="training images (stratified)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=1000,
                    help="test images each lesion is measured on (stratified)")
    ap.add_argument("--draws", type=int, default=3, help="random sets per k")
    ap.add_argument("--k", type=int, nargs="+", default=list(range(1, 10)), dest="ks",
                    help="numbers of random units removed at once (default 1 .. 9)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).with_name("lesion")),
                    help="writes OUT.json and OUT.png")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    home = data_dir(args.data_dir, runs)
    times = {}
    for name, model in MODELS.items():
        out = runs / name
        if (out / "model.safetensors").is_file():
            print(f"{out}: trained already")
            continue
        t0 = time.perf_counter()
        r = train(model, "fashion_mnist", out, home, force=True, progress=False, log=None,
                  epochs=args.epochs, subset=args.subset, **RECIPE)
        times[name] = time.perf_counter() - t0
        print(f"{name}: test accuracy {r.metrics['accuracy']:.2%} after {args.epochs} epochs "
              f"on {args.subset} images, {times[name]:.0f} s", flush=True)
    if args.train_only:
        return 0

    from deeparch.viz.lesion import lesion_run, plot_lesion_compare

    results = {}
    for name in MODELS:
        t0 = time.perf_counter()
        res = lesion_run(runs / name, limit=args.limit, draws=args.draws, seed=0,
                         ks=args.ks, out=runs / name)
        results[name] = res
        print(f"{name}: lesion study in {time.perf_counter() - t0:.0f} s", flush=True)
    plot_lesion_compare([results[n] for n in MODELS], f"{args.out}.png",
                        names=["ResNet-20", "plain-20"])
    doc = {"recipe": {**RECIPE, "epochs": args.epochs, "subset": args.subset,
                      "data": "fashion_mnist"},
           "limit": args.limit, "draws": args.draws, "ks": args.ks,
           "results": {n: r.to_dict() for n, r in results.items()}}
    Path(f"{args.out}.json").write_text(json.dumps(doc, indent=2) + "\n")
    for name, r in results.items():
        print(f"\n{name}: base accuracy {r.base_accuracy:.2%} on {r.n} test images")
        print("| removed | accuracy | change |")
        print("|---|---:|---:|")
        for u in r.units:
            tag = " (downsampling)" if u["downsampling"] else ""
            print(f"| {u['name']}{tag} | {u['accuracy']:.2%} | "
                  f"{100 * (u['accuracy'] - r.base_accuracy):+.1f} |")
        print("| k random | mean accuracy |  |")
        for row in r.random:
            print(f"| {row['k']} | {row['mean']:.2%} (±{100 * row['std']:.1f}) | |")
    print(f"\nwrote {args.out}.json and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
