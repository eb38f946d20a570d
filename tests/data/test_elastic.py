"""Elastic (local) warping: against a per-image reference, its invariants, specs, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deeparch.cli import main
from deeparch.data import elastic as E
from deeparch.data.augment import (PRESETS, Augment, AugmentParams, affine_matrices,
                                   augment_from_spec, pre_augment)
from deeparch.errors import DataError


def images(n=3, c=1, h=20, w=17, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8)
    return x.to(dtype)


# ------------------------------------------------------------ per-image reference
def direct_smooth(f: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of one H x W field, written out: every output pixel is the sum
    over every input pixel (zero outside), weights g(dr) g(dc) normalised per axis."""
    r = math.ceil(4 * sigma)
    k = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    g /= g.sum()
    h, w = f.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            s = 0.0
            for a in range(max(0, i - r), min(h, i + r + 1)):
                for b in range(max(0, j - r), min(w, j + r + 1)):
                    s += g[a - i + r] * g[b - j + r] * f[a, b]
            out[i, j] = s
    return out


def bilinear(img: np.ndarray, r: float, c: float, fill: str, cval: float) -> float:
    """The value at (r, c) of one channel, bilinear, outside points by ``fill``."""
    h, w = img.shape

    def at(i: int, j: int) -> float:
        if fill == "constant":
            return img[i, j] if 0 <= i < h and 0 <= j < w else cval
        if fill == "nearest":
            return img[min(max(i, 0), h - 1), min(max(j, 0), w - 1)]
        if fill == "wrap":
            return img[i % h, j % w]
        # reflect: abcddcba|abcd|dcba
        def refl(v, n):
            v = v % (2 * n)
            return v if v < n else 2 * n - 1 - v
        return img[refl(i, h), refl(j, w)]

    r0, c0 = math.floor(r), math.floor(c)
    fr, fc = r - r0, c - c0
    return ((1 - fr) * (1 - fc) * at(r0, c0) + (1 - fr) * fc * at(r0, c0 + 1)
            + fr * (1 - fc) * at(r0 + 1, c0) + fr * fc * at(r0 + 1, c0 + 1))


def reference_warp(x: np.ndarray, field: np.ndarray, alpha: float, sigma: float,
                   m: np.ndarray, fill: str, cval: float) -> np.ndarray:
    """One image at a time, one pixel at a time: out(o) = x(M o + alpha * smooth(u)(o))."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        dr = alpha * direct_smooth(field[i, 0], sigma)
        dc = alpha * direct_smooth(field[i, 1], sigma)
        for ch in range(x.shape[1]):
            for r in range(x.shape[2]):
                for c in range(x.shape[3]):
                    sr = m[i, 0, 0] * r + m[i, 0, 1] * c + m[i, 0, 2] + dr[r, c]
                    sc = m[i, 1, 0] * r + m[i, 1, 1] * c + m[i, 1, 2] + dc[r, c]
                    out[i, ch, r, c] = bilinear(x[i, ch], sr, sc, fill, cval)
    return out


@pytest.mark.parametrize("fill", ["nearest", "constant", "reflect", "wrap"])
@pytest.mark.parametrize("affine", [False, True])
def test_same_field_gives_the_reference_image(fill, affine):
    geo = dict(rotation_range=20, zoom_range=0.1, horizontal_flip=True, random_crop=1) \
        if affine else {}
    a = Augment(elastic=(3.0, 1.5), fill_mode=fill, cval=0.25, **geo)
    x = images(n=2, c=2, h=9, w=7)
    p = a.sample(2, 9, 7, generator=torch.Generator().manual_seed(1))
    assert p.elastic.shape == (2, 2, 9, 7)
    m = affine_matrices(p, 9, 7)
    m = np.tile(np.eye(3), (2, 1, 1)) if m is None else m.numpy()
    ours = a.apply(x, p).numpy()
    ref = reference_warp(x.numpy(), p.elastic.double().numpy(), 3.0, 1.5, m, fill, 0.25)
    assert np.abs(ours - ref).max() < 1e-5          # the field is smoothed in float32
    assert np.abs(ours - x.numpy()).max() > 0.05    # and it did move pixels


def test_matches_scipy_gaussian_filter_and_map_coordinates():
    ndi = pytest.importorskip("scipy.ndimage", reason="scipy is the usual reference")
    a = Augment(elastic=(34.0, 4.0))
    x = images(n=4, h=28, w=28)
    p = a.sample(4, 28, 28, generator=torch.Generator().manual_seed(2))
    ours = a.apply(x, p)[:, 0].numpy()
    rr, cc = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    for i in range(4):
        f = p.elastic[i].double().numpy()
        dr = 34.0 * ndi.gaussian_filter(f[0], 4.0, mode="constant")
        dc = 34.0 * ndi.gaussian_filter(f[1], 4.0, mode="constant")
        np.testing.assert_allclose(a.displacement(p)[i].numpy(), np.stack([dr, dc]),
                                   atol=1e-5)
        ref = ndi.map_coordinates(x[i, 0].numpy(), [rr + dr, cc + dc], order=1,
                                  mode="nearest")
        assert np.abs(ours[i] - ref).max() < 1e-5


def test_smoothing_matrix_is_the_zero_padded_convolution():
    f = torch.rand(5, 11, dtype=torch.float64) * 2 - 1
    for sigma in (0.3, 1.0, 2.5, 40.0):             # 40: the kernel is wider than the image
        got = E.smoothing_matrix(5, sigma) @ f @ E.smoothing_matrix(11, sigma).T
        np.testing.assert_allclose(got.numpy(), direct_smooth(f.numpy(), sigma), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["drawn", "contiguous"])
def test_warped_grid_is_the_base_plus_the_displacement(dtype, layout):
    """The fused grid (three GEMMs, the base added by the last one) against the plain sum:
    the affine base plus each plane's scaled, swapped displacement component."""
    n, h, w = 3, 9, 13
    field = E.random_field(n, h, w, generator=torch.Generator().manual_seed(4)).to(dtype)
    if layout == "contiguous":                      # a user's own (N, 2, H, W) tensor
        field = field.contiguous()
    row = torch.rand(n, 2, dtype=dtype)
    rest = torch.rand(n, 2, w, dtype=dtype)
    scale = (0.3, -1.7)
    got = E.warped_grid(field, 5.0, 1.2, row, rest, scale, cache={})
    assert got.shape == (h, n, 2, w) and got.dtype == dtype
    d = E.elastic_displacement(field.double(), 5.0, 1.2)         # (N, 2, H, W) rows, cols
    i = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    for plane, comp in ((0, 1), (1, 0)):
        want = (row[:, plane].double().view(n, 1, 1) * i + rest[:, plane].double().view(n, 1, w)
                + scale[plane] * d[:, comp])
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(got[:, :, plane, :].permute(1, 0, 2).double().numpy(),
                                   want.numpy(), atol=tol)
    with pytest.raises(DataError, match="2 components"):
        E.warped_grid(field[:, :1], 5.0, 1.2, row, rest)


# ------------------------------------------------------------ invariants
def test_alpha_zero_is_the_identity():
    off = Augment(elastic=(0.0, 4.0))
    x = images(dtype=torch.uint8)
    assert not off.enabled and off(x) is x
    field = E.random_field(3, 20, 17, torch.Generator().manual_seed(0))
    # the full path (grid, one resampling) with a zero displacement: the same pixels
    assert torch.equal(off.apply(x, AugmentParams(elastic=field)), x)
    xf = images()
    torch.testing.assert_close(off.apply(xf, AugmentParams(elastic=field)), xf,
                               atol=1e-6, rtol=0)


def _lag_correlation(d: np.ndarray, lag: int, axis: int) -> float:
    a = np.take(d, range(0, d.shape[axis] - lag), axis=axis).ravel()
    b = np.take(d, range(lag, d.shape[axis]), axis=axis).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_the_field_is_smooth_at_the_stated_sigma(sigma):
    """Away from the border, Gaussian-smoothed white noise of variance 1/3 has variance
    (1/3) (sum g^2)^2 and lag-d correlation sum_k g_k g_{k+d} / sum g^2 along each axis
    (about exp(-d^2 / 4 sigma^2)): both measured on the field against these."""
    a = Augment(elastic=(1.0, sigma))
    size, margin = 160, math.ceil(4 * sigma)
    p = a.sample(6, size, size, generator=torch.Generator().manual_seed(3))
    u = p.elastic.double().numpy()
    assert u.min() >= -1 and u.max() <= 1
    assert abs(u.mean()) < 0.01 and abs(u.var() - 1 / 3) < 0.01
    d = a.displacement(p).double().numpy()[:, :, margin:-margin, margin:-margin]
    g = E.gaussian_kernel(sigma).numpy()
    s2 = float((g ** 2).sum())
    assert abs(d.std() / math.sqrt(s2 ** 2 / 3) - 1) < 0.06
    for lag in (1, round(sigma), round(2 * sigma)):
        expected = float((g[:-lag] * g[lag:]).sum()) / s2
        for axis in (2, 3):
            assert abs(_lag_correlation(d, lag, axis) - expected) < 0.05, (lag, axis)
    # rough at a smaller sigma, smoother at a larger: the correlation at lag 2 orders them
    rough = Augment(elastic=(1.0, 0.5)).displacement(p).numpy()[:, :, 4:-4, 4:-4]
    assert _lag_correlation(rough, 2, 3) < 0.1 < _lag_correlation(d, 2, 3)


def test_random_field_is_chunk_invariant_and_seeded():
    def g():
        return torch.Generator().manual_seed(11)
    whole = E.random_field(8, 5, 3, g())
    gen = g()
    parts = torch.cat([E.random_field(k, 5, 3, gen) for k in (3, 1, 4)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, E.random_field(8, 5, 3, torch.Generator().manual_seed(12)))
    assert whole.dtype == torch.float32 and whole.abs().max() < 1


def test_seeded_deterministic_and_other_draws_unchanged():
    x = images(n=8, h=28, w=28, dtype=torch.uint8)
    a = augment_from_spec("slides,elastic=34:4", seed=5)
    b = augment_from_spec("slides,elastic=34:4", seed=5)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))
    assert not torch.equal(a(x), augment_from_spec("slides,elastic=34:4", seed=6)(x))
    # elastic is drawn last, so adding it leaves the affine draws of a seed as they were
    pe = a.sample(8, 28, 28, generator=torch.Generator().manual_seed(1))
    pp = augment_from_spec("slides").sample(8, 28, 28, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pe.theta, pp.theta) and torch.equal(pe.zy, pp.zy)


def test_torch_threads_do_not_change_the_result():
    x = images(n=32, h=28, w=28, dtype=torch.float32)
    a = augment_from_spec("slides,elastic=34:4")
    before = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(a(x, generator=torch.Generator().manual_seed(0)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


def test_pre_augment_with_elastic_does_not_depend_on_batch_size():
    x = images(n=7, h=12, w=12, dtype=torch.uint8)
    y = torch.arange(7)
    a = Augment(elastic=(8.0, 2.0), rotation_range=5)
    one, _ = pre_augment(x, y, a, 3, seed=4, batch_size=1000)
    small, _ = pre_augment(x, y, a, 3, seed=4, batch_size=3)
    assert torch.equal(one, small)
    assert torch.equal(one[:7], x) and not torch.equal(one[7:14], x)


# ------------------------------------------------------------ specs and errors
def test_spec_syntax():
    assert augment_from_spec("elastic=34:4").elastic == (34.0, 4.0)
    assert augment_from_spec("elastic").elastic == (34.0, 4.0)       # Simard et al.
    assert augment_from_spec("elastic=10").elastic == (10.0, 4.0)
    assert augment_from_spec("warp=2.5:1.5").elastic == (2.5, 1.5)
    a = augment_from_spec("slides,elastic=34:4")
    assert a.options() == {**{k: v for k, v in Augment(**PRESETS["slides"]).options().items()},
                           "elastic": [34.0, 4.0]}
    assert a.geometric and "elastic=[34.0, 4.0]" in repr(a)


@pytest.mark.parametrize("spec", ["elastic=-1:4", "elastic=a:4", "elastic=34:b", "elastic=34:0",
                                  "elastic=34:-2", "elastic=34:", "elastic=nan:4",
                                  "elastic=34:4:5", "elastic=1e9:4", "elastic=34:inf"])
def test_bad_elastic_specs_are_one_sentence(spec):
    with pytest.raises(DataError, match="elastic") as e:
        augment_from_spec(spec)
    msg = str(e.value)
    assert msg.endswith(".") and "\n" not in msg and len(msg) < 300


@pytest.mark.parametrize("value", [(34,), (34, 4, 1), ("34", 4), (34, None), (True, 4),
                                   -1.0, float("inf")])
def test_bad_elastic_options(value):
    with pytest.raises(DataError, match="elastic"):
        Augment(elastic=value)


def test_too_small_images_and_too_large_sigma_are_refused():
    a = Augment(elastic=(5.0, 2.0))
    with pytest.raises(DataError, match="at least 2 x 2"):
        a(torch.zeros(2, 1, 1, 9))
    with pytest.raises(DataError, match="at least 2 x 2"):
        a.apply(torch.zeros(2, 1, 9, 1), AugmentParams(elastic=torch.zeros(2, 2, 9, 1)))
    big = Augment(elastic=(5.0, 1000.0))
    with pytest.raises(DataError, match="sigma=1000 is too large for 8 x 8") as e:
        big(torch.zeros(2, 1, 8, 8))
    assert "at most 7.75" in str(e.value)
    Augment(elastic=(5.0, 7.75))(torch.zeros(2, 1, 8, 8))          # the stated bound works
    with pytest.raises(DataError, match="too large"):
        Augment(elastic=(5.0, 7.76))(torch.zeros(2, 1, 8, 8))
    with pytest.raises(DataError, match="shape"):
        a.apply(torch.zeros(2, 1, 9, 9), AugmentParams(elastic=torch.zeros(2, 2, 8, 9)))
    with pytest.raises(DataError, match="at most 4096 pixels a side"):
        a.check_input(8, 5000)                      # refused before anything is allocated


def test_cli_preview_and_errors(tmp_path, capsys):
    png = tmp_path / "warp.png"
    assert main(["augment", "--data", "digits", "--augment", "elastic=3:1", "--preview",
                 str(png), "--n", "2", "--samples", "3"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    for spec, words in (("elastic=34:100", "too large for 8 x 8"), ("elastic=-3:1", "elastic"),
                        ("elastic=x:1", "number")):
        assert main(["augment", "--data", "digits", "--augment", spec, "--preview",
                     str(tmp_path / "bad.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and err.count("\n") == 0, err
    assert not (tmp_path / "bad.png").exists()


def test_a_stream_refuses_sizes_it_cannot_warp_before_the_first_batch():
    from deeparch.train.speed import BatchStream
    x = torch.zeros(10, 1, 8, 8, dtype=torch.uint8)
    y = torch.zeros(10, dtype=torch.int64)
    with pytest.raises(DataError, match="too large for 8 x 8"):
        BatchStream(x, y, 4, augment=Augment(elastic=(5.0, 1000.0)))
    with pytest.raises(DataError, match="at least 2 x 2"):
        BatchStream(x[:, :, :1], y, 4, augment=Augment(elastic=(5.0, 1.0)))
    assert len(list(BatchStream(x, y, 4, augment=Augment(elastic=(5.0, 1.0))))) == 3
