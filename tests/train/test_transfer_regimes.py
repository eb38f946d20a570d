"""deeparch train from pretrained weights: the regimes freeze what they say, bit for bit.

The source weights are a resnet20 (batch norm in every block) with random weights *and
random batch-norm statistics*, saved as a deeparch safetensors file, so a running mean that
moved, or a frozen weight that an optimizer touched, shows up as a changed bit.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import deeparch
from deeparch.cli import main
from deeparch.errors import CheckpointError, DeeparchError, TrainingError
from deeparch.train.checkpoint import save_weights
from deeparch.train.run import evaluate, resume, train
from deeparch.transfer.preprocess import IMAGENET_MEAN

FAST = dict(epochs=1, batch_size=128, log=None, progress=False, threads=1)


def _source(path, in_chans=1, seed=3, meta=None):
    torch.manual_seed(seed)
    m = deeparch.create_model("resnet20", num_classes=7, in_chans=in_chans)
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    save_weights(path, m, meta)
    return load_file(str(path))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet20.safetensors"
    return path, _source(path)


def _final(out):
    return load_file(str(out / "model.safetensors"))


def _head(key: str) -> bool:
    return key.startswith("head.")


def test_linear_leaves_every_frozen_tensor_bit_identical(source, tmp_path):
    path, before = source
    r = train("resnet20", "digits", tmp_path / "lin", weights=str(path), regime="linear", **FAST)
    after = _final(tmp_path / "lin")
    assert set(after) == set(before)
    body = [k for k in before if not _head(k)]
    assert any("running_mean" in k for k in body) and any("running_var" in k for k in body)
    for k in body:
        assert torch.equal(after[k], before[k]), k
    # the new head trained (10 classes, where the file had 7)
    assert after["head.fc.weight"].shape[0] == 10 and before["head.fc.weight"].shape[0] == 7
    t = r.config["transfer"]
    assert t["regime"] == "linear" and t["trainable_params"] == 64 * 10 + 10
    assert t["sha256"] and t["source"] == "deeparch"


def test_top_k_freezes_the_stages_before_the_last_k(source, tmp_path):
    path, before = source
    train("resnet20", "digits", tmp_path / "top", weights=str(path), regime="top:1", **FAST)
    after = _final(tmp_path / "top")
    frozen = [k for k in before if k.startswith(("features.stem", "features.stage1",
                                                 "features.stage2"))]
    trained = [k for k in before if k.startswith("features.stage3")]
    assert frozen and trained
    for k in frozen:
        assert torch.equal(after[k], before[k]), k
    # the last stage trained: its weights and its batch-norm statistics moved
    assert not all(torch.equal(after[k], before[k]) for k in trained if k.endswith("weight"))
    assert not all(torch.equal(after[k], before[k]) for k in trained if "running_mean" in k)


def test_freezing_survives_resume(source, tmp_path):
    path, before = source
    out = tmp_path / "lin"
    train("resnet20", "digits", out, weights=str(path), regime="linear", **FAST)
    resume(out, epochs=2, log=None, progress=False)
    after = _final(out)
    for k in before:
        if not _head(k):
            assert torch.equal(after[k], before[k]), k
    assert len(json.loads((out / "history.json").read_text())) == 2


def test_cached_trains_the_same_head_as_linear_on_stored_features(source, tmp_path):
    path, before = source
    lin = train("resnet20", "digits", tmp_path / "lin", weights=str(path), regime="linear",
                **FAST)
    cac = train("resnet20", "digits", tmp_path / "cac", weights=str(path), regime="cached",
                **FAST)
    assert (tmp_path / "cac" / "features.safetensors").is_file()
    a, b = _final(tmp_path / "lin"), _final(tmp_path / "cac")
    for k in before:
        if not _head(k):
            assert torch.equal(b[k], before[k]), k
    # resnet20 has no dropout and its frozen batch norm is held in eval: the head sees the
    # same features either way (up to float summation order)
    torch.testing.assert_close(b["head.fc.weight"], a["head.fc.weight"], atol=1e-4, rtol=1e-4)
    assert abs(cac.metrics["accuracy"] - lin.metrics["accuracy"]) <= 2 / 359
    # the run folder holds the whole model: evaluate gives the run's own test accuracy
    assert evaluate(tmp_path / "cac")["accuracy"] == pytest.approx(cac.metrics["accuracy"])


def test_lr_backbone_zero_keeps_the_pretrained_weights_under_every_schedule(source, tmp_path):
    path, before = source
    train("resnet20", "digits", tmp_path / "full", weights=str(path), regime="full",
          lr_backbone=0.0, schedule="cosine", warmup_epochs=0.5, epochs=2, batch_size=128,
          log=None, progress=False, threads=1)
    after = _final(tmp_path / "full")
    convs = [k for k in before if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert convs
    for k in convs:                 # rate 0 at every step: the schedule kept the ratio
        assert torch.equal(after[k], before[k]), k
    # not frozen: the batch-norm statistics of the full regime do follow the new data
    assert not all(torch.equal(after[k], before[k]) for k in before if "running_mean" in k)
    assert not torch.equal(after["head.fc.weight"][:7], before["head.fc.weight"])


def test_colour_weights_get_grey_images_in_three_channels_with_their_normalisation(tmp_path):
    pre = {"name": "torchvision", "mean": list(IMAGENET_MEAN), "std": [0.229, 0.224, 0.225],
           "size": 16, "resize": None, "channels": 3}
    path = tmp_path / "rgb.safetensors"
    _source(path, in_chans=3, meta={"preprocess": pre})
    r = train("resnet20", "digits", tmp_path / "rgb", weights=str(path), regime="linear",
              **FAST)
    assert r.config["input_size"] == [3, 16, 16]            # the weights' channels and size
    assert r.config["mean"] == pytest.approx(list(IMAGENET_MEAN))
    assert r.config["transfer"]["preprocess"]["name"] == "torchvision"
    assert evaluate(tmp_path / "rgb")["accuracy"] == pytest.approx(r.metrics["accuracy"])


def test_from_run_takes_the_runs_model_and_normalisation(tmp_path):
    src = train("lenet5", "digits", tmp_path / "src", **FAST)
    r = train(None, "digits", tmp_path / "t", from_run=str(tmp_path / "src"), regime="linear",
              **FAST)
    assert r.config["model"] == "lenet5"
    assert r.config["mean"] == pytest.approx(src.config["mean"])
    assert r.config["input_size"] == src.config["input_size"]


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw, exc, words", [
    (dict(regime="linear"), TrainingError, "give them with --weights"),
    (dict(weights="W", regime="top:0"), TrainingError, "top:K"),
    (dict(weights="W", regime="fine"), TrainingError, "regime must be"),
    (dict(weights="W", regime="top:9"), TrainingError, "more stages than the 4"),
    (dict(weights="W", regime="cached", augment="slides"), TrainingError, "augmented"),
    (dict(weights="/nonexistent/w.pth"), TrainingError, "no weights file"),
    (dict(lr_backbone=1e-4), TrainingError, "pretrained layers"),
])
def test_bad_transfer_requests_are_refused_before_a_folder_is_written(source, tmp_path, kw,
                                                                      exc, words):
    path, _ = source
    if kw.get("weights") == "W":
        kw = {**kw, "weights": str(path)}
    with pytest.raises(exc, match=words):
        train("resnet20", "digits", tmp_path / "out", **{**FAST, **kw})
    assert not (tmp_path / "out").exists()


def test_weights_of_another_architecture_say_so(source, tmp_path):
    path, _ = source
    with pytest.raises(DeeparchError, match="another architecture"):
        train("lenet5", "digits", tmp_path / "out", weights=str(path), **FAST)
    assert not (tmp_path / "out").exists()


def test_resume_refuses_weights_that_changed_or_vanished(tmp_path):
    path = tmp_path / "w.safetensors"
    _source(path)
    out = tmp_path / "run"
    train("resnet20", "digits", out, weights=str(path), regime="linear", **FAST)
    _source(path, seed=4)                                    # someone rewrote the file
    with pytest.raises(CheckpointError, match="have changed"):
        resume(out, epochs=2, log=None)
    path.unlink()
    with pytest.raises(CheckpointError, match="are gone"):
        resume(out, epochs=2, log=None)


def test_a_hand_edited_transfer_record_is_refused(source, tmp_path):
    path, _ = source
    out = tmp_path / "run"
    train("resnet20", "digits", out, weights=str(path), regime="linear", **FAST)
    cfg = json.loads((out / "config.json").read_text())
    cfg["transfer"]["regime"] = "everything"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="transfer.regime"):
        resume(out, epochs=2, log=None)


def test_cli_regimes(source, tmp_path, capsys):
    path, before = source
    out = tmp_path / "cli"
    assert main(["train", "resnet20", "--data", "digits", "--weights", str(path), "--regime",
                 "linear", "--epochs", "1", "--threads", "1", "--no-progress", "--out",
                 str(out)]) == 0
    assert "regime linear" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--regime", "full"]) == 2
    assert "--regime" in capsys.readouterr().err
    assert main(["train", "resnet20", "--data", "digits", "--regime", "top:2", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["train", "--from-run", str(out), "--data", "digits", "--regime", "top:1",
                 "--lr-backbone", "1e-4", "--epochs", "1", "--threads", "1", "--no-progress",
                 "--out", str(tmp_path / "again")]) == 0
    assert not (tmp_path / "x").exists()


def test_a_hub_name_downloads_and_trains_with_the_publishers_recipe(tmp_path, monkeypatch):
    """torchvision:squeezenet1_1 from a mirror folder (no hub is reachable here; the HTTP
    path is tests/transfer/test_hub.py's): the model comes from the entry, the file is
    checked against the entry's checksum, the preprocessing is torchvision's."""
    import dataclasses
    import hashlib

    from deeparch.transfer import hub

    served = tmp_path / "served"
    served.mkdir()
    e = hub.entry("torchvision:squeezenet1_1")
    torch.manual_seed(0)
    net = deeparch.create_model("squeezenet1_1", num_classes=1000)
    torch.save(net.state_dict(), served / e.filename)
    digest = hashlib.sha256((served / e.filename).read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(hub.ENTRIES, e.name, dataclasses.replace(e, checksum=digest))
    monkeypatch.setenv("DEEPARCH_WEIGHTS_MIRROR", str(served))
    monkeypatch.setenv("DEEPARCH_WEIGHTS", str(tmp_path / "cache"))
    r = train(None, "digits", tmp_path / "run", weights="torchvision:squeezenet1_1",
              regime="linear", image_size=48, subset=200, **FAST)
    assert r.config["model"] == "squeezenet1_1"
    assert (tmp_path / "cache" / "torchvision" / e.filename).is_file()
    assert r.config["transfer"]["preprocess"]["name"] == "torchvision"
    assert r.config["input_size"] == [3, 48, 48]
    assert r.config["mean"] == pytest.approx(list(IMAGENET_MEAN))
    with pytest.raises(TrainingError, match="loads into squeezenet1_1"):
        train("resnet20", "digits", tmp_path / "other", weights="torchvision:squeezenet1_1",
              **FAST)
    with pytest.raises(DeeparchError, match="no published weights"):
        train(None, "digits", tmp_path / "other", weights="torchvision:resnet5000", **FAST)
