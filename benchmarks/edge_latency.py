"""Latency of the edge formats, side by side in one process (issue 11, part 2).

For a small ResNet (resnet20, 3x32x32) and the slides' small FashionMNIST CNN
(fashion_cnn, 1x28x28), at batch 1 and 32: torch eager fp32, ONNX Runtime fp32 and
ONNX Runtime int8 (static, QDQ, per-channel, minmax calibration; reduce_range from the
CPU), timed by deeparch.edge.latency (interleaved rounds, min and median), and the file
sizes. Also measured, to decide what deeparch offers:

* ONNX Runtime dynamic int8 (MatMul/Gemm weights only) on the Linear-heavy fashion_cnn;
* PyTorch's own int8 route for Linear layers, torch.ao.quantization.quantize_dynamic,
  against torch fp32 on the same CNN written with plain nn.Linear layers.

The weights are random (latency and size do not depend on their values); the int8
agreement printed is against the fp32 file on the random calibration images.

    python benchmarks/edge_latency.py                  # 2 threads, 30 rounds
    python benchmarks/edge_latency.py --threads 1 --repeats 50 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import deeparch  # noqa: E402
from deeparch.edge.latency import bench  # noqa: E402
from deeparch.edge.cpu import cpu_info  # noqa: E402
from deeparch.edge.onnx import export_onnx, load_onnx  # noqa: E402
from deeparch.edge.quantization import quantize, quantize_dynamic  # noqa: E402

MODELS = [("resnet20", (3, 32, 32)), ("fashion_cnn", (1, 28, 28))]


def plain_fashion_cnn() -> torch.nn.Module:
    """fashion_cnn's layers as stock torch modules (torch.ao maps nn.Linear by type)."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(5408, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    print(f"CPU: {cpu.model} ({cpu.arch}, {cpu.cores} cores, VNNI {cpu.vnni}); torch "
          f"{torch.__version__}, {args.threads} threads, {args.repeats} rounds")
    out: dict = {"cpu": cpu.to_dict(), "threads": args.threads, "models": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in MODELS:
            torch.manual_seed(0)
            model = deeparch.create_model(name, num_classes=10, in_chans=size[0]).eval()
            fp32 = Path(tmp) / f"{name}.onnx"
            ex = export_onnx(model, fp32, size)
            calib = torch.randn(128, *size, generator=torch.Generator().manual_seed(0))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = quantize(fp32, Path(tmp) / f"{name}.int8.onnx", calib, method="minmax")
                qd = quantize_dynamic(fp32, Path(tmp) / f"{name}.dyn8.onnx",
                                      check_data=calib[:32])
            targets = {"torch fp32": model, "ort fp32": load_onnx(fp32),
                       "ort int8": load_onnx(q.path), "ort dyn-int8": load_onnx(qd.path)}
            r = bench(targets, size, batches=(1, 32), repeats=args.repeats,
                      warmup=args.warmup, threads=args.threads)
            print(f"\n{name} {'x'.join(map(str, size))}: ONNX max |err| "
                  f"{ex.max_abs_error:.1e}; int8 {q.size_bytes / 1e6:.2f} MB vs fp32 "
                  f"{q.fp32_size_bytes / 1e6:.2f} MB ({q.size_ratio:.2f}x smaller), "
                  f"reduce_range {q.reduce_range} ({q.reduce_range_reason}), agreement "
                  f"{q.agreement:.1%}, max rel err {q.max_rel_error:.3f}; dynamic int8 "
                  f"{qd.size_ratio:.2f}x smaller, agreement {qd.agreement:.1%}")
            print(r.table())
            ratios = {}
            for b in (1, 32):
                ratios[b] = {
                    "ort_fp32_vs_torch": r.speedup("ort fp32", "torch fp32", b),
                    "ort_int8_vs_torch": r.speedup("ort int8", "torch fp32", b),
                    "ort_int8_vs_ort_fp32": r.speedup("ort int8", "ort fp32", b),
                    "ort_dyn_int8_vs_ort_fp32": r.speedup("ort dyn-int8", "ort fp32", b)}
                print(f"  batch {b}: " + ", ".join(f"{k} {v:.2f}x"
                                                   for k, v in ratios[b].items()))
            out["models"][name] = {"input_size": list(size), "bench": r.to_dict(),
                                   "ratios": ratios, "export": ex.to_dict(),
                                   "int8": q.to_dict(), "dynamic_int8": qd.to_dict()}

    # PyTorch's own int8 for Linear layers (the only torch.ao route that handles this CNN
    # without rewriting it; eager static quantization fails on residual adds)
    torch.manual_seed(0)
    fp = plain_fashion_cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            q8 = torch.ao.quantization.quantize_dynamic(fp, {torch.nn.Linear},
                                                        dtype=torch.qint8)
        except Exception as exc:  # noqa: BLE001 - report, don't stop the measurement
            q8 = None
            print(f"\ntorch.ao dynamic int8 failed: {type(exc).__name__}: {exc}")
    if q8 is not None:
        r = bench({"torch fp32": fp, "torch.ao dyn-int8": q8}, (1, 28, 28), batches=(1, 32),
                  repeats=args.repeats, warmup=args.warmup, threads=args.threads)
        print("\ntorch.ao.quantization.quantize_dynamic (Linear, qint8) on fashion_cnn:")
        print(r.table())
        out["torch_ao_dynamic"] = {"bench": r.to_dict(), "speedup": {
            b: r.speedup("torch.ao dyn-int8", "torch fp32", b) for b in (1, 32)}}
        print("  " + ", ".join(f"batch {b}: {v:.2f}x vs torch fp32"
                               for b, v in out["torch_ao_dynamic"]["speedup"].items()))
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
