"""Training across processes and machines on ``torch.distributed``, launched by torchrun.

``torchrun --standalone --nproc_per_node=N train.py ...`` (or ``--nnodes=M --node_rank=R
--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT``) starts N processes that train one model:
each holds the ratings of its own contiguous shard of users (grouped by user) and of movies
(grouped by movie), so every rating is held twice across the job, never N times.  gloo on
CPU, NCCL on CUDA, chosen from ``device=``.  Collectives time out (``REC_DIST_TIMEOUT``,
seconds, default 120), so a dead rank stops the job with an error instead of a hang.  A
plain ``python train.py`` is one process and never touches this module's collectives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the only one that writes logs, checkpoints, metrics and models."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place."""
        if self.active:
            dist.all_reduce(t)
        return t

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def from_env(device: torch.device) -> Dist:
    """Join the job torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("REC_DIST_TIMEOUT", "120")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Dist(dist.get_rank(), dist.get_world_size())


def shard_bounds(degree: torch.Tensor, parts: int) -> torch.Tensor:
    """``parts + 1`` boundaries cutting the rows into contiguous shards of about equal
    ratings (one more per row, so that rows without ratings are shared out too)."""
    load = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(degree.double() + 1, 0)])
    bounds = torch.searchsorted(load, torch.linspace(0, float(load[-1]), parts + 1,
                                                     dtype=torch.float64))
    bounds[0], bounds[-1] = 0, degree.numel()
    return torch.cummax(bounds, 0).values
