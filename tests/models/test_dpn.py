"""DPN: the residual path (added) and the densely connected path (concatenated) side by
side; DPN-68 and DPN-92 against the published counts."""
from __future__ import annotations

import pytest
import torch

import deeparch
from deeparch.errors import ModelOptionError
from deeparch.models import create_model, list_models, model_info
from deeparch.models.dpn import DualPathBlock

# name: parameters (exact: timm's port of the authors' models lists the same), mult-adds
# at 224x224 (exact, conv + FC), the authors' GFLOPs (cypw/DPNs README) to one decimal
PUBLISHED = {
    "dpn68": (12_611_602, 2_326_163_456, 2.5),
    "dpn92": (37_668_392, 6_501_684_224, 6.5),
}



def tiny(**kw):
    """A small DPN for knob tests: one block per stage, narrow paths."""
    args = dict(depths=(1, 2, 1, 1), increments=(4, 8, 8, 8), widths=(16, 32, 64, 128),
                cardinality=4, group_width=4, num_init_features=8, stem_kernel=3)
    args.update(kw)
    return create_model("dpn68", num_classes=10, **args)


def test_registered_names():
    assert list_models(family="dpn") == ["dpn68", "dpn92"]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_figures(name):
    params, macs, gflops = PUBLISHED[name]
    card = model_info(name)
    s = deeparch.summary(name)
    assert card.exact and (card.params, card.macs) == (params, macs)
    assert (s.total_params, s.macs) == (params, macs)
    assert s.output_shape == [1000]
    if name == "dpn92":
        assert round(s.macs / 1e9, 1) == gflops
    else:  # the authors' 2.5 GFLOPs for DPN-68 is not what conv + FC mult-adds give
        assert round(s.macs / 1e9, 2) == 2.33


def test_paper_table_dpn92():
    """Table 1, DPN-92 (32 x 3d): conv2 [1x1, 96; 3x3, 96, G=32; 1x1, 256 (+16)] x 3, ..."""
    with torch.device("meta"):
        model = create_model("dpn92")
    f = model.features
    assert f.stem.conv1.conv.kernel_size == (7, 7) and f.stem.conv1.conv.out_channels == 64
    for stage, (mid, width, inc, n) in zip(
            ["conv2", "conv3", "conv4", "conv5"],
            [(96, 256, 16, 3), (192, 512, 32, 4), (384, 1024, 24, 20), (768, 2048, 128, 3)]):
        blocks = list(getattr(f, stage))
        assert len(blocks) == n
        b = blocks[-1]
        assert b.conv1.conv.out_channels == mid
        assert b.conv2.conv.groups == 32 and b.conv2.conv.kernel_size == (3, 3)
        assert b.conv3.conv.out_channels == width + inc
        assert blocks[0].project is not None and all(x.project is None for x in blocks[1:])
    assert f.norm.bn.num_features == 2048 + 128 * 5
    assert model.head.fc.in_features == 2688


def test_forward_backward():
    torch.manual_seed(0)
    model = create_model("dpn68", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert list(out.shape[1:]) == deeparch.summary(model, input_size=(3, 64, 64)).output_shape
    out.sum().backward()
    assert model.features.stem.conv1.conv.weight.grad is not None


def test_stages_and_features_only():
    with torch.device("meta"):
        model = create_model("dpn68")
    assert model.stage_names == ["stem", "conv2", "conv3", "conv4", "conv5", "norm"]
    fx = create_model("dpn68", features_only=True, out_stages=["conv2", "conv3", "conv4", "conv5"])
    maps = fx(torch.randn(1, 3, 64, 64))
    # residual width + dense path: 2 inc from the projection + inc per block
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64 + 16 * 5, 16, 16), (128 + 32 * 6, 8, 8), (256 + 32 * 14, 4, 4), (512 + 64 * 5, 2, 2)]


def test_reset_classifier():
    model = tiny()
    model.reset_classifier(5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_dual_path_block_adds_and_concatenates():
    torch.manual_seed(0)
    block = DualPathBlock(24, 16, 16, 4, groups=4, project=True).eval()
    x = torch.randn(2, 24, 8, 8)
    resid, dense = block(x)
    p = block.project(x)
    out = block.conv3(block.conv2(block.conv1(x)))
    assert torch.allclose(resid, p[:, :16] + out[:, :16])          # residual path: added
    assert torch.equal(dense, torch.cat([p[:, 16:], out[:, 16:]], 1))  # dense path: grows
    assert dense.shape[1] == 2 * 4 + 4
    nxt = DualPathBlock(16 + 12, 16, 16, 4, groups=4).eval()
    r2, d2 = nxt(resid, dense)
    out2 = nxt.conv3(nxt.conv2(nxt.conv1(torch.cat([resid, dense], 1))))
    assert torch.allclose(r2, resid + out2[:, :16])
    assert torch.equal(d2[:, :12], dense) and d2.shape[1] == 16


def test_inspector_shows_add_and_cat():
    s = deeparch.summary("dpn68")
    adds = [r for r in s.layers if r.type == "add"]
    assert len(adds) == 3 + 4 + 12 + 3                       # one residual sum per block
    cats = [r.name for r in s.layers if r.type == "cat"]
    assert "features.conv2.block1.cat" in cats
    block1 = [r for r in s.layers if r.name.startswith("features.conv2.block1.")]
    assert [r.output_shape for r in block1 if r.type in ("add", "cat")] == [
        [64, 56, 56], [48, 56, 56]]


def test_knobs_change_the_counts():
    def count(**kw):
        with torch.device("meta"):
            model = tiny(**kw)
        return deeparch.summary(model, input_size=(3, 32, 32)).total_params

    base = count()
    # more groups of the same width: the 3x3 conv's weights fall by the group count
    assert count(cardinality=8, group_width=2) < base
    assert count(increments=(8, 16, 16, 16)) > base
    assert count(depths=(2, 2, 1, 1)) > base
    with torch.device("meta"):
        m = tiny(cardinality=8, group_width=2)
    conv = m.features.conv2.block1.conv2.conv
    assert conv.groups == 8 and conv.weight.shape == (16, 2, 3, 3)
    model = tiny(drop_rate=0.3)
    assert model.head.drop.p == 0.3
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("kw", [
    {"cardinality": 0},
    {"group_width": 0},
    {"depths": (3, 4, 12)},
    {"increments": (16, 0, 32, 64)},
    {"widths": (64, 128, 256, 512.5)},
    {"drop_rate": 1.5},
    {"num_init_features": 0},
    {"stem_kernel": 4},
    {"growth_rate": 12},
])
def test_bad_knobs(kw):
    with pytest.raises(ModelOptionError):
        create_model("dpn68", **kw)
