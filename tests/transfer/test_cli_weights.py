"""`deeparch identify` and `deeparch convert`: thin over deeparch.transfer."""
import json

import torch
from safetensors.torch import load_file

import deeparch
from deeparch.cli import main
from deeparch.train.checkpoint import save_weights


def test_identify_and_convert_from_the_cli(tmp_path, capsys):
    torch.manual_seed(0)
    src = tmp_path / "sq.safetensors"
    save_weights(src, deeparch.create_model("squeezenet1_1", num_classes=7))
    assert main(["identify", str(src), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0] == "squeezenet1_1"
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    a, b = load_file(src), load_file(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_weight_files_are_one_sentence_and_write_nothing(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    src = tmp_path / "sq.safetensors"
    save_weights(src, deeparch.create_model("squeezenet1_1", num_classes=7))
    out = tmp_path / "out.safetensors"
    for args in (["identify", str(text)], ["identify", str(tmp_path / "missing.pth")],
                 ["convert", str(text), "-o", str(out)],
                 ["convert", str(src), "--model", "resnet18", "-o", str(out)]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("deeparch: error: "), err
    assert "fits squeezenet1_1" in err
    assert not out.exists() and not list(tmp_path.glob(".*deeparch-tmp"))
