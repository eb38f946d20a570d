"""deeparch.viz.layers: rows of the summary addressed by name, number, glob and use; the
recorded outputs are the forward pass's tensors bit for bit; no hook is ever left behind; the
receptive-field box of every conv and pool row is exactly the support of the gradient."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeparch import create_model, summary
from deeparch.errors import DeeparchError, UnknownLayerError
from deeparch.viz.layers import (Box, capture, count_hooks, layer_table, resolve_layer,
                                 resolve_layers)


class Net(nn.Module):
    """Every kind of row: strided, dilated and non-square convolutions, a max and an average
    pool module, a functional max pool, a residual add (functional) and a module used twice
    (``act``)."""

    def __init__(self, avg: bool = False):
        super().__init__()
        self.avg = avg
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.Tanh()
        self.c2 = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.p1 = nn.AvgPool2d(2) if avg else nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(4, 4, 3, dilation=2, padding=2)
        self.p2 = nn.AvgPool2d(3, stride=2, padding=1)
        self.c4 = nn.Conv2d(4, 4, (3, 5), padding=(1, 0))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.act(self.c1(x))
        x = self.p1(self.c2(x))
        x = x + self.c3(x)
        x = self.act(x)
        x = F.avg_pool2d(x, 2) if self.avg else F.max_pool2d(x, 2)
        x = self.c4(self.p2(x))
        return self.head(x.mean((2, 3)))


class InPlace(nn.Module):
    """conv -> in-place ReLU -> conv, and x += y: recorded outputs must not change after."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv1(x)
        z = self.relu(y)
        w = self.conv2(z)
        w += z
        return self.relu(w)


SIZE = (1, 128, 128)


def _no_mode() -> bool:
    from torch.overrides import _get_current_function_mode_stack
    return not _get_current_function_mode_stack()


# --------------------------------------------------------------------------- addressing

def test_rows_are_the_summary_rows():
    for model, size in ((Net(), SIZE), (create_model("resnet20"), (3, 32, 32)),
                        (create_model("lenet5"), (1, 32, 32))):
        table = layer_table(model, size)
        s = summary(model, size)
        assert [r.name for r in table] == [r.name for r in s.layers]
        assert [r.record.output_shape for r in table] == [r.output_shape for r in s.layers]
        assert [r.record.receptive_field for r in table] == \
            [r.receptive_field for r in s.layers]


def test_names_numbers_globs_and_uses():
    m = Net()
    t = layer_table(m, SIZE)
    names = [r.name for r in t]
    assert names.count("act") == 2 and "add" in names and "max_pool2d" in names
    assert resolve_layer(m, "c2", SIZE).name == "c2"
    assert resolve_layer(m, "#3", SIZE).index == 2
    assert resolve_layer(m, 3, SIZE).index == 2
    first, second = resolve_layer(m, "act", SIZE), resolve_layer(m, "act@2", SIZE)
    assert (first.use, second.use) == (1, 2) and first.index < second.index
    assert second.key == "act@2" and second.label == f"#{second.index + 1} act@2"
    assert [r.name for r in resolve_layers(m, "c*", SIZE)] == ["c1", "c2", "c3", "c4"]
    assert [r.key for r in resolve_layers(m, "act*", SIZE)] == ["act", "act@2"]
    assert [r.name for r in resolve_layers(m, "c4, #1,c1", SIZE)] == ["c1", "c4"]
    # a functional op is addressed by the summary's name
    assert resolve_layer(m, "add", SIZE).record.functional


def test_resnet_blocks_and_globs():
    m = create_model("resnet20")
    rows = resolve_layers(m, "features.stage2.*", (3, 32, 32))
    names = [r.name for r in rows]
    assert "features.stage2.0.conv1" in names and "features.stage2.2.act2" in names
    assert all(n.startswith("features.stage2.") for n in names)
    with pytest.raises(UnknownLayerError, match="is a block of .* rows"):
        resolve_layer(m, "features.stage2", (3, 32, 32))


@pytest.mark.parametrize("spec, words", [
    ("c5", "no layer 'c5'; close names: c"),
    ("#99", "has rows #1 to #"),
    ("#0", "has rows #1 to #"),
    ("act@3", "used 2 times"),
    ("zz*", "no layer matches 'zz\\*'"),
    ("", "not a layer name"),
])
def test_unknown_layers_are_one_sentence(spec, words):
    with pytest.raises(UnknownLayerError, match=words) as e:
        resolve_layers(Net(), spec, SIZE)
    assert "\n" not in str(e.value)


def test_one_layer_only():
    with pytest.raises(UnknownLayerError, match="names 4 layers"):
        resolve_layer(Net(), "c*", SIZE)


# --------------------------------------------------------------------------- capture

def _manual(model, x, name, call=0):
    """The output of module ``name``'s ``call``-th use, by a plain forward hook (cloned)."""
    got = []
    mod = dict(model.named_modules())[name]
    h = mod.register_forward_hook(lambda m, a, out: got.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return got[call]


def test_maps_equal_a_manual_forward_hook_bit_for_bit():
    torch.manual_seed(0)
    m = Net().eval()
    x = torch.randn(2, *SIZE)
    _, outs = capture(m, x, ["c1", "act", "act@2", "p1", "c4"])
    for (name, call), got in zip([("c1", 0), ("act", 0), ("act", 1), ("p1", 0), ("c4", 0)],
                                 outs):
        assert torch.equal(got, _manual(m, x, name, call))
    r = create_model("resnet20").eval()
    x = torch.randn(3, 3, 32, 32)
    names = ["features.stem.act1", "features.stage2.0.conv1", "features.stage3.2.bn2",
             "features.stage3.2.act2"]
    _, outs = capture(r, x, names)
    for name, got in zip(names, outs):
        assert torch.equal(got, _manual(r, x, name, -1 if name.endswith("act2") else 0))
    # the functional add is the tensor the next module reads
    seen = []
    h = dict(r.named_modules())["features.stage1.0.act2"].register_forward_pre_hook(
        lambda mod, a: seen.append(a[0].detach().clone()))
    try:
        _, (add,) = capture(r, x, "features.stage1.0.add")
    finally:
        h.remove()
    assert torch.equal(add, seen[-1])
    assert count_hooks(m) == count_hooks(r) == 0 and _no_mode()


def test_in_place_operations_do_not_change_what_was_recorded():
    torch.manual_seed(1)
    m = InPlace().eval()
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        y = m.conv1(x)
        want_conv1 = y.clone()
        want_relu = torch.relu(y)
        want_conv2 = m.conv2(want_relu)
        want_out = torch.relu(want_conv2 + want_relu)
    out, (c1, r1, c2) = capture(m, x, ["conv1", "relu", "conv2"])
    assert torch.equal(c1, want_conv1) and (c1 < 0).any()      # not clipped by the ReLU
    assert torch.equal(r1, want_relu)
    assert torch.equal(c2, want_conv2)                           # not changed by w += z
    assert torch.equal(out, want_out)                            # the output is the model's
    # and the gradient with respect to a recorded output is right
    x.requires_grad_(True)
    out, (c1,) = capture(m, x, ["conv1"], grad=True)
    g, = torch.autograd.grad(out.sum(), c1)
    y = m.conv1(x.detach()).requires_grad_(True)
    z = torch.relu(y)
    ref, = torch.autograd.grad(torch.relu(m.conv2(z) + z).sum(), y)
    assert torch.allclose(g, ref)


def test_stop_early_and_training_flags_restored():
    m = Net()
    m.train()
    m.c2.eval()
    x = torch.randn(1, *SIZE)
    out, (a,) = capture(m, x, ["c2"], stop=True)
    assert out is None and a.shape == (1, 4, 64, 64)
    assert m.training and not m.c2.training and m.c1.training


class Boom(nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.exc = exc

    def forward(self, x):
        x = self.conv(x)
        if not x.is_meta:
            raise self.exc
        return x


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_no_hook_is_left_behind_after_an_error(exc):
    m = Boom(exc)
    before = count_hooks(m)
    assert before == 0
    with pytest.raises(type(exc)):
        capture(m, torch.randn(1, 1, 8, 8), ["conv"])
    assert count_hooks(m) == 0 and _no_mode() and m.training
    with pytest.raises(UnknownLayerError):
        capture(m, torch.randn(1, 1, 8, 8), ["nope"])
    assert count_hooks(m) == 0 and _no_mode()
    # a hook of the user's own survives, and is the only one
    h = m.conv.register_forward_hook(lambda *a: None)
    with pytest.raises(type(exc)):
        capture(m, torch.randn(1, 1, 8, 8), ["conv"])
    assert count_hooks(m) == 1
    h.remove()


def test_data_dependent_forward_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3)
            self.b = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            if not x.is_meta and x.sum() > 0:
                return self.b(x)
            return self.a(x)

    with pytest.raises(DeeparchError, match="ran differently|did not run"):
        capture(Branchy(), torch.ones(1, 1, 8, 8), ["a"])


# --------------------------------------------------------------------------- receptive fields

def _support(model, x, layer, unit):
    x = x.clone().requires_grad_(True)
    _, (a,) = capture(model, x, [layer], grad=True, stop=True)
    g, = torch.autograd.grad(a[0, 0][unit], x)
    return g[0].abs().sum(0) != 0


def _interior(layer, size):
    """A unit near the middle of the map whose box lies inside the image."""
    h, w = layer.shape[1:]
    for i in sorted(range(h), key=lambda v: abs(v - h // 2)):
        for j in sorted(range(w), key=lambda v: abs(v - w // 2)):
            b = layer.box(i, j)
            if b == b.clip(*size[1:]):
                return (i, j), b
    raise AssertionError(f"no interior unit in {layer.key}")


def test_gradient_support_is_the_receptive_field_box_of_every_conv_and_pool_row():
    """Max pooling sends the gradient to one pixel of each window, so its support is only
    part of the field; its geometry is the same as an average pool's, so the exact test runs
    on the average-pool twin of the network (same kernels, strides, paddings), and the max
    network is checked to stay inside the box."""
    torch.manual_seed(0)
    twin = Net(avg=True).double().eval()
    net = Net(avg=False).double().eval()
    net.load_state_dict(twin.state_dict())
    x = torch.rand(1, *SIZE, dtype=torch.float64)
    table = layer_table(twin, SIZE)
    spatial = [r for r in table if r.record.spatial]
    assert {r.name for r in spatial} == {"c1", "c2", "p1", "c3", "avg_pool2d", "p2", "c4"}
    s = summary(twin, SIZE)
    checked = 0
    for row in spatial:
        rf = s.layers[row.index].receptive_field
        rf = (rf, rf) if isinstance(rf, int) else tuple(rf)
        unit, box = _interior(row, SIZE)
        assert (box.height, box.width) == rf
        want = torch.zeros(SIZE[1:], dtype=torch.bool)
        want[box.slices()] = True
        got = _support(twin, x, row, unit)
        assert torch.equal(got, want), (row.key, unit, box)
        # the max-pool network: inside the box, never outside
        got_max = _support(net, x, resolve_layer(net, row.number, SIZE), unit)
        assert got_max.any() and not (got_max & ~want).any()
        checked += 1
    assert checked == 7
    # a border unit: the box reaches into the padding, the support is the box clipped
    row = resolve_layer(twin, "c4", SIZE)
    box = row.box(0, 0)
    assert box.top < 0 and box != box.clip(*SIZE[1:])
    want = torch.zeros(SIZE[1:], dtype=torch.bool)
    want[box.clip(*SIZE[1:]).slices()] = True
    assert torch.equal(_support(twin, x, row, (0, 0)), want)


def test_box_of_lenet_and_rows_without_one():
    m = create_model("lenet5")
    c5 = resolve_layer(m, "features.c5", (1, 32, 32))
    assert c5.box(0, 0) == Box(0, 0, 32, 32)
    c1 = resolve_layer(m, "features.c1", (1, 32, 32))
    assert c1.box(3, 4) == Box(3, 4, 8, 9)
    with pytest.raises(DeeparchError, match="see the whole input"):
        resolve_layer(m, "head.f6", (1, 32, 32)).box(0)
