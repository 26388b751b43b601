"""The training ratings laid out for the engine's kernel: one side grouped by user, one by
movie (SPEC §2.4), from the whole dataset in one process or from a rank's shard as it is read.

:class:`LayoutSpec` is what laying out needs to know (the model, the kernel and sizes resolved
for the device, the precision); :func:`whole_layout` and :func:`shard_layout` make the
:class:`Layout` that :class:`rec.als.engine.ALS` trains on.  Building it apart from the engine
is what lets one engine serve one process and P ranks: only the layout's source and the
engine's :class:`rec.als.exchange.Exchange` differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rec.als.config import ModelConfig
from rec.als.groups import Groups, RowRatings, build_groups, build_rows, mapped_values, stream_rows
from rec.als.sizes import EngineSizes

FUSED_GRAM_BYTES = 256 << 20
"""Most memory the fused kernel's Grams of rows over several table tiles may take."""


def unknowns(cfg: ModelConfig) -> int:
    """D: unknowns per row, ``[x; bias]``."""
    return cfg.dim + int(cfg.has_biases)


def joint_step(cfg: ModelConfig, asked: bool) -> bool:
    """Whether each epoch's movie and genre steps are one joint step: ``asked``
    (``train.joint_genre_step``) and a ``features`` rung with embeddings."""
    return bool(asked and cfg.has_genres and cfg.dim)


def table_row_bytes(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one row ``[x, offset]`` of the tables the steps gather from."""
    return (unknowns(cfg) + 1) * torch.finfo(dtype).bits // 8


def interactions(cfg: ModelConfig, rows: torch.Tensor, cols: torch.Tensor,
                 rating: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The implicit loss's observed pairs among ratings: those at least
    ``cfg.interaction_min`` (all when ``None``), each valued ``sqrt(c)``, ``c = 1 +
    cfg.confidence * rating`` (Hu, Koren and Volinsky's confidence), or with ``c = 1`` its
    target (:meth:`rec.als.config.ModelConfig.targets`)."""
    if cfg.interaction_min is not None:
        keep = rating >= cfg.interaction_min
        rows, cols, rating = rows[keep], cols[keep], rating[keep]
    values = (1 + cfg.confidence * rating.double()).sqrt() if cfg.confidence \
        else cfg.targets(rating)  # float64 or the ratings': cast once, to the engine's
    return rows, cols, values


def interacting(cfg: ModelConfig, rating: torch.Tensor,
                subset: torch.Tensor | None) -> torch.Tensor | None:
    """The positions among ``subset`` (``None``: all) of the ratings that are interactions
    under the implicit loss (:func:`interactions`), without copying the ratings."""
    if cfg.interaction_min is None:
        return subset
    keep = rating >= cfg.interaction_min
    return torch.nonzero(keep).flatten() if subset is None else subset[keep[subset.long()]]


@dataclass(frozen=True)
class LayoutSpec:
    """How the ratings are laid out: for which model, kernel and sizes (every default resolved
    for the device), in which precision and where."""

    cfg: ModelConfig
    sizes: EngineSizes
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def resolve(cls, cfg: ModelConfig, sizes: EngineSizes, device: torch.device | str,
                dtype: torch.dtype, joint: bool = False, cache_sharers: int = 1) -> "LayoutSpec":
        """``sizes`` resolved for ``device`` and the model's width; ``joint``: the joint genre
        step will run (torch path only); ``cache_sharers``: processes of the job sharing this
        machine's last-level cache."""
        weighted = bool(cfg.implicit and cfg.confidence)
        needs_torch = ("the joint genre step (train.joint_genre_step) needs the torch path"
                       if joint else "the implicit loss's confidences (model.confidence) run "
                       "on the torch path" if weighted else "")
        resolved = sizes.resolved(device, table_row_bytes(cfg, dtype), unknowns(cfg), needs_torch,
                                  cache_sharers)
        return cls(cfg, resolved, dtype, torch.device(device))

    @property
    def width(self) -> int:
        """D: unknowns per row."""
        return unknowns(self.cfg)

    @property
    def most_split(self) -> int:
        """Most rows the fused layout splits over table tiles: each keeps a float64
        (D+1)^2 Gram between passes, and past FUSED_GRAM_BYTES of them (K = 64 with most
        rows split) no row is split."""
        return FUSED_GRAM_BYTES // ((self.width + 1) ** 2 * 8)

    def group(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int,
              n_cols: int, subset: torch.Tensor | None = None) -> Groups | RowRatings:
        """One side's ratings (those at ``subset``; ``None``: all), laid out for the kernel of
        :attr:`sizes`."""
        cfg, s = self.cfg, self.sizes
        if s.kernel == "fused":
            if cfg.implicit:
                subset = interacting(cfg, vals, subset)
            layout = build_rows(rows, cols, vals, n_rows, n_cols, s.tile_cols, s.tile_min,
                                subset, self.dtype, self.most_split)
            return mapped_values(layout, cfg.targets) if cfg.implicit else layout
        if subset is not None:
            rows, cols, vals = rows[subset], cols[subset], vals[subset]
        if cfg.implicit:
            rows, cols, vals = interactions(cfg, rows, cols, vals)
        return self.padded(rows, cols, vals.to(self.dtype), n_rows, n_cols)

    def padded(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int,
               n_cols: int) -> Groups:
        """The torch path's padded degree buckets of these ratings, on the device."""
        s = self.sizes
        return build_groups(rows, cols, vals, n_rows, n_cols, s.bucket_growth, s.chunk_elems,
                            s.batch_rows, s.tile_cols, s.tile_min).to(self.device)

    def streamed(self, shard, by: str) -> Groups | RowRatings:
        """One side (``"user"`` or ``"item"``) of a rank's :class:`rec.data.shards.Shard`,
        laid out as it is read from the cache: the fused kernel's layout is filled block by
        block, so a rank never holds a side's ratings as read (the torch path's padded groups
        read one side whole, then drop it).  Its rows are the rank's own, numbered from 0
        (row ``r`` is the side's ``rows.start + r``), so that every per-row buffer of the
        step holds the rank's rows only; its columns are the other side's, all of them."""
        own = shard.user_rows if by == "user" else shard.item_rows
        n_rows = own.stop - own.start
        n_cols = shard.n_items if by == "user" else shard.n_users
        if self.sizes.kernel != "fused":
            rows, cols, vals = shard.side(by)
            return self.group(rows.sub_(own.start), cols, vals, n_rows, n_cols)
        values = shard.rating_values
        local = lambda: ((r - own.start, c, v) for r, c, v in shard.side_blocks(by))
        blocks, degree = local, shard.side_degree(by)[own].clone()
        least = self.cfg.interaction_min if self.cfg.implicit else None
        if least is not None:  # the implicit loss's interactions only, counted by one more read
            blocks = lambda: ((r[v >= least], c[v >= least], v[v >= least])
                              for r, c, v in local())
            degree = torch.zeros(n_rows, dtype=torch.int64)
            for r, _, _ in blocks():
                degree += torch.bincount(torch.from_numpy(r).long(), minlength=n_rows)
        layout = stream_rows(blocks, degree, n_cols,
                             None if values is None else torch.tensor(values),
                             self.sizes.tile_cols, self.sizes.tile_min, self.dtype,
                             self.most_split)
        return mapped_values(layout, self.cfg.targets) if self.cfg.implicit else layout


@dataclass
class Layout:
    """The training ratings this process holds, grouped both ways, and what it must know of
    the whole job's."""

    by_item: Groups | RowRatings
    by_user: Groups | RowRatings
    n_users: int
    n_items: int
    mu: float
    """The mean training rating of the whole job (the biases' offset)."""
    n_train: int
    """Training ratings of the whole job."""
    degrees: tuple[torch.Tensor, torch.Tensor] | None = None
    """Each user's and movie's training ratings (implicit: interactions) over the whole job;
    ``None``: the groups' own degrees, summed over the job's processes by the engine."""
    own: tuple[slice, slice] | None = None
    """The users and the movies whose rows the groups hold, numbered from 0 there (a rank's
    shard); ``None``: all of them."""


def whole_layout(spec: LayoutSpec, user: torch.Tensor, item: torch.Tensor,
                 rating: torch.Tensor, n_users: int, n_items: int,
                 subset: torch.Tensor | None = None, mu: float | None = None,
                 degrees: tuple[torch.Tensor, torch.Tensor] | None = None) -> Layout:
    """One process's layout of the ratings at ``subset`` (``None``: all).  Movies first: their
    sort's temporaries are gone before the users' groups exist; y = vals - offset, the offsets
    holding mu: no centred copy."""
    if mu is None:
        taken = rating if subset is None else rating[subset]
        mu = float(taken.sum(dtype=torch.float64)) / taken.numel() if taken.numel() else 0.0
    by_item = spec.group(item, user, rating, n_items, n_users, subset)
    by_user = spec.group(user, item, rating, n_users, n_items, subset)
    return Layout(by_item, by_user, n_users, n_items, mu, by_user.nnz, degrees)


def shard_layout(spec: LayoutSpec, shard) -> Layout:
    """A rank's layout of its :class:`rec.data.shards.Shard`: its users' ratings by user and
    its movies' by movie, each side read from the cache as it is laid out."""
    by_item = spec.streamed(shard, "item")
    by_user = spec.streamed(shard, "user")
    # the implicit loss counts interactions, which the layouts' degrees summed give
    degrees = None if spec.cfg.implicit else (shard.user_degree, shard.item_degree)
    return Layout(by_item, by_user, shard.n_users, shard.n_items, shard.train_mean,
                  shard.sizes["train"], degrees, (shard.user_rows, shard.item_rows))
