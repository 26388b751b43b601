"""ALS over shards of users and movies, one per process of a ``torch.distributed`` job.

Rank ``r`` of P holds the ratings of users ``[u_r, u_{r+1})`` grouped by user and those of
movies ``[i_r, i_{r+1})`` grouped by movie, both ranges contiguous and balanced by rating
count (:class:`rec.data.shards.Shard`, which reads each side from the cache when it is laid
out).  Every rank keeps the whole ``[U | b]`` and ``[V | c]``: a step solves the rank's own
rows against the whole other table, and an all-gather of every rank's updated rows (padded to
the longest shard) gives each rank the whole table, so every rank ends the step with the
same parameters a single process computes.  It sends ``(P - 1)`` shards per rank, half of
what an all-reduce of the whole table would at P = 2.  The genre step needs only V,
which every rank then holds, and runs on every rank alike; training errors are summed over
the ranks.
"""

from __future__ import annotations

import time

import torch

from rec.als.engine import ALS
from rec.als.params import Params
from rec.data.shards import Shard
from rec.distributed import Dist


class ShardedALS(ALS):
    """:class:`ALS` on this rank's ``shard`` of the training ratings."""

    def __init__(self, cfg, shard: Shard, genre_matrix, dist: Dist, **kwargs) -> None:
        self.dist, self.shard = dist, shard
        self.user_bounds, self.item_bounds = shard.user_bounds, shard.item_bounds
        super().__init__(cfg, None, None, None, shard.n_users, shard.n_items, genre_matrix,
                         mu=shard.train_mean, degrees=(shard.user_degree, shard.item_degree),
                         **kwargs)
        self._n_train = shard.sizes["train"]
        self.comm = {"time/comm_s": 0.0, "comm/mb": 0.0}
        """Seconds in collectives and megabytes each rank sent, since the last
        :meth:`take_comm` (as :meth:`total` and :meth:`_exchange` count them)."""

    def _layout(self, *_):
        """Each side read from the cache as it is laid out, and dropped: a rank never holds
        both sides' raw ratings at once."""
        user, item, rating = self.shard.side("item")
        by_item = self._group(item, user, rating, self.n_items, self.n_users)
        del user, item, rating
        user, item, rating = self.shard.side("user")
        return by_item, self._group(user, item, rating, self.n_users, self.n_items)

    @property
    def n_train(self) -> int:
        return self._n_train

    def user_step(self, p: Params) -> None:
        super().user_step(p)
        self._exchange(p.user_factors, p.user_bias, self.user_bounds)

    def item_step(self, p: Params) -> None:
        super().item_step(p)
        self._exchange(p.item_factors, p.item_bias, self.item_bounds)

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

    def _exchange(self, factors: torch.Tensor, bias: torch.Tensor, bounds: tuple) -> None:
        """Every rank's own rows of ``[x | bias]`` into every rank's table: one all-gather,
        each rank's rows padded to the longest shard (a ring all-gather sends ``P - 1``)."""
        longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
        mine = slice(bounds[self.dist.rank], bounds[self.dist.rank + 1])
        rows = torch.zeros(longest, factors.shape[1] + 1, dtype=factors.dtype,
                           device=factors.device)
        rows[:mine.stop - mine.start, :-1] = factors[mine]
        rows[:mine.stop - mine.start, -1] = bias[mine]
        sent = (self.dist.world - 1) * rows.numel() * rows.element_size()
        for a, b, part in zip(bounds[:-1], bounds[1:], self._timed(rows, self.dist.gather_tensor,
                                                                  sent)):
            factors[a:b] = part[:b - a, :-1]
            bias[a:b] = part[:b - a, -1]

    def train_errors(self, p: Params, rating_range=None):
        sums = torch.tensor(super().train_errors(p, rating_range), dtype=torch.float64,
                            device=self.device)
        raw, clipped = self.total(sums).tolist()
        return raw, clipped

    def movie_genre_step(self, p: Params) -> None:
        raise NotImplementedError("the joint genre step runs in one process only")
