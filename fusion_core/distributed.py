"""The processes of a torchrun launch: joining the group, which items a rank takes, and gathering results.

``setup_distributed`` joins the process group (or describes the single process); training wraps its
module in DistributedDataParallel, and the data-parallel commands (folder ``fuse``, ``evaluate``,
``compare``) call ``share`` to take their rank's items and ``all_gather`` to collect every rank's results
(gloo on CPU, nccl on CUDA). With one process all of it is plain Python, and no process group is needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistributedContext:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1), else a single process.

    nccl with one GPU per process (LOCAL_RANK) on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if world_size == 1:
        return DistributedContext(device=torch.device(device or ("cuda" if use_cuda else "cpu")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    target = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    return DistributedContext(rank=dist.get_rank(), world_size=world_size, device=target)



def share(items: Sequence[T], rank: int, world_size: int, chunk: int = 1) -> list[T]:
    """Rank ``rank``'s items: ``items`` cut into consecutive chunks of ``chunk``, dealt to the ranks in turn.

    Every item goes to exactly one rank. Dealing whole chunks keeps each chunk together, so a batch of
    ``chunk`` items is the same batch whatever the number of processes.
    """
    if not 0 <= rank < world_size or chunk < 1:
        raise ValueError(f"rank {rank} of {world_size} processes with chunks of {chunk} is not a valid share")
    starts = range(rank * chunk, len(items), world_size * chunk)
    return [item for start in starts for item in items[start:start + chunk]]


def all_gather(value: T, world_size: int) -> list[T]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank; [value] in one process."""
    if world_size == 1:
        return [value]
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(world_size: int) -> None:
    """Wait for every rank (a no-op in one process)."""
    if world_size > 1:
        dist.barrier()


def default_device() -> str:
    """cuda when present, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(text: str | None) -> str | None:
    """``text`` if it names a device this machine has (cpu, cuda, cuda:N); None (the default) passes.

    Raises:
        ValueError: another name, or cuda where there is none; the message lists the allowed values and
            says whether CUDA is present.
    """
    if text is None:
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    present = f"CUDA is present ({count} device(s): cuda:0..cuda:{count - 1})" if count else "CUDA is not present"
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"--device {text!r} is not a device: use cpu, cuda or cuda:N; {present}")
    if text != "cpu" and (not count or int(match.group(1) or 0) >= count):
        choices = f"cpu, cuda or cuda:0..cuda:{count - 1}" if count else "cpu"
        raise ValueError(f"--device {text}: {present}; use {choices}")
    return text
