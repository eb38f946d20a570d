"""Splits, subsets and per-channel statistics of an in-memory dataset.

Every function takes a seed and is deterministic for it (``torch.Generator`` on the
CPU). Stratified choices keep each class's share: the quota of every class is its
exact share rounded down, and the few samples left over go to the classes with the
largest remainders (ties broken by the seed), so the total is exactly what was asked.
The chosen indices are returned in their original order.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .sources import ArrayDataset


def stratified_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn without replacement, each class in proportion to its size."""
    labels = torch.as_tensor(labels).long()
    total = len(labels)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts * n // total
    remainder = counts * n % total
    left = n - int(quota.sum())
    if left:
        tiebreak = torch.rand(len(classes), generator=generator, dtype=torch.float64)
        order = sorted(range(len(classes)), key=lambda i: (-int(remainder[i]), float(tiebreak[i])))
        for i in order[:left]:
            quota[i] += 1
    chosen = []
    for cls, k in zip(classes.tolist(), quota.tolist()):
        members = (labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


def _take(ds: ArrayDataset, index: torch.Tensor) -> ArrayDataset:
    groups = getattr(ds, "groups", None)
    return dataclasses.replace(ds, images=ds.images[index], labels=ds.labels[index],
                               classes=list(ds.classes),
                               groups=None if groups is None else groups[index])


def _pick(ds: ArrayDataset, n: int, seed: int, stratified: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seed))
    groups = getattr(ds, "groups", None)
    if groups is not None:
        return _pick_groups(ds.labels, groups, n, generator, stratified)
    if stratified:
        return stratified_indices(ds.labels, n, generator)
    return torch.randperm(len(ds), generator=generator)[:n].sort().values


def _pick_groups(labels: torch.Tensor, groups: torch.Tensor, n: int,
                 generator: torch.Generator, stratified: bool) -> torch.Tensor:
    """Whole groups (the copies of one original image) holding ``round(n / copies)``
    originals' worth of samples, chosen like single samples (by the label of each group's
    first member), so that every copy of an image lands on the same side of a split."""
    uniq, first, inverse = _groups(groups)
    if len(uniq) < 2:
        raise DataError("the data holds copies of a single original image (one group), so it "
                        "cannot be split without testing on training images.")
    want = max(1, min(len(uniq) - 1, int(round(n * len(uniq) / max(1, len(groups))))))
    group_labels = labels[first]
    if stratified:
        chosen = stratified_indices(group_labels, want, generator)
    else:
        chosen = torch.randperm(len(uniq), generator=generator)[:want].sort().values
    mask = torch.zeros(len(uniq), dtype=torch.bool)
    mask[chosen] = True
    return mask[inverse].nonzero().flatten()


def _groups(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the distinct groups, the index of each one's first member, each sample's group)."""
    uniq, inverse = torch.unique(groups, return_inverse=True)
    first = torch.full((len(uniq),), len(groups), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(groups)), reduce="amin")
    return uniq, first, inverse


def train_val_split(ds: ArrayDataset, val_fraction: float = 0.2, seed: int = 13,
                    stratified: bool = True) -> tuple[ArrayDataset, ArrayDataset]:
    """Split ``ds`` into (train, val); ``val`` holds ``round(len(ds) * val_fraction)`` samples.

    The defaults are the slides' 80/20 split with ``random_state=13``. Deterministic for
    a seed; with ``stratified=True`` every class is split in the same proportion.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be a number strictly between 0 and 1, "
                        f"got {val_fraction!r}; 0.2 keeps one fifth for validation.")
    total = len(ds)
    n_val = math.floor(total * float(val_fraction) + 0.5)
    if n_val < 1 or n_val > total - 1:
        raise DataError(f"dataset {ds.name!r} has {total} samples, too few to split with "
                        f"val_fraction={val_fraction}; use a larger dataset or fraction.")
    val_index = _pick(ds, n_val, seed, stratified)
    keep = torch.ones(total, dtype=torch.bool)
    keep[val_index] = False
    return _take(ds, keep.nonzero().flatten()), _take(ds, val_index)


def subset(ds: ArrayDataset, n: int, seed: int = 0, stratified: bool = True) -> ArrayDataset:
    """``n`` samples of ``ds`` (stratified by label unless told otherwise), in original order.

    A data set with ``groups`` gives whole groups, about ``n`` samples' worth."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"a subset needs a positive whole number of samples, got {n!r}.")
    if n > len(ds):
        raise DataError(f"cannot take {n} samples from dataset {ds.name!r}, which has only "
                        f"{len(ds)}; ask for at most {len(ds)}.")
    return _take(ds, _pick(ds, n, seed, stratified))


def channel_stats(ds: ArrayDataset, batch_size: int = 1024
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of all pixels, in [0, 1] units.

    Computed in float64 over chunks, so it is exact enough for CIFAR-sized data
    without a float copy of the whole dataset. The std is the population std.
    """
    if len(ds) == 0:
        raise DataError(f"dataset {ds.name!r} is empty, so it has no channel statistics.")
    channels = ds.images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(ds), batch_size):
        x = ds.images[start:start + batch_size].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = len(ds) * ds.images.shape[2] * ds.images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (C,H,W or N,C,H,W) -> float32 ``(x / 255 - mean) / std`` per channel."""
    x = images.to(torch.float32).div_(255.0)
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(shape)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(shape)
    if m.shape[0] != x.shape[-3] or s.shape[0] != x.shape[-3]:
        raise DataError(f"normalize got {m.shape[0]} means and {s.shape[0]} stds for images "
                        f"with {x.shape[-3]} channels; give one value per channel.")
    return x.sub_(m).div_(s)


__all__ = ["channel_stats", "normalize", "stratified_indices", "subset", "train_val_split"]
