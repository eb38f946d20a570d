"""Batches prepared in a background thread: the serial path's batches, bit for bit."""
from __future__ import annotations

import threading

import pytest
import torch

from deeparch.data.augment import augment_from_spec
from deeparch.errors import DataError
from deeparch.train import speed
from deeparch.train.speed import BatchStream
from deeparch.train.trainer import Trainer

from trainhelp import blobs, tiny_model


def _data(n=70, hw=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 1, hw, hw), dtype=torch.uint8, generator=g),
            torch.randint(0, 4, (n,), generator=g))


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("deeparch-batches")]


def _equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1])
                                    for p, q in zip(a, b))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("spec", ["slides", "slides,elastic=6:2,hflip,cutout=3",
                                  "crop=2,color_shift=20"])
def test_prefetched_batches_are_the_serial_ones(threads, spec):
    x, y = _data()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kw = dict(seed=3, mean=0.3, std=0.3, augment=augment_from_spec(spec))
        serial = BatchStream(x, y, 16, prefetch=False, **kw)
        ahead = BatchStream(x, y, 16, prefetch=True, **kw)
        assert ahead.prefetching() and not serial.prefetching()
        for epoch in (0, 1, 5):
            serial.set_epoch(epoch)
            ahead.set_epoch(epoch)
            a, b = list(serial), list(ahead)
            assert len(a) == 5 and _equal(a, b)            # 4 full batches and 6 left
        assert not _equal(a, list(BatchStream(x, y, 16, prefetch=True,
                                              **{**kw, "seed": 4})))
    finally:
        torch.set_num_threads(before)
    assert not _workers()


def test_auto_prefetches_only_where_a_core_is_free(monkeypatch):
    x, y = _data()
    aug = augment_from_spec("slides")
    s = BatchStream(x, y, 16, augment=aug)
    assert s.prefetch == "auto"
    monkeypatch.setattr(speed, "usable_cores", lambda: torch.get_num_threads() + 1)
    assert s.prefetching()
    monkeypatch.setattr(speed, "usable_cores", lambda: torch.get_num_threads())
    assert not s.prefetching()                     # every core runs torch: serial
    monkeypatch.setattr(speed, "usable_cores", lambda: 64)
    assert not BatchStream(x, y, 16).prefetching()                    # nothing to prepare
    assert not BatchStream(x, y, 16, augment=lambda b, g: b).prefetching()   # unknown callable
    assert BatchStream(x, y, 16, augment=lambda b, g: b, prefetch=True).prefetching()
    assert not BatchStream(x.float(), y, 16, prefetch=True).prefetching()   # features
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="prefetch"):
            BatchStream(x, y, 16, augment=aug, prefetch=bad)


def test_errors_in_the_thread_are_raised_at_their_batch():
    x, y = _data()
    seen = []

    def aug(batch, gen):
        seen.append(len(seen))
        if len(seen) == 3:
            raise DataError("the third batch is bad.")
        return batch

    s = BatchStream(x, y, 16, augment=aug, prefetch=True)
    got = []
    with pytest.raises(DataError, match="third batch"):
        for b in s:
            got.append(b)
    assert len(got) == 2 and not _workers()


def test_leaving_early_stops_the_thread_and_the_next_epoch_is_whole():
    x, y = _data()
    kw = dict(seed=1, augment=augment_from_spec("slides,elastic=6:2"))
    s = BatchStream(x, y, 8, prefetch=True, **kw)
    for k, _ in enumerate(s):
        if k == 1:
            break
    assert not _workers()
    assert _equal(list(s), list(BatchStream(x, y, 8, prefetch=False, **kw)))


def _train(tmp_path, name, prefetch, epochs, resume_after=None):
    ds = blobs(96, size=8)
    spec = "rotation=10,shift=0.1,elastic=2:1.5"

    def stream():
        return BatchStream(ds.images, ds.labels, 16, seed=0, mean=0.25, std=0.3,
                           augment=augment_from_spec(spec), prefetch=prefetch)

    out = tmp_path / name
    cfg = dict(epochs=epochs, lr=0.05, optimizer="sgd", seed=0, batch_size=16)
    if resume_after is None:
        t = Trainer(tiny_model(), stream(), config=cfg, out=out, log=None, progress=False)
        t.fit()
        return t
    Trainer(tiny_model(), stream(), config={**cfg, "epochs": resume_after}, out=out,
            log=None, progress=False).fit()
    t = Trainer(tiny_model(seed=9), stream(), config=cfg, out=out, log=None, progress=False)
    t.resume()
    t.fit()
    return t


def test_training_and_resume_are_bit_identical_with_and_without_the_thread(tmp_path):
    serial = _train(tmp_path, "serial", False, 3)
    ahead = _train(tmp_path, "ahead", True, 3)
    resumed = _train(tmp_path, "resumed", True, 3, resume_after=1)
    ref = serial.module.state_dict()
    for t in (ahead, resumed):
        sd = t.module.state_dict()
        assert all(torch.equal(ref[k], sd[k]) for k in ref)
        assert [e["loss"] for e in t.history] == [e["loss"] for e in serial.history]
    assert not _workers()


def test_the_preparing_thread_runs_its_kernels_alone():
    """The worker's OpenMP (and MKL) count is 1, so it starts no team of its own beside the
    training thread's; the training thread and torch's process-wide count keep theirs."""
    runtimes = speed._thread_runtimes()
    if "openmp" not in runtimes:
        pytest.skip("no OpenMP runtime found in this process (the worker then keeps torch's "
                    "thread count, and prefetching still gives the serial batches)")
    omp_max = runtimes["openmp"][1]
    seen = []

    def record(batch, gen):
        seen.append((threading.current_thread().name, omp_max()))
        return batch

    x, y = _data()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        list(BatchStream(x, y, 16, augment=record, prefetch=True))
        assert seen and all(name.startswith("deeparch-batches") and n == 1 for name, n in seen)
        assert torch.get_num_threads() == 2 and omp_max() == 2      # this thread: unchanged
    finally:
        torch.set_num_threads(before)


def test_without_a_known_runtime_the_thread_still_gives_the_serial_batches(monkeypatch):
    monkeypatch.setattr(speed, "_RUNTIMES", {})
    assert speed.single_threaded_worker() is False
    x, y = _data()
    kw = dict(seed=1, augment=augment_from_spec("slides"))
    assert _equal(list(BatchStream(x, y, 16, prefetch=True, **kw)),
                  list(BatchStream(x, y, 16, prefetch=False, **kw)))
