"""ALS over shards of users and movies, one per process of a ``torch.distributed`` job.

Rank ``r`` of P holds the ratings of users ``[u_r, u_{r+1})`` grouped by user and those of
movies ``[i_r, i_{r+1})`` grouped by movie, both ranges contiguous and balanced by rating
count (:class:`rec.data.shards.Shard`, which reads each side from the cache when it is laid
out).  Every rank keeps the whole ``[U | b]`` and ``[V | c]``: a step solves the rank's own
rows against the whole other table, zeroes the rows it does not own and sums the tables over
the ranks (an all-reduce, exact: each row is non-zero on its owner only), so every rank ends
the step with the same parameters a single process computes.  The genre step needs only V,
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
        self.user_rows, self.item_rows = shard.user_rows, shard.item_rows
        super().__init__(cfg, None, None, None, shard.n_users, shard.n_items, genre_matrix,
                         mu=shard.train_mean, degrees=(shard.user_degree, shard.item_degree),
                         **kwargs)
        self._n_train = shard.sizes["train"]
        self.comm = {"time/comm_s": 0.0, "comm/mb": 0.0}
        """Seconds in collectives and megabytes each rank sent, since the last
        :meth:`take_comm` (a ring all-reduce of B bytes sends ``2 (P - 1) / P B``)."""

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
        self._exchange(p.user_factors, p.user_bias, self.user_rows)

    def item_step(self, p: Params) -> None:
        super().item_step(p)
        self._exchange(p.item_factors, p.item_bias, self.item_rows)

    def take_comm(self) -> dict:
        out, self.comm = self.comm, {"time/comm_s": 0.0, "comm/mb": 0.0}
        return out

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        self.dist.sum_(t)
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
        p = self.dist.world
        self.comm["time/comm_s"] += time.perf_counter() - start
        self.comm["comm/mb"] += 2 * (p - 1) / p * t.numel() * t.element_size() / 2 ** 20
        return t

    def _exchange(self, factors: torch.Tensor, bias: torch.Tensor, own: slice) -> None:
        """Every rank's own rows into every rank's table: one all-reduce of ``[x | bias]``."""
        table = torch.cat([factors, bias.unsqueeze(1)], 1)
        table[:own.start] = 0
        table[own.stop:] = 0
        self._sum(table)
        factors.copy_(table[:, :factors.shape[1]])
        bias.copy_(table[:, -1])

    def train_errors(self, p: Params, rating_range=None):
        sums = torch.tensor(super().train_errors(p, rating_range), dtype=torch.float64,
                            device=self.device)
        raw, clipped = self._sum(sums).tolist()
        return raw, clipped

    def movie_genre_step(self, p: Params) -> None:
        raise NotImplementedError("the joint genre step runs in one process only")
