"""Datasets: sources, download + cache, splits and normalisation.

Everything is loaded into memory as uint8 (:class:`ArrayDataset`); the trainer
normalises batches on the fly. See :mod:`deeparch.data.sources` for the formats.
"""
from .augment import Augment, augment_from_spec, pre_augment
from .download import SOURCES, cache_dir, dataset_dir, download_file, extract_archive, fetch
from .sources import (
    DATASETS,
    ArrayDataset,
    load_dataset,
    read_cifar_batch,
    read_cifar_binary,
    read_csv,
    read_idx,
    read_image_folder,
    resize_images,
)
from .split import channel_stats, normalize, subset, train_val_split

__all__ = [
    "Augment", "augment_from_spec", "pre_augment", "ArrayDataset", "DATASETS", "SOURCES", "cache_dir", "channel_stats", "dataset_dir",
    "download_file", "extract_archive", "fetch", "load_dataset", "normalize",
    "read_cifar_batch", "read_cifar_binary", "read_csv", "read_idx", "read_image_folder",
    "resize_images", "subset", "train_val_split",
]
