"""Sharing work over the processes of a torchrun launch: which items a rank takes, and gathering results.

``train.setup_distributed`` joins the process group; the data-parallel commands (folder ``fuse``, ``evaluate``,
``compare``) then call ``share`` to take their rank's items and ``all_gather`` to collect every rank's results
(gloo on CPU, nccl on CUDA). With one process both are plain Python, and no process group is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


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
