"""deeparch.transfer.predict and `deeparch predict`: a tiny run trained on the embedded digits,
a resnet20 with 1000 outputs and torchvision's conventions, images written with PIL."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import deeparch
from deeparch.cli import main
from deeparch.errors import DataError, DeeparchError, ModelOptionError
from deeparch.train.checkpoint import save_weights
from deeparch.train.metrics import predict as metrics_predict
from deeparch.train.run import load_data, load_run, train
from deeparch.transfer import (IMAGENET_CLASSES, cut, load_predictor, plot_predictions,
                               predict, read_images)
from deeparch.transfer import preprocess as P

PATTERN = "INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    train(PATTERN, "digits", out, epochs=3, lr=0.01, log=None, progress=False)
    return out


@pytest.fixture(scope="module")
def digits():
    _, test, _ = load_data("digits")
    return test


def _write_digits(folder, test, n):
    paths = []
    for i in range(n):
        p = folder / f"digit{i}.png"
        Image.fromarray(test.images[i, 0].numpy(), "L").save(p)
        paths.append(p)
    return paths


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_top1_agrees_with_evaluate_and_probabilities_sum_to_one(run, digits, tmp_path, capsys):
    paths = _write_digits(tmp_path, digits, 12)
    net, cfg = load_run(run)
    probs = metrics_predict(net, digits.images[:12], mean=cfg["mean"], std=cfg["std"])
    code, out, err = _cli(capsys, "predict", run, *paths, "--topk", "3", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert [p["image"] for p in got["predictions"]] == [str(p) for p in paths]
    top1 = [p["top"][0]["index"] for p in got["predictions"]]
    assert top1 == probs.argmax(1).tolist()
    assert np.allclose([p["top"][0]["probability"] for p in got["predictions"]],
                       probs.max(1).values.numpy(), atol=1e-6)
    # the run names its classes; the trained run gets most digits right
    assert got["predictions"][0]["top"][0]["class"] == cfg["classes"][top1[0]]
    assert (torch.tensor(top1) == digits.labels[:12]).float().mean() > 0.5

    pred = load_predictor(run)
    full = pred.predict(paths, topk=10)
    for p in full:
        assert abs(sum(p.probabilities) - 1.0) < 1e-5
        assert p.probabilities == sorted(p.probabilities, reverse=True)
        assert sorted(p.indices) == list(range(10))
    assert [p.indices[0] for p in full] == top1


def test_text_output_and_plot(run, digits, tmp_path, capsys):
    paths = _write_digits(tmp_path, digits, 2)
    plot = tmp_path / "top.png"
    code, out, err = _cli(capsys, "predict", run, *paths, "--topk", "3", "--plot", plot)
    assert code == 0, err
    assert str(paths[0]) in out and " 1. " in out and "%" in out and f"plot: {plot}" in out
    with Image.open(plot) as im:
        # 9 inches wide at 100 dpi; two rows of max(1.9, 0.3 * 3 + 0.9) inches + the title
        assert im.size == (900, 430)
    assert not list(tmp_path.glob(".*deeparch-tmp"))


def test_labels_file_names_the_classes(run, digits, tmp_path, capsys):
    paths = _write_digits(tmp_path, digits, 1)
    labels = tmp_path / "names.txt"
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    labels.write_text("\n".join(names) + "\n")
    code, out, err = _cli(capsys, "predict", run, paths[0], "--labels", labels, "--json")
    assert code == 0, err
    top = json.loads(out)["predictions"][0]["top"]
    assert all(t["class"] == names[t["index"]] for t in top)


def test_bad_inputs_are_one_sentence_and_write_nothing(run, digits, tmp_path, capsys):
    good = _write_digits(tmp_path, digits, 1)[0]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    short = tmp_path / "three.txt"
    short.write_text("a\nb\nc\n")
    plot = tmp_path / "out.png"
    cases = [
        (["predict", run, good, bad, "--plot", plot], "notes.png"),
        (["predict", run, good, tmp_path / "missing.png", "--plot", plot], "missing.png"),
        (["predict", run, good, "--labels", short, "--plot", plot], "3 class names"),
        (["predict", run, good, "--topk", "11", "--plot", plot], "--topk 11"),
        (["predict", run, good, "--weights", good, "--plot", plot], "run folder"),
        (["predict", "INPUT(8x8x1) -> CONV3-4", good, "--plot", plot], "not one score"),
        (["predict", "no_such_model", good, "--plot", plot], "no_such_model"),
    ]
    for argv, needle in cases:
        code, out, err = _cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("deeparch: error: ") and err.count("\n") == 1, err
        assert needle in err, err
        assert out == ""
    assert not plot.exists() and not list(tmp_path.glob(".*deeparch-tmp"))


def test_api_errors(run, digits):
    pred = load_predictor(run)
    img = digits.images[0]
    with pytest.raises(ModelOptionError, match="not one score per class"):
        predict(cut(pred.model, "pool1"), img, preprocess=pred.preprocess)
    with pytest.raises(DataError, match="3 class names"):
        predict(pred.model, img, preprocess=pred.preprocess, classes=["a", "b", "c"])
    with pytest.raises(ModelOptionError, match="topk"):
        predict(pred.model, img, preprocess=pred.preprocess, topk=0)
    with pytest.raises(DataError, match="uint8"):
        predict(pred.model, img.float(), preprocess=pred.preprocess)
    with pytest.raises(DeeparchError):
        plot_predictions([], "never.png")


def test_imagenet_weights_get_imagenet_names_and_torchvision_crop(tmp_path):
    """1000 outputs + torchvision's preprocessing (here scaled down: shorter side 36, centre
    crop 32) -> ImageNet's names, each image resized and cropped before normalising."""
    torch.manual_seed(0)
    model = deeparch.create_model("resnet20", num_classes=1000)
    pre = P.torchvision(size=32, resize=36)
    weights = tmp_path / "in1k.safetensors"
    save_weights(weights, model, {"preprocess": pre.to_dict()})
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photo)
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8), "L").save(grey)

    pred = load_predictor("resnet20", weights=weights)
    assert pred.classes == list(IMAGENET_CLASSES) and pred.preprocess == pre
    got = pred.predict([photo, grey], topk=5)
    # the same numbers by hand: shorter side to 36, centre crop 32, ImageNet mean/std
    model.eval()
    for path, p in zip((photo, grey), got):
        x = read_images([path])[0][None]
        fitted, _ = P.fit_images(x, pre, crop=True)
        assert fitted.shape == (1, 3, 32, 32) and torch.equal(p.image, fitted[0])
        with torch.no_grad():
            probs = torch.softmax(model(pre.normalise(fitted)), 1)[0]
        top = probs.topk(5)
        assert p.indices == top.indices.tolist()
        assert np.allclose(p.probabilities, top.values.numpy(), atol=1e-6)
        assert p.classes == [IMAGENET_CLASSES[i] for i in p.indices]
    # a file that does not say its weights are ImageNet's: the outputs are numbered
    plain = tmp_path / "plain.safetensors"
    save_weights(plain, model)
    numbered = load_predictor("resnet20", weights=plain)
    assert numbered.classes == [str(i) for i in range(1000)]
    assert any("class names" in n for n in numbered.notes)


def test_read_images_modes(tmp_path):
    rgba = tmp_path / "a.png"
    Image.fromarray(np.full((5, 7, 4), 200, dtype=np.uint8), "RGBA").save(rgba)
    grey16 = tmp_path / "b.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(grey16)
    a, b = read_images([rgba, grey16])
    assert a.shape == (3, 5, 7) and a.dtype == torch.uint8 and int(a.max()) == 200
    assert b.shape == (1, 4, 4) and int(b.min()) == 255
    assert len(IMAGENET_CLASSES) == 1000 == len(set(IMAGENET_CLASSES))
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[999] == "toilet tissue"
