"""Multi-process evaluation under ``torchrun`` (spec §7): the process group, a shard per rank, summed states.

The evaluation scripts run unchanged as one process; started by ``torchrun --nproc_per_node=N`` (which sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address), each rank evaluates its shard of the data
and the metric states, all sums, are added across ranks, so that N processes give the metrics of one:

    rank, world_size = init_from_env(device)
    subset = torch.utils.data.Subset(dataset, shard_indices(len(dataset), rank, world_size, block=batch_size))
    ...
    state = all_reduce_sums(metrics.state_dict())
    cleanup()

NCCL on CUDA, gloo on CPU. There is no launcher of our own.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sums", "cleanup", "init_from_env", "is_main", "shard_indices"]


def init_from_env(device: str | torch.device) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment; returns ``(rank, world_size)``.

    With ``WORLD_SIZE`` unset or 1 (a plain ``python script.py``) nothing is initialised and ``(0, 1)`` is
    returned. Otherwise the backend is NCCL for a CUDA ``device`` (and the process uses GPU ``LOCAL_RANK``), gloo
    for the CPU. Calling it again once initialised returns the group's rank and size.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str | torch.device) -> torch.device:
    """``device``, with a bare ``"cuda"`` made this process's GPU (``LOCAL_RANK``) under ``torchrun``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def is_main() -> bool:
    """Whether this is rank 0 (or the only process): the one that prints and writes results."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def shard_indices(n: int, rank: int, world_size: int, *, block: int = 1) -> list[int]:
    """This rank's items of ``range(n)``: every item on exactly one rank, no padding duplicates.

    Blocks of ``block`` consecutive items go round-robin (block ``b`` to rank ``b % world_size``); ``block=1`` is
    ``range(rank, n, world_size)``. With ``block`` = the batch size, each rank's batches are batches of the
    single-process run, so the maps (which batching can change by float rounding) are the same too.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    starts = range(rank * block, n, world_size * block)
    return [index for start in starts for index in range(start, min(start + block, n))]


def all_reduce_sums(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every number (and every element of a list of numbers) summed across the ranks.

    The values travel as one float64 tensor (integers below 2**53, e.g. pixel counts, stay exact) and come back
    with their types (``int`` stays ``int``). Without an initialised process group, ``state`` is returned as is.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return state
    flat: list[float] = []
    for key, value in state.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise TypeError(f"state[{key!r}] must be a number or a list of numbers, got {value!r}")
            flat.append(float(item))
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(flat, dtype=torch.float64, device=backend_device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    summed = iter(total.cpu().tolist())

    def typed(like: int | float, value: float) -> int | float:
        return round(value) if isinstance(like, int) else value

    return {
        key: type(value)(typed(item, next(summed)) for item in value)
        if isinstance(value, (list, tuple))
        else typed(value, next(summed))
        for key, value in state.items()
    }


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
