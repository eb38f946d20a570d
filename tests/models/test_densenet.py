"""DenseNet: the ImageNet models of Table 1 and the CIFAR table (Table 2, and the rows the
seed slides quote), reproduced by the inspector; growth rate, bottleneck (B), compression
(C), transition layers and the dense concatenation."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import DeeparchError, ModelOptionError, ShapeError
from deeparch.models import create_model, list_models, model_info

# name: (parameters, mult-adds at the card's input), exact, computed by deeparch
IMAGENET = {
    "densenet121": (7_978_856, 2_834_161_664),
    "densenet169": (14_149_480, 3_359_843_328),
    "densenet201": (20_013_928, 4_291_365_888),
    "densenet161": (28_681_000, 7_727_907_072),
}
# torchvision's published figures: exact parameters, GFLOPS (mult-adds) to two decimals
TORCHVISION = {
    "densenet121": (7_978_856, 2.83),
    "densenet169": (14_149_480, 3.36),
    "densenet201": (20_013_928, 4.29),
    "densenet161": (28_681_000, 7.73),
}

# Huang et al. Table 2 (CIFAR-10, 10 classes): name, depth L, k, params in M as printed
# (rounded to 0.1M), and the exact count of the architecture the paper describes
CIFAR_TABLE = [
    ("densenet40_k12", 40, 12, 1.0, 1_019_722),
    ("densenet100_k12", 100, 12, 7.0, 6_979_642),
    ("densenet100_k24", 100, 24, 27.2, 27_249_082),
    ("densenet_bc100_k12", 100, 12, 0.8, 769_162),
    ("densenet_bc250_k24", 250, 24, 15.3, 15_324_406),
    ("densenet_bc190_k40", 190, 40, 25.6, 25_624_430),
]
# the four rows the seed slides (004) quote in their CIFAR-10 table: depth, # params
SEED_ROWS = {
    "densenet40_k12": (40, 1.0e6),
    "densenet100_k12": (100, 7.0e6),
    "densenet100_k24": (100, 27.2e6),
    "densenet_bc190_k40": (190, 25.6e6),
}

ALL = list_models(family="densenet")


@lru_cache(maxsize=None)
def summary(name):
    return deeparch.summary(name)


def count(name, **kw):
    """Parameters of ``name`` built with other knobs (on the meta device: nothing allocated)."""
    with torch.device("meta"):
        model = create_model(name, **kw)
    return deeparch.summary(model, input_size=model_info(name).input_size).total_params



def test_registered_names():
    assert sorted(ALL) == sorted(list(IMAGENET) + [row[0] for row in CIFAR_TABLE])


@pytest.mark.parametrize("name", ALL)
def test_card_matches_the_inspector(name):
    card = model_info(name)
    s = summary(name)
    assert card.source
    if card.exact:
        assert s.total_params == card.params
        assert s.macs == card.macs
    else:  # the paper's figure, rounded to 0.1M: within half a unit of its last digit
        assert abs(s.total_params - card.params) <= 0.05e6
        assert card.macs is None


@pytest.mark.parametrize("name", list(IMAGENET))
def test_imagenet_figures(name):
    s = summary(name)
    params, macs = IMAGENET[name]
    assert (s.total_params, s.macs) == (params, macs)
    tv_params, tv_gflops = TORCHVISION[name]
    assert s.total_params == tv_params
    assert round(s.macs / 1e9, 2) == tv_gflops
    assert s.depth == int(name[8:])            # DenseNet-121 has 121 weight layers
    assert s.output_shape == [1000]


@pytest.mark.parametrize("name, depth, k, paper_m, exact", CIFAR_TABLE)
def test_cifar_table(name, depth, k, paper_m, exact):
    s = summary(name)
    assert s.input_size == (3, 32, 32) and s.output_shape == [10]
    assert s.total_params == exact
    assert round(s.total_params / 1e6, 1) == paper_m
    assert s.depth == depth                     # the table's depth column: L weight layers
    assert model_info(name).defaults["growth_rate"] == k


@pytest.mark.parametrize("name", list(SEED_ROWS))
def test_seed_slides_rows(name):
    depth, params = SEED_ROWS[name]
    card = model_info(name)
    (fig,) = card.seed_figures
    assert fig.quantity == "params" and fig.value == params and fig.tolerance == 0.05e6
    s = summary(name)
    assert abs(s.total_params - fig.value) <= fig.tolerance
    assert s.depth == depth


def test_inspector_explains_the_seed_row():
    from deeparch.inspect.explain import explain
    text = str(explain("densenet40_k12"))
    assert "1.0M" in text and "agrees with the exact 1,019,722" in text


def test_first_conv_has_16_maps_or_2k_for_bc():
    assert summary("densenet40_k12").layers[0].output_shape == [16, 32, 32]
    assert summary("densenet_bc190_k40").layers[0].output_shape == [80, 32, 32]
    # the paper's 16 maps (not the reference code's 2k) is what gives 27.2M for L=100, k=24
    assert round(count("densenet100_k24", num_init_features=48) / 1e6, 1) == 28.1


def test_forward_backward_cifar():
    torch.manual_seed(0)
    model = create_model("densenet40_k12", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert list(out.shape[1:]) == deeparch.summary(model, input_size=(3, 32, 32)).output_shape
    out.sum().backward()
    assert model.features.stem.conv0.weight.grad is not None


def test_forward_backward_imagenet_small_input():
    torch.manual_seed(0)
    model = create_model("densenet121", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    assert list(out.shape[1:]) == deeparch.summary(model, input_size=(3, 32, 32)).output_shape
    out.mean().backward()
    assert model.head.fc.weight.grad is not None


def test_stage_names_and_features_only():
    model = create_model("densenet121", num_classes=10)
    assert model.stage_names == ["stem", "block1", "transition1", "block2", "transition2",
                                 "block3", "transition3", "block4", "norm5"]
    fx = create_model("densenet121", features_only=True,
                      out_stages=["stem", "block1", "transition1", "block4", "norm5"])
    maps = fx(torch.randn(1, 3, 64, 64))
    # 64 stem maps at /4; block1 adds 6 x 32; transition1 halves maps and size; block4 ends
    # with 512 + 16 x 32 = 1024 maps at /32; norm5 is BN-ReLU
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64, 16, 16), (256, 16, 16), (128, 8, 8), (1024, 2, 2), (1024, 2, 2)]
    assert maps[-1].min() >= 0
    cifar = create_model("densenet40_k12", features_only=True, out_stages=[2, 4])
    a, b = cifar(torch.randn(1, 3, 32, 32))
    assert tuple(a.shape[1:]) == (16 + 12 * 12, 32, 32)        # block1: 12 layers of k=12
    assert tuple(b.shape[1:]) == (160 + 12 * 12, 16, 16)       # block2 after transition1
    assert create_model("densenet40_k12").stage_names[-1] == "norm4"


def test_reset_classifier():
    model = create_model("densenet_bc100_k12")
    model.reset_classifier(5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.head.fc.in_features == 342


def test_dense_layer_concatenates_its_input_unchanged():
    torch.manual_seed(0)
    model = create_model("densenet40_k12").eval()
    layer = model.features.block1.layer3
    x = torch.randn(2, 16 + 2 * 12, 8, 8)
    y = layer(x)
    assert y.shape[1] == x.shape[1] + 12
    assert torch.equal(y[:, :x.shape[1]], x)


def test_growth_rate_sets_each_layers_input():
    """k_n = k_0 + k (n - 1): the n-th layer of a block sees every earlier map."""
    model = create_model("densenet40_k12")
    block = model.features.block1
    assert len(block) == 12
    for n, layer in enumerate(block, 1):
        assert layer.norm1.num_features == 16 + 12 * (n - 1)
        assert layer.conv1.out_channels == 12 and layer.conv1.kernel_size == (3, 3)
    s = summary("densenet40_k12")
    cats = [r for r in s.layers if r.type == "cat"]
    assert len(cats) == 36                                       # one per dense layer
    assert cats[0].output_shape == [28, 32, 32]


def test_bottleneck_and_compression():
    with torch.device("meta"):
        bc = create_model("densenet_bc100_k12")
    layer = bc.features.block1.layer1
    assert [type(m).__name__ for m in layer] == [
        "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 4 * 12
    assert layer.conv2.kernel_size == (3, 3) and layer.conv2.out_channels == 12
    t = bc.features.transition1
    assert [n for n, _ in t.named_children()] == ["norm", "relu", "conv", "pool"]
    assert isinstance(t.pool, nn.AvgPool2d) and t.pool.kernel_size == 2 and t.pool.stride == 2
    m = 24 + 16 * 12                                             # 2k + 16 layers x k
    assert (t.conv.in_channels, t.conv.out_channels) == (m, m // 2)

    def params(**kw):
        return count("densenet_bc100_k12", **kw)

    base = params()
    assert base == 769_162
    assert params(compression=1.0) > base              # no compression keeps every map
    # the same 16 layers per block without the 1x1 bottleneck: each 3x3 conv then reads
    # every earlier map instead of 4k of them, which costs more
    assert params(bottleneck=False, depth=52) > base
    assert params(growth_rate=24) > 3 * base           # parameters grow ~k^2
    # DenseNet (no B, no C): transitions keep every map
    t = create_model("densenet40_k12").features.transition1
    assert t.conv.in_channels == t.conv.out_channels == 16 + 12 * 12


def test_drop_rate_after_every_conv_but_the_first():
    model = create_model("densenet_bc100_k12", drop_rate=0.2)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(drops) == len(convs) - 1 and all(d.p == 0.2 for d in drops)
    assert not any(isinstance(m, nn.Dropout) for m in create_model("densenet_bc100_k12").modules())


def test_custom_block_config():
    model = create_model("densenet121", block_config=(2, 2), growth_rate=8, num_classes=3)
    assert model.stage_names == ["stem", "block1", "transition1", "block2", "norm3"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("name, kw", [
    ("densenet121", {"growth_rate": 0}),
    ("densenet121", {"growth_rate": 2.5}),
    ("densenet121", {"compression": 0}),
    ("densenet121", {"compression": 1.5}),
    ("densenet121", {"bn_size": 0}),
    ("densenet121", {"drop_rate": 1.0}),
    ("densenet121", {"block_config": ()}),
    ("densenet121", {"block_config": (6, 0, 24)}),
    ("densenet40_k12", {"depth": 41}),
    ("densenet40_k12", {"depth": 4}),
    ("densenet_bc100_k12", {"depth": 43}),       # (43 - 4) / 6 layers is not whole
    ("densenet40_k12", {"num_init_features": 0}),
    ("densenet40_k12", {"width": 2}),
])
def test_bad_knobs(name, kw):
    with pytest.raises(ModelOptionError):
        create_model(name, **kw)


def test_input_too_small():
    with pytest.raises(ShapeError):
        deeparch.summary("densenet121", input_size=(3, 16, 16))
    with pytest.raises(DeeparchError):
        deeparch.summary("densenet40_k12", input_size=(3, 2, 2))
