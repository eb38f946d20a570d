"""Pre-activation ResNet (Identity Mappings, ImageNet layout) and the CIFAR Wide ResNets
WRN-d-k: the published counts, the BN-ReLU-conv unit, the knobs."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import DeeparchError
from deeparch.models import create_model, list_models, model_info
from deeparch.models.preact_resnet import PreActBlock
from deeparch.models.resnet import drop_blocks, residual_blocks

# osmr imgclsmob preresnet = MXNet Gluon resnet_v2 (exact); their layout has one more BN(64)
# than the paper's: a pre-activation on layer1's first unit after the stem's BN-ReLU
GLUON = {
    "preact_resnet18": 11_687_848,
    "preact_resnet34": 21_796_008,
    "preact_resnet50": 25_549_480,
    "preact_resnet101": 44_541_608,
    "preact_resnet152": 60_185_256,
    "preact_resnet200": 64_666_280,
}
# the same convolutions and fc as ResNet v1.5 (torchvision GFLOPS 1.814 ... 11.514)
MACS = {
    "preact_resnet18": 1_814_073_344,
    "preact_resnet34": 3_663_761_408,
    "preact_resnet50": 4_089_184_256,
    "preact_resnet101": 7_801_405_440,
    "preact_resnet152": 11_513_626_624,
    "preact_resnet200": 15_007_481_856,
}
# Zagoruyko & Komodakis Table 4 (CIFAR-10): name, depth, k, params (M) as printed, exact
WRN = [
    ("wrn40_4", 40, 4, 8.9, 8_949_210),
    ("wrn16_8", 16, 8, 11.0, 10_961_370),
    ("wrn28_10", 28, 10, 36.5, 36_479_194),
]
PREACT = sorted(GLUON)
ALL = PREACT + [w[0] for w in WRN]


@functools.lru_cache(maxsize=None)
def _card_summary(name):
    return deeparch.summary(name)


def test_registered_names():
    assert sorted(ALL) == sorted([n for n in list_models(family="preact_resnet")
                                  if not n.endswith("_keras")]    # test_keras_variants.py
                                 + list_models(family="wide_resnet_cifar"))


@pytest.mark.parametrize("name", ALL)
def test_card_matches_the_inspector(name):
    card = model_info(name)
    s = _card_summary(name)
    assert card.source and not card.exact
    assert abs(s.total_params - card.params) / card.params < 0.01
    if card.macs is not None:
        assert s.macs == card.macs


@pytest.mark.parametrize("name", PREACT)
def test_preact_counts(name):
    s = _card_summary(name)
    assert s.total_params == GLUON[name] - 2 * 64       # one BN(64) fewer than Gluon's
    assert s.macs == MACS[name]
    assert s.output_shape == [1000]
    # pre-activation moves BNs, it does not change a single convolution
    if name != "preact_resnet200":
        plain = _card_summary(name.replace("preact_", ""))
        assert s.macs == plain.macs
        assert [r.output_shape for r in s.layers if r.type == "Conv2d"] == [
            r.output_shape for r in plain.layers if r.type == "Conv2d"]


@pytest.mark.parametrize("name, depth, k, paper_m, exact", WRN)
def test_wrn_table(name, depth, k, paper_m, exact):
    s = _card_summary(name)
    assert s.input_size == (3, 32, 32) and s.output_shape == [10]
    assert s.total_params == exact
    assert round(s.total_params / 1e6, 1) == paper_m
    # d = 6N + 4 counts the first conv, the 6N 3x3 convs and the three 1x1 projections;
    # the inspector's depth is the longest weight path: the projections sit on side
    # branches, and the fc adds one
    assert s.depth == depth - 3 + 1


def test_wrn_knobs():
    def params(**kw):
        with torch.device("meta"):
            return deeparch.summary(create_model("wrn28_10", **kw),
                                    input_size=(3, 32, 32)).total_params
    # the widening factor grows the 3x3 weights as k^2
    assert 90 < params() / params(widen_factor=1) < 100
    assert params(depth=40, widen_factor=4) == 8_949_210
    with torch.device("meta"):
        model = create_model("wrn28_10", dropout=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 12 and all(d.p == 0.3 for d in drops)   # one per unit, 3 x 4
    unit = model.features.stage1[0]
    names = [n for n, _ in unit.named_children()]
    assert names.index("drop") == names.index("conv2") - 1        # between the two convs


def test_preact_unit_order():
    with torch.device("meta"):
        model = create_model("preact_resnet50")
    first, second = model.features.layer1[0], model.features.layer1[1]
    # the stem's BN-ReLU pre-activates the first unit; the others carry their own
    assert not hasattr(first, "bn1") and first.conv1.in_channels == 64
    assert [type(m).__name__ for m in second.children()][:3] == ["BatchNorm2d", "ReLU", "Conv2d"]
    assert second.bn1.num_features == 256                 # BN on the unit's input
    # projections read the pre-activated input: a bare 1x1 conv, no BN
    proj = model.features.layer2[0].downsample
    assert [type(m).__name__ for m in proj] == ["Conv2d"] and proj[0].stride == (2, 2)
    assert model.features.layer2[0].conv2.stride == (2, 2)           # stride on the 3x3
    # the extra BN-ReLU after the last addition closes layer4
    assert [n for n, _ in model.features.layer4.named_children()][-2:] == ["bn", "act"]
    # nothing follows the addition inside a unit
    s = _card_summary("preact_resnet18")
    rows = [r.type for r in s.layers]
    adds = [i for i, t in enumerate(rows) if t == "add"]
    assert len(adds) == 8
    assert all(rows[i + 1] in ("BatchNorm2d", "Conv2d") for i in adds)


def test_forward_backward_and_features():
    torch.manual_seed(0)
    for name in ("preact_resnet18", "wrn16_8"):
        kw = {"widen_factor": 1} if name.startswith("wrn") else {}
        model = create_model(name, num_classes=10, drop_path_rate=0.1, **kw)
        out = model(torch.randn(2, 3, 32, 32))
        assert list(out.shape[1:]) == deeparch.summary(
            model, input_size=(3, 32, 32)).output_shape == [10]
        out.sum().backward()
        assert model.features.stem.conv1.weight.grad is not None
        model.reset_classifier(5)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    fx = create_model("preact_resnet18", features_only=True, out_stages=["layer2", "layer4"])
    a, b = fx(torch.randn(2, 3, 64, 64))
    assert tuple(a.shape[1:]) == (128, 8, 8) and tuple(b.shape[1:]) == (512, 2, 2)
    assert b.min() >= 0                                 # layer4 ends with BN-ReLU
    wrn = create_model("wrn16_8")
    assert wrn.stage_names == ["stem", "stage1", "stage2", "stage3"]
    assert wrn.head.fc.in_features == 512


def test_stochastic_depth_and_dropping_units():
    with torch.device("meta"):
        model = create_model("preact_resnet34", drop_path_rate=0.3)
    units = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert [u.drop_path.p for u in units] == pytest.approx(
        [0.3 * (i + 1) / 16 for i in range(16)])
    torch.manual_seed(0)
    wrn = create_model("wrn16_8", widen_factor=1).eval()
    names = residual_blocks(wrn)
    # stage1 goes 16 -> 16k channels: with k=1 its first unit keeps the identity shortcut
    assert names == ["features.stage1.0", "features.stage1.1", "features.stage2.1",
                     "features.stage3.1"]
    x = torch.randn(2, 3, 32, 32)
    cut = drop_blocks(wrn, "stage2.1")
    unit = wrn.features.stage2[1]
    nn.init.zeros_(unit.conv2.weight)                    # the branch outputs zero: x + 0
    with torch.no_grad():
        assert torch.allclose(cut(x), wrn(x), atol=1e-6)


@pytest.mark.parametrize("name, kw", [
    ("preact_resnet50", {"depth": 42}),
    ("preact_resnet50", {"drop_path_rate": 1.5}),
    ("preact_resnet50", {"cardinality": 32}),
    ("wrn28_10", {"depth": 27}),
    ("wrn28_10", {"widen_factor": 0}),
    ("wrn28_10", {"dropout": 1.0}),
    ("wrn28_10", {"in_chans": -1}),
])
def test_bad_knobs(name, kw):
    with pytest.raises(DeeparchError):
        with torch.device("meta"):
            create_model(name, **kw)
