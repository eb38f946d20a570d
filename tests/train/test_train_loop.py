import errno
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from deeparch.errors import CheckpointError, DeeparchError, TrainingError
from deeparch.train import History, Trainer, fit, overfit_check
from deeparch.train.checkpoint import CheckpointWriteError, load_checkpoint, read_checkpoint_state
from trainhelp import TINY, TINY_DROPOUT, TINY_FUSED, blobs, tiny_model

KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}


def test_fit_learns_and_records_history():
    h = fit(tiny_model(), blobs(), epochs=4, lr=0.01, batch_size=16, log=None)
    assert isinstance(h, History) and len(h) == 4
    assert set(h[0]) == KEYS
    assert h[-1]["accuracy"] > h[0]["accuracy"]
    assert h[-1]["val_accuracy"] >= 0.9
    assert h.history["loss"] == [e["loss"] for e in h]
    assert h.best()["val_accuracy"] == max(e["val_accuracy"] for e in h)
    assert json.loads(h.to_json())[0]["epoch"] == 1


def test_epoch_lines_are_logged():
    lines = []
    fit(tiny_model(), blobs(), epochs=2, batch_size=32, log=lines.append)
    assert lines[0].startswith("epoch 1/2  loss ")
    assert "val_acc" in lines[0]


def test_no_validation_split_monitors_training_accuracy():
    t = Trainer(tiny_model(), blobs(), val_split=0.0, epochs=2, batch_size=32, log=None)
    h = t.fit()
    assert h[0]["val_loss"] is None and h[0]["val_accuracy"] is None
    assert t.best["metric"] == "accuracy"


@pytest.mark.parametrize("opt,extra", [("sgd", dict(momentum=0.9, nesterov=True,
                                                   weight_decay=5e-4)),
                                       ("adamw", dict(weight_decay=0.01)),
                                       ("adam", dict(label_smoothing=0.1, grad_clip=1.0,
                                                     schedule="onecycle"))])
def test_optimizers_and_options_run(opt, extra):
    h = fit(tiny_model(), blobs(), epochs=2, batch_size=32, optimizer=opt, lr=0.01, log=None,
            **extra)
    assert all(map(lambda e: e["loss"] == e["loss"], h))  # no NaN


def test_plateau_and_early_stopping():
    lines = []
    t = Trainer(tiny_model(), blobs(), epochs=30, batch_size=32, lr=1e-6, schedule="plateau",
                plateau_patience=1, early_stopping=3, log=lines.append)
    h = t.fit()
    assert t.stopped_early and len(h) < 30
    assert any("early stopping" in s for s in lines)
    assert any("learning rate x 0.1" in s for s in lines)
    assert h[-1]["lr"] < 1e-6


def test_grad_clip_bounds_the_step():
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, blobs(n=32), epochs=1, batch_size=32, optimizer="sgd", momentum=0.0, lr=1.0,
        grad_clip=1e-3, val_split=0.0, log=None, restore_best=False)
    delta = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(),
                                                                        before)))
    assert float(delta) <= 1e-3 * 1.0001


class Aux(nn.Module):
    """A GoogLeNet-like model: (logits, aux) in training mode, logits in eval mode."""

    def __init__(self):
        super().__init__()
        self.body = tiny_model()
        self.aux = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))

    def forward(self, x):
        out = self.body(x)
        return (out, self.aux(x)) if self.training else out


def test_aux_logits_are_weighted_into_the_loss():
    h0 = fit(Aux(), blobs(), epochs=1, batch_size=32, aux_weight=0.0, log=None)
    h1 = fit(Aux(), blobs(), epochs=1, batch_size=32, aux_weight=0.3, log=None)
    assert h1[0]["loss"] > h0[0]["loss"]


@pytest.mark.parametrize("spec", [TINY_DROPOUT, TINY_FUSED])
def test_dropout_model_is_reproducible(spec):
    a = fit(tiny_model(spec), blobs(), epochs=2, batch_size=16, log=None)
    b = fit(tiny_model(spec), blobs(), epochs=2, batch_size=16, log=None)
    assert [e["loss"] for e in a] == [e["loss"] for e in b]


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("spec,extra", [
    (TINY_DROPOUT, dict(optimizer="adam", schedule="cosine", augment="rotation=10,shift=0.1")),
    (TINY_FUSED, dict(optimizer="adamw", schedule="onecycle", weight_decay=1e-2)),
    (TINY, dict(optimizer="sgd", momentum=0.9, nesterov=True, schedule="plateau",
                plateau_patience=1, weight_decay=1e-3)),
])
def test_resume_is_bit_identical(tmp_path, spec, extra):
    cfg = dict(epochs=3, batch_size=16, lr=0.02, restore_best=False, **extra)
    straight = Trainer(tiny_model(spec), blobs(), out=tmp_path / "a", log=None, **cfg)
    straight.fit()
    # interrupted (Ctrl-C) after epoch 1, then a fresh trainer resumes from the checkpoint

    def interrupt(trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    first = Trainer(tiny_model(spec), blobs(), out=tmp_path / "b", log=None,
                    callbacks=[interrupt], **cfg)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    again = Trainer(tiny_model(spec, seed=99), blobs(), out=tmp_path / "b", log=None, **cfg)
    again.resume()
    assert again.epoch == 1
    again.fit()
    wa, wb = _weights(straight.module), _weights(again.module)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert [e["loss"] for e in straight.history] == [e["loss"] for e in again.history]
    assert [e["lr"] for e in straight.history] == [e["lr"] for e in again.history]


def test_checkpoints_last_and_best(tmp_path):
    t = Trainer(tiny_model(), blobs(), out=tmp_path, epochs=3, batch_size=16, log=None)
    t.fit()
    last = read_checkpoint_state(tmp_path / "checkpoints" / "last.safetensors")
    best = read_checkpoint_state(tmp_path / "checkpoints" / "best.safetensors")
    assert last["epoch"] == 3 and best["epoch"] == t.best["epoch"]
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["epoch"] == 3
    assert len(json.loads((tmp_path / "history.json").read_text())) == 3
    assert (tmp_path / "log.csv").read_text().startswith("epoch,loss,accuracy,val_loss")


class Exploding(nn.Module):
    """Fine for `good` forward calls in training mode, then NaN."""

    def __init__(self, good):
        super().__init__()
        self.net = tiny_model()
        self.good = good
        self.calls = 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.good:
                out = out * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = Exploding(good=4)         # 2 steps per epoch: epochs 1-2 fine, NaN in epoch 3
    t = Trainer(model, blobs(n=40), out=tmp_path, epochs=5, batch_size=16, log=None)
    with pytest.raises(TrainingError) as e:
        t.fit()
    msg = str(e.value)
    assert "the loss became nan at epoch 3 step 1" in msg
    assert "last.safetensors (epoch 2)" in msg and "learning rate" in msg
    state = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert state["epoch"] == 2
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]   # no temp files


def test_nan_in_first_epoch_says_no_checkpoint():
    with pytest.raises(TrainingError, match="no checkpoint had been saved yet"):
        fit(Exploding(good=0), blobs(), epochs=2, batch_size=16, log=None)


def test_full_disk_while_saving_is_one_sentence_and_no_half_file(tmp_path, monkeypatch):
    t = Trainer(tiny_model(), blobs(), out=tmp_path, epochs=3, batch_size=16, log=None,
                restore_best=False)
    calls = {"n": 0}
    real_open = open

    class HalfFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def full_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "w" in mode and Path(path).name.startswith(".last.safetensors"):
            calls["n"] += 1
            if calls["n"] >= 2:            # epoch 1 saves fine, epoch 2 hits a full disk
                return HalfFile(f)
        return f

    import deeparch.train.checkpoint as ck
    monkeypatch.setattr(ck, "open", full_open, raising=False)
    with pytest.raises(CheckpointWriteError) as e:
        t.fit()
    assert isinstance(e.value, CheckpointError) and isinstance(e.value, OSError)
    assert isinstance(e.value, DeeparchError)
    msg = str(e.value)
    assert "disk is full" in msg and "\n" not in msg
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")["epoch"] == 1


def test_resume_refuses_a_checkpoint_from_other_data(tmp_path):
    Trainer(tiny_model(), blobs(), out=tmp_path, epochs=1, batch_size=16, log=None).fit()
    other = Trainer(tiny_model(), blobs(n=200), out=tmp_path, epochs=2, batch_size=16, log=None)
    with pytest.raises(CheckpointError, match="steps per epoch"):
        other.resume()


def test_overfit_check_passes_for_a_working_model():
    r = overfit_check(tiny_model(), blobs(n=200), n=20, steps=300, lr=0.01)
    assert r.passed and r.n == 20 and r.accuracy == 1.0
    assert "can learn" in r.message()


def test_overfit_check_fails_for_a_frozen_model():
    model = tiny_model()
    for p in list(model.parameters())[:-2]:
        p.requires_grad_(False)
    model[-1].weight.data.zero_()
    model[-1].weight.requires_grad_(False)   # only the output bias can learn
    r = overfit_check(model, blobs(n=200), n=20, steps=20, lr=0.01)
    assert not r.passed
    assert "could not memorise" in r.message()


def test_bf16_on_a_cpu_that_fails_the_probe_is_refused(monkeypatch):
    import deeparch.train.speed as speed
    monkeypatch.setattr(speed, "bf16_supported", lambda device="cpu": False)
    with pytest.raises(TrainingError, match="bf16 is not usable on this CPU"):
        Trainer(tiny_model(), blobs(), precision="bf16", device="cpu", log=None)
    with pytest.raises(TrainingError, match="fp16 training needs a CUDA GPU"):
        Trainer(tiny_model(), blobs(), precision="fp16", device="cpu", log=None)


def test_missing_cuda_is_a_training_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TrainingError, match="no.*CUDA|CUDA GPU but none"):
        Trainer(tiny_model(), blobs(), device="cuda", log=None)


def test_tensorboard_needs_its_package(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        # refused when the trainer is made, before any epoch is trained or file written
        with pytest.raises(TrainingError, match="pip install tensorboard"):
            Trainer(tiny_model(), blobs(), out=tmp_path, tensorboard=True, epochs=1, log=None)
        assert not list(tmp_path.iterdir())
    else:
        t = Trainer(tiny_model(), blobs(), out=tmp_path, tensorboard=True, epochs=1, log=None)
        t.fit()
        assert any((tmp_path / "tensorboard").iterdir())


def test_progress_bar_draws_on_a_terminal():
    import io
    from deeparch.train.history import ProgressBar
    buf = io.StringIO()
    bar = ProgressBar(3, desc="epoch 1/1", stream=buf, enabled=True)
    for _ in range(3):
        bar.update(1, loss=0.5)
    bar.close()
    text = buf.getvalue()
    assert "epoch 1/1 [" in text and "3/3" in text and "loss 0.5000" in text
    quiet = io.StringIO()
    ProgressBar(3, stream=quiet).update(1)          # StringIO is not a TTY: silent
    assert quiet.getvalue() == ""
