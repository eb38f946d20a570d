"""The slides' FashionMNIST figures: test accuracy 91.04% after 10 epochs, 92.0% after 50
more with the ImageDataGenerator augmentation.

    python benchmarks/fashion_accuracy.py --data-dir DIR [--out runs/fashion-slides]

DIR/fashion_mnist/ must hold the four IDX files (``deeparch train ... --download`` puts
them there when the internet is reachable). Two steps, as the slides did them:

1. ``deeparch train fashion_cnn --data fashion_mnist --recipe fashion_keras``: 10 epochs,
   batch 256, Adam 1e-3, 80/20 stratified split; the run folder keeps the weights of the
   best validation epoch, which are evaluated on the 10,000 test images;
2. the slides then call ``fit_generator`` on the same model for 50 more epochs with
   ``ImageDataGenerator(rotation_range=8, width_shift_range=0.08, shear_range=0.3,
   height_shift_range=0.08, zoom_range=0.08)`` (``--augment slides``) and evaluate the
   last weights: here the same, through :func:`deeparch.fit`, with the run's
   normalisation.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import deeparch
from deeparch.data import load_dataset, train_val_split
from deeparch.train import evaluate
from deeparch.train.config import RECIPES
from deeparch.train.run import train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="holds fashion_mnist/*.gz")
    ap.add_argument("--out", default="runs/fashion-slides", help="the step-1 run folder")
    ap.add_argument("--aug-epochs", type=int, default=50)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    first = train("fashion_cnn", "fashion_mnist", args.out, args.data_dir, force=True,
                  progress=False, **RECIPES["fashion_keras"])
    step1 = first.metrics["accuracy"]
    t1 = time.perf_counter()

    run = json.loads((Path(args.out) / "config.json").read_text())
    mean, std = run["mean"], run["std"]
    data = load_dataset("fashion_mnist", root=args.data_dir)
    test = load_dataset("fashion_mnist", "test", root=args.data_dir)
    tr, va = train_val_split(data, run["train"]["val_split"], seed=run["train"]["seed"])
    model = first.model                    # the best validation epoch's weights
    deeparch.fit(model, tr, va, epochs=args.aug_epochs, lr=1e-3, batch_size=256,
                 optimizer="adam", augment="slides", seed=run["train"]["seed"], mean=mean,
                 std=std, restore_best=False, progress=False)
    step2 = evaluate(model, test, mean=mean, std=std)["accuracy"]
    t2 = time.perf_counter()
    print(f"10 epochs: test accuracy {100 * step1:.2f}% (slides 91.04%), {t1 - t0:.0f} s")
    print(f"+{args.aug_epochs} epochs with augmentation: test accuracy {100 * step2:.2f}% "
          f"(slides 92.0%), {t2 - t1:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
