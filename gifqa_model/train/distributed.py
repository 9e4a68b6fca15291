"""One process, one GPU, or `torchrun` DDP: the process group, this process's rank, and
agreement between ranks. Only rank 0 writes files and logs."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank() -> int:
    """This process's rank: the process group's when one is up, else torchrun's RANK, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = dist_info()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def agreed_max(value: float, world: int, device: torch.device) -> float:
    """The largest value over ranks: the slowest rank's clock, or what rank 0 alone knows
    (the others pass 0). Every rank then takes the same learning rate and stops at the same
    step (ranks that disagreed would hang in the next all-reduce)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())
