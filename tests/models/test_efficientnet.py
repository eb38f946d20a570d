"""EfficientNet B0-B7: published counts, the MBConv block, stages, knobs, errors."""
import math

import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import DeeparchError
from deeparch.layers.mbconv import MBConv
from deeparch.models.efficientnet import B0_STAGES, SETTINGS

# torchvision's num_params (exact) and GFLOPS (3 decimals) at the resolution it measured them
# at, and the paper's resolution (the card's) -- they differ for B2 only.
#  name             params      GFLOPS  at   paper
_TABLE = """
efficientnet_b0    5288548     0.386   224  224
efficientnet_b1    7794184     0.687   240  240
efficientnet_b2    9109994     1.088   288  260
efficientnet_b3   12233232     1.827   300  300
efficientnet_b4   19341616     4.394   380  380
efficientnet_b5   30389784    10.266   456  456
efficientnet_b6   43040704    19.068   528  528
efficientnet_b7   66347960    37.746   600  600
"""
REFERENCE = {row[0]: (int(row[1]), float(row[2]), int(row[3]), int(row[4]))
             for row in map(str.split, _TABLE.strip().splitlines())}
PAPER_TABLE2_FLOPS = {"efficientnet_b2": 1.0e9}     # B2 at 260, to 2 digits (0.05B)


def test_registered_names():
    # the *_keras variants (keras.applications' padding) are tested in test_keras_variants.py
    assert [n for n in deeparch.list_models(family="efficientnet")
            if not n.endswith("_keras")] == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_published_counts(name):
    params, gflops, tv_res, paper_res = REFERENCE[name]
    card = deeparch.model_info(name)
    assert card.input_size == (3, paper_res, paper_res)
    assert card.params == params
    s = deeparch.summary(name)
    assert s.total_params == params                       # exact, whatever the card says
    assert abs(s.macs - card.macs) <= 0.01 * card.macs    # rounded figure: within 1%
    at_tv = s if tv_res == paper_res else deeparch.summary(name, (3, tv_res, tv_res))
    # torchvision's 3-decimal GFLOPS: within half a unit of its last digit
    assert abs(at_tv.macs / 1e9 - gflops) <= 0.0005
    if name in PAPER_TABLE2_FLOPS:
        assert abs(s.macs - PAPER_TABLE2_FLOPS[name]) <= 0.05e9


def test_b0_layout_and_forward_backward():
    model = deeparch.create_model("efficientnet_b0", num_classes=10)
    assert model.stage_names == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head_conv"]
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    out.sum().backward()                    # every weight, SE and head included, gets a gradient
    assert all(p.grad is not None for p in model.parameters())
    assert out.shape == (2, 10)
    assert list(out.shape[1:]) == deeparch.summary(model, input_size=(3, 64, 64)).output_shape
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)


def test_b1_forward_small_input():
    model = deeparch.create_model("efficientnet_b1", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)          # total stride 32: a 1x1 map before pooling
    with torch.no_grad():
        out = model(x)
    assert list(out.shape[1:]) == deeparch.summary(model, input_size=(1, 32, 32)).output_shape
    assert out.shape == (2, 10)


def test_features_only():
    fx = deeparch.create_model("efficientnet_b0", features_only=True,
                               out_stages=["stem", "stage2", "stage3", "stage5", "stage7",
                                           "head_conv"])
    with torch.no_grad():
        maps = fx(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (32, 32, 32), (24, 16, 16), (40, 8, 8), (112, 4, 4), (320, 2, 2), (1280, 2, 2)]


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, MBConv)]


def test_mbconv_structure_b0():
    model = deeparch.create_model("efficientnet_b0")
    blocks = _blocks(model)
    assert len(blocks) == sum(n for *_, n in B0_STAGES) == 16
    first = model.features.stage1[0]             # MBConv1: no expansion
    assert first.expand is None and first.depthwise.conv.kernel_size == (3, 3)
    assert first.se.fc1.out_channels == 8        # SE from the block input, 32 * 0.25
    b = model.features.stage6[1]                 # MBConv6, k5, 192 -> 192
    assert b.expand.conv.out_channels == 1152 and b.depthwise.conv.groups == 1152
    assert b.depthwise.conv.kernel_size == (5, 5)
    assert b.se.fc1.out_channels == 48 and b.se.fc2.out_channels == 1152
    assert isinstance(b.depthwise.act, nn.SiLU) and not hasattr(b.project, "act")
    assert b.has_residual and not model.features.stage6[0].has_residual
    # stochastic depth grows linearly with the block index: 0 ... 0.2 * 15 / 16
    rates = [blk.drop_path.p if blk.drop_path is not None else None for blk in blocks]
    assert rates[0] is None and rates[1] is None           # no residual in those
    assert math.isclose(rates[-2], 0.2 * 14 / 16)           # stage6's last block
    assert all(m.eps == 1e-3 and m.momentum == 0.01
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.head.drop.p == 0.2
    bound = 1 / math.sqrt(1000)
    assert model.head.fc.weight.abs().max() <= bound


def test_mbconv_drop_path_and_residual():
    torch.manual_seed(0)
    blk = MBConv(8, 8, 3, 1, 4, act="swish", se_reduced=2, drop_path=0.9)
    x = torch.randn(64, 8, 5, 5)
    blk.train()
    y = blk(x)
    kept_identity = [(y[i] == x[i]).all().item() for i in range(64)]
    assert any(kept_identity) and not all(kept_identity)    # some branches dropped
    blk.eval()
    with torch.no_grad():
        assert not torch.equal(blk(x), x)
    down = MBConv(8, 16, 5, 2, 6, act="swish", se_reduced=2, drop_path=0.5)
    assert down.drop_path is None and down(x).shape == (64, 16, 3, 3)


@pytest.mark.parametrize("variant", sorted(SETTINGS))
def test_variant_knobs(variant):
    width, depth, res, drop = SETTINGS[variant]
    card = deeparch.model_info(f"efficientnet_{variant}")
    assert card.defaults == {"width_mult": width, "depth_mult": depth, "drop_rate": drop}
    assert card.input_size == (3, res, res)


def test_depth_and_width_knobs_change_counts():
    with torch.device("meta"):
        b7 = deeparch.create_model("efficientnet_b7")
        wide = deeparch.create_model("efficientnet_b0", width_mult=2.0)
        deep = deeparch.create_model("efficientnet_b0", depth_mult=2.0)
    # B7: ceil(3.1 * n) blocks per stage
    assert [len(getattr(b7.features, f"stage{i}")) for i in range(1, 8)] == [4, 7, 7, 10, 10, 13, 4]
    assert b7.features.head_conv.conv.out_channels == 2560 and b7.head.drop.p == 0.5
    assert wide.features.stem.conv.out_channels == 64
    assert wide.features.stage7[0].project.conv.out_channels == 640
    assert len(_blocks(deep)) == 32
    b0 = deeparch.summary("efficientnet_b0", (3, 64, 64))
    assert deeparch.summary(wide, (3, 64, 64)).total_params > 3 * b0.total_params
    assert deeparch.summary(deep, (3, 64, 64)).macs > 1.8 * b0.macs


@pytest.mark.parametrize("kw", [{"width_mult": 0}, {"depth_mult": -1.0}, {"drop_rate": 1.0},
                                {"drop_path_rate": -0.1}, {"growth_rate": 32}])
def test_bad_knobs(kw):
    with pytest.raises(DeeparchError):
        deeparch.create_model("efficientnet_b0", **kw)
