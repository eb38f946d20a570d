"""Fast input pipeline and numerically-equivalent training speedups.

The contract (other modules of ``deeparch.train`` build on it):

* :class:`BatchStream` - batches of an in-memory uint8 data set, shuffled by a permutation
  that depends only on ``(seed, epoch)``, normalised on the batch;
* :func:`prepare_for_training` - faster kernels that compute what the model computes;
* :func:`select_device`, :func:`bf16_supported`, :func:`autocast` - device and precision.

Measured on fashion_cnn (``benchmarks/bench_train.py``; ``benchmarks/RESULTS.md`` has the
tables), what the step cost and what removed it:

* a DataLoader over a TensorDataset collates 256 per-sample tensors per batch in Python;
  BatchStream slices the uint8 tensor with one permutation per epoch and normalises the
  batch with one multiply-add (``x * 1/(255 std) - mean/std``);
* reading ``loss.item()`` and the accuracy every step costs little on CPU (no device
  sync) but the loop keeps them on tensors anyway, read once per epoch, as a GPU needs;
* Adam(fused=True) runs one kernel over all parameters (0.7 ms a step instead of
  1.8 ms for the default per-tensor loop): ``build_optimizer`` asks for it;
* the rest was the first block: max-pool with int64 indices on NCHW, dropout's
  per-element ``bernoulli_``, a oneDNN convolution slow for one input channel, the
  22 MB feature map's layout conversions - see :mod:`deeparch.layers.fast` - and page
  faults: glibc handed every large activation buffer back to the kernel and faulted
  fresh pages in on the next step (:func:`retain_freed_memory`).

Online augmentation (issue 13): ``BatchStream(prefetch=)`` prepares the next batch in a
background thread; bit-identical batches. The thread runs its kernels on itself alone
(:func:`single_threaded_worker`): with torch's own thread count it started an OpenMP team
of its own, which put libgomp over its core count and changed how the training thread's
team spin-waits (the step got 0.57x as fast on the quiet 2-core machine, 5.7x faster on a
busy one). Measured on the quiet 2-core machine (``bench_train.py --paths
fast,aug,augp,augt --repeats 15 --n 5120``, medians of per-repeat ratios against no
augmentation, three runs): with 1 torch thread, serial +0.8 to +5.4%, prefetched -4.2 to
+2.2%; with 2 torch threads, serial +6.1 to +9.1%, prefetched +5.5 to +12.7% (a thread with
its own team: +11.1, +18.0%). So ``'auto'`` uses the thread where a core is free beside
torch's threads; with every core running torch there is no idle core to hide the work in,
and the serial path costs the same.

Not used, measured: bf16 (the probe passes on this CPU, but bf16 convolutions run 4x
slower than fp32, so :func:`autocast` stays off on CPU); ``torch.compile`` of the
plain model (45 s cold, 2 s from inductor's cache, and the compiled step then ran
161 ms against 88 ms eager, 2 threads); a second torch thread on a busy 2-core machine
(while another process holds a core, OpenMP's barriers make every step 2-10x slower
than one thread, the fused path worst as it has the most parallel regions: choose
``threads`` to match the free cores).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..layers.dense import Dense
from ..layers.fast import (conv2d_gemm, conv_gemm_applies, conv_relu_pool_dropout, dropout_fast,
                           is_channels_last_only, linear_on_cl, max_pool2d_cl, pool_cl_applies)

__all__ = ["BatchStream", "prepare_for_training", "select_device", "bf16_supported",
           "autocast", "epoch_generator", "epoch_seed", "unprepare", "retain_freed_memory",
           "usable_cores"]


def epoch_seed(seed: int, epoch: int, stream: int = 0, *salt: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, stream, *salt)``, well mixed
    (numpy's SeedSequence): batch order, augmentation and dropout each draw from their own
    stream, so a resumed run repeats an uninterrupted one exactly."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), int(stream),
                                 *(int(v) for v in salt)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_generator(seed: int, epoch: int, stream: int = 0,
                    device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded from ``(seed, epoch, stream)`` only."""
    g = torch.Generator(device=device)
    g.manual_seed(epoch_seed(seed, epoch, stream))
    return g


class BatchStream:
    """Mini-batches of an in-memory uint8 image tensor, normalised on the batch.

    ``images_uint8`` is N x C x H x W uint8, ``labels`` N integers. Each epoch draws one
    permutation from a generator seeded by ``(seed, epoch)`` only (call :meth:`set_epoch`),
    so a resumed run sees exactly the batches an uninterrupted one would.

    Batches: ``x`` float32 ``(pixel / 255 - mean) / std`` per channel (``mean``/``std`` in
    [0, 1] pixel units, one value or one per channel), ``y`` int64, both on ``device``.

    Float images (features a frozen network computed once, the ``cached`` transfer regime)
    are taken as already normalised: batches are the values themselves and ``augment`` is
    refused.

    ``augment(batch, generator) -> batch`` (e.g. :class:`deeparch.data.augment.Augment`)
    is applied to every batch as float32 in raw pixel units [0, 255] *before*
    normalisation, so a constant fill of 0 means a black pixel as in Keras'
    ImageDataGenerator (which augments the raw data). Its generator is seeded from
    ``(seed, epoch, rank)``, on ``device``.

    The whole uint8 array is moved to ``device`` once (FashionMNIST: 38 MB); batches are
    gathered there by index, so no per-sample Python runs and no worker processes.

    ``prefetch``: prepare (gather, augment, normalise) the *next* batch in a background
    thread while the caller trains on the current one - the course notes' "use a different
    CPU thread to make distorted mini-batches while you are training". The thread draws
    from the same generator in the same order, so the batches are bit-identical to the
    serial path's (and a resumed run stays bit-identical); its kernels run on that thread
    alone (:func:`single_threaded_worker`), so it starts no OpenMP team beside the training
    thread's. ``True`` always (any augment callable; it must draw only from the generator it
    is given), ``False`` never, ``'auto'`` (the default) where it pays: on CPU, with a
    :class:`deeparch.data.augment.Augment`, when this process may use more cores
    (``os.sched_getaffinity``) than torch has threads, so that a core is left for the
    preparing thread; otherwise the serial path, which costs the same when every core runs
    torch (``benchmarks/RESULTS.md``). On CUDA batches are prepared serially (augmentation
    kernels are queued asynchronously on the stream anyway; a side-stream path is not
    written, as it could not be tested here).

    Distributed: ``batch_size`` is per process. The global batch of ``batch_size *
    world_size`` samples follows the order one process with that batch size would use;
    rank ``r`` gets the ``r``-th contiguous slice of it. A last, partial global batch is
    split as evenly as possible (``torch.tensor_split``); if it holds fewer samples than
    ``world_size`` it is dropped on every rank, so all ranks take the same number of steps.
    """

    def __init__(self, images_uint8: Tensor, labels: Tensor, batch_size: int, *,
                 shuffle: bool = True, seed: int = 0, mean: Sequence[float] | float = (0.0,),
                 std: Sequence[float] | float = (1.0,),
                 augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
                 device: str | torch.device = "cpu", drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, prefetch: bool | str = "auto"):
        images = torch.as_tensor(images_uint8)
        labels = torch.as_tensor(labels)
        if images.dim() != 4:
            raise ValueError(f"BatchStream expects images N x C x H x W, got shape "
                             f"{tuple(images.shape)}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size}).")
        if not (prefetch is True or prefetch is False or prefetch == "auto"):
            raise ValueError(f"prefetch must be True, False or 'auto', not {prefetch!r}.")
        self.prefetch = prefetch
        self.device = torch.device(device)
        self.prenormalised = images.is_floating_point()
        if self.prenormalised and augment is not None:
            raise ValueError("float inputs are taken as normalised features, which cannot be "
                             "augmented as images.")
        if not self.prenormalised and images.dtype != torch.uint8:
            raise ValueError(f"BatchStream expects uint8 images or float features, got "
                             f"{images.dtype}.")
        if augment is not None:
            from ..data.augment import Augment
            if isinstance(augment, Augment):      # sizes it cannot warp: now, not mid-epoch
                augment.check_input(images.shape[2], images.shape[3])
        c = images.shape[1]
        mean_t = _per_channel(mean, c, "mean")
        std_t = _per_channel(std, c, "std")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be > 0, got {tuple(std_t.tolist())}.")
        self.images = images.contiguous().to(self.device)
        self.labels = labels.to(torch.int64).to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.mean = tuple(mean_t.tolist())
        self.std = tuple(std_t.tolist())
        self.augment = augment
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        # (x / 255 - mean) / std == x * scale + shift
        self._scale = (1.0 / (255.0 * std_t)).view(1, c, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, c, 1, 1).to(self.device)

    # ----------------------------------------------------------------- epochs
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, gb = len(self.labels), self.batch_size * self.world_size
        full, rest = divmod(n, gb)
        return full + (1 if rest and not self.drop_last and rest >= self.world_size else 0)

    def permutation(self, epoch: int | None = None) -> Tensor:
        """The order of all samples in ``epoch`` (CPU int64)."""
        e = self.epoch if epoch is None else epoch
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=epoch_generator(self.seed, e))

    def batch_indices(self, epoch: int | None = None) -> Iterator[Tensor]:
        """This rank's sample indices of every batch of ``epoch``."""
        perm = self.permutation(epoch)
        gb = self.batch_size * self.world_size
        for k in range(len(self)):
            glob = perm[k * gb:(k + 1) * gb]
            if self.world_size == 1:
                yield glob
            else:
                yield torch.tensor_split(glob, self.world_size)[self.rank]

    def prefetching(self) -> bool:
        """Whether iterating prepares the next batch in a background thread (see
        ``prefetch``), decided now (``'auto'`` looks at torch's threads and the cores)."""
        if self.augment is None or self.prenormalised or self.device.type != "cpu":
            return False        # nothing worth overlapping; CUDA: serial (see the class doc)
        if self.prefetch == "auto":
            from ..data.augment import Augment
            return isinstance(self.augment, Augment) and \
                usable_cores() > torch.get_num_threads()
        return bool(self.prefetch)

    def _batch(self, idx: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One batch, ready: gathered, augmented (drawing from ``gen``), normalised."""
        idx = idx.to(self.device)
        if self.prenormalised:
            return (self.images.index_select(0, idx).to(torch.float32),
                    self.labels.index_select(0, idx))
        x = self.images.index_select(0, idx).to(torch.float32)
        if self.augment is not None:
            x = self.augment(x, gen)
            if x.dtype != torch.float32:
                x = x.to(torch.float32)
        # (x / 255 - mean) / std as ONE multiply-add on the batch
        return torch.addcmul(self._shift, x, self._scale), self.labels.index_select(0, idx)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = None
        if self.augment is not None:
            gen = epoch_generator(self.seed, self.epoch, 1 + self.rank, self.device)
        if self.prefetching():
            yield from self._prefetched(gen)
            return
        for idx in self.batch_indices():
            yield self._batch(idx, gen)

    def _prefetched(self, gen: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        """The serial loop with batch k + 1 prepared by one worker thread while the caller
        holds batch k. One worker, tasks submitted in order: the generator is used by one
        thread at a time, in the serial order. Errors raised while preparing a batch are
        raised here, at that batch; leaving early waits for the batch in preparation."""
        order = iter(self.batch_indices())
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deeparch-batches",
                                  initializer=single_threaded_worker)
        pending = None
        try:
            idx = next(order, None)
            pending = pool.submit(self._batch, idx, gen) if idx is not None else None
            while pending is not None:
                batch = pending.result()
                idx = next(order, None)
                pending = pool.submit(self._batch, idx, gen) if idx is not None else None
                yield batch
        finally:
            if pending is not None:
                pending.cancel()
            pool.shutdown(wait=True)


_RUNTIMES: dict | None = None


def _thread_runtimes() -> dict:
    """The per-thread thread-count setters of the loaded parallel runtimes:
    ``{'openmp': (omp_set_num_threads, omp_get_max_threads), 'mkl': (setter, None)}``.
    OpenMP's (libgomp or Intel's libiomp5, whichever torch loaded) sets the *calling
    thread's* nthreads-var; MKL's is ``MKL_Set_Num_Threads_Local`` (its documented C entry,
    by value; the lower-case names are the Fortran ones, by reference), where torch's
    library exports it. Linux only (the loaded libraries are read from /proc/self/maps);
    empty elsewhere."""
    global _RUNTIMES
    if _RUNTIMES is not None:
        return _RUNTIMES
    found: dict = {}
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so")
                     or ".so." in line}
        omp = sorted(p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp5")))
        if omp:
            lib = ctypes.CDLL(omp[0])
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            lib.omp_set_num_threads.restype = None
            lib.omp_get_max_threads.restype = ctypes.c_int
            found["openmp"] = (lib.omp_set_num_threads, lib.omp_get_max_threads)
        cpu = [p for p in paths if os.path.basename(p) == "libtorch_cpu.so"]
        if cpu:
            fn = getattr(ctypes.CDLL(cpu[0]), "MKL_Set_Num_Threads_Local", None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = ctypes.c_int
                found["mkl"] = (fn, None)
    except (OSError, AttributeError, IndexError):
        found = {}
    _RUNTIMES = found
    return found


def single_threaded_worker() -> bool:
    """Make the torch kernels that the *calling* thread runs use that thread alone, leaving
    every other thread's setting (and ``torch.get_num_threads()``) as it is. Returns whether
    it could (OpenMP's per-thread setting reads 1 afterwards).

    Why: a second Python thread that runs torch kernels otherwise starts an OpenMP team (and
    MKL one) of its own beside the training thread's, which puts libgomp over its core count:
    it then throttles its barrier spin-waiting, and the training step's speed changes for
    reasons that have nothing to do with the overlap (0.57x on a quiet 2-core machine,
    ``benchmarks/bench_train.py --omp-team-ab``). torch sets a thread's OpenMP count lazily,
    from the process-wide one, on that thread's first parallel kernel: a small
    ``index_select`` (which enters torch's parallel_for without forking) runs first, so that
    the lazy setting does not undo this one later."""
    runtimes = _thread_runtimes()
    if "openmp" not in runtimes:
        return False
    torch.arange(8).index_select(0, torch.tensor([1, 2]))      # torch's lazy per-thread init
    for setter, _ in runtimes.values():
        setter(1)
    return runtimes["openmp"][1]() == 1


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _per_channel(v: Sequence[float] | float, c: int, what: str) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(c).clone()
    if t.numel() != c:
        raise ValueError(f"{what} has {t.numel()} values but the images have {c} channels.")
    return t


# ---------------------------------------------------------------------- the model
class _FastForward:
    """A module's replacement ``forward`` (an instance attribute, so the module keeps its
    class, hooks, name and parameters). Falls back to the class's own forward for inputs
    the fast kernel does not cover (meta tensors for summaries, other devices, dtypes)."""

    def __init__(self, module: nn.Module, kind: str):
        self.module = module
        self.kind = kind

    def __call__(self, x, *args, **kwargs):
        m = self.module
        if args or kwargs or not _fast_input(x, any_dim=self.kind == "dropout"):
            return type(m).forward(m, x, *args, **kwargs)
        if self.kind == "conv":
            return conv2d_gemm(x, m.weight, m.bias, m.stride, m.padding, m.dilation)
        if self.kind == "pool":
            return max_pool2d_cl(x, m.kernel_size, m.stride, m.padding, m.dilation,
                                 m.ceil_mode)
        if self.kind == "dropout":
            return dropout_fast(x, m.p, m.training)
        raise AssertionError(self.kind)


def _fast_input(x, any_dim: bool = False) -> bool:
    return (type(x) is Tensor and x.device.type == "cpu" and x.dtype == torch.float32
            and (any_dim or x.dim() == 4))


def _fast_kind(module: nn.Module, conv: bool, pool: bool, dropout: bool) -> str | None:
    cls = type(module)
    # only modules whose forward is the stock one: a subclass that overrides forward
    # computes something else, and must keep it
    if conv and isinstance(module, nn.Conv2d) and cls.forward is nn.Conv2d.forward \
            and conv_gemm_applies(module):
        return "conv"
    if pool and isinstance(module, nn.MaxPool2d) and cls.forward is nn.MaxPool2d.forward \
            and pool_cl_applies(module):
        return "pool"
    if dropout and isinstance(module, nn.Dropout) and cls.forward is nn.Dropout.forward \
            and not module.inplace:
        return "dropout"
    return None


class _FastSequential:
    """A ``nn.Sequential``'s replacement forward: runs of Conv2d -> ReLU -> MaxPool2d
    [-> Dropout] go through :func:`conv_relu_pool_dropout`, and Flatten -> Linear on a
    channels-last input through :func:`linear_on_cl`; everything else, and any run whose
    modules someone watches with hooks (summaries, activation maps), runs module by
    module as before."""

    def __init__(self, seq: nn.Sequential, runs: dict[int, tuple[str, tuple[nn.Module, ...]]],
                 kernel: str = "auto"):
        self.module = seq
        self.runs = runs
        self.kernel = kernel

    def __call__(self, x):
        seq = self.module
        if not _fast_input(x) or _global_hooks():
            return nn.Sequential.forward(seq, x)
        mods = list(seq._modules.values())
        i = 0
        while i < len(mods):
            kind, run = self.runs.get(i, (None, ()))
            if kind is not None and _fast_input(x) and not any(_hooked(m) for m in run):
                if kind == "block":
                    conv, _relu, pool, *drop = run
                    p = drop[0].p if drop else 0.0
                    training = drop[0].training if drop else False
                    x = conv_relu_pool_dropout(x, conv, pool, p, training, kernel=self.kernel)
                    i += len(run)
                    continue
                flatten, lin = run
                if is_channels_last_only(x) and lin.in_features == x[0].numel():
                    x = linear_on_cl(x, lin.weight, lin.bias)
                    act = getattr(lin, "_act", None) if isinstance(lin, Dense) else None
                    x = act(x) if act is not None else x
                    i += 2
                    continue
            x = mods[i](x)
            i += 1
        return x


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _global_hooks() -> bool:
    mm = nn.modules.module
    return bool(mm._global_forward_hooks or mm._global_forward_pre_hooks
                or mm._global_backward_hooks or getattr(mm, "_global_backward_pre_hooks", None))


def _fusable_runs(seq: nn.Sequential) -> dict[int, tuple[str, tuple[nn.Module, ...]]]:
    mods = list(seq._modules.values())
    runs: dict[int, tuple[str, tuple[nn.Module, ...]]] = {}
    i = 0
    while i + 1 < len(mods):
        a, b = mods[i], mods[i + 1]
        if (i + 2 < len(mods) and _fast_kind(a, True, False, False) == "conv"
                and type(b).forward is nn.ReLU.forward and isinstance(b, nn.ReLU)
                and _fast_kind(mods[i + 2], False, True, False) == "pool"):
            run: tuple[nn.Module, ...] = (a, b, mods[i + 2])
            if i + 3 < len(mods) and isinstance(mods[i + 3], nn.Dropout) \
                    and type(mods[i + 3]).forward is nn.Dropout.forward:
                run += (mods[i + 3],)
            runs[i] = ("block", run)
            i += len(run)
        elif (type(a) is nn.Flatten and a.start_dim == 1 and a.end_dim == -1
              and isinstance(b, nn.Linear) and type(b).forward in (nn.Linear.forward,
                                                                   Dense.forward)):
            runs[i] = ("flatten_linear", (a, b))
            i += 2
        else:
            i += 1
    return runs


def prepare_for_training(model: nn.Module, device: str | torch.device = "cpu", *,
                         conv: bool = True, pool: bool = True, dropout: bool = True,
                         fuse: bool = True, compiled: bool = True,
                         retain_memory: bool = True) -> nn.Module:
    """Move ``model`` to ``device`` and install faster, equivalent kernels in place.

    On CPU (:mod:`deeparch.layers.fast` says what each one does and what it bought):

    * ``fuse``: inside an ``nn.Sequential``, Conv2d -> ReLU -> MaxPool2d [-> Dropout]
      with a GEMM-able convolution (below) runs as one autograd function: im2col GEMM,
      channels-last pooling in chunks, ReLU (exact after the max) and dropout as one
      multiply on the 4x smaller pooled map, output channels-last; and Flatten ->
      Linear (or Dense) on a channels-last input reads it in memory order against a
      column-permuted weight instead of transposing it. Modules watched by hooks are
      not fused, so what a hook sees is what the plain model computes;
    * ``compiled``: the fused conv block runs through the C kernel built at install time
      (``deeparch.layers._convpool``: each pooling window's conv outputs are made, pooled
      and dropped in registers, nothing of the conv map is stored; the fashion_cnn step
      1.4-1.5x faster than with the PyTorch formulation above) where it was built and applies; ``False`` keeps the
      PyTorch formulation. Its dropout mask comes from a counter-based generator seeded
      by one draw of torch's default generator (reproducible under ``torch.manual_seed``);
    * ``conv``: other convolutions with one or two input channels and >= 16 outputs run
      as one im2col GEMM, output channels-last (2x faster forward+backward; for 3 input
      channels or few outputs oneDNN is faster and is kept);
    * ``pool``: ``nn.MaxPool2d`` on a channels-last input gets a channels-last gradient;
    * ``dropout``: ``nn.Dropout`` draws its mask from 16 random bits per element
      (about 4x cheaper than ``bernoulli_``);
    * ``retain_memory``: :func:`retain_freed_memory` (process-wide: glibc keeps freed
      activation buffers instead of page-faulting fresh ones every step; 10-20% on the
      PyTorch formulation of the block, 3-4% with the compiled kernel, which allocates
      no conv map).

    Outputs and gradients equal the plain model's up to float summation order (dropout:
    the same distribution, other draws of torch's default generator). Module classes,
    names, parameters and ``state_dict`` keys are unchanged; summaries of the model stay
    right (meta tensors take the plain path). Works in train and eval mode, under
    ``no_grad``, with DDP. Idempotent; :func:`unprepare` undoes it. On other devices it
    only moves the model (cuDNN needs none of this)."""
    device = torch.device(device)
    model = model.to(device)
    if device.type != "cpu":
        return model
    if retain_memory:
        retain_freed_memory()
    for module in model.modules():
        kind = _fast_kind(module, conv, pool, dropout)
        if kind is not None:
            module.forward = _FastForward(module, kind)
        if fuse and isinstance(module, nn.Sequential) \
                and type(module).forward is nn.Sequential.forward:
            runs = _fusable_runs(module)
            if runs:
                module.forward = _FastSequential(module, runs, "auto" if compiled else "torch")
    return model


def unprepare(model: nn.Module) -> nn.Module:
    """Remove what :func:`prepare_for_training` installed."""
    for module in model.modules():
        if isinstance(module.__dict__.get("forward"), (_FastForward, _FastSequential)):
            del module.forward
    return model


_retained = False


def retain_freed_memory(max_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the
    kernel (process-wide; Linux/glibc only; returns whether it applied).

    A training step frees and re-allocates the same few large activation buffers
    (5-22 MB for fashion_cnn at batch 256). By default glibc serves each from fresh
    pages (mmap, or a heap top it trimmed) - 2,000-3,000 page faults a step; with
    ``M_MMAP_THRESHOLD`` at its 32 MB maximum and ``M_TRIM_THRESHOLD`` at ``max_bytes``
    they stay in the heap: ~100 faults a step and the fast fashion_cnn step 10-15%
    faster (1 thread, 3 A/B pairs: 66 -> 60, 66 -> 49, 67 -> 57 ms; with the compiled
    conv/pool kernel, which never allocates the 22 MB map, only 3-4%). The cost: up to
    ``max_bytes`` of freed memory stays resident. PyTorch's CUDA allocator does the same
    for the GPU."""
    global _retained
    if _retained:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False                      # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    _retained = bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(
        mallopt(M_TRIM_THRESHOLD, int(min(max_bytes, 2 ** 31 - 1))))
    return _retained


# ---------------------------------------------------------------- device, precision
def select_device(pref: str | torch.device = "auto") -> torch.device:
    """``'auto'``: CUDA when available, else CPU; anything else is taken as given."""
    if isinstance(pref, torch.device):
        return pref
    if pref in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


_PROBE = r"""
import sys, time, torch
torch.set_num_threads(1)
dev = torch.device(sys.argv[1])
a = torch.randn(128, 128, device=dev)
x = torch.randn(16, 8, 20, 20, device=dev)
w = torch.randn(16, 8, 3, 3, device=dev)
ab, xb, wb = a.bfloat16(), x.bfloat16(), w.bfloat16()
(ab @ ab).float().sum().item()
torch.nn.functional.conv2d(xb, wb).float().sum().item()
with torch.autocast(dev.type, dtype=torch.bfloat16):
    y = torch.nn.functional.conv2d(x.requires_grad_(), w)
    y.float().sum().backward()
def t(f):
    best = float("inf")
    for _ in range(3):
        s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
    return best
r = t(lambda: [torch.nn.functional.conv2d(xb, wb) for _ in range(3)]) / t(
    lambda: [torch.nn.functional.conv2d(x.detach(), w) for _ in range(3)])
print("BF16_OK", r)
"""

_bf16_cache: dict[str, tuple[bool, float]] = {}


def _bf16_probe(device: torch.device) -> tuple[bool, float]:
    key = str(device)
    if key not in _bf16_cache:
        ok, ratio = False, float("inf")
        try:
            out = subprocess.run([sys.executable, "-c", _PROBE, key], capture_output=True,
                                 text=True, timeout=120, env=dict(os.environ))
            for line in out.stdout.splitlines():
                if out.returncode == 0 and line.startswith("BF16_OK"):
                    ok, ratio = True, float(line.split()[1])
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        _bf16_cache[key] = (ok, ratio)
    return _bf16_cache[key]


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matmul/conv run on ``device`` without crashing (checked once, in a
    subprocess: some CPUs advertise instructions their bf16 kernels then die on)."""
    return _bf16_probe(torch.device(device))[0]


def autocast(device: str | torch.device, enabled: bool = True):
    """Mixed precision for the forward pass, where it is safe and pays.

    CUDA: bf16 when the GPU supports it, else fp16 (use a ``GradScaler`` with fp16).
    CPU: bf16 only if the probe passes and bf16 convolutions are faster than fp32 on this
    machine; otherwise a no-op context."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu":
        ok, ratio = _bf16_probe(device)
        if ok and ratio < 0.9:
            return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
