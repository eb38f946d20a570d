"""Architecture search on the real NAS-Bench-201 CIFAR-10 table (analog-nasbench's data.anb).

Three experiments, each selectable (default: all):

  strategies   best table accuracy found against queries for random, evolution (P=10, S=3)
               and reinforce (lr 0.01, baseline momentum 0.9), SEEDS seeds x 300 queries;
               -> search_nb201_strategies.png, numbers in search_nb201.json
  zerocost     Spearman rank correlation with the table's accuracy of synflow, naswot, snip,
               grad_norm (untrained nets, seed 0) and of params and mult-adds, over CELLS
               distinct cells drawn at random (seed 0). To fit the CPU budget the zero-cost
               scores are computed on a REDUCED skeleton (channels 8, 1 cell per stage instead
               of 16 and 5; the same 6-edge cell), input 3x32x32, one minibatch of 32 digits
               images upsampled to 32x32 (grey copied to 3 channels; CIFAR-10 is not on this
               machine); params and mult-adds are those of the full benchmark network.
               -> search_nb201_zerocost.png
  constrained  evolution and random under mult-adds <= 50 M (SEEDS seeds, 300 queries),
               against the optimum of the table restricted to cells meeting the cap
               (enumerated: all 15,625 cells' mult-adds, as the skeleton's plus one term
               per edge and operation, 25 inspector runs; checked exact on 40 random cells).

    .venv/bin/python benchmarks/search_nb201.py [strategies] [zerocost] [constrained]
        [--seeds 100] [--cells 1000]
"""
from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deeparch.search.objectives import (TableObjective, ZeroCostObjective, arch_cost,
                                        prime_costs)
from deeparch.search.loop import plot_best_so_far, run
from deeparch.search.spaces import space
from deeparch.search.table import load_table
from deeparch.search.zero_cost import zero_cost_scores

HERE = Path(__file__).resolve().parent
OUT_JSON = HERE / "search_nb201.json"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load_json() -> dict:
    return json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}


def save_json(key: str, value) -> None:
    d = load_json()
    d[key] = value
    d["machine"] = {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()}
    OUT_JSON.write_text(json.dumps(d, indent=2) + "\n")


def stats_at(results, q):
    vals = [r.best_so_far()[q - 1] for r in results]
    return {"mean": round(statistics.mean(vals), 4), "std": round(statistics.pstdev(vals), 4),
            "p10": round(float(np.percentile(vals, 10)), 4),
            "p90": round(float(np.percentile(vals, 90)), 4)}


def strategies(seeds: int) -> None:
    sp = space("nb201")
    table = load_table()
    obj = TableObjective(table)
    best_arch, best = table.best()
    out, allres = {"optimum": best, "optimum_arch": sp.encode(best_arch), "seeds": seeds,
                   "budget": 300, "median": table.median()}, []
    t0 = time.perf_counter()
    for name in ("random", "evolution", "reinforce"):
        rs = [run(sp, name, obj, 300, seed) for seed in range(seeds)]
        allres += rs
        out[name] = {f"q{q}": stats_at(rs, q) for q in (10, 30, 50, 100, 150, 200, 300)}
        out[name]["found_optimum_by_300"] = sum(r.best_score == best for r in rs) / seeds
        print(name, out[name]["q100"], out[name]["q300"], flush=True)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    e, r = out["evolution"], out["random"]
    out["evolution_minus_random_at_100"] = round(e["q100"]["mean"] - r["q100"]["mean"], 4)
    out["optimum_minus_evolution_at_300"] = round(best - e["q300"]["mean"], 4)
    plot_best_so_far(allres, HERE / "search_nb201_strategies.png", reference=best,
                     title=f"NAS-Bench-201 CIFAR-10 table: best test accuracy found\n"
                           f"{seeds} seeds each: mean, 10-90th percentile band")
    save_json("strategies", out)
    print(json.dumps(out, indent=1))


def spearman(a, b) -> float:
    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        # average ranks of ties
        vals, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.zeros(len(vals))
        np.add.at(sums, inv, r)
        return (sums / counts)[inv]
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def zerocost(cells: int) -> None:
    full = space("nb201")
    small = space("nb201", channels=8, cells=1)
    table = load_table()
    rng = random.Random(0)
    archs = rng.sample(list(full.enumerate()), cells)
    batcher = ZeroCostObjective("naswot", data="digits", batch=32, seed=0)
    images, labels = batcher.minibatch((3, 32, 32))
    kinds = ("synflow", "naswot", "snip", "grad_norm")
    rows = []
    t0 = time.perf_counter()
    for i, a in enumerate(archs):
        s = zero_cost_scores(kinds, lambda: small.build(a), (3, 32, 32), images, labels, 0)
        cost = arch_cost(full, a)
        rows.append({"arch": full.encode(a), "acc": table.accuracy(a), **s, **cost})
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{cells} cells, {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    acc = [r["acc"] for r in rows]
    rho = {k: round(spearman([r[k] for r in rows], acc), 4)
           for k in (*kinds, "params", "macs")}
    nonfinite = {k: sum(1 for r in rows if not np.isfinite(r[k])) for k in kinds}
    # the same correlations among the cells that train at all (accuracy > 15 %)
    ok = [r for r in rows if r["acc"] > 15]
    rho_ok = {k: round(spearman([r[k] for r in ok], [r["acc"] for r in ok]), 4)
              for k in (*kinds, "params", "macs")}
    out = {"cells": cells, "sample_seed": 0, "init_seed": 0, "batch": 32,
           "zero_cost_network": "nb201 skeleton, channels 8, 1 cell per stage, 3x32x32 input",
           "data": "32 images of the digits train split (8x8 grey) upsampled to 32x32, 3 channels, normalised",
           "spearman": rho, "spearman_trainable_cells": rho_ok,
           "trainable_cells": len(ok), "nonfinite_scores": nonfinite,
           "wall_s": round(wall, 1), "seconds_per_cell": round(wall / cells, 3)}
    save_json("zerocost", out)
    print(json.dumps(out, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5), dpi=100)
    for ax, k in zip(axes.flat, (*kinds, "params", "macs")):
        x = np.array([r[k] for r in rows], dtype=float)
        if k == "synflow":
            x = np.log10(np.maximum(x, 1e-300))
        ax.scatter(x, acc, s=4, alpha=0.4)
        ax.set_title(f"{k}{' (log10)' if k == 'synflow' else ''}: Spearman {rho[k]:.3f}",
                     fontsize=9)
        ax.set_ylabel("table accuracy (%)", fontsize=8)
        ax.set_ylim(max(0, min(acc) - 2), 96)
    fig.suptitle(f"NAS-Bench-201 CIFAR-10: zero-cost scores vs accuracy, {cells} random cells",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "search_nb201_zerocost.png")


def additive_macs(sp) -> tuple[dict, int]:
    """nb201's cost is a sum over edges (every edge's op is built and run): the base
    (all 'none') plus one term per (edge, op). Checked against the inspector."""
    base = arch_cost(sp, (0,) * 6)
    delta = {}
    for e in range(6):
        for op in range(1, 5):
            a = [0] * 6
            a[e] = op
            c = arch_cost(sp, tuple(a))
            delta[(e, op)] = {k: c[k] - base[k] for k in ("params", "macs")}
    return base, delta


def constrained(seeds: int, cap: float = 50e6) -> None:
    sp = space("nb201")
    table = load_table()
    base, delta = additive_macs(sp)

    def cost(a):
        return {k: base[k] + sum(delta[(e, op)][k] for e, op in enumerate(a) if op)
                for k in ("params", "macs")}
    rng = random.Random(1)
    checks = [sp.sample(rng) for _ in range(40)]
    mismatches = sum(cost(a) != arch_cost(sp, a) for a in checks)
    assert mismatches == 0, "the cost is not additive over edges"
    prime_costs(sp, {a: cost(a) for a in sp.enumerate()})
    feasible = [(acc, a) for a, acc in table.items() if cost(a)["macs"] <= cap]
    opt_acc, opt_arch = max(feasible)
    out = {"cap_macs": cap, "feasible_cells": len(feasible),
           "constrained_optimum": opt_acc, "constrained_optimum_arch": sp.encode(opt_arch),
           "constrained_optimum_macs": cost(opt_arch)["macs"],
           "unconstrained_optimum": table.best()[1], "seeds": seeds, "budget": 300,
           "additive_cost_checked_on": len(checks)}
    obj = TableObjective(table)
    allres = []
    for name in ("random", "evolution"):
        rs = [run(sp, name, obj, 300, seed, max_macs=cap) for seed in range(seeds)]
        allres += rs
        out[name] = {f"q{q}": stats_at(rs, q) for q in (50, 100, 300)}
        out[name]["found_constrained_optimum_by_300"] = \
            sum(r.best_score == opt_acc for r in rs) / seeds
        out[name]["rejected_per_search"] = statistics.mean(
            len(r.history) - len(r.queries) for r in rs)
        out[name]["all_within_cap"] = all(q["cost"]["macs"] <= cap for r in rs
                                          for q in r.queries)
        print(name, out[name], flush=True)
    plot_best_so_far(allres, HERE / "search_nb201_constrained.png", reference=opt_acc,
                     title=f"NAS-Bench-201 under mult-adds <= {cap / 1e6:g} M: best accuracy "
                           f"found\n{seeds} seeds each; dashed: the constrained optimum")
    save_json("constrained", out)
    print(json.dumps(out, indent=1))


def main(argv) -> None:
    torch.set_num_threads(1)
    seeds = int(argv[argv.index("--seeds") + 1]) if "--seeds" in argv else 100
    cells = int(argv[argv.index("--cells") + 1]) if "--cells" in argv else 1000
    parts = [a for a in argv if a in ("strategies", "zerocost", "constrained")] or \
        ["strategies", "zerocost", "constrained"]
    for p in parts:
        t = time.perf_counter()
        {"strategies": lambda: strategies(seeds), "zerocost": lambda: zerocost(cells),
         "constrained": lambda: constrained(seeds)}[p]()
        print(f"{p}: {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
