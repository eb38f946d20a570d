"""The classic networks against every figure the seed documents give for them."""
import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError, ShapeError


def rows(s, types):
    return [r for r in s.layers if r.type in types]


def test_fashion_cnn_reproduces_the_slides_keras_table():
    s = deeparch.summary("fashion_cnn")
    # slides: Layer (type) / Output Shape / Param #
    expected = [("Conv2d", [32, 26, 26], 320), ("ReLU", [32, 26, 26], 0),
                ("MaxPool2d", [32, 13, 13], 0), ("Dropout", [32, 13, 13], 0),
                ("Flatten", [5408], 0), ("Dense", [128], 692_352), ("Dense", [10], 1_290)]
    assert [(r.type, r.output_shape, r.params) for r in s.layers] == expected
    assert s.total_params == s.trainable_params == 693_962
    assert s.non_trainable_params == 0
    keras = s.render("keras")
    for line in ("(None, 26, 26, 32)", "(None, 13, 13, 32)", "(None, 5408)", "692,352",
                 "Total params: 693,962", "Trainable params: 693,962", "Non-trainable params: 0"):
        assert line in keras


def test_fashion_cnn_goes_deeper_with_blocks():
    s = deeparch.summary(deeparch.create_model("fashion_cnn", blocks=2), input_size=(1, 28, 28))
    convs = rows(s, {"Conv2d"})
    assert [r.output_shape for r in convs] == [[32, 26, 26], [32, 11, 11]]
    assert s.total_params == 320 + 9_248 + (32 * 5 * 5) * 128 + 128 + 1_290
    with pytest.raises(ShapeError):
        deeparch.create_model("fashion_cnn", blocks=4)


def test_lenet5_layer_by_layer_as_the_crash_course():
    s = deeparch.summary("lenet5")
    weights = [r for r in s.layers if r.params]
    assert [(r.name.split(".")[-1], r.params) for r in weights] == [
        ("c1", 156), ("c3", 2_416), ("c5", 48_120), ("f6", 10_164), ("output", 850)]
    shapes = {r.name.split(".")[-1]: r.output_shape for r in s.layers}
    assert shapes["c1"] == [6, 28, 28] and shapes["s2"] == [6, 14, 14]
    assert shapes["c3"] == [16, 10, 10] and shapes["s4"] == [16, 5, 5]
    assert shapes["c5"] == [120, 1, 1]
    assert s.total_params == 61_706 == deeparch.model_info("lenet5").params


def test_lenet5_original_uses_average_pooling_and_tanh():
    m = deeparch.create_model("lenet5", original=True)
    types = {type(x).__name__ for x in m.modules()}
    assert {"AvgPool2d", "Tanh"} <= types and "MaxPool2d" not in types
    assert sum(p.numel() for p in m.parameters()) == 61_706


ALEXNET_TABLE = [  # the slides' "Full (simplified) AlexNet architecture", channels last
    ("conv1", "55x55x96"), ("pool1", "27x27x96"), ("norm1", "27x27x96"), ("conv2", "27x27x256"),
    ("pool2", "13x13x256"), ("norm2", "13x13x256"), ("conv3", "13x13x384"),
    ("conv4", "13x13x384"), ("conv5", "13x13x256"), ("pool3", "6x6x256"), ("fc6", "4096"),
    ("fc7", "4096"), ("fc8", "1000")]


def test_alexnet_reproduces_the_slides_table():
    s = deeparch.summary("alexnet")
    by = {r.name.split(".")[-1]: r for r in s.layers}
    for name, hwc in ALEXNET_TABLE:
        shape = by[name].output_shape
        got = "x".join(map(str, shape[1:] + shape[:1])) if len(shape) == 3 else str(shape[0])
        assert got == hwc, name
    # Q1-Q4
    assert by["conv1"].params == 34_944 and by["pool1"].params == 0
    assert s.total_params == 62_378_344
    assert by["pool3"].receptive_field == 195


def test_alexnet_two_gpu_split_gives_the_papers_60_million():
    m = deeparch.create_model("alexnet", groups=2)
    assert sum(p.numel() for p in m.parameters()) == 60_965_224
    assert m.features.conv2.groups == 2 and m.features.conv3.groups == 1


VGG16_ROWS = [  # the slides' VGG16 table: output (HxWxC), memory, params without biases
    ("224x224x64", 3_211_264, 1_728), ("224x224x64", 3_211_264, 36_864),
    ("112x112x64", 802_816, 0),
    ("112x112x128", 1_605_632, 73_728), ("112x112x128", 1_605_632, 147_456),
    ("56x56x128", 401_408, 0),
    ("56x56x256", 802_816, 294_912), ("56x56x256", 802_816, 589_824),
    ("56x56x256", 802_816, 589_824), ("28x28x256", 200_704, 0),
    ("28x28x512", 401_408, 1_179_648), ("28x28x512", 401_408, 2_359_296),
    ("28x28x512", 401_408, 2_359_296), ("14x14x512", 100_352, 0),
    ("14x14x512", 100_352, 2_359_296), ("14x14x512", 100_352, 2_359_296),
    ("14x14x512", 100_352, 2_359_296), ("7x7x512", 25_088, 0),
    ("4096", 4_096, 102_760_448), ("4096", 4_096, 16_777_216), ("1000", 1_000, 4_096_000)]


def test_vgg16_reproduces_the_slides_memory_and_params_table():
    s = deeparch.summary("vgg16")
    table = [r for r in s.layers if r.type in ("Conv2d", "MaxPool2d", "Linear")]
    assert len(table) == len(VGG16_ROWS)
    for r, (hwc, memory, weights) in zip(table, VGG16_ROWS):
        shape = r.output_shape
        got = "x".join(map(str, shape[1:] + shape[:1])) if len(shape) == 3 else str(shape[0])
        assert (got, r.activations, r.params - (shape[0] if r.params else 0)) == (hwc, memory, weights)
    assert s.total_params == 138_357_544
    assert s.macs == 15_470_264_320
    assert s.activations == 15_237_608  # the rows of the table, input included
    assert s.total_params - s.bias_params == 138_344_128


@pytest.mark.parametrize("name,params,paper_millions", [
    ("vgg11", 132_863_336, 133), ("vgg11_lrn", 132_863_336, 133), ("vgg13", 133_047_848, 133),
    ("vgg16_c", 133_638_952, 134), ("vgg16", 138_357_544, 138), ("vgg19", 143_667_240, 144)])
def test_vgg_configurations_match_the_paper(name, params, paper_millions):
    s = deeparch.summary(name)
    assert s.total_params == params == deeparch.model_info(name).params
    assert round(params / 1e6) == paper_millions
    assert s.macs == deeparch.model_info(name).macs


def test_vgg_weight_layers_per_configuration():
    for name, depth in [("vgg11", 11), ("vgg13", 13), ("vgg16_c", 16), ("vgg16", 16), ("vgg19", 19)]:
        assert deeparch.summary(name).depth == depth


def test_vgg_batch_norm_variants_add_two_parameters_per_channel():
    for name in ("vgg11", "vgg13", "vgg16", "vgg19"):
        plain = deeparch.summary(name).total_params
        bn = deeparch.summary(name + "_bn")
        assert bn.total_params - plain == 2 * sum(
            r.output_shape[0] for r in bn.layers if r.type == "Conv2d")
        assert bn.non_trainable_params == 0


def test_vgg_on_cifar10_input():
    s = deeparch.summary("vgg16_cifar")
    assert s.input_size == (3, 32, 32) and s.output_shape == [10]
    assert [r for r in s.layers if r.type == "MaxPool2d"][-1].output_shape == [512, 1, 1]
    assert s.total_params == 14_714_688 + (512 * 4096 + 4096) + (4096 * 4096 + 4096) + 40_970
    assert s.total_params == 33_638_218


def test_real_forward_backward_of_the_classics():
    for name, size in [("fashion_cnn", (1, 28, 28)), ("lenet5", (1, 32, 32)),
                       ("alexnet", (3, 227, 227)), ("vgg11_cifar", (3, 32, 32))]:
        m = deeparch.create_model(name, num_classes=7)
        y = m(torch.randn(2, *size))
        assert y.shape == (2, 7)
        y.sum().backward()
        assert all(p.grad is not None for p in m.parameters())


def test_bad_knobs_are_user_errors():
    with pytest.raises(DeeparchError, match="no option"):
        deeparch.create_model("vgg16", widht=2)
    with pytest.raises(DeeparchError):
        deeparch.create_model("alexnet", groups=5)
