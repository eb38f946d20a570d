"""ONNX export: several zoo families round-trip through ONNX Runtime; the file is written
atomically; unexportable models, bad files and a missing onnxruntime are clear errors."""
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx", reason="the edge extra (onnx) is needed for ONNX export")
pytest.importorskip("onnxscript", reason="the edge extra (onnxscript) is needed for dynamo export")
pytest.importorskip("onnxruntime", reason="the edge extra (onnxruntime) runs the exported files")

import deeparch  # noqa: E402
from deeparch.cli import main  # noqa: E402
from deeparch.edge import export_onnx, load_onnx  # noqa: E402
from deeparch.edge import onnx as onnxmod  # noqa: E402
from deeparch.errors import EdgeError, MissingDependencyError  # noqa: E402


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name,kw,size", [
    ("lenet5", {}, (1, 32, 32)),                                   # plain
    ("resnet20", {}, (3, 32, 32)),                                 # residual adds
    ("mobilenet_v1_025", {}, (3, 32, 32)),                         # depthwise convolutions
    ("squeezenet1_1", {}, (3, 32, 32)),                            # concatenation (fire modules)
])
def test_zoo_families_match_torch_in_onnxruntime(tmp_path, name, kw, size):
    torch.manual_seed(0)
    model = deeparch.create_model(name, num_classes=10, in_chans=size[0], **kw).eval()
    path = tmp_path / f"{name}.onnx"
    r = export_onnx(model, path, size)
    assert r.exporter == "dynamo" and r.path == str(path) and r.dynamic_batch
    assert r.size_bytes == path.stat().st_size > 0 and r.opset >= 17
    assert r.input_names == ["input"] and r.output_names == ["logits"]
    assert r.max_abs_error is not None and r.max_abs_error < 1e-4
    assert _files(tmp_path) == [path.name]                   # no temporary file left
    om = load_onnx(path, threads=1)
    assert om.input_size == size and not om.quantized and om.path == str(path)
    assert om.size_bytes == r.size_bytes
    for batch in (1, 5):                                     # the batch dimension is dynamic
        x = torch.randn(batch, *size)
        with torch.inference_mode():
            ref = model(x).numpy()
        got = om(x)
        assert isinstance(got, np.ndarray) and got.shape == (batch, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(om(x.numpy()), got)       # numpy in, same answer
    assert r.to_dict()["input_size"] == list(size)


def test_training_mode_is_restored_and_a_pattern_exports(tmp_path):
    model = deeparch.from_pattern("INPUT(28x28x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10")
    model.train()
    r = export_onnx(model, tmp_path / "p.onnx", (1, 28, 28), dynamic_batch=False)
    assert model.training                                    # left as it was found
    om = load_onnx(r.path)
    assert om.batch == 1
    with pytest.raises(EdgeError, match="batches of 1"):
        om(np.zeros((2, 1, 28, 28), np.float32))


class SVD(nn.Module):
    """Something no ONNX exporter can write: a singular value decomposition."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.linalg.svd(self.conv(x))[1].flatten(1)


def test_the_file_holds_the_graph_and_weights_not_the_exporters_debug_records(tmp_path):
    import onnx
    m = deeparch.create_model("resnet20", num_classes=10, in_chans=1)
    r = export_onnx(m, tmp_path / "r.onnx", (1, 16, 16))
    proto = onnx.load(str(tmp_path / "r.onnx"))
    assert not any(len(n.metadata_props) or n.doc_string for n in proto.graph.node)
    weights = sum(p.numel() for p in m.parameters()) * 4
    assert weights < r.size_bytes < 1.05 * weights + 20_000     # the dynamo records: +9%
    x = torch.randn(2, 1, 16, 16)
    with torch.inference_mode():
        ref = m.eval()(x).numpy()
    assert np.allclose(load_onnx(tmp_path / "r.onnx")(x), ref, atol=1e-5)


def test_unexportable_operation_is_named_and_nothing_is_written(tmp_path):
    with pytest.raises(EdgeError, match="svd") as e:
        export_onnx(SVD(), tmp_path / "svd.onnx", (3, 8, 8))
    assert "\n" not in str(e.value)
    assert _files(tmp_path) == []


def test_an_existing_file_is_kept_when_the_export_fails(tmp_path):
    old = tmp_path / "m.onnx"
    old.write_bytes(b"previous")
    with pytest.raises(EdgeError):
        export_onnx(SVD(), old, (3, 8, 8))
    assert old.read_bytes() == b"previous" and _files(tmp_path) == ["m.onnx"]


def test_a_model_at_the_wrong_input_size_is_refused(tmp_path):
    model = deeparch.create_model("lenet5", num_classes=10)
    with pytest.raises(EdgeError, match="does not run on an input of size 1,28,28"):
        export_onnx(model, tmp_path / "l.onnx", (1, 28, 28))
    with pytest.raises(EdgeError, match="nn.Module"):
        export_onnx("lenet5", tmp_path / "l.onnx", (1, 32, 32))
    with pytest.raises(EdgeError, match="folder"):
        export_onnx(model, tmp_path, (1, 32, 32))
    assert _files(tmp_path) == []


def test_too_big_for_one_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(onnxmod, "MAX_SINGLE_FILE_BYTES", 1000)
    with pytest.raises(EdgeError, match="more than one ONNX file can hold"):
        export_onnx(deeparch.create_model("lenet5", num_classes=10), tmp_path / "l.onnx",
                    (1, 32, 32))
    assert _files(tmp_path) == []


def test_legacy_fallback_is_said(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("No ONNX function found for <OpOverload(op='aten.fake_op', "
                           "overload='default')>")
    monkeypatch.setattr(onnxmod, "_export_dynamo", broken)
    r = export_onnx(deeparch.create_model("lenet5", num_classes=10), tmp_path / "r.onnx",
                    (1, 32, 32))
    assert r.exporter == "legacy" and "aten.fake_op" in r.notes[0]
    assert r.max_abs_error < 1e-4
    assert load_onnx(r.path)(np.zeros((3, 1, 32, 32), np.float32)).shape == (3, 10)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    torch.manual_seed(0)
    export_onnx(deeparch.from_pattern("INPUT(12x12x1) -> CONV3-4 -> RELU -> FC-3"), path,
                (1, 12, 12))
    return path


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", b"\x08\x07" * 10, None])
def test_bad_files_are_one_sentence(tmp_path, small_onnx, content):
    bad = tmp_path / "bad.onnx"
    if content is None:                       # truncated: the first half of a real file
        data = small_onnx.read_bytes()
        content = data[:len(data) // 2]
    bad.write_bytes(content)
    with pytest.raises(EdgeError) as e:
        load_onnx(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_missing_file_folder_and_bad_inputs(tmp_path, small_onnx):
    with pytest.raises(EdgeError, match="does not exist"):
        load_onnx(tmp_path / "none.onnx")
    with pytest.raises(EdgeError, match="folder"):
        load_onnx(tmp_path)
    with pytest.raises(EdgeError, match="threads"):
        load_onnx(small_onnx, threads=0)
    om = load_onnx(small_onnx)
    with pytest.raises(EdgeError, match="takes inputs of size 1,12,12"):
        om(np.zeros((2, 3, 12, 12), np.float32))
    with pytest.raises(EdgeError, match="N, C, H, W"):
        om(np.zeros((1, 12, 12), np.float32))
    with pytest.raises(EdgeError, match="float array"):
        om("a string")


def test_missing_onnxruntime_is_a_missing_dependency(small_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)    # import onnxruntime fails
    with pytest.raises(MissingDependencyError, match="deeparch\\[edge\\]"):
        load_onnx(small_onnx)


def test_missing_onnxscript_is_a_missing_dependency(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingDependencyError, match="onnxscript.*deeparch\\[edge\\]"):
        export_onnx(SVD(), tmp_path / "m.onnx", (3, 8, 8))
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------- CLI

def test_cli_export_model_and_pattern(tmp_path, capsys):
    out = tmp_path / "r.onnx"
    assert main(["export", "lenet5", "-o", str(out), "--input-size", "1,32,32"]) == 0
    assert "dynamo exporter" in capsys.readouterr().out
    assert load_onnx(out).input_size == (1, 32, 32)
    out2 = tmp_path / "p.onnx"
    assert main(["export", "INPUT(16x16x1) -> CONV3-4 -> RELU -> FC-2", "-o", str(out2),
                 "--json"]) == 0
    import json
    d = json.loads(capsys.readouterr().out)
    assert d["input_size"] == [1, 16, 16] and d["path"] == str(out2)


def test_cli_export_a_run(tmp_path, capsys):
    from deeparch.train.run import train
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8),
             y_train=rng.integers(0, 2, 40), x_test=rng.integers(0, 256, (10, 8, 8, 1),
                                                                 dtype=np.uint8),
             y_test=rng.integers(0, 2, 10))
    run = tmp_path / "run"
    train("INPUT(8x8x1) -> CONV3-4 -> RELU -> FC-2", str(data), str(run), epochs=1,
          batch_size=20, progress=False, log=lambda s: None)
    out = tmp_path / "run.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 0
    assert load_onnx(out).input_size == (1, 8, 8)


@pytest.mark.parametrize("argv,match", [
    (["export", "no_such_model", "-o", "{tmp}/x.onnx"], "no_such_model"),
    (["export", "lenet5", "-o", "{tmp}/x.onnx", "--input-size", "1,28,28"], "does not run"),
    (["export", "lenet5", "-o", "{tmp}/x.txt"], ".onnx"),
    (["export", "lenet5", "-o", "{tmp}/x.onnx", "--input-size", "abc"], "not numeric"),
])
def test_cli_export_bad_inputs(tmp_path, capsys, argv, match):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeparch: error: ") and match in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _files(tmp_path) == []
