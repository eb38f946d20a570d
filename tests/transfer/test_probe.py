"""deeparch.transfer.probe and `deeparch probe`: linear probes at the cut points of frozen
networks on the embedded digits (resnet20 at 32x32 on a subset, small sequential nets)."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from PIL import Image
from torch import nn

import deeparch
from deeparch.cli import main
from deeparch.data import channel_stats, subset
from deeparch.errors import DeeparchError, UnknownLayerError
from deeparch.train.run import load_data, train
from deeparch.transfer import ProbeResult, cut_points, probe


class Noise(nn.Module):
    """Features that know nothing of the image: fresh noise for every image."""

    def __init__(self, size: int = 64):
        super().__init__()
        self.size = size
        self.g = torch.Generator().manual_seed(123)

    def forward(self, x):
        return torch.randn(len(x), self.size, generator=self.g)


@pytest.fixture(scope="module")
def digits():
    tr, te, _ = load_data("digits")
    return tr, te


@pytest.fixture(scope="module")
def small(digits):
    tr, te = digits
    return subset(tr, 240, seed=0), subset(te, 120, seed=0)


def test_pixels_are_worth_more_than_noise(digits):
    """An identity cut (the pixels themselves) is linearly separable digits; noise is chance."""
    tr, te = digits
    net = nn.Sequential(OrderedDict(pixels=nn.Identity(), noise=Noise()))
    r = probe(net, tr, te, pool="flatten")
    assert [row.cut for row in r.rows] == ["pixels", "noise"]
    pixels, noise = r.rows
    assert pixels.output_shape == (1, 8, 8) and pixels.feature_size == 64
    assert pixels.pooling == "flatten" and noise.pooling == "none"
    assert pixels.frozen_params == 0 and pixels.trainable_params == 64 * 10 + 10
    assert pixels.test_accuracy > 0.9 and pixels.train_accuracy >= pixels.test_accuracy - 0.05
    assert noise.test_accuracy < 0.25
    assert r.best.cut == "pixels"
    # the default normalisation: the training images' channel statistics
    mean, std = channel_stats(tr)
    assert r.preprocess.mean == pytest.approx(mean) and r.preprocess.std == pytest.approx(std)
    # global average pooling of the 1x8x8 pixels leaves one number: far less separable
    avg = probe(net, tr, te, at="pixels")
    assert avg.rows[0].feature_size == 1 and avg.rows[0].pooling == "global average"
    assert avg.rows[0].test_accuracy < pixels.test_accuracy - 0.3


def test_resnet20_every_cut_point_once(small):
    tr, te = small
    torch.manual_seed(0)
    model = deeparch.create_model("resnet20", num_classes=10)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = probe(model, tr, te, image_size=32, epochs=40)
    names = [row.cut for row in r.rows]
    assert names == ["features.stem.conv1", "features.stem.bn1", "features.stem",
                     "features.stage1.0", "features.stage1.1", "features.stage1",
                     "features.stage2.0", "features.stage2.1", "features.stage2",
                     "features.stage3.0", "features.stage3.1", "features.stage3", "head.fc"]
    assert set(names) <= set(cut_points(model))
    assert any("head.pool, head.flatten" in n and "features.stage3" in n for n in r.notes)
    assert r.input_size == (3, 32, 32)
    assert any("grey images repeated into 3" in n for n in r.notes)
    rows = dict(zip(names, r.rows))
    assert rows["features.stage3"].frozen_params == sum(p.numel() for p in
                                                        model.features.parameters())
    assert rows["features.stage2.0"].output_shape == (32, 16, 16)
    assert rows["features.stage3"].feature_size == 64
    assert rows["features.stage3"].trainable_params == 64 * 10 + 10
    frozen = [row.frozen_params for row in r.rows]
    assert frozen == sorted(frozen)
    for row in r.rows:
        assert 0.0 <= row.test_accuracy <= 1.0 and row.weight_decay > 0
    # the network is left as it was: weights, buffers (batch-norm statistics) and mode
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and model.training
    # the table says how maps became vectors
    text = r.table()
    assert "global-average-pooled" in text and "features.stage2.1" in text

    # chosen points: stage names / numbers in network order; the same seed, the same numbers
    a = probe(model, tr, te, image_size=32, at=[4, "stage1"], epochs=50)
    b = probe(model, tr, te, image_size=32, at=["stage1", "features.stage3"], epochs=50)
    assert [row.cut for row in a.rows] == ["features.stage1", "features.stage3"]
    strip = [{k: v for k, v in row.to_dict().items() if k != "seconds"} for row in a.rows]
    assert strip == [{k: v for k, v in row.to_dict().items() if k != "seconds"}
                     for row in b.rows]


def test_flatten_is_capped(small):
    tr, te = small
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 16, 3, padding=1), relu=nn.ReLU()))
    r = probe(net, tr, te, pool="flatten", max_features=256, at="conv")
    row = r.rows[0]
    assert row.output_shape == (16, 8, 8) and row.pooling == "average to 4x4"
    assert row.feature_size == 256 and row.frozen_params == 16 * 9 + 16


def test_unknown_cut_names_the_valid_ones(small, tmp_path, capsys):
    tr, te = small
    net = deeparch.from_pattern("INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> FC-10")
    with pytest.raises(UnknownLayerError, match="conv1, relu1, pool1"):
        probe(net, tr, te, at=["conv9"])
    plot = tmp_path / "p.png"
    code = main(["probe", "INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> FC-10", "--data",
                 "digits", "--at", "relu1,conv9", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("deeparch: error: ") and err.count("\n") == 1
    assert "conv9" in err and "relu1" in err
    code = main(["probe", "INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> FC-10", "--data",
                 "no_such_data_set", "--plot", str(plot)])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not plot.exists() and not list(tmp_path.glob(".*deeparch-tmp"))
    with pytest.raises(DeeparchError):
        probe(net, tr, te, pool="max")
    with pytest.raises(DeeparchError):
        probe(net, tr, te, epochs=0)


def test_plot_and_dict(small, tmp_path):
    tr, te = small
    net = nn.Sequential(OrderedDict(pixels=nn.Identity(), noise=Noise(),
                                    fc=nn.Linear(64, 10)))
    r = probe(net, tr, te, pool="flatten", epochs=30)
    assert isinstance(r, ProbeResult)
    path = r.plot(tmp_path / "probe.png")
    with Image.open(path) as im:
        assert im.size == (600, 500)          # max(6, 0.55 * 3 + 2.5) x 5 inches at 100 dpi
    d = json.loads(json.dumps(r.to_dict()))
    assert d["best"] == "pixels" and d["pool"] == "flatten" and len(d["rows"]) == 3
    assert set(d["rows"][0]) >= {"cut", "feature_size", "frozen_params", "trainable_params",
                                 "train_accuracy", "test_accuracy", "seconds"}
    assert d["rows"][2]["frozen_params"] == 64 * 10 + 10
    assert not list(tmp_path.glob(".*deeparch-tmp"))


def test_cli_on_a_run_uses_its_normalisation(tmp_path, capsys):
    out = tmp_path / "run"
    pattern = "INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10"
    train(pattern, "digits", out, epochs=2, lr=0.01, log=None, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    plot = tmp_path / "probe.png"
    code = main(["probe", str(out), "--data", "digits", "--json", "--plot", str(plot),
                 "--at", "pool1,flatten1,fc1", "--epochs", "50"])
    res, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(res)
    assert [r["cut"] for r in d["rows"]] == ["pool1", "flatten1", "fc1"]
    assert d["preprocess"]["mean"] == pytest.approx(cfg["mean"])
    assert "global-average-pooled" in d["pooling"] and d["plot"] == str(plot)
    # the trained network's flattened features separate the digits
    assert d["rows"][1]["test_accuracy"] > 0.85
    assert plot.is_file()
    code = main(["probe", str(out), "--data", "digits", "--at", "fc1", "--epochs", "20"])
    text, _ = capsys.readouterr()
    assert code == 0 and "fc1" in text and "global-average-pooled" in text
