"""The compiled conv -> max-pool -> ReLU [-> dropout] kernel (deeparch.layers._convpool)
against the plain PyTorch layers, and the fall-back where it does not apply."""
import copy
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeparch
from deeparch.layers import fast
from deeparch.layers.fast import conv_relu_pool_dropout, convpool_available, convpool_geometry
from deeparch.train.speed import prepare_for_training

HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))
needs_kernel = pytest.mark.skipif(not convpool_available() and not HAVE_CC,
                                  reason="no C compiler: the kernel cannot have been built")


def test_kernel_was_built_where_a_compiler_exists():
    # pip install builds it (setup.py, optional extension); a silent build failure on a
    # machine with a compiler would make every training run quietly slower
    if HAVE_CC:
        assert convpool_available()


GEOMETRIES = [
    # (cin, cout, kernel, conv kwargs, pool, input size)
    (1, 32, 3, {}, nn.MaxPool2d(2), 28),                                   # fashion_cnn
    (1, 16, 3, dict(padding=1), nn.MaxPool2d(3, 2), 11),                   # overlapping
    (2, 24, (3, 2), dict(stride=(1, 2), padding=(2, 0), dilation=(1, 2)),
     nn.MaxPool2d((2, 3), (1, 2)), 13),                                    # 8-wide blocks
    (3, 64, 5, dict(bias=False), nn.MaxPool2d(2, ceil_mode=True), 12),
    (1, 7, 3, dict(stride=2, padding=2), nn.MaxPool2d(2), 15),             # scalar path
]


def _run(f, x, conv, g):
    conv.zero_grad()
    xi = x.clone().requires_grad_()
    out = f(xi)
    (out * g).sum().backward()
    return [out, conv.weight.grad.clone(),
            None if conv.bias is None else conv.bias.grad.clone(), xi.grad]


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}-{g[1]}-{g[5]}")
def test_matches_plain_layers(geometry, threads):
    cin, cout, k, kw, pool, size = geometry
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, **kw)
    x = torch.randn(5, cin, size, size)
    assert convpool_geometry(x, conv, pool) is not None
    g = torch.randn_like(pool(F.relu(conv(x))))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        plain = _run(lambda x: pool(F.relu(conv(x))), x, conv, g)
        fused = _run(lambda x: conv_relu_pool_dropout(x, conv, pool, 0.5, False, kernel="c"),
                     x, conv, g)
    finally:
        torch.set_num_threads(old)
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    for a, b, what in zip(plain, fused, ("output", "weight grad", "bias grad", "input grad")):
        if a is not None:
            # the weight and bias gradients are sums of thousands of products (batch x
            # positions), accumulated in another order than oneDNN's: float32 rounding then
            # differs by a few 1e-7 of the gradient's scale (seen: 3.4e-5 on a max of 75.8,
            # 28x28, 2 threads, AMD EPYC), more than a fixed 1e-5 allows
            scale = float(a.detach().abs().max())
            torch.testing.assert_close(b, a, rtol=1e-5, atol=max(1e-5, 2e-6 * scale), msg=what)


@needs_kernel
def test_ties_relu_zeros_and_nan_follow_pytorch():
    conv = nn.Conv2d(1, 16, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, 16).view(16, 1, 1, 1))
    pool = nn.MaxPool2d(2)
    x = torch.tensor([[[[1.0, 1.0, 0.0, -2.0],          # a tie: the first maximum wins
                        [1.0, 0.5, -1.0, -3.0],
                        [0.0, 0.0, float("nan"), 2.0],   # NaN propagates
                        [0.0, 0.0, 1.0, 1.0]]]])
    g = torch.randn(1, 16, 2, 2)
    plain = _run(lambda x: pool(F.relu(conv(x))), x, conv, g)
    fused = _run(lambda x: conv_relu_pool_dropout(x, conv, pool, kernel="c"), x, conv, g)
    torch.testing.assert_close(fused[0], plain[0], equal_nan=True)
    assert torch.isnan(fused[0][0, :, 1, 1]).all()
    # gradients through the finite windows are PyTorch's (the NaN window poisons the
    # weight gradient in both)
    torch.testing.assert_close(fused[3][..., :2, :], plain[3][..., :2, :], equal_nan=True)


@needs_kernel
def test_dropout_rate_scale_gradient_and_seed():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 32, 3)
    with torch.no_grad():
        conv.bias.fill_(10.0)                 # every output > 0: the mask shows in full
    pool = nn.MaxPool2d(2)
    x = torch.randn(64, 1, 12, 12)
    plain = pool(F.relu(conv(x))).detach()
    torch.manual_seed(1)
    out = conv_relu_pool_dropout(x, conv, pool, 0.3, True, kernel="c")
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(out[kept], plain[kept] * scale)
    # the backward pass recomputes the same mask
    g = torch.randn_like(out)
    conv.zero_grad()
    (out * g).sum().backward()
    got = conv.bias.grad.clone()
    assert torch.allclose(got, (g * kept * scale).sum((0, 2, 3)), rtol=1e-4, atol=1e-3)
    # reproducible under torch.manual_seed, different from call to call
    torch.manual_seed(1)
    again = conv_relu_pool_dropout(x, conv, pool, 0.3, True, kernel="c")
    assert torch.equal(again, out)
    other = conv_relu_pool_dropout(x, conv, pool, 0.3, True, kernel="c")
    assert not torch.equal(other != 0, kept)
    # eval mode: no dropout
    torch.testing.assert_close(conv_relu_pool_dropout(x, conv, pool, 0.3, False, kernel="c"),
                               plain)


def test_where_the_kernel_does_not_apply_the_torch_path_runs():
    conv = nn.Conv2d(1, 16, 3)
    x = torch.randn(2, 1, 10, 10)
    for pool in (nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, dilation=2),
                 nn.MaxPool2d(3, 2, ceil_mode=True)):           # 8 -> a partial window
        assert convpool_geometry(x, conv, pool) is None
        torch.testing.assert_close(conv_relu_pool_dropout(x, conv, pool), pool(F.relu(conv(x))))
        with pytest.raises(ValueError, match="does not apply"):
            conv_relu_pool_dropout(x, conv, pool, kernel="c")
    assert convpool_geometry(x.double(), copy.deepcopy(conv).double(), nn.MaxPool2d(2)) is None
    empty = torch.zeros(0, 1, 10, 10, requires_grad=True)                # an empty batch
    assert convpool_geometry(empty, conv, nn.MaxPool2d(2)) is None
    out = conv_relu_pool_dropout(empty, conv, nn.MaxPool2d(2), 0.5, True)
    assert out.shape == (0, 16, 4, 4)
    out.sum().backward()
    with pytest.raises(ValueError, match="kernel must be"):
        conv_relu_pool_dropout(x, conv, nn.MaxPool2d(2), kernel="fast")


@needs_kernel
def test_frozen_layers_and_channels_last_input():
    torch.manual_seed(0)
    conv, pool = nn.Conv2d(1, 32, 3), nn.MaxPool2d(2)
    x = torch.randn(3, 1, 12, 12).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv_relu_pool_dropout(x, conv, pool, kernel="c"),
                               pool(F.relu(conv(x))))
    conv.requires_grad_(False)
    assert not conv_relu_pool_dropout(x, conv, pool, kernel="c").requires_grad
    conv.bias.requires_grad_(True)                        # only the bias trains
    g = torch.randn(3, 32, 5, 5)
    (conv_relu_pool_dropout(x, conv, pool, kernel="c") * g).sum().backward()
    conv.bias.grad, got = None, conv.bias.grad
    (pool(F.relu(conv(x))) * g).sum().backward()
    torch.testing.assert_close(got, conv.bias.grad)
    assert conv.weight.grad is None


def test_without_the_extension_training_still_works(monkeypatch):
    monkeypatch.setattr(fast, "_convpool", None)
    assert not convpool_available()
    torch.manual_seed(0)
    plain = deeparch.create_model("fashion_cnn", drop_rate=0.0)
    model = prepare_for_training(copy.deepcopy(plain), "cpu")
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not built"):
        conv_relu_pool_dropout(x, plain.features.conv1, plain.features.pool1, kernel="c")


@needs_kernel
def test_prepared_model_uses_it_and_trains_like_the_plain_one():
    torch.manual_seed(0)
    plain = deeparch.create_model("fashion_cnn", drop_rate=0.0)
    fused = prepare_for_training(copy.deepcopy(plain), "cpu")
    torch_path = prepare_for_training(copy.deepcopy(plain), "cpu", compiled=False)
    assert fused.features.forward.kernel == "auto" and torch_path.features.forward.kernel == "torch"
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    grads = []
    for m in (plain, fused, torch_path):
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b, c in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5)


def test_kernel_rejects_bad_geometry():
    if not convpool_available():
        pytest.skip("extension not built")
    with pytest.raises(ValueError):
        fast._convpool.output_size((1, 1, 4, 4, 8, 5, 5, 1, 1, 0, 0, 1, 1, 2, 2, 2, 2))
    with pytest.raises(ValueError):
        fast._convpool.output_size((1, 2, 3))


@needs_kernel
def test_own_threads_and_torch_openmp_threads_agree():
    torch.manual_seed(0)
    conv, pool = nn.Conv2d(1, 32, 3), nn.MaxPool2d(2)
    x = torch.randn(9, 1, 14, 14)
    g = torch.randn(9, 32, 6, 6)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    results = []
    try:
        for use_torch_pool in (True, False):
            if use_torch_pool:
                fast._torch_openmp()
            else:
                assert fast._convpool.set_openmp(0, 0, 0) is False       # POSIX threads
            results.append(_run(lambda x: conv_relu_pool_dropout(x, conv, pool, kernel="c"),
                                x, conv, g))
    finally:
        fast._torch_openmp()
        torch.set_num_threads(old)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
