"""Fast CPU kernels for training small CNNs, each equal to the plain layers it replaces.

Used by :func:`deeparch.train.speed.prepare_for_training`, which installs them on the
modules of a model (the modules keep their types, names and parameters). Every function
here computes what the PyTorch layers compute, up to float summation order, with the
same gradients (dropout: the same distribution, other random draws).

What each one removes, measured on this project's 2-core AMD EPYC (AVX2), one thread,
batch 256 of 1x28x28 (fashion_cnn's first block, 32 maps of 26x26 = 22 MB per batch);
the whole-step figures are in ``benchmarks/RESULTS.md``:

* :func:`conv2d_gemm` - a convolution of one or two input channels as ONE matrix
  product over an im2col matrix, written channels-last. ``F.conv2d`` (oneDNN) spent
  40-50 ms on the forward pass of 1->32 3x3, the GEMM 4 ms; forward + weight gradient
  2x faster. The bias rides in the GEMM as an extra weight column (``addmm`` first
  broadcast-filled the whole 22 MB output with it), and the weight gradient is
  ``cols @ grad`` (autograd's own layout for it, ``(grad.t() @ cols.t()).t()``, ran
  5x slower; a third layout 40x slower).
* :func:`conv_relu_pool_dropout` - conv -> ReLU -> max-pool -> dropout as one autograd
  function: the ReLU after the pooling (exact: ReLU commutes with max) on 4x fewer
  elements, ReLU and dropout as one multiplier, PyTorch's channels-last max-pool kernel
  (NCHW max-pool forward+backward: 45 ms; channels-last: 12 ms) and the 22 MB conv map
  never stored whole: made and pooled in 8 MB chunks, its gradient rebuilt chunk by
  chunk for the weight-gradient GEMM. (Chunks looked like a 1.4x gain until the real
  cause showed: page faults on the freshly allocated map every step, which
  :func:`deeparch.train.speed.retain_freed_memory` removes; after that, chunks of
  2-8 MB gain 3-5% over one piece on one thread, smaller ones lose on two threads (more
  barriers), and smaller backward pieces gained nothing.)
* :func:`dropout_fast` - a dropout mask from 16 random bits per element (one full
  64-bit ``random_`` draw serves four elements) instead of one ``bernoulli_`` float draw
  per element: 3.5 ms instead of 13-16 ms for 1.4 M elements. P(keep) is rounded to a
  multiple of 1/65536 (error <= 8e-6) and kept values are scaled by 1 / that rounded
  probability, so the layer stays unbiased.
* :func:`linear_on_cl` - Flatten -> Linear on the block's channels-last output: the
  activation is read in memory order and the weight's columns permuted to match, which
  replaces two transposing copies of the 5.5 MB activation (forward, and its gradient
  backward) with two of the 2.8 MB weight (2 threads: step 37 -> 33 ms).
* :func:`max_pool2d_cl` - for a channels-last input, hands the channels-last backward
  kernel a channels-last gradient (an NCHW one, as a following Flatten returns, made it
  2-3x slower).

With only these, fashion_cnn's step (2 threads) took ~33 ms: the three dense1 products
(~10 ms, arithmetic), the conv GEMM and the pooling backward's zero fill of the 22 MB
map and the GEMM reading it (~14 ms: memory bandwidth; this VM streams 3-8 GB/s once the
step's working set leaves the cache), the serial 64-bit random draws for the mask (2 ms).

* The compiled kernel (``_convpool.c``, an optional C extension that ``pip install``
  builds; :func:`convpool_available`) removes that memory traffic: for each pooling
  window it computes the conv outputs of all window positions in vector registers
  (channels in blocks of 8, four positions at a time so the multiply-adds do not wait on
  each other), keeps the maximum, applies ReLU and dropout, and stores only the pooled
  value and one byte (the winning position) per output. Its dropout mask comes from a
  counter-based generator (splitmix64 of the element index and one seed drawn from
  torch's default generator), so the backward pass recomputes it instead of storing it
  and ``torch.manual_seed`` still makes runs reproducible. It runs on PyTorch's own
  OpenMP threads (``GOMP_parallel`` of the runtime torch loaded): threads of its own
  competed with torch's spinning workers (in a profiled step the kernel took 8 ms
  instead of the 4.5 ms it takes alone).
  The step: 35.3 -> 24.2 ms on 2 threads, 56.3 -> 39.9 ms on one
  (``benchmarks/RESULTS.md``, ablation A6 -> A7).
  Without a C compiler the PyTorch formulation above is used, with the same results.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv2d_gemm", "conv_gemm_applies", "conv_relu_pool_dropout", "linear_on_cl",
           "max_pool2d_cl", "pool_args", "pool_cl_applies",
           "dropout_fast", "dropout_mask", "keep_threshold", "convpool_available",
           "convpool_geometry"]


# ---------------------------------------------------------------- convolution
def conv_gemm_applies(conv: torch.nn.Conv2d) -> bool:
    """Whether :func:`conv2d_gemm` handles this convolution and pays for it: groups 1,
    zero padding given as numbers, one or two input channels and at least 16 output
    channels. Measured (1 thread, forward + weight gradient, batch 256): 1->32 3x3 and
    5x5 on 28x28, 2->32 3x3, 1->64 3x3 run 1.7-2.3x faster than ``F.conv2d``; but
    1->6 5x5 (LeNet: too few output columns for the GEMM) and 3->16 / 3->32 (oneDNN has
    a fast RGB first-layer path) run slower, and 32->32 with an input gradient 3-4x slower."""
    return (isinstance(conv, torch.nn.Conv2d) and conv.groups == 1
            and not isinstance(conv.padding, str) and conv.padding_mode == "zeros"
            and conv.in_channels <= 2 and conv.out_channels >= 16)


def _im2col(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation
            ) -> tuple[Tensor, Tensor, tuple[int, int, int]]:
    """(cols, w2, (n, ho, wo)) with ``conv(x) == (cols.t() @ w2.t())`` as (n*ho*wo) x C rows.

    cols is taps-major, (C*kh*kw [+1]) x (n*ho*wo), so that the weight gradient
    ``cols @ grad`` is a product with both operands in their natural layout (the
    transposed layout is 5x slower in MKL for this shape)."""
    n, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
        h, w = h + 2 * ph, w + 2 * pw
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (w - dw * (kw - 1) - 1) // sw + 1
    sN, sC, sH, sW = x.stride()
    k, m = c * kh * kw, n * ho * wo
    taps = x.as_strided((c, kh, kw, n, ho, wo), (sC, dh * sH, dw * sW, sN, sh * sH, sw * sW),
                        x.storage_offset())
    w2 = weight.reshape(cout, k)
    if bias is not None:
        # the bias as one more column of the weight against a row of ones in cols: the
        # GEMM adds it (addmm would first fill the whole 22 MB output with the broadcast
        # bias, a pass that cost as much as the product) and the weight-gradient GEMM
        # yields the bias gradient as its last row (no separate sum over the output)
        w2 = torch.cat([w2, bias.view(cout, 1)], 1)
        if x.requires_grad:
            cols = torch.cat([taps.reshape(k, m), x.new_ones(1, m)])
        else:
            cols = x.new_empty(k + 1, m)
            cols[:k].view(c, kh, kw, n, ho, wo).copy_(taps)
            cols[k].fill_(1.0)
    else:
        cols = taps.reshape(k, m)
    return cols, w2, (n, ho, wo)


def conv2d_gemm(x: Tensor, weight: Tensor, bias: Tensor | None, stride=(1, 1),
                padding=(0, 0), dilation=(1, 1)) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation)`` (groups 1) as im2col + GEMM.

    Returns an N x C x H x W tensor in channels-last memory (the GEMM writes
    (N*H*W) x C rows)."""
    cols, w2, (n, ho, wo) = _im2col(x, weight, bias, stride, padding, dilation)
    y = _ColsMatmul.apply(cols, w2)
    return y.view(n, ho, wo, w2.shape[0]).permute(0, 3, 1, 2)


class _ColsMatmul(torch.autograd.Function):
    """``cols.t() @ w2.t()`` with the backward products in fast layouts.

    Autograd's own mm backward would compute the weight gradient as
    ``(grad.t() @ cols.t()).t()`` (to match the transposed weight operand), a layout MKL
    runs 5-30x slower for a (32 x 173k) @ (173k x 9) product than ``cols @ grad``."""

    @staticmethod
    def forward(ctx, cols: Tensor, w2: Tensor) -> Tensor:
        ctx.save_for_backward(cols, w2)
        return torch.mm(cols.t(), w2.t())

    @staticmethod
    def backward(ctx, g: Tensor):
        cols, w2 = ctx.saved_tensors
        g = g.contiguous()
        gcols = gw = None
        if ctx.needs_input_grad[0]:
            gcols = torch.mm(w2.t(), g.t())                   # (K, N*H*W)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(cols, g).t()                         # (K, C) -> (C, K)
        return gcols, gw


# ---------------------------------------------------------------- max pooling
def pool_cl_applies(pool: torch.nn.MaxPool2d) -> bool:
    """Any ``nn.MaxPool2d`` without ``return_indices`` (the channels-last kernel has the
    same semantics for every kernel, stride, padding, dilation and ceil_mode)."""
    return isinstance(pool, torch.nn.MaxPool2d) and not pool.return_indices


def max_pool2d_cl(x: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                  ceil_mode: bool = False) -> Tensor:
    """``F.max_pool2d`` that hands its channels-last backward kernel a channels-last
    gradient. A channels-last input already runs PyTorch's channels-last kernel; but
    when the next layer is a Flatten, the gradient comes back NCHW and that backward
    kernel runs 2-3x slower on it than a layout conversion plus the kernel. (Converting
    an NCHW *input* to channels-last does not pay: measured on fashion_cnn, the step
    got 15% slower, as every neighbouring op then mixes layouts.)"""
    out = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    if out.requires_grad and x.dim() == 4 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last):
        return _GradChannelsLast.apply(out)
    return out


class _GradChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g.contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- dropout
def dropout_mask(shape, p: float, device=None, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, float]:
    """A boolean keep-mask with P(keep) = 1 - p rounded to 1/65536, and 1 / that P."""
    numel = 1
    for s in shape:
        numel *= int(s)
    thr, scale = keep_threshold(p)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    # full 64-bit draws (the default range would leave the top bit 0): four 16-bit lanes
    words.random_(-2 ** 63, None, generator=generator)
    lanes = words.view(torch.int16)[:numel].view(shape)
    keep = lanes >= (thr - 32768)            # int16 lane + 32768 is uniform on [0, 65536)
    return keep, scale


def keep_threshold(p: float) -> tuple[int, float]:
    """Dropout from 16 random bits: an element is dropped iff its 16-bit draw is below
    ``thr = round(p * 65536)`` (at most 65535), so P(keep) is 1 - p rounded to 1/65536,
    and kept values are scaled by ``scale`` = 1 / that P (the layer stays unbiased)."""
    thr = min(65535, int(round(p * 65536)))
    return thr, 65536 / (65536 - thr)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, mult: Tensor) -> Tensor:
        ctx.save_for_backward(mult)
        return x * mult

    @staticmethod
    def backward(ctx, g: Tensor):
        (mult,) = ctx.saved_tensors
        out = torch.empty_like(mult)          # x's memory format, whatever g's is
        return torch.mul(g, mult, out=out), None


def dropout_fast(x: Tensor, p: float, training: bool = True,
                 generator: torch.Generator | None = None) -> Tensor:
    """``F.dropout(x, p, training)`` with a cheaper mask (see the module docstring)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last):
        # draw the mask in x's memory order, so that every product below runs contiguous
        keep, scale = dropout_mask(x.permute(0, 2, 3, 1).shape, p, x.device, generator)
        keep = keep.permute(0, 3, 1, 2)
    else:
        x = x.contiguous()
        keep, scale = dropout_mask(x.shape, p, x.device, generator)
    # one float multiplier (0 or 1/keep), built once and reused by the backward pass
    mult = keep * scale if x.dtype == torch.float32 else (keep * scale).to(x.dtype)
    return _MaskedScale.apply(x, mult)


# ---------------------------------------------------------------- fused block
CHUNK_BYTES = 8 << 20   # conv-map bytes per chunk (fashion_cnn, batch 256: 3 chunks)


class _ConvPoolReluDropout(torch.autograd.Function):
    """``dropout(relu(max_pool(cols.t() @ w2.t())))``, output in channels-last memory.

    * ReLU is monotone, so ``max_pool(relu(y)) == relu(max_pool(y))`` exactly, and the
      gradients agree too: where the pooled maximum is > 0 both route the gradient to
      the first maximum of the window; where it is <= 0 both give zero. So the ReLU runs
      on the 4x smaller pooled map, and ReLU and dropout become one multiplier (0 or
      1/keep) that serves the forward and the backward pass.
    * The convolution output (22 MB for 32x26x26 maps, batch 256) is never stored: it is
      computed ``chunk`` samples at a time and pooled; the backward pass rebuilds each
      chunk's gradient from the pooling indices and feeds it to the weight-gradient GEMM
      at once (only the indices and the 10-row im2col matrix are kept).
    """

    @staticmethod
    def forward(ctx, cols: Tensor, w2: Tensor, geom: tuple, pool_args: tuple, p: float,
                training: bool, chunk: int) -> Tensor:
        n, ho, wo = geom
        cout = w2.shape[0]
        L = ho * wo
        pooled, idx = None, []
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            y = torch.mm(cols[:, a * L:b * L].t(), w2.t()).view(b - a, ho, wo, cout)
            # (the out= variant of the pooling runs 2.5x slower into slices: copy instead)
            pc, ic = torch.ops.aten.max_pool2d_with_indices(y.permute(0, 3, 1, 2), *pool_args)
            if b == n and a == 0:
                pooled = pc
            else:
                if pooled is None:
                    pooled = torch.empty((n,) + tuple(pc.shape[1:]), dtype=pc.dtype,
                                         device=pc.device, memory_format=torch.channels_last)
                pooled[a:b].copy_(pc)
            idx.append(ic)
        mult = pooled > 0
        if training and p > 0:
            keep, scale = dropout_mask(pooled.permute(0, 2, 3, 1).shape, p, pooled.device)
            # (in place, then one cast: bool * float made a slow casting copy first)
            mult = mult.logical_and_(keep.permute(0, 3, 1, 2)).to(pooled.dtype).mul_(scale)
        else:
            mult = mult.to(pooled.dtype)
        # the output stays channels-last: a Flatten after it makes the NCHW order (one
        # transposing copy), or linear_on_cl skips that by permuting the weight instead
        out = pooled.mul_(mult)
        ctx.save_for_backward(cols, w2, mult)
        ctx.idx = idx
        ctx.geom, ctx.pool_args, ctx.chunk = geom, pool_args, chunk
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        cols, w2, mult = ctx.saved_tensors
        idx = ctx.idx
        n, ho, wo = ctx.geom
        cout, k = w2.shape
        L = ho * wo
        gp = torch.mul(g.contiguous(memory_format=torch.channels_last), mult)
        need_cols, need_w = ctx.needs_input_grad[:2]
        gw = cols.new_zeros(k, cout) if need_w else None
        gcols = cols.new_empty(k, n * L) if need_cols else None
        chunk = ctx.chunk
        for i, a in enumerate(range(0, n, chunk)):
            b = min(n, a + chunk)
            like = torch.empty((b - a, cout, ho, wo), dtype=g.dtype, device=g.device,
                               memory_format=torch.channels_last)   # shape only, never read
            gy = torch.ops.aten.max_pool2d_with_indices_backward(
                gp[a:b], like, *ctx.pool_args, idx[i])
            gy2 = gy.permute(0, 2, 3, 1).reshape((b - a) * L, cout)
            if need_w:
                gw.addmm_(cols[:, a * L:b * L], gy2)
            if need_cols:
                gcols[:, a * L:b * L] = torch.mm(w2.t(), gy2.t())
        del ctx.idx
        return gcols, (gw.t() if need_w else None), None, None, None, None, None


def pool_args(pool: torch.nn.MaxPool2d) -> tuple:
    """(kernel, stride, padding, dilation, ceil_mode) as aten's max_pool2d wants them."""
    def pair(v):
        return list(v) if isinstance(v, (tuple, list)) else [v, v]
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (pair(pool.kernel_size), pair(stride), pair(pool.padding), pair(pool.dilation),
            bool(pool.ceil_mode))


def conv_relu_pool_dropout(x: Tensor, conv: torch.nn.Conv2d, pool: torch.nn.MaxPool2d,
                           p: float = 0.0, training: bool = False,
                           chunk_bytes: int | None = None, kernel: str = "auto") -> Tensor:
    """``dropout(max_pool(relu(conv(x))), p)``, output in channels-last memory.

    ``kernel``: ``"c"`` the compiled one-pass kernel (:func:`convpool_geometry` says where
    it applies), ``"torch"`` the im2col GEMM convolution with PyTorch's channels-last max
    pooling, chunk by chunk (``chunk_bytes`` of conv map at a time), then ReLU and dropout
    as one multiply; ``"auto"`` the first of the two that applies."""
    if kernel not in ("auto", "c", "torch"):
        raise ValueError(f"kernel must be 'auto', 'c' or 'torch', not {kernel!r}.")
    if x.dim() == 4 and x.shape[0] == 0:          # an empty batch: the plain layers
        return type(pool).forward(pool, F.relu(type(conv).forward(conv, x)))
    if kernel != "torch":
        geom_c = convpool_geometry(x, conv, pool)
        if geom_c is not None:
            return _ConvPoolC.apply(x, conv.weight, conv.bias, geom_c, float(p),
                                    bool(training))
        if kernel == "c":
            raise ValueError("the compiled conv/pool kernel does not apply here ("
                             + ("it is not built" if _convpool is None else
                                "float32 CPU tensors, groups 1, zero padding, and a max-pool "
                                "without padding or dilation whose windows fit") + ").")
    cols, w2, geom = _im2col(x, conv.weight, conv.bias, conv.stride, conv.padding,
                             conv.dilation)
    n, ho, wo = geom
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    chunk = max(1, min(n, chunk_bytes // max(1, ho * wo * w2.shape[0] * x.element_size())))
    return _ConvPoolReluDropout.apply(cols, w2, geom, pool_args(pool), float(p),
                                      bool(training), chunk)


# ---------------------------------------------------------------- compiled block
try:                                  # built by setup.py where a C compiler exists
    from . import _convpool
except ImportError:                   # pragma: no cover - depends on the install
    _convpool = None


def _torch_openmp() -> bool:
    """Point the compiled kernel at the GNU OpenMP runtime PyTorch loaded (found in
    ``/proc/self/maps``), so that it runs on torch's intra-op threads; where there is none
    (other platforms, an Intel OpenMP build) it starts POSIX threads of its own."""
    import ctypes
    import re

    try:
        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*/libgomp[^/\s]*\.so[.\d]*)", f.read())))
        torch_dir = os.path.dirname(torch.__file__)
        own = [p for p in paths if p.startswith(torch_dir)]      # the wheel's bundled copy
        if not own and len(paths) == 1 and "OpenMP" in torch.__config__.parallel_info():
            own = paths                   # a torch linked against the system's libgomp
        if len(own) != 1:
            return False
        lib = ctypes.CDLL(own[0])
        addr = [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0 for name in
                ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")]
        return bool(_convpool.set_openmp(*addr))
    except (OSError, AttributeError, ValueError):
        return False


if _convpool is not None:
    _torch_openmp()


def convpool_available() -> bool:
    """Whether the compiled conv -> max-pool -> ReLU kernel was built at install time."""
    return _convpool is not None


def convpool_geometry(x: Tensor, conv: torch.nn.Conv2d, pool: torch.nn.MaxPool2d
                      ) -> tuple | None:
    """The geometry tuple of the compiled kernel for ``pool(relu(conv(x)))``, or None
    where it does not apply: it needs float32 CPU tensors, groups 1 and zero padding (as
    numbers) in the convolution, and a max-pool without padding or dilation whose
    windows all lie inside the conv output (with ``ceil_mode``: only when no window
    would hang over the edge)."""
    if _convpool is None or type(x) is not Tensor or x.dim() != 4 or x.shape[0] == 0:
        return None                   # (an empty batch: nothing to gain, no buffers)
    w = conv.weight
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and w.device.type == "cpu" and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and x.shape[1] == w.shape[1]
            and (conv.bias is None or conv.bias.dtype == torch.float32)):
        return None
    k, s, pad, dil, ceil = pool_args(pool)
    if pad != [0, 0] or dil != [1, 1] or pool.return_indices or k[0] * k[1] > 254:
        return None
    n, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    ho = (h + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    wo = (wd + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    if ho < k[0] or wo < k[1]:
        return None
    if ceil and ((ho - k[0]) % s[0] or (wo - k[1]) % s[1]):
        return None                   # ceil_mode would add a partial window
    return (n, cin, h, wd, cout, kh, kw, conv.stride[0], conv.stride[1], conv.padding[0],
            conv.padding[1], conv.dilation[0], conv.dilation[1], k[0], k[1], s[0], s[1])


def _threads(n: int) -> int:
    return max(1, min(torch.get_num_threads(), 64, n))


class _ConvPoolC(torch.autograd.Function):
    """``dropout(relu(max_pool(conv(x))))`` through the compiled kernel
    (``_convpool.c``): each pooling window's conv outputs are made, compared and dropped
    in registers; only the pooled map and a byte per output (the winning window
    position) are stored, and the backward pass reads them back instead of rebuilding
    the conv map's gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, geom: tuple, p: float,
                training: bool) -> Tensor:
        n, cin, h, w, cout = geom[:5]
        hp, wp = _convpool.output_size(geom)
        x = x.contiguous()
        wt = weight.detach().reshape(cout, -1).t().contiguous()          # taps x cout
        b = bias.detach().contiguous() if bias is not None else None
        drop = _dropout_args(p if training else 0.0)
        out = torch.empty((n, cout, hp, wp), dtype=torch.float32,
                          memory_format=torch.channels_last)
        need = any(ctx.needs_input_grad[:3])
        arg = torch.empty((n, hp, wp, cout), dtype=torch.uint8) if need else None
        _convpool.forward(geom, drop, x.data_ptr(), wt.data_ptr(), _ptr(b), out.data_ptr(),
                          _ptr(arg), torch.get_num_threads())
        if need:
            ctx.save_for_backward(x, wt, arg)
            ctx.geom, ctx.drop = geom, drop
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, wt, arg = ctx.saved_tensors
        geom = ctx.geom
        n, cin, h, w, cout = geom[:5]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g = g.contiguous(memory_format=torch.channels_last)
        t = _threads(n)
        gx = torch.zeros_like(x) if need_x else None
        gw = torch.zeros((t,) + tuple(wt.shape)) if need_w else None
        gb = torch.zeros(t, cout) if need_b else None
        _convpool.backward(geom, ctx.drop, x.data_ptr(), wt.data_ptr(), g.data_ptr(),
                           arg.data_ptr(), _ptr(gx), _ptr(gw), _ptr(gb), t)
        gweight = gw.sum(0).t().reshape(cout, cin, geom[5], geom[6]) if need_w else None
        gbias = gb.sum(0) if need_b else None
        return gx, gweight, gbias, None, None, None


def _dropout_args(p: float) -> tuple[int, int, float]:
    """(seed, threshold, scale) for the compiled kernel's dropout, as :func:`dropout_mask`
    defines it (P(keep) rounded to 1/65536, kept values scaled by 1 / that): the seed is
    one 64-bit draw of torch's default generator, so ``torch.manual_seed`` makes the masks
    reproducible."""
    if p <= 0.0:
        return (0, 0, 1.0)
    thr, scale = keep_threshold(p)
    seed = int(torch.empty((), dtype=torch.int64).random_(-2 ** 63, None)) & (2 ** 64 - 1)
    return (seed, thr, scale)


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


# ---------------------------------------------------------------- flatten + linear
def linear_on_cl(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x.flatten(1), weight, bias)`` for a channels-last ``x``, without
    flattening to NCHW order: the input is read in its memory order (a view) and the
    weight's columns are permuted to match (a 2.8 MB copy for fashion_cnn's dense1,
    instead of a transposing copy of the 5.5 MB activation forward and its gradient
    backward). Same products, summed in another order."""
    n, c, h, w = x.shape
    xf = x.permute(0, 2, 3, 1).reshape(n, h * w * c)           # a view: x is channels-last
    wp = weight.view(weight.shape[0], c, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return F.linear(xf, wp, bias)


def is_channels_last_only(x: Tensor) -> bool:
    """A 4-D tensor laid out channels-last and not also NCHW-contiguous (C > 1)."""
    return (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))
