import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError, ModelOptionError, UnknownModelError


def test_list_and_filter():
    names = deeparch.list_models()
    assert names == sorted(names) and {"vgg16", "alexnet", "lenet5", "fashion_cnn"} <= set(names)
    assert set(deeparch.list_models("vgg1?")) == {"vgg11", "vgg13", "vgg16", "vgg19"}
    assert "vgg16_bn" in deeparch.list_models("bn")


def test_model_card_says_where_figures_come_from():
    card = deeparch.model_info("vgg16")
    assert card.year == 2014 and "Very Deep" in card.paper
    assert card.params == 138_357_544 and card.macs == 15_470_264_320
    assert card.input_size == (3, 224, 224) and card.source
    d = card.to_dict()
    assert "num_classes" in d["options"] and d["published_params"] == 138_357_544


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean .*vgg16"):
        deeparch.model_info("vgg61")
    with pytest.raises(DeeparchError, match="deeparch models"):
        deeparch.create_model("zzzzzz")


def test_num_classes_in_chans_and_reset_classifier():
    m = deeparch.create_model("lenet5", num_classes=3, in_chans=2)
    assert m(torch.randn(1, 2, 32, 32)).shape == (1, 3)
    m.reset_classifier(5)
    assert m(torch.randn(1, 2, 32, 32)).shape == (1, 5)
    m.reset_classifier(0)
    assert m(torch.randn(1, 2, 32, 32)).shape == (1, 84)


def test_features_only_returns_the_chosen_stages():
    m = deeparch.create_model("vgg11_cifar", features_only=True, out_stages=[2, "block4"])
    outs = m(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(128, 8, 8), (512, 2, 2)]
    with pytest.raises(ModelOptionError, match="stages 1 to 5"):
        deeparch.create_model("vgg11", features_only=True, out_stages=[9])
    net = deeparch.create_model("alexnet")
    assert net.stage_names == ["norm1", "norm2", "pool3"]
    assert net.forward_features(torch.randn(1, 3, 227, 227)).shape == (1, 256, 6, 6)
