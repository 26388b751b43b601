"""ALS over shards of users and movies, one per process of a ``torch.distributed`` job.

Rank ``r`` of P holds the ratings of users ``[u_r, u_{r+1})`` grouped by user and those of
movies ``[i_r, i_{r+1})`` grouped by movie, both ranges contiguous and balanced by rating
count (:class:`rec.data.shards.Shard`, which reads each side from the cache when it is laid
out).  Every rank keeps the whole ``[U | b]`` and ``[V | c]``: a step solves the rank's own
rows against the whole other table, and :meth:`ShardedALS.share` broadcasts each rank's
solved rows into every other rank's solution buffer, in place, so every rank ends the step
with the same parameters a single process computes.  Each rank sends its own rows to the
``P - 1`` others, as a ring all-gather would, with no padding and no copies.  The genre
step needs only V, which every rank then holds, and runs on every rank alike; training
errors are summed over the ranks.
"""

from __future__ import annotations

import time

import torch

from rec.als.engine import ALS
from rec.als.groups import stream_rows, unit_values
from rec.als.params import Params
from rec.data.shards import Shard
from rec.distributed import Dist


class ShardedALS(ALS):
    """:class:`ALS` on this rank's ``shard`` of the training ratings."""

    def __init__(self, cfg, shard: Shard, genre_matrix, dist: Dist, **kwargs) -> None:
        self.dist, self.shard = dist, shard
        self.user_bounds, self.item_bounds = shard.user_bounds, shard.item_bounds
        self.comm = {"time/comm_s": 0.0, "comm/mb": 0.0}
        """Seconds in collectives and megabytes each rank sent, since the last
        :meth:`take_comm` (as :meth:`total` and :meth:`share` count them)."""
        # the implicit loss counts interactions, which the layouts' degrees summed give
        degrees = None if cfg.implicit else (shard.user_degree, shard.item_degree)
        super().__init__(cfg, None, None, None, shard.n_users, shard.n_items, genre_matrix,
                         mu=shard.train_mean, degrees=degrees, **kwargs)
        self._n_train = shard.sizes["train"]

    def _layout(self, *_):
        """Each side laid out as it is read from the cache: the fused kernel's layout is
        filled block by block, so a rank never holds a side's ratings as read (the torch
        path's padded groups read one side whole, then drop it)."""
        return self._side("item"), self._side("user")

    def _side(self, by: str):
        n_rows, n_cols = (self.n_users, self.n_items) if by == "user" else (self.n_items,
                                                                           self.n_users)
        if self.sizes.kernel != "fused":
            return self._group(*self.shard.side(by), n_rows, n_cols)
        values = self.shard.rating_values
        blocks, degree = lambda: self.shard.side_blocks(by), self.shard.side_degree(by)
        least = self.cfg.interaction_min if self.implicit else None
        if least is not None:  # the implicit loss's interactions only, counted by one more read
            blocks = lambda: ((r[v >= least], c[v >= least], v[v >= least])
                              for r, c, v in self.shard.side_blocks(by))
            degree = torch.zeros(n_rows, dtype=torch.int64)
            for r, _, _ in blocks():
                degree += torch.bincount(torch.from_numpy(r).long(), minlength=n_rows)
        layout = stream_rows(blocks, degree, n_cols,
                             None if values is None else torch.tensor(values),
                             self.sizes.tile_cols, self.sizes.tile_min, self.dtype,
                             self.most_split())
        return unit_values(layout) if self.implicit else layout

    @property
    def n_train(self) -> int:
        return self._n_train

    def own_part(self, n: int) -> slice:
        r, p = self.dist.rank, self.dist.world
        return slice(n * r // p, n * (r + 1) // p)

    def cache_sharers(self) -> int:
        return self.dist.local_world

    def share(self, theta: torch.Tensor, side: str) -> None:
        """Every rank's own rows of ``theta`` into every rank's, in place: one broadcast from
        each rank, all in flight at once (each rank sends its rows to the ``P - 1`` others)."""
        bounds = self.user_bounds if side == "user" else self.item_bounds
        mine = bounds[self.dist.rank + 1] - bounds[self.dist.rank]
        sent = (self.dist.world - 1) * mine * theta.shape[1] * theta.element_size()
        self._timed(theta, lambda t: self.dist.share_rows(t, bounds), sent)

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

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place (a ring all-reduce sends ``2 (P - 1) / P``
        of it)."""
        p = self.dist.world
        return self._timed(t, self.dist.sum_, 2 * (p - 1) / p * t.numel() * t.element_size())

    def train_errors(self, p: Params, rating_range=None):
        sums = torch.tensor(super().train_errors(p, rating_range), dtype=torch.float64,
                            device=self.device)
        raw, clipped = self.total(sums).tolist()
        return raw, clipped

    def movie_genre_step(self, p: Params) -> None:
        raise NotImplementedError("the joint genre step runs in one process only")
