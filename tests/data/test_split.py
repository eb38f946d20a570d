"""Splits, subsets and channel statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeparch.data import ArrayDataset, channel_stats, normalize, subset, train_val_split
from deeparch.data.split import stratified_indices
from deeparch.errors import DataError

from . import generators as gen


def make_ds(counts=(50, 30, 20), shape=(1, 4, 4), seed=0) -> ArrayDataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    np.random.default_rng(seed).shuffle(labels)
    images = gen.make_images(len(labels), shape, seed)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256  # tag each sample
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels),
                        [f"c{i}" for i in range(len(counts))], "toy")


def test_split_defaults_are_80_20_stratified_and_deterministic():
    ds = make_ds()
    train, val = train_val_split(ds)
    assert (len(train), len(val)) == (80, 20)
    assert torch.bincount(val.labels).tolist() == [10, 6, 4]
    assert torch.bincount(train.labels).tolist() == [40, 24, 16]
    again_train, again_val = train_val_split(ds)
    assert torch.equal(again_val.images, val.images)
    assert torch.equal(again_train.labels, train.labels)
    other_train, _ = train_val_split(ds, seed=14)
    assert not torch.equal(other_train.images, train.images)
    assert train.classes == ds.classes and train.name == ds.name


def test_split_is_a_partition_in_original_order():
    ds = make_ds()
    train, val = train_val_split(ds, val_fraction=0.3, seed=3)
    tags = sorted(train.images[:, 0, 0, 0].tolist() + val.images[:, 0, 0, 0].tolist())
    assert tags == list(range(len(ds)))
    assert train.images[:, 0, 0, 0].tolist() == sorted(train.images[:, 0, 0, 0].tolist())


def test_unstratified_split():
    ds = make_ds()
    train, val = train_val_split(ds, val_fraction=0.25, seed=1, stratified=False)
    assert (len(train), len(val)) == (75, 25)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.2", True])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(DataError, match="between 0 and 1"):
        train_val_split(make_ds(), val_fraction=fraction)


def test_split_too_small():
    with pytest.raises(DataError, match="too few"):
        train_val_split(make_ds(counts=(1, 1)), val_fraction=0.1)


def test_subset():
    ds = make_ds()
    small = subset(ds, 10, seed=5)
    assert len(small) == 10 and torch.bincount(small.labels).tolist() == [5, 3, 2]
    assert torch.equal(subset(ds, 10, seed=5).images, small.images)
    assert len(subset(ds, 100)) == 100
    with pytest.raises(DataError, match="only 100"):
        subset(ds, 101)
    with pytest.raises(DataError, match="positive"):
        subset(ds, 0)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), data=st.data())
def test_stratified_indices_property(counts, data):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    n = data.draw(st.integers(0, len(labels)))
    index = stratified_indices(labels, n, torch.Generator().manual_seed(1))
    assert len(index) == n and len(set(index.tolist())) == n
    chosen = torch.bincount(labels[index], minlength=len(counts))
    for c, total in enumerate(counts):
        assert abs(chosen[c].item() - total * n / len(labels)) < 1 + 1e-9


def test_channel_stats_matches_numpy():
    ds = make_ds(shape=(3, 5, 6))
    mean, std = channel_stats(ds, batch_size=7)
    x = ds.images.numpy().astype(np.float64) / 255
    assert np.allclose(mean, x.mean(axis=(0, 2, 3)), atol=1e-12)
    assert np.allclose(std, x.std(axis=(0, 2, 3)), atol=1e-12)
    assert len(mean) == 3 and all(isinstance(v, float) for v in mean)


def test_normalize():
    ds = make_ds(shape=(3, 5, 6))
    mean, std = channel_stats(ds)
    x = normalize(ds.images, mean, std)
    assert x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert normalize(ds.images[0], mean, std).shape == (3, 5, 6)
    with pytest.raises(DataError, match="one value per channel"):
        normalize(ds.images, (0.5,), (0.5, 0.5))


def test_groups_stay_on_one_side_of_every_split():
    # 40 originals x 3 copies (copy-major, as augment --save --expand 3 writes them)
    n, copies = 40, 3
    labels = (torch.arange(n) % 4).repeat(copies)
    groups = torch.arange(n).repeat(copies)
    images = torch.randint(0, 255, (n * copies, 1, 4, 4), dtype=torch.uint8)
    ds = ArrayDataset(images, labels, ["a", "b", "c", "d"], "expanded", groups=groups)
    train, val = train_val_split(ds, 0.2, seed=3)
    assert set(train.groups.tolist()).isdisjoint(val.groups.tolist())
    assert len(train) + len(val) == len(ds) and len(val) == 8 * copies
    assert torch.bincount(val.labels, minlength=4).tolist() == [6, 6, 6, 6]   # stratified
    part = subset(ds, 30, seed=1)
    assert len(part) == 30 and torch.bincount(part.groups).max() <= copies
    assert all(torch.bincount(part.groups, minlength=n)[g] == copies for g in part.groups)
    with pytest.raises(DataError, match="single original image"):
        train_val_split(ArrayDataset(images[:3], labels[:3] * 0, ["a"], "one",
                                     groups=torch.zeros(3, dtype=torch.int64)), 0.5)
