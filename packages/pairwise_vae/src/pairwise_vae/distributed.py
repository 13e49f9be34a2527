"""Data-parallel training of one model on several devices with torch.distributed (DDP).

``pairwise-vae-train --devices N`` re-executes itself under torchrun
(``python -m torch.distributed.run --standalone --nproc-per-node N``); a process that torchrun
started (``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment) joins the process
group: NCCL on CUDA, where rank r uses ``cuda:LOCAL_RANK``, and gloo on the CPU. Every rank
trains on its own slice of each global batch and DDP averages the gradients, so all ranks hold
the same weights after every step. Rank 0 alone validates and writes files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from pairwise_vae.config import ConfigError
from pairwise_vae.utils import resolve_device

# rank 0 validates and writes plots while the other ranks wait in their next collective
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a data-parallel run (rank 0 of 1 when there is none)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_environment() -> Ranks:
    """The ranks torchrun put in the environment, or a single process without them."""
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    try:
        rank, local_rank, world_size = (int(os.environ.get(name, "0")) for name in names)
    except ValueError:
        raise ConfigError(f"the environment variables {', '.join(names)} must be integers") from None
    return Ranks(rank=rank, local_rank=local_rank, world_size=world_size)


def relaunch_with_torchrun(n_processes: int, module: str, argv: list[str]) -> NoReturn:
    """Replace this process by torchrun running ``python -m module argv`` in ``n_processes`` ranks.

    Signals (Ctrl-C, SIGTERM from a scheduler) then reach torchrun, which passes them on to
    every rank; the ranks agree on when to stop, and rank 0 saves the checkpoint.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n_processes}", "-m", module, *argv]
    os.execv(sys.executable, command)


def device_for_rank(requested: str, ranks: Ranks) -> torch.device:
    """The device of this process: ``requested`` alone, or GPU ``LOCAL_RANK`` in a CUDA data-parallel run.

    Raises:
        ConfigError: a single GPU was named for a multi-GPU run, or too few GPUs are visible.
    """
    device = resolve_device(requested)
    if not ranks.distributed or device.type == "cpu":
        return device
    if device.index is not None:
        raise ConfigError(f"--device {requested} names one GPU, but --devices {ranks.world_size} uses one per process: choose them with CUDA_VISIBLE_DEVICES (make train-pairwise GPUS=0,1)")
    if ranks.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"--devices {ranks.world_size} needs {ranks.world_size} GPUs, but {torch.cuda.device_count()} are visible")
    return torch.device("cuda", ranks.local_rank)


def check_device_count(requested: str, n_processes: int) -> None:
    """Fail before launching when the ``n_processes`` ranks would not each find their device."""
    device_for_rank(requested, Ranks(rank=n_processes - 1, local_rank=n_processes - 1, world_size=n_processes))


def init_process_group(ranks: Ranks, device: torch.device) -> None:
    """Join the process group of a data-parallel run (NCCL on CUDA, gloo on CPU)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=ranks.rank,
        world_size=ranks.world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )


def any_rank(flag: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Element-wise maximum of a 0/1 float tensor over the ranks (in place, without waiting on the host)."""
    if ranks.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def mean_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Average of a float tensor over the ranks (in place)."""
    if ranks.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ranks.world_size
    return values


def broadcast_from_main(value: object, ranks: Ranks) -> object:
    """Rank 0's ``value`` on every rank (a picklable Python object)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_all(ranks: Ranks) -> None:
    """Block until every rank got here (the ranks that do not validate would otherwise exit first)."""
    if ranks.distributed:
        dist.barrier()


def leave_process_group(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()
