"""The command line: thin over the API, one sentence and exit status 2 for user errors."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deeparch.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "deeparch" in capsys.readouterr().out
    for cmd in ("models", "summary", "explain", "compare", "info"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_summary_vgg16_table_and_json(capsys):
    code, out, _ = run(capsys, "summary", "vgg16")
    assert code == 0 and "Total params: 138,357,544" in out and "15,470,264,320" in out
    code, out, _ = run(capsys, "summary", "fashion_cnn", "--format", "json")
    assert json.loads(out)["total_params"] == 693_962
    code, out, _ = run(capsys, "summary", "fashion_cnn", "--format", "keras")
    assert "(None, 26, 26, 32)" in out
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "markdown")
    assert out.startswith("**lenet5**")


def test_summary_of_a_pattern_and_options(capsys):
    code, out, _ = run(capsys, "summary",
                       "INPUT(32x32x3) -> [[CONV3-32 -> RELU]*2 -> POOL2]*3 -> [FC-512 -> RELU]*2 -> FC-10")
    assert code == 0 and "Total params: 577,578" in out
    code, out, _ = run(capsys, "summary", "alexnet", "-o", "groups=2")
    assert "Total params: 60,965,224" in out


def test_explain_alexnet(capsys):
    code, out, _ = run(capsys, "explain", "alexnet", "--layer", "conv1", "--layer", "pool1")
    assert code == 0 and "= 55  ->  55x55x96" in out and "= 27  ->  27x27x96" in out


def test_models_info_compare(capsys, tmp_path):
    code, out, _ = run(capsys, "models", "vgg1?")
    assert code == 0 and "vgg16" in out and "138.36M" in out
    code, out, _ = run(capsys, "info", "lenet5", "--format", "json")
    assert json.loads(out)["published_params"] == 61_706
    png = tmp_path / "chart.png"
    code, out, _ = run(capsys, "compare", "alexnet", "vgg11", "lenet5", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "chart.png"]


@pytest.mark.parametrize("argv,fragment", [
    (["summary", "alexnett"], "did you mean alexnet"),
    (["summary", "INPUT(32x32x3) -> CONVV3 -> FC-10"], "unknown layer"),
    (["summary", "alexnet", "--input-size", "3,8,8"], "11x11 kernel"),
    (["summary", "vgg16", "--input-size", "3,a,224"], "not numeric"),
    (["summary", "vgg16", "--input-size", "3,224"], "has 2 values"),
    (["explain", "alexnet", "--layer", "conv9"], "no layer 'conv9'"),
    (["summary", "vgg16", "-o", "widht=3"], "no option 'widht'"),
    (["summary", "vgg16", "-o", "oops"], "KEY=VALUE"),
])
def test_user_errors_exit_2_with_one_sentence(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("deeparch: error: ") and fragment in err
    assert "Traceback" not in err


def test_bad_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["summary", "vgg16", "--formatt", "json"])
    assert e.value.code == 2


def test_console_script_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "deeparch", "summary", "lenet5", "--format", "json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and json.loads(r.stdout)["total_params"] == 61_706


def test_summaries_stay_off_torchs_compiler():
    """Tracing on meta tensors must not pull in torch's compiler stack (seconds per process):
    the shape rules of layers/probe.py cover what the zoo uses."""
    code = ("import sys, deeparch\n"
            "for n in deeparch.list_models(): deeparch.summary(n)\n"
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```")[0].strip() for b in readme.split("```bash")[1:3]]
    assert len(blocks) == 2 and "torch==2.13.0" in blocks[0] and "torch==2.13.0" in blocks[1]
    assert blocks[1] in ci.splitlines()


# --------------------------------------------------------------------------- cli_message

def _message(make):
    from deeparch.errors import DeeparchError
    with pytest.raises(DeeparchError) as e:
        make()
    return str(e.value)


@pytest.mark.parametrize("changes,api,flag", [
    (dict(val_split=2), "val_split", "--val-split must be a fraction in [0, 1), got 2"),
    (dict(batch_size=0), "batch_size", "--batch-size must be a whole number >= 1, got 0."),
    (dict(grad_clip=-1), "grad_clip", "--grad-clip must be a number >= 0.0, got -1."),
    (dict(early_stopping=-2), "early_stopping", "--early-stopping must be a whole number >= 0"),
    (dict(label_smoothing=1), "label_smoothing", "--label-smoothing must be a number >= 0.0 and"),
    (dict(warmup_epochs=5, epochs=3), "warmup_epochs",
     "--warmup (5) must be shorter than the run (3 epochs)."),
    (dict(warmup_epochs=1, schedule="onecycle"), "warmup_epochs",
     "leave --warmup at 0 with --schedule onecycle."),
    (dict(nesterov=True, optimizer="adam"), "nesterov=True",
     "--nesterov needs --optimizer sgd with a momentum above 0."),
    (dict(epochs=0), "epochs must", "--epochs must be a whole number >= 1, got 0."),
    (dict(lr=-1.0), "lr must", "--lr must be a number > 0.0, got -1.0."),
])
def test_cli_message_names_the_flags(changes, api, flag):
    from deeparch.cli import cli_message
    from deeparch.train.config import TrainConfig
    text = _message(lambda: TrainConfig(**changes))
    assert api in text  # the API's own words, which the command must not show
    said = cli_message(text)
    assert flag in said and not re.search(rf"(?<![\w-]){re.escape(api)}", said)
    assert cli_message(said) == said


def test_cli_message_on_data_messages(tmp_path, monkeypatch):
    from deeparch.cli import cli_message
    from deeparch.data import load_dataset
    from deeparch.data.sources import _size_hw
    from deeparch.train.metrics import tta_views
    monkeypatch.setenv("DEEPARCH_DATA", str(tmp_path / "cache"))
    text = _message(lambda: load_dataset("mnist", root=tmp_path))
    said = cli_message(text)
    assert "download=True" in text and said.endswith("or ask for --download.")
    assert "download=True" not in said and str(tmp_path / "mnist") in said  # paths untouched
    said = cli_message(_message(lambda: _size_hw(0)))
    assert said.startswith("--image-size must be a positive int")
    import torch
    said = cli_message(_message(lambda: tta_views(torch.zeros(1, 1, 8, 8), "center", 40)))
    assert said.startswith("--crop-size must be a whole number of pixels")


def test_cli_message_leaves_everything_else_alone():
    from deeparch.cli import cli_message
    for text in ("/runs/val_split/batch_size.npz is truncated; download it again.",
                 "the training data must hold two classes; 10 epochs were asked.",
                 "model 'vgg16' has no option 'widht'; its options are: num_classes, img_size.",
                 "use -o alpha=0.5 or --val-split 0.1",
                 "restore_best must be true or false, got 3."):  # --last-weights says the opposite
        assert cli_message(text) == text
    assert cli_message("which must be model, best or last, got 'x'.") == \
        "--weights must be model, best or last, got 'x'."
    assert cli_message("seed=13 and optimizer=\"sgd\"; subset must be >= 2") == \
        "--seed 13 and --optimizer sgd; --subset must be >= 2"


def test_cli_message_covers_every_training_flag():
    """Each TrainConfig field the command sets is said with a flag the train parser has."""
    from deeparch.cli import _TRAIN_FIELDS, build_parser, cli_message
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {o for a in train._actions for o in a.option_strings}
    for dest, field in _TRAIN_FIELDS.items():
        action = next(a for a in train._actions if a.dest == dest)
        if action.const is False:  # --last-weights stores restore_best=False
            assert cli_message(f"{field}=False") in flags
            continue
        said = cli_message(f"{field} must be something.").split()[0]
        assert said in flags, (field, said)


def test_flag_for_reads_the_parser():
    from deeparch.cli import flag_for
    assert flag_for("restore_best") == "--last-weights" and flag_for("warmup") == "--warmup"
    assert flag_for("option") == "--option" and flag_for("val_split") == "--val-split"
    assert flag_for("input_size") == "--input-size"
