"""Weight files that are not what they claim, pickles that would run code, and deeparch's own
files: no torchvision needed (tests/transfer/test_torchvision_weights.py has the reference)."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

import deeparch
from deeparch.errors import (DeeparchError, UnknownModelError, UnsafeWeightsError,
                             WeightsError, WeightsMismatchError)
from deeparch.train.checkpoint import save_checkpoint, save_weights
from deeparch.transfer import convert, identify, load_weights, read_weights


def _one_sentence(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg.endswith(".") and "Traceback" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return deeparch.create_model("squeezenet1_1", num_classes=7).eval()


# --- files that are not weights --------------------------------------------------------------

@pytest.mark.parametrize("content, said", [
    (b"", "an empty file"),
    (b"model: resnet50\nlr: 0.1\n", "text"),
    (bytes((i * 37 + 11) % 256 for i in range(1024)), "bytes of no weights format"),
])
def test_a_file_that_is_not_weights_says_so(tmp_path, content, said):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    for call in (lambda: read_weights(path), lambda: identify(path),
                 lambda: deeparch.create_model("resnet18", weights=path)):
        with pytest.raises(WeightsError) as e:
            call()
        msg = _one_sentence(e.value)
        assert "is not a weights file" in msg and said in msg and str(path) in msg


@pytest.mark.parametrize("head", [b"\x80", b"PK\x03\x04"], ids=["pickle-like", "zip-like"])
def test_random_bytes_that_start_like_a_pth(tmp_path, head):
    path = tmp_path / "weights.pth"
    path.write_bytes(head + bytes((i * 37 + 11) % 256 for i in range(4096)))
    with pytest.raises(WeightsError) as e:
        read_weights(path)
    assert not isinstance(e.value, UnsafeWeightsError)
    assert "not a readable PyTorch weights file" in _one_sentence(e.value)


def test_a_missing_file_and_a_folder_without_weights(tmp_path):
    with pytest.raises(WeightsError, match="no weights file at"):
        read_weights(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="a folder without model.safetensors"):
        read_weights(tmp_path)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_truncated_pth_is_corrupt_not_unsafe(tmp_path, small, zipped):
    path = tmp_path / "w.pth"
    torch.save(small.state_dict(), path, _use_new_zipfile_serialization=zipped)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 200):
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError) as e:
            read_weights(path)
        assert not isinstance(e.value, UnsafeWeightsError)
        assert "truncated or corrupt" in _one_sentence(e.value)


def test_a_truncated_safetensors_file(tmp_path, small):
    path = save_weights(tmp_path / "w.safetensors", small)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightsError) as e:
        read_weights(path)
    assert "truncated or corrupt" in _one_sentence(e.value)


def test_a_pth_without_a_state_dict(tmp_path):
    path = tmp_path / "t.pth"
    torch.save(torch.ones(3), path)
    with pytest.raises(WeightsError, match="holds a Tensor, not a state dict"):
        read_weights(path)
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_weights(path)


# --- pickles that would run code -------------------------------------------------------------

class _Payload:
    """Unpickled by a plain pickle.load, this creates the marker file (``open(path, 'w')``)
    or runs ``touch`` (``os.system``)."""

    def __init__(self, marker, how="open"):
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch '{self.marker}'",))
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind, how", [("zip", "open"), ("zip", "system"), ("legacy", "open"),
                                       ("raw-pickle", "open"), ("raw-pickle", "system")])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, kind, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if kind == "raw-pickle":
        path.write_bytes(pickle.dumps(_Payload(marker, how), protocol=2))
    else:
        torch.save({"conv1.weight": torch.ones(1), "x": _Payload(marker, how)}, path,
                   _use_new_zipfile_serialization=kind == "zip")
    # the payload is real: a plain unpickler would create the file
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe, how)))
    assert probe.exists()
    for call in (lambda: read_weights(path), lambda: identify(path),
                 lambda: load_weights(deeparch.create_model("resnet18"), path),
                 lambda: deeparch.create_model("resnet18", weights=path),
                 lambda: convert(path, "resnet18", tmp_path / "out.safetensors")):
        with pytest.raises(UnsafeWeightsError) as e:
            call()
        msg = _one_sentence(e.value)
        assert "would call" in msg and ("open" in msg if how == "open" else "system" in msg)
        assert "nothing in it ran" in msg
        assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    assert isinstance(e.value, WeightsError) and isinstance(e.value, DeeparchError)


def test_a_newer_protocol_pickle_payload_is_refused_too(tmp_path):
    """Protocol 4 (framed) pickles are not what torch.save writes: refused before any
    opcode that could call something."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Payload(marker, "system"), protocol=4))
    with pytest.raises(WeightsError) as e:
        read_weights(path)
    assert "nothing in it ran" in _one_sentence(e.value)
    assert not marker.exists()


# --- deeparch's own files ------------------------------------------------------------------

def test_deeparch_safetensors_round_trip(tmp_path, small):
    path = save_weights(tmp_path / "w.safetensors", small, {"model": "squeezenet1_1"})
    model = deeparch.create_model("squeezenet1_1", weights=path).eval()
    report = model.weights_report
    assert report.source == "deeparch" and report.complete and not report.renamed
    assert model.num_classes == 7                       # taken from the file
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), small(x))
    assert identify(path) == ["squeezenet1_1"]          # fits it except for the classes
    text = str(report)
    assert text.startswith("Loaded 52 of the 52 tensors of squeezenet1_1 from")
    assert "(deeparch weights)" in text


def test_run_folders_checkpoints_and_wrapped_state_dicts(tmp_path, small):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "last.safetensors", small)
    x = torch.randn(1, 3, 64, 64)
    for source in (run, run / "checkpoints" / "last.safetensors",
                   {"epoch": 3, "model": small.state_dict()},
                   {f"module.{k}": v for k, v in small.state_dict().items()}):
        model = deeparch.create_model("squeezenet1_1", weights=source).eval()
        with torch.no_grad():
            assert torch.equal(model(x), small(x))
    pth = tmp_path / "ckpt.pth"
    torch.save({"state_dict": small.state_dict(), "epoch": 9}, pth)
    assert deeparch.create_model("squeezenet1_1", weights=pth).weights_report.complete


def test_another_number_of_classes_and_features_only(tmp_path, small):
    path = save_weights(tmp_path / "w.safetensors", small)
    model = deeparch.create_model("squeezenet1_1", weights=path, num_classes=3)
    report = model.weights_report
    assert set(report.initialised) == {"head.conv10.weight", "head.conv10.bias"}
    assert "the classifier: 3 classes here, 7 in the file" in str(report)
    feats = deeparch.create_model("squeezenet1_1", weights=path, features_only=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(feats(x)[-1], small.forward_features(x))


def test_another_architecture_names_the_model_the_file_fits(tmp_path, small):
    path = save_weights(tmp_path / "w.safetensors", small, {"model": "squeezenet1_1"})
    model = deeparch.create_model("mobilenet_v2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(model, path)
    msg = _one_sentence(e.value)
    assert "holds weights of another architecture than mobilenet_v2" in msg
    assert "it fits squeezenet1_1" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_shape_mismatch_names_the_first_tensor_and_both_shapes(tmp_path):
    v10 = deeparch.create_model("squeezenet1_0")
    path = save_weights(tmp_path / "v10.safetensors", v10, {"model": "squeezenet1_0"})
    # squeezenet with another width at fire2: same names, other shapes
    with pytest.raises(WeightsMismatchError) as e:
        deeparch.create_model("squeezenet1_0", weights=path, base_e=64)
    msg = _one_sentence(e.value)
    assert ("its tensor features.stage1.fire2.squeeze.conv.weight is (16, 96, 1, 1) but the "
            "model's features.stage1.fire2.squeeze.conv.weight is (8, 96, 1, 1)") in msg
    assert "it fits squeezenet1_0" in msg


def test_strict_false_reports_what_was_left(tmp_path, small):
    sd = {k: v for k, v in small.state_dict().items() if "stage3" not in k}
    model = deeparch.create_model("squeezenet1_1", num_classes=7)
    with pytest.raises(WeightsMismatchError, match="not in the file"):
        load_weights(model, sd)
    report = load_weights(model, sd, strict=False)
    assert not report.complete and all("stage3" in k for k in report.initialised)
    assert "Left at their initialisation: features.stage3" in str(report)
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        load_weights(model, sd, source="keras")


def test_convert_writes_deeparch_safetensors_atomically(tmp_path, small):
    src = tmp_path / "src.pth"
    torch.save(small.state_dict(), src)
    out = convert(src, "squeezenet1_1", tmp_path / "out.safetensors")
    again = convert(src, None, tmp_path / "again.safetensors")      # model found by identify
    assert out.read_bytes() == again.read_bytes()
    meta = read_weights(out).metadata
    assert meta["model"] == "squeezenet1_1" and meta["source"] == "deeparch"
    assert json.loads(meta["num_classes"]) == 7
    with pytest.raises(WeightsMismatchError):
        convert(src, "mobilenet_v2", tmp_path / "wrong.safetensors")
    with pytest.raises(UnknownModelError):
        convert(src, "mobilenet_v9", tmp_path / "wrong.safetensors")
    assert not (tmp_path / "wrong.safetensors").exists()
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]


def test_the_models_import_no_transfer():
    """The import direction: models never import deeparch.transfer (create_model(weights=)
    lives in transfer and deeparch.create_model is that one)."""
    import subprocess
    import sys
    code = ("import sys, deeparch.models as m; m.create_model('lenet5'); "
            "print('deeparch.transfer' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    assert deeparch.create_model is deeparch.transfer.create_model


def test_create_model_takes_the_files_input_channels(tmp_path):
    """A deeparch model trained on grey images loads without in_chans=1 spelled out."""
    from deeparch.train.checkpoint import save_weights

    torch.manual_seed(0)
    grey = deeparch.create_model("resnet20", num_classes=10, in_chans=1)
    save_weights(tmp_path / "grey.safetensors", grey)
    back = deeparch.create_model("resnet20", weights=tmp_path / "grey.safetensors")
    assert back.features.stem.conv1.in_channels == 1
    for (k, a), b in zip(grey.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
