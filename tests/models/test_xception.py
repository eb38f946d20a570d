"""Xception against the paper's Figure 5 and Table 3."""
import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError
from deeparch.layers import SeparableConv2d



@pytest.fixture(scope="module")
def s():
    return deeparch.summary("xception")


def count(**kw):
    with torch.device("meta"):
        return sum(p.numel() for p in deeparch.create_model("xception", **kw).parameters())


def test_counts_against_the_card(s):
    card = deeparch.model_info("xception")
    assert card.input_size == (3, 299, 299)
    assert s.total_params == card.params == 22_855_952  # the paper's Table 3, exactly
    assert s.macs == 8_357_403_496
    assert card.macs == 8_403_630_000 and abs(s.macs - card.macs) / card.macs < 0.01


def test_figure5_map_sizes(s):
    out = {r.name.removeprefix("features."): r.output_shape for r in s.layers}
    assert out["stem.conv1.act"] == [32, 149, 149] and out["stem.conv2.act"] == [64, 147, 147]
    assert out["entry.block1.add"] == [128, 74, 74]
    assert out["entry.block2.add"] == [256, 37, 37]
    assert out["entry.block3.add"] == [728, 19, 19]
    assert out["middle.block8.add"] == [728, 19, 19]
    assert out["exit.block1.add"] == [1024, 10, 10]
    assert out["exit.relu2"] == [2048, 10, 10]
    assert s.output_shape == [1000]
    # "36 convolutional layers structured into 14 modules, all of which have linear residual
    # connections around them, except for the first and last modules": 2 plain convs and 34
    # separable ones (depthwise + pointwise), besides the 4 shortcut projections
    convs = [r for r in s.layers if r.geometry and r.geometry["kind"] == "conv"]
    depthwise = [r for r in convs if r.geometry["groups"] > 1]
    assert len(depthwise) == 34 and len(convs) - 2 * len(depthwise) == 2 + 4
    assert sum(1 for r in s.layers if r.name.endswith(".add")) == 14 - 2


def test_separable_convs_have_nothing_between_depthwise_and_pointwise():
    with torch.device("meta"):
        m = deeparch.create_model("xception")
    seps = [x for x in m.modules() if isinstance(x, SeparableConv2d)]
    assert len(seps) == 34
    assert all([n for n, _ in sep.named_children()] == ["depthwise", "pointwise"] for sep in seps)
    assert all(sep.depthwise.bias is None and sep.pointwise.bias is None for sep in seps)


def test_knobs_change_the_counts():
    # Figure 9: without residual connections, i.e. without the four 1x1 projections (+ BN)
    projections = sum(i * o + 2 * o for i, o in [(64, 128), (128, 256), (256, 728), (728, 1024)])
    assert count(residual=False) == 22_855_952 - projections == 21_878_880
    # each middle-flow block: three separable 728 -> 728 convs with BN
    block = 3 * (9 * 728 + 728 * 728 + 2 * 728)
    assert count(middle_blocks=0) == 22_855_952 - 8 * block == 9_944_144
    # Figure 10: an intermediate activation adds no parameters
    assert count(mid_act="relu") == 22_855_952


def test_forward_backward_small_input_features_and_reset():
    m = deeparch.create_model("xception", num_classes=10, middle_blocks=2)
    x = torch.randn(2, 3, 64, 64)
    y = m(x)
    assert list(y.shape[1:]) == deeparch.summary(m, input_size=(3, 64, 64)).output_shape == [10]
    y.sum().backward()
    assert m.features.stem.conv1.conv.weight.grad is not None
    assert m.stage_names == ["entry", "middle", "exit"]
    fx = deeparch.create_model("xception", features_only=True, middle_blocks=1,
                               out_stages=["entry", 3])
    maps = [tuple(t.shape[1:]) for t in fx(x)]
    assert maps == [(728, 4, 4), (2048, 2, 2)]
    m.reset_classifier(5)
    assert m(x).shape == (2, 5)
    no_res = deeparch.create_model("xception", num_classes=3, residual=False, middle_blocks=1)
    assert no_res(x).shape == (2, 3)


@pytest.mark.parametrize("kw", [dict(middle_blocks=-1), dict(drop_rate=1.0),
                                dict(mid_act="nonsense")])
def test_bad_knobs(kw):
    with pytest.raises(DeeparchError):
        deeparch.create_model("xception", **kw)


def test_too_small_input_is_a_shape_error():
    with pytest.raises(DeeparchError):
        deeparch.summary("xception", input_size=(3, 4, 4))
