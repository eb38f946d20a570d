"""Int8 by ONNX Runtime: the report is honest (agreement, error, sizes, why reduce_range),
bad calibration data is refused before any work, and our QAT fine-tuning returns a plain
model that int8 quantization hurts less than plain PTQ."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx", reason="the edge extra (onnx) is needed for ONNX export")
pytest.importorskip("onnxscript", reason="the edge extra (onnxscript) is needed for dynamo export")
pytest.importorskip("onnxruntime", reason="the edge extra (onnxruntime) quantizes the files")

import deeparch  # noqa: E402
from deeparch.edge import cpu as cpumod  # noqa: E402
from deeparch.edge import (export_onnx, load_onnx, qat_finetune, quantize,  # noqa: E402
                           quantize_dynamic)
from deeparch.errors import EdgeError  # noqa: E402


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    torch.manual_seed(0)
    model = deeparch.create_model("resnet20", num_classes=10).eval()
    path = folder / "r20.onnx"
    export_onnx(model, path, (3, 32, 32), check=False)
    x = torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return path, x


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_is_close_to_fp32_and_smaller(tmp_path, resnet, method):
    path, x = resnet
    out = tmp_path / "r20.int8.onnx"
    with warnings.catch_warnings():
        # a random network's logits are near ties, so a few top-1 flips (a warning) can happen
        warnings.simplefilter("ignore")
        r = quantize(path, out, x, method=method)            # reduce_range from this CPU
    assert r.path == str(out) and r.method == method and r.per_channel
    assert r.reduce_range is cpumod.reduce_range() and "VNNI" in r.reduce_range_reason
    assert r.size_bytes == out.stat().st_size and r.fp32_size_bytes == path.stat().st_size
    assert r.size_ratio > 2.5                                # int8 weights
    # the saturation of 8-bit weights without VNNI gave relative errors of 0.15-0.18
    assert r.agreement >= 0.75 and r.n_check == 48
    assert 0 < r.max_rel_error < 0.1
    om = load_onnx(out)
    assert om.quantized and om.input_size == (3, 32, 32)
    assert om(x[:3]).shape == (3, 10)
    assert _files(tmp_path) == [out.name]
    assert set(r.to_dict()) >= {"path", "method", "agreement", "max_rel_error", "size_ratio"}


@pytest.mark.parametrize("flags,expect", [("avx2 fma", True), ("avx2 avx512f avx512_vnni", False)])
def test_reduce_range_follows_the_cpu(tmp_path, resnet, monkeypatch, flags, expect):
    path, x = resnet
    monkeypatch.setattr(cpumod, "cpu_info",
                        lambda: cpumod.CPU("fake", "x86_64", 2, frozenset(flags.split())))
    r = quantize(path, tmp_path / "q.onnx", x[:8], check=False)
    assert r.reduce_range is expect and "VNNI" in r.reduce_range_reason
    assert r.agreement is None


@pytest.mark.parametrize("data,match", [
    (np.zeros((0, 3, 32, 32), np.float32), "empty"),
    (np.zeros((4, 1, 32, 32), np.float32), "size 1,32,32"),
    (np.zeros((4, 3, 28, 28), np.float32), "size 3,28,28"),
    (np.full((4, 3, 32, 32), np.nan, np.float32), "NaN"),
    (np.zeros((3, 32, 32), np.float32), "N, C, H, W"),
    ("images", "float tensor"),
])
def test_bad_calibration_is_refused_before_any_work(tmp_path, resnet, data, match):
    path, _ = resnet
    with pytest.raises(EdgeError, match=match):
        quantize(path, tmp_path / "q.onnx", data)
    assert _files(tmp_path) == []


def test_bad_arguments(tmp_path, resnet):
    path, x = resnet
    with pytest.raises(EdgeError, match="unknown calibration method"):
        quantize(path, tmp_path / "q.onnx", x, method="kl")
    with pytest.raises(EdgeError, match="overwrite its fp32 input"):
        quantize(path, path, x)
    with pytest.raises(EdgeError, match="does not exist"):
        quantize(tmp_path / "none.onnx", tmp_path / "q.onnx", x)
    quantize(path, tmp_path / "q.onnx", x[:4], check=False)
    with pytest.raises(EdgeError, match="already quantized"):
        quantize(tmp_path / "q.onnx", tmp_path / "q2.onnx", x)
    assert _files(tmp_path) == ["q.onnx"]


def test_dynamic_int8_quantizes_linear_layers(tmp_path):
    torch.manual_seed(0)
    model = deeparch.from_pattern("INPUT(8x8x1) -> FC-512 -> RELU -> FC-512 -> RELU -> FC-10")
    fp32 = tmp_path / "mlp.onnx"
    export_onnx(model, fp32, (1, 8, 8), check=False)
    r = quantize_dynamic(fp32, tmp_path / "mlp.int8.onnx", reduce_range=True)
    assert r.method == "dynamic" and r.size_ratio > 3 and r.agreement >= 0.9
    assert load_onnx(r.path).quantized
    assert r.max_rel_error < 0.1


# --------------------------------------------------------------------------- QAT

def _outlier_model(seed):
    """A conv whose every filter has one large weight on a constant input channel (cancelled
    by the bias) and small weights on the informative channel: per-channel int8 rounds the
    small weights to zero, so plain PTQ predicts one class; fine-tuning through the rounding
    can learn around it."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        w = m[0].weight
        w[:, 0] = torch.randn(8, 3, 3) * 0.01
        w[:, 1] = 0.0
        w[:, 1, 1, 1] = 4.0
        m[0].bias.fill_(-3.9)
        m[4].weight.mul_(30)
    return m.eval()


def _data(m, seed):
    x = torch.randn(512, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[:, 1] = 1.0
    with torch.no_grad():
        d = m(x)
        m[4].bias[1] -= (d[:, 1] - d[:, 0]).median()       # balanced classes
        y = m(x).argmax(1)
    return x, y


def _int8_accuracy(model, x, y, folder, name):
    export_onnx(model, folder / f"{name}.onnx", (2, 8, 8), check=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = quantize(folder / f"{name}.onnx", folder / f"{name}.int8.onnx", x, reduce_range=True)
    acc = float((load_onnx(r.path)(x).argmax(1) == y.numpy()).mean())
    return acc, r, caught


def test_qat_beats_plain_ptq_on_a_model_that_int8_breaks(tmp_path):
    m = _outlier_model(0)
    x, y = _data(m, 0)
    assert 0.4 < float(y.float().mean()) < 0.6
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ptq, report, caught = _int8_accuracy(m, x, y, tmp_path, "ptq")
    assert ptq < 0.6                                         # int8 broke it
    assert any("qat_finetune" in str(w.message) and "agrees with fp32 on only" in str(w.message)
               for w in caught)                              # and said so
    q = qat_finetune(m, x, y, epochs=10, lr=5e-3, batch_size=32, reduce_range=True, seed=0)
    # the input model is untouched; the result is a plain module with the same state keys
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert type(q) is nn.Sequential and set(q.state_dict()) == set(before)
    assert not any(hasattr(mod, "parametrizations") for mod in q.modules())
    assert all(not mod._forward_pre_hooks for mod in q.modules())
    assert not q.training
    qat, _, _ = _int8_accuracy(q, x, y, tmp_path, "qat")
    assert qat > ptq + 0.2                                    # measured: 0.50 -> 0.81


def test_qat_is_deterministic_and_logs():
    m = _outlier_model(1)
    x, y = _data(m, 1)
    lines = []
    a = qat_finetune(m, x[:128], y[:128], epochs=2, batch_size=32, reduce_range=False,
                     log=lines.append)
    b = qat_finetune(m, x[:128], y[:128], epochs=2, batch_size=32, reduce_range=False)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert len(lines) == 2 and "8-bit weights" in lines[0]


def test_qat_bad_inputs():
    m = _outlier_model(0)
    x = torch.zeros(4, 2, 8, 8)
    with pytest.raises(EdgeError, match="one class index per image"):
        qat_finetune(m, x, torch.zeros(3))
    with pytest.raises(EdgeError, match="non-empty"):
        qat_finetune(m, x[:0], torch.zeros(0))
    with pytest.raises(EdgeError, match="NaN"):
        qat_finetune(m, x * float("nan"), torch.zeros(4))
    with pytest.raises(EdgeError, match="epochs"):
        qat_finetune(m, x, torch.zeros(4), epochs=0)
    with pytest.raises(EdgeError, match="no Conv or Linear"):
        qat_finetune(nn.Flatten(), x, torch.zeros(4))
