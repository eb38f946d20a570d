"""Latency benchmark: every target and batch timed in interleaved rounds, threads applied
and restored, bad inputs refused; `deeparch bench` over it."""
import json

import pytest
import torch

pytest.importorskip("onnx", reason="the edge extra (onnx) is needed for ONNX export")
pytest.importorskip("onnxscript", reason="the edge extra (onnxscript) is needed for dynamo export")
pytest.importorskip("onnxruntime", reason="the edge extra (onnxruntime) runs the .onnx targets")

import deeparch  # noqa: E402
from deeparch.cli import main  # noqa: E402
from deeparch.edge.latency import BenchResult, bench  # noqa: E402
from deeparch.edge.onnx import export_onnx, load_onnx  # noqa: E402
from deeparch.errors import EdgeError  # noqa: E402

PATTERN = "INPUT(12x12x1) -> CONV3-4 -> RELU -> FC-3"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = deeparch.from_pattern(PATTERN)
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    export_onnx(model, path, (1, 12, 12), check=False)
    return model, path


class Recorder(torch.nn.Module):
    """Records the order of its calls, its mode and torch's thread count at each call."""

    def __init__(self, tag, log):
        super().__init__()
        self.tag, self.log = tag, log
        self.fc = torch.nn.Linear(144, 3)

    def forward(self, x):
        self.log.append((self.tag, x.shape[0], self.training, torch.get_num_threads(),
                         torch.is_inference_mode_enabled()))
        return self.fc(x.flatten(1))


def test_rows_for_every_target_and_batch(tiny):
    model, path = tiny
    model.train()
    r = bench({"torch": model, "ort": load_onnx(path), "file": str(path)}, (1, 12, 12),
              batches=(1, 4), repeats=3, warmup=1, threads=1)
    assert isinstance(r, BenchResult) and len(r.rows) == 6
    assert [(x.name, x.batch) for x in r.rows] == [
        ("torch", 1), ("ort", 1), ("file", 1), ("torch", 4), ("ort", 4), ("file", 4)]
    assert [x.runtime for x in r.rows[:3]] == ["torch", "onnxruntime", "onnxruntime"]
    for row in r.rows:
        assert 0 < row.min_ms <= row.median_ms
        assert row.per_image_ms == pytest.approx(row.median_ms / row.batch)
    assert model.training                                   # its mode restored
    d = json.loads(json.dumps(r.to_dict()))
    assert d["threads"] == 1 and d["input_size"] == [1, 12, 12] and d["repeats"] == 3
    assert {"model", "arch", "features", "vnni"} <= set(d["cpu"])
    table = r.table()
    assert "ms/image" in table and "1 thread" in table and table.count("\n") == 7
    assert r.speedup("ort", "torch", 4) > 0


def test_rounds_are_interleaved_in_eval_mode_with_the_threads(tiny):
    log = []
    a, b = Recorder("a", log), Recorder("b", log)
    before = torch.get_num_threads()
    bench({"a": a, "b": b}, (1, 12, 12), batches=(1, 2), repeats=2, warmup=1,
          threads=before + 1)
    assert torch.get_num_threads() == before                 # restored
    timed = [(t, n) for t, n, *_ in log[4:]]                 # after 4 warm-up calls
    assert timed == [("a", 1), ("b", 1), ("a", 2), ("b", 2)] * 2
    assert all(not training and threads == before + 1 and inference
               for _, _, training, threads, inference in log)


@pytest.mark.parametrize("kw,match", [
    ({"batches": (0,)}, "batch size"),
    ({"batches": (1, -2)}, "batch size"),
    ({"batches": ()}, "at least one batch"),
    ({"repeats": 0}, "repeats"),
    ({"warmup": -1}, "warmup"),
    ({"threads": 0}, "threads"),
])
def test_bad_settings(tiny, kw, match):
    model, _ = tiny
    with pytest.raises(EdgeError, match=match):
        bench({"m": model}, (1, 12, 12), **kw)


def test_bad_targets(tiny, tmp_path):
    model, path = tiny
    with pytest.raises(EdgeError, match="at least one target"):
        bench({}, (1, 12, 12))
    with pytest.raises(EdgeError, match="is a int"):
        bench({"x": 3}, (1, 12, 12))
    with pytest.raises(EdgeError, match="not an .onnx file"):
        bench({"x": str(tmp_path / "m.pt")}, (1, 12, 12))
    with pytest.raises(EdgeError, match="does not exist"):
        bench({"x": tmp_path / "none.onnx"}, (1, 12, 12))
    with pytest.raises(EdgeError, match="fails on a batch of 1"):
        bench({"m": model}, (1, 20, 20), repeats=1)         # the model's wrong size
    with pytest.raises(EdgeError, match="takes inputs of size 1,12,12"):
        bench({"m": str(path)}, (1, 20, 20), repeats=1)


# --------------------------------------------------------------------------- CLI

def test_cli_bench_model_torch_and_onnxruntime(capsys):
    assert main(["bench", PATTERN, "--batch", "1,2", "--repeats", "2", "--warmup", "1",
                 "--threads", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [(r["runtime"], r["batch"]) for r in d["rows"]] == [
        ("torch", 1), ("onnxruntime", 1), ("torch", 2), ("onnxruntime", 2)]
    assert d["threads"] == 1


def test_cli_bench_file(tiny, capsys):
    _, path = tiny
    assert main(["bench", str(path), "--batch", "3", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "tiny.onnx" in out and "onnxruntime" in out and "ms/image" in out


@pytest.mark.parametrize("argv,match", [
    (["bench", "{tiny}", "--batch", "0"], "--batch"),
    (["bench", "{tiny}", "--batch", "a,b"], "--batch"),
    (["bench", "{tiny}", "--repeats", "0"], "--repeats"),
    (["bench", "{tiny}", "--threads", "0"], "--threads"),
    (["bench", "{tmp}/none.onnx"], "does not exist"),
    (["bench", "{tmp}/bad.onnx"], "not a valid ONNX model"),
    (["bench", "no_such_model"], "no_such_model"),
])
def test_cli_bench_bad_inputs(tiny, tmp_path, capsys, argv, match):
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    argv = [a.replace("{tiny}", str(tiny[1])).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeparch: error: ") and match in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
