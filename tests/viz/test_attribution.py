"""deeparch.viz.attribution: saliency (grad, smoothgrad, guided, integrated, occlusion) and
Grad-CAM / Grad-CAM++, and `deeparch look saliency|gradcam`.

What is shown, not only that it runs:
- a small CNN trained to tell a planted X from planted O distractors at random positions:
  Grad-CAM's argmax lies within 3 px of the X in >= 95% of the test images; an untrained
  network of the same shape does not find it (the check can fail);
- after re-initialising the weights the maps no longer correlate with the trained ones
  (Spearman <= 0.2, Adebayo et al. 2018), while two layers of the trained net agree;
- Grad-CAM equals Captum's LayerGradCam (ReLU, bilinear interpolation); grad, integrated
  gradients, occlusion and guided backprop equal Captum's Saliency, IntegratedGradients,
  Occlusion and GuidedBackprop; integrated gradients sum to f(x) - f(baseline);
- with a global-average-pool head Grad-CAM is CAM: relu(sum_k w_ck A_k) / (h w);
- a batch of N images with N targets gives what N single calls give;
- in-place ReLUs give what out-of-place ones give (also at a conv whose output a ReLU
  overwrites), no hook is left and modes are restored, also after an error.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deeparch.cli import main
from deeparch.errors import DataError, DeeparchError, ModelOptionError, UnknownLayerError
from deeparch.viz.attribution import (METHODS, gradcam, gradcam_result, plot_attribution,
                                      saliency)
from deeparch.viz.layers import count_hooks

S, K = 32, 5


def _patterns():
    x = torch.zeros(K, K)
    for i in range(K):
        x[i, i] = x[i, K - 1 - i] = 1.0
    o = torch.ones(K, K)
    o[1:-1, 1:-1] = 0.0
    return x, o


def planted(n: int, seed: int):
    """Grey 32x32 noise with an O distractor at a random place; class 1 adds an X elsewhere,
    class 0 a second O. Returns images, labels and the centre of the X (or second O)."""
    xp, op = _patterns()
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, S, S, generator=g) * 0.3
    labels = torch.randint(0, 2, (n,), generator=g)
    centres = torch.zeros(n, 2, dtype=torch.long)
    for k in range(n):
        while True:
            p = torch.randint(0, S - K + 1, (2, 2), generator=g)
            if (p[0] - p[1]).abs().max() > K:
                break
        images[k, 0, p[1, 0]:p[1, 0] + K, p[1, 1]:p[1, 1] + K] += op
        images[k, 0, p[0, 0]:p[0, 0] + K, p[0, 1]:p[0, 1] + K] += xp if labels[k] else op
        centres[k] = p[0] + K // 2
    return images, labels, centres


def cnn(seed: int = 0, inplace: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2))


@pytest.fixture(scope="module")
def trained():
    model = cnn(0)
    x, y, _ = planted(1500, seed=1)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt, ct = planted(300, seed=2)
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.95, acc
    keep = yt == 1
    return model, xt[keep], ct[keep]


def _hits(maps: torch.Tensor, centres: torch.Tensor) -> float:
    arg = maps.flatten(1).argmax(1)
    r, c = arg // maps.shape[-1], arg % maps.shape[-1]
    d = torch.maximum((r - centres[:, 0]).abs(), (c - centres[:, 1]).abs())
    return (d <= 3).float().mean().item()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation with average ranks for ties; a constant map carries no ranking: 0."""
    def ranks(v):
        v = v.flatten().double().numpy()
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / counts)[inv]
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def test_spearman_helper_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, generator=g).clamp(min=0)        # ties at zero, as in ReLU'd maps
    b = (a + torch.randn(64, generator=g)).clamp(min=0.3)
    assert _spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy())[0],
                                            abs=1e-12)


def test_gradcam_points_at_the_planted_pattern(trained):
    model, x, centres = trained
    for layer in ("#6", "#7"):         # the conv3 map and its ReLU, 16x16 (stride 2)
        assert _hits(gradcam(model, x, 1, layer=layer), centres) >= 0.95
    assert _hits(gradcam(model, x, 1, layer="#7", plus=True), centres) >= 0.95
    assert _hits(gradcam(model, x, 1), centres) >= 0.95            # auto: the same #7
    assert gradcam_result(model, x[:1], 1).layer == "6"      # row #7 is module 6
    # the check can fail: an untrained network of the same shape does not find the X
    assert _hits(gradcam(cnn(3).eval(), x, 1, layer="#7"), centres) < 0.5


def test_reinitialised_weights_give_uncorrelated_maps(trained):
    """Adebayo et al. 2018's model randomisation test: the trained network's maps against
    those of the same network with all its weights re-initialised, five times over (one
    random network can by chance still like the high-contrast patches: a single draw's mean
    ranged from -0.06 to 0.24 in trials). A re-initialised net whose map of an image is
    constant (all zero after the ReLU) has no ranking to compare: such pairs are left out,
    and may be few -- otherwise the test would pass for want of maps."""
    model, x, _ = trained
    x = x[:60]
    ref = gradcam(model, x, 1, layer="#7")
    rhos, per_draw = [], []
    for seed in range(1, 6):
        random = cnn(0)
        random.load_state_dict(model.state_dict())
        torch.manual_seed(seed)
        for m in random.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        rnd = gradcam(random.eval(), x, 1, layer="#7")
        r = [_spearman(a, b) for a, b in zip(ref, rnd) if b.max() > b.min()]
        rhos += r
        per_draw.append(np.mean(r))
    assert len(rhos) >= 0.9 * 5 * len(x)
    assert np.mean(rhos) <= 0.2, per_draw
    assert max(per_draw) <= 0.3, per_draw
    # while the trained network agrees with itself across layers (the metric can be high)
    other = gradcam(model, x, 1, layer="#6")
    assert np.mean([_spearman(a, b) for a, b in zip(ref, other)]) >= 0.5


captum = pytest.importorskip  # (named for reading: the Captum tests skip without captum)


@pytest.fixture(scope="module")
def resnet():
    from deeparch import create_model
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    # trained-looking batch statistics, so that the maps are not all alike
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.double()     # in float64 a batch and single images agree to 1e-12, and no
                              # ReLU flips on rounding noise between two ways of computing


def test_gradcam_equals_captum_layergradcam(resnet):
    ca = captum("captum.attr")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).double()
    targets = [1, 4, 7]
    modules = dict(resnet.named_modules())
    for name in ("features.stage2.1.conv2", "features.stage3.0.conv1", "features.stem.conv1"):
        ref = ca.LayerGradCam(resnet, modules[name]).attribute(x, target=targets,
                                                               relu_attributions=True)
        ref = ca.LayerAttribution.interpolate(ref, (32, 32), "bilinear")[:, 0].detach()
        got = gradcam(resnet, x, targets, layer=name)
        assert got.shape == (3, 32, 32)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
        assert got.abs().max() > 0
    # raw values: nothing is normalised (the max is not 1)
    assert abs(float(got.amax()) - 1.0) > 1e-3


def test_saliency_methods_equal_captum(resnet):
    ca = captum("captum.attr")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).double()
    t = [3, 8]
    ref = ca.Saliency(resnet).attribute(x, target=t, abs=False)
    torch.testing.assert_close(saliency(resnet, x, t, "grad"), ref)
    ref = ca.IntegratedGradients(resnet).attribute(x, target=t, n_steps=10,
                                                  method="riemann_middle")
    got = saliency(resnet, x, t, "integrated", steps=10)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)   # captum: float32 alphas
    ref = ca.Occlusion(resnet).attribute(x, target=t, sliding_window_shapes=(3, 6, 6),
                                         strides=(3, 4, 4), baselines=0)
    torch.testing.assert_close(saliency(resnet, x, t, "occlusion", window=6, stride=4),
                               ref.double(), rtol=1e-5, atol=1e-7)   # captum returns float32
    # guided backprop: Captum's module hooks need out-of-place ReLUs; ours gives the same on
    # the network as it is (in-place ReLUs)
    plain = _out_of_place(resnet)
    ref = ca.GuidedBackprop(plain).attribute(x, target=t)
    torch.testing.assert_close(saliency(resnet, x, t, "guided"), ref)
    assert count_hooks(resnet) == 0 and count_hooks(plain) == 0


def _out_of_place(model: nn.Module) -> nn.Module:
    import copy
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    return m


def test_integrated_gradients_are_complete(resnet):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).double()
    ig = saliency(resnet, x, [0, 5], "integrated", steps=64)
    with torch.no_grad():
        f = resnet(x)[[0, 1], [0, 5]] - resnet(torch.zeros_like(x))[[0, 1], [0, 5]]
    torch.testing.assert_close(ig.flatten(1).sum(1), f, rtol=0.02, atol=2e-3)


def test_gradcam_of_a_gap_head_is_cam():
    """Global average pooling then a linear layer: Grad-CAM's weights are w_ck / (h w)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, 2, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = model[:3](x)                              # 2 x 6 x 8 x 8
    w = model[5].weight                               # 4 x 6
    t = torch.tensor([2, 1])
    want = torch.relu((w[t][:, :, None, None] * a).sum(1)) / 64
    got = gradcam_result(model, x, t, layer="2")
    torch.testing.assert_close(got.low, want.detach())
    assert got.shape == (6, 8, 8) and got.targets == [2, 1]


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_is_n_single_calls(resnet, method):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)).double()
    t = [2, 9, 2]
    kw = dict(steps=8) if method == "integrated" else dict(samples=4) \
        if method == "smoothgrad" else dict(window=8, stride=8) if method == "occlusion" else {}
    if method == "smoothgrad":       # the noise of image i is drawn for image i alone
        batch = torch.stack([saliency(resnet, x[i:i + 1], t[i], method, seed=i, **kw)[0]
                             for i in range(3)])
        again = torch.stack([saliency(resnet, x[i], t[i], method, seed=i, **kw)
                             for i in range(3)])
        torch.testing.assert_close(batch, again)
        return
    batch = saliency(resnet, x, t, method, **kw)
    single = torch.stack([saliency(resnet, x[i], t[i], method, **kw) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-12)


def test_gradcam_batch_is_n_single_calls(resnet):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4)).double()
    t = torch.tensor([0, 3, 3, 9])
    for plus in (False, True):
        batch = gradcam(resnet, x, t, plus=plus)
        single = torch.stack([gradcam(resnet, x[i], int(t[i]), plus=plus) for i in range(4)])
        torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-12)
    # top1 targets are each image's own prediction
    with torch.no_grad():
        top = resnet(x).argmax(1)
    torch.testing.assert_close(gradcam(resnet, x), gradcam(resnet, x, top))
    assert gradcam_result(resnet, x, "top1").targets == top.tolist()


def test_inplace_relu_is_safe(trained):
    """At the first conv (#1), whose output the next ReLU(inplace=True) overwrites, hooks that
    keep the module's output see the ReLU'd values; ours equal the out-of-place network's."""
    model, x, _ = trained
    plain = cnn(0, inplace=False)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    x = x[:8]
    for layer in ("#1", "#3", "#6"):
        torch.testing.assert_close(gradcam(model, x, 1, layer=layer),
                                   gradcam(plain, x, 1, layer=layer))
    for method in ("grad", "guided", "integrated"):
        torch.testing.assert_close(saliency(model, x, 1, method, steps=8),
                                   saliency(plain, x, 1, method, steps=8))
    # the captured conv map had negative values: they were not overwritten by the ReLU
    from deeparch.viz.layers import capture
    _, (a,) = capture(model, x, ["#1"])
    assert a.min() < 0


class _Functional(nn.Module):
    """ReLUs as functions (F.relu, torch.relu_, Tensor.relu) and a module used twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 5)

    def forward(self, x):
        x = nn.functional.relu(self.conv(x))
        x = torch.relu_(self.conv(x))
        x = self.conv(x).relu()
        return self.head(x.mean((2, 3)))


def test_guided_backprop_replaces_functional_relus():
    model = _Functional().eval()
    x = torch.randn(2, 3, 12, 12)
    g = saliency(model, x, [1, 2], "guided")
    # reference: the same forward with the guided rule written out by hand
    class Guided(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return v.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            return grad.clamp(min=0) * (v > 0)
    xx = x.clone().requires_grad_(True)
    h = Guided.apply(model.conv(xx))
    h = Guided.apply(model.conv(h))
    h = Guided.apply(model.conv(h))
    out = model.head(h.mean((2, 3)))
    (want,) = torch.autograd.grad(out[0, 1] + out[1, 2], xx)
    torch.testing.assert_close(g, want)
    assert not torch.allclose(g, saliency(model, x, [1, 2], "grad"))
    # Grad-CAM at the second use of the shared conv
    cam = gradcam_result(model, x, [1, 2], layer="conv@2")
    assert cam.layer == "conv@2" and cam.maps.shape == (2, 12, 12)


def test_smoothgrad_is_seeded_and_zero_noise_is_the_gradient(resnet):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)).double()
    a = saliency(resnet, x, 1, "smoothgrad", samples=3, seed=7)
    torch.testing.assert_close(a, saliency(resnet, x, 1, "smoothgrad", samples=3, seed=7),
                               rtol=0, atol=0)
    assert not torch.equal(a, saliency(resnet, x, 1, "smoothgrad", samples=3, seed=8))
    torch.testing.assert_close(saliency(resnet, x, 1, "smoothgrad", samples=2, noise=0.0),
                               saliency(resnet, x, 1, "grad"))


def test_no_hooks_modes_restored_grads_untouched_also_after_errors(resnet):
    resnet.train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    bad = [
        (lambda: gradcam(resnet, x, 10), ModelOptionError, "out of range"),
        (lambda: gradcam(resnet, x, [1, 2, 3]), ModelOptionError, "3 targets"),
        (lambda: gradcam(resnet, x, 1, layer="features.stage3.2.conv9"), UnknownLayerError,
         "close names"),
        (lambda: gradcam(resnet, x, 1, layer="head.fc"), DeeparchError, "spatial map"),
        (lambda: gradcam(resnet, torch.randn(2, 1, 32, 32, dtype=torch.float64), 1), DeeparchError, ""),
        (lambda: saliency(resnet, torch.randn(2, 1, 32, 32, dtype=torch.float64), 1), DataError, "shape"),
        (lambda: saliency(resnet, x, 1, "lime"), ModelOptionError, "grad, smoothgrad"),
        (lambda: saliency(resnet, x, "cat"), ModelOptionError, "not a class"),
        (lambda: saliency(resnet, x.to(torch.uint8), 1), DataError, "float"),
    ]
    for call, kind, words in bad:
        with pytest.raises(kind) as err:
            call()
        assert words in str(err.value)
        assert count_hooks(resnet) == 0
    for method in METHODS:
        saliency(resnet, x[:1], 0, method, steps=2, samples=2, window=16, stride=16)
    gradcam(resnet, x, 0)
    assert count_hooks(resnet) == 0
    assert all(m.training for m in resnet.modules())
    assert all(p.grad is None for p in resnet.parameters())
    resnet.eval()
    with pytest.raises(ModelOptionError, match="ReLU"):
        saliency(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(1800, 2)),
                 x.float(), 0, "guided")


def test_plot_attribution_writes_a_png(tmp_path, trained):
    model, x, _ = trained
    cam = gradcam(model, x[:2], 1)
    out = plot_attribution(x[:2], cam, tmp_path / "cam.png", titles=["a", "b"],
                           map_label="Grad-CAM")
    assert Image.open(out).size[0] > 300
    sal = saliency(model, x[:2], 1)
    plot_attribution(x[:2], sal, tmp_path / "sal.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.png", "sal.png"]


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from deeparch.train.run import train
    out = tmp_path_factory.mktemp("run") / "digits"
    train("INPUT(8x8x1) -> CONV3-8 -> RELU -> CONV3-8 -> RELU -> POOL2 -> FC-10", "digits", out,
          epochs=2, lr=0.01, log=None, progress=False)
    return out


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_look_gradcam_and_saliency_cli(run, tmp_path, capsys):
    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((20, 16)) * 255).astype(np.uint8),
                    "L").save(img)
    code, out, err = _cli(capsys, "look", "gradcam", run, "--image", img, "-o",
                          tmp_path / "cam.png")
    assert code == 0, err
    assert "resized from 20x16 to 8x8" in out and "Grad-CAM at" in out
    assert (tmp_path / "cam.png").is_file()
    code, out, err = _cli(capsys, "look", "gradcam", run, "--sample", "0", "1", "--target", "3",
                          "--plus", "--json", "-o", tmp_path / "cam2.png")
    assert code == 0, err
    got = json.loads(out)
    assert [r["index"] for r in got["images"]] == [3, 3] and got["layer"]
    for method in ("grad", "occlusion"):
        code, out, err = _cli(capsys, "look", "saliency", run, "--sample", "2", "--method",
                              method, "-o", tmp_path / f"{method}.png")
        assert code == 0, err
        assert f"saliency ({method})" in out


def test_look_cli_bad_input_is_one_sentence_and_writes_nothing(run, tmp_path, capsys):
    out_png = tmp_path / "x.png"
    cases = [
        ("gradcam", run, "--sample", "0", "--layer", "conv9"),
        ("gradcam", run, "--sample", "0", "--target", "11"),
        ("gradcam", run, "--sample", "0", "--target", "cat"),
        ("gradcam", run, "--sample", "99999"),
        ("gradcam", run, "--image", tmp_path / "missing.png"),
        ("gradcam", run),
        ("gradcam", tmp_path, "--sample", "0"),
        ("saliency", run, "--sample", "0", "--method", "guided", "--target", "-1"),
    ]
    for case in cases:
        code, out, err = _cli(capsys, "look", *case, "-o", out_png)
        assert code == 2, (case, out, err)
        assert err.startswith("deeparch: error: ") and "Traceback" not in err
        assert err.count("\n") == 1, err
        assert not out_png.exists() and not list(tmp_path.glob(".*deeparch-tmp"))
