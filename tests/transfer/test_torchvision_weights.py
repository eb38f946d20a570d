"""torchvision's weight files load into deeparch's models and give torchvision's outputs.

The proof runs torchvision itself: Debian's python3-torchvision (0.14 on Debian's torch
1.13) in one subprocess of the system interpreter (tests/transfer/tv_reference.py), which
builds every case with random weights *and random batch-norm statistics*, saves the state
dict with torch.save and an eval-mode input/output pair (float32, and float64 with the same
weights). Here each file goes through ``deeparch.create_model(name, weights=FILE)`` and:

* in float64 the outputs agree to 1e-9 of their scale (measured: 1e-16 .. 2e-13). This is
  the proof of exactness: a wrong epsilon, a swapped tensor, batch statistics instead of
  running ones or a missing input transform show up at 1e-5 and above
  (``test_the_comparison_catches_a_wrong_epsilon_and_batch_statistics``);
* in float32 they agree to 1e-5 of their scale, or to three times torchvision's own float32
  error where that is larger: two PyTorch builds (1.13 and 2.13) sum in other orders, and
  for the deep or depthwise networks (EfficientNet, MobileNet v2, ShuffleNet v2, GoogLeNet,
  DenseNet-201) torchvision's float32 output is itself 1e-5 .. 4e-5 away from the float64
  one, so no implementation can promise 1e-5 there.

Inputs are small (32x32 for VGG, 64x64 for the rest) to keep 2 CPU cores quick; AlexNet's
and VGG's 4096-wide FC layers are built 256 wide on both sides (``hidden``: they are most of
the bytes and none of the mapping), and ``test_full_size_vgg16_at_224`` checks the real
widths. The heaviest cases (ResNet-101/152, ResNeXt-101, Wide ResNet-101, DenseNet-161/201,
EfficientNet-B4..B7, full VGG-16) run only with DEEPARCH_FULL_REFERENCE=1; every family is
tested by default.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import deeparch
from deeparch.transfer import identify, load_weights

# the interpreter that has torchvision (Debian's system python3, outside the venv)
SYSTEM_PYTHON = os.environ.get("DEEPARCH_TORCHVISION_PYTHON", "/usr/bin/python3")
REFERENCE = Path(__file__).with_name("tv_reference.py")
FULL = os.environ.get("DEEPARCH_FULL_REFERENCE") == "1"


def _torchvision_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True,
                       text=True)
    if r.returncode:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"status {r.returncode}"
        return (f"{SYSTEM_PYTHON} cannot import torchvision (apt-get install -y "
                f"python3-torchvision): {last}")
    return None


_MISSING = _torchvision_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"no reference: {_MISSING}")


@dataclass(frozen=True)
class Case:
    case: str                      # file name and test id
    arch: str                      # torchvision.models.<arch>
    model: str                     # the deeparch model that must reproduce it
    size: int = 64
    heavy: bool = False            # only with DEEPARCH_FULL_REFERENCE=1
    hidden: int | None = None      # AlexNet / VGG FC width (both sides)
    tv_kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


def _cases() -> list[Case]:
    c = [Case("alexnet", "alexnet", "alexnet_tv", hidden=256, options={"hidden": 256})]
    for depth in (11, 13, 16, 19):
        for bn in ("", "_bn"):
            name = f"vgg{depth}{bn}"
            c.append(Case(name, name, name, size=32, hidden=256,
                          options={"hidden": 256, "adaptive_pool": 7}))
    c.append(Case("vgg16_full_224", "vgg16", "vgg16", size=224, heavy=True))
    heavy = {"resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d",
             "wide_resnet101_2", "densenet161", "densenet201",
             "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7"}
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                 "wide_resnet50_2", "wide_resnet101_2",
                 "densenet121", "densenet161", "densenet169", "densenet201",
                 "squeezenet1_0", "squeezenet1_1", "mobilenet_v2",
                 "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                 "shufflenet_v2_x2_0", *(f"efficientnet_b{b}" for b in range(8))):
        c.append(Case(name, name, name, heavy=name in heavy))
    # torchvision's pretrained GoogLeNet runs with transform_input and has the aux heads
    c.append(Case("googlenet", "googlenet", "googlenet_tv", options={"aux_logits": True},
                  tv_kwargs={"aux_logits": True, "transform_input": True,
                             "init_weights": True}))
    return c


CASES = _cases()
RUN = [x for x in CASES if FULL or not x.heavy]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """All references in one subprocess (importing torchvision costs seconds); the files
    are removed at the end of the module (a few hundred MB, a few GB with FULL)."""
    out = tmp_path_factory.mktemp("torchvision_reference")
    spec = [{"case": x.case, "arch": x.arch, "size": x.size, "seed": i, "hidden": x.hidden,
             "kwargs": x.tv_kwargs} for i, x in enumerate(RUN)]
    t0 = time.perf_counter()
    r = subprocess.run([SYSTEM_PYTHON, str(REFERENCE), str(out)], input=json.dumps(spec),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["wall"] = time.perf_counter() - t0
    yield out, manifest
    shutil.rmtree(out, ignore_errors=True)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("case", RUN, ids=[x.case for x in RUN])
def test_outputs_equal_torchvision(reference, case):
    out, _ = reference
    path = out / f"{case.case}.pth"
    model = deeparch.create_model(case.model, weights=path, **case.options)
    report = model.weights_report
    assert report.source == "torchvision" and report.architecture == case.arch
    assert report.complete and not report.unused and not report.reshaped, str(report)
    assert len(report.loaded) == report.total == len(torch.load(path, weights_only=True))

    io = torch.load(out / f"{case.case}.io.pth", weights_only=True)
    model.eval()
    with torch.no_grad():
        y = model(io["input"])
        assert y.shape == io["output"].shape
        # torchvision's own float32 error, against the same weights in float64
        noise = _max_rel(io["output"].double(), io["output64"])
        tol = max(1e-5, 3 * noise)
        torch.testing.assert_close(y, io["output"], rtol=tol,
                                   atol=tol * io["output"].abs().max().item())
        y64 = model.double()(io["input"].double())
        assert _max_rel(y64, io["output64"]) < 1e-9


def test_the_comparison_catches_a_wrong_epsilon_and_batch_statistics(reference):
    """The float64 check is not vacuous: the reference's random BN statistics make a wrong
    epsilon, or batch statistics in place of the running ones, miss by far more than 1e-9."""
    out, _ = reference
    io = torch.load(out / "efficientnet_b0.io.pth", weights_only=True)
    model = deeparch.create_model("efficientnet_b0", weights=out / "efficientnet_b0.pth")
    model = model.double().eval()
    x = io["input"].double()
    with torch.no_grad():
        assert _max_rel(model(x), io["output64"]) < 1e-9
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-3                      # deeparch's default, not torchvision's B0
        assert _max_rel(model(x), io["output64"]) > 1e-5
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-5
                m.train()                         # normalise with the batch's statistics
        assert _max_rel(model(x), io["output64"]) > 1e-3


def test_the_reference_was_made_by_torchvision_in_modest_time(reference):
    _, manifest = reference
    assert manifest["torchvision"].startswith("0.14") and set(manifest["seconds"]) == {
        x.case for x in RUN}
    print(f"\ntorchvision reference: {manifest['wall']:.1f} s for {len(RUN)} models")


def test_every_family_is_tested_by_default():
    families = {deeparch.model_info(x.model).family for x in CASES}
    default = {deeparch.model_info(x.model).family for x in CASES if not x.heavy}
    assert families == default == {"alexnet", "vgg", "resnet", "resnext", "wide_resnet",
                                   "densenet", "squeezenet", "googlenet", "mobilenet",
                                   "shufflenet", "efficientnet"}


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "mobilenet_v2", "efficientnet_b0",
                                  "squeezenet1_1", "densenet121", "shufflenet_v2_x0_5"])
def test_identify_names_the_model_that_computes_torchvision(reference, name):
    out, _ = reference
    case = next(x for x in RUN if x.case == name)
    assert identify(out / f"{name}.pth")[0] == case.model


def test_a_file_of_another_architecture_says_which_model_it_fits(reference):
    out, _ = reference
    with pytest.raises(deeparch.errors.WeightsMismatchError) as e:
        deeparch.create_model("resnet50", weights=out / "resnet18.pth")
    assert "another architecture than resnet50" in str(e.value)
    assert "it fits resnet18" in str(e.value)


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(reference):
    out, _ = reference
    model = deeparch.create_model("resnext50_32x4d")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(deeparch.errors.WeightsMismatchError) as e:
        load_weights(model, out / "resnet50.pth")
    msg = str(e.value)
    assert "layer1.0.conv1.weight is (64, 64, 1, 1)" in msg
    assert "features.layer1.0.conv1.weight is (128, 64, 1, 1)" in msg
    assert "it fits resnet50" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_another_number_of_classes_leaves_the_classifier_and_says_so(reference):
    out, _ = reference
    model = deeparch.create_model("resnet18", weights=out / "resnet18.pth", num_classes=10)
    report = model.weights_report
    assert set(report.initialised) == {"head.fc.weight", "head.fc.bias"}
    assert len(report.loaded) == report.total - 2 and model.num_classes == 10
    assert "Left at their initialisation: head.fc.weight, head.fc.bias (the classifier: 10 " \
           "classes here, 1000 in the file)" in str(report)
    sd = torch.load(out / "resnet18.pth", weights_only=True)
    assert torch.equal(model.features.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])


def test_googlenet_without_aux_heads_skips_them_and_says_so(reference):
    out, _ = reference
    model = deeparch.create_model("googlenet_tv", weights=out / "googlenet.pth")
    report = model.weights_report
    assert report.complete and all(k.startswith(("aux1.", "aux2.")) for k in report.unused)
    assert len(report.unused) == 2 * 10   # per head: conv, BN (4 + its counter), fc1, fc2
    assert "aux_logits=True" in str(report)
    io = torch.load(out / "googlenet.io.pth", weights_only=True)
    with torch.no_grad():
        assert _max_rel(model.eval()(io["input"]), io["output"]) < 1e-5


def test_efficientnet_b0_takes_torchvisions_epsilon_and_says_so(reference):
    out, _ = reference
    model = deeparch.create_model("efficientnet_b0", weights=out / "efficientnet_b0.pth")
    assert "batch-norm epsilon 0.001 -> 1e-05 in 49 layers, as torchvision's efficientnet_b0 " \
           "computes" in str(model.weights_report)
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}


def test_converted_file_computes_the_same(reference, tmp_path):
    out, _ = reference
    dst = deeparch.transfer.convert(out / "efficientnet_b0.pth", "efficientnet_b0",
                                    tmp_path / "b0.safetensors")
    again = deeparch.transfer.convert(out / "efficientnet_b0.pth", None,
                                      tmp_path / "b0_again.safetensors")
    assert dst.read_bytes() == again.read_bytes()            # byte-identical, model found
    assert identify(dst) == ["efficientnet_b0"]
    model = deeparch.create_model("efficientnet_b0", weights=dst)
    assert model.weights_report.source == "deeparch" and not model.weights_report.renamed
    io = torch.load(out / "efficientnet_b0.io.pth", weights_only=True)
    with torch.no_grad():
        assert _max_rel(model.eval()(io["input"]), io["output"]) < 1e-5


def test_googlenet_converts_with_its_aux_heads(reference, tmp_path):
    out, _ = reference
    dst = deeparch.transfer.convert(out / "googlenet.pth", "googlenet_tv", tmp_path / "g.st")
    from safetensors import safe_open
    with safe_open(str(dst), "pt") as f:
        keys = set(f.keys())
        assert json.loads(f.metadata()["options"]) == {"aux_logits": True}
    assert "aux.4a.fc.weight" in keys and "aux.4d.fc1.weight" in keys


@pytest.mark.skipif(not FULL, reason="DEEPARCH_FULL_REFERENCE=1 runs the full-width VGG-16")
def test_full_size_vgg16_at_224_is_the_papers_vgg16(reference):
    """At 224x224 torchvision's VGG-16 *is* the paper's (its 7x7 average pool is the
    identity there): the registered vgg16, without adaptive_pool, loads it."""
    out, _ = reference
    assert identify(out / "vgg16_full_224.pth")[0] == "vgg16"


def test_torchvisions_published_file_layouts(reference):
    """The files torchvision publishes are older than its code: DenseNet's say ``norm.1``
    where the modules say ``norm1`` (torchvision renames them on load), and files saved
    before PyTorch 0.4.1 have no ``num_batches_tracked``. Both load, to the same outputs."""
    out, _ = reference
    sd = torch.load(out / "densenet121.pth", weights_only=True)
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
              for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    model = deeparch.create_model("densenet121", weights=legacy).eval()
    report = model.weights_report
    assert report.complete and report.architecture == "densenet121"
    assert all(k.endswith("num_batches_tracked") for k in report.initialised)
    assert "a batch-norm step counter the file does not have" in str(report)
    io = torch.load(out / "densenet121.io.pth", weights_only=True)
    with torch.no_grad():
        assert _max_rel(model.double()(io["input"].double()), io["output64"]) < 1e-9
