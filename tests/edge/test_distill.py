"""Knowledge distillation: the loss (Hinton et al. 2015), the trainer's teacher, whole runs."""
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeparch.cli import main
from deeparch.data import ArrayDataset
from deeparch.edge.distillation import (TeacherInput, distill, distillation_loss, load_teacher,
                                   soft_target_loss)
from deeparch.errors import CheckpointError, EdgeError, TrainingError
from deeparch.pattern import from_pattern
from deeparch.train import Trainer
from deeparch.train import run as runmod
from deeparch.train.checkpoint import load_checkpoint, save_weights

TINY = "INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> DROPOUT0.2 -> FC-4"
BIG = "INPUT(8x8x1) -> CONV3-8 -> RELU -> CONV3-8 -> RELU -> POOL2 -> FC-4"
STUDENT = "INPUT(8x8x1) -> FC-10"
TEACHER = "INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10"
SMALL = dict(subset=200, epochs=2, batch_size=32, lr=0.01, progress=False, log=None)


# --------------------------------------------------------------------------- the loss

def _hand(s, t, y, T, a):
    """The formula written out, one image and one class at a time."""
    total = 0.0
    for i in range(s.shape[0]):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        zs, zt = sum(ps), sum(pt)
        ps, pt = [v / zs for v in ps], [v / zt for v in pt]
        kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
        e = [math.exp(v) for v in s[i].tolist()]
        ce = -math.log(e[int(y[i])] / sum(e))
        total += (1 - a) * ce + a * T * T * kl
    return total / s.shape[0]


@pytest.mark.parametrize("T,a", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.3), (20.0, 1.0)])
def test_loss_matches_a_hand_computation(T, a):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    y = torch.randint(0, 7, (5,), generator=g)
    got = distillation_loss(s.double(), t.double(), y, T, a)
    assert float(got) == pytest.approx(_hand(s.double(), t.double(), y, T, a), rel=1e-5)
    summed = distillation_loss(s, t, y, T, a, reduction="sum")
    assert float(summed) == pytest.approx(5 * float(got), rel=1e-5)


def test_limits_alpha_zero_identical_logits_and_label_smoothing():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    assert torch.equal(distillation_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))
    # identical logits: the KL term is 0, whatever T
    for T in (1.0, 4.0, 10.0):
        assert float(soft_target_loss(s, s.clone(), T)) == pytest.approx(0.0, abs=1e-6)
        assert float(distillation_loss(s, s.clone(), y, T, 1.0)) == pytest.approx(0.0, abs=1e-5)
        assert float(distillation_loss(s, s.clone(), y, T, 0.25)) == pytest.approx(
            0.75 * float(F.cross_entropy(s, y)), rel=1e-5)
    # different logits: KL > 0
    assert float(soft_target_loss(s, t, 4.0)) > 0
    # label smoothing applies to the CE part only
    ls = distillation_loss(s, t, y, 4.0, 0.5, label_smoothing=0.1)
    want = 0.5 * F.cross_entropy(s, y, label_smoothing=0.1) + 0.5 * 16 * soft_target_loss(s, t, 4)
    assert float(ls) == pytest.approx(float(want), rel=1e-6)


def test_t_squared_keeps_the_soft_gradient_about_constant():
    g = torch.Generator().manual_seed(2)
    s0, t = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    norms, raw = [], []
    for T in (4.0, 8.0, 16.0):
        s = s0.clone().requires_grad_(True)
        y = torch.zeros(32, dtype=torch.long)
        distillation_loss(s, t, y, T, 1.0).backward()
        norms.append(float(s.grad.norm()))
        s = s0.clone().requires_grad_(True)
        soft_target_loss(s, t, T).backward()     # without the T^2 factor
        raw.append(float(s.grad.norm()))
    assert max(norms) / min(norms) < 1.2
    assert raw[0] / raw[2] > 10          # unscaled it shrinks like 1 / T^2 (16x here)


def test_loss_is_stable_and_refuses_bad_settings():
    s = torch.tensor([[1e4, -1e4, 0.0]])
    t = torch.tensor([[-1e4, 1e4, 0.0]])
    y = torch.tensor([0])
    assert torch.isfinite(distillation_loss(s, t, y, 1.0, 0.9))
    for T in (0, -1.0, float("nan"), float("inf"), "4", True, None):
        with pytest.raises(TrainingError, match="temperature"):
            distillation_loss(s, t, y, T, 0.5)
    for a in (-0.1, 1.5, float("nan"), "0.5", None):
        with pytest.raises(TrainingError, match="alpha"):
            distillation_loss(s, t, y, 4.0, a)
    with pytest.raises(TrainingError, match="same shape"):
        distillation_loss(s, torch.zeros(1, 4), y)


# --------------------------------------------------------------------------- the trainer

def blobs(n=96, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        images[i, 0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 150
    return ArrayDataset(images.clamp(0, 255).to(torch.uint8), labels,
                        [f"c{i}" for i in range(classes)], "blobs")


def net(spec=TINY, seed=0):
    torch.manual_seed(seed)
    return from_pattern(spec)


def weights(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen, self.modes = inner, [], []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        self.modes.append((self.training, torch.is_grad_enabled()))
        return self.inner(x)


CFG = dict(epochs=2, batch_size=16, lr=0.02, restore_best=False, log=None,
           augment="rotation=10,shift=0.1")


def test_teacher_sees_the_students_batch_and_is_not_trained_or_saved(tmp_path):
    teacher = Recorder(net(BIG, seed=5))
    before = weights(teacher)
    student = Recorder(net())
    t = Trainer(student, blobs(), teacher=teacher, out=tmp_path, **CFG)
    for r in (teacher, student):
        r.seen.clear(), r.modes.clear()
    t.fit()
    # the student's training batches (its validation batches run in eval mode)
    trained = [x for x, (mode, _) in zip(student.seen, student.modes) if mode]
    assert len(teacher.seen) == len(trained) == 2 * t.steps_per_epoch
    assert all(torch.equal(a, b) for a, b in zip(teacher.seen, trained))
    assert set(teacher.modes) == {(False, False)}          # eval mode, under no_grad
    after = weights(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in teacher.parameters())
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors", Recorder(net()))
    assert saved["config"]["temperature"] == 4.0 and saved["config"]["alpha"] == 0.9
    from safetensors.torch import load_file
    keys = load_file(tmp_path / "checkpoints" / "last.safetensors")
    assert {k[6:] for k in keys if k.startswith("model.")} == set(student.state_dict())
    assert "inner.conv2.weight" in teacher.state_dict()        # the teacher's, not saved


def test_alpha_zero_is_plain_training_and_alpha_above_zero_is_not():
    plain = Trainer(net(), blobs(), **CFG)
    plain.fit()
    zero = Trainer(net(), blobs(), teacher=net(BIG, seed=5), alpha=0.0, **CFG)
    zero.fit()
    kd = Trainer(net(), blobs(), teacher=net(BIG, seed=5), alpha=0.7, temperature=2.0, **CFG)
    kd.fit()
    a, b, c = weights(plain.module), weights(zero.module), weights(kd.module)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert [e["loss"] for e in plain.history] == [e["loss"] for e in zero.history]


def test_resume_with_a_teacher_is_bit_identical(tmp_path):
    cfg = dict(CFG, epochs=3, schedule="cosine", alpha=0.8, temperature=3.0)
    straight = Trainer(net(), blobs(), teacher=net(BIG, seed=5), out=tmp_path / "a", **cfg)
    straight.fit()

    def interrupt(trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    first = Trainer(net(), blobs(), teacher=net(BIG, seed=5), out=tmp_path / "b",
                    callbacks=[interrupt], **cfg)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    again = Trainer(net(seed=99), blobs(), teacher=net(BIG, seed=5), out=tmp_path / "b", **cfg)
    again.resume()
    assert again.epoch == 1
    again.fit()
    wa, wb = weights(straight.module), weights(again.module)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [e["loss"] for e in straight.history] == [e["loss"] for e in again.history]


def test_trainer_refuses_a_teacher_that_cannot_teach():
    cases = [
        (net("INPUT(8x8x1) -> FC-3"), "outputs"),                 # other classes
        (net("INPUT(8x8x3) -> CONV3-4 -> RELU -> FC-4"), "cannot read"),   # other channels
        ("runs/big", "nn.Module"),
    ]
    for teacher, words in cases:
        with pytest.raises(TrainingError, match=words):
            Trainer(net(), blobs(), teacher=teacher, **CFG)
    student = net()
    with pytest.raises(TrainingError, match="shares weights"):
        Trainer(student, blobs(), teacher=student, **CFG)
    for bad in (dict(temperature=0), dict(temperature=-2.0), dict(alpha=1.5),
                dict(temperature="x")):
        with pytest.raises(TrainingError):
            Trainer(net(), blobs(), teacher=net(BIG), **{**CFG, **bad})


def test_teacher_input_maps_normalisation_and_size():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.flatten(1)[:, :3]

    pix = torch.randint(0, 256, (2, 1, 8, 8)).float()
    ms, ss, mt, st = 0.3, 0.4, 0.5, 0.2
    x_s = (pix / 255 - ms) / ss
    TeacherInput(Probe(), ((ms,), (ss,)), ((mt,), (st,)))(x_s)
    assert torch.allclose(seen["x"], (pix / 255 - mt) / st, atol=1e-5)
    TeacherInput(Probe(), ((ms,), (ss,)), ((ms,), (ss,)), (16, 16))(x_s)
    assert seen["x"].shape == (2, 1, 16, 16)
    same = TeacherInput(Probe(), ((ms,), (ss,)), ((ms,), (ss,)))
    same(x_s)
    assert seen["x"] is x_s                            # nothing touched when nothing differs


# --------------------------------------------------------------------------- whole runs

@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kd") / "teacher"
    runmod.train(TEACHER, "digits", out, **SMALL)
    return out


def test_train_with_a_teacher_records_it_and_resume_matches(teacher_run, tmp_path,
                                                            monkeypatch):
    lines = []
    r = runmod.train(STUDENT, "digits", tmp_path / "a", teacher=teacher_run, temperature=3.0,
                     alpha=0.8, **{**SMALL, "epochs": 3, "log": lines.append})
    assert any("distilling from the teacher" in s for s in lines)
    d = json.loads((tmp_path / "a" / "config.json").read_text())["distill"]
    assert d["kind"] == "run" and d["teacher"] == str(teacher_run.resolve())
    assert d["file"] == str((teacher_run / "model.safetensors").resolve())
    assert len(d["sha256"]) == 64 and d["temperature"] == 3.0 and d["alpha"] == 0.8
    assert r.config["train"]["temperature"] == 3.0
    # interrupted after epoch 2, then resumed: the same weights as the uninterrupted run
    real = runmod.Trainer._end_epoch
    calls = {"n": 0}

    def crash(self, record, tb):
        real(self, record, tb)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(runmod.Trainer, "_end_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        runmod.train(STUDENT, "digits", tmp_path / "b", teacher=teacher_run, temperature=3.0,
                     alpha=0.8, **{**SMALL, "epochs": 3})
    monkeypatch.setattr(runmod.Trainer, "_end_epoch", real)
    runmod.resume(tmp_path / "b", log=None, progress=False)
    from safetensors.torch import load_file
    a = load_file(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same student without the teacher ends elsewhere
    plain = runmod.train(STUDENT, "digits", tmp_path / "p", **{**SMALL, "epochs": 3})
    w = plain.model.state_dict()
    assert not all(torch.equal(w[k], r.model.state_dict()[k]) for k in w)


def test_resume_refuses_a_changed_or_missing_teacher(teacher_run, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_run, teacher)
    out = tmp_path / "s"
    res = distill(teacher, STUDENT, "digits", out, temperature=2.0, alpha=0.5,
                  **{**SMALL, "epochs": 1})
    assert res.config["distill"]["alpha"] == 0.5
    net_t, _ = runmod.load_run(teacher)
    with torch.no_grad():
        for p in net_t.parameters():
            p.add_(0.01)
    save_weights(teacher / "model.safetensors", net_t)
    with pytest.raises(CheckpointError, match="changed since the run began") as e:
        runmod.resume(out, epochs=2, log=None)
    assert str(e.value).count(". ") == 0
    shutil.rmtree(teacher)
    with pytest.raises(CheckpointError, match="is gone"):
        runmod.resume(out, epochs=2, log=None)
    # a damaged record is refused before anything is loaded
    cfg = json.loads((out / "config.json").read_text())
    cfg["distill"]["temperature"] = -1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="distill"):
        runmod.resume(out, log=None)


def test_a_deeparch_weights_file_and_a_resized_teacher(tmp_path, teacher_run):
    lines = []
    big = tmp_path / "big16"
    runmod.train("INPUT(16x16x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10", "digits", big,
                 **SMALL)
    r = runmod.train(STUDENT, "digits", tmp_path / "s16", teacher=big / "model.safetensors",
                     **{**SMALL, "epochs": 1, "log": lines.append})
    assert r.config["distill"]["kind"] == "file"
    assert any("resized for it" in s and "16x16" in s for s in lines)
    t = load_teacher(teacher_run / "model.safetensors")
    assert t.kind == "file" and t.num_classes == 10 and not t.module.training


def _fake_teacher(path, pattern, classes, size):
    torch.manual_seed(0)
    m = from_pattern(pattern)
    save_weights(path, m, {"deeparch.model": pattern, "deeparch.classes": classes,
                           "deeparch.input_size": size, "deeparch.mean": [0.3] * size[0],
                           "deeparch.std": [0.4] * size[0]})
    return path


def test_bad_teachers_are_one_sentence_exit_2_and_leave_no_folder(tmp_path, teacher_run,
                                                                  capsys):
    digits = json.loads((teacher_run / "config.json").read_text())["classes"]
    three = _fake_teacher(tmp_path / "three.safetensors", "INPUT(8x8x1) -> FC-3",
                          ["a", "b", "c"], [1, 8, 8])
    names = _fake_teacher(tmp_path / "names.safetensors", "INPUT(8x8x1) -> FC-10",
                          [f"n{i}" for i in range(10)], [1, 8, 8])
    rgb = _fake_teacher(tmp_path / "rgb.safetensors", "INPUT(8x8x3) -> FC-10", digits,
                        [3, 8, 8])
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    bare = tmp_path / "bare.safetensors"
    save_weights(bare, from_pattern("INPUT(8x8x1) -> FC-10"))
    base = ["train", STUDENT, "--data", "digits", "--subset", "100", "--epochs", "1",
            "--no-progress"]
    cases = [
        (["--teacher", str(three)], "3 classes"),
        (["--teacher", str(names)], "other classes"),
        (["--teacher", str(rgb)], "3-channel"),
        (["--teacher", str(tmp_path / "nowhere")], "no teacher at"),
        (["--teacher", str(text)], "not a weights file"),
        (["--teacher", str(bare)], "does not record its model"),
        (["--teacher", str(teacher_run), "--temperature", "0"], "--temperature"),
        (["--teacher", str(teacher_run), "--temperature", "-3"], "--temperature"),
        (["--teacher", str(teacher_run), "--alpha", "1.5"], "--alpha"),
        (["--teacher", str(teacher_run), "--alpha", "nan"], "--alpha"),
        (["--temperature", "4"], "--teacher"),
        (["--alpha", "0.5"], "--teacher"),
        (["--teacher", str(teacher_run), "--overfit", "20"], "--overfit"),
    ]
    for i, (extra, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main([*base, "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (extra, err)
        assert not out.exists(), extra
    # argparse refuses a temperature that is not a number
    with pytest.raises(SystemExit) as e:
        main([*base, "--out", str(tmp_path / "x"), "--teacher", str(teacher_run),
              "--temperature", "hot"])
    assert e.value.code == 2 and not (tmp_path / "x").exists()
    capsys.readouterr()
    # --resume takes no teacher
    assert main(["train", "--resume", str(teacher_run), "--teacher", str(teacher_run)]) == 2
    assert "--teacher" in capsys.readouterr().err
    # the API: typed errors
    with pytest.raises(EdgeError):
        runmod.train(STUDENT, "digits", tmp_path / "api", teacher=three, **SMALL)
    with pytest.raises(TrainingError):
        runmod.train(STUDENT, "digits", tmp_path / "api", temperature=2.0, **SMALL)
    assert not (tmp_path / "api").exists()


def test_cli_trains_a_student_with_a_teacher(tmp_path, teacher_run, capsys):
    out = tmp_path / "student"
    assert main(["train", STUDENT, "--data", "digits", "--out", str(out), "--teacher",
                 str(teacher_run), "--temperature", "4", "--alpha", "0.9", "--subset", "200",
                 "--epochs", "2", "--batch-size", "32", "--no-progress"]) == 0
    assert "distilling from the teacher" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["distill"]["temperature"] == 4.0 and cfg["distill"]["alpha"] == 0.9
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 3
