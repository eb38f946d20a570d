"""Fault injection on run folders: what a user owns is never deleted, a folder in use is
never written twice, kills and signals leave runs that resume, resume does what the
README says, and a run folder from someone else is untrusted input.

User errors must give exit status 2, one sentence on stderr, no traceback and no
half-written file."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deeparch.cli import main
from deeparch.errors import CheckpointError, DataError
from deeparch.io import atomic_path, write_text
from deeparch.train import run as runmod
from deeparch.train.runfolder import LOCK, MARKER, RunInUseError, RunLock

PATTERN = "INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10"
SMALL = ["--subset", "120", "--batch-size", "40", "--no-progress", "--val-split", "0.25"]
ROOT = Path(__file__).resolve().parents[2]


def _one_sentence(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("deeparch: error: "), err
    assert "Traceback" not in err
    return err


def _train(out, *extra, epochs=2):
    return main(["train", PATTERN, "--data", "digits", "--out", str(out), "--epochs", str(epochs),
                 *SMALL, *extra])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "deeparch", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 3-epoch run (schedule none), shared read-only by several tests."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert _train(out, epochs=3) == 0
    return out


# --------------------------------------------------------------------------- 1. never delete

def test_force_never_touches_a_folder_that_holds_no_run(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("config.json", "log.csv", "metrics.json", "notes.txt"):
        (out / name).write_text(f"the user's {name}\n")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.safetensors").write_text("the user's own file\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert _train(out, "--force") == 2
    err = _one_sentence(capsys.readouterr().err)
    assert "holds no deeparch run" in err and "--force" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (out / MARKER).exists() and not (out / LOCK).exists()


def test_force_replaces_only_deeparchs_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    (out / "my-notes.txt").write_text("keep me")
    (out / "checkpoints" / "my-export.onnx").write_text("keep me too")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "README").write_text("and me")
    old_model = _sha(out / "model.safetensors")
    assert _train(out, "--force", "--seed", "5") == 0
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert (out / "checkpoints" / "my-export.onnx").read_text() == "keep me too"
    assert (out / "tensorboard" / "README").read_text() == "and me"
    assert _sha(out / "model.safetensors") != old_model        # really a new run
    capsys.readouterr()


def test_without_force_an_existing_run_is_refused_and_kept(finished, capsys):
    before = _sha(finished / "model.safetensors")
    assert _train(finished) == 2
    err = _one_sentence(capsys.readouterr().err)
    assert "already holds a deeparch run" in err and "--resume" in err
    assert _sha(finished / "model.safetensors") == before


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["train", "INPUT(8x8x1) -> CONV3-8 -> FC-3", "--data", "digits", "--out",
                 str(out), *SMALL]) == 2           # 3 outputs for 10 classes
    _one_sentence(capsys.readouterr().err)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "INPUT(8x8x1) -> CONV3-8 -> FC-3", "--data", "digits", "--out",
                 str(empty), *SMALL]) == 2
    capsys.readouterr()
    assert empty.is_dir() and not list(empty.iterdir())   # the user's empty folder stays


# --------------------------------------------------------------------------- locking

_HOLD = """
import sys, time
from pathlib import Path
from deeparch.train.runfolder import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_folder_in_use_is_refused_and_a_stale_lock_recovered(finished, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(finished)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["train", "--resume", str(finished), "--no-progress"],
                     ["train", PATTERN, "--data", "digits", "--out", str(finished), "--force",
                      *SMALL]):
            assert main(args) == 2
            err = _one_sentence(capsys.readouterr().err)
            assert "in use by another deeparch process" in err and f"process {holder.pid}" in err
        with pytest.raises(RunInUseError):
            RunLock(finished).acquire()
    finally:
        holder.kill()                    # SIGKILL: the lock file stays behind, stale
        holder.wait()
    assert (finished / LOCK).exists()
    assert main(["train", "--resume", str(finished), "--no-progress"]) == 0   # recovered
    assert not (finished / LOCK).exists()
    capsys.readouterr()


def test_two_trainings_into_one_new_folder_one_wins(tmp_path):
    out = tmp_path / "race"
    args = ["train", PATTERN, "--data", "digits", "--out", str(out), "--epochs", "1", *SMALL]
    procs = [subprocess.Popen([sys.executable, "-m", "deeparch", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    assert "Traceback" not in err and ("in use" in err or "already holds" in err)
    assert load_file(out / "model.safetensors")


# --------------------------------------------------------------------------- temp files, umask

def test_temp_files_left_by_a_kill_are_removed_by_the_next_run(finished, capsys):
    stale = [finished / ".model.safetensors.0123456789ab.deeparch-tmp",
             finished / "checkpoints" / ".last.safetensors.ba9876543210.deeparch-tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    lookalike = finished / ".my.0123456789ab.notes"          # not deeparch's: stays
    lookalike.write_text("mine")
    assert main(["train", "--resume", str(finished), "--no-progress"]) == 0
    capsys.readouterr()
    assert not any(p.exists() for p in stale) and lookalike.read_text() == "mine"
    lookalike.unlink()


def test_atomic_writes_leave_the_umask_alone(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        def forbidden(*a):
            raise AssertionError("io must not change the process-wide umask")
        monkeypatch.setattr(os, "umask", forbidden)
        write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
        with pytest.raises(KeyboardInterrupt):
            with atomic_path(tmp_path / "b.bin") as tmp:
                tmp.write_bytes(b"half")
                raise KeyboardInterrupt
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    finally:
        monkeypatch.undo()
        os.umask(old)


# --------------------------------------------------------------------------- resume semantics

def _cfg(out):
    return json.loads((out / "config.json").read_text())


def test_resume_refuses_options_it_would_ignore(finished, capsys):
    before = (finished / "config.json").read_bytes()
    for flags, named in ((["--lr", "0.5"], "--lr"), (["--batch-size", "8"], "--batch-size"),
                         (["--optimizer", "sgd"], "--optimizer"),
                         (["--schedule", "cosine"], "--schedule"),
                         (["--augment", "rotation=5"], "--augment"), (["--force"], "--force"),
                         (["-o", "x=1"], "--option"), (["--image-size", "16"], "--image-size")):
        assert main(["train", "--resume", str(finished), *flags]) == 2, flags
        err = _one_sentence(capsys.readouterr().err)
        assert named in err and "own settings" in err
    assert (finished / "config.json").read_bytes() == before


def test_resume_cannot_shorten_a_finished_run(finished, capsys):
    before = (finished / "config.json").read_bytes()
    assert main(["train", "--resume", str(finished), "--epochs", "2", "--no-progress"]) == 2
    err = _one_sentence(capsys.readouterr().err)
    assert "already trained 3 epochs" in err
    assert (finished / "config.json").read_bytes() == before


def test_resume_cannot_stretch_a_length_dependent_schedule(tmp_path, capsys):
    out = tmp_path / "cycle"
    assert _train(out, "--schedule", "onecycle", epochs=2) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 2
    err = _one_sentence(capsys.readouterr().err)
    assert "onecycle" in err and "2 epochs" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_extends_a_constant_schedule_bit_identically(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(a, "--schedule", "step", "--step-size", "1", epochs=3) == 0
    assert _train(b, "--schedule", "step", "--step-size", "1", epochs=2) == 0
    assert main(["train", "--resume", str(b), "--epochs", "3", "--no-progress"]) == 0
    capsys.readouterr()
    assert _cfg(b)["train"]["epochs"] == 3
    for name in ("model.safetensors", "checkpoints/last.safetensors"):
        assert _sha(a / name) == _sha(b / name), name


def test_a_damaged_last_checkpoint_offers_best(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, epochs=3) == 0
    last = out / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])                 # torn by hand
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = _one_sentence(capsys.readouterr().err)
    assert "damaged" in err and "--from best" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before   # no restart
    best_epoch = json.loads((out / "checkpoints" / "best.json").read_text())["epoch"]
    assert main(["train", "--resume", str(out), "--from", "best", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"after epoch {best_epoch} of 3 (from the best checkpoint)" in printed or \
        "already finished" in printed
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert load_file(last)                                     # readable again
    assert main(["train", "--from", "best", PATTERN, "--data", "digits", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--from applies to --resume" in _one_sentence(capsys.readouterr().err)


def test_lost_checkpoints_with_finished_epochs_are_not_restarted(finished, tmp_path, capsys):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "checkpoints")
    before = _sha(out / "model.safetensors")
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    assert "no checkpoint" in _one_sentence(capsys.readouterr().err)
    assert _sha(out / "model.safetensors") == before


# --------------------------------------------------------------------------- output, signals

def test_identical_runs_write_byte_identical_safetensors(finished, tmp_path, capsys):
    again = tmp_path / "again"
    assert _train(again, epochs=3) == 0
    capsys.readouterr()
    for name in ("model.safetensors", "checkpoints/last.safetensors",
                 "checkpoints/best.safetensors"):
        assert _sha(finished / name) == _sha(again / name), name
    # the wall-clock seconds live beside them, in the .json copies and history.json
    assert all(isinstance(e["seconds"], float) for e in
               json.loads((again / "history.json").read_text()))
    assert "seconds" in json.loads((again / "checkpoints" / "last.json").read_text())


def test_train_into_a_closed_pipe_keeps_training(tmp_path):
    out = tmp_path / "piped"
    proc = subprocess.Popen([sys.executable, "-m", "deeparch", "train", PATTERN, "--data",
                             "digits", "--out", str(out), "--epochs", "3", *SMALL],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()                 # `| head -1`: read one line, then leave
    proc.stdout.close()
    code = proc.wait(timeout=300)
    err = proc.stderr.read().decode()
    assert code == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert load_file(out / "model.safetensors")


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "deeparch", "train", PATTERN, "--data",
                             "digits", "--out", str(out), "--epochs", "400", *SMALL],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == 143, err
    assert "Traceback" not in err and f"--resume {out}" in err and "SIGTERM" in err
    assert not (out / LOCK).exists()
    assert not [p for p in out.rglob("*.deeparch-tmp")]
    state = json.loads((out / "checkpoints" / "last.json").read_text())
    assert 1 <= state["epoch"] < 400
    cfg = _cfg(out)
    cfg["train"]["epochs"] = state["epoch"] + 1          # only to keep the test short:
    write_text(out / "config.json", json.dumps(cfg))     # the run's own length, edited
    r = _cli("train", "--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"after epoch {state['epoch']}" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_an_epochs_writes_waits_until_they_agree(tmp_path, monkeypatch, sig,
                                                                capsys):
    """The signal arrives after history and ``best``, before ``last`` (CI once hit such a
    moment by chance: last.json said epoch 4, last.safetensors epoch 5); the stop waits
    until history, best, last and their .json copies all say the same epoch."""
    from deeparch.train.checkpoint import read_checkpoint_state
    from deeparch.train.trainer import Trainer
    real = Trainer.save

    def save(self, path):
        if Path(path).name.startswith("last") and self.epoch == 2:
            os.kill(os.getpid(), sig)
        return real(self, path)
    monkeypatch.setattr(Trainer, "save", save)
    out = tmp_path / "held"
    code = _train(out, epochs=5)
    assert code == (143 if sig == signal.SIGTERM else 130)
    assert "--resume" in capsys.readouterr().err
    ck = out / "checkpoints"
    assert read_checkpoint_state(ck / "last.safetensors")["epoch"] == 2
    assert json.loads((ck / "last.json").read_text())["epoch"] == 2
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --------------------------------------------------------------------------- untrusted run folders

def _damage(out: Path, edit) -> None:
    cfg = _cfg(out)
    edit(cfg)
    (out / "config.json").write_text(json.dumps(cfg))


BAD_CONFIGS = {
    "not json": None,
    "a list": lambda c: c.clear() or c.update({"format": "deeparch-run", "x": []}),
    "no train section": lambda c: c.pop("train"),
    "no model": lambda c: c.pop("model"),
    "model is a number": lambda c: c.update(model=7),
    "input_size strings": lambda c: c.update(input_size=["1", "8", "8"]),
    "input_size huge": lambda c: c.update(input_size=[1, 10 ** 9, 10 ** 9]),
    "classes short": lambda c: c.update(classes=["a"]),
    "num_classes bool": lambda c: c.update(num_classes=True),
    "mean NaN": lambda c: c.update(mean=[float("nan")]),
    "std zero": lambda c: c.update(std=[0.0]),
    "train lr string": lambda c: c["train"].update(lr="fast"),
    "train unknown key": lambda c: c["train"].update(rm_rf=True),
    "train epochs huge float": lambda c: c["train"].update(epochs=1e300),
    "options object": lambda c: c.update(model_options={"a": {"b": 1}}),
    "pattern bomb": lambda c: c.update(model="INPUT(8x8x1) -> " + "[" * 5000 + "FC-10" + "]" * 5000),
    "unknown model": lambda c: c.update(model="resnet9000"),
    "fingerprint list": lambda c: c.update(fingerprint=[1, 2]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_malformed_config_json_is_one_sentence(finished, tmp_path, case, capsys):
    import shutil
    out = tmp_path / "theirs"
    shutil.copytree(finished, out)
    if BAD_CONFIGS[case] is None:
        (out / "config.json").write_text('{"format": "deeparch-run", "model": ')
    else:
        _damage(out, BAD_CONFIGS[case])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for args in (["evaluate", str(out)], ["train", "--resume", str(out), "--no-progress"]):
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, (case, args, err)
        _one_sentence(err)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_recorded_data_path_is_never_quoted(finished, tmp_path, capsys):
    import shutil
    secret = tmp_path / "secret.csv"
    secret.write_text("label,password\nhunter2-SECRET,1\n")
    out = tmp_path / "theirs"
    shutil.copytree(finished, out)
    _damage(out, lambda c: c.update(data=str(secret)))
    for args in (["evaluate", str(out)], ["train", "--resume", str(out), "--no-progress"]):
        assert main(args) == 2
        err = _one_sentence(capsys.readouterr().err)
        assert "SECRET" not in err and "hunter2" not in err and str(secret) in err


def test_malformed_configs_run_in_bounded_memory(finished, tmp_path):
    """The worst of them (a pattern bomb, a huge input size) under a 3 GiB address-space
    limit, in a process of their own."""
    import shutil
    for case in ("pattern bomb", "input_size huge"):
        out = tmp_path / case.replace(" ", "_")
        shutil.copytree(finished, out)
        _damage(out, BAD_CONFIGS[case])
        code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
                "from deeparch.cli import main; sys.exit(main(['evaluate', sys.argv[1]]))")
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode == 2, (case, r.stderr[-2000:])
        _one_sentence(r.stderr)


# --------------------------------------------------------------------------- the data

def _csv(path: Path, rows):
    path.write_text("label," + ",".join(f"p{i}" for i in range(64)) + "\n" +
                    "".join(f"{lab}," + ",".join(str((lab * 20 + i + k) % 256) for i in range(64))
                            + "\n" for k, lab in enumerate(rows)))


def test_evaluate_notices_changed_data(tmp_path, capsys):
    data = tmp_path / "d.csv"
    _csv(data, [k % 3 for k in range(60)])
    out = tmp_path / "run"
    assert main(["train", "INPUT(8x8x1) -> FC-3", "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--no-progress"]) == 0
    assert set(_cfg(out)["fingerprint"]) == {"train", "test"}
    assert main(["evaluate", str(out)]) == 0
    _csv(data, [(k + 1) % 3 for k in range(60)])               # relabelled since
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    assert "no longer the data" in _one_sentence(capsys.readouterr().err)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    assert "no longer the data" in _one_sentence(capsys.readouterr().err)


def test_one_class_is_caught_before_training(tmp_path, capsys):
    data = tmp_path / "one.csv"
    _csv(data, [4] * 30)
    out = tmp_path / "run"
    assert main(["train", "INPUT(8x8x1) -> FC-5", "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 2
    assert "only one class" in _one_sentence(capsys.readouterr().err)
    assert not out.exists()


def _image_folder(root: Path, split: str, classes):
    from PIL import Image
    for k, name in enumerate(classes):
        (root / split / name).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (8, 8), color=20 * k + i).save(root / split / name / f"{i}.png")


def test_test_classes_the_training_split_lacks_are_caught(tmp_path, capsys):
    _image_folder(tmp_path / "a", "train", ["cat", "dog"])
    _image_folder(tmp_path / "a", "test", ["cat", "dog", "eel"])
    _image_folder(tmp_path / "b", "train", ["cat", "eel"])
    _image_folder(tmp_path / "b", "test", ["cat", "dog"])
    for d, said in (("a", "only in test: eel"), ("b", "only in training: eel")):
        out = tmp_path / f"run-{d}"
        assert main(["train", "INPUT(8x8x1) -> FC-2", "--data", str(tmp_path / d), "--out",
                     str(out), "--no-progress"]) == 2
        assert said in _one_sentence(capsys.readouterr().err)
        assert not out.exists()
    with pytest.raises(DataError):
        runmod.check_labels(*runmod.load_data(str(tmp_path / "a"))[:2])


def test_api_errors_are_typed(finished, tmp_path):
    with pytest.raises(CheckpointError):
        runmod.train(PATTERN, "digits", finished, epochs=1)
    with pytest.raises(CheckpointError):
        runmod.resume(finished, checkpoint="middle")


# --------------------------------------------------------------------------- first contact

def test_an_expanded_npz_trains_and_never_tests_on_copies(tmp_path, capsys):
    npz = tmp_path / "digits_x3.npz"
    assert main(["augment", "--data", "digits", "--augment", "rotation=10", "--expand", "3",
                 "--save", str(npz)]) == 0
    train, test, note = runmod.load_data(str(npz))
    assert "holding out" in note and train.classes == [str(i) for i in range(10)]
    assert set(train.groups.tolist()).isdisjoint(test.groups.tolist())
    assert len(test) % 3 == 0 and torch.bincount(test.groups).max() == 3   # whole groups
    from deeparch.train.config import TrainConfig
    from deeparch.train.trainer import split_data
    fit_part, val = split_data(train, TrainConfig(val_split=0.2))
    assert set(fit_part.groups.tolist()).isdisjoint(val.groups.tolist())
    out = tmp_path / "run"
    assert main(["train", PATTERN, "--data", str(npz), "--out", str(out), "--epochs", "1",
                 "--no-progress"]) == 0
    assert _cfg(out)["samples"]["test"] == len(test)
    capsys.readouterr()
    for bad in (["--expand", "0", "--save", str(tmp_path / "z.npz")], ["--preview", "p.png", "--n", "0"]):
        assert main(["augment", "--data", "digits", "--augment", "rotation=10", *bad]) == 2
        err = _one_sentence(capsys.readouterr().err)
        assert ("--expand" in err or "--n" in err or " n " in err), err
    assert not (tmp_path / "z.npz").exists()


def test_signals_at_random_moments_then_resume_reach_the_uninterrupted_bytes(tmp_path, capsys):
    """SIGKILL and SIGTERM at seeded random moments (also mid-write), each followed by
    --resume: the final files are byte-identical to an uninterrupted run's."""
    import random
    args = ["--epochs", "6", *SMALL, "--schedule", "cosine", "--augment", "rotation=5"]
    ref = tmp_path / "ref"      # in a process of its own too: the same threads as the others
    r = _cli("train", PATTERN, "--data", "digits", "--out", str(ref), *args)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "hit"
    rng = random.Random(8)
    cmd = [sys.executable, "-m", "deeparch", "train", PATTERN, "--data", "digits", "--out",
           str(out), *args]
    for attempt, sig in enumerate((signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        # wait until this process has written a checkpoint of its own (so it is training,
        # past its start-up), then a random moment
        last = out / "checkpoints" / "last.json"
        seen = last.stat().st_mtime_ns if last.exists() else None
        deadline = time.time() + 120
        while (not last.exists() or last.stat().st_mtime_ns == seen) \
                and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        err = proc.stderr.read()
        assert "Traceback" not in err, err
        assert code in (0, -9, 143), (sig, code, err)
        if code == 0:
            break
        cmd = [sys.executable, "-m", "deeparch", "train", "--resume", str(out), "--no-progress"]
    r = _cli("train", "--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    for name in ("model.safetensors", "checkpoints/last.safetensors"):
        assert _sha(ref / name) == _sha(out / name), name
    assert not (out / LOCK).exists() and not list(out.rglob("*.deeparch-tmp"))


@pytest.mark.parametrize("kill_at", [2, 3, 4, 5])
def test_a_kill_between_any_two_checkpoint_writes_resumes_to_the_same_bytes(tmp_path, capsys,
                                                                           monkeypatch, kill_at):
    """Stop the process at the k-th checkpoint write (as a signal arriving there would):
    best and last must never disagree, whatever the moment."""
    args = ["--lr", "0.01", "--epochs", "3"]
    ref = tmp_path / "ref"
    assert _train(ref, *args) == 0
    hist = json.loads((ref / "history.json").read_text())
    assert len({e["val_accuracy"] for e in hist}) > 1      # best moves: both files written
    real, calls = runmod.Trainer.save, {"n": 0}

    def save(self, path):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return real(self, path)
    monkeypatch.setattr(runmod.Trainer, "save", save)
    out = tmp_path / "hit"
    assert _train(out, *args) == 130
    monkeypatch.setattr(runmod.Trainer, "save", real)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    for name in ("model.safetensors", "checkpoints/last.safetensors",
                 "checkpoints/best.safetensors"):
        assert _sha(ref / name) == _sha(out / name), name
