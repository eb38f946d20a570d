"""Data-parallel training across processes: torchrun + torch.distributed (DDP).

Launch any training with torchrun; the trainer notices the environment by itself::

    torchrun --nproc_per_node 2 -m deeparch train lenet5 --data digits --out runs/ddp

* backend: NCCL on CUDA (one GPU per process, ``LOCAL_RANK``), gloo on CPU;
* ``batch_size`` stays the *global* batch: each of ``W`` processes takes ``B / W``
  samples of the batch one process would take (``BatchStream(rank=, world_size=)``), and
  the loss is scaled so that the averaged gradient is that of the whole global batch,
  also for a smaller last batch. So W processes reach the weights of one process (up to
  the order of floating-point sums);
* batch norm: converted to ``SyncBatchNorm`` on CUDA; on CPU PyTorch has no
  SyncBatchNorm, so each process normalises with its own half-batch statistics (the
  result then differs slightly from one process);
* only rank 0 writes files (checkpoints, logs, plots) and prints.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import TrainingError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    A no-op returning rank 0 of 1 when not launched by torchrun or already initialised."""
    if dist.is_available() and dist.is_initialized():
        return info()
    if env_world_size() <= 1:
        return DistInfo()
    if not dist.is_available():
        raise TrainingError("this PyTorch build has no torch.distributed; run with one process.")
    use_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"could not join the {backend} process group ({exc}); launch with "
                            f"torchrun --nproc_per_node N.") from exc
    return info()


def info() -> DistInfo:
    """This process's rank, the world size and the local rank (0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def is_main() -> bool:
    return info().is_main


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (SyncBatchNorm on CUDA); unchanged when alone."""
    if not info().enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over all processes (in place; itself when alone)."""
    if info().enabled:
        dist.all_reduce(t)
    return t


def all_min(t: torch.Tensor) -> torch.Tensor:
    if info().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def local_device(pref: str = "auto") -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under torchrun with GPUs."""
    from .speed import select_device

    try:
        dev = select_device(pref)
    except RuntimeError as exc:
        raise TrainingError(f"device {pref!r} is not a device PyTorch knows ({exc}); use auto, "
                            f"cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {pref!r} asks for a CUDA GPU but none is available; use "
                            f"--device cpu (or auto).")
    if dev.type == "cuda" and dev.index is None:
        d = info()
        dev = torch.device("cuda", d.local_rank if d.enabled else torch.cuda.current_device())
    return dev


__all__ = ["DistInfo", "all_min", "all_sum", "barrier", "cleanup", "env_world_size", "info",
           "init_from_env", "is_main", "local_device", "wrap"]
