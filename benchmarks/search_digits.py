"""A proxy-trained architecture search on digits, against a hand-designed network.

Space (default ``--space plain``): ``space('plain')``, plain CNNs in the layer-pattern
language, two stages of ``[CONVk-w -> BN -> RELU]*d`` (w in 8..64, d in 1..3, k in 3, 5) with a
max pool between, GAP and FC-10; searched under a cap of MAX_MACS mult-adds (``--max-macs``).
``--space nb201`` repeats the earlier attempt instead: NAS-Bench-201 cells in a small CIFAR
skeleton (``space('nb201', channels=8, cells=1)``, 8/16/32 channels, one cell per stage, no
cap), which lost to the hand-designed network (RESULTS.md says by how much and why).
Objective: the **proxy** -- minus the lowest validation loss in 10 epochs of deeparch's
Trainer (Adam 0.01, cosine, batch 64) on 80 % of the digits train split (seed 0, the same
split and initialisation seed for every candidate); for nb201, the validation accuracy after
2 epochs. Strategies: regularized evolution
(population 5, sample size 2) and random search, BUDGET queries each, SEEDS seeds.

Then every search's best network is trained FINAL_EPOCHS epochs (same recipe; FINAL_SEEDS
training seeds, the mean test accuracy is its figure; nb201: one, the search seed) and
tested on the digits test split (359 images), beside a hand-designed VGG-style network
``INPUT(8x8x1) -> [CONV3-W -> BN -> RELU]*2 -> POOL2 -> [CONV3-2W -> BN -> RELU]*2 -> GAP
-> FC-10`` whose width W is the largest with mult-adds <= the searched
network's (equal or smaller mult-adds), trained the same way with the same seed.

    .venv/bin/python benchmarks/search_digits.py [--seeds 5] [--budget 30] [--space plain]
        [--final-seeds 3] [--max-macs 500000] [--proxy-epochs 10] [--metric loss|accuracy]
    .venv/bin/python benchmarks/search_digits.py --fidelity 20    # the proxies' rank fidelity
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from deeparch.inspect.summary import summary
from deeparch.pattern import from_pattern
from deeparch.search.objectives import ProxyObjective
from deeparch.search.loop import plot_best_so_far, run
from deeparch.search.spaces import space

HERE = Path(__file__).resolve().parent
FINAL_EPOCHS = 15
FINAL_SEEDS = 3    # each final network is trained with 3 seeds; its test accuracy is the mean
SETUPS = {      # space, its options, proxy epochs, proxy metric, the mult-add cap of the search
    "plain": ({}, 10, "loss", 500_000),
    "nb201": ({"channels": 8, "cells": 1}, 2, "accuracy", None),
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def hand_pattern(w: int) -> str:
    return (f"INPUT(8x8x1) -> [CONV3-{w} -> BN -> RELU]*2 -> POOL2 -> "
            f"[CONV3-{2 * w} -> BN -> RELU]*2 -> GAP -> FC-10")


def macs_of(model) -> int:
    return int(summary(model, input_size=(1, 8, 8)).macs)


def hand_for(target_macs: int) -> tuple[str, int]:
    best = None
    for w in range(1, 257):
        m = macs_of(from_pattern(hand_pattern(w)))
        if m <= target_macs:
            best = (hand_pattern(w), m)
        else:
            break
    if best is None:
        raise SystemExit(f"no hand-designed width fits {target_macs} mult-adds")
    return best


def final_test(model, proxy: ProxyObjective, seed: int) -> float:
    from deeparch.train.trainer import Trainer
    cfg = dict(proxy.config, epochs=FINAL_EPOCHS, seed=seed)
    tr = Trainer(model, proxy.train, proxy.val, cfg, log=None, progress=False)
    tr.fit()
    return 100.0 * float(tr.evaluate(proxy.test)["accuracy"])


def fidelity(count: int, proxy_epochs: int = 5, cap: int = 500_000) -> None:
    """How well the proxies rank final test accuracy: ``count`` random networks of the plain
    space under the cap, each proxy-trained once (both the accuracy and the loss proxy come
    from that one training) and trained FINAL_EPOCHS epochs with 2 seeds (mean test %)."""
    import random

    from scipy.stats import spearmanr

    from deeparch.search.objectives import arch_cost
    sp = space("plain")
    proxy = ProxyObjective("digits", epochs=proxy_epochs, batch_size=64, lr=0.01, seed=0,
                           metric="loss")
    rng, rows = random.Random(1), []
    while len(rows) < count:
        a = sp.sample(rng)
        if arch_cost(sp, a)["macs"] > cap:
            continue
        loss = proxy(sp, a)
        finals = []
        for seed in range(2):
            torch.manual_seed(seed)
            finals.append(final_test(sp.build(a, 10, 1), proxy, seed))
        rows.append((proxy.last["val_accuracy"], loss, statistics.mean(finals)))
        print(f"{sp.encode(a)}  proxy acc {rows[-1][0]:.2f}  -loss {loss:.4f}  test "
              f"{finals[0]:.2f} / {finals[1]:.2f}", flush=True)
    acc, loss, test = zip(*rows)
    print(f"Spearman with the final test accuracy over {count} networks: accuracy proxy "
          f"{spearmanr(acc, test)[0]:.2f}, loss proxy {spearmanr(loss, test)[0]:.2f}")


def main(argv) -> None:
    torch.set_num_threads(1)
    if "--fidelity" in argv:
        fidelity(int(argv[argv.index("--fidelity") + 1]))
        return
    arg = lambda k, d: type(d)(argv[argv.index(k) + 1]) if k in argv else d  # noqa: E731
    seeds, budget = arg("--seeds", 5), arg("--budget", 30)
    which = arg("--space", "plain")
    options, proxy_epochs, metric, cap = SETUPS[which]
    proxy_epochs, metric = arg("--proxy-epochs", proxy_epochs), arg("--metric", metric)
    final_seeds = arg("--final-seeds", FINAL_SEEDS if which == "plain" else 1)
    cap = arg("--max-macs", cap or 0) or None
    sp = space(which, **options)
    constraints = {"max_macs": cap} if cap else {}
    proxy = ProxyObjective("digits", epochs=proxy_epochs, batch_size=64, lr=0.01, seed=0,
                           metric=metric)
    t0 = time.perf_counter()
    results = {"random": [], "evolution": []}
    for name in results:
        opts = {"population": 5, "sample_size": 2} if name == "evolution" else {}
        for seed in range(seeds):
            r = run(sp, name, proxy, budget, seed, strategy_options=opts, **constraints)
            results[name].append(r)
            print(f"{name} seed {seed}: proxy {r.best_score:.2f} {r.best} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    search_s = time.perf_counter() - t0
    rows = {}
    for name, rs in results.items():
        rows[name] = []
        for r in rs:
            m = macs_of(sp.build(r.best_arch, num_classes=10, in_chans=1))
            pattern, hm = hand_for(m)
            accs, haccs = [], []
            for k in range(final_seeds):        # training seeds: search seed * 100 + k
                seed = r.seed * 100 + k if final_seeds > 1 else r.seed
                torch.manual_seed(seed)
                accs.append(final_test(sp.build(r.best_arch, num_classes=10, in_chans=1),
                                       proxy, seed))
                torch.manual_seed(seed)
                haccs.append(final_test(from_pattern(pattern), proxy, seed))
            acc, hacc = statistics.mean(accs), statistics.mean(haccs)
            rows[name].append({"seed": r.seed, "arch": r.best, "proxy": round(r.best_score, 4),
                               "macs": m, "test": round(acc, 2),
                               "tests": [round(a, 2) for a in accs],
                               "hand": pattern, "hand_macs": hm, "hand_test": round(hacc, 2),
                               "hand_tests": [round(a, 2) for a in haccs]})
            print(name, rows[name][-1], flush=True)
    total_s = time.perf_counter() - t0
    out = {"space": f"{which} {options or ''}, 1x8x8 input",
           "max_macs": cap,
           "proxy": f"{'val accuracy' if metric == 'accuracy' else 'minus the lowest val loss'}"
                    f" after {proxy_epochs} epoch(s), Adam 0.01, batch 64, val 20% of the "
                    f"train split",
           "final": f"{FINAL_EPOCHS} epochs, same recipe; test split (359 images); mean of "
                    f"{final_seeds} training seed(s)",
           "budget": budget, "seeds": seeds, "search_s": round(search_s, 1),
           "total_s": round(total_s, 1), "runs": rows,
           "machine": {"cpu": cpu_model(), "threads": 1, "torch": torch.__version__}}
    for name, rs in rows.items():
        out[f"{name}_mean_test"] = round(statistics.mean(x["test"] for x in rs), 2)
        out[f"{name}_mean_hand_test"] = round(statistics.mean(x["hand_test"] for x in rs), 2)
        out[f"{name}_wins"] = sum(x["test"] > x["hand_test"] for x in rs)
        out[f"{name}_mean_proxy"] = round(statistics.mean(x["proxy"] for x in rs), 2)
    stem = "search_digits" if which == "plain" else f"search_digits_{which}"
    (HERE / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    what = ("validation accuracy" if metric == "accuracy"
            else "minus the lowest validation loss")
    where = (f"plain CNNs, mult-adds <= {cap / 1e6:g} M" if which == "plain"
             else "nb201 cells (small skeleton)")
    plot_best_so_far(results["random"] + results["evolution"], HERE / f"{stem}.png",
                     title=f"digits, {where}: best proxy ({what}, {proxy_epochs} epochs)\n"
                           f"{seeds} seeds each")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
