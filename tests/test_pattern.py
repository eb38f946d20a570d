import pytest
import torch
from torch import nn

import deeparch
from deeparch.errors import PatternError

SLIDES = "INPUT(32x32x3) -> [[CONV3-32 -> RELU]*2 -> POOL2]*3 -> [FC-512 -> RELU]*2 -> FC-10"


def test_the_slides_pattern_builds():
    m = deeparch.from_pattern(SLIDES)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    pools = [x for x in m.modules() if isinstance(x, nn.MaxPool2d)]
    assert len(convs) == 6 and len(pools) == 3
    assert sum(p.numel() for p in m.parameters()) == 577_578
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    s = deeparch.summary(SLIDES)
    assert s.total_params == 577_578 and s.input_size == (3, 32, 32)
    # same padding keeps 32x32 through the convolutions of the first block
    assert s.layers[0].output_shape == [32, 32, 32]


def test_vgg_paper_names_and_softmax():
    # (on 224x224 this FC-4096 would need 3.3G parameters, over MAX_PARAMS: see
    # test_pattern_limits.py; 32x32 keeps the names and the softmax without 13 GB)
    m = deeparch.from_pattern("INPUT(32x32x3) -> [conv3-64]*2 -> maxpool -> FC-4096 -> "
                              "soft-max")
    names = [n for n, _ in m.named_children()]
    assert names == ["conv1", "conv2", "pool1", "flatten1", "fc1", "softmax1"]
    out = m(torch.randn(1, 3, 32, 32))
    assert torch.allclose(out.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("spec,size,params", [
    ("INPUT(28x28) -> CONV3-32(p=valid) -> RELU -> POOL2 -> DROPOUT0.2 -> FC-128 -> RELU -> FC-10",
     [10], 693_962),
    ("INPUT(227x227x3) -> CONV11-96/4(p=valid) -> RELU -> MAXPOOL3/2 -> LRN", [96, 27, 27], 34_944),
    ("INPUT(16x16x3) -> SEPCONV3-8 -> BN -> RELU -> DWCONV3/2 -> PWCONV-4 -> GAP -> FC-2",
     [2], 3 * 9 + 3 + 3 * 8 + 8 + 16 + 8 * 9 + 8 + 8 * 4 + 4 + 4 * 2 + 2),
    ("INPUT(8x8x4) -> CONV3-8(s=2,p=1,g=2) -> GN4 -> AVGPOOL2 -> FLATTEN -> FC-3",
     [3], (4 // 2) * 9 * 8 + 8 + 16 + (8 * 2 * 2) * 3 + 3),
    ("INPUT(8x8x1) -> CONV3X1-4 -> CONV1x3-4 -> TANH -> GMP -> DROPOUT(0.5) -> FC-1", [1],
     3 * 4 + 4 + 4 * 3 * 4 + 4 + 5),
])
def test_vocabulary(spec, size, params):
    s = deeparch.summary(spec)
    assert s.output_shape == size and s.total_params == params


def test_input_size_argument_overrides_or_completes():
    s = deeparch.summary("CONV3-8 -> RELU -> FC-2", input_size=(1, 10, 10))
    assert s.total_params == 80 + 8 * 100 * 2 + 2
    s2 = deeparch.summary("INPUT(32x32x3) -> CONV3-8 -> GAP -> FC-2", input_size=(1, 10, 10))
    assert s2.input_size == (1, 10, 10)


def test_repeat_zero_removes_a_group():
    m = deeparch.from_pattern("INPUT(8x8x1) -> [CONV3-4 -> RELU]*0 -> FC-2")
    assert [n for n, _ in m.named_children()] == ["flatten1", "fc1"]


@pytest.mark.parametrize("spec,token,reason", [
    ("INPUT(32x32x3) -> CONVV3-32 -> FC-10", "CONVV3-32", "unknown layer"),
    ("INPUT(32x32x3) -> [CONV3-32 -> RELU]*N -> FC-10", "N", "whole number"),
    ("INPUT(32x32x3) -> [CONV3-32 -> RELU -> FC-10", "[", "never closed"),
    ("INPUT(8x8x3) -> CONV11-96(p=valid) -> FC-10", "CONV11-96(p=valid)", "11x11 kernel"),
    ("INPUT(32x32x3) -> CONV3-32 -> -> FC-10", "->", "expected a layer"),
    ("INPUT(32x32x3) -> CONV -> FC-10", "CONV", "needs its sizes"),
    ("INPUT(32x32x3) -> FC-10 -> CONV3-8", "CONV3-8", "flat vector"),
    ("INPUT(32x32x3) -> CONV3-8(q=2)", "CONV3-8(q=2)", "unknown option"),
    ("INPUT(32x32x3) -> DROPOUT1.5", "DROPOUT1.5", "dropout rate"),
    ("INPUT(3x3x1) -> POOL2 -> POOL2", "POOL2", "kernel"),
    ("CONV3-8 -> RELU", "CONV3-8", "input size is unknown"),
    ("INPUT(4x4x1) -> RELU -> INPUT(4x4x1)", "INPUT(4x4x1)", "first layer"),
])
def test_bad_patterns_quote_the_spec_with_a_caret(spec, token, reason):
    with pytest.raises(PatternError) as info:
        deeparch.from_pattern(spec)
    err = info.value
    assert reason in str(err)
    lines = str(err).splitlines()
    assert lines[1].strip() == spec
    caret_col = lines[2].index("^") - 2
    assert spec[caret_col:].startswith(token)


def test_empty_pattern():
    with pytest.raises(PatternError, match="empty"):
        deeparch.from_pattern("   ")
