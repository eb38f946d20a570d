"""Whole runs through the CLI and the API, on digits (embedded, offline), kept tiny."""
import json

import pytest
import torch
from safetensors.torch import load_file

from deeparch.cli import main
from deeparch.errors import CheckpointError
from deeparch.train import run as runmod

PATTERN = "INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10"
SMALL = ["--subset", "200", "--epochs", "2", "--batch-size", "32", "--no-progress"]


def test_cli_train_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", PATTERN, "--data", "digits", "--out", str(out), "--lr", "0.01",
                 *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and f"curves:    {out / 'curves.png'}" in printed
    for name in ("config.json", "history.json", "metrics.json", "model.safetensors",
                 "curves.png", "confusion.png", "log.csv", "checkpoints/last.safetensors",
                 "checkpoints/best.safetensors", "checkpoints/last.json"):
        assert (out / name).is_file(), name
    hist = json.loads((out / "history.json").read_text())
    assert isinstance(hist, list) and len(hist) == 2
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(hist[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"loss", "accuracy", "top5", "confusion_matrix", "per_class_accuracy"} <= set(metrics)
    assert len(metrics["confusion_matrix"]) == 10 and metrics["n"] == 200
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == PATTERN and cfg["train"]["lr"] == 0.01 and cfg["input_size"] == [1, 8, 8]
    assert cfg["samples"] == {"train": 160, "val": 40, "test": 200}
    assert set(load_file(out / "model.safetensors")) == {"conv1.weight", "conv1.bias",
                                                         "fc1.weight", "fc1.bias"}
    # no temporary files left: only the run marker is hidden (the lock went with the process)
    assert [p.name for p in out.rglob(".*")] == [".deeparch-run"]

    # evaluate reproduces the test accuracy of metrics.json
    assert main(["evaluate", str(out), "--format", "json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    assert main(["evaluate", str(out), "--crops", "flip"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["evaluate", str(out), str(out), "--format", "json"]) == 0   # an ensemble
    ens = json.loads(capsys.readouterr().out)
    assert ens["accuracy"] == pytest.approx(metrics["accuracy"]) and len(ens["runs"]) == 2

    # an existing run is not overwritten by accident
    assert main(["train", PATTERN, "--data", "digits", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "already holds a deeparch run" in err and "--resume" in err
    assert err.count("\n") == 1


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, capsys, monkeypatch):
    args = ["--data", "digits", "--lr", "0.01", "--augment", "rotation=5", *SMALL,
            "--epochs", "3"]
    assert main(["train", PATTERN, "--out", str(tmp_path / "a"), *args]) == 0
    calls = {"n": 0}
    real = runmod.Trainer._end_epoch

    def crash_after_two(self, record, tb):
        real(self, record, tb)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(runmod.Trainer, "_end_epoch", crash_after_two)
    assert main(["train", PATTERN, "--out", str(tmp_path / "b"), *args]) == 130
    monkeypatch.setattr(runmod.Trainer, "_end_epoch", real)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    a = load_file(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert ma["accuracy"] == mb["accuracy"] and ma["loss"] == mb["loss"]


def test_api_train_resizes_for_lenet5(tmp_path):
    lines = []
    r = runmod.train("lenet5", "digits", tmp_path / "lenet", subset=100, epochs=1,
                     batch_size=50, log=lines.append, progress=False)
    assert any("resizing the images from 8x8 to 32x32" in s for s in lines)
    assert r.config["input_size"] == [1, 32, 32] and r.config["data_input_size"] == [1, 8, 8]
    net, run = runmod.load_run(tmp_path / "lenet")
    assert run["model"] == "lenet5"
    assert 0.0 <= r.accuracy <= 1.0


def test_user_errors_exit_2_with_one_sentence(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    cases = [
        ["train", PATTERN, "--data", "digits", "--out", str(tmp_path / "junk")],
        ["train", PATTERN, "--data", "nowhere_data", "--out", str(tmp_path / "x")],
        ["train", "not_a_model", "--data", "digits", "--out", str(tmp_path / "y")],
        ["train", PATTERN, "--data", "digits", "--out", str(tmp_path / "z"), "--lr", "-1"],
        ["train", "INPUT(8x8x1) -> FC-7", "--data", "digits", "--out", str(tmp_path / "w")],
        ["train", "--resume", str(tmp_path / "junk")],
        ["evaluate", str(tmp_path / "junk")],
        ["train", PATTERN, "--data", "digits"],
        ["train", PATTERN, "--data", "digits", "--out", str(tmp_path / "v"), "--device", "gpu0"],
        ["train", PATTERN, "--data", "digits", "--out", str(tmp_path / "v"), "--batch-size", "0"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("deeparch: error: ") and err.count("\n") == 1, (argv, err)
    for name in "xyzwv":        # a run that cannot start leaves no folder behind
        assert not (tmp_path / name).exists(), name


def test_force_starts_over(tmp_path):
    out = tmp_path / "r"
    runmod.train(PATTERN, "digits", out, subset=60, epochs=1, log=None, progress=False)
    with pytest.raises(CheckpointError):
        runmod.train(PATTERN, "digits", out, subset=60, epochs=1, log=None, progress=False)
    r = runmod.train(PATTERN, "digits", out, subset=60, epochs=2, force=True, log=None,
                     progress=False)
    assert len(r.history) == 2


def test_nan_loss_from_the_cli_is_exit_2(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["train", PATTERN, "--data", "digits", "--out", str(out), "--optimizer", "sgd",
                 "--lr", "1e30", *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "the loss became" in err and err.count("\n") == 1
    assert [p.name for p in out.rglob(".*")] == [".deeparch-run"]     # no temporary files


def test_full_disk_from_the_cli_is_exit_2(tmp_path, capsys, monkeypatch):
    import errno
    import os

    real = os.replace

    def full(src, dst):
        if str(dst).endswith("model.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "full"
    assert main(["train", PATTERN, "--data", "digits", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and err.count("\n") == 1
    assert not (out / "model.safetensors").exists()
    assert [p.name for p in out.rglob(".*")] == [".deeparch-run"]     # no temporary files


def test_overfit_flag(capsys):
    code = main(["train", PATTERN, "--data", "digits", "--overfit", "30", "--lr", "0.01"])
    out = capsys.readouterr().out
    assert code == 0 and "overfit 30 samples" in out and "can learn" in out


def test_cli_augment_preview_and_expand(tmp_path, capsys):
    png, npz = tmp_path / "p.png", tmp_path / "a.npz"
    assert main(["augment", "--data", "digits", "--augment", "rotation=10,shift=0.1",
                 "--preview", str(png), "--n", "4", "--samples", "3",
                 "--expand", "2", "--save", str(npz)]) == 0
    out = capsys.readouterr().out
    assert png.is_file() and npz.is_file() and "1438 -> 2876" in out
    assert main(["augment", "--data", "digits", "--augment", "bogus=1",
                 "--preview", str(png)]) == 2
