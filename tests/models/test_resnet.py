"""ResNet, ResNeXt, Wide ResNet-50/101-2, SENet and the paper's CIFAR-10 ResNets: the
published figures reproduced by the inspector, the paper's knobs, and the removal of
residual units at inference (seed 004, "residual networks as ensembles")."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import DeeparchError, ModelOptionError, UnknownLayerError
from deeparch.models import create_model, list_models, model_info
from deeparch.models.resnet import (Bottleneck, PadShortcut, ResidualBlock, drop_blocks,
                                    residual_blocks)

# torchvision's published figures: exact num_params, GFLOPS (conv + fc mult-adds) as printed
TORCHVISION = {
    "resnet18": (11_689_512, 1.814),
    "resnet34": (21_797_672, 3.664),
    "resnet50": (25_557_032, 4.089),
    "resnet101": (44_549_160, 7.801),
    "resnet152": (60_192_808, 11.514),
    "resnext50_32x4d": (25_028_904, 4.23),
    "resnext101_32x8d": (88_791_336, 16.414),
    "resnext101_64x4d": (83_455_272, 15.46),
    "wide_resnet50_2": (68_883_240, 11.398),
    "wide_resnet101_2": (126_886_696, 22.753),
}
# exact mult-adds at 224 (conv + fc), computed by deeparch; they round to torchvision's
MACS = {
    "resnet18": 1_814_073_344, "resnet34": 3_663_761_408, "resnet50": 4_089_184_256,
    "resnet101": 7_801_405_440, "resnet152": 11_513_626_624,
    "resnext50_32x4d": 4_230_479_872, "resnext101_32x4d": 7_969_996_800,
    "resnext101_32x8d": 16_414_015_488, "resnext101_64x4d": 15_460_270_080,
    "wide_resnet50_2": 11_398_021_120, "wide_resnet101_2": 22_753_050_624,
}
# the authors' SENets as Cadene's pretrainedmodels / osmr's imgclsmob count them (exact),
# and osmr's resnext101_32x4d
EXACT_PARAMS = {
    "resnext101_32x4d": 44_177_704,
    "se_resnet18": 11_778_592,
    "se_resnet34": 21_958_868,
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "se_resnet152": 66_821_848,
    "se_resnext50_32x4d": 27_559_896,
    "se_resnext101_32x4d": 48_955_416,
}
# He et al. Table 6 (CIFAR-10): depth, params as printed (M), our exact option A count,
# our exact mult-adds at 32x32
CIFAR = [
    (20, 0.27, 269_722, 40_551_040),
    (32, 0.46, 464_154, 68_862_592),
    (44, 0.66, 658_586, 97_174_144),
    (56, 0.85, 853_018, 125_485_696),
    (110, 1.7, 1_727_962, 252_887_680),
    (1202, 19.4, 19_421_274, 2_829_238_912),
]
# osmr imgclsmob's CIFAR-10 ResNets use projection shortcuts (option B): exact counts
CIFAR_OPTION_B = {20: 272_474, 56: 855_770, 110: 1_730_714}

IMAGENET = sorted(TORCHVISION) + ["resnext101_32x4d"] + sorted(n for n in EXACT_PARAMS
                                                              if n.startswith("se_"))
CIFAR_NAMES = [f"resnet{d}" for d, *_ in CIFAR]
ALL = IMAGENET + CIFAR_NAMES


@functools.lru_cache(maxsize=None)
def _card_summary(name):
    """The summary of a registered variant at its card's input (cached: shared by tests)."""
    return deeparch.summary(name)


def _summary(name, **kw):
    card = model_info(name)
    with torch.device("meta"):
        model = create_model(name, **kw)
    return deeparch.summary(model, input_size=card.input_size)


def _decimals(x: float) -> int:
    return len(repr(x).split(".")[1])


def test_registered_names():
    fams = ("resnet", "resnext", "wide_resnet", "senet", "resnet_cifar")
    assert sorted(ALL) == sorted(n for f in fams for n in list_models(family=f)
                                 if not n.endswith("_keras"))   # test_keras_variants.py


@pytest.mark.parametrize("name", ALL)
def test_card_matches_the_inspector(name):
    card = model_info(name)
    s = _card_summary(name)
    assert card.source and card.paper
    if card.exact:
        assert s.total_params == card.params
        assert s.macs == card.macs
    else:  # the paper's figure, rounded: within half a unit of its last printed digit
        half = 0.005e6 if card.params < 1e6 else 0.05e6
        assert abs(s.total_params - card.params) <= half
        assert card.macs is None


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_figures(name):
    s = _card_summary(name)
    params, gflops = TORCHVISION[name]
    assert s.total_params == params
    assert round(s.macs / 1e9, _decimals(gflops)) == gflops
    assert s.macs == MACS[name]
    assert s.output_shape == [1000]


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_senet_and_resnext_parameters(name):
    assert _card_summary(name).total_params == EXACT_PARAMS[name]


def test_se_adds_two_fcs_per_unit():
    """An SE gate on C channels with ratio r: C*C/r + C/r (FC down) + C/r*C + C (FC up)."""
    def se(c, r=16):
        return 2 * c * (c // r) + c // r + c

    bottleneck = 3 * se(256) + 4 * se(512) + 6 * se(1024) + 3 * se(2048)
    assert bottleneck == 2_530_992
    assert EXACT_PARAMS["se_resnet50"] - TORCHVISION["resnet50"][0] == bottleneck
    assert EXACT_PARAMS["se_resnext50_32x4d"] - TORCHVISION["resnext50_32x4d"][0] == bottleneck
    basic = 2 * (se(64) + se(128) + se(256) + se(512))
    assert EXACT_PARAMS["se_resnet18"] - TORCHVISION["resnet18"][0] == basic
    # the reduction ratio is the knob: r=8 doubles the FC weights
    r8 = _summary("se_resnet50", se_reduction=8).total_params
    assert r8 - TORCHVISION["resnet50"][0] == (3 * se(256, 8) + 4 * se(512, 8)
                                               + 6 * se(1024, 8) + 3 * se(2048, 8))


def test_stride_on_the_1x1_gives_the_papers_flops():
    """The papers count ResNet v1 (stride on the bottleneck's first 1x1): ResNet Table 1
    (x1e9 FLOPs, one decimal) and SENet Table 2 (ResNet-50 3.86, SE-ResNet-50 3.87)."""
    table1 = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
    for depth, flops in table1.items():
        s = _summary(f"resnet{depth}", stride_on_1x1=True)
        # Table 1 is approximate: 3.66 is printed 3.6 and 3.86 is printed 3.8
        assert abs(s.macs / 1e9 - flops) / flops < 0.02
    assert round(_summary("resnet50", stride_on_1x1=True).macs / 1e9, 2) == 3.86
    # SENet's +0.26% (3.86 -> 3.87) also counts the squeeze pooling and the rescaling; our
    # mult-adds count only the two FCs (+2.5M), so SE-ResNet-50 stays within 1% of 3.87
    se50 = _summary("se_resnet50", stride_on_1x1=True).macs
    assert se50 - 3_857_973_248 == 2_514_944 and abs(se50 / 1e9 - 3.87) / 3.87 < 0.01
    # v1 vs v1.5 changes the cost, never the parameters
    assert _summary("resnet50", stride_on_1x1=True).total_params == 25_557_032
    v1 = create_model("resnet50", stride_on_1x1=True).features.layer2[0]
    v15 = create_model("resnet50").features.layer2[0]
    assert (v1.conv1.stride, v1.conv2.stride) == ((2, 2), (1, 1))
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))


@pytest.mark.parametrize("depth, paper_m, params, macs", CIFAR)
def test_cifar_table6(depth, paper_m, params, macs):
    s = _card_summary(f"resnet{depth}")
    assert s.input_size == (3, 32, 32) and s.output_shape == [10]
    assert (s.total_params, s.macs) == (params, macs)
    digits = 2 if paper_m < 1 else 1
    assert round(s.total_params / 1e6, digits) == paper_m
    assert s.depth == depth                     # 6n+2 weight layers: option A adds none
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                   for m in create_model("resnet20").modules())


def test_cifar_option_b_projections():
    """Option B adds a 1x1 conv + BN at the two stage changes: 16->32 and 32->64."""
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert extra == 2_752
    for depth, exact in CIFAR_OPTION_B.items():
        s = _summary(f"resnet{depth}", shortcut="B")
        assert s.total_params == exact
        assert s.total_params - dict((d, p) for d, _, p, _ in CIFAR)[depth] == extra


def test_imagenet_option_a_b_c():
    """Table 3's three shortcut options on ResNet-34: A (no parameters) < B < C."""
    a, b, c = (_summary("resnet34", shortcut=k).total_params for k in "ABC")
    assert b == 21_797_672
    assert b - a == sum(i * o + 2 * o for i, o in [(64, 128), (128, 256), (256, 512)])
    # C projects every unit: 3 + 4 + 6 + 3 = 16 projections instead of 3
    assert c - b == (3 * (64 * 64 + 128) + 3 * (128 * 128 + 256) + 5 * (256 * 256 + 512)
                     + 2 * (512 * 512 + 1024))


def test_padding_shortcut_subsamples_and_appends_zeros():
    sc = PadShortcut(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    with pytest.raises(ModelOptionError):
        PadShortcut(32, 16, 1)


def test_cardinality_and_width_are_knobs():
    # ResNeXt-50 32x4d keeps ResNet-50's complexity (the paper's template): within 3%
    r50, rx50 = TORCHVISION["resnet50"][0], TORCHVISION["resnext50_32x4d"][0]
    assert abs(rx50 - r50) / r50 < 0.03
    with torch.device("meta"):
        block = create_model("resnext50_32x4d").features.layer1[0]
        rx101 = create_model("resnext101_32x8d").features.layer4[0]
        wide = create_model("wide_resnet50_2").features.layer4[2]
    assert block.conv2.groups == 32 and block.conv2.in_channels == 128
    assert rx101.conv2.out_channels == 2048 and rx101.conv2.groups == 32
    # fewer groups of the same width: more parameters in the 3x3
    assert _summary("resnext50_32x4d", cardinality=16).total_params < rx50
    assert _summary("resnext50_32x4d", cardinality=64).total_params > rx50
    assert (wide.conv1.in_channels, wide.conv1.out_channels, wide.conv3.out_channels) == (
        2048, 1024, 2048)


# real forward + backward on the smallest variant of each kind of unit (every variant runs
# on meta tensors in the card test above; building the big ones for real costs seconds each)
FORWARD = [("resnet18", {}), ("se_resnet18", {}), ("se_resnext50_32x4d", {}), ("resnet20", {}),
           ("resnet20", {"shortcut": "B"}), ("resnet18", {"shortcut": "A"}),
           ("resnet18", {"drop_path_rate": 0.1, "drop_rate": 0.2})]


@pytest.mark.parametrize("name, kw", FORWARD)
def test_forward_backward(name, kw):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kw)
    size = (3, 32, 32)
    out = model(torch.randn(2, *size))
    assert list(out.shape[1:]) == deeparch.summary(model, input_size=size).output_shape == [10]
    out.sum().backward()
    assert model.head.fc.weight.grad is not None
    assert model.features.stem.conv1.weight.grad is not None


def test_residual_addition_is_an_add_row():
    s = _card_summary("resnet18")
    adds = [r for r in s.layers if r.type == "add"]
    assert len(adds) == 8 and adds[0].name == "features.layer1.0.add"
    assert sum(r.type == "add" for r in _card_summary("resnet50").layers) == 16
    assert sum(r.type == "add" for r in _card_summary("resnet110").layers) == 54


def test_stages_and_features_only():
    with torch.device("meta"):
        model = create_model("resnet50", num_classes=10)
        fx = create_model("resnet50", features_only=True, out_stages=[1, 2, 3, 4, 5])
        maps = fx(torch.randn(1, 3, 64, 64))
    assert model.stage_names == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64, 16, 16), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    cifar = create_model("resnet20", features_only=True, out_stages=["stage1", "stage3"])
    assert create_model("resnet20").stage_names == ["stem", "stage1", "stage2", "stage3"]
    a, b = cifar(torch.randn(1, 3, 32, 32))
    assert tuple(a.shape[1:]) == (16, 32, 32) and tuple(b.shape[1:]) == (64, 8, 8)


def test_reset_classifier_and_dropout():
    model = create_model("resnet18")
    model.reset_classifier(5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.head.fc.in_features == 512
    head = create_model("resnet20", drop_rate=0.2).head
    assert [n for n, _ in head.named_children()] == ["pool", "flatten", "drop", "fc"]
    assert head.drop.p == 0.2
    assert [n for n, _ in create_model("resnet20").head.named_children()] == [
        "pool", "flatten", "fc"]


def test_stochastic_depth_linear_decay():
    with torch.device("meta"):
        model = create_model("resnet50", drop_path_rate=0.2)
        plain = create_model("resnet50")
    units = [m for m in model.modules() if isinstance(m, Bottleneck)]
    rates = [u.drop_path.p for u in units]
    assert len(rates) == 16
    assert rates == pytest.approx([0.2 * (i + 1) / 16 for i in range(16)])
    assert all(u.drop_path is None for u in plain.modules() if isinstance(u, Bottleneck))
    # no effect at inference; drops whole samples while training
    torch.manual_seed(0)
    cifar = create_model("resnet20", drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    cifar.eval()
    assert torch.equal(cifar(x), cifar(x))
    cifar.train()
    assert not torch.equal(cifar(x), cifar(x))


def _zero_branch(block: ResidualBlock) -> None:
    last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)


def test_drop_blocks_removes_a_unit():
    """Removing unit i gives relu(x + 0) = x (its input is already a ReLU output): the same
    network as one whose branch outputs zero."""
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    names = residual_blocks(model)
    # the two units that change the shape (stage2.0, stage3.0) cannot be removed
    assert len(names) == 9 - 2
    assert "features.stage2.0" not in names and "features.stage2.1" in names
    dropped = drop_blocks(model, ["stage2.1", "features.stage3.2"])
    assert isinstance(dropped.features.stage2[1], nn.Identity)
    assert isinstance(model.features.stage2[1], ResidualBlock)      # a copy by default
    _zero_branch(model.features.stage2[1])
    _zero_branch(model.features.stage3[2])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(dropped(x), model(x), atol=1e-6)
    # the removed units' weights are gone: 2 x (3x3 conv + BN) at 32 and at 64 channels
    unit32, unit64 = 2 * (9 * 32 * 32 + 2 * 32), 2 * (9 * 64 * 64 + 2 * 64)
    assert deeparch.summary(dropped, input_size=(3, 32, 32)).total_params == (
        269_722 - unit32 - unit64)
    same = drop_blocks(model, "stage1.0", inplace=True)
    assert same is model and isinstance(model.features.stage1[0], nn.Identity)


def test_drop_blocks_on_imagenet_and_errors():
    with torch.device("meta"):
        model = create_model("resnet50")
        names = residual_blocks(model)
        assert len(names) == 16 - 4
        out = drop_blocks(model, names)
        assert out(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    assert sum(isinstance(m, Bottleneck) for m in out.modules()) == 4
    with pytest.raises(ModelOptionError, match="changes the shape"):
        drop_blocks(model, "layer2.0")
    with pytest.raises(UnknownLayerError):
        drop_blocks(model, "layer9.0")
    with pytest.raises(ModelOptionError, match="not a residual unit"):
        drop_blocks(model, "stem")


@pytest.mark.parametrize("name, kw", [
    ("resnet50", {"depth": 42}),
    ("resnet18", {"cardinality": 32}),
    ("resnext50_32x4d", {"cardinality": 0}),
    ("resnext50_32x4d", {"base_width": 0.5}),
    ("se_resnet50", {"se_reduction": 0}),
    ("resnet34", {"shortcut": "D"}),
    ("resnet50", {"drop_path_rate": 1.0}),
    ("resnet50", {"drop_rate": -0.1}),
    ("resnet50", {"in_chans": 0}),
    ("resnet20", {"depth": 21}),
    ("resnet20", {"shortcut": "b"}),
    ("resnet20", {"growth_rate": 12}),
])
def test_bad_knobs(name, kw):
    with pytest.raises(DeeparchError):
        with torch.device("meta"):
            create_model(name, **kw)
