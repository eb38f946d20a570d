import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeparch import layers as L
from deeparch.errors import ModelOptionError


@pytest.mark.parametrize("k,s,size", [(3, 1, 17), (5, 1, 16), (3, 2, 16), (3, 2, 15), (7, 2, 224)])
def test_same_padding_keeps_ceil_of_size_over_stride(k, s, size):
    conv = L.Conv2d(2, 4, k, stride=s, padding="same")
    y = conv(torch.randn(1, 2, size, size))
    assert y.shape[-1] == -(-size // s)


def test_valid_padding_and_uneven_same_refused():
    assert L.Conv2d(1, 1, 3, padding="valid")(torch.randn(1, 1, 5, 5)).shape[-1] == 3
    with pytest.raises(ModelOptionError, match="uneven"):
        L.Conv2d(1, 1, 4, stride=2, padding="same")
    with pytest.raises(ModelOptionError, match="groups=3"):
        L.Conv2d(4, 8, 3, groups=3)


def test_conv1d_and_dilation():
    c = L.Conv1d(3, 5, 3, padding="same", dilation=2)
    assert c(torch.randn(2, 3, 20)).shape == (2, 5, 20)
    assert L.Conv2d(1, 1, 3, dilation=2, padding=0)(torch.randn(1, 1, 9, 9)).shape[-1] == 5


def test_depthwise_separable_cost_and_shapes():
    sep = L.SeparableConv2d(32, 64, 3)
    full = L.Conv2d(32, 64, 3, padding=1, bias=False)
    n_sep = sum(p.numel() for p in sep.parameters())
    assert n_sep == 32 * 9 + 32 + 32 * 64 + 64
    assert sum(p.numel() for p in full.parameters()) == 9 * 32 * 64
    assert sep(torch.randn(1, 32, 8, 8)).shape == (1, 64, 8, 8)
    assert L.DepthwiseConv2d(8, 3, depth_multiplier=2).out_channels == 16
    assert L.PointwiseConv2d(8, 3).kernel_size == (1, 1)


def test_spatially_separable_factorises_a_kxk_conv():
    m = L.SpatiallySeparableConv2d(4, 6, 5)
    assert m.conv_kx1.kernel_size == (5, 1) and m.conv_1xk.kernel_size == (1, 5)
    assert m(torch.randn(1, 4, 9, 9)).shape == (1, 6, 9, 9)


def test_local_response_norm_uses_the_papers_alpha():
    x = torch.randn(1, 7, 3, 3)
    y = L.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    sq = F.pad(x.pow(2), (0, 0, 0, 0, 2, 2))
    den = torch.stack([sq[:, c:c + 5].sum(1) for c in range(7)], 1)
    assert torch.allclose(y, x / (2.0 + 1e-4 * den).pow(0.75), atol=1e-6)


@pytest.mark.parametrize("kind,cls", [("bn", nn.BatchNorm2d), ("ln", L.LayerNorm2d),
                                      ("in", nn.InstanceNorm2d), ("gn", nn.GroupNorm),
                                      ("lrn", L.LocalResponseNorm)])
def test_norms(kind, cls):
    m = L.make_norm2d(kind, 12)
    assert isinstance(m, cls)
    assert m(torch.randn(2, 12, 4, 4)).shape == (2, 12, 4, 4)


def test_layer_norm_normalises_each_sample_over_chw():
    x = torch.randn(3, 4, 5, 5) * 7 + 2
    y = L.LayerNorm2d(4)(x)
    assert torch.allclose(y.mean((1, 2, 3)), torch.zeros(3), atol=1e-5)


def test_pooling_and_global_pooling():
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(L.GlobalAvgPool2d()(x), x.mean((2, 3)))
    assert torch.equal(L.GlobalMaxPool2d()(x), x.amax((2, 3)))
    assert L.GlobalAvgPool2d(flatten=False)(x).shape == (2, 3, 1, 1)
    assert L.MaxPool1d(2)(torch.randn(1, 2, 8)).shape == (1, 2, 4)
    assert L.AvgPool2d(3, 2)(x).shape == (2, 3, 2, 2)


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(0)
    dp = L.DropPath(0.5).train()
    y = dp(torch.ones(4000, 3, 2, 2))
    per_sample = y.flatten(1)
    assert set(per_sample[:, 0].unique().tolist()) <= {0.0, 2.0}
    assert torch.all(per_sample == per_sample[:, :1])
    assert abs(y.mean().item() - 1.0) < 0.06
    assert torch.equal(dp.eval()(torch.ones(2, 3)), torch.ones(2, 3))
    with pytest.raises(ModelOptionError):
        L.DropPath(1.0)


def test_squeeze_excite_and_channel_shuffle():
    se = L.SqueezeExcite(16, reduction=4)
    assert se.fc1.out_channels == 4 and se(torch.randn(2, 16, 5, 5)).shape == (2, 16, 5, 5)
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert L.ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert L.make_divisible(32 * 0.75) == 24 and L.make_divisible(10) == 16


def test_conv_norm_act_and_dense():
    m = L.ConvNormAct(3, 8, 3, stride=2, act="relu6")
    assert m.conv.bias is None and isinstance(m.act, nn.ReLU6)
    assert m(torch.randn(1, 3, 9, 9)).shape == (1, 8, 5, 5)
    d = L.Dense(4, 2, "relu")
    assert list(d.children()) == [] and (d(torch.randn(5, 4)) >= 0).all()
    with pytest.raises(ModelOptionError, match="unknown activation"):
        L.make_activation("relux")
