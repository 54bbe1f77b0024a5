"""Several training processes (``torchrun``): who is who, and the few collectives the trainer uses.

Without ``torchrun`` there is one process (``world == 1``) and every helper here does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Rank and world size of this process (``world == 1`` without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    The backend defaults to ``nccl`` with CUDA and ``gloo`` on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return DistInfo(dist.get_rank(), dist.get_world_size())


def rank_tensor(values: list[float], device: torch.device, world: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A small tensor for the ranks to reduce or broadcast: on the training device when there are
    several (NCCL reduces GPU tensors only), else on the CPU (no device copy per step)."""
    return torch.tensor(values, dtype=dtype, device=device if world > 1 else "cpu")


def all_reduce_(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` over the ranks in place."""
    if world > 1:
        dist.all_reduce(t)
    return t


def broadcast_(t: torch.Tensor, world: int) -> torch.Tensor:
    """Rank 0's ``t`` on every rank, in place."""
    if world > 1:
        dist.broadcast(t, src=0)
    return t


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average ``.grad`` over ranks in one flat all-reduce (used for D, whose graph is shared)."""
    if world <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
