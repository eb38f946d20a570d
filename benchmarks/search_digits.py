"""A proxy-trained architecture search on digits, against a hand-designed network.

Space: NAS-Bench-201 cells in a SMALL skeleton (``space('nb201', channels=8, cells=1)``:
the same 6-edge cell, 8/16/32 channels, one cell per stage), built for 1 x 8 x 8 digits.
Objective: the **proxy** -- validation accuracy after PROXY_EPOCHS epoch(s) of deeparch's
Trainer (Adam 0.01, cosine, batch 64) on 80 % of the digits train split (seed 0, the same
split and initialisation seed for every candidate). Strategies: regularized evolution
(population 5, sample size 2) and random search, BUDGET queries each, SEEDS seeds.

Then every search's best cell is trained FINAL_EPOCHS epochs (same recipe, training seed =
search seed) and tested on the digits test split (359 images), beside a hand-designed
VGG-style network ``INPUT(8x8x1) -> [CONV3-W -> BN -> RELU]*2 -> POOL2 -> [CONV3-2W -> BN
-> RELU]*2 -> GAP -> FC-10`` whose width W is the largest with mult-adds <= the searched
network's (equal or smaller mult-adds), trained the same way with the same seed.

    .venv/bin/python benchmarks/search_digits.py [--seeds 5] [--budget 25]
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
PROXY_EPOCHS = 2
FINAL_EPOCHS = 15


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
    for w in range(1, 65):
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


def main(argv) -> None:
    torch.set_num_threads(1)
    seeds = int(argv[argv.index("--seeds") + 1]) if "--seeds" in argv else 5
    budget = int(argv[argv.index("--budget") + 1]) if "--budget" in argv else 25
    sp = space("nb201", channels=8, cells=1)
    proxy = ProxyObjective("digits", epochs=PROXY_EPOCHS, batch_size=64, lr=0.01, seed=0)
    t0 = time.perf_counter()
    results = {"random": [], "evolution": []}
    for name in results:
        opts = {"population": 5, "sample_size": 2} if name == "evolution" else {}
        for seed in range(seeds):
            r = run(sp, name, proxy, budget, seed, strategy_options=opts)
            results[name].append(r)
            print(f"{name} seed {seed}: proxy {r.best_score:.2f} {r.best} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    search_s = time.perf_counter() - t0
    rows = {}
    for name, rs in results.items():
        rows[name] = []
        for r in rs:
            net = sp.build(r.best_arch, num_classes=10, in_chans=1)
            m = macs_of(net)
            torch.manual_seed(r.seed)
            net = sp.build(r.best_arch, num_classes=10, in_chans=1)
            acc = final_test(net, proxy, r.seed)
            pattern, hm = hand_for(m)
            torch.manual_seed(r.seed)
            hacc = final_test(from_pattern(pattern), proxy, r.seed)
            rows[name].append({"seed": r.seed, "arch": r.best, "proxy": round(r.best_score, 2),
                               "macs": m, "test": round(acc, 2), "hand": pattern,
                               "hand_macs": hm, "hand_test": round(hacc, 2)})
            print(name, rows[name][-1], flush=True)
    total_s = time.perf_counter() - t0
    out = {"space": "nb201 cell, skeleton channels 8, 1 cell per stage, 1x8x8 input",
           "proxy": f"val accuracy after {PROXY_EPOCHS} epoch(s), Adam 0.01, batch 64, "
                    f"val 20% of the train split",
           "final": f"{FINAL_EPOCHS} epochs, same recipe; test split (359 images)",
           "budget": budget, "seeds": seeds, "search_s": round(search_s, 1),
           "total_s": round(total_s, 1), "runs": rows,
           "machine": {"cpu": cpu_model(), "threads": 1, "torch": torch.__version__}}
    for name, rs in rows.items():
        out[f"{name}_mean_test"] = round(statistics.mean(x["test"] for x in rs), 2)
        out[f"{name}_mean_hand_test"] = round(statistics.mean(x["hand_test"] for x in rs), 2)
        out[f"{name}_wins"] = sum(x["test"] > x["hand_test"] for x in rs)
        out[f"{name}_mean_proxy"] = round(statistics.mean(x["proxy"] for x in rs), 2)
    (HERE / "search_digits.json").write_text(json.dumps(out, indent=2) + "\n")
    plot_best_so_far(results["random"] + results["evolution"], HERE / "search_digits.png",
                     title=f"digits, nb201 cells (small skeleton): best proxy accuracy "
                           f"({PROXY_EPOCHS} epoch)\n{seeds} seeds each")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
