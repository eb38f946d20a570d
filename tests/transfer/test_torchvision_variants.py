"""The registered variants and options that reproduce torchvision (alexnet_tv, googlenet_tv,
VGG's adaptive_pool, EfficientNet's bn_eps): their cards, and the mapping tables, checked
against deeparch's own models without torchvision (the outputs are proven against
torchvision itself in test_torchvision_weights.py)."""
from __future__ import annotations

import pytest
import torch

import deeparch
from deeparch.errors import ModelOptionError
from deeparch.transfer.torchvision import ARCHS


@pytest.mark.parametrize("name, params, macs", [
    ("alexnet_tv", 61_100_840, 714_188_480),       # torchvision: 61,100,840 / 0.714 GFLOPS
    ("googlenet_tv", 6_624_904, 1_498_376_192),    # torchvision: 6,624,904 / 1.498 GFLOPS
])
def test_the_torchvision_variants_weigh_what_torchvision_publishes(name, params, macs):
    card = deeparch.model_info(name)
    s = deeparch.summary(name)
    assert card.exact and (card.params, card.macs) == (s.total_params, s.macs) == (params, macs)
    assert "torchvision" in card.source and "torchvision" in card.description


def test_the_papers_versions_stay_the_defaults():
    assert deeparch.summary("alexnet").total_params == 62_378_344
    assert deeparch.summary("googlenet").total_params == 6_998_552
    m = deeparch.create_model("googlenet")
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert {x.eps for x in deeparch.create_model("efficientnet_b0").modules()
            if isinstance(x, torch.nn.BatchNorm2d)} == {1e-3}


def test_googlenet_tv_with_its_aux_heads_and_transform_input():
    m = deeparch.create_model("googlenet_tv", aux_logits=True)
    # torchvision's googlenet(aux_logits=True): 13,004,888 parameters
    assert sum(p.numel() for p in m.parameters()) == 13_004_888
    assert {x.eps for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)} == {1e-3}
    assert m.features.stem.transform is not None
    x = torch.randn(2, 3, 64, 64)
    m.train()
    logits, aux1, aux2 = m(x)                       # any input: the aux heads pool to 4x4
    assert logits.shape == aux1.shape == aux2.shape == (2, 1000)
    # the transform is torchvision's: ImageNet-normalised -> [-1, 1]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    img = torch.rand(1, 3, 8, 8)
    out = m.features.stem.transform((img - mean) / std)
    torch.testing.assert_close(out, (img - 0.5) / 0.5, rtol=1e-6, atol=1e-6)
    grey = deeparch.create_model("googlenet_tv", in_chans=1)      # no transform for grey
    assert "transform" not in dict(grey.features.stem.named_children())
    with pytest.raises(ModelOptionError, match="transform_input"):
        deeparch.create_model("googlenet_tv", in_chans=1, transform_input=True)
    with pytest.raises(ModelOptionError, match="batch norm"):
        deeparch.create_model("googlenet_tv", bn=False)
    with pytest.raises(ModelOptionError, match="variant must be one of"):
        deeparch.create_model("googlenet", variant="keras")


def test_vgg_adaptive_pool_runs_any_input_with_the_same_classifier():
    plain = deeparch.create_model("vgg11", hidden=64)
    pooled = deeparch.create_model("vgg11", hidden=64, adaptive_pool=7)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in pooled.parameters()]
    pooled.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), pooled.eval()(x))      # the identity at 224
        assert pooled(torch.randn(1, 3, 48, 48)).shape == (1, 1000)
    with pytest.raises(ModelOptionError, match="adaptive_pool"):
        deeparch.create_model("vgg11", adaptive_pool=0)


def test_efficientnet_bn_eps_option():
    m = deeparch.create_model("efficientnet_b0", bn_eps=1e-5)
    assert {x.eps for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)} == {1e-5}
    with pytest.raises(ModelOptionError, match="bn_eps"):
        deeparch.create_model("efficientnet_b0", bn_eps=0)


def test_every_torchvision_architecture_has_a_registered_model():
    """torchvision 0.14's list (resnext101_64x4d included) -> a deeparch model each."""
    expected = {"alexnet", "googlenet", "mobilenet_v2", "squeezenet1_0", "squeezenet1_1",
                *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
                "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                "wide_resnet50_2", "wide_resnet101_2",
                *(f"densenet{d}" for d in (121, 161, 169, 201)),
                *(f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")),
                *(f"efficientnet_b{b}" for b in range(8))}
    assert set(ARCHS) == expected and len(expected) == 39
    for arch in ARCHS.values():
        card = deeparch.model_info(arch.model)
        assert card.family in {"alexnet", "vgg", "resnet", "resnext", "wide_resnet",
                               "densenet", "squeezenet", "googlenet", "mobilenet",
                               "shufflenet", "efficientnet"}
