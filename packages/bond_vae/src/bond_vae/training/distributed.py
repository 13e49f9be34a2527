"""Data-parallel training of one model on several devices with torch.distributed (DDP).

``bond-vae-train --devices N`` starts N copies of itself on this machine with the
environment torchrun gives its workers (``launch_local_ranks``); ``torchrun`` itself works as
well, on one node or several. A process with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its
environment joins the process group: NCCL on CUDA, where rank r uses ``cuda:LOCAL_RANK``, and
gloo on the CPU. Every rank trains on its own slice of each global batch and DDP averages the
gradients, so all ranks hold the same weights after every step. Rank 0 alone validates and
writes files.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from bond_vae.config import ConfigError
from bond_vae.runtime import resolve_device

# rank 0 validates and writes plots while the other ranks wait in their next collective
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
# exit statuses of a run stopped by SIGINT / SIGTERM (after saving its checkpoint)
STOP_EXIT_CODES = (130, 143)
# after one rank fails, the others get this long to exit on SIGTERM before SIGKILL
FAILURE_GRACE_S = 30.0
POLL_INTERVAL_S = 0.2


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


def free_local_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rank_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The environment of one local rank: what torchrun sets, and a fair share of the CPU threads."""
    environment = dict(os.environ)
    environment.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    return environment


def launch_local_ranks(n_processes: int, module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` as ranks 0..n_processes-1 of one run on this machine.

    Ctrl-C reaches the ranks from the terminal (they share its process group), and a SIGINT or
    SIGTERM sent to this process is passed on to them; the ranks agree on when to stop and rank 0
    saves the checkpoint, while this process waits. When a rank fails, the others are stopped:
    they would otherwise wait in their next collective operation until it times out.

    Returns:
        The exit code of the run: that of the first rank that failed, else that of a requested
        stop (130 or 143), else 0.
    """
    port = free_local_port()
    ranks = [
        subprocess.Popen([sys.executable, "-m", module, *argv], env=rank_environment(rank, n_processes, port))
        for rank in range(n_processes)
    ]

    def pass_on(signal_number: int, _frame: object) -> None:
        signal_running(ranks, signal_number)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return wait_for_ranks(ranks)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_running(processes: list[subprocess.Popen], signal_number: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal_number)


def exit_statuses(processes: list[subprocess.Popen]) -> list[int]:
    """A shell's exit status of each process that has ended (killed by signal N: 128 + N)."""
    codes = [process.returncode for process in processes if process.returncode is not None]
    return [code if code >= 0 else 128 - code for code in codes]


def first_failure(codes: list[int]) -> int | None:
    """The first exit status that is neither success nor a requested stop."""
    return next((code for code in codes if code not in (0, *STOP_EXIT_CODES)), None)


def wait_for_ranks(ranks: list[subprocess.Popen]) -> int:
    """Wait for every rank to exit; once one has failed, stop the others (SIGTERM, later SIGKILL).

    Returns:
        The exit status of the first failure seen, else of a requested stop, else 0.
    """
    failure: int | None = None
    kill_at = float("inf")
    while None in [process.poll() for process in ranks]:  # polls every rank (any() would stop at the first)
        if failure is None:
            failure = first_failure(exit_statuses(ranks))
            if failure is not None:
                kill_at = time.monotonic() + FAILURE_GRACE_S
                signal_running(ranks, signal.SIGTERM)
        elif time.monotonic() > kill_at:
            signal_running(ranks, signal.SIGKILL)
        time.sleep(POLL_INTERVAL_S)
    codes = exit_statuses(ranks)
    if failure is None:
        failure = first_failure(codes)
    return failure if failure is not None else max(codes)


def device_for_rank(requested: str, ranks: Ranks) -> torch.device:
    """The device of this process: ``requested`` alone, or GPU ``LOCAL_RANK`` in a CUDA data-parallel run.

    Raises:
        ConfigError: a single GPU was named for a multi-GPU run, or too few GPUs are visible.
    """
    device = resolve_device(requested)
    if not ranks.distributed or device.type == "cpu":
        return device
    if device.index is not None:
        raise ConfigError(
            f"--device {requested} names one GPU, but --devices {ranks.world_size} uses one per process: "
            "choose them with CUDA_VISIBLE_DEVICES (make train-bond GPUS=0,1)"
        )
    if ranks.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"--devices {ranks.world_size} needs {ranks.world_size} GPUs, but {torch.cuda.device_count()} are visible"
        )
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
