"""The registered variants and options that reproduce keras.applications (resnet*_keras,
preact_resnet*_keras, mobilenet_v1*_keras, mobilenet_v2_keras, xception_keras,
efficientnet_b*_keras; TensorFlow's padding): their cards, and the mapping tables checked
against deeparch's own models without Keras (the outputs are proven against Keras itself
in tests/transfer/test_keras_weights.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import deeparch
from deeparch.layers import TFConv2d, TFMaxPool2d, tf_same_pads
from deeparch.transfer import keras as ks

KERAS = deeparch.list_models("*_keras")

# Keras' trainable parameters (count_params() less the BN moving statistics), measured with
# Keras 3.15: ResNet50 25,636,712 - 53,120, ResNet50V2 25,613,800 - 45,440, ...
KERAS_TRAINABLE = {
    "resnet50_keras": 25_583_592, "resnet101_keras": 44_601_832,
    "resnet152_keras": 60_268_520, "preact_resnet50_keras": 25_568_360,
    "preact_resnet101_keras": 44_577_896, "preact_resnet152_keras": 60_236_904,
    "xception_keras": 22_855_952, "mobilenet_v2_keras": 3_504_872,
    "mobilenet_v1_keras": 4_231_976, "mobilenet_v1_075_keras": 2_585_560,
    "mobilenet_v1_050_keras": 1_331_592, "mobilenet_v1_025_keras": 470_072,
    "efficientnet_b0_keras": 5_288_548, "efficientnet_b1_keras": 7_794_184,
    "efficientnet_b2_keras": 9_109_994, "efficientnet_b3_keras": 12_233_232,
    "efficientnet_b4_keras": 19_341_616, "efficientnet_b5_keras": 30_389_784,
    "efficientnet_b6_keras": 43_040_704, "efficientnet_b7_keras": 66_347_960,
}


def test_every_keras_variant_is_listed():
    assert sorted(KERAS) == sorted(KERAS_TRAINABLE)
    assert {a.model for a in ks.archs().values()} >= set(KERAS)


@pytest.mark.parametrize("name", KERAS)
def test_card_matches_the_inspector_and_keras(name):
    card = deeparch.model_info(name)
    s = deeparch.summary(name)
    assert card.exact and (card.params, card.macs) == (s.total_params, s.macs)
    assert card.params == KERAS_TRAINABLE[name]
    assert "keras.applications" in card.source and "keras.applications" in card.description


@pytest.mark.parametrize("arch", list(ks.archs().values()), ids=list(ks.archs()))
def test_every_keras_layer_maps_onto_a_module_of_its_model(arch):
    """Each Keras layer's deeparch module exists, and every parameter and buffer of the
    model (but the batch-norm step counters) is filled by exactly one Keras variable."""
    with torch.device("meta"):
        model = deeparch.create_model(arch.model)
    modules = dict(model.named_modules())
    filled = set()
    for layer in arch.layers:
        if layer.kind == "norm":
            continue
        m = modules[layer.module]
        for n, _ in list(m.named_parameters()) + list(m.named_buffers()):
            if not n.endswith("num_batches_tracked"):
                key = f"{layer.module}.{n}"
                assert key not in filled, key
                filled.add(key)
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert filled == own


def test_the_papers_versions_stay_the_defaults():
    assert deeparch.summary("resnet50").macs == 4_089_184_256       # stride on the 3x3
    m = deeparch.create_model("mobilenet_v1")
    assert not any(isinstance(x, torch.nn.ReLU6) for x in m.modules())
    assert not any(isinstance(x, (TFConv2d, TFMaxPool2d)) for x in m.modules())
    assert {x.eps for x in deeparch.create_model("xception").modules()
            if isinstance(x, torch.nn.BatchNorm2d)} == {1e-5}


@pytest.mark.parametrize("size, k, s, pads", [(32, 3, 2, (0, 1)), (33, 3, 2, (1, 1)),
                                              (32, 5, 2, (1, 2)), (31, 5, 2, (2, 2)),
                                              (10, 3, 1, (1, 1)), (10, 1, 2, (0, 0))])
def test_tensorflow_same_padding(size, k, s, pads):
    assert tf_same_pads(size, k, s) == pads
    conv = TFConv2d(2, 3, k, s)
    x = torch.randn(1, 2, size, size)
    want = F.conv2d(F.pad(x, (*pads, *pads)), conv.weight, conv.bias, s)
    torch.testing.assert_close(conv(x), want)
    assert conv(x).shape[-1] == -(-size // s)


def test_tensorflow_max_pool_pads_at_the_end():
    x = torch.arange(16.0).view(1, 1, 4, 4) - 100          # negative: padding must be -inf
    y = TFMaxPool2d(3, 2)(x)
    assert y.shape[-1] == 2 and y[0, 0, 0, 0] == x[0, 0, 2, 2] and y[0, 0, 1, 1] == x[0, 0, 3, 3]
