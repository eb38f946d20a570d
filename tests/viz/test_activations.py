"""deeparch.viz.activations and `deeparch look maps|filters|compare`: raw maps, pictures that
are written whole or not at all, one-sentence errors with exit status 2."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deeparch import create_model
from deeparch.cli import main
from deeparch.errors import InputSizeError, UnknownLayerError
from deeparch.train.run import load_data, train
from deeparch.viz import activations, plot_activations, plot_compare, plot_filters
from deeparch.viz.activations import parse_channels
from deeparch.viz.layers import LayerError, count_hooks

PATTERN = "INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    train(PATTERN, "digits", out, epochs=1, lr=0.01, log=None, progress=False)
    return out


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    _, test, _ = load_data("digits")
    p = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(test.images[0, 0].numpy(), "L").save(p)
    return p


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# --------------------------------------------------------------------------- API

def test_activations_are_the_raw_tensors_keyed_by_row():
    torch.manual_seed(0)
    m = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32) * 5
    got = activations(m, x, ["features.stem.conv1", "#3", "features.stage1.0.add"])
    assert list(got) == ["features.stem.conv1", "features.stem.act1", "features.stage1.0.add"]
    with torch.no_grad():
        conv = m.features.stem.conv1(x)
    assert torch.equal(got["features.stem.conv1"], conv)     # unscaled, unnormalised
    assert got["features.stem.conv1"].abs().max() > 1 and not got["features.stem.conv1"].requires_grad
    one = activations(m, x[0], "#3")["features.stem.act1"]    # an image without batch
    assert torch.allclose(one[0], got["features.stem.act1"][0], atol=1e-5)
    assert count_hooks(m) == 0


def test_shared_module_uses_are_keyed_apart():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.tanh(self.conv(x)))

    m = Twice()
    x = torch.randn(1, 2, 6, 6)
    got = activations(m, x, "*", input_size=(2, 6, 6))
    assert list(got) == ["conv", "tanh", "conv@2"]
    with torch.no_grad():
        assert torch.equal(got["conv@2"], m(x))


def test_bad_inputs_say_what_the_model_expects():
    m = create_model("lenet5")
    with pytest.raises(InputSizeError, match="3 channels but the model reads 1 .*1x32x32"):
        activations(m, torch.randn(1, 3, 32, 32), "#1")
    with pytest.raises(InputSizeError, match="x is 1x20x20 but the model takes 1x32x32.*not "
                                             "resized"):
        activations(m, torch.randn(1, 1, 20, 20), "#1")
    with pytest.raises(UnknownLayerError, match="close names: .*features.c1"):
        activations(m, torch.randn(1, 1, 32, 32), "features.c")
    assert count_hooks(m) == 0


def test_channels():
    assert parse_channels("0:6", 10) == [0, 1, 2, 3, 4, 5]
    assert parse_channels("1,3, 5", 10) == [1, 3, 5]
    assert parse_channels("all", 3) == [0, 1, 2]
    assert parse_channels(None, 100) == list(range(64))
    assert parse_channels("8:", 10) == [8, 9]
    with pytest.raises(LayerError, match="channel 10 is out of range: conv1 has 6 channels "
                                         "\\(0 to 5\\)"):
        parse_channels("10:13", 6, "conv1")
    with pytest.raises(LayerError, match="empty"):
        parse_channels("4:2", 6)
    with pytest.raises(LayerError, match="not a range"):
        parse_channels("a-b", 6)


def test_plots_are_written(tmp_path):
    torch.manual_seed(0)
    m = create_model("lenet5")
    x = torch.rand(1, 1, 32, 32)
    w1, h1 = _png(plot_activations(m, x, "features.c1", tmp_path / "one.png"))
    assert w1 > h1                                    # 7 cells in one row
    _png(plot_activations(m, x, "features.c1", tmp_path / "layer.png", scale="layer"))
    _png(plot_activations(m, x, None, tmp_path / "all.png", all_layers=True))
    _png(plot_activations(m, x, "features.*", tmp_path / "glob.png", channels="0:2"))
    _png(plot_filters(m, "features.c3", tmp_path / "f.png", (1, 32, 32)))
    _png(plot_filters(create_model("resnet20"), "#1", tmp_path / "rgb.png", (3, 32, 32)))
    _png(plot_compare(m, create_model("lenet5"), x, "features.c3", tmp_path / "c.png"))
    assert count_hooks(m) == 0


def test_plot_errors_write_nothing(tmp_path):
    m = create_model("lenet5")
    x = torch.rand(1, 1, 32, 32)
    out = tmp_path / "x.png"
    with pytest.raises(LayerError, match="outputs 84 per image, not channels of a spatial map"):
        plot_activations(m, x, "head.f6", out)
    with pytest.raises(LayerError, match="channel 6 is out of range"):
        plot_activations(m, x, "features.c1", out, channels="0:7")
    with pytest.raises(LayerError, match="not a convolution with weights"):
        plot_filters(m, "features.s2", out, (1, 32, 32))
    with pytest.raises(InputSizeError, match="draws one image"):
        plot_activations(m, torch.rand(2, 1, 32, 32), "features.c1", out)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- CLI

def test_cli_maps_of_a_run(run, digit, tmp_path, capsys):
    out = tmp_path / "maps.png"
    code, text, err = _cli(capsys, "look", "maps", run, "--sample", 3, "--layer", "conv1",
                           "--channels", "0:6", "-o", out)
    assert code == 0, err
    assert text.strip().endswith(f"maps: {out}")
    _png(out)
    code, text, err = _cli(capsys, "look", "maps", run, "--image", digit, "--all-layers",
                           "-o", tmp_path / "all.png")
    assert code == 0, err
    _png(tmp_path / "all.png")


def test_cli_maps_of_a_model_resizes_and_says_so(tmp_path, capsys):
    p = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), np.uint8)).save(p)
    code, text, err = _cli(capsys, "look", "maps", "lenet5", "--image", p, "--layer", "#1",
                           "-o", tmp_path / "m.png")
    assert code == 0, err
    assert "takes 1x32x32 and the image is 3x50x60" in text and "resized" in text
    assert "grey" in text


def test_cli_filters_and_compare(run, digit, tmp_path, capsys):
    code, text, err = _cli(capsys, "look", "filters", run, "--layer", "conv1",
                           "-o", tmp_path / "f.png")
    assert code == 0, err
    _png(tmp_path / "f.png")
    code, text, err = _cli(capsys, "look", "compare", run, f"{run}@init", "--image", digit,
                           "--layer", "#1", "-o", tmp_path / "c.png")
    assert code == 0, err
    _png(tmp_path / "c.png")


@pytest.mark.parametrize("argv, words", [
    (["maps", "RUN", "--sample", "0", "--layer", "conv9", "-o", "OUT"], "no layer 'conv9'"),
    (["maps", "RUN", "--sample", "0", "--layer", "conv1", "--channels", "0:9", "-o", "OUT"],
     "channel 8 is out of range: conv1 has 8 channels"),
    (["maps", "RUN", "--sample", "0", "--layer", "fc1", "-o", "OUT"], "not channels of a spatial"),
    (["maps", "RUN", "--sample", "999999", "--layer", "conv1", "-o", "OUT"], "past the end"),
    (["maps", "RUN", "--layer", "conv1", "-o", "OUT"], "give one image"),
    (["maps", "RUN", "--sample", "0", "-o", "OUT"], "--layer"),
    (["maps", "lenet5", "--sample", "0", "--layer", "#1", "-o", "OUT"], "not a run folder"),
    (["maps", "EMPTY", "--sample", "0", "--layer", "conv1", "-o", "OUT"], "no weights"),
    (["maps", "RUN", "--image", "MISSING", "--layer", "conv1", "-o", "OUT"], "does not exist"),
    (["filters", "RUN", "--layer", "relu1", "-o", "OUT"], "not a convolution"),
    (["compare", "RUN", "lenet5", "--sample", "0", "--layer", "conv1", "-o", "OUT"],
     "takes 1x8x8 and lenet5 1x32x32"),
])
def test_cli_errors_are_one_sentence_exit_2_no_file(run, tmp_path, capsys, argv, words):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((run / "config.json").read_text())
    (empty / ".deeparch-run").write_text("") if (run / ".deeparch-run").exists() else None
    out = tmp_path / "out.png"
    sub = {"RUN": str(run), "OUT": str(out), "EMPTY": str(empty),
           "MISSING": str(tmp_path / "nope.png")}
    code, text, err = _cli(capsys, "look", *[sub.get(a, a) for a in argv])
    assert code == 2, (text, err)
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "tmp" in p.name]
