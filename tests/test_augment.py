"""Batched augmentation: Keras meaning, exact simple cases, fill modes, seeds, files."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeparch.data.augment import (IMAGENET_PCA_EIGVALS, IMAGENET_PCA_EIGVECS, PRESETS,
                                   Augment, AugmentParams, affine_matrices,
                                   augment_from_spec, load_augmented, pre_augment,
                                   save_augmented)
from deeparch.errors import DataError, DeeparchError
from deeparch.viz import preview, save_image_grid

SLIDES = PRESETS["slides"]
ALL_GEOMETRY = dict(rotation_range=30, width_shift_range=0.1, height_shift_range=0.1,
                    shear_range=10, zoom_range=0.2, horizontal_flip=True,
                    vertical_flip=True, random_crop=2)


def images(n=4, c=1, h=12, w=10, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8)
    return x.to(dtype)


# ----------------------------------------------------------------- identity and exact cases

def test_identity_when_all_options_off():
    x = images()
    a = Augment()
    assert not a.enabled
    assert a(x) is x
    assert augment_from_spec("").enabled is False
    assert augment_from_spec("none").enabled is False


def test_zero_transform_through_resampling_is_identity():
    x = images(dtype=torch.uint8)
    a = Augment(rotation_range=10, random_crop=1)
    p = AugmentParams(theta=torch.zeros(4), crop=torch.zeros(4, 2, dtype=torch.long))
    assert torch.equal(a.apply(x, p), x)


def test_rotation_by_90_degrees_is_rot90():
    x = images(h=9, w=9)
    a = Augment(rotation_range=90, fill_mode="constant")
    out = a.apply(x, AugmentParams(theta=torch.full((4,), 90.0)))
    # Keras' matrix maps output to input: +90 degrees turns the array clockwise
    torch.testing.assert_close(out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5, rtol=0)
    out = a.apply(x, AugmentParams(theta=torch.full((4,), -90.0)))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_whole_pixel_shift_is_an_exact_shift(interpolation):
    x = images(dtype=torch.float32)
    a = Augment(width_shift_range=3, height_shift_range=3, fill_mode="constant",
                interpolation=interpolation)
    p = AugmentParams(tx=torch.full((4,), 2.0), ty=torch.full((4,), -1.0))
    out = a.apply(x, p)
    # output[r, c] = input[r + tx, c + ty] (scipy/Keras convention)
    expected = torch.zeros_like(x)
    expected[:, :, :-2, 1:] = x[:, :, 2:, :-1]
    assert torch.equal(out, expected)


def test_random_crop_is_pad_then_crop():
    x = images(dtype=torch.uint8, h=8, w=8)
    a = Augment(random_crop=3, fill_mode="constant")
    p = a.sample(4, 8, 8, generator=torch.Generator().manual_seed(3))
    out = a.apply(x, p)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(4):
        r, c = (p.crop[i] + 3).tolist()
        assert torch.equal(out[i], padded[i, :, r:r + 8, c:c + 8])


def test_hflip_and_vflip_equal_torch_flip():
    x = images(n=64, dtype=torch.uint8)
    a = Augment(horizontal_flip=True, seed=1)
    p = a.sample(64, 12, 10)
    out = a.apply(x, p)
    assert 0 < int(p.hflip.sum()) < 64
    for i in range(64):
        assert torch.equal(out[i], x[i].flip(-1) if p.hflip[i] else x[i])
    v = Augment(vertical_flip=True)
    pv = AugmentParams(vflip=torch.ones(64, dtype=torch.bool))
    assert torch.equal(v.apply(x, pv), x.flip(-2))
    # folded into the affine matrix when another geometric option is on: same result
    both = Augment(horizontal_flip=True, random_crop=1)
    p2 = AugmentParams(hflip=p.hflip, crop=torch.zeros(64, 2, dtype=torch.long))
    assert torch.equal(both.apply(x, p2), out)


# ----------------------------------------------------------------- fill modes at borders

@pytest.mark.parametrize("fill,row", [
    ("constant", [7, 7, 7, 0, 1, 2]),
    ("nearest", [0, 0, 0, 0, 1, 2]),
    ("reflect", [2, 1, 0, 0, 1, 2]),
    ("wrap", [3, 4, 5, 0, 1, 2]),
])
def test_fill_modes_at_the_border(fill, row):
    x = torch.arange(6.0).repeat(1, 1, 6, 1)            # every row is 0 1 2 3 4 5
    a = Augment(width_shift_range=6, fill_mode=fill, cval=7.0)
    out = a.apply(x, AugmentParams(ty=torch.tensor([-3.0])))
    assert out[0, 0, 0].tolist() == row
    assert out[0, 0, 4].tolist() == row


def test_wrap_is_seamless_with_bilinear():
    x = torch.arange(6.0).repeat(1, 1, 6, 1)
    a = Augment(width_shift_range=6.0, fill_mode="wrap")
    out = a.apply(x, AugmentParams(ty=torch.tensor([-0.5])))
    # position -0.5 lies halfway between column 5 (wrapped) and column 0
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor(2.5))


# ----------------------------------------------------------------- seeds, dtypes, devices

def test_same_seed_is_bit_identical_and_different_seed_differs():
    x = images(n=16, c=3, h=16, w=16)
    opts = dict(ALL_GEOMETRY, channel_shift_range=0.1, cutout=4)
    a1, a2, a3 = Augment(**opts, seed=5), Augment(**opts, seed=5), Augment(**opts, seed=6)
    first = a1(x)
    assert torch.equal(first, a2(x))
    assert not torch.equal(first, a3(x))
    assert not torch.equal(first, a1(x))                # online: new transforms every call
    a1.manual_seed(5)
    assert torch.equal(first, a1(x))
    g = torch.Generator().manual_seed(9)
    assert torch.equal(a3(x, generator=g), a1(x, generator=torch.Generator().manual_seed(9)))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_keeps_dtype_shape_and_device(dtype, channels):
    x = images(n=5, c=channels, dtype=dtype)
    a = Augment(**SLIDES, horizontal_flip=True, channel_shift_range=10 if dtype ==
                torch.uint8 else 0.05, cutout=3, seed=0)
    out = a(x)
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    assert not torch.equal(out, x)
    single = a(x[0])
    assert single.shape == x[0].shape


def test_uint8_and_float_give_the_same_picture():
    xf = images(n=8, c=3, dtype=torch.float32)
    xu = (xf * 255).round().to(torch.uint8)
    a = Augment(**SLIDES)
    p = a.sample(8, 12, 10, generator=torch.Generator().manual_seed(0))
    out_u = a.apply(xu, p).float()
    out_f = a.apply(xu.float(), p).round()
    assert (out_u - out_f).abs().max() <= 1


def test_slides_preset_changes_images_but_keeps_them_plausible():
    x = images(n=32, c=1, h=28, w=28)
    out = augment_from_spec("slides", seed=0)(x)
    d = (out - x).abs().mean().item()
    assert 0.01 < d < 0.5
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


# ----------------------------------------------------------------- colour and cutout

def test_channel_shift_keras_meaning():
    x = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    a = Augment(channel_shift_range=15)
    out = a.apply(x, AugmentParams(channel_shift=torch.tensor([[15.0]])))
    # added to every pixel, clipped to the image's own min..max
    assert out.flatten().tolist() == [25.0, 35.0, 40.0, 40.0]
    per = Augment(channel_shift_range=5, channel_shift_per_channel=True, seed=0)
    p = per.sample(2, 4, 4, channels=3)
    assert p.channel_shift.shape == (2, 3)


def test_pca_color_changes_colour_not_geometry():
    x = images(n=6, c=3, h=8, w=8, dtype=torch.float64)
    a = Augment(pca_color=0.1, seed=0).fit(x)
    vals, vecs = a.pca_eigvals, a.pca_eigvecs
    assert vals.shape == (3,) and vecs.shape == (3, 3)
    assert bool(torch.all(vals[:-1] >= vals[1:]))
    out = a(x)
    delta = out - x
    assert delta.abs().max() > 0
    # one RGB offset per image: the same at every pixel, so the geometry is untouched
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta))
    # the offset lies in the span of the eigenvectors weighted by alpha * lambda
    p = a.sample(6, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    off = (a.apply(x, p) - x)[:, :, 0, 0]
    expect = (p.pca_alpha * vals.double()) @ vecs.double().T
    torch.testing.assert_close(off, expect, rtol=1e-5, atol=1e-6)


def test_pca_color_with_imagenet_constants_and_uint8():
    x = images(n=4, c=3, dtype=torch.uint8)
    a = Augment(pca_color=True, pca_eigen=(IMAGENET_PCA_EIGVALS, IMAGENET_PCA_EIGVECS), seed=0)
    out = a(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_pca_color_needs_fit():
    with pytest.raises(DataError, match="fit"):
        Augment(pca_color=0.1, seed=0)(images(c=3))
    a = Augment(pca_color=0.1, seed=0).fit(images(c=3))
    with pytest.raises(DataError, match="channels"):
        a(images(c=1))


def test_cutout_zeroes_the_right_pixels():
    x = torch.ones(8, 2, 16, 16)
    a = Augment(cutout=5, cutout_count=2)
    p = a.sample(8, 16, 16, 2, generator=torch.Generator().manual_seed(0))
    out = a.apply(x, p)
    for i in range(8):
        mask = torch.zeros(16, 16, dtype=torch.bool)
        for r, c in p.cutout[i].tolist():
            mask[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = True
        assert torch.equal(out[i, 0] == 0, mask)
        assert torch.equal(out[i, 1] == 0, mask)
    # a square fully inside the image zeroes exactly size * size pixels per channel
    inside = AugmentParams(cutout=torch.tensor([[[8, 8]]]))
    assert int((a.apply(x[:1], inside) == 0).sum()) == 2 * 25


# ----------------------------------------------------------------- same meaning as Keras/scipy

def test_matches_scipy_affine_transform_like_keras():
    ndi = pytest.importorskip("scipy.ndimage")
    x = images(n=6, c=1, h=28, w=28, dtype=torch.float64)
    a = Augment(rotation_range=20, width_shift_range=0.1, height_shift_range=0.1)
    p = a.sample(6, 28, 28, generator=torch.Generator().manual_seed(2))
    m = affine_matrices(p, 28, 28).numpy()
    ours = a.apply(x, p)[:, 0].numpy()
    # Keras: scipy.ndimage.affine_transform(channel, m[:2,:2], m[:2,2], order=1, mode=fill)
    ref = np.stack([ndi.affine_transform(x[i, 0].numpy(), m[i, :2, :2], m[i, :2, 2],
                                         order=1, mode="nearest") for i in range(6)])
    assert np.abs(ours - ref).mean() < 1e-6
    # and the matrix is Keras' own composition rotation @ shift about the centre
    t = math.radians(float(p.theta[0]))
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, float(p.tx[0])], [0, 1, float(p.ty[0])], [0, 0, 1]])
    cen = np.array([[1, 0, 13.5], [0, 1, 13.5], [0, 0, 1]])
    np.testing.assert_allclose(m[0], cen @ rot @ shift @ np.linalg.inv(cen), atol=1e-12)


@pytest.mark.parametrize("fill,mode", [("reflect", "reflect"), ("wrap", "grid-wrap"),
                                       ("constant", "grid-constant")])
def test_every_geometric_option_and_fill_mode_matches_scipy(fill, mode):
    ndi = pytest.importorskip("scipy.ndimage")
    x = images(n=4, c=1, h=20, w=16, dtype=torch.float64)
    a = Augment(**ALL_GEOMETRY, fill_mode=fill, cval=0.3)
    p = a.sample(4, 20, 16, generator=torch.Generator().manual_seed(4))
    m = affine_matrices(p, 20, 16).numpy()
    ours = a.apply(x, p)[:, 0].numpy()
    ref = np.stack([ndi.affine_transform(x[i, 0].numpy(), m[i, :2, :2], m[i, :2, 2],
                                         order=1, mode=mode, cval=0.3) for i in range(4)])
    assert np.abs(ours - ref).max() < 1e-9


# ----------------------------------------------------------------- options and specs

@pytest.mark.parametrize("kwargs,name", [
    (dict(rotation_range=-1), "rotation_range"),
    (dict(width_shift_range="0.1"), "width_shift_range"),
    (dict(shear_range=float("nan")), "shear_range"),
    (dict(zoom_range=1.5), "zoom_range"),
    (dict(zoom_range=(1.2, 0.8)), "zoom_range"),
    (dict(fill_mode="mirror"), "fill_mode"),
    (dict(interpolation="bicubic"), "interpolation"),
    (dict(random_crop=2.5), "random_crop"),
    (dict(horizontal_flip=1), "horizontal_flip"),
    (dict(cutout=-3), "cutout"),
    (dict(cutout_count=0), "cutout_count"),
    (dict(pca_color=-0.1), "pca_color"),
])
def test_bad_options_raise_data_error(kwargs, name):
    with pytest.raises(DataError, match=name):
        Augment(**kwargs)


def test_bad_inputs_raise_data_error():
    a = Augment(rotation_range=5)
    with pytest.raises(DataError):
        a(torch.zeros(2, 2))
    with pytest.raises(DataError):
        a(torch.zeros(1, 1, 4, 4, dtype=torch.int32))


def test_spec_parsing():
    a = augment_from_spec("rotation=8,shift=0.08,shear=0.3,zoom=0.08,hflip")
    assert a.options() == dict(rotation_range=8.0, width_shift_range=0.08,
                               height_shift_range=0.08, shear_range=0.3,
                               zoom_range=[0.92, 1.08], horizontal_flip=True)
    keras = augment_from_spec("rotation_range=8,width_shift_range=0.08,shear_range=0.3,"
                              "height_shift_range=0.08,zoom_range=0.08,horizontal_flip=true")
    assert keras.options() == a.options()
    slides = augment_from_spec("slides")
    assert slides.options() == Augment(**SLIDES).options()
    assert augment_from_spec("slides,hflip").horizontal_flip
    b = augment_from_spec("crop=4,fill=constant,zoom=0.9:1.1,pca,cutout=8,color_shift=0.1")
    assert b.random_crop == 4 and b.fill_mode == "constant" and b.zoom_range == (0.9, 1.1)
    assert b.pca_color == 0.1 and b.cutout == 8 and b.channel_shift_per_channel
    assert augment_from_spec("shift=3")._wshift_int   # int: whole pixels, as Keras


@pytest.mark.parametrize("spec,word", [
    ("rotashun=8", "rotashun"), ("rotation=abc", "rotation_range"),
    ("fill=mirror", "fill_mode"), ("hflip=maybe", "horizontal_flip"), ("zoom", "zoom_range"),
])
def test_bad_specs_raise_data_error_naming_the_key(spec, word):
    with pytest.raises(DataError, match=word) as info:
        augment_from_spec(spec)
    assert isinstance(info.value, DeeparchError)
    if word == "rotashun":
        assert "rotation" in str(info.value) and "slides" in str(info.value)


@pytest.mark.parametrize("spec,words", [
    ("rotation=nan", "rotation_range=nan"), ("rotation=inf", "rotation_range=inf"),
    ("rotation=-5", "rotation_range=-5"), ("rotation=1" + "0" * 400, "rotation_range=1000"),
    ("rotation=" + "9" * 5000, "rotation_range=inf"), ("shift=-0.1", "width_shift_range"),
    ("shift=1e300", "65,536"), ("shift=" + "9" * 30, "65,536"), ("crop=" + "9" * 30, "65,536"),
    ("cutout=" + "9" * 30, "65,536"), ("cutout=4,cutout_count=1000000000", "from 1 to 100"),
    ("zoom=0.5:1e300", "zoom_range"), ("zoom=0:1", "zoom_range"), ("pca=1e9", "pca_color"),
    ("cval=1e308", "cval"), ("channel_shift=inf", "channel_shift_range"),
    ("rotation=8,,hflip", "empty item"), ("rotation=8,", "empty item"), (",", "empty item"),
    ("slides,none", "'none'"), ("=3", "unknown augmentation option ''"),
    ("x" * 10_000 + "=1", "unknown augmentation option"),
])
def test_bad_spec_values_are_one_sentence(spec, words):
    with pytest.raises(DataError) as info:
        augment_from_spec(spec)
    msg = str(info.value)
    assert words in msg and "\n" not in msg and len(msg) < 700


def test_spec_whitespace_and_none_are_the_identity_and_seeds_are_checked():
    assert not augment_from_spec("  ").enabled and not augment_from_spec(" None ").enabled
    for bad in (-1, 2 ** 64, 10 ** 30, 1.5, True):
        with pytest.raises(DataError, match="seed"):
            augment_from_spec("hflip", seed=bad)
    assert augment_from_spec("hflip", seed=2 ** 64 - 1).seed == 2 ** 64 - 1


SPEC_KEYS = ["rotation", "shift", "wshift", "hshift", "shear", "zoom", "hflip", "vflip", "fill",
             "interp", "crop", "channel_shift", "color_shift", "pca", "cutout", "cutout_count",
             "cval", "slides", "cifar", "none", "bogus", ""]
SPEC_VALUES = ["", "0", "1", "3", "0.5", "-1", "1e9", "nan", "inf", "99999999999999999999",
               "0.9:1.1", ":", "constant", "wrap", "true", "maybe"]


@settings(deadline=None, max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(SPEC_KEYS), st.sampled_from(SPEC_VALUES),
                          st.booleans()), max_size=4), st.text(max_size=20))
def test_any_spec_gives_an_augment_or_a_data_error(items, junk):
    """Whatever the spec, a DataError or a module that augments a small batch, in bounded
    memory and time (pca needs fit(): DataError too)."""
    spec = ",".join(f"{k}={v}" if eq else k for k, v, eq in items)
    for text in (spec, spec + junk):
        try:
            aug = augment_from_spec(text, seed=0)
            out = aug(torch.rand(2, 3, 8, 8))
        except DataError:
            continue
        assert out.shape == (2, 3, 8, 8)


# ----------------------------------------------------------------- pre-augmentation

def test_pre_augment_in_memory_and_on_disk(tmp_path):
    x = images(n=10, c=1, dtype=torch.uint8)
    y = torch.arange(10)
    a = Augment(**SLIDES, horizontal_flip=True)
    path = tmp_path / "aug.npz"
    big_x, big_y = pre_augment(x, y, a, times=3, seed=0, batch_size=4, path=path)
    assert big_x.shape == (30, 1, 12, 10) and big_x.dtype == torch.uint8
    assert torch.equal(big_y, y.repeat(3))
    assert torch.equal(big_x[:10], x)
    assert not torch.equal(big_x[10:20], x) and not torch.equal(big_x[10:20], big_x[20:])
    again_x, _ = pre_augment(x, y, a, times=3, seed=0)
    assert torch.equal(again_x, big_x)                   # batch size does not matter
    lx, ly = load_augmented(path)
    assert torch.equal(lx, big_x) and torch.equal(ly, big_y)
    assert [p.name for p in tmp_path.iterdir()] == ["aug.npz"]   # no temp file left
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_augmented(tmp_path / "bad.npz")
    with pytest.raises(DataError):
        pre_augment(x, y[:3], a, times=2)
    save_augmented(tmp_path / "nolabels.npz", x)
    assert load_augmented(tmp_path / "nolabels.npz")[1] is None


# ----------------------------------------------------------------- pictures

def test_image_grid_and_preview_are_valid_pngs(tmp_path):
    from PIL import Image

    x = images(n=5, c=3, h=16, w=16)
    out = save_image_grid(x, tmp_path / "grid.png", nrow=3, titles=list("abcde"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    p = preview(Augment(**SLIDES, horizontal_flip=True, seed=0), images(n=6, c=1, h=28, w=28),
                tmp_path / "sub" / "preview.png", n=3, samples=4, seed=1)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] > 0
    assert sorted(q.name for q in (tmp_path / "sub").iterdir()) == ["preview.png"]
    a = tmp_path / "p1.png"
    preview(Augment(**SLIDES), images(n=2), a, n=2, samples=2, seed=3)
    b = tmp_path / "p2.png"
    preview(Augment(**SLIDES), images(n=2), b, n=2, samples=2, seed=3)
    assert a.read_bytes() == b.read_bytes()              # seeded preview is reproducible
