"""keras.applications' weight files load into deeparch's models and give Keras' outputs.

The proof runs Keras itself: Keras 3 on the torch backend, in one subprocess of this
virtual environment's interpreter (tests/transfer/keras_reference.py, ``KERAS_BACKEND=torch``
so that its torch-backend state never touches this process), which builds every case with
``weights=None, classifier_activation=None``, random biases and *random batch-norm
statistics* (and EfficientNet's input Normalization), and writes the weights in both
formats -- Keras 3's ``.weights.h5`` and the legacy ``.h5`` of Keras 2 / tf.keras, the
format of the ImageNet files keras.applications downloads -- with an eval-mode
input/output pair in float32 and the same weights' output in float64. Each file goes
through ``deeparch.create_model(name, weights=FILE)`` and:

* in float64 the outputs agree to 1e-9 of their scale (measured 2e-15 .. 4e-14): the
  proof of exactness -- a wrong epsilon, a missing BGR reversal, PyTorch's padding in place
  of TensorFlow's, a transposed kernel all show at 1e-4 and above
  (``test_the_comparison_catches_...``). Keras' float64 is float64 only once its batch norm,
  global pooling, dense and Normalization layers compute in float64 (theirs lose float32-
  sized bits; the reference computes those layers' documented formulas in float64);
* in float32 they agree to 1e-5 of their scale, or to three times Keras' own float32 error
  where that is larger (MobileNet, MobileNetV2, DenseNet, EfficientNet: Keras' float32 output
  is 1e-5 .. 3e-5 away from its float64 one, so no implementation can promise 1e-5 there).
  Measured: ResNet50 4.5e-6, ResNet50V2 2.3e-6, VGG16 1.1e-6, Xception 1.4e-6, MobileNet
  (0.25) 2.5e-5 (Keras' own 2.2e-5), MobileNetV2 1.5e-5 (1.1e-5), DenseNet121 1.8e-5
  (2.7e-5), EfficientNetB0 1.3e-5 (1.1e-5).

Inputs are the smallest Keras accepts with its classifier (32x32; Xception 80x80, where its
max pools meet even maps; VGG16 64x64, so that fc1 reads a 2x2 map and the channels-last
flatten matters). By default one or two models per family run; DEEPARCH_FULL_REFERENCE=1
runs every keras.applications model deeparch reproduces.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import deeparch
from deeparch.errors import WeightsError, WeightsMismatchError
from deeparch.transfer import convert, identify, load_weights

REFERENCE = Path(__file__).with_name("keras_reference.py")
FULL = os.environ.get("DEEPARCH_FULL_REFERENCE") == "1"


def _keras_missing() -> str | None:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    r = subprocess.run([sys.executable, "-c", "import keras, h5py"], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"status {r.returncode}"
        return f"keras (3, torch backend) is not importable by {sys.executable}: {last}"
    return None


_MISSING = _keras_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"no reference: {_MISSING}")


@dataclass(frozen=True)
class Case:
    case: str                      # file name and test id
    app: str                       # keras.applications.<app>
    model: str                     # the deeparch model that must reproduce it
    size: int = 32
    heavy: bool = False            # only with DEEPARCH_FULL_REFERENCE=1
    kwargs: dict = field(default_factory=dict)      # for Keras' builder
    options: dict = field(default_factory=dict)     # for deeparch's
    notop: bool = False            # also an include_top=False file
    model_h5: bool = False         # also model.save('x.h5')


def _cases() -> list[Case]:
    c = [Case("vgg16", "VGG16", "vgg16", 64, True, {"classes": 10}, {"img_size": 64}),
         Case("vgg19", "VGG19", "vgg19", 64, True, {"classes": 10}, {"img_size": 64}),
         Case("resnet50", "ResNet50", "resnet50_keras"),
         Case("resnet101", "ResNet101", "resnet101_keras", heavy=True),
         Case("resnet152", "ResNet152", "resnet152_keras", heavy=True),
         Case("resnet50v2", "ResNet50V2", "preact_resnet50_keras"),
         Case("resnet101v2", "ResNet101V2", "preact_resnet101_keras", heavy=True),
         Case("resnet152v2", "ResNet152V2", "preact_resnet152_keras", heavy=True)]
    for d in (121, 169, 201):
        c.append(Case(f"densenet{d}", f"DenseNet{d}", f"densenet{d}", heavy=True))
    for alpha, suffix in ((1.0, ""), (0.75, "_075"), (0.5, "_050"), (0.25, "_025")):
        c.append(Case(f"mobilenet{suffix or '_100'}", "MobileNet", f"mobilenet_v1{suffix}_keras",
                      heavy=alpha != 0.25, kwargs={"alpha": alpha}, model_h5=alpha == 0.25))
    c.append(Case("mobilenet_v2", "MobileNetV2", "mobilenet_v2_keras", notop=True))
    c.append(Case("xception", "Xception", "xception_keras", 80, heavy=True))
    for b in range(8):
        c.append(Case(f"efficientnet_b{b}", f"EfficientNetB{b}", f"efficientnet_b{b}_keras",
                      heavy=b > 0))
    return c


CASES = _cases()
RUN = [x for x in CASES if FULL or not x.heavy]
FORMATS = ("weights.h5", "h5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """All references in one subprocess; the files go at the end of the module."""
    out = tmp_path_factory.mktemp("keras_reference")
    spec = [{"case": x.case, "app": x.app, "size": x.size, "seed": i, "kwargs": x.kwargs,
             "notop": x.notop, "model_h5": x.model_h5} for i, x in enumerate(RUN)]
    t0 = time.perf_counter()
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    r = subprocess.run([sys.executable, str(REFERENCE), str(out)], input=json.dumps(spec),
                       capture_output=True, text=True, timeout=3600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["wall"] = time.perf_counter() - t0
    yield out, manifest
    shutil.rmtree(out, ignore_errors=True)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _inputs(out: Path, case: Case, report) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's input as the loaded deeparch model takes it, float32 and float64: NCHW;
    RGB for the caffe models (Keras fed them BGR; the loader reversed the first conv);
    normalised by the report's preprocess for EfficientNet (Keras normalises inside)."""
    raw = torch.from_numpy(np.load(out / f"{case.case}.input.npy")).permute(0, 3, 1, 2)
    pre = report.preprocess
    if pre.name == "keras-caffe":
        raw = raw.flip(1)
    if pre.name == "keras-efficientnet":
        mean = torch.tensor(pre.mean, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(pre.std, dtype=torch.float64).view(1, 3, 1, 1)
        x64 = (raw.double() / 255 - mean) / std
        return pre.normalise(raw), x64
    return raw.contiguous(), raw.double()


def _check_outputs(out: Path, case: Case, model) -> tuple[float, float]:
    report = model.weights_report
    y = torch.from_numpy(np.load(out / f"{case.case}.output.npy"))
    y64 = torch.from_numpy(np.load(out / f"{case.case}.output64.npy")).double()
    x, x64 = _inputs(out, case, report)
    model.eval()
    with torch.no_grad():
        got = model(x)
        assert got.shape == y.shape
        noise = _max_rel(y.double(), y64)             # Keras' own float32 error
        tol = max(1e-5, 3 * noise)
        err = _max_rel(got, y)
        assert err < tol, f"{case.case}: {err:.2e} (Keras' own float32 error {noise:.2e})"
        err64 = _max_rel(model.double()(x64), y64)
        assert err64 < 1e-9, f"{case.case} in float64: {err64:.2e}"
    return err, err64


PAIRS = [(c, f) for c in RUN for f in FORMATS]


@pytest.mark.parametrize("case, fmt", PAIRS, ids=[f"{c.case}-{f}" for c, f in PAIRS])
def test_outputs_equal_keras(reference, case, fmt):
    out, _ = reference
    path = out / f"{case.case}.{fmt}"
    model = deeparch.create_model(case.model, weights=path, **case.options)
    report = model.weights_report
    assert report.source == "keras" and report.complete and not report.unused, str(report)
    assert report.preprocess is not None
    err, err64 = _check_outputs(out, case, model)
    print(f"\n{case.case} ({fmt}): float32 {err:.1e}, float64 {err64:.1e}")


def test_the_whole_model_saved_as_h5_loads_too(reference):
    """model.save('x.h5') writes the weights under model_weights/, beside the config."""
    out, _ = reference
    case = next(x for x in RUN if x.model_h5)
    model = deeparch.create_model(case.model, weights=out / f"{case.case}.model.h5")
    _check_outputs(out, case, model)


def test_an_include_top_false_file_fills_the_features_and_leaves_the_classifier(reference):
    out, _ = reference
    case = next(x for x in RUN if x.notop)
    model = deeparch.create_model(case.model, weights=out / f"{case.case}.notop.h5").eval()
    report = model.weights_report
    assert not report.complete
    left = {k for k, why in report.initialised.items() if "include_top=False" in why}
    assert left == {"head.fc.weight", "head.fc.bias"}, str(report)
    raw = torch.from_numpy(np.load(out / f"{case.case}.input.npy")).permute(0, 3, 1, 2)
    maps = torch.from_numpy(np.load(out / f"{case.case}.notop.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        assert _max_rel(model.forward_features(raw.contiguous()), maps) < 3e-5
    assert identify(out / f"{case.case}.notop.h5") == [case.model]


def test_another_number_of_classes(reference):
    out, _ = reference
    case = next(x for x in RUN if x.case == "resnet50")
    model = deeparch.create_model(case.model, weights=out / "resnet50.h5", num_classes=7)
    why = model.weights_report.initialised["head.fc.weight"]
    assert why == "the classifier: 7 classes here, 1000 in the file"


@pytest.mark.parametrize("case", RUN, ids=[x.case for x in RUN])
def test_identify_names_the_model_that_computes_keras(reference, case):
    out, _ = reference
    fits = identify(out / f"{case.case}.weights.h5")
    if case.options:          # VGG: its fc1 is sized by the input, others fit its default
        assert fits == []
    else:
        assert fits[0] == case.model


def test_the_report_says_what_was_reshaped_and_set(reference):
    out, _ = reference
    model = deeparch.create_model("resnet50_keras", weights=out / "resnet50.weights.h5",
                                  bn_eps=1e-5)
    r = model.weights_report
    assert r.architecture == "ResNet50"
    assert "HWIO -> OIHW" in r.reshaped["features.layer1.0.conv1.weight"]
    assert "input channels reversed" in r.reshaped["features.stem.conv1.weight"]
    assert r.loaded["features.layer1.0.downsample.1.running_var"] == \
        "conv2_block1_0_bn/moving_variance"
    assert any("1e-05 -> 1.001e-05" in s for s in r.settings)
    assert r.preprocess == deeparch.transfer.preprocess.keras("caffe")
    assert "keras" in str(r)


def test_efficientnet_normalisation_becomes_the_preprocess(reference):
    out, _ = reference
    model = deeparch.create_model("efficientnet_b0_keras",
                                  weights=out / "efficientnet_b0.weights.h5")
    pre = model.weights_report.preprocess
    assert pre.name == "keras-efficientnet" and pre.size == 224
    assert all(0.35 <= m <= 0.6 for m in pre.mean) and all(0.2 <= s <= 0.3 for s in pre.std)


def test_convert_writes_a_deeparch_file_that_computes_the_same(reference, tmp_path):
    out, _ = reference
    case = next(x for x in RUN if x.case == "mobilenet_v2")
    path = convert(out / "mobilenet_v2.h5", None, tmp_path / "m.safetensors")
    model = deeparch.create_model("mobilenet_v2_keras", weights=path)
    assert model.weights_report.source == "deeparch"
    assert model.weights_report.preprocess == deeparch.transfer.preprocess.keras("tf")
    _check_outputs(out, case, model)


def test_the_comparison_catches_a_wrong_epsilon_padding_and_channel_order(reference):
    """The float64 check is not vacuous: each thing the loader does matters far above 1e-9."""
    out, _ = reference
    case = next(x for x in RUN if x.case == "resnet50")
    y64 = torch.from_numpy(np.load(out / "resnet50.output64.npy")).double()
    model = deeparch.create_model("resnet50_keras", weights=out / "resnet50.h5").double().eval()
    x, x64 = _inputs(out, case, model.weights_report)
    with torch.no_grad():
        assert _max_rel(model(x64), y64) < 1e-9
        assert _max_rel(model(x64.flip(1)), y64) > 1e-4            # BGR not reversed
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-3
        assert _max_rel(model(x64), y64) > 1e-5                    # another epsilon
    case = next(x for x in RUN if x.case == "mobilenet_v2")
    y64 = torch.from_numpy(np.load(out / "mobilenet_v2.output64.npy")).double()
    torch_padding = deeparch.create_model("mobilenet_v2_keras", tf_padding=False)
    x, x64 = _inputs(out, case, load_weights(torch_padding, out / "mobilenet_v2.h5"))
    with torch.no_grad():
        assert _max_rel(torch_padding.double().eval()(x64), y64) > 1e-3   # PyTorch's padding


def test_the_reference_was_made_by_keras_3_in_modest_time(reference):
    _, manifest = reference
    assert manifest["keras"].startswith("3.") and manifest["backend"] == "torch"
    assert set(manifest["seconds"]) == {x.case for x in RUN}
    print(f"\nKeras reference: {manifest['wall']:.1f} s for {len(RUN)} models")


def test_the_cards_count_what_keras_counts(reference):
    """A Keras variant's card has Keras' trainable parameters (count_params() less the
    batch-norm moving statistics, which PyTorch keeps as buffers)."""
    _, manifest = reference
    for case in RUN:
        if case.options or case.kwargs.get("classes"):
            continue
        card = deeparch.model_info(case.model)
        n = sum(p.numel() for p in deeparch.create_model(case.model).parameters())
        assert n == card.params == manifest["params"][case.case]["trainable"], case.case


# --------------------------------------------------------------------------- bad input

def test_a_truncated_h5_is_one_sentence(reference, tmp_path):
    out, _ = reference
    data = (out / "mobilenet_v2.h5").read_bytes()
    bad = tmp_path / "cut.h5"
    bad.write_bytes(data[: len(data) // 3])
    model = deeparch.create_model("mobilenet_v2_keras")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as e:
        load_weights(model, bad)
    assert "truncated or corrupt" in str(e.value) and "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_random_bytes_named_h5(tmp_path):
    bad = tmp_path / "random.h5"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError) as e:
        deeparch.create_model("resnet50_keras", weights=bad)
    assert "not a weights file" in str(e.value) and "Keras .h5" in str(e.value)


def test_an_hdf5_file_without_keras_weights(tmp_path):
    import h5py
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(WeightsError, match="holds no Keras weights"):
        identify(path)


def test_a_file_of_another_architecture_says_which_model_fits(reference):
    out, _ = reference
    model = deeparch.create_model("resnet50")              # the paper's: no conv biases
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(model, out / "resnet50.weights.h5")
    msg = str(e.value)
    assert "another architecture than resnet50" in msg and "resnet50_keras" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(WeightsMismatchError, match="mobilenet_v2_keras"):
        deeparch.create_model("efficientnet_b0_keras", weights=out / "mobilenet_v2.h5")


def test_a_shape_mismatch_names_the_first_tensor_and_both_shapes(reference):
    out, _ = reference
    model = deeparch.create_model("mobilenet_v1_keras")     # alpha 1.0; the file is 0.25
    before = {k: v.clone() for k, v in model.state_dict().items()}
    case = next(x for x in RUN if x.model_h5)
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(model, out / f"{case.case}.h5")
    msg = str(e.value)
    assert "conv1/kernel is (3, 3, 3, 8)" in msg and "(32, 3, 3, 3)" in msg
    assert "mobilenet_v1_025_keras" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_keras_file_with_another_source_is_refused(reference):
    out, _ = reference
    with pytest.raises(WeightsError, match="source='auto' or 'keras'"):
        deeparch.create_model("resnet50_keras", weights=out / "resnet50.h5",
                              source="torchvision")


def _rename_legacy(src: Path, dst: Path, rename) -> None:
    """A copy of a legacy .h5 whose weight names are ``rename(layer, variable)``, each array
    stored under that name in the layer's group (tf.keras nests them: layer/layer/kernel:0)."""
    import h5py
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        g.attrs["layer_names"] = f.attrs["layer_names"]
        for name in f.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            old, new = f[name], g.create_group(name)
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in old.attrs.get("weight_names", [])]
            renamed = [rename(name, n.split("/")[-1]) for n in names]
            new.attrs["weight_names"] = [n.encode() for n in renamed]
            for n, r in zip(names, renamed):
                new[r] = old[n][()]


@pytest.mark.parametrize("style", ["tf.keras", "keras1"])
def test_the_weight_names_of_tf_keras_and_keras_1_files(reference, tmp_path, style):
    """The ImageNet files keras.applications downloads were written by tf.keras
    (``conv1/kernel:0``) or, for the oldest (VGG), Keras 1 (``block1_conv1_W_1:0``)."""
    out, _ = reference
    case = next(x for x in RUN if x.case == "mobilenet_v2")
    short = {"kernel": "W", "bias": "b", "moving_mean": "running_mean",
             "moving_variance": "running_std"}
    rename = ((lambda layer, var: f"{layer}/{var}:0") if style == "tf.keras" else
              (lambda layer, var: f"{layer}_{short.get(var, var)}_1:0"))
    path = tmp_path / f"{style}.h5"
    _rename_legacy(out / "mobilenet_v2.h5", path, rename)
    model = deeparch.create_model(case.model, weights=path)
    assert model.weights_report.complete
    _check_outputs(out, case, model)
