import pytest
import torch
from torch import nn

from deeparch.errors import CheckpointError, DataError
from deeparch.train import evaluate, predict
from deeparch.train.checkpoint import (load_checkpoint, load_weights, save_checkpoint,
                                       save_weights)
from deeparch.train.metrics import confusion_matrix, metrics_from_probs, tta_views
from deeparch.viz.plots import plot_confusion, plot_history
from trainhelp import blobs, tiny_model


class Fixed(nn.Module):
    """Predicts class = the first pixel's value (0..K-1), with confident logits."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        cls = x[:, 0, 0, 0].round().long().clamp(0, self.k - 1)
        return torch.nn.functional.one_hot(cls, self.k).float() * 10 + self.dummy


def test_evaluate_metrics_and_confusion():
    x = torch.zeros(6, 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor([0., 1, 2, 2, 1, 0])
    y = torch.tensor([0, 1, 2, 1, 1, 2])
    m = evaluate(Fixed(), (x, y), classes=["a", "b", "c"])
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["top5"] == 1.0 and m["top5_k"] == 3
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 2, 1], [1, 0, 1]]
    assert m["per_class_accuracy"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert m["classes"] == ["a", "b", "c"]
    p = metrics_from_probs(torch.softmax(Fixed()(x), 1), y)
    assert p["accuracy"] == m["accuracy"] and p["confusion_matrix"] == m["confusion_matrix"]


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 1]), 2)
    assert cm.tolist() == [[0, 2], [0, 1]]


def test_evaluate_uint8_dataset_with_normalisation():
    ds = blobs(n=16)
    model = tiny_model()
    a = evaluate(model, ds, mean=(0.3,), std=(0.2,))
    b = evaluate(model, ((ds.images.float() / 255 - 0.3) / 0.2, ds.labels))
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_views_counts_and_sizes():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    for crops, n in [("none", 1), ("flip", 2), ("center", 1), ("5crop", 5), ("10crop", 10), ("multi", 22)]:
        views = tta_views(x, crops)
        assert len(views) == n
        assert all(v.shape == x.shape for v in views)
    ten = tta_views(x, "10crop", crop_size=8)          # full-size crops: the image and mirror
    assert torch.equal(ten[0], x) and torch.equal(ten[5], x.flip(-1))
    with pytest.raises(DataError):
        tta_views(x, "12crop")
    with pytest.raises(DataError):
        tta_views(x, "10crop", crop_size=9)


def test_predict_ensemble_averages_softmax():
    ds = blobs(n=8)
    m1, m2 = tiny_model(seed=1), tiny_model(seed=2)
    p1 = predict(m1, ds.images)
    p2 = predict(m2, ds.images)
    pe = predict([m1, m2], ds.images)
    assert pe.shape == (8, 4)
    assert torch.allclose(pe, (p1 + p2) / 2, atol=1e-6)
    assert torch.allclose(pe.sum(1), torch.ones(8), atol=1e-5)
    p10 = predict(m1, ds.images, crops="10crop")
    assert p10.shape == (8, 4)
    e = evaluate([m1, m2], ds, crops="flip")
    assert 0.0 <= e["accuracy"] <= 1.0


def test_weights_and_checkpoint_round_trip(tmp_path):
    model = tiny_model(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", model, opt, {"epoch": 4, "note": "x"})
    other, opt2 = tiny_model(seed=2), None
    opt2 = torch.optim.Adam(other.parameters(), lr=0.1)
    state = load_checkpoint(tmp_path / "c.safetensors", other, opt2)
    assert state["epoch"] == 4 and state["note"] == "x"
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    for k in s1:
        for name in s1[k]:
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))
    save_weights(tmp_path / "w.safetensors", model, {"classes": ["a"]})
    third = tiny_model(seed=3)
    meta = load_weights(tmp_path / "w.safetensors", third)
    assert meta["classes"] == '["a"]'
    assert torch.equal(third[0].weight, model[0].weight)
    load_weights(tmp_path / "c.safetensors", third)       # a checkpoint works too


def test_checkpoint_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.safetensors", model)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad, model)
    save_weights(tmp_path / "w.safetensors", model)
    with pytest.raises(CheckpointError, match="not a deeparch checkpoint"):
        load_checkpoint(tmp_path / "w.safetensors", model)
    from deeparch.pattern import from_pattern
    other = from_pattern("INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-4")
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_weights(tmp_path / "w.safetensors", other)
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_weights(tmp_path / "t.safetensors", model)


def test_plots_write_pngs(tmp_path):
    hist = [{"epoch": i + 1, "loss": 1.0 / (i + 1), "accuracy": 0.5 + i / 10,
             "val_loss": 1.2 / (i + 1), "val_accuracy": 0.45 + i / 10} for i in range(4)]
    p = plot_history(hist, tmp_path / "curves.png", title="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    c = plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "cm.png")
    assert c.stat().st_size > 1000
    with pytest.raises(DataError):
        plot_confusion([[1, 2, 3]], None, tmp_path / "x.png")
    with pytest.raises(DataError):
        plot_history([], tmp_path / "y.png")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cm.png", "curves.png"]
