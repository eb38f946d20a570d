"""Hostile and careless inputs: each must end in one DataError sentence, in bounded memory
and time, and nothing may change the data silently.

The files that would make a careless reader allocate GBs are loaded in a child process
whose address space is capped at 1 GiB above what importing deeparch needs, and whose
peak resident memory is measured: a reader that tried would die, or raise MemoryError,
instead of printing the sentence.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from deeparch.data import ArrayDataset, load_dataset, read_idx
from deeparch.data import sources as S
from deeparch.errors import DataError

from . import generators as gen

GiB = 1 << 30


def one_sentence(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# --------------------------------------------------------------------------- under a memory cap

_CHILD = textwrap.dedent(r"""
    import json, os, re, resource, sys
    import deeparch.data.sources as S
    from deeparch.data import load_dataset
    from deeparch.errors import DataError

    def status(key):
        text = open("/proc/self/status").read()
        return int(re.search(key + r":\s+(\d+)", text).group(1)) * 1024

    cases = json.loads(sys.argv[1])
    cap = status("VmSize") + int(sys.argv[2])
    results = {}
    for name, code in cases.items():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset the peak-RSS mark to what the child has now
            except OSError:
                pass
            start = status("VmRSS")
            try:
                exec(code, {"S": S, "load_dataset": load_dataset})
                out = {"outcome": "loaded"}
            except DataError as exc:
                out = {"outcome": "DataError", "message": str(exc)}
            except BaseException as exc:
                out = {"outcome": type(exc).__name__, "message": str(exc)[:300]}
            out["peak_mb"] = (status("VmHWM") - start) / 2**20
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        chunks = []
        while True:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
        os.close(r)
        _, code_ = os.waitpid(pid, 0)
        raw = b"".join(chunks)
        results[name] = json.loads(raw) if raw else {"outcome": f"died (wait status {code_})"}
    print(json.dumps(results))
""")


def _hostile(tmp: Path) -> dict[str, tuple[str, str, float]]:
    """name -> (code run in the child, a phrase its DataError must say, peak MB allowed)."""
    cases = {}

    # IDX: a gzip file whose header declares 10 small images, then 3 GiB of zeros.
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28)
    (tmp / "bomb-idx3-ubyte.gz").write_bytes(gen.deflate_zeros(header, 3 * GiB, wbits=31))
    cases["gzip_bomb"] = (f"S.read_idx({str(tmp / 'bomb-idx3-ubyte.gz')!r})",
                          "beyond what its header declares", 64)
    # IDX: header and data agree on 2 GiB, from a 2 MB file: refused before decompressing.
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2048, 1024, 1024)
    (tmp / "agreed-idx3-ubyte.gz").write_bytes(gen.deflate_zeros(header, 2 * GiB, wbits=31))
    cases["gzip_bomb_consistent"] = (f"S.read_idx({str(tmp / 'agreed-idx3-ubyte.gz')!r})",
                                     "decompression bomb and was not decompressed", 64)

    # CIFAR: _reconstruct(ndarray, (400M,), 'O'): numpy would allocate (and zero) 3.2 GB.
    (tmp / "reconstruct").write_bytes(gen.pickle_reconstruct((400_000_000,), b"O"))
    cases["pickle_huge_array"] = (f"S.read_cifar_batch({str(tmp / 'reconstruct')!r})",
                                  "carries no data", 64)
    # CIFAR: a memo index of 2**31: CPython's unpickler would size its memo table by it.
    (tmp / "memo").write_bytes(gen.pickle_ops(b"N", b"r" + struct.pack("<I", 2**31)))
    cases["pickle_memo_index"] = (f"S.read_cifar_batch({str(tmp / 'memo')!r})",
                                  "memo index 2,147,483,648", 64)
    # CIFAR: one 1 MB string re-encoded 3000 times through memo references: 3 GB.
    big = b"x" * 2**20
    amplify = (b"\x80\x02c_codecs\nencode\nq\x00X" + struct.pack("<I", len(big)) + big +
               b"q\x01(" + b"h\x00h\x01U\x06latin1\x86R" * 3000 + b"l.")
    (tmp / "amplify").write_bytes(amplify)
    cases["pickle_amplify"] = (f"S.read_cifar_batch({str(tmp / 'amplify')!r})",
                               "builds more data than the file holds", 64)

    # npz: images.npy declares 3 GiB, deflated into 3 MB (a zip bomb).
    npy = gen.npy_header((3 * GiB,))
    labels = gen.npy_header((1,), "<i8") + bytes(8)
    zip_data = gen.zip_bytes([
        ("images.npy", gen.deflate_zeros(npy, 3 * GiB), zipfile.ZIP_DEFLATED, 0,
         len(npy) + 3 * GiB),
        ("labels.npy", labels, 0, zlib.crc32(labels), len(labels))])
    (tmp / "bomb.npz").write_bytes(zip_data)
    cases["npz_zip_bomb"] = (f"load_dataset({str(tmp / 'bomb.npz')!r})", "zip bomb", 64)

    # CSV: one stray label of 10**9 among 0..2 would make 10**9 class names.
    rows = [f"{i % 3},1,2,3,4" for i in range(60)]
    rows[55] = "1000000000,1,2,3,4"
    (tmp / "stray.csv").write_text("label,a,b,c,d\n" + "\n".join(rows) + "\n")
    cases["csv_stray_label"] = (f"load_dataset({str(tmp / 'stray.csv')!r})",
                                "label 1000000000 on line 57", 64)

    # CSV: 12.6 MB of pixels whose last cell is bad, read a 1 MiB chunk at a time: the
    # careful pass must stay near the output's size (the old one held ~40x in lists).
    width, n = 785, 8000
    row = ",".join(["0"] * width) + "\n"
    text = "label," + ",".join(f"pixel{i}" for i in range(784)) + "\n" + row * (n - 1)
    (tmp / "big.csv").write_text(text + row[:-2] + "x\n")
    cases["csv_careful_pass"] = (f"import deeparch.data.csvfile as C\n"
                                 f"C._CSV_CHUNK_BYTES = 2**20\n"
                                 f"load_dataset({str(tmp / 'big.csv')!r})",
                                 f"line {n + 1}, column 785", 32)

    # image folder: a 89 KB PNG that declares 10000 x 9000 pixels (just above Pillow's
    # warning threshold, so Pillow itself would decode all 90M of them).
    for name in ("big", "small"):
        (tmp / "imgs" / name).mkdir(parents=True)
    png = gen.png_bytes(np.zeros((1, 1), np.uint8), width=10000, height=9000,
                        idat=gen.zlib_zeros(9000 * 10001))
    (tmp / "imgs" / "big" / "a.png").write_bytes(png)
    (tmp / "imgs" / "small" / "b.png").write_bytes(gen.png_bytes(np.zeros((4, 4), np.uint8)))
    cases["image_pixel_bomb"] = (f"load_dataset({str(tmp / 'imgs')!r})",
                                 "decompression-bomb guard", 64)
    return cases


@pytest.fixture(scope="module")
def capped_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    cases = _hostile(tmp)
    code = {name: c for name, (c, _, _) in cases.items()}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(code), str(GiB)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    sizes = {p.name: p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
    return cases, results, sizes


HOSTILE = ["gzip_bomb", "gzip_bomb_consistent", "pickle_huge_array", "pickle_memo_index",
           "pickle_amplify", "npz_zip_bomb", "csv_stray_label", "csv_careful_pass",
           "image_pixel_bomb"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs fork and /proc")
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_is_one_sentence_in_bounded_memory(capped_results, name):
    cases, results, sizes = capped_results
    _code, phrase, peak_mb = cases[name]
    got = results[name]
    assert got["outcome"] == "DataError", got
    assert phrase in got["message"] and "\n" not in got["message"], got["message"]
    assert "MemoryError" not in got["message"]
    assert got["peak_mb"] < peak_mb, got


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs fork and /proc")
def test_hostile_files_are_small(capped_results):
    """The bombs stand for GBs but cost the test suite a few MB of disk."""
    _cases, _results, sizes = capped_results
    assert max(sizes.values()) < 16 * 2**20 and sum(sizes.values()) < 40 * 2**20


# --------------------------------------------------------------------------- IDX


def test_idx_lying_header_is_refused_before_reading(tmp_path):
    path = tmp_path / "lie-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 100000, 100000) + bytes(64))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "declares shape (60000, 100000, 100000)" in one_sentence(info)


def test_idx_gzip_declaring_more_than_it_can_hold(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4096, 4096, 4096)
    path.write_bytes(gen.deflate_zeros(header, 2**20, wbits=31))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "was not decompressed" in one_sentence(info)


def test_idx_gzip_truncated_inside_the_data(tmp_path):
    images = gen.make_images(3, (1, 28, 28))[:, 0]
    path = gen.write_idx(tmp_path / "t-idx3-ubyte.gz", images)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "corrupt or truncated gzip" in one_sentence(info)


def test_idx_empty_file(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_idx(tmp_path / "e")
    assert "is empty" in one_sentence(info)


def test_idx_gzip_with_extra_data_is_refused(tmp_path):
    images = gen.make_images(2, (1, 4, 4))[:, 0]
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gen.idx_bytes(images) + b"\0" * 7, mtime=0))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert "7 bytes beyond what its header declares" in one_sentence(info)


def test_idx_gzip_round_trip_still_exact(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=">i2").reshape(2, 3, 5) - 7
    got = read_idx(gen.write_idx(tmp_path / "x.idx.gz", array))
    assert got.dtype == np.int16 and np.array_equal(got, array) and got.flags.writeable


def test_a_single_idx_file_given_as_the_path(tmp_path):
    path = gen.write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "single IDX file; give the folder" in one_sentence(info)


# --------------------------------------------------------------------------- CIFAR pickles


def _write_batch(tmp_path, content: bytes) -> Path:
    path = tmp_path / "test_batch"
    path.write_bytes(content)
    return path


def test_pickle_array_without_data_is_not_uninitialised_memory(tmp_path):
    # _reconstruct(ndarray, (2, 3072), uint8) with no BUILD: numpy would hand back 6 KB
    # of whatever memory held before, as images.
    content = gen.pickle_ops(b"}(U\x04data", b"cnumpy.core.multiarray\n_reconstruct\n"
                             b"cnumpy\nndarray\n(K\x02M\x00\x0ctU\x01B\x87R",
                             b"U\x06labels]q\x01(K\x00K\x01eu")
    with pytest.raises(DataError) as info:
        S.read_cifar_batch(_write_batch(tmp_path, content))
    assert "carries no data" in one_sentence(info)


def test_pickle_array_state_must_match_its_shape(tmp_path):
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, 2)
    bad = good.replace(b"M" + struct.pack("<H", 3072), b"M" + struct.pack("<H", 3000), 1)
    assert bad != good
    with pytest.raises(DataError) as info:
        S.read_cifar_batch(_write_batch(tmp_path, bad))
    assert "declares shape" in one_sentence(info)


@pytest.mark.parametrize("opcode, name", [(b"\x82\x01", "EXT1"), (b"P1\n", "PERSID"),
                                          (b"\x81", "NEWOBJ"), (b"\x97", "NEXT_BUFFER")])
def test_pickle_opcodes_a_batch_never_needs_are_refused(tmp_path, opcode, name):
    with pytest.raises(DataError) as info:
        S.read_cifar_batch(_write_batch(tmp_path, gen.pickle_ops(b"N", opcode)))
    assert f"pickle instruction {name}" in one_sentence(info)


def test_pickle_ndarray_class_cannot_be_called(tmp_path):
    # REDUCE numpy.ndarray((10**12,)) directly: the class itself must not be callable.
    content = gen.pickle_ops(b"cnumpy\nndarray\n(\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85tR")
    with pytest.raises(DataError) as info:
        S.read_cifar_batch(_write_batch(tmp_path, content))
    one_sentence(info)


def test_pickle_string_longer_than_the_file(tmp_path):
    content = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc."
    with pytest.raises(DataError) as info:
        S.read_cifar_batch(_write_batch(tmp_path, content))
    assert "runs past the end" in one_sentence(info)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols_and_numpy_label_types(tmp_path, protocol):
    x = gen.make_images(3, (3, 32, 32))
    for labels in ([2, 0, 1], np.array([2, 0, 1]), list(np.array([2, 0, 1], np.int64))):
        content = pickle.dumps({"data": x.reshape(3, 3072), "labels": labels}, protocol)
        images, got = S.read_cifar_batch(_write_batch(tmp_path, content))
        assert np.array_equal(images, x) and got.tolist() == [2, 0, 1]
        assert images.flags.writeable


def test_pickle_fortran_order_array(tmp_path):
    x = gen.make_images(2, (3, 32, 32)).reshape(2, 3072)
    content = pickle.dumps({"data": np.asfortranarray(x), "labels": [0, 1]}, 2)
    images, _ = S.read_cifar_batch(_write_batch(tmp_path, content))
    assert np.array_equal(images.reshape(2, 3072), x)


def test_pickle_labels_of_the_wrong_type(tmp_path):
    content = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1.5]}, 2)
    with pytest.raises(DataError) as info:
        S.read_cifar_batch(_write_batch(tmp_path, content))
    assert "float, not a whole number" in one_sentence(info)


# --------------------------------------------------------------------------- .npz


def test_npz_written_by_deeparch_augment_loads(tmp_path):
    from deeparch.data.augment import save_augmented

    x, y = gen.make_images(10, (1, 6, 6)), gen.make_labels(10, 3)
    path = save_augmented(tmp_path / "aug.npz", torch.from_numpy(x), torch.from_numpy(y))
    train, test = load_dataset(path), load_dataset(path, "test")
    assert np.array_equal(train.images.numpy(), x) and np.array_equal(train.labels.numpy(), y)
    assert torch.equal(train.images, test.images)  # the path is the split
    assert train.classes == ["0", "1", "2"] and train.name == "aug"


def test_npz_with_classes_keras_layout_and_channels_last(tmp_path):
    x, y = gen.make_images(6, (3, 5, 5)), gen.make_labels(6, 2)
    ds = load_dataset(gen.write_npz(tmp_path / "c.npz", x, y, classes=["cat", "dog"],
                                    compressed=True))
    assert ds.classes == ["cat", "dog"] and np.array_equal(ds.images.numpy(), x)
    np.savez(tmp_path / "k.npz", x_train=x[:, 0], y_train=y, x_test=x[:2, 0], y_test=y[:2])
    test = load_dataset(tmp_path / "k.npz", "test")
    assert test.input_size == (1, 5, 5) and np.array_equal(test.images.numpy(), x[:2, :1])
    np.savez(tmp_path / "h.npz", images=x.transpose(0, 2, 3, 1), labels=y[:, None])
    nhwc = load_dataset(tmp_path / "h.npz")
    assert np.array_equal(nhwc.images.numpy(), x) and "channels-last" in nhwc.notes[0]


@pytest.mark.parametrize("arrays, phrase", [
    (dict(images=np.zeros((2, 1, 3, 3), np.uint8)), "no labels"),
    (dict(images=np.zeros((2, 1, 3, 3), np.float32), labels=np.zeros(2, np.int64)),
     "float32 images"),
    (dict(images=np.array([None, None], dtype=object), labels=np.zeros(2, np.int64)),
     "no pickled objects"),
    (dict(images=np.zeros((2, 1, 3, 3), np.uint8), labels=np.zeros(3, np.int64)),
     "3 labels for 2 images"),
    (dict(images=np.zeros((2, 1, 3, 3), np.uint8), labels=np.zeros(2, np.float64)),
     "not one whole number per image"),
    (dict(pixels=np.zeros(3)), "no 'images' and 'labels'"),
])
def test_bad_npz_contents(tmp_path, arrays, phrase):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "bad.npz")
    assert phrase in one_sentence(info)


def _npz_of(tmp_path, members) -> Path:
    path = tmp_path / "hand.npz"
    path.write_bytes(gen.zip_bytes(members))
    return path


def _stored(name: str, data: bytes):
    return (name, data, 0, zlib.crc32(data), len(data))


LABELS_NPY = gen.npy_header((1,), "<i8") + bytes(8)


def test_npz_member_that_inflates_beyond_its_declared_size(tmp_path):
    small = gen.npy_header((100,))
    path = _npz_of(tmp_path, [("images.npy", gen.deflate_zeros(small, 64 * 2**20),
                               zipfile.ZIP_DEFLATED, 0, len(small) + 100),
                              _stored("labels.npy", LABELS_NPY)])
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "Bad CRC-32" in one_sentence(info)


def test_npz_header_declaring_more_than_the_member(tmp_path):
    lie = gen.npy_header((10**12,)) + bytes(10)
    path = _npz_of(tmp_path, [_stored("images.npy", lie), _stored("labels.npy", LABELS_NPY)])
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "declares shape (1000000000000,)" in one_sentence(info)


def test_npz_with_a_thousand_members(tmp_path):
    path = _npz_of(tmp_path, [_stored(f"a{i}.npy", b"") for i in range(1000)])
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "1,000 members" in one_sentence(info)


def test_npz_that_is_not_a_zip(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "x.npz")
    assert "not a readable .npz" in one_sentence(info)


# --------------------------------------------------------------------------- CSV


def _csv(tmp_path, content, name="d.csv") -> Path:
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


HEADER = "label,a,b,c,d\n"


@pytest.mark.parametrize("content, phrase", [
    ((HEADER + "1,2,3,4,5\n0,2,3,\xe94,5\n").encode("latin1"), "line 3 is not UTF-8"),
    ((HEADER + "1,2,3,4,5\n0,2,\x003,4,5\n").encode(), "line 3, column 3"),
    (HEADER + "1,2,3,4,5\n99999999999999999999999,2,3,4,5\n", "line 3, column 1 holds a number"),
    (HEADER + "1,2,3,4,5\n0,nan,3,4,5\n", "holds 'nan', which is not a whole number"),
    (HEADER + "1,2,3,4,5\n0,2,3,4\n", "line 3 has 4 columns instead of 5"),
    ("label;a;b;c;d\n1;2;3;4;5\n", "separates its cells with ';'"),
    ((HEADER + "1,2,3,4,5\n").encode("utf-16"), "UTF-16"),
    ("id,a,b,c,d\n7,2,3,4,5\n", "an id or index column"),
    (HEADER + "".join(f"{i % 10},1,2,3,4\n" for i in range(40)) + "57,1,2,3,4\n",
     "the label 57 on line 42, far beyond the others (0..9)"),
    (HEADER + "".join(f"{1990 + i % 10},1,2,3,4\n" for i in range(40)),
     "labels from 1990 to 1999"),
])
def test_bad_csv_files(tmp_path, content, phrase):
    with pytest.raises(DataError) as info:
        load_dataset(_csv(tmp_path, content))
    assert phrase in one_sentence(info)


def test_csv_message_never_echoes_a_long_cell(tmp_path):
    path = _csv(tmp_path, HEADER + "1,2,3,4,5\n0," + "7x" * 50_000 + ",3,4,5\n")
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert len(one_sentence(info)) < 250


@pytest.mark.parametrize("content", [
    ("\ufeff" + HEADER + "1,2,3,4,5\n0,6,7,8,9\n").encode(),         # a byte-order mark
    (HEADER + "1,2,3,4,5\r\n0,6,7,8,9\r\n").encode(),                 # Windows line ends
    (HEADER.replace("\n", "\r") + "1,2,3,4,5\r0,6,7,8,9\r").encode(), # old Mac line ends
    (HEADER + "\n1,2,3,4,5\n\n0,6,7,8,9\n\n").encode(),               # blank lines
    b'"label","a","b","c","d"\n"1","2","3","4","5"\n0,6,7,8,9\n',     # quoted cells
    b"a,b,c,d,label\n2,3,4,5,1\n6,7,8,9,0\n",                         # the label column last
])
def test_csv_variants_read_the_same(tmp_path, content):
    ds = load_dataset(_csv(tmp_path, content))
    assert ds.labels.tolist() == [1, 0]
    assert ds.images.flatten().tolist() == [2, 3, 4, 5, 6, 7, 8, 9]


def test_csv_errors_name_the_line_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("deeparch.data.csvfile._CSV_CHUNK_BYTES", 64)
    rows = [f"{i % 2},{i % 256},0,0,0" for i in range(300)]
    rows[250] = "1,0,0,256,0"
    path = _csv(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "line 252, column 4 holds 256" in one_sentence(info)
    rows[250] = "1,0,0,5,0"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    ds = load_dataset(path)
    assert len(ds) == 300 and ds.images[7, 0, 0, 0] == 7 and ds.images[250, 0, 1, 0] == 5


def test_kaggle_unlabeled_test_csv_read_directly(tmp_path):
    gen.write_kaggle_digits(tmp_path / "digit-recognizer")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "digit-recognizer" / "test.csv")
    message = one_sentence(info)
    assert "no label column (784 pixel columns, header starts with 'pixel0')" in message


def test_kaggle_folder_trains_out_of_the_box(tmp_path):
    x, y = gen.write_kaggle_digits(tmp_path / "digit-recognizer")
    train = load_dataset(tmp_path / "digit-recognizer")
    test = load_dataset(tmp_path / "digit-recognizer", "test")
    assert np.array_equal(train.images.numpy(), x) and np.array_equal(train.labels.numpy(), y)
    assert torch.equal(train.images, test.images) and torch.equal(train.labels, test.labels)
    assert not train.notes and "test.csv has no label column" in test.notes[0]


def test_headerless_unlabeled_csv(tmp_path):
    path = _csv(tmp_path, "".join(",".join(["0"] * 784) + "\n" for _ in range(3)))
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert "no label column (784 pixel columns)" in one_sentence(info)


# --------------------------------------------------------------------------- image folders


def _ramp16() -> np.ndarray:
    return np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "g" / name).mkdir(parents=True)
        (tmp_path / "g" / name / "r.png").write_bytes(gen.png_bytes(_ramp16()))
    ds = load_dataset(tmp_path / "g")
    values = ds.images[0, 0].flatten().numpy().astype(int)
    assert ds.input_size == (1, 8, 8)
    assert values[0] == 0 and values[-1] == 255 and (np.diff(values) >= 0).all()
    expected = (_ramp16().astype(np.int64) * 255 + 32767) // 65535
    assert np.array_equal(values, expected.flatten())
    assert any("16-bit" in n for n in ds.notes)


def test_16bit_png_among_colour_images(tmp_path):
    from PIL import Image

    (tmp_path / "m" / "a").mkdir(parents=True)
    (tmp_path / "m" / "a" / "g.png").write_bytes(gen.png_bytes(_ramp16()))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "m" / "a" / "h.png")
    ds = load_dataset(tmp_path / "m")
    assert ds.input_size == (3, 8, 8)
    assert ds.images[0, :, 7, 7].tolist() == [255, 255, 255]
    assert ds.images[1, :, 0, 0].tolist() == [1, 2, 3]


def test_float_and_32bit_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "f" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(folder / "f.tif")
    Image.fromarray(np.arange(16, dtype=np.int32).reshape(4, 4) * 4369).save(folder / "i.tif")
    ds = load_dataset(tmp_path / "f")
    assert ds.images[0, 0].flatten().tolist() == [round(i * 17) for i in range(16)]
    assert ds.images[1, 0].flatten().tolist() == [round(i * 17) for i in range(16)]
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(folder / "j.tif")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "f")
    assert "outside the 16-bit range" in one_sentence(info)


def test_image_folder_keeps_its_own_size(tmp_path):
    x, y = gen.write_image_folder(tmp_path / "pets", size=(12, 10))
    ds = load_dataset(tmp_path / "pets")
    assert ds.input_size == (3, 12, 10) and np.array_equal(ds.images.numpy(), x)
    assert ds.notes == []


def test_image_folder_of_mixed_sizes_asks_for_a_size(tmp_path):
    from PIL import Image

    gen.write_image_folder(tmp_path / "mix", size=(12, 10))
    Image.new("RGB", (20, 30)).save(tmp_path / "mix" / "dog" / "big.png")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "mix")
    message = one_sentence(info)
    assert "2 different sizes" in message and "big.png is 30x20" in message
    assert "image_size" in message
    from deeparch.cli import cli_message
    assert "--image-size" in cli_message(message)
    ds = load_dataset(tmp_path / "mix", image_size=(12, 10))
    assert ds.input_size == (3, 12, 10) and len(ds) == 13
    assert ds.notes == ["mix: resized 1 of 13 images from 2 different sizes (e.g. 12x10, "
                        "30x20) to 12x10 (image_size)"]


def test_image_size_resizes_from_the_original_file(tmp_path):
    from PIL import Image

    pattern = (np.indices((64, 64)).sum(0) % 7 * 36).astype(np.uint8)
    for name in ("a", "b"):
        (tmp_path / "p" / name).mkdir(parents=True)
        Image.fromarray(pattern).save(tmp_path / "p" / name / "x.png")
    ds = load_dataset(tmp_path / "p", image_size=48)
    expected = np.asarray(Image.fromarray(pattern).resize((48, 48), Image.Resampling.BILINEAR))
    assert np.array_equal(ds.images[0, 0].numpy(), expected)
    assert ds.notes == ["p: resized 2 of 2 images from 64x64 to 48x48 (image_size)"]


def test_image_folder_follows_linked_folders_but_not_loops(tmp_path):
    gen.write_image_folder(tmp_path / "elsewhere", classes=("x",), per_class=2, size=(6, 6))
    gen.write_image_folder(tmp_path / "ds", classes=("a", "b"), per_class=2, size=(6, 6))
    os.symlink(tmp_path / "elsewhere" / "x", tmp_path / "ds" / "a" / "more")
    os.symlink(tmp_path / "ds" / "a", tmp_path / "ds" / "a" / "loop")
    ds = load_dataset(tmp_path / "ds")
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 0, 0, 1, 1]
    os.symlink(tmp_path / "gone.png", tmp_path / "ds" / "b" / "z.png")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "ds")
    assert "z.png is a link to a file that does not exist" in one_sentence(info)


def test_image_with_alpha_is_noted(tmp_path):
    from PIL import Image

    (tmp_path / "al" / "a").mkdir(parents=True)
    Image.new("RGBA", (4, 4), (9, 8, 7, 100)).save(tmp_path / "al" / "a" / "x.png")
    ds = load_dataset(tmp_path / "al")
    assert ds.images[0, :, 0, 0].tolist() == [9, 8, 7]
    assert ds.notes == ["al: dropped the alpha (transparency) channel of 1 of 1 image"]


# --------------------------------------------------------------------------- paths, datasets


def test_paths_that_are_not_data_files(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    for path, phrase in ((tmp_path / "empty.csv", "is empty"),
                         ("/dev/null", "neither a file nor a folder")):
        with pytest.raises(DataError) as info:
            load_dataset(path)
        assert phrase in one_sentence(info)
    from PIL import Image
    Image.new("L", (3, 3)).save(tmp_path / "one.png")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "one.png")
    assert "single image" in one_sentence(info)


def test_empty_idx_split_is_refused(tmp_path):
    gen.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 4, 4), np.uint8))
    gen.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    assert "holds no images" in one_sentence(info)


def test_array_dataset_notes_stay_compatible():
    x = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    ds = ArrayDataset(x, torch.tensor([0, 1]), ["a", "b"], "toy")
    assert ds.notes == []
    noted = ArrayDataset(x, torch.tensor([0, 1]), ["a", "b"], "toy", ["resized"])
    assert dataclasses.replace(noted, labels=torch.tensor([1, 0])).notes == ["resized"]
    assert "notes" not in repr(noted)


def test_resizing_other_sources_is_noted():
    ds = load_dataset("digits", image_size=16)
    assert ds.input_size == (1, 16, 16) and ds.notes == ["digits: resized the images from 8x8 "
                                                         "to 16x16 (image_size)"]


def test_check_trainable():
    x = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    S.check_trainable(ArrayDataset(x, torch.tensor([0, 1, 1]), ["a", "b"]))
    with pytest.raises(DataError) as info:
        S.check_trainable(ArrayDataset(x, torch.tensor([1, 1, 1]), ["a", "b"], "one"))
    assert "only one class ('b', 3 images)" in one_sentence(info)
