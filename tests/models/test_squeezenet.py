"""SqueezeNet v1.0 / v1.1 against the paper's Table 1 and the reference counts."""
import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError

# the paper's Table 1: fire module -> (s1x1, e1x1, e3x3)
TABLE1 = {2: (16, 64, 64), 3: (16, 64, 64), 4: (32, 128, 128), 5: (32, 128, 128),
          6: (48, 192, 192), 7: (48, 192, 192), 8: (64, 256, 256), 9: (64, 256, 256)}



def fires(model):
    return {int(n.split("fire")[-1]): m for n, m in model.named_modules()
            if type(m).__name__ == "Fire"}


@pytest.mark.parametrize("name,params,macs,card_macs", [
    ("squeezenet1_0", 1_248_424, 818_924_576, 820_000_000),
    ("squeezenet1_1", 1_235_496, 349_151_936, 350_000_000),
])
def test_counts_against_the_cards(name, params, macs, card_macs):
    card = deeparch.model_info(name)
    assert (card.params, card.macs, card.input_size) == (params, card_macs, (3, 224, 224))
    s = deeparch.summary(name)
    assert s.total_params == card.params  # exact: the paper's Table 1 total for v1.0
    assert s.macs == macs
    assert abs(s.macs - card.macs) / card.macs < 0.01  # torchvision's 0.82 / 0.35 GFLOPS


def test_table1_fire_modules_and_map_sizes_at_the_caffe_crop():
    with torch.device("meta"):
        m = deeparch.create_model("squeezenet1_0")
    widths = {n: (f.squeeze.conv.out_channels, f.expand1x1.conv.out_channels,
                  f.expand3x3.conv.out_channels) for n, f in fires(m).items()}
    assert widths == TABLE1
    s = deeparch.summary(m, input_size=(3, 227, 227))
    out = {r.name.removeprefix("features.").removesuffix(".cat"): r.output_shape
           for r in s.layers}
    assert out["stem.conv1.conv"] == [96, 111, 111] and out["stem.pool1"] == [96, 55, 55]
    assert out["stage1.fire2"] == [128, 55, 55] and out["stage1.fire4"] == [256, 55, 55]
    assert out["stage2.pool"] == [256, 27, 27] and out["stage2.fire8"] == [512, 27, 27]
    assert out["stage3.pool"] == [512, 13, 13] and out["stage3.fire9"] == [512, 13, 13]
    assert out["head.conv10"] == [1000, 13, 13]
    assert s.macs == 832_667_936


def test_fifty_times_fewer_parameters_than_alexnet():
    alexnet = deeparch.summary("alexnet").total_params
    assert round(alexnet / deeparch.summary("squeezenet1_0").total_params) == 50


def test_v1_1_has_2_4x_less_computation():
    ratio = deeparch.summary("squeezenet1_0").macs / deeparch.summary("squeezenet1_1").macs
    assert round(ratio, 1) == 2.3  # "2.4x" in the authors' README; 2.35 at 224x224


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_forward_backward_features_and_reset(name):
    m = deeparch.create_model(name, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    y = m(x)
    assert list(y.shape[1:]) == deeparch.summary(m, input_size=(3, 64, 64)).output_shape == [10]
    y.sum().backward()
    assert m.features.stem.conv1.conv.weight.grad is not None
    assert m.stage_names == ["stem", "stage1", "stage2", "stage3"]
    fx = deeparch.create_model(name, features_only=True, out_stages=["stage1", 4])
    maps = [tuple(t.shape[1:]) for t in fx(x)]
    # v1.0 pools after conv1, fire4, fire8; v1.1 after conv1, fire3, fire5
    assert maps == ([(256, 14, 14), (512, 3, 3)] if name == "squeezenet1_0"
                    else [(128, 15, 15), (512, 3, 3)])
    m.reset_classifier(5)
    assert isinstance(m.head.conv10, torch.nn.Conv2d) and m.head.conv10.out_channels == 5
    assert m(x).shape == (2, 5)


def test_metaparameters_change_the_counts_as_the_paper_says():
    def count(**kw):
        with torch.device("meta"):
            return sum(p.numel() for p in deeparch.create_model("squeezenet1_0", **kw).parameters())

    base = count()
    # a larger squeeze ratio (SR) means more parameters: Figure 2(a) goes from 1.2M at 0.125 ...
    assert count(squeeze_ratio=0.25) > base and count(squeeze_ratio=1.0) > count(squeeze_ratio=0.75)
    # ... more 3x3 filters in the expand layers means more parameters (Figure 2(b))
    assert count(pct_3x3=0.75) > base > count(pct_3x3=0.25)
    with torch.device("meta"):
        m = deeparch.create_model("squeezenet1_0", squeeze_ratio=0.75)
    assert fires(m)[2].squeeze.conv.out_channels == 96  # 0.75 * 128


def test_simple_bypass_adds_no_parameters():
    m = deeparch.create_model("squeezenet1_0", num_classes=10, bypass=True)
    assert sorted(n for n, f in fires(m).items() if f.bypass) == [3, 5, 7, 9]
    assert sum(p.numel() for p in m.parameters()) == 1_248_424 - 1000 * 513 + 10 * 513
    s = deeparch.summary(m, input_size=(3, 64, 64))
    assert sum(1 for r in s.layers if r.name.endswith(".add")) == 4
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("kw", [dict(pct_3x3=0.0), dict(pct_3x3=1.0), dict(squeeze_ratio=0),
                                dict(squeeze_ratio=1.5), dict(freq=0), dict(drop_rate=1.0),
                                dict(version="2_0")])
def test_bad_knobs(kw):
    with pytest.raises(DeeparchError):
        deeparch.create_model("squeezenet1_0", **kw)
