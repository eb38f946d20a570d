"""GoogLeNet / Inception v1 against the paper's Table 1 and the seeds' figures."""
import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError
from deeparch.models.googlenet import INCEPTION

# Table 1 of the paper: output size (HxWxC) of each row at 224x224
TABLE1_OUTPUTS = {
    "stem.conv1": "112x112x64", "stem.pool1": "56x56x64", "stem.conv2": "56x56x192",
    "stem.pool2": "28x28x192", "inception3.3a": "28x28x256", "inception3.3b": "28x28x480",
    "inception4.pool": "14x14x480", "inception4.4a": "14x14x512", "inception4.4b": "14x14x512",
    "inception4.4c": "14x14x512", "inception4.4d": "14x14x528", "inception4.4e": "14x14x832",
    "inception5.pool": "7x7x832", "inception5.5a": "7x7x832", "inception5.5b": "7x7x1024",
}
# Table 1's mult-adds ("ops") column in millions, per row
TABLE1_OPS = {"3a": 128, "3b": 304, "4a": 73, "4b": 88, "4c": 100, "4d": 119, "4e": 170,
              "5a": 54, "5b": 71}



@pytest.fixture(scope="module")
def s():
    return deeparch.summary("googlenet")


def _hwc(shape):
    return "x".join(map(str, shape[1:] + shape[:1]))


def test_counts_against_the_card_and_the_reference(s):
    card = deeparch.model_info("googlenet")
    assert card.params == 6_998_552 and card.macs == 1_550_000_000 and not card.exact
    # the BVLC Caffe reference model of the paper's network, exactly
    assert s.total_params == 6_998_552
    assert s.macs == 1_582_671_872
    # the MobileNet paper's 1550M is 2.1% below: the paper's Table 1 counts conv1 as 34M
    # (2.7K params), a 7x7x3x64 conv at 112x112 is 118M (9,472 params)
    assert abs(s.macs - card.macs) / card.macs < 0.025
    conv1 = next(r for r in s.layers if r.name == "features.stem.conv1.conv")
    assert (conv1.params, conv1.macs) == (9_472, 118_013_952)
    table1_total = 34 + 360 + sum(TABLE1_OPS.values()) + 1  # 1502M, "1.5 billion"
    assert abs(s.macs / 1e6 - (table1_total - 34 + 118)) < 5


def test_seed_figures_are_recorded(s):
    figs = {(f.quantity, f.value) for f in deeparch.model_info("googlenet").seed_figures}
    assert figs == {("params", 5e6), ("params", 6.8e6), ("macs", 1550e6)}
    # "Only 5 million parameters" and "6.8 Million" are rounder than the network: 7.0M
    assert round(s.total_params / 1e6, 1) == 7.0


def test_table1_output_sizes(s):
    outs = {}
    for r in s.layers:
        parts = r.name.split(".")[1:]
        for depth in (2, 3):
            key = ".".join(parts[:depth])
            if key in TABLE1_OUTPUTS and isinstance(r.output_shape[0], int):
                outs[key] = r.output_shape  # last record inside the row = its output
    assert {k: _hwc(v) for k, v in outs.items()} == TABLE1_OUTPUTS
    assert s.output_shape == [1000]


def test_table1_ops_per_inception_module(s):
    ops = {}
    for r in s.layers:
        parts = r.name.split(".")
        if len(parts) > 2 and parts[2] in INCEPTION:
            ops[parts[2]] = ops.get(parts[2], 0) + r.macs
    for name, millions in TABLE1_OPS.items():
        assert abs(ops[name] / 1e6 - millions) <= 3.5, name


def test_nine_inception_modules_and_22_layers_deep():
    m = deeparch.create_model("googlenet")
    modules = [n for n, x in m.named_modules() if type(x).__name__ == "Inception"]
    assert len(modules) == 9  # "Used 9 Inception modules"
    # "22 layers": conv1, the two stem convs, two per module on the longest path, the classifier
    assert 1 + 2 + 2 * len(modules) + 1 == 22


def test_bn_variant_is_the_reference_implementations_plus_real_5x5():
    with torch.device("meta"):
        m = deeparch.create_model("googlenet", bn=True)
    n = sum(p.numel() for p in m.parameters())
    # torchvision's 6,624,904 uses 3x3 kernels in the "5x5" branch: 16 * reduce * out more here
    extra = sum(16 * r5 * o5 for _, _, _, r5, o5, _ in INCEPTION.values())
    assert n == 6_624_904 + extra == 7_005_832
    assert not any(type(x).__name__ == "LocalResponseNorm" for x in m.modules())


def test_forward_backward_small_input_and_features():
    m = deeparch.create_model("googlenet", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    y = m(x)
    assert list(y.shape[1:]) == deeparch.summary(m, input_size=(3, 64, 64)).output_shape == [10]
    y.sum().backward()
    assert m.features.stem.conv1.conv.weight.grad is not None
    assert m.stage_names == ["stem", "inception3", "inception4", "inception5"]
    fx = deeparch.create_model("googlenet", features_only=True,
                               out_stages=["inception3", "inception5"])
    maps = fx(x)
    assert [tuple(t.shape[1:]) for t in maps] == [(480, 8, 8), (1024, 2, 2)]
    m.reset_classifier(5)
    assert m.eval()(x).shape == (2, 5)


def test_auxiliary_classifiers_in_training_mode_only():
    m = deeparch.create_model("googlenet", num_classes=10, aux_logits=True, img_size=96)
    x = torch.randn(2, 3, 96, 96)
    logits, aux1, aux2 = m.train()(x)
    assert logits.shape == aux1.shape == aux2.shape == (2, 10)
    (logits.sum() + 0.3 * (aux1.sum() + aux2.sum())).backward()  # the paper's 0.3 weight
    assert m.aux["4a"].fc1.weight.grad is not None
    assert m.aux["4a"].fc1.in_features == 128  # 6x6 map -> 5x5/3 pool -> 1x1
    m.reset_classifier(5)
    assert all(t.shape == (2, 5) for t in m(x))
    with torch.no_grad():
        assert m.eval()(x).shape == (2, 5)
    assert not any(n.startswith("aux") for n, _ in m.features.named_modules())


def test_auxiliary_heads_at_the_papers_size():
    with torch.device("meta"):
        m = deeparch.create_model("googlenet", aux_logits=True)
    head = m.aux["4d"]
    assert head.conv.conv.in_channels == 528 and m.aux["4a"].conv.conv.in_channels == 512
    assert head.fc1.in_features == 4 * 4 * 128 and head.drop.p == 0.7
    aux = sum(p.numel() for p in m.aux.parameters())
    assert aux == 6_379_728
    assert deeparch.summary(m, input_size=(3, 224, 224)).macs == 1_582_671_872  # eval: no aux


def test_bad_knobs():
    with pytest.raises(DeeparchError, match="79x79"):
        deeparch.create_model("googlenet", aux_logits=True, img_size=64)
    with pytest.raises(DeeparchError):
        deeparch.create_model("googlenet", drop_rate=1.5)
    with pytest.raises(DeeparchError):
        deeparch.summary("googlenet", input_size=(3, 16, 16))
