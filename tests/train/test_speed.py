"""BatchStream, prepare_for_training, device and precision helpers (no timings asserted)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeparch
import deeparch.layers
from deeparch.layers.fast import conv2d_gemm, conv_relu_pool_dropout, dropout_fast, dropout_mask
from deeparch.train import speed
from deeparch.train.speed import (BatchStream, autocast, bf16_supported, prepare_for_training,
                                  select_device, unprepare)


def _data(n=103, c=1, hw=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g)
    return x, torch.arange(n)           # label i marks sample i


# ------------------------------------------------------------------ BatchStream
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_per_epoch(drop_last):
    x, y = _data(103)
    s = BatchStream(x, y, 16, shuffle=True, seed=1, mean=(0.5,), std=(0.25,),
                    drop_last=drop_last)
    seen = torch.cat([yb for _, yb in s])
    assert len(s) == (6 if drop_last else 7) == len(list(s))
    if drop_last:
        assert len(seen) == 96 and len(set(seen.tolist())) == 96
    else:
        assert sorted(seen.tolist()) == list(range(103))
    sizes = [len(yb) for _, yb in s]
    assert sizes[:6] == [16] * 6


def test_deterministic_per_seed_and_epoch():
    x, y = _data()
    a = BatchStream(x, y, 10, shuffle=True, seed=7, mean=0.5, std=0.5)
    b = BatchStream(x, y, 10, shuffle=True, seed=7, mean=0.5, std=0.5)
    b.set_epoch(3)
    b_e3 = [yb for _, yb in b]
    a.set_epoch(0)
    list(a)                                    # an earlier epoch leaves no trace
    a.set_epoch(3)
    assert all(torch.equal(p, q) for p, q in zip([yb for _, yb in a], b_e3))
    a.set_epoch(4)
    assert not torch.equal(torch.cat([yb for _, yb in a]), torch.cat(b_e3))
    c = BatchStream(x, y, 10, shuffle=True, seed=8, mean=0.5, std=0.5)
    c.set_epoch(3)
    assert not torch.equal(torch.cat([yb for _, yb in c]), torch.cat(b_e3))
    ordered = BatchStream(x, y, 10, shuffle=False, seed=7, mean=0.5, std=0.5)
    assert torch.equal(torch.cat([yb for _, yb in ordered]), y)


@pytest.mark.parametrize("n", [100, 103, 98])
def test_shards_union_is_the_global_batch(n):
    x, y = _data(n)
    glob = BatchStream(x, y, 16, shuffle=True, seed=3, mean=0.5, std=0.5)
    ranks = [BatchStream(x, y, 8, shuffle=True, seed=3, mean=0.5, std=0.5, rank=r,
                         world_size=2) for r in range(2)]
    for s in [glob, *ranks]:
        s.set_epoch(2)
    assert len(ranks[0]) == len(ranks[1]) == len(glob)
    for gb, r0, r1 in zip(glob, *ranks):
        assert torch.equal(torch.cat([r0[1], r1[1]]), gb[1])
        assert torch.equal(torch.cat([r0[0], r1[0]]), gb[0])
    # a last global batch smaller than world_size is dropped on every rank
    one = [BatchStream(x[:17], y[:17], 8, shuffle=False, seed=0, rank=r, world_size=2)
           for r in range(2)]
    assert len(one[0]) == len(one[1]) == 1


def test_normalises_per_channel():
    x, y = _data(20, c=3)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    s = BatchStream(x, y, 20, shuffle=False, seed=0, mean=mean, std=std)
    xb, yb = next(iter(s))
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    torch.testing.assert_close(xb, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        BatchStream(x, y, 4, shuffle=False, seed=0, mean=(0.1, 0.2), std=0.5)


def test_augment_sees_raw_pixels_and_an_epoch_generator():
    x, y = _data(12)
    calls = []

    def aug(batch, gen):
        calls.append(batch.clone())
        return batch + torch.rand(batch.shape, generator=gen)

    s = BatchStream(x, y, 12, shuffle=False, seed=5, mean=0.0, std=1.0, augment=aug)
    s.set_epoch(1)
    first = next(iter(s))[0]
    assert calls[0].dtype == torch.float32 and torch.equal(calls[0], x.float())
    again = next(iter(s))[0]
    assert torch.equal(first, again)             # same (seed, epoch): same draws
    s.set_epoch(2)
    assert not torch.equal(next(iter(s))[0], first)
    assert first.max() <= 256 / 255


def test_with_the_data_augment_module():
    augment = pytest.importorskip("deeparch.data.augment")
    x, y = _data(8, hw=28)
    a = augment.Augment(rotation_range=8, width_shift_range=0.08, height_shift_range=0.08,
                        shear_range=0.3, zoom_range=0.08)
    s = BatchStream(x, y, 4, shuffle=True, seed=0, mean=0.3, std=0.35, augment=a)
    xb, _ = next(iter(s))
    assert xb.shape == (4, 1, 28, 28) and torch.isfinite(xb).all()


# ------------------------------------------------------------ prepare_for_training
def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _run(model, x, g):
    model.zero_grad()
    out = model(x)
    (out * g).sum().backward()
    return out


def _compare(plain, fast, x, train=True, input_grad=False):
    plain.train(train)
    fast.train(train)
    xp = x.clone().requires_grad_(input_grad)
    xf = x.clone().requires_grad_(input_grad)
    with torch.no_grad():
        g = torch.randn_like(plain(xp))
    out_p = _run(plain, xp, g)
    out_f = _run(fast, xf, g)
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=1e-5)
    for (n, gp), gf in zip(_grads(plain).items(), _grads(fast).values()):
        torch.testing.assert_close(gf, gp, rtol=1e-4, atol=1e-5, msg=n)
    if input_grad:
        torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-4, atol=1e-5)


def _images(n, c, hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, hw, hw, generator=g)
    x[: n // 2, :, : hw // 2] = 0.0         # flat background: exact ties in the pools
    return x


def test_fashion_cnn_outputs_and_gradients_match():
    torch.manual_seed(0)
    plain = deeparch.create_model("fashion_cnn", drop_rate=0.0)
    fast = prepare_for_training(copy.deepcopy(plain), "cpu")
    x = _images(16, 1, 28)
    _compare(plain, fast, x, train=True)
    _compare(plain, fast, x, train=False)
    _compare(plain, fast, x, train=True, input_grad=True)


def test_fashion_cnn_two_blocks_and_keys_types_summary():
    torch.manual_seed(0)
    plain = deeparch.create_model("fashion_cnn", blocks=2, drop_rate=0.0)
    before = deeparch.summary(plain, input_size=(1, 28, 28)).to_dict()
    fast = prepare_for_training(copy.deepcopy(plain), "cpu")
    prepare_for_training(fast, "cpu")                       # idempotent
    _compare(plain, fast, _images(8, 1, 28))
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert [type(m) for m in fast.modules()] == [type(m) for m in plain.modules()]
    assert deeparch.summary(fast, input_size=(1, 28, 28)).to_dict() == before
    fast.load_state_dict(plain.state_dict())                # checkpoints stay compatible


def test_ceil_mode_odd_sizes_and_padding_match():
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(0.0),            # 15 -> 8 (fused)
        nn.Conv2d(16, 8, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),   # 6 -> 3 (plain)
        nn.Conv2d(8, 4, 1, stride=2, bias=False), nn.ReLU(),
        nn.MaxPool2d(2, padding=1),                                      # 2 -> 2
        nn.Flatten(), nn.Dropout(0.0), nn.Linear(16, 5))
    fast = prepare_for_training(copy.deepcopy(plain), "cpu")
    assert isinstance(fast.__dict__.get("forward"), speed._FastSequential)
    x = _images(6, 1, 15)
    _compare(plain, fast, x, input_grad=True)
    odd = nn.Sequential(nn.Conv2d(2, 16, 3, stride=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(256, 3))              # 21 -> 9 -> 4
    _compare(odd, prepare_for_training(copy.deepcopy(odd), "cpu"), _images(5, 2, 21),
             input_grad=True)


def test_flatten_linear_on_channels_last_input():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), deeparch.layers.Dense(8 * 3 * 5, 6, "relu"), nn.Linear(6, 2))
    fast = prepare_for_training(copy.deepcopy(head), "cpu")
    x = torch.randn(4, 8, 3, 5).contiguous(memory_format=torch.channels_last)
    xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(4, 2)
    (head(xp) * g).sum().backward()
    out = fast(xf)
    (out * g).sum().backward()
    torch.testing.assert_close(out, head(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-5, atol=1e-6)
    for (n, a), b in zip(head.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_conv_gemm_matches_conv2d():
    torch.manual_seed(0)
    for cin, k, stride, pad, dil in [(1, 3, 1, 0, 1), (3, 3, 2, 1, 1), (2, (3, 2), (1, 2), (2, 0), (1, 2))]:
        conv = nn.Conv2d(cin, 5, k, stride, pad, dil)
        x = torch.randn(3, cin, 11, 12)
        torch.testing.assert_close(conv2d_gemm(x, conv.weight, conv.bias, conv.stride,
                                               conv.padding, conv.dilation), conv(x),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_bytes", [1, 3000, 1 << 30])
@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1, ceil_mode=True)])
def test_fused_block_in_chunks(chunk_bytes, pool):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 16, 3, padding=1)
    x = _images(7, 1, 11)
    g = torch.randn_like(pool(conv(x)))
    grads = []
    for f in (lambda x: pool(F.relu(conv(x))),
              lambda x: conv_relu_pool_dropout(x, conv, pool, 0.0, True, chunk_bytes)):
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        out = f(xi)
        (out * g).sum().backward()
        grads.append((out, conv.weight.grad.clone(), conv.bias.grad.clone(), xi.grad))
    for plain, fast in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_hooked_modules_see_the_plain_computation():
    torch.manual_seed(0)
    plain = deeparch.create_model("fashion_cnn", drop_rate=0.0)
    fast = prepare_for_training(copy.deepcopy(plain), "cpu")
    seen = {}
    for layer in ("features.relu1", "head.flatten"):
        for name, m in (("plain", plain), ("fast", fast)):
            h = m.get_submodule(layer).register_forward_hook(
                lambda mod, i, o, name=name: seen.__setitem__(name, o))
            m(_images(4, 1, 28))
            h.remove()
        torch.testing.assert_close(seen["fast"], seen["plain"], rtol=1e-5, atol=1e-5)


def test_dropout_mask_is_unbiased_and_backward_uses_it():
    torch.manual_seed(0)
    keep, scale = dropout_mask((200, 1000), 0.2)
    assert abs(keep.float().mean().item() - 0.8) < 0.005
    assert abs(scale - 1.25) < 1e-4
    x = torch.randn(64, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = dropout_fast(x, 0.3, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], (x * (65536 / (65536 - round(0.3 * 65536))))[kept])
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() * (y[kept] / x[kept]).mean())
    assert dropout_fast(x, 0.3, training=False) is x
    model = prepare_for_training(nn.Sequential(nn.Dropout(0.5)), "cpu").train()
    out = model(torch.ones(50, 4, 10, 10))
    assert abs((out == 0).float().mean().item() - 0.5) < 0.02 and out.max() == 2.0
    out2d = model(torch.ones(100, 40))
    assert abs((out2d == 0).float().mean().item() - 0.5) < 0.03 and out2d.max() == 2.0
    assert torch.equal(model.eval()(torch.ones(3, 4)), torch.ones(3, 4))


def test_deepcopy_unprepare_and_meta():
    torch.manual_seed(0)
    plain = deeparch.create_model("fashion_cnn")
    fast = prepare_for_training(copy.deepcopy(plain), "cpu")
    twin = copy.deepcopy(fast)
    with torch.no_grad():
        twin.features.conv1.weight.mul_(2)
    x = _images(2, 1, 28)
    plain.eval(), fast.eval(), twin.eval()
    torch.testing.assert_close(fast(x), plain(x))          # the copy owns its parameters
    assert not torch.allclose(twin(x), plain(x))
    assert "forward" not in unprepare(fast).features.__dict__
    assert "forward" not in fast.features.conv1.__dict__
    meta = prepare_for_training(deeparch.create_model("fashion_cnn"), "cpu").to("meta")
    assert meta(torch.empty(2, 1, 28, 28, device="meta")).shape == (2, 10)


# ------------------------------------------------------------ device and precision
def test_select_device_and_bf16_probe():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    ok = bf16_supported("cpu")
    assert isinstance(ok, bool)
    assert bf16_supported("cpu") is ok                      # cached
    with autocast("cpu", enabled=True):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype in (torch.float32, torch.bfloat16)
    with autocast("cpu", enabled=False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
