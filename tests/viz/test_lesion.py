"""deeparch.viz.lesion and `deeparch lesion RUN`: Veit et al. 2016's lesion study.

Shown, not only run:
- removing an identity-shortcut block is exactly resnet.drop_blocks (x + f(x) -> x); a
  downsampling block becomes act(shortcut(x)) (the zero-padding shortcut kept);
- everything is put back bit for bit (also after an error); no copy of the model is made;
- a block whose branch is silenced (BN gamma = beta = 0) can be removed without any change,
  while removing the one live block changes the predictions: the study measures the unit it
  names (and the k-random curve is 100% exactly on the sets that miss the live block);
- in a plain network, a conv-BN-ReLU layer that computes the identity (Dirac kernel) can go
  without change, and only shape-keeping layers are offered;
- `deeparch lesion RUN`'s base accuracy is `deeparch evaluate`'s; lesion.json has one entry per
  block; bad input is one sentence, exit 2, and nothing written.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deeparch import create_model
from deeparch.cli import main
from deeparch.errors import ModelOptionError
from deeparch.models.resnet import drop_blocks
from deeparch.pattern import from_pattern
from deeparch.viz.lesion import lesion, lesion_units, plot_lesion, removed

PLAIN = ("INPUT(12x12x1) -> CONV3-4 -> BN -> RELU -> CONV3-4 -> BN -> RELU -> CONV3-8/2 -> BN "
         "-> RELU -> CONV3-8 -> RELU -> GAP -> FC-5")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    m = create_model("resnet20", num_classes=10, in_chans=1).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_units_of_a_resnet_and_of_a_plain_network(resnet):
    units = lesion_units(resnet)
    assert [u.name for u in units] == [f"features.stage{s}.{i}" for s in (1, 2, 3)
                                       for i in range(3)]
    assert [u.name for u in units if u.downsampling] == ["features.stage2.0",
                                                         "features.stage3.0"]
    plain = from_pattern(PLAIN)
    got = lesion_units(plain)
    # conv1 changes the channels (1 -> 4), conv3 the size: neither can go
    assert [u.modules for u in got] == [("conv2", "bn2", "relu2"), ("conv4", "relu4")]
    with pytest.raises(ModelOptionError, match="no residual blocks"):
        lesion_units(plain, kind="blocks")
    with pytest.raises(ModelOptionError, match="nothing can be removed"):
        lesion_units(from_pattern("INPUT(8x8x1) -> CONV3-4 -> RELU -> FC-3"))
    assert [u.kind for u in lesion_units(resnet, (1, 28, 28), "layers")][:1] == ["layer"]


def test_removing_a_block_is_drop_blocks_and_everything_comes_back(resnet):
    x = torch.randn(4, 1, 28, 28)
    before, state = resnet(x), _state(resnet)
    units = {u.name: u for u in lesion_units(resnet)}
    with torch.no_grad():
        with removed(resnet, [units["features.stage1.1"], units["features.stage3.2"]]):
            got = resnet(x)
        want = drop_blocks(resnet, ["stage1.1", "stage3.2"])(x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert not torch.equal(got, before)
        # a downsampling block keeps its shortcut: act(pad(x[:, :, ::2, ::2]))
        block = resnet.features.stage2[0]
        h = resnet.features.stage1(resnet.features.stem(x))
        with removed(resnet, [units["features.stage2.0"]]):
            out = block(h)
        torch.testing.assert_close(out, torch.relu(block.downsample(h)), rtol=0, atol=0)
        assert out.shape == (4, 32, 14, 14)
        # put back bit for bit, also after an error inside
        with pytest.raises(RuntimeError):
            with removed(resnet, list(units.values())):
                raise RuntimeError("boom")
        torch.testing.assert_close(resnet(x), before, rtol=0, atol=0)
    assert all("merge" not in m.__dict__ for m in resnet.modules())
    assert all(torch.equal(v, state[k]) for k, v in resnet.state_dict().items())


def test_a_silent_block_costs_nothing_and_the_live_block_is_measured():
    torch.manual_seed(1)
    m = create_model("resnet20", num_classes=10, in_chans=1).eval()
    live = "features.stage2.1"
    with torch.no_grad():
        for name, mod in m.named_modules():
            if name.startswith("features.stage") and name.count(".") == 2 and name != live:
                mod.bn2.weight.zero_()
                mod.bn2.bias.zero_()
            if name == live:
                mod.bn2.weight.mul_(8.0)     # a branch that matters
        x = torch.randn(60, 1, 28, 28)
        y = m(x).argmax(1)                   # labels: the intact network's answers
    res = lesion(m, x, y, ks=[1, 2, 8], draws=4, seed=0, batch_size=64)
    assert res.base_accuracy == 1.0
    acc = {u["name"]: u["accuracy"] for u in res.units}
    # silent identity blocks: no change at all; downsampling blocks keep their padding
    # shortcut, which a silent block computes anyway (relu(0 + pad(x)))
    assert all(a == 1.0 for n, a in acc.items() if n != live)
    assert acc[live] < 0.9
    for row in res.random:
        for names, a in zip(row["removed"], row["accuracies"]):
            assert (a == 1.0) == (live not in names), (names, a)
    assert res.to_dict()["chance"] == 0.1
    assert all(m.training is False for m in m.modules())


def test_an_identity_layer_of_a_plain_network_costs_nothing():
    torch.manual_seed(0)
    plain = from_pattern(PLAIN).eval()
    with torch.no_grad():
        nn.init.dirac_(plain.conv2.weight)
        plain.conv2.bias.zero_()
        plain.bn2.weight.fill_(1.0)
        plain.bn2.bias.zero_()
        plain.bn2.running_mean.zero_()
        plain.bn2.running_var.fill_(1.0 - plain.bn2.eps)
        plain.conv4.weight.mul_(10.0)        # a layer that matters
        x = torch.randn(100, 1, 12, 12)
        y = plain(x).argmax(1)
    res = lesion(plain, x, y, draws=2)
    acc = {u["name"]: u["accuracy"] for u in res.units}
    assert acc["conv2"] == 1.0 and acc["conv4"] < 1.0
    assert [r["k"] for r in res.random] == [1, 2]


def test_plot_lesion(resnet, tmp_path):
    x = torch.randn(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    res = lesion(resnet, x, y, ks=[1, 3], draws=2)
    plot_lesion(res, tmp_path / "lesion.png", title="resnet20")
    assert (tmp_path / "lesion.png").stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["lesion.png"]


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from deeparch.train.run import train
    home = tmp_path_factory.mktemp("lesion")
    train("INPUT(8x8x1) -> CONV3-8 -> BN -> RELU -> CONV3-8 -> BN -> RELU -> CONV3-8 -> RELU "
          "-> GAP -> FC-10", "digits", home / "plain", epochs=2, lr=0.01, log=None,
          progress=False)
    train("resnet20", "digits", home / "resnet", epochs=1, lr=0.01, log=None, progress=False,
          batch_size=128)
    return home


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_lesion_cli_writes_json_and_png(runs, capsys, tmp_path):
    from deeparch.train.run import evaluate
    code, out, err = _cli(capsys, "lesion", runs / "resnet", "--k", "1", "4", "--draws", "2",
                          "-o", tmp_path)
    assert code == 0, err
    got = json.loads((tmp_path / "lesion.json").read_text())
    assert got["kind"] == "blocks" and len(got["units"]) == 9
    assert [u["downsampling"] for u in got["units"]].count(True) == 2
    assert got["base_accuracy"] == pytest.approx(evaluate(runs / "resnet")["accuracy"],
                                                 abs=1e-9)
    assert [r["k"] for r in got["random"]] == [1, 4]
    assert (tmp_path / "lesion.png").is_file() and "base accuracy" in out
    code, out, err = _cli(capsys, "lesion", runs / "plain", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["kind"] == "layers" and [u["modules"] for u in got["units"]] == \
        [["conv2", "bn2", "relu2"], ["conv3", "relu3"]]
    assert (runs / "plain" / "lesion.json").is_file()


def test_lesion_cli_bad_input(runs, capsys, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((runs / "plain" / "config.json").read_text())
    fc = tmp_path / "fc"
    from deeparch.train.run import train
    train("INPUT(8x8x1) -> FC-10", "digits", fc, epochs=1, log=None, progress=False)
    out_dir = tmp_path / "out"
    for argv in ([broken], [fc], [runs / "plain", "--k", "9"], [runs / "plain", "--draws", "0"],
                 [runs / "plain", "--kind", "blocks"], [tmp_path / "nothing"],
                 [runs / "plain", "--limit", "0"]):
        code, out, err = _cli(capsys, "lesion", *argv, "-o", out_dir)
        assert code == 2, (argv, out, err)
        assert err.startswith("deeparch: error: ") and err.count("\n") == 1, err
        assert not out_dir.exists() or not any(out_dir.iterdir())
