"""ShuffleNet v1 and v2: Table 1 (groups) and Table 2 (scale) of the v1 paper, the
reference implementations' figures, channel shuffle, the channel split of v2."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import DeeparchError, ModelOptionError
from deeparch.layers import ChannelShuffle
from deeparch.models import create_model, list_models, model_info

ALL = list_models(family="shufflenet")

# name: exact parameters and mult-adds (conv + FC) at 3x224x224
EXACT = {
    "shufflenet_v1": (1_864_728, 137_460_672),
    "shufflenet_v2_x0_5": (1_366_792, 40_476_448),
    "shufflenet_v2_x1_0": (2_278_604, 144_907_992),
    "shufflenet_v2_x1_5": (3_503_624, 295_759_392),
    "shufflenet_v2_x2_0": (7_393_996, 583_253_464),
}
# v1 Table 1: groups g -> stage2..4 output channels (1x) and complexity (MFLOPs)
TABLE_1 = [
    (1, (144, 288, 576), 143),
    (2, (200, 400, 800), 140),
    (3, (240, 480, 960), 137),
    (4, (272, 544, 1088), 133),
    (8, (384, 768, 1536), 137),
]
# Megvii's reference table (ShuffleNet-Series): groups, scale, MFLOPs, params (M)
MEGVII = [
    (3, 0.5, 38, 0.7), (3, 1.0, 138, 1.9), (3, 1.5, 292, 3.4), (3, 2.0, 524, 5.4),
    (8, 0.5, 40, 1.0), (8, 1.0, 138, 2.4), (8, 1.5, 290, 4.3), (8, 2.0, 522, 6.5),
]
# torchvision: exact params, GFLOPS; paper Table 5: MFLOPs
TORCHVISION_V2 = {
    "shufflenet_v2_x0_5": (1_366_792, 0.04, 41),
    "shufflenet_v2_x1_0": (2_278_604, 0.14, 146),
    "shufflenet_v2_x1_5": (3_503_624, 0.30, 299),
    "shufflenet_v2_x2_0": (7_393_996, 0.58, 591),
}


def _v1(groups=3, width_mult=1.0, size=224, **kw):
    with torch.device("meta"):
        model = create_model("shufflenet_v1", groups=groups, width_mult=width_mult, **kw)
    return model, deeparch.summary(model, input_size=(3, size, size))


def test_registered_names():
    assert sorted(ALL) == sorted(EXACT)


@pytest.mark.parametrize("name", ALL)
def test_card_matches_the_inspector(name):
    card = model_info(name)
    s = deeparch.summary(name)
    assert card.source and card.family == "shufflenet"
    assert s.output_shape == [1000]
    if card.exact:
        assert (s.total_params, s.macs) == (card.params, card.macs)
    else:
        assert abs(s.total_params - card.params) <= 0.01 * card.params
        assert abs(s.macs - card.macs) <= 0.01 * card.macs
    assert (s.total_params, s.macs) == EXACT[name]


@pytest.mark.parametrize("groups, channels, mflops", TABLE_1)
def test_table_1(groups, channels, mflops):
    model, s = _v1(groups)
    stages = [model.features.get_submodule(f"stage{i}") for i in (2, 3, 4)]
    assert tuple(st[-1].gconv2.conv.out_channels for st in stages) == channels
    assert [len(st) for st in stages] == [4, 8, 4]
    # the complexity column counts the convolutions, not the FC layer
    fc = model.head.fc
    assert round((s.macs - fc.in_features * fc.out_features) / 1e6) == mflops


@pytest.mark.parametrize("groups, scale, mflops, params", MEGVII)
def test_reference_implementation_table(groups, scale, mflops, params):
    model, s = _v1(groups, scale)
    assert round(s.total_params / 1e6, 1) == params
    if (groups, scale) == (3, 1.0):
        # 137.46M; the reference table says 138, the paper's Table 1 says 137
        assert round(s.macs / 1e6) == 137
    else:
        assert round(s.macs / 1e6) == mflops
    conv1 = model.features.stem.conv1.conv.out_channels
    assert conv1 == {0.5: 12 if groups == 3 else 16, 1.0: 24, 1.5: 24, 2.0: 48}[scale]


def test_table_2_scale_factor():
    """ShuffleNet 1x / 0.5x / 0.25x: 140 / 38 / 13 MFLOPs (g = 3); cost about s^2."""
    macs = {s: _v1(3, s)[1].macs for s in (1.0, 0.5, 0.25)}
    assert round(macs[0.5] / 1e6) == 38
    assert round(macs[0.25] / 1e6) == 13
    assert abs(macs[1.0] / 1e6 - 140) < 3          # Table 2 rounds every g to 140
    assert 0.25 < macs[0.5] / macs[1.0] < 0.3


def test_first_pointwise_conv_of_stage2_is_not_grouped():
    model, _ = _v1(8)
    s2 = model.features.stage2
    assert s2.unit1.gconv1.conv.groups == 1 and s2.unit1.gconv1.conv.in_channels == 24
    assert s2.unit2.gconv1.conv.groups == 8
    assert all(u.gconv2.conv.groups == 8 for u in s2)
    assert model.features.stage3.unit1.gconv1.conv.groups == 8
    assert isinstance(s2.unit2.shuffle, ChannelShuffle) and s2.unit2.shuffle.groups == 8
    assert isinstance(s2.unit1.dwconv.conv, nn.Conv2d) and not hasattr(s2.unit1.dwconv, "act")
    # the bottleneck is a quarter of the output; a stride-2 unit adds out - in channels
    assert s2.unit1.gconv1.conv.out_channels == 384 // 4
    assert s2.unit1.gconv2.conv.out_channels == 384 - 24


def test_channel_shuffle_mixes_groups():
    shuffle = ChannelShuffle(3)
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert shuffle(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_v1_units_add_and_concatenate():
    model = create_model("shufflenet_v1", num_classes=10, width_mult=0.5).eval()
    unit = model.features.stage3.unit2              # stride 1: relu(x + branch)
    with torch.no_grad():
        unit.gconv2.bn.weight.zero_()
        unit.gconv2.bn.bias.zero_()
        x = torch.randn(1, 240, 4, 4)
        assert torch.equal(unit(x), torch.relu(x))
        down = model.features.stage3.unit1          # stride 2: [avgpool(x), branch]
        x = torch.randn(1, 120, 8, 8)
        y = down(x)
        assert y.shape == (1, 240, 4, 4)
        pooled = nn.functional.avg_pool2d(x, 3, 2, 1)
        assert torch.allclose(y[:, :120], torch.relu(pooled))


def test_v2_torchvision_and_paper_figures():
    for name, (params, gflops, paper) in TORCHVISION_V2.items():
        s = deeparch.summary(name)
        assert s.total_params == params
        assert round(s.macs / 1e9, 2) == gflops
        # Table 5's FLOPs come from the authors' stride-2 branch widths: ours is lower
        assert paper - 8 < s.macs / 1e6 < paper


def test_v2_channel_split_and_shuffle():
    model = create_model("shufflenet_v2_x0_5", num_classes=10).eval()
    unit = model.features.stage3.unit2               # 96 channels, stride 1
    x = torch.randn(1, 96, 4, 4)
    with torch.no_grad():
        y = unit(x)
    # the first half passes untouched and lands, after the 2-group shuffle, on even channels
    assert torch.equal(y[:, 0::2], x[:, :48])
    down = model.features.stage3.unit1
    assert down.branch1.dwconv.conv.stride == (2, 2)
    assert down.branch1.conv.conv.out_channels == down.branch2.conv2.conv.out_channels == 48
    assert model.features.conv5.conv.out_channels == 1024


def test_forward_backward_small():
    for name, kw in [("shufflenet_v1", dict(width_mult=0.5)), ("shufflenet_v2_x0_5", {})]:
        model = create_model(name, num_classes=10, **kw)
        y = model(torch.randn(2, 3, 32, 32))
        assert list(y.shape[1:]) == deeparch.summary(model, input_size=(3, 32, 32)).output_shape
        assert y.shape == (2, 10)
        y.sum().backward()
        assert model.features.stem.conv1.conv.weight.grad is not None


def test_features_only():
    fx = create_model("shufflenet_v2_x0_5", features_only=True,
                      out_stages=["stem", "stage3", "conv5"])
    maps = fx(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(24, 16, 16), (96, 4, 4), (1024, 2, 2)]
    fx = create_model("shufflenet_v1", features_only=True, out_stages=[2, 4], width_mult=0.5)
    maps = fx(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(120, 8, 8), (480, 2, 2)]
    with torch.device("meta"):
        assert create_model("shufflenet_v1").stage_names == ["stem", "stage2", "stage3",
                                                             "stage4"]
        assert create_model("shufflenet_v2_x1_0").stage_names == [
            "stem", "stage2", "stage3", "stage4", "conv5"]


@pytest.mark.parametrize("name", ["shufflenet_v1", "shufflenet_v2_x1_0"])
def test_reset_classifier(name):
    with torch.device("meta"):
        model = create_model(name)
    model.reset_classifier(5)
    assert deeparch.summary(model, input_size=(3, 64, 64)).output_shape == [5]


@pytest.mark.parametrize("knobs", [
    dict(groups=5), dict(groups=0), dict(width_mult=0), dict(width_mult=-1),
    dict(groups=2, width_mult=0.5), dict(groups=4, width_mult=0.25), dict(drop_rate=2.0),
    dict(width_mult=0.01),
])
def test_bad_v1_knobs(knobs):
    with pytest.raises(ModelOptionError):
        create_model("shufflenet_v1", **knobs)


@pytest.mark.parametrize("knobs", [dict(width_mult=0.75), dict(groups=3), dict(width_mult=0)])
def test_bad_v2_knobs(knobs):
    with pytest.raises(DeeparchError):
        create_model("shufflenet_v2_x1_0", **knobs)
