"""Readers of deeparch.data: exact round trips of generated files, and clear errors."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from deeparch.data import ArrayDataset, load_dataset, read_idx
from deeparch.data.sources import FASHION_MNIST_CLASSES, CIFAR10_CLASSES
from deeparch.errors import DataError, DownloadError

from . import generators as gen


def assert_same(ds: ArrayDataset, images: np.ndarray, labels: np.ndarray) -> None:
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert ds.images.shape == images.shape
    assert np.array_equal(ds.images.numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)


# --------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_basics():
    x = gen.make_images(5, (3, 4, 6))
    ds = ArrayDataset(torch.from_numpy(x), torch.tensor([0, 1, 2, 1, 0]), ["a", "b", "c"], "toy")
    assert len(ds) == 5 and ds.num_classes == 3 and ds.input_size == (3, 4, 6)
    image, label = ds[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 4, 6) and label == 1
    assert torch.equal(image, torch.from_numpy(x[3]))
    assert "toy" in repr(ds) and "samples=5" in repr(ds)


@pytest.mark.parametrize("images, labels, classes, needle", [
    (torch.zeros(2, 1, 3, 3), [0, 1], ["a", "b"], "uint8"),
    (torch.zeros(2, 3, 3, dtype=torch.uint8), [0, 1], ["a", "b"], "N x C x H x W"),
    (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), [0, 1, 1], ["a", "b"], "3 labels"),
    (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), [0, 2], ["a", "b"], "0..1"),
])
def test_array_dataset_rejects_inconsistent_data(images, labels, classes, needle):
    with pytest.raises(DataError, match=needle):
        ArrayDataset(images, torch.tensor(labels), classes, "bad")


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip(tmp_path, gz):
    written = gen.write_mnist(tmp_path / "mnist", gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split=split, root=tmp_path)
        assert_same(ds, *written[split])
        assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)]
        assert ds.input_size == (1, 28, 28)


def test_fashion_mnist_names_and_raw_subfolder(tmp_path):
    written = gen.write_mnist(tmp_path / "fashion_mnist" / "raw", size=28)
    ds = load_dataset("fashion_mnist", split="test", root=tmp_path)
    assert_same(ds, *written["test"])
    assert ds.classes == FASHION_MNIST_CLASSES


def test_root_may_hold_the_files_directly(tmp_path):
    written = gen.write_mnist(tmp_path, gz=False)
    assert_same(load_dataset("mnist", root=tmp_path), *written["train"])


def test_idx_directory_given_as_a_path_and_resized(tmp_path):
    written = gen.write_mnist(tmp_path / "any", size=20)
    ds = load_dataset(tmp_path / "any", split="test")
    assert_same(ds, *written["test"])
    big = load_dataset(tmp_path / "any", split="test", image_size=32)
    assert big.input_size == (1, 32, 32) and big.images.dtype == torch.uint8
    assert torch.equal(big.labels, ds.labels)


def test_idx_generic_dtypes(tmp_path):
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4) - 5
    got = read_idx(gen.write_idx(tmp_path / "x.idx", array))
    assert got.dtype == np.int32 and np.array_equal(got, array)


def test_missing_files_name_what_and_where(tmp_path):
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", split="train", root=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert str(tmp_path / "mnist") in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path)


def _mnist_dir(tmp_path, gz=True):
    gen.write_mnist(tmp_path / "mnist", gz=gz, n_train=10, n_test=4)
    suffix = ".gz" if gz else ""
    return (tmp_path / "mnist" / ("train-images-idx3-ubyte" + suffix),
            tmp_path / "mnist" / ("train-labels-idx1-ubyte" + suffix))


def test_truncated_gzip(tmp_path):
    images, _ = _mnist_dir(tmp_path)
    images.write_bytes(images.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is a corrupt or truncated"):
        load_dataset("mnist", root=tmp_path)


def test_corrupt_gzip(tmp_path):
    images, _ = _mnist_dir(tmp_path)
    data = bytearray(images.read_bytes())
    for i in range(20, len(data) - 20, 7):
        data[i] ^= 0x5A
    images.write_bytes(bytes(data))
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", root=tmp_path)


def test_gz_name_without_gzip_content(tmp_path):
    images, _ = _mnist_dir(tmp_path)
    images.write_bytes(gzip.decompress(images.read_bytes()))
    with pytest.raises(DataError, match="not gzip-compressed"):
        load_dataset("mnist", root=tmp_path)


def test_idx_wrong_magic(tmp_path):
    images, _ = _mnist_dir(tmp_path, gz=False)
    images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])
    with pytest.raises(DataError, match="magic number"):
        load_dataset("mnist", root=tmp_path)


def test_idx_truncated_data(tmp_path):
    images, _ = _mnist_dir(tmp_path, gz=False)
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated.*declares"):
        load_dataset("mnist", root=tmp_path)


def test_idx_extra_bytes(tmp_path):
    images, _ = _mnist_dir(tmp_path, gz=False)
    images.write_bytes(images.read_bytes() + b"\0" * 5)
    with pytest.raises(DataError, match="5 bytes more"):
        load_dataset("mnist", root=tmp_path)


def test_more_labels_than_images(tmp_path):
    _, labels = _mnist_dir(tmp_path)
    gen.write_idx(labels, np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match="11 labels.*10 images"):
        load_dataset("mnist", root=tmp_path)


def test_label_out_of_range_for_named_dataset(tmp_path):
    _, labels = _mnist_dir(tmp_path)
    gen.write_idx(labels, np.full(10, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="label 12"):
        load_dataset("mnist", root=tmp_path)


def test_swapped_idx_files(tmp_path):
    images, labels = _mnist_dir(tmp_path)
    images_bytes = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(images_bytes)
    with pytest.raises(DataError, match="label file"):
        load_dataset("mnist", root=tmp_path)


# --------------------------------------------------------------------------- CSV


def test_kaggle_csv_round_trip(tmp_path):
    x, y = gen.make_images(25, (1, 28, 28)), gen.make_labels(25, 10)
    path = gen.write_csv(tmp_path / "fashion-mnist_train.csv", x, y)
    ds = load_dataset(path)
    assert_same(ds, x, y)
    assert ds.name == "fashion-mnist_train" and ds.num_classes == 10


def test_csv_without_header_and_rgb_shape(tmp_path):
    x, y = gen.make_images(7, (3, 4, 4), seed=3), gen.make_labels(7, 3)
    ds = load_dataset(gen.write_csv(tmp_path / "rgb.csv", x, y, header=False))
    assert_same(ds, x, y)
    assert ds.input_size == (3, 4, 4)


def test_named_fashion_mnist_from_kaggle_csv(tmp_path):
    x, y = gen.make_images(12, (1, 28, 28)), gen.make_labels(12, 10)
    gen.write_csv(tmp_path / "fashion_mnist" / "fashion-mnist_test.csv", x, y)
    ds = load_dataset("fashion_mnist", split="test", root=tmp_path)
    assert_same(ds, x, y)
    assert ds.classes == FASHION_MNIST_CLASSES


def test_csv_folder_picks_the_split(tmp_path):
    for split, seed in (("train", 1), ("test", 2)):
        x, y = gen.make_images(6, (1, 5, 5), seed), gen.make_labels(6, 2, seed)
        gen.write_csv(tmp_path / "d" / f"digits_{split}.csv", x, y)
    ds = load_dataset(tmp_path / "d", split="test")
    assert_same(ds, gen.make_images(6, (1, 5, 5), 2), gen.make_labels(6, 2, 2))


def _csv_lines(tmp_path, lines):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_wrong_column_count_names_the_line(tmp_path):
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 5))
    path = _csv_lines(tmp_path, [header, "1,0,0,0,0", "2,3,4,5,6", "0,1,2,3"])
    with pytest.raises(DataError, match=r"line 4 has 4 columns instead of 5"):
        load_dataset(path)


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 5))
    path = _csv_lines(tmp_path, [header, "1,0,0,0,0", "2,3,x7,5,6"])
    with pytest.raises(DataError, match=r"line 3, column 3 \('pixel2'\) holds 'x7'"):
        load_dataset(path)


def test_csv_pixel_out_of_range(tmp_path):
    path = _csv_lines(tmp_path, ["label,a,b,c,d", "1,0,0,0,300"])
    with pytest.raises(DataError, match=r"line 2, column 5 holds 300"):
        load_dataset(path)


def test_csv_not_square(tmp_path):
    path = _csv_lines(tmp_path, ["label,a,b,c,d,e", "1,0,0,0,0,0"])
    with pytest.raises(DataError, match="5 pixel columns"):
        load_dataset(path)


def test_csv_empty_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path / "empty.csv")
    path = _csv_lines(tmp_path, ["label,a,b,c,d"])
    with pytest.raises(DataError, match="no rows"):
        load_dataset(path)


# --------------------------------------------------------------------------- CIFAR python


@pytest.mark.parametrize("style", ["py2", "py3-2", "py3"])
def test_cifar10_python_round_trip(tmp_path, style):
    written = gen.write_cifar10_python(tmp_path / "cifar10", style=style)
    for split in ("train", "test"):
        ds = load_dataset("cifar10", split=split, root=tmp_path)
        assert_same(ds, *written[split])
        assert ds.classes == [f"class{i}" for i in range(10)]  # from batches.meta
        assert ds.input_size == (3, 32, 32)


def test_cifar10_without_meta_uses_builtin_names(tmp_path):
    written = gen.write_cifar10_python(tmp_path, meta=False)
    ds = load_dataset(tmp_path, split="test")  # a folder holding cifar-10-batches-py
    assert_same(ds, *written["test"])
    assert ds.classes == [str(i) for i in range(10)]
    assert load_dataset("cifar10", split="test", root=tmp_path).classes == CIFAR10_CLASSES


def test_cifar100_python_fine_labels(tmp_path):
    written = gen.write_cifar100_python(tmp_path / "cifar100")
    ds = load_dataset("cifar100", root=tmp_path)
    assert_same(ds, *written["train"])
    assert ds.num_classes == 100 and ds.classes[7] == "fine7"


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilOpen:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import builtins
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("evil", [_Evil, _EvilOpen])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, evil):
    marker = tmp_path / "pwned"
    gen.write_cifar10_python(tmp_path / "cifar10", per_batch=2, n_test=2)
    payload = {"data": np.zeros((2, 3072), np.uint8), "labels": [evil(marker), 1]}
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps(payload, 2))
    with pytest.raises(DataError, match="refused.*asks to call"):
        load_dataset("cifar10", split="test", root=tmp_path)
    assert not marker.exists()


GOOD = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}


@pytest.mark.parametrize("content, needle", [
    (pickle.dumps([1, 2, 3]), "is not a CIFAR batch"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), "is not a CIFAR batch"),
    (pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}), "is not a CIFAR batch"),
    (pickle.dumps({**GOOD, "data": np.zeros((2, 3072), object)}), "dtype object is not plain"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1, 2]}), "3 labels for 2"),
    (pickle.dumps(GOOD)[:-40], "not a readable CIFAR pickle"),
])
def test_bad_cifar_batches(tmp_path, content, needle):
    gen.write_cifar10_python(tmp_path / "cifar10", per_batch=2, n_test=2)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    with pytest.raises(DataError, match=needle):
        load_dataset("cifar10", split="test", root=tmp_path)


# --------------------------------------------------------------------------- CIFAR binary


def test_cifar10_binary_round_trip(tmp_path):
    written = gen.write_cifar10_binary(tmp_path / "cifar10")
    for split in ("train", "test"):
        ds = load_dataset("cifar10", split=split, root=tmp_path)
        assert_same(ds, *written[split])
        assert ds.classes == [f"bin{i}" for i in range(10)]


def test_cifar100_binary_round_trip(tmp_path):
    written = gen.write_cifar100_binary(tmp_path / "data")
    ds = load_dataset(tmp_path / "data", split="test")
    assert_same(ds, *written["test"])
    assert ds.num_classes == 100 and ds.classes[99] == "f99"


def test_cifar_binary_bad_size(tmp_path):
    gen.write_cifar10_binary(tmp_path / "cifar10", per_batch=2, n_test=3)
    path = tmp_path / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"test_batch.bin has 9218 bytes.*3073-byte"):
        load_dataset("cifar10", split="test", root=tmp_path)


def test_directory_with_only_one_split(tmp_path):
    gen.write_cifar10_binary(tmp_path / "d")
    (tmp_path / "d" / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="not the test split"):
        load_dataset(tmp_path / "d", split="test")


# --------------------------------------------------------------------------- image folders


def test_image_folder_rgb_round_trip(tmp_path):
    x, y = gen.write_image_folder(tmp_path / "pets", size=(12, 10))
    ds = load_dataset(tmp_path / "pets", image_size=(12, 10))
    assert_same(ds, x, y)
    assert ds.classes == ["cat", "dog", "frog"] and ds.name == "pets"


def test_image_folder_grayscale_keeps_its_own_size(tmp_path):
    # no image_size: the images' own size (this used to be a silent resize to 32x32)
    x, y = gen.write_image_folder(tmp_path / "g", mode="L", size=(20, 14))
    ds = load_dataset(tmp_path / "g")
    assert_same(ds, x, y)
    assert ds.input_size == (1, 20, 14) and ds.notes == []
    small = load_dataset(tmp_path / "g", image_size=8)
    assert small.input_size == (1, 8, 8)
    assert small.notes == ["g: resized 12 of 12 images from 20x14 to 8x8 (image_size)"]


def test_image_folder_mixed_modes_become_rgb(tmp_path):
    from PIL import Image

    x, _ = gen.write_image_folder(tmp_path / "m", classes=("a",), per_class=2, mode="L",
                                  size=(6, 6))
    Image.new("RGB", (6, 6), (10, 20, 30)).save(tmp_path / "m" / "a" / "z.png")
    (tmp_path / "m" / "a" / "notes.txt").write_text("not an image, skipped")
    ds = load_dataset(tmp_path / "m", image_size=6)
    assert ds.input_size == (3, 6, 6) and len(ds) == 3
    assert np.array_equal(ds.images[0].numpy(), np.repeat(x[0], 3, axis=0))
    assert ds.images[2, :, 0, 0].tolist() == [10, 20, 30]


def test_image_folder_jpeg_and_split_subfolders(tmp_path):
    gen.write_image_folder(tmp_path / "ds" / "train", fmt="jpg", size=(16, 16))
    gen.write_image_folder(tmp_path / "ds" / "test", fmt="jpeg", per_class=2, size=(20, 20))
    train = load_dataset(tmp_path / "ds", split="train", image_size=16)
    test = load_dataset(tmp_path / "ds", split="test", image_size=16)
    assert len(train) == 12 and len(test) == 6
    assert train.input_size == test.input_size == (3, 16, 16)


def test_image_folder_missing_split(tmp_path):
    gen.write_image_folder(tmp_path / "ds" / "train", per_class=1)
    with pytest.raises(DataError, match="no test/"):
        load_dataset(tmp_path / "ds", split="test")


def test_image_folder_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(tmp_path / "flat")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(tmp_path / "empty")
    gen.write_image_folder(tmp_path / "corrupt", per_class=2)
    bad = tmp_path / "corrupt" / "dog" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=r"001\.png is not a readable image"):
        load_dataset(tmp_path / "corrupt")


# --------------------------------------------------------------------------- names, digits


def test_digits():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.input_size == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified
    assert torch.equal(load_dataset("digits", split="test").images, test.images)  # fixed


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="neither a known dataset"):
        load_dataset("imagenet_tiny_nope")
    with pytest.raises(DataError, match="split must be"):
        load_dataset("digits", split="val")
    with pytest.raises(DataError, match="image_size"):
        load_dataset("digits", image_size=(0, 3))
