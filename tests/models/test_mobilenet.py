"""MobileNet v1 and v2: the paper's Tables 4, 6, 7 and 8 (quoted by the seed slides)
reproduced by the inspector; width multiplier, resolution multiplier, the full-convolution
baseline, inverted residuals with linear bottlenecks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import DeeparchError, ModelOptionError
from deeparch.models import create_model, list_models, model_info

# the *_keras variants (keras.applications' MobileNets) are tested in test_keras_variants.py
ALL = [n for n in list_models(family="mobilenet") if not n.endswith("_keras")]

# name: exact parameters and mult-adds (conv + FC) at 3x224x224
EXACT = {
    "mobilenet_v1": (4_231_976, 568_740_352),
    "mobilenet_v1_075": (2_585_560, 325_400_448),
    "mobilenet_v1_050": (1_331_592, 149_497_088),
    "mobilenet_v1_025": (470_072, 41_030_272),
    "mobilenet_v1_conv": (29_294_088, 4_867_293_184),
    "mobilenet_v2": (3_504_872, 300_774_272),
}

# Table 6 (width multiplier) and Table 8: name, million mult-adds, million parameters
TABLE_6 = [
    ("mobilenet_v1", 569, 4.2),
    ("mobilenet_v1_075", 325, 2.6),
    ("mobilenet_v1_050", 149, 1.3),
    ("mobilenet_v1_025", 41, 0.5),
]
# Table 7 (resolution, 1.0 MobileNet): input size, million mult-adds as printed, exact
TABLE_7 = [
    (224, 569, 568_740_352),
    (192, 418, 418_121_728),
    (160, 290, 290_675_200),
    (128, 186, 186_400_768),
]
FC_MACS = 1024 * 1000


def _m(x: float) -> int:
    return round(x / 1e6)


def test_registered_names():
    assert sorted(ALL) == sorted(EXACT)


@pytest.mark.parametrize("name", ALL)
def test_card_matches_the_inspector(name):
    card = model_info(name)
    s = deeparch.summary(name)
    assert card.source and card.family == "mobilenet"
    assert s.output_shape == [1000]
    if card.exact:
        assert (s.total_params, s.macs) == (card.params, card.macs)
    else:
        assert abs(s.total_params - card.params) <= 0.01 * card.params
        assert abs(s.macs - card.macs) <= 0.01 * card.macs
    assert (s.total_params, s.macs) == EXACT[name]


@pytest.mark.parametrize("name, madds, params", TABLE_6)
def test_table_6_width_multiplier(name, madds, params):
    s = deeparch.summary(name)
    assert _m(s.macs) == madds
    assert round(s.total_params / 1e6, 1) == params


def test_table_8_and_keras_count():
    s = deeparch.summary("mobilenet_v1")
    assert (_m(s.macs), round(s.total_params / 1e6, 1)) == (569, 4.2)
    assert s.total_params == 4_231_976       # Keras MobileNet: "Trainable params: 4,231,976"


@pytest.mark.parametrize("size, madds, exact", TABLE_7)
def test_table_7_resolution_multiplier(size, madds, exact):
    s = deeparch.summary("mobilenet_v1", input_size=(3, size, size))
    assert s.macs == exact
    assert s.total_params == 4_231_976                  # 4.2M at every resolution
    if size == 160:
        # 290.68M: the paper prints 290, TF-slim's model table prints 291; exact
        # arithmetic rounds to 291, so this row is reproduced only within 1M.
        assert _m(s.macs) == 291 and abs(s.macs - madds * 1e6) < 1e6
    else:
        assert _m(s.macs) == madds


def test_resolution_via_img_size_knob():
    model = create_model("mobilenet_v1", img_size=192)
    assert model.input_size == (3, 192, 192)
    assert deeparch.summary(model).macs == 418_121_728


def test_table_4_full_convolution_baseline():
    full = deeparch.summary("mobilenet_v1_conv")
    sep = deeparch.summary("mobilenet_v1")
    assert round(full.total_params / 1e6, 1) == 29.3
    assert full.macs == 4_867_293_184
    # Table 4 prints 4866: the convolutions without the FC layer round to it
    assert _m(full.macs - FC_MACS) == 4866
    assert _m(full.macs) == 4867
    assert (_m(sep.macs), round(sep.total_params / 1e6, 1)) == (569, 4.2)
    # "8 to 9 times less computation than standard convolutions"
    assert 8 < full.macs / sep.macs < 9
    with torch.device("meta"):
        layer = create_model("mobilenet_v1_conv").features.stage2.block1
    assert isinstance(layer.conv, nn.Conv2d) and layer.conv.kernel_size == (3, 3)
    assert layer.conv.groups == 1 and layer.conv.stride == (2, 2)


def test_depthwise_separable_layer_cost():
    """The slides' formula: F*F*C*Fm*Fm + C*O*Fm*Fm against F*F*C*O*Fm*Fm."""
    rows = {r.name: r for r in deeparch.summary("mobilenet_v1").layers}
    dw, pw = rows["features.stage4.block2.dw.conv"], rows["features.stage4.block2.pw.conv"]
    assert dw.output_shape == [512, 14, 14] and pw.output_shape == [512, 14, 14]
    assert dw.macs == 3 * 3 * 512 * 14 * 14
    assert pw.macs == 512 * 512 * 14 * 14
    assert (dw.macs + pw.macs) / (3 * 3 * 512 * 512 * 14 * 14) == pytest.approx(1 / 512 + 1 / 9)


def test_width_multiplier_scales_channels_and_cost():
    model = create_model("mobilenet_v1", alpha=0.75, num_classes=10)
    assert model.features.stem.conv.out_channels == 24
    assert model.features.stage5.block2.pw.conv.out_channels == 768
    s = {a: deeparch.summary(create_model("mobilenet_v1", alpha=a), (3, 224, 224)).macs
         for a in (1.0, 0.5)}
    # roughly alpha^2 (the stem and the FC scale by alpha only)
    assert 0.25 < s[0.5] / s[1.0] < 0.27
    assert create_model("mobilenet_v1", alpha=0.6).features.stage1.block1.pw.conv.out_channels \
        == int(0.6 * 64)


def test_forward_backward_small_v1():
    model = create_model("mobilenet_v1_025", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert list(y.shape[1:]) == deeparch.summary(model, input_size=(3, 64, 64)).output_shape
    assert y.shape == (2, 10)
    y.sum().backward()
    assert model.features.stem.conv.weight.grad is not None


def test_forward_backward_small_v2():
    model = create_model("mobilenet_v2", num_classes=10, width_mult=0.35)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert list(y.shape[1:]) == deeparch.summary(model, input_size=(3, 32, 32)).output_shape
    assert y.shape == (2, 10)
    y.sum().backward()
    assert model.head.fc.weight.grad is not None


def test_features_only_v1():
    fx = create_model("mobilenet_v1_025", features_only=True, out_stages=[1, "stage2", 6])
    maps = fx(torch.randn(1, 3, 64, 64))          # 1: the stem, 6: stage5
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 32, 32), (32, 16, 16), (256, 2, 2)]
    with torch.device("meta"):
        model = create_model("mobilenet_v1")
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5"]


def test_features_only_v2():
    with torch.device("meta"):
        model = create_model("mobilenet_v2")
    assert model.stage_names == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["conv_last"]
    fx = create_model("mobilenet_v2", features_only=True, num_classes=10,
                      out_stages=["stage2", "stage4", "stage7"], width_mult=0.35)
    maps = fx(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 16), (24, 4, 4), (112, 2, 2)]


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2"])
def test_reset_classifier(name):
    with torch.device("meta"):
        model = create_model(name)
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5
    out = deeparch.summary(model, input_size=(3, 64, 64)).output_shape
    assert out == [5]


def test_v2_torchvision_and_paper_figures():
    s = deeparch.summary("mobilenet_v2")
    assert s.total_params == 3_504_872                  # torchvision / Keras, exact
    assert round(s.macs / 1e9, 2) == 0.30               # torchvision: 0.30 GFLOPS
    # the paper's "300M" and TF-slim's table cut the 300.77M to whole millions
    assert int(s.macs / 1e6) == 300


# TF-slim's MobileNet v2 table (million MACs, truncated): width multiplier at 224, and
# resolution at width 1.0
SLIM_V2_WIDTH = [(1.4, 582), (1.0, 300), (0.75, 209), (0.5, 97), (0.35, 59)]
SLIM_V2_RES = [(192, 221), (160, 154), (128, 99), (96, 56)]


@pytest.mark.parametrize("width, madds", SLIM_V2_WIDTH)
def test_v2_width_multiplier(width, madds):
    with torch.device("meta"):
        model = create_model("mobilenet_v2", width_mult=width)
    assert int(deeparch.summary(model, input_size=(3, 224, 224)).macs / 1e6) == madds
    last = model.features.conv_last.conv.out_channels
    assert last == (1792 if width == 1.4 else 1280)     # the last conv is never thinned
    assert all(m.out_channels % 8 == 0 for m in model.features.modules()
               if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("size, madds", SLIM_V2_RES)
def test_v2_resolution(size, madds):
    assert int(deeparch.summary("mobilenet_v2", input_size=(3, size, size)).macs / 1e6) == madds


def test_v2_inverted_residual_is_linear_and_residual():
    model = create_model("mobilenet_v2", num_classes=10, width_mult=0.35).eval()
    stage = model.features.stage3              # three blocks: 16 -> 16 (stride 2), 16, 16
    first, second = stage.block1, stage.block2
    assert not first.has_residual and second.has_residual
    assert isinstance(second.expand.act, nn.ReLU6) and isinstance(second.depthwise.act, nn.ReLU6)
    assert not hasattr(second.project, "act")  # the linear bottleneck
    assert second.expand.conv.out_channels == 6 * second.expand.conv.in_channels
    assert model.features.stage1.block1.expand is None           # t = 1: no expansion
    # zero the projection's BN: the residual block must return its input unchanged
    with torch.no_grad():
        second.project.bn.weight.zero_()
        second.project.bn.bias.zero_()
        x = torch.randn(2, second.depthwise.conv.in_channels // 6, 8, 8)
        assert torch.equal(second(x), x)


@pytest.mark.parametrize("knobs", [
    dict(alpha=0), dict(alpha=-0.5), dict(alpha="wide"), dict(img_size=0),
    dict(drop_rate=1.5), dict(width=2),
])
def test_bad_v1_knobs(knobs):
    with pytest.raises(DeeparchError):
        create_model("mobilenet_v1", **knobs)


@pytest.mark.parametrize("knobs", [dict(width_mult=0), dict(width_mult=-1.0),
                                   dict(alpha=0.5)])
def test_bad_v2_knobs(knobs):
    with pytest.raises(ModelOptionError):
        create_model("mobilenet_v2", **knobs)
