"""Training across processes and machines on ``torch.distributed``, launched by torchrun.

``torchrun --standalone --nproc_per_node=N train.py ...`` (or ``--nnodes=M --node_rank=R
--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT``) starts N processes that train one model:
each holds the ratings of its own contiguous shard of users (grouped by user) and of movies
(grouped by movie), so every rating is held twice across the job, never N times.  gloo on
CPU, NCCL on CUDA, chosen from ``device=``.  Collectives time out (``REC_DIST_TIMEOUT``,
seconds, default 120), so a dead or hung rank stops the job with an error instead of a hang;
the rank that sees it stops the job's other processes on its machine at once (torchrun would
give a hung one 30 s more to answer its SIGTERM).  A plain ``python train.py`` is one process
and never touches this module's collectives.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.rendezvous import rendezvous

from rec.als.exchange import Exchange
from rec.partition import balanced_bounds
from rec.data.shards import BLOCK
from rec.errors import RecError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    """Rank among this machine's processes (torchrun's ``LOCAL_RANK``)."""
    local_world: int = 1
    """Processes of the job on this machine (torchrun's ``LOCAL_WORLD_SIZE``): they share its
    last-level cache."""
    neighbours: tuple[int, ...] = ()
    """Process ids of the job's other ranks on this machine."""

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
            self._collective("all_reduce", dist.all_reduce, t)
        return t

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value]
        self._collective("broadcast", dist.broadcast_object_list, box, src=0)
        return box[0]

    def share_rows(self, t: torch.Tensor, bounds: tuple[int, ...]) -> None:
        """Rank r's rows ``t[bounds[r]:bounds[r + 1]]`` into every rank's ``t``, in place: a
        broadcast from each rank, all in flight together (no padding, no copies)."""
        if not self.active:
            return

        def every_rank_broadcasts():
            works = [dist.broadcast(t[a:b], src=r, async_op=True)
                     for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
            for work in works:
                work.wait()
        self._collective("broadcast", every_rank_broadcasts)

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order (on every rank)."""
        if not self.active:
            return [value]
        out = [None] * self.world
        self._collective("all_gather", dist.all_gather_object, out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            self._collective("barrier", dist.barrier)

    def _collective(self, name: str, call, *args, **kwargs) -> None:
        """``call``; a peer that died or timed out becomes an error that says what to do."""
        try:
            call(*args, **kwargs)
        except RuntimeError as e:  # gloo and NCCL report a lost peer or a timeout so
            self._stop_neighbours()
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise LostPeer(f"rank {self.rank} of {self.world}: another rank stopped answering "
                           f"during {name} ({first}). torchrun's report names the rank that "
                           "failed. Rerun the same command to resume from the last checkpoint, "
                           "or launch with torchrun --max-restarts=N to resume by itself.") from e

    def _stop_neighbours(self) -> None:
        """The job has failed: end its other processes on this machine now, a hung one
        included, so it ends within the timeout (each machine's torchrun ends its own)."""
        for pid in self.neighbours:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # already gone
                pass

    def close(self, clean: bool = True) -> None:
        """Leave the job: after a barrier when this rank finished (``clean``), at once when it
        failed (its peers may be gone, and a barrier would only fail again)."""
        if not (self.active and dist.is_initialized()):
            return
        try:
            if clean:
                self.barrier()
        finally:
            dist.destroy_process_group()


class LostPeer(RecError):
    """A collective failed: another rank died, hung past the timeout, or left the job."""


class RankExchange(Exchange):
    """:class:`rec.als.exchange.Exchange` for one rank of a torch.distributed job.

    Every rank keeps the whole parameter tables U, b, V and c; a step solves the rank's own
    rows (its shard's contiguous users ``user_bounds[r]:user_bounds[r + 1]``, movies
    likewise) against the whole other table into a buffer of its own rows, moves its rows of
    the parameters, and :meth:`share` broadcasts each rank's rows of each table into every
    other rank's, in place, so every rank ends the step with the same parameters one process
    computes.  Each rank sends its own rows to the ``P - 1`` others,
    as a ring all-gather would, with no padding and no copies.  It counts the seconds in
    collectives and the bytes sent (:meth:`take_comm`)."""

    several = True

    def __init__(self, dist_: Dist, user_bounds: tuple[int, ...],
                 item_bounds: tuple[int, ...]) -> None:
        self.dist, self.bounds = dist_, {"user": user_bounds, "item": item_bounds}
        self.cache_sharers = dist_.local_world
        self.comm = {"time/comm_s": 0.0, "comm/mb": 0.0}

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place (a ring all-reduce sends ``2 (P - 1) / P``
        of it)."""
        p = self.dist.world
        return self._timed(t, self.dist.sum_, 2 * (p - 1) / p * t.numel() * t.element_size())

    def share(self, table: torch.Tensor, side: str) -> None:
        """Every rank's own rows of ``table`` into every rank's, in place: one broadcast from
        each rank, all in flight at once."""
        bounds, r = self.bounds[side], self.dist.rank
        sent = (self.dist.world - 1) * table[bounds[r]:bounds[r + 1]].numel() \
            * table.element_size()
        self._timed(table, lambda t: self.dist.share_rows(t, bounds), sent)

    def place(self, count: int) -> tuple[int, int]:
        counts = torch.zeros(self.dist.world, dtype=torch.float64)
        counts[self.dist.rank] = count
        counts = self.total(counts).long()
        return int(counts[:self.dist.rank].sum()), int(counts.sum())

    def take_comm(self) -> dict:
        out, self.comm = self.comm, {"time/comm_s": 0.0, "comm/mb": 0.0}
        return out

    def _timed(self, t: torch.Tensor, call, sent: float):
        """``call(t)``, its seconds and the ``sent`` bytes accounted in :attr:`comm`."""
        start = time.perf_counter()
        out = call(t)
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
        self.comm["time/comm_s"] += time.perf_counter() - start
        self.comm["comm/mb"] += sent / 2 ** 20
        return out


def from_env(device: torch.device) -> Dist:
    """Join the job torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("REC_DIST_TIMEOUT", "120")))
        store, rank, world = next(rendezvous("env://", timeout=timeout))
        store.set_timeout(timeout)
        # torchrun --max-restarts keeps its store across restarts: without a prefix of their
        # own, restarted ranks could read the dead ranks' addresses and fail to connect
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                store=dist.PrefixStore(f"rec/attempt-{attempt}/", store),
                                rank=rank, world_size=world, timeout=timeout)
    job = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
               int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    here = (_machine(), os.environ.get("TORCHELASTIC_RUN_ID", ""))
    ranks = job.gather((*here, os.getpid()))
    neighbours = tuple(pid for r, (*where, pid) in enumerate(ranks)
                       if r != job.rank and tuple(where) == here)
    return Dist(job.rank, job.world, job.local_rank, job.local_world, neighbours)


def _machine() -> str:
    """What tells this machine from another: its boot id where Linux gives one (two machines
    may share a host name), else its host name."""
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:
        return socket.gethostname()


def shard_bounds(degree: torch.Tensor, parts: int) -> torch.Tensor:
    """``parts + 1`` boundaries cutting the rows into contiguous shards of about equal
    ratings."""
    return balanced_bounds(degree, parts)


TABLE_COPIES = 2.05
"""Whole-table copies a rank holds, per table row of K+1 floats, as the code stands: the
parameters and the two gather tables (K+2 floats a row; a checkpoint write adds transient
copies)."""
OWN_TABLE_COPIES = 2
"""Copies of its own rows a rank holds besides: the two solution buffers, a row per own
user and movie, and its rows of the best epoch's parameters (:class:`rec.training.BestEpoch`)."""
PADDED_RATING_BYTES = 8 * 1.07
"""A grouped rating on the torch path: int32 column and float32 value, with ~7% bucket
padding."""
FUSED_RATING_BYTES = 5
"""A rating in the fused kernel's layout: int32 column and a one-byte rating code (data of
at most 256 distinct ratings, as every MovieLens release is)."""
READ_RATING_BYTES = 12
"""A rating as read from the cache (int32 user, int32 movie, float32 value)."""
READ_BLOCK_BYTES = 13 * BLOCK
"""One block of the cache as read (user, movie, rating and split label): all the fused
kernel's layout holds of a side's raw ratings while it fills."""
RATED_ITEM_BYTES = 4
"""A rating in the published model's CSR of what each user rated (int32 movie): rank 0
holds one block of them as they go from a cache ordered by person to the file
(:meth:`rec.model.Recommender.save_from_shard`), all of them from a cache in another order."""
ROW_BYTES = 20
"""What a rank keeps per user and per movie of the whole job besides the tables: the
training degree (int64), the ratings per user of the published model (int64), the prior
weight (float32)."""


def plan(n_users: int, n_items: int, nnz: int, k: int, parts: int,
         held_out: float = 0.1, kernel: str = "fused") -> dict[str, float]:
    """Per-rank memory and traffic of one epoch at ``parts`` ranks, from this module's
    accounting (bytes) for the CPU's fused kernel (``kernel="fused"``) or the torch path
    (``"torch"``): the grouped ratings (each held twice across the job), the raw
    ratings a rank holds while it lays one side out (fused: one block of the cache, the
    layout filled as it reads; torch: the side's ratings whole), the
    validation and test ratings (a ``held_out`` share) of the rank's users, the whole
    tables every rank keeps and the buffers of its own rows, its per-row vectors of the
    whole job, what rank 0 alone holds of the published model's CSR of rated movies at the
    end (its offsets and one block of movies, from a cache ordered by person), the bytes each
    rank sends per epoch when it broadcasts its updated rows (shards of about equal rows),
    and what sending only the needed rows (Spark's
    out-blocks) would send: a rank's ratings touch at most ``min(n, its ratings)`` rows of
    the other table."""
    row = (k + 1) * 4
    tables = (n_users + n_items) * row
    local = 2 * nnz / parts  # ratings this rank groups: its users' and its movies'
    needed = min(n_items, nnz / parts) + min(n_users, nnz / parts)
    read = nnz / parts * READ_RATING_BYTES
    fused = kernel == "fused"
    return {"grouped": local * (FUSED_RATING_BYTES if fused else PADDED_RATING_BYTES),
            "read_side": min(read, READ_BLOCK_BYTES) if fused else read,
            "held_out": held_out * nnz / parts * READ_RATING_BYTES,
            "tables": (TABLE_COPIES + OWN_TABLE_COPIES / parts) * tables,
            "per_row": (n_users + n_items) * ROW_BYTES,
            "rank0_rated": min(nnz, BLOCK) * RATED_ITEM_BYTES + (n_users + 1) * 8,
            "exchange_sent": (parts - 1) / parts * tables, "outblocks_received": needed * row}
