"""Property tests of the readers: a valid file, randomly mutated (or random bytes), either
loads as what it says or raises a DataError of one line; never another exception, never
a long wait.

Each reader gets a few hundred examples; the whole module runs in about 10-20 s.
"""
from __future__ import annotations

import gzip
import io
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeparch.data import load_dataset, read_idx
from deeparch.data import sources as S
from deeparch.errors import DataError

from . import generators as gen

SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SECONDS = 5.0  # a generous bound on one read of a file of a few KB


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


def _mutate(data: bytes, edits) -> bytes:
    """Apply (kind, position, value) edits: flip, set, insert, delete, truncate."""
    out = bytearray(data)
    for kind, where, value in edits:
        if not out:
            out += bytes([value])
            continue
        i = where % len(out)
        if kind == "flip":
            out[i] ^= 1 << (value % 8)
        elif kind == "set":
            out[i] = value
        elif kind == "insert":
            out[i:i] = bytes([value]) * (1 + value % 4)
        elif kind == "delete":
            del out[i:i + 1 + value % 8]
        else:  # truncate
            del out[i:]
    return bytes(out)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                           st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4)


def _outcome(read):
    """Run ``read``; the result, or None for a DataError; any other exception fails."""
    start = time.perf_counter()
    try:
        result = read()
    except DataError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 500, str(exc)
        result = None
    assert time.perf_counter() - start < SECONDS
    return result


def _check_dataset(ds) -> None:
    assert ds.images.dtype == torch.uint8 and ds.images.dim() == 4
    assert len(ds.images) == len(ds.labels) > 0
    assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < len(ds.classes)


# --------------------------------------------------------------------------- IDX


IDX_DTYPES = [np.uint8, np.int8, np.dtype(">i2"), np.dtype(">i4"), np.dtype(">f4"),
              np.dtype(">f8")]


@st.composite
def idx_files(draw):
    dtype = np.dtype(draw(st.sampled_from(IDX_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    array = np.arange(int(np.prod(shape)), dtype=np.int64).astype(dtype).reshape(shape)
    data = gen.idx_bytes(array)
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
    return array, data


@settings(max_examples=400, **SETTINGS)
@given(idx_files(), st.one_of(st.none(), EDITS))
def test_idx_mutations(work, file, edits):
    array, data = file
    path = work / "x.idx"
    path.write_bytes(data if edits is None else _mutate(data, edits))
    got = _outcome(lambda: read_idx(path))
    if edits is None:
        assert got is not None and got.shape == array.shape
        assert np.array_equal(got, array, equal_nan=True)
    elif got is not None:
        assert isinstance(got, np.ndarray) and got.dtype.isnative


@settings(max_examples=80, **SETTINGS)
@given(st.binary(max_size=300))
def test_idx_random_bytes(work, data):
    path = work / "r.idx"
    path.write_bytes(data)
    _outcome(lambda: read_idx(path))


# --------------------------------------------------------------------------- CSV


@st.composite
def csv_files(draw):
    n = draw(st.integers(1, 6))
    side = draw(st.integers(1, 3))
    channels = draw(st.sampled_from([1, 3]))
    x = gen.make_images(n, (channels, side, side), seed=draw(st.integers(0, 9)))
    y = gen.make_labels(n, draw(st.integers(1, 4)))
    header = draw(st.booleans())
    buffer = io.StringIO()
    if header:
        buffer.write(",".join(["label"] + [f"pixel{i}" for i in range(x[0].size)]) + "\n")
    for label, row in zip(y, x.reshape(n, -1)):
        buffer.write(",".join(map(str, [int(label)] + row.tolist())) + "\n")
    return x, y, buffer.getvalue().encode()


CSV_BYTES = st.sampled_from([ord(c) for c in "0123456789,,\n\r -+.x\"e"] + [0, 0xFF, 0xC3])


@settings(max_examples=400, **SETTINGS)
@given(csv_files(), st.one_of(st.none(), st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
              st.integers(0, 2**16), CSV_BYTES), min_size=1, max_size=4)))
def test_csv_mutations(work, file, edits):
    x, y, data = file
    path = work / "x.csv"
    path.write_bytes(data if edits is None else _mutate(data, edits))
    ds = _outcome(lambda: load_dataset(path))
    if edits is None:
        assert ds is not None
        assert np.array_equal(ds.images.numpy(), x) and np.array_equal(ds.labels.numpy(), y)
    elif ds is not None:
        _check_dataset(ds)


@settings(max_examples=80, **SETTINGS)
@given(st.text(alphabet="0123456789,\n -x", max_size=200))
def test_csv_random_text(work, text):
    path = work / "t.csv"
    path.write_text(text)
    ds = _outcome(lambda: load_dataset(path))
    if ds is not None:
        _check_dataset(ds)


# --------------------------------------------------------------------------- CIFAR pickles


@st.composite
def cifar_pickles(draw):
    n = draw(st.integers(1, 3))
    x = gen.make_images(n, (3, 32, 32), seed=draw(st.integers(0, 9)))
    y = gen.make_labels(n, 10)
    style = draw(st.sampled_from(["py2", "py3-2", "py3"]))
    return x, y, gen.cifar_pickle(gen._batch(x, y, "labels", style), style)


def _structure_edits(data: bytes):
    """Edits that mostly hit the opcodes (the head and tail), not the pixel string."""
    head = st.integers(0, 120)
    tail = st.integers(len(data) - 400, len(data) - 1)
    return st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                              st.one_of(head, tail), st.integers(0, 255)),
                    min_size=1, max_size=3)


@settings(max_examples=400, **SETTINGS)
@given(st.data())
def test_cifar_pickle_mutations(work, data):
    x, y, content = data.draw(cifar_pickles())
    edits = data.draw(st.one_of(st.none(), _structure_edits(content)))
    path = work / "test_batch"
    path.write_bytes(content if edits is None else _mutate(content, edits))
    got = _outcome(lambda: S.read_cifar_batch(path))
    if edits is None:
        assert got is not None and np.array_equal(got[0], x) and np.array_equal(got[1], y)
    elif got is not None:
        images, labels = got
        assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
        assert len(images) == len(labels) and labels.dtype == np.int64


@settings(max_examples=80, **SETTINGS)
@given(st.binary(max_size=200).map(lambda b: b"\x80\x02" + b))
def test_cifar_pickle_random_opcodes(work, content):
    path = work / "r_batch"
    path.write_bytes(content)
    _outcome(lambda: S.read_cifar_batch(path))


# --------------------------------------------------------------------------- .npz


@st.composite
def npz_files(draw):
    n = draw(st.integers(1, 4))
    x = gen.make_images(n, (draw(st.sampled_from([1, 3])), 3, 3), seed=draw(st.integers(0, 9)))
    y = gen.make_labels(n, 2)
    buffer = io.BytesIO()
    arrays = {"images": x, "labels": y}
    if draw(st.booleans()):
        arrays["classes"] = np.array(["a", "b"])
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **arrays)
    return x, y, buffer.getvalue()


@settings(max_examples=400, **SETTINGS)
@given(npz_files(), st.one_of(st.none(), EDITS))
def test_npz_mutations(work, file, edits):
    x, y, data = file
    path = work / "x.npz"
    path.write_bytes(data if edits is None else _mutate(data, edits))
    ds = _outcome(lambda: load_dataset(path))
    if edits is None:
        assert ds is not None
        assert np.array_equal(ds.images.numpy(), x) and np.array_equal(ds.labels.numpy(), y)
    elif ds is not None:
        _check_dataset(ds)


@settings(max_examples=60, **SETTINGS)
@given(st.binary(max_size=300).map(lambda b: b"PK\x03\x04" + b))
def test_npz_random_bytes(work, data):
    path = work / "r.npz"
    path.write_bytes(data)
    _outcome(lambda: load_dataset(path))


# --------------------------------------------------------------------------- images


@st.composite
def png_files(draw):
    depth16 = draw(st.booleans())
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    color = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    top = 65536 if depth16 else 256
    shape = (h, w, 3) if color else (h, w)
    pixels = rng.integers(0, top, size=shape).astype(np.uint16 if depth16 else np.uint8)
    return pixels, gen.png_bytes(pixels)


@settings(max_examples=150, **SETTINGS)
@given(png_files(), st.one_of(st.none(), EDITS))
def test_image_folder_mutations(work, file, edits):
    pixels, data = file
    folder = work / "imgs"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "x.png").write_bytes(data if edits is None or name == "b"
                                              else _mutate(data, edits))
    ds = _outcome(lambda: load_dataset(folder, image_size=4))
    if edits is None:
        assert ds is not None and ds.input_size[1:] == (4, 4)
    elif ds is not None:
        _check_dataset(ds)


@st.composite
def small_pickles(draw):
    """Small pickles where nearly every byte is structure: meta files, tiny arrays."""
    protocol = draw(st.integers(0, 5))
    names = draw(st.lists(st.text(max_size=4), max_size=3))
    obj = {"label_names": names, "num_vis": draw(st.integers(-5, 3072)),
           "data": (np.arange(draw(st.integers(0, 6))) % 2).astype(draw(st.sampled_from(
               ["u1", ">i2", "<f4", "?"]))), "labels": [0] * draw(st.integers(0, 3))}
    return pickle.dumps(obj, protocol)


@settings(max_examples=400, **SETTINGS)
@given(small_pickles(), st.one_of(st.none(), EDITS))
def test_small_pickle_mutations(work, content, edits):
    path = work / "meta"
    path.write_bytes(content if edits is None else _mutate(content, edits))
    got = _outcome(lambda: S.read_cifar_pickle(path))
    if edits is None:
        assert got is not None and isinstance(got["data"], np.ndarray)
    elif got is not None:
        assert isinstance(got, dict) and all(isinstance(k, str) for k in got)
