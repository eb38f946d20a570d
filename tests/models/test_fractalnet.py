"""FractalNet: the expansion rule's counts, joins, drop-path and the deepest column."""
import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError, ModelOptionError
from deeparch.models.fractalnet import ConvUnit, FractalBlock, Join

SMALL = dict(filters=(8, 8, 16, 16, 16))   # same topology, cheap to run for real



def meta_model(name, **kw):
    with torch.device("meta"):
        return deeparch.create_model(name, **kw)


def convs(summary) -> int:
    return sum(1 for r in summary.layers if r.type == "Conv2d")


def fractal_params(columns, filters, in_chans=3, num_classes=10) -> int:
    """The count by hand: per block, one 3x3 conv from the block input per column, the
    other 2^C - 1 - C from `out` channels; a BN (2 per channel) after each; then the FC."""
    total, c_in = 0, in_chans
    units = 2 ** columns - 1
    for out in filters:
        total += 9 * out * (columns * c_in + (units - columns) * out) + units * 2 * out
        c_in = out
    return total + c_in * num_classes + num_classes


def fractal_macs(columns, filters, size=32, in_chans=3, num_classes=10) -> int:
    total, c_in = 0, in_chans
    units = 2 ** columns - 1
    for out in filters:
        total += size * size * 9 * out * (columns * c_in + (units - columns) * out)
        c_in, size = out, size // 2
    return total + c_in * num_classes


# -- the counts of the paper and the slides -------------------------------------------------

def test_fractalnet_40_layers_on_the_deepest_path():
    s = deeparch.summary("fractalnet")
    # the slides: 2^(C-1) layers per block x 5 blocks = 40 (C = 4)
    deep = deeparch.summary(meta_model("fractalnet").deepest_column(), (3, 32, 32))
    assert convs(deep) == 2 ** (4 - 1) * 5 == 40
    assert deep.depth == 41                      # + the classifier
    # a block has 2^C - 1 = 15 convolutions: 75 in the network, 20 joins (4 per block)
    assert convs(s) == (2 ** 4 - 1) * 5 == 75
    assert sum(1 for r in s.layers if r.type == "Join") == 20
    assert s.total_params == fractal_params(4, (64, 128, 256, 512, 512)) == 76_106_634
    assert s.macs == fractal_macs(4, (64, 128, 256, 512, 512)) == 2_036_077_568
    assert s.output_shape == [10]
    # five 2x2 pools: 32x32 -> 1x1x512 before the classifier
    assert [r.output_shape for r in s.layers if r.type == "MaxPool2d"][-1] == [512, 1, 1]


def test_fractalnet20_is_the_papers_table_1_network():
    s = deeparch.summary("fractalnet20")
    deep = deeparch.summary(meta_model("fractalnet20").deepest_column(), (3, 32, 32))
    assert convs(deep) == 2 ** (3 - 1) * 5 == 20
    assert convs(s) == (2 ** 3 - 1) * 5 == 35
    assert s.total_params == fractal_params(3, (64, 128, 256, 512, 512)) == 33_724_618
    assert s.macs == fractal_macs(3, (64, 128, 256, 512, 512)) == 845_222_912
    # the paper's Table 1 says "FractalNet (20 layers, 38.6M params)": the architecture it
    # describes counts 33.7M (independent reimplementations report 33.7M as well)
    paper = 38.6e6
    assert s.total_params / paper == pytest.approx(0.8737, abs=1e-3)
    assert deeparch.model_info("fractalnet20").params is None   # kept out of the exact checks


@pytest.mark.parametrize("columns,blocks", [(1, 2), (2, 3), (3, 1), (5, 2)])
def test_columns_and_blocks_follow_the_expansion_rule(columns, blocks):
    filters = (8,) * blocks
    m = deeparch.create_model("fractalnet", columns=columns, blocks=blocks, filters=filters)
    size = 2 ** blocks
    s = deeparch.summary(m, (3, size, size))
    assert convs(s) == (2 ** columns - 1) * blocks
    joins = 2 ** (columns - 2) if columns > 1 else 0
    assert sum(1 for r in s.layers if r.type == "Join") == joins * blocks
    assert s.total_params == fractal_params(columns, filters)
    deep = deeparch.summary(m.deepest_column(), (3, size, size))
    assert convs(deep) == 2 ** (columns - 1) * blocks


def test_join_is_the_elementwise_mean_of_its_inputs():
    a, b, c = (torch.randn(2, 3, 4, 4) for _ in range(3))
    assert torch.allclose(Join((1, 2, 3))(a, b, c), (a + b + c) / 3)
    assert Join((1,))(a) is a


def test_block_joins_where_columns_end_together():
    block = FractalBlock(3, 4, columns=4)
    assert block.depth == 8
    joins = {name: m.columns for name, m in block.named_children() if isinstance(m, Join)}
    # f_{C+1}(z) = join(f_C(f_C(z)), conv(z)): the mid-point joins C columns, the end all C+1
    assert joins == {"join2": (3, 4), "join4": (2, 3, 4), "join6": (3, 4), "join8": (1, 2, 3, 4)}
    assert [len(block.column_units(c)) for c in (1, 2, 3, 4)] == [1, 2, 4, 8]


# -- drop-path -------------------------------------------------------------------------------

def test_local_drop_path_keeps_at_least_one_input():
    torch.manual_seed(0)
    join = Join((1, 2, 3, 4), p=0.9).train()
    draws = [join.survivors() for _ in range(400)]
    assert all(len(d) >= 1 for d in draws)
    assert any(len(d) == 1 for d in draws) and any(len(d) > 1 for d in draws)
    join = Join((1, 2), p=0.15).train()
    kept = sum(len(join.survivors()) for _ in range(2000)) / 4000
    assert kept == pytest.approx(0.85 + 0.15 ** 2 / 2, abs=0.03)
    assert Join((1, 2), p=0.9).eval().survivors() == (1, 2)     # inference: every column


def _count_units(model):
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1))
             for m in model.modules() if isinstance(m, ConvUnit)]
    return calls, hooks


def test_global_drop_path_runs_one_column_and_matches_its_network():
    torch.manual_seed(1)
    m = deeparch.create_model("fractalnet", **SMALL, drop_rate=0.0, global_drop_ratio=1.0)
    x = torch.randn(2, 3, 32, 32)
    calls, hooks = _count_units(m)
    m.train()
    seen = set()
    for _ in range(6):
        calls.clear()
        m(x)
        n = len(calls) // 5                  # units per block on the path that ran
        assert n in (1, 2, 4, 8)
        seen.add(n)
    for h in hooks:
        h.remove()
    assert len(seen) > 1                     # the column is drawn at random
    # a global batch through column c is exactly the plain column-c network (train-mode BN)
    for c in (2, 4):
        with torch.no_grad():
            assert torch.allclose(m(x, column=c), m.column_network(c)(x), atol=1e-5)


def test_inference_uses_every_column():
    m = deeparch.create_model("fractalnet", **SMALL).eval()
    calls, hooks = _count_units(m)
    m(torch.randn(1, 3, 32, 32))
    assert len(calls) == 15 * 5


def test_deepest_column_is_the_fractal_network_with_one_column():
    torch.manual_seed(2)
    m = deeparch.create_model("fractalnet", **SMALL)
    x = torch.randn(2, 3, 32, 32)
    m.train()
    for _ in range(2):                       # non-trivial BN statistics
        m(x).sum().backward()
    m.eval()
    deep = m.deepest_column()
    assert isinstance(deep, deeparch.models.Network)
    assert not any(isinstance(mod, Join) for mod in deep.modules())
    with torch.no_grad():
        assert torch.equal(m(x, column=4), deep(x))
        assert not torch.allclose(m(x), deep(x))
    # a copy: training the extracted network leaves the fractal one alone
    w = m.features.block1.column4.conv1.conv.weight.clone()
    with torch.no_grad():
        deep.features.block1.conv1.conv.weight.add_(1.0)
    assert torch.equal(m.features.block1.column4.conv1.conv.weight, w)


# -- the common interface --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fractalnet", "fractalnet20"])
def test_forward_backward_matches_the_summary(name):
    m = deeparch.create_model(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    y = m(x)
    y.sum().backward()
    assert list(y.shape[1:]) == deeparch.summary(m, input_size=(3, 32, 32)).output_shape == [10]
    m.reset_classifier(5)
    assert m.eval()(x).shape == (2, 5)


def test_features_only_returns_the_block_maps():
    fe = deeparch.create_model("fractalnet", **SMALL, features_only=True, out_stages=[1, 3, 5])
    maps = fe(torch.randn(2, 3, 64, 64))
    assert [tuple(t.shape[1:]) for t in maps] == [(8, 32, 32), (16, 8, 8), (16, 2, 2)]


def test_drop_rate_schedule_sits_in_the_conv_units():
    m = meta_model("fractalnet20")
    rates = [[u.drop.p for u in b.modules() if isinstance(u, ConvUnit) and hasattr(u, "drop")]
             for b in m.blocks()]
    assert [r[0] if r else 0.0 for r in rates] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert all(len(r) == 7 for r in rates[1:])
    m = meta_model("fractalnet20", drop_rate=0.0)
    assert not any(isinstance(u, torch.nn.Dropout) for u in m.modules())


@pytest.mark.parametrize("kw", [dict(columns=0), dict(blocks=0), dict(filters=(64, 128)),
                                dict(drop_rate=(0.1, 0.2)), dict(drop_rate=1.5),
                                dict(drop_path_rate=1.0), dict(global_drop_ratio=-0.1)])
def test_bad_knobs_raise(kw):
    with pytest.raises(DeeparchError):
        deeparch.create_model("fractalnet", **kw)


def test_bad_column_raises():
    m = deeparch.create_model("fractalnet", **SMALL)
    with pytest.raises(ModelOptionError):
        m.column_network(5)
    with pytest.raises(ModelOptionError):
        m(torch.randn(1, 3, 32, 32), column=0)


def test_too_small_an_input_is_a_shape_error():
    with pytest.raises(DeeparchError):
        deeparch.summary("fractalnet", (3, 16, 16))
