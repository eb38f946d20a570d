"""How long the inspector takes: summary of VGG-19 at 224x224, and of every registered model.

    python benchmarks/bench_summary.py [--repeats 5]

The trace runs on meta tensors, so the cost is Python bookkeeping per layer, not arithmetic.
The first summary in a process pays for imports and is reported separately.
"""
from __future__ import annotations

import argparse
import statistics
import time

import deeparch


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    first = timed(lambda: deeparch.summary("vgg19"))
    vgg = [timed(lambda: deeparch.summary("vgg19")) for _ in range(args.repeats)]
    names = deeparch.list_models()
    per_model = {n: timed(lambda n=n: deeparch.summary(n)) for n in names}
    slowest = sorted(per_model.items(), key=lambda kv: -kv[1])[:3]
    print("| what | seconds |")
    print("| --- | ---: |")
    print(f"| first summary in a process (vgg19, includes lazy imports) | {first:.3f} |")
    print(f"| summary('vgg19') at 3x224x224, median of {args.repeats} | {statistics.median(vgg):.3f} |")
    print(f"| all {len(names)} registered models, one summary each | {sum(per_model.values()):.2f} |")
    for n, t in slowest:
        print(f"| slowest: {n} | {t:.3f} |")


if __name__ == "__main__":
    main()
