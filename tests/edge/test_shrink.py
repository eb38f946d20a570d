"""The shrink pipeline on a small trained run: every stage measured, files that reload,
and the bad inputs refused before anything is written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the edge extra (onnxruntime) is not installed")
pytest.importorskip("torch_pruning", reason="the edge extra (torch-pruning) is not installed")
pytest.importorskip("onnxscript", reason="the edge extra (onnxscript) is not installed")

from deeparch.cli import main  # noqa: E402
from deeparch.edge.pipeline import shrink  # noqa: E402
from deeparch.errors import EdgeError  # noqa: E402
from deeparch.train.run import train  # noqa: E402

PATTERN = "INPUT(8x8x1) -> CONV3-16 -> BN -> RELU -> CONV3-32 -> BN -> RELU -> POOL2 -> FC-10"
ROOT = Path(__file__).resolve().parents[2]
FAST = dict(repeats=2, batches=(1, 4), log=None, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shrink") / "cnn"
    train(PATTERN, "digits", out, epochs=4, subset=600, log=None, progress=False)
    return out


@pytest.fixture(scope="module")
def shrunk(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("shrunk") / "edge"
    return shrink(run, out, prune=0.5, finetune=2, quantize="int8", calibration=64, **FAST), out


def test_every_stage_is_measured(shrunk):
    report, out = shrunk
    assert [s.name for s in report.stages] == ["fp32", "pruned", "finetuned", "int8"]
    fp32, pruned, tuned, int8 = report.stages
    assert 0.40 <= pruned.params / fp32.params <= 0.60          # half the parameters
    assert pruned.macs < fp32.macs and tuned.params == pruned.params
    assert int8.params == tuned.params and int8.accuracy is None
    for s in report.stages:
        for rt in (("onnxruntime",) if s.name == "int8" else ("torch", "onnxruntime")):
            for b in ("1", "4"):
                t = s.latency[rt][b]
                assert 0 < t["min_ms"] <= t["median_ms"]
        if s.name != "int8":       # one network, two runtimes: the same predictions
            assert abs(s.accuracy - s.accuracy_onnx) <= 0.5
    assert fp32.accuracy > 60 and int8.accuracy_onnx > 50
    assert int8.size_bytes < tuned.onnx_bytes / 1.5       # a 5K-param net: headers weigh
    assert report.cpu["model"] and report.threads >= 1


def test_the_files_reload_to_the_reported_numbers(shrunk):
    from deeparch.edge.onnx import load_onnx
    from deeparch.edge.pruning import load_pruned
    from deeparch.train.run import run_data

    report, out = shrunk
    saved = json.loads((out / "report.json").read_text())
    assert saved["format"] == "deeparch-shrink" and len(saved["stages"]) == 4
    assert "finetuned" in (out / "report.txt").read_text()
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = run_data(report.run)
    x, y = data.normalised("test"), torch.as_tensor(data.test.labels)
    net, base = load_pruned(out / "finetuned.safetensors")
    with torch.inference_mode():
        acc = 100.0 * int((net.eval()(x).argmax(1) == y).sum()) / len(y)
    assert acc == pytest.approx(report.stage("finetuned").accuracy, abs=1e-6)
    assert sum(p.numel() for p in net.parameters()) == report.stage("finetuned").params
    q = load_onnx(out / "int8.onnx")
    acc8 = 100.0 * int((torch.as_tensor(q(x.numpy())).argmax(1) == y).sum()) / len(y)
    assert acc8 == pytest.approx(report.stage("int8").accuracy_onnx, abs=1e-6)


def test_distilled_finetuning_from_a_teacher(run, tmp_path):
    report = shrink(run, tmp_path / "d", prune=0.3, finetune=1, teacher=run, quantize=None,
                    **FAST)
    assert [s.name for s in report.stages] == ["fp32", "pruned", "finetuned"]
    assert "distilled" in " ".join(report.stage("finetuned").notes)
    assert not (tmp_path / "d" / "int8.onnx").exists()


@pytest.mark.parametrize("kw,words", [
    (dict(prune=1.5), "between 0 and 1"),
    (dict(prune=0.0), "between 0 and 1"),
    (dict(prune=True), "between 0 and 1"),
    (dict(prune=float("nan")), "between 0 and 1"),
    (dict(finetune=2), "applies to a pruned network"),
    (dict(prune=0.5, finetune=-1), "whole number"),
    (dict(quantize="int4"), "quantize must be"),
    (dict(quantize=None), "nothing to do"),
    (dict(calibration=0), "calibration"),
    (dict(qat=1, quantize=None, prune=0.5), "needs quantize"),
])
def test_bad_settings_write_nothing(run, tmp_path, kw, words):
    out = tmp_path / "never"
    with pytest.raises(EdgeError, match=words):
        shrink(run, out, **{"quantize": "int8", **kw}, **FAST)
    assert not out.exists()


def test_a_folder_shrink_did_not_write_is_never_touched(run, tmp_path, shrunk):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text("the user's own file")
    with pytest.raises(EdgeError, match="not written by deeparch shrink"):
        shrink(run, mine, quantize="int8", **FAST)
    assert (mine / "report.json").read_text() == "the user's own file"
    _, out = shrunk
    with pytest.raises(EdgeError, match="--force|force=True"):
        shrink(run, out, quantize="int8", **FAST)


def test_force_replaces_only_shrinks_files(run, tmp_path):
    out = tmp_path / "again"
    shrink(run, out, quantize="int8", calibration=32, **FAST)
    (out / "notes.txt").write_text("keep me")
    r = shrink(run, out, quantize="int8", calibration=32, force=True, **FAST)
    assert (out / "notes.txt").read_text() == "keep me"
    assert [s.name for s in r.stages] == ["fp32", "int8"]


def test_quantization_aware_finetuning_before_int8(run, tmp_path):
    report = shrink(run, tmp_path / "q", quantize="int8", qat=1, calibration=32, **FAST)
    int8 = report.stage("int8")
    assert "1 epoch(s) of quantization-aware fine-tuning" in int8.notes
    assert any(n.startswith("reduce_range=") for n in int8.notes)
    assert int8.accuracy_onnx > 50 and not (tmp_path / "q" / "qat.onnx").exists()


def test_a_teacher_of_other_classes_is_refused(run, tmp_path):
    import numpy as np
    from sklearn.datasets import load_digits
    d = load_digits()
    five = tmp_path / "five.npz"           # digits folded into 5 classes
    np.savez(five, images=(d.images * 16).clip(0, 255).astype(np.uint8)[:, None],
             labels=(d.target % 5).astype(np.int64))
    teacher = tmp_path / "teacher5"
    train("INPUT(8x8x1) -> CONV3-4 -> RELU -> FC-5", str(five), teacher, epochs=1,
          subset=100, log=None, progress=False)
    with pytest.raises(EdgeError, match="5 classes.*10"):
        shrink(run, tmp_path / "t", prune=0.3, finetune=1, teacher=teacher, **FAST)
    with pytest.raises(EdgeError, match="no teacher"):
        shrink(run, tmp_path / "t", prune=0.3, finetune=1, teacher=tmp_path / "nope", **FAST)
    with pytest.raises(EdgeError, match="give finetune epochs"):
        shrink(run, tmp_path / "t", prune=0.3, teacher=run, **FAST)
    assert not (tmp_path / "t").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deeparch", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ})


def test_cli_shrink_and_its_bad_flags(run, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["shrink", str(run), "--quantize", "int8", "--calibration", "32",
                 "--repeats", "2", "--batch", "1,2", "-o", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "int8" in text and "report:" in text
    for bad in (["--prune", "2"], ["--batch", "0"], ["--batch", "x"], ["--finetune", "3"]):
        r = _cli("shrink", str(run), "-o", str(tmp_path / "bad"), *bad)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("deeparch: error: ") and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / "bad").exists()
    r = _cli("shrink", str(tmp_path / "no-run"), "-o", str(tmp_path / "bad"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()
