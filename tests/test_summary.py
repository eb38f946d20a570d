"""The inspector against real forward passes, on the user's own modules too."""
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deeparch
from deeparch.errors import InputSizeError, ShapeError
from deeparch.inspect import parse_input_size


def real_shapes(model, size):
    """Output shape of every leaf module, from a real forward pass with hooks."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(list(o.shape[1:])))
             for m in model.modules() if not list(m.children())]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, *size))
    for h in hooks:
        h.remove()
    return shapes, list(out.shape[1:])


def small_size(name):
    card = deeparch.model_info(name)
    c, h, w = card.input_size
    for side in (64, h):
        if side <= h:
            try:
                deeparch.summary(name, input_size=(c, side, side))
                return (c, side, side)
            except ShapeError:
                continue
    return card.input_size


@pytest.mark.parametrize("name", deeparch.list_models())
def test_summary_equals_a_real_forward_pass_for_every_model(name):
    size = small_size(name)
    s = deeparch.summary(name, input_size=size)
    model = deeparch.create_model(name, **({"img_size": size[1:]} if "img_size" in
                                           deeparch.model_info(name).to_dict()["options"] else {}))
    shapes, out = real_shapes(model, size)
    leaf_rows = [r.output_shape for r in s.layers if not r.functional]
    assert s.output_shape == out
    # every leaf module call appears, in order, with the shape the real pass produced
    assert leaf_rows == shapes
    assert s.total_params == sum(p.numel() for p in model.parameters())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.shared = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = self.conv2(y) + x                      # residual addition
        z = torch.cat([y, x], dim=1)               # concatenation
        z = self.shared(self.shared(z))            # a module used twice
        return torch.flatten(F.adaptive_avg_pool2d(z, 1), 1)


def test_users_own_module_with_residual_concat_functional_and_shared_layers():
    s = deeparch.summary(Residual(), input_size=(8, 16, 16))
    types = [r.type for r in s.layers]
    assert types == ["Conv2d", "relu", "Conv2d", "add", "cat", "Conv2d", "Conv2d",
                     "adaptive_avg_pool2d", "flatten"]
    shared = [r for r in s.layers if r.name == "shared"]
    assert [r.params for r in shared] == [272, 0] and shared[1].shared
    assert s.total_params == 2 * 584 + 272 == sum(r.params for r in s.layers)
    assert s.macs == 2 * (16 * 16 * 8 * 72) + 2 * (16 * 16 * 16 * 16)
    assert s.output_shape == [16]
    add = s.layers[3]
    assert add.output_shape == [8, 16, 16] and add.receptive_field == 5
    # receptive field through the branch: conv3 -> conv3 = 5; the cat keeps the larger one
    assert s.layers[4].receptive_field == 5
    # the global pool sees the whole 16x16 input, and so does what follows it
    assert [(r.receptive_field, r.jump, r.whole_input) for r in s.layers[-2:]] == [
        (16, 16, True), (16, 16, True)]
    assert s.receptive_field == 5 and s.output_receptive_field == 16


def test_receptive_field_and_jump_of_vgg16():
    s = deeparch.summary("vgg16")
    pools = [r for r in s.layers if r.type == "MaxPool2d"]
    assert [(r.receptive_field, r.jump) for r in pools] == [
        (6, 2), (16, 4), (44, 8), (100, 16), (212, 32)]


@pytest.mark.parametrize("name,feature_rf", [("vgg16", 212), ("resnet18", 435)])
def test_total_receptive_field_agrees_with_the_last_rows(name, feature_rf):
    """The footer names the last feature map's receptive field (the paper's figure) and
    that the output sees the whole input, which is what the rows after the global pooling /
    the dense layers show: the whole 224x224 input, one output per image."""
    s = deeparch.summary(name)
    last_map = [r for r in s.layers if r.spatial and not r.whole_input][-1]
    assert s.receptive_field == last_map.receptive_field == feature_rf
    tail = s.layers[s.layers.index(last_map) + 1:]
    whole = [r for r in tail if r.whole_input]
    assert whole and whole[-1] is s.layers[-1]
    assert all((r.receptive_field, r.jump) == (224, 224) for r in whole)
    assert s.output_receptive_field == 224 and s.sees_whole_input
    assert (f"Receptive field: {feature_rf} (last feature map); the output sees the whole "
            "224x224 input") in s.render("table")


def test_a_squeeze_excitation_gate_does_not_inflate_the_receptive_field():
    """The SE gate (global pool -> 1x1 convs -> sigmoid) is broadcast over the map: the map
    after ``x * gate`` keeps the receptive field and jump of its own spatial path."""
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 4, 1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            gate = torch.sigmoid(self.fc(F.adaptive_avg_pool2d(y, 1)))
            return self.conv2(y * gate)

    s = deeparch.summary(SE(), input_size=(4, 32, 32))
    by = {r.type if r.functional else r.name: r for r in s.layers}
    assert by["fc"].whole_input and by["fc"].receptive_field == 32
    assert (by["mul"].receptive_field, by["mul"].jump, by["mul"].whole_input) == (3, 1, False)
    assert by["conv2"].receptive_field == 5 == s.receptive_field == s.output_receptive_field
    assert "Receptive field: 5\n" in s.render("table") + "\n"


def test_fully_convolutional_output_keeps_the_map_receptive_field():
    s = deeparch.summary("INPUT(32x32x3) -> CONV3-8 -> POOL2 -> CONV3-8")
    assert s.receptive_field == s.output_receptive_field == 3 + 1 + 2 * 2
    assert not s.sees_whole_input and s.render("table").rstrip().endswith("Receptive field: 8")


def test_activation_memory_counts_new_tensors_only():
    inplace = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten())
    copy = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    a = deeparch.summary(inplace, input_size=(1, 5, 5))
    b = deeparch.summary(copy, input_size=(1, 5, 5))
    assert [r.activations for r in a.layers] == [36, 0, 0]
    assert [r.activations for r in b.layers] == [36, 36, 0]
    assert a.activations == 25 + 36 and a.activation_bytes == 4 * 61


def test_non_trainable_parameters_and_buffers():
    m = deeparch.create_model("lenet5")
    for p in m.features.parameters():
        p.requires_grad_(False)
    s = deeparch.summary(m, input_size=(1, 32, 32))
    assert s.trainable_params == 10_164 + 850
    assert s.non_trainable_params == 156 + 2_416 + 48_120


def test_summary_does_not_touch_real_weights_or_mode():
    m = deeparch.create_model("fashion_cnn").train()
    before = m.head.dense1.weight.clone()
    deeparch.summary(m, input_size=(1, 28, 28))
    assert m.training and torch.equal(before, m.head.dense1.weight)


def test_json_follows_the_design_schema():
    d = json.loads(deeparch.summary("vgg16").render("json"))
    assert {k: d[k] for k in ("model", "input_size", "total_params", "trainable_params", "macs",
                              "activations")} == {
        "model": "vgg16", "input_size": [3, 224, 224], "total_params": 138_357_544,
        "trainable_params": 138_357_544, "macs": 15_470_264_320, "activations": 15_237_608}
    assert d["layers"][0] == {"name": "features.block1.conv1", "type": "Conv2d",
                              "output_shape": [64, 224, 224], "params": 1792,
                              "macs": 86_704_128, "activations": 3_211_264,
                              "receptive_field": 3, "jump": 1}


def test_renderers():
    s = deeparch.summary("lenet5")
    table = s.render("table")
    assert "Total params: 61,706" in table and "c1" in table
    md = s.render("markdown")
    assert md.count("\n|") >= len(s.layers) and "| `features.c1` |" in md
    assert "(None, 28, 28, 6)" in s.render("keras")
    with pytest.raises(deeparch.DeeparchError):
        s.render("yaml")


@pytest.mark.parametrize("bad", ["3,224", "3,a,224", "0,224,224", "3,224,224,1", "", "-3,2,2"])
def test_bad_input_sizes(bad):
    with pytest.raises(InputSizeError):
        parse_input_size(bad)


@pytest.mark.parametrize("bad,words", [
    ("3,99999999999,99999999999", "larger than the limit of 65,536"),
    ("3,1000000000000000000000000000000,4", "31 digits"),
    ("3," + "9" * 5000 + ",4", "5000 digits"),
    ("200000,8,8", "200,000 channels; the limit is 100,000"),
    ("3,65536,65536", "the limit is 4,294,967,296"),
    ((3, 10 ** 30, 4), "larger than the limit"),
    ((3, float("inf"), 4), "not whole numbers"),
    ((3, 22.5, 4), "not whole numbers"),
    ((3, True, 4), "not whole numbers"),
])
def test_absurd_input_sizes_are_one_sentence(bad, words):
    with pytest.raises(InputSizeError) as info:
        parse_input_size(bad)
    msg = str(info.value)
    assert words in msg and "\n" not in msg and len(msg) < 200


def test_absurd_input_sizes_through_summary_and_modules():
    with pytest.raises(InputSizeError, match="65,536"):
        deeparch.summary("vgg16", input_size="3,99999999999,99999999999")
    m = nn.Sequential(nn.Conv2d(3, 4, 3))
    m.input_size = (3, 10 ** 12, 10 ** 12)           # a size carried by the module itself
    with pytest.raises(InputSizeError):
        deeparch.summary(m)
    from deeparch.inspect.trace import run_trace
    with pytest.raises(InputSizeError):
        run_trace(m, (3, 2 ** 40, 4))


def test_large_but_sane_input_sizes_still_work():
    s = deeparch.summary("vgg16", input_size="3,4096,4096")
    assert s.output_shape == [1000] and s.input_size == (3, 4096, 4096)
    assert parse_input_size("1,65536,65536") == (1, 65536, 65536)


def test_impossible_geometry_names_the_layer():
    with pytest.raises(ShapeError, match=r"features.conv1.*11x11 kernel.*8x8"):
        deeparch.summary("alexnet", input_size=(3, 8, 8))
    with pytest.raises(ShapeError, match="expects 25088 input features but receives 512"):
        m = deeparch.create_model("vgg11")
        deeparch.summary(m, input_size=(3, 32, 32))


# -- generated patterns against real forward passes -------------------------------------
@st.composite
def patterns(draw):
    size = draw(st.integers(8, 40))
    chans = draw(st.sampled_from([1, 3]))
    parts, cur = [f"INPUT({size}x{size}x{chans})"], size
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.sampled_from([1, 3, 5]))
        s = draw(st.sampled_from([1, 2]))
        pad = draw(st.sampled_from(["same", "valid", "1"]))
        p = {"same": (k - 1) // 2, "valid": 0, "1": 1}[pad]
        if cur + 2 * p < k:
            break
        n = draw(st.integers(1, 8))
        opts = f"(s={s},p={pad})" if (s, pad) != (1, "same") else ""
        parts.append(f"CONV{k}-{n}{opts}")
        cur = (cur + 2 * p - k) // s + 1
        parts.append(draw(st.sampled_from(["RELU", "BN", "TANH", "DROPOUT0.1"])))
        if cur >= 2 and draw(st.booleans()):
            parts.append("POOL2")
            cur //= 2
    parts.append(draw(st.sampled_from(["FC-7", "GAP -> FC-5", "FLATTEN -> FC-3 -> SOFTMAX"])))
    return " -> ".join(parts)


@settings(max_examples=40, deadline=None)
@given(patterns())
def test_summary_of_generated_patterns_equals_a_real_forward(spec):
    model = deeparch.from_pattern(spec)
    s = deeparch.summary(spec)
    shapes, out = real_shapes(model, model.input_size)
    assert [r.output_shape for r in s.layers] == shapes
    assert s.output_shape == out
    assert s.total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", [(1, 28, 28), (3, 32, 32)])
def test_every_model_takes_small_inputs_or_says_why_not(size):
    """FashionMNIST and CIFAR sizes: either the model runs, or a ShapeError names the layer
    and the smallest input the model accepts."""
    for name in deeparch.list_models():
        try:
            s = deeparch.summary(name, input_size=size)
        except ShapeError as exc:
            assert "layer '" in str(exc) and "accepts square inputs from" in str(exc), name
        else:
            assert s.input_size == size


def test_smallest_input_is_the_boundary():
    from deeparch.inspect.summary import smallest_input
    side = smallest_input("vgg16")
    assert side == 32
    deeparch.summary("vgg16", input_size=(3, side, side))
    with pytest.raises(ShapeError):
        deeparch.summary("vgg16", input_size=(3, side - 1, side - 1))
