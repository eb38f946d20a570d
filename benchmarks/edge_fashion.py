"""The advanced slides' edge claims, measured on FashionMNIST (or digits):

* a network pruned to half its parameters keeps >= 97% of its accuracy after fine-tuning;
* int8 is >= 3.5x smaller with <= 1 point of accuracy lost;
* speed (batch 1, one process, interleaved): int8 in ONNX Runtime >= 1.5x faster than fp32 in
  ONNX Runtime and >= 3x faster than fp32 eager PyTorch; the half-parameter network >= 1.6x
  faster than the dense one in the same runtime;
* MobileNet's width multiplier alpha and resolution multiplier rho traded against measured
  latency, not only mult-adds.

    python benchmarks/edge_fashion.py [--data fashion] [--subset 12000] [--epochs 4] \
        [--out runs/edge] [--threads 2]

``--data fashion`` reads the IDX files of Debian's ``dataset-fashion-mnist`` package
(/usr/share/datasets/fashion-mnist, or ``--fashion-dir``); ``--data digits`` runs offline
anywhere (8x8 images, so the MobileNet part is skipped). Writes ``edge_fashion.json`` and
``edge_fashion.png`` next to this script; the figures go to RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _fashion_dir(src: str) -> str:
    """deeparch reads DIR/fashion_mnist/*.gz; link Debian's files there."""
    tmp = Path(tempfile.mkdtemp(prefix="deeparch-fashion-"))
    (tmp / "fashion_mnist").mkdir()
    for f in Path(src).glob("*.gz"):
        os.symlink(f, tmp / "fashion_mnist" / f.name)
    return str(tmp)


def main(argv=None) -> int:
    from deeparch.edge.latency import bench
    from deeparch.edge.cpu import cpu_info
    from deeparch.edge.onnx import export_onnx
    from deeparch.edge.pipeline import shrink
    from deeparch.train.run import load_run, run_data, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("fashion", "digits"), default="fashion")
    ap.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--subset", type=int, default=12000, help="training images")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--finetune", type=int, default=3)
    ap.add_argument("--mobile-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    ap.add_argument("--bench-threads", type=int, default=1,
                    help="timing threads (1: two-thread timings on a 2-core machine "
                         "that is not idle swing by 100x)")
    ap.add_argument("--out", default="runs/edge")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw edge_fashion.png from edge_fashion.json")
    args = ap.parse_args(argv)
    if args.replot:
        replot()
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    if args.data == "fashion":
        data, data_dir = "fashion_mnist", _fashion_dir(args.fashion_dir)
    else:
        data, data_dir = "digits", None
    common = dict(subset=args.subset, log=None, progress=False, force=True,
                  threads=args.threads, optimizer="adam", lr=1e-3, batch_size=128, seed=0)

    # 1. the pipeline on a small ResNet (resnet20, He et al.'s CIFAR network, 1 channel)
    base = out / "resnet20"
    r = train("resnet20", data, base, data_dir, epochs=args.epochs, **common)
    print(f"resnet20 trained: {r} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rep = shrink(base, out / "resnet20-shrunk", prune=0.5, finetune=args.finetune,
                 quantize="int8", calibration=512, repeats=args.repeats,
                 threads=args.bench_threads, force=True, log=print, progress=False)
    print(rep.table(), flush=True)
    st = {s.name: s for s in rep.stages}

    def lat(stage, rt, b="1"):
        return st[stage].latency[rt][b]["median_ms"]

    fp32, tuned, int8 = st["fp32"], st["finetuned"], st["int8"]
    claims = {
        "pruned_params_fraction": tuned.params / fp32.params,
        "finetuned_accuracy_kept": tuned.accuracy / fp32.accuracy,
        "int8_size_ratio_vs_fp32_onnx": fp32.onnx_bytes / int8.size_bytes,
        "int8_size_ratio_vs_its_fp32_onnx": tuned.onnx_bytes / int8.size_bytes,
        "int8_points_lost_vs_its_fp32": tuned.accuracy_onnx - int8.accuracy_onnx,
        "int8_points_lost_vs_dense_fp32": fp32.accuracy - int8.accuracy_onnx,
    }
    for b in ("1", "32"):
        claims[f"b{b}_int8_vs_fp32_onnxruntime"] = lat("finetuned", "onnxruntime", b) / \
            lat("int8", "onnxruntime", b)
        claims[f"b{b}_int8_vs_dense_fp32_onnxruntime"] = lat("fp32", "onnxruntime", b) / \
            lat("int8", "onnxruntime", b)
        claims[f"b{b}_int8_onnxruntime_vs_dense_fp32_torch"] = lat("fp32", "torch", b) / \
            lat("int8", "onnxruntime", b)
        for rt in ("torch", "onnxruntime"):
            claims[f"b{b}_pruned_vs_dense_{rt}"] = lat("fp32", rt, b) / lat("finetuned", rt, b)
    print(json.dumps(claims, indent=2), flush=True)

    # 2. MobileNet v1: width multiplier alpha and resolution multiplier rho, trained the same
    mobile = []
    if args.data == "fashion":
        grid = [(a, 1.0) for a in (1.0, 0.75, 0.5, 0.25)] + [(1.0, r) for r in (0.75, 0.5)]
        nets = {}
        for alpha, rho in grid:
            px = int(round(32 * rho))
            name = f"mobilenet_v1 a={alpha:g} rho={rho:g} ({px}px)"
            folder = out / f"mobilenet-a{alpha:g}-r{rho:g}"
            res = train("mobilenet_v1", data, folder, data_dir, epochs=args.mobile_epochs,
                        model_options={"alpha": alpha}, image_size=px, **common)
            net, cfg = load_run(folder)
            d = run_data(folder)
            x, y = d.normalised("test"), torch.as_tensor(d.test.labels)
            with torch.inference_mode():
                acc = 100.0 * int((net(x).argmax(1) == y).sum()) / len(y)
            onnx_path = folder / "model.onnx"
            export_onnx(net, onnx_path, tuple(cfg["input_size"]))
            from deeparch.inspect import summary
            s = summary(net, tuple(cfg["input_size"]))
            mobile.append(dict(name=name, alpha=alpha, rho=rho, pixels=px, accuracy=acc,
                               params=int(s.total_params), macs=int(s.macs)))
            nets[name] = (net, str(onnx_path), tuple(cfg["input_size"]))
            print(f"{name}: {acc:.2f}% ({res}) {time.perf_counter() - t0:.0f} s", flush=True)
        # all MobileNets timed interleaved, per input size (bench takes one size at a time)
        for px in sorted({m["pixels"] for m in mobile}):
            targets = {}
            for m in mobile:
                if m["pixels"] == px:
                    net, onnx_path, isz = nets[m["name"]]
                    targets[f"{m['name']}|torch"] = net
                    targets[f"{m['name']}|onnxruntime"] = onnx_path
            t = bench(targets, isz, batches=(1, 32), repeats=args.repeats,
                      threads=args.bench_threads)
            for row in t.rows:
                name, _, _ = row.name.partition("|")
                m = next(m for m in mobile if m["name"] == name)
                m.setdefault("latency", {}).setdefault(row.runtime, {})[str(row.batch)] = {
                    "min_ms": row.min_ms, "median_ms": row.median_ms}
    result = dict(command="python benchmarks/edge_fashion.py "
                  + " ".join(sys.argv[1:] if argv is None else argv),
                  cpu=cpu_info().to_dict(), threads=args.threads,
                  bench_threads=args.bench_threads, data=data,
                  subset=args.subset, epochs=args.epochs, finetune=args.finetune,
                  shrink=rep.to_dict(), claims=claims, mobilenet=mobile,
                  seconds=round(time.perf_counter() - t0, 1))
    (HERE / "edge_fashion.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot([st.to_dict() for st in rep.stages], mobile, HERE / "edge_fashion.png",
          args.bench_threads)
    print(f"wrote {HERE / 'edge_fashion.json'} and .png in {result['seconds']} s")
    return 0


def _plot(stages: list[dict], mobile: list[dict], path: Path, threads: int) -> None:
    """Accuracy against measured latency (ONNX Runtime, torch) and against mult-adds: the
    resnet20 stages and the MobileNet (alpha, rho) grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    panels = (("onnxruntime", "latency at batch 1, median ms (ONNX Runtime)"),
              ("torch", "latency at batch 1, median ms (torch eager)"),
              ("macs", "mult-adds (M)"))
    for ax, (what, xlabel) in zip(axes, panels):
        def x_of(lat, macs, rt=what):
            if rt == "macs":
                return macs / 1e6
            t = lat.get(rt, {}).get("1")
            return None if t is None else t["median_ms"]
        for s in stages:
            if s["name"] == "pruned":       # before fine-tuning (in the table): off the scale
                continue
            acc = s["accuracy_onnx"] if what == "onnxruntime" else s["accuracy"]
            if what == "macs":
                acc = s["accuracy"] if s["accuracy"] is not None else s["accuracy_onnx"]
            x = x_of(s["latency"], s["macs"])
            if x is None or acc is None:
                continue
            ax.plot(x, acc, "s", color="tab:red", markersize=8,
                    label="resnet20 stages" if s is stages[0] else None)
            ax.annotate(s["name"], (x, acc), fontsize=8, textcoords="offset points",
                        xytext=(6, 6))
        pts = [(x_of(m.get("latency", {}), m["macs"]), m) for m in mobile]
        pts = [(x, m) for x, m in pts if x is not None]
        if pts:
            ax.plot([x for x, _ in pts], [m["accuracy"] for _, m in pts], "o",
                    color="tab:blue", label="MobileNet v1 (alpha, rho)")
            for k, (x, m) in enumerate(pts):
                ax.annotate(f"a={m['alpha']:g} rho={m['rho']:g}", (x, m["accuracy"]),
                            fontsize=7, textcoords="offset points",
                            xytext=(5, -11 if k % 2 else 5))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(fmt)
        if what != "macs":
            ax.xaxis.set_minor_formatter(fmt)
            ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(xlabel + ("" if what == "macs" else f", {threads} thread(s); log")
                      + ("; log" if what == "macs" else ""))
        ax.set_ylabel("FashionMNIST test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("FashionMNIST: resnet20 shrunk (fp32 -> pruned -> fine-tuned -> int8) and "
                 "MobileNet v1's alpha/rho, accuracy against what they cost\n(the pruned stage before "
                 "fine-tuning is left out of the picture: see RESULTS.md)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def replot(json_path: Path = HERE / "edge_fashion.json") -> None:
    r = json.loads(json_path.read_text())
    _plot(r["shrink"]["stages"], r["mobilenet"], json_path.with_suffix(".png"),
          r.get("bench_threads", r["threads"]))


if __name__ == "__main__":
    raise SystemExit(main())
