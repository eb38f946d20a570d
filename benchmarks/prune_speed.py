"""Is a network pruned to half its parameters faster? Eager PyTorch on the CPU (issue 11).

    python benchmarks/prune_speed.py [--model resnet18] [--size 3,32,32] [--rounds 15]
                                     [--threads 2] [--ratio 0.5]

Three networks, timed side by side in one process, interleaved round by round (dense,
structured, magnitude, dense, ...) so that load from other processes hits them alike:

* dense: the network as built;
* structured: ``deeparch.edge.prune(..., ratio, by="params")`` -- channels removed, the
  tensors really smaller;
* magnitude: ``deeparch.edge.magnitude_prune(..., ratio)`` -- the same fraction of weights
  zeroed, the tensors as large as before (expected: no faster, the file no smaller).

Each round runs every network ``--iters`` times at batch 1 and at batch 32 and keeps the
mean; the table gives the median over the rounds and the ratio to dense. Weights are random
(latency does not depend on them). Also printed: parameters, mult-adds (deeparch's
inspector) and the safetensors file size of each.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import deeparch
from deeparch.edge import magnitude_prune, prune, sparsity
from deeparch.train.checkpoint import save_weights


def _size(text: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in text.split(","))
    return c, h, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=_size, default=(3, 32, 32))
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=10, help="forward passes per round (batch 1)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dense = deeparch.create_model(args.model, num_classes=10, in_chans=args.size[0]).eval()
    t0 = time.perf_counter()
    res = prune(dense, torch.randn(1, *args.size), args.ratio, by="params")
    prune_s = time.perf_counter() - t0
    nets = {"dense": dense, "structured": res.model.eval(),
            "magnitude": magnitude_prune(dense, args.ratio).eval()}

    with tempfile.TemporaryDirectory() as tmp:
        files = {k: save_weights(Path(tmp) / f"{k}.safetensors", m).stat().st_size
                 for k, m in nets.items()}
    stats = {k: deeparch.summary(m, args.size) for k, m in nets.items()}

    batches = {1: args.iters, 32: max(1, args.iters // 5)}
    xs = {b: torch.randn(b, *args.size) for b in batches}
    times: dict[tuple[str, int], list[float]] = {(k, b): [] for k in nets for b in batches}
    with torch.inference_mode():
        for k, m in nets.items():            # warm-up
            for b in batches:
                m(xs[b])
        for _ in range(args.rounds):
            for b, n in batches.items():
                for k, m in nets.items():
                    t = time.perf_counter()
                    for _ in range(n):
                        m(xs[b])
                    times[(k, b)].append((time.perf_counter() - t) / n * 1000.0)

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"{args.model} at {'x'.join(map(str, args.size))}, {args.threads} thread(s), "
          f"torch {torch.__version__}, CPU: {cpu}")
    print(f"structured pruning: channel ratio {res.channel_ratio:.3f} -> "
          f"{res.param_ratio:.1%} of the parameters removed, in {prune_s:.1f} s "
          f"({res.trials} trial(s))")
    print(f"magnitude pruning: {sparsity(nets['magnitude'])['overall']:.1%} of conv/linear "
          f"weights zero")
    print()
    print("| network | params | mult-adds | file | batch 1 ms | vs dense | batch 32 ms | "
          "vs dense |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    med = {key: statistics.median(v) for key, v in times.items()}
    for k in nets:
        s = stats[k]
        cells = []
        for b in batches:
            cells += [f"{med[(k, b)]:.2f}", f"{med[('dense', b)] / med[(k, b)]:.2f}x"]
        print(f"| {k} | {s.total_params:,} | {s.macs:,} | {files[k] / 1e6:.1f} MB | "
              + " | ".join(cells) + " |")
    print(f"\nmedian of {args.rounds} interleaved rounds; 'vs dense' = dense time / this "
          f"time (above 1: faster)")


if __name__ == "__main__":
    main()
