"""Training ratings grouped per row (user or movie) into degree buckets (SPEC §2.4).

Ratings are grouped by a stable sort on the row index (degrees by bincount,
offsets by cumsum).  Rows are then bucketed by degree: bucket widths grow
geometrically by ``growth`` (1.1-1.25 keeps padding under ~10%), so a row is
never padded to more than ``growth`` times its degree, and power-law degrees
(one movie with 100k ratings, most with a handful) cost no more than their
ratings.  Rows in bucket order form batches of at most ``batch_rows`` rows,
whose systems are solved in one call, and each batch's buckets are cut into
chunks of at most ``chunk_elems`` padded entries, which bounds the memory of
every batched Gram computation: small chunks keep the gathered ratings in
cache, large solve batches keep the per-call cost of the batched solver low.

Padded entries point at ``sentinel`` (= number of columns), a row of zeros
appended to the gathered table, so they add nothing to any sum: no masks.

On a CPU the gathers read the other side's table at random, which is fast
only while the table stays in cache.  So a table of more than ``tile_cols``
columns is cut into column tiles of equal size, each row's ratings are split
by tile, and each batch is grouped once per tile, by the rows' degrees within
that tile.  The first tile's Grams are written in place; each later tile's
are added to them (``Chunk.at``), so every pass over a batch reads only one
tile of the table, and padding stays as small as without tiles.  Each added
part costs one more Gram addition, so a row is split only when it has at
least ``tile_min`` ratings per tile; otherwise all its ratings stay in the
first tile's pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from rec.als import kernel
from rec.als.sizes import default_sizes
from rec.partition import balanced_bounds


@dataclass
class Chunk:
    """A padded batch of rows of equal width."""

    rows: torch.Tensor
    """int64 (n,) row indices."""
    cols: torch.Tensor
    """int32 (n, width) column index of each rating; padding holds the sentinel."""
    vals: torch.Tensor
    """(n, width) rating values; padding holds 0."""
    at: torch.Tensor | None = None
    """int64 (n,) the rows' places in their batch, where this chunk's Grams are added (tiles
    after the first); ``None``: written in place, after the previous chunk's."""


@dataclass
class Batch:
    """Consecutive chunks whose rows' systems are solved together."""

    rows: torch.Tensor
    """int64 (n,) the rows of the batch: those of the first tile's chunks, in order."""
    tiles: list[list[Chunk]]
    """Per column tile, the chunks holding that tile's ratings of ``rows``."""

    @property
    def chunks(self) -> list[Chunk]:
        return [c for tile in self.tiles for c in tile]


@dataclass
class Groups:
    """All training ratings of one side (per user, or per movie)."""

    n_rows: int
    n_cols: int
    n_tiles: int
    """Column tiles the ratings are split by (1: none)."""
    degree: torch.Tensor
    """int64 (n_rows,) training ratings per row."""
    batches: list[Batch]
    nnz: int
    """Number of ratings."""

    @property
    def sentinel(self) -> int:
        return self.n_cols

    @property
    def chunks(self) -> list[Chunk]:
        return [c for b in self.batches for c in b.chunks]

    @property
    def padded(self) -> int:
        """Number of padded slots (ratings plus padding)."""
        return sum(c.cols.numel() for c in self.chunks)

    def to(self, device: torch.device) -> "Groups":
        move = lambda c: Chunk(c.rows.to(device), c.cols.to(device), c.vals.to(device),
                               None if c.at is None else c.at.to(device))
        moved = [Batch(b.rows.to(device), [[move(c) for c in tile] for tile in b.tiles])
                 for b in self.batches]
        return Groups(self.n_rows, self.n_cols, self.n_tiles, self.degree.to(device), moved,
                      self.nnz)


@dataclass
class RowRatings:
    """All training ratings of one side ordered by (table tile, row), for the fused CPU kernel
    (:mod:`rec.als.kernel`): no padding, no buckets.  With one tile this is CSR."""

    n_rows: int
    n_cols: int
    n_tiles: int
    """Column tiles of the other side's table; each kernel pass reads one."""
    indptr: torch.Tensor
    """int64 (n_tiles n_rows + 1,): tile ``k``'s ratings of row ``r`` are
    ``indptr[k n_rows + r]:indptr[k n_rows + r + 1]``."""
    cols: torch.Tensor
    """int32 (nnz,) column of each rating."""
    vals: torch.Tensor
    """(nnz,) uint8 codes of the rating values, ``levels[code]`` (one byte a rating: 3 fewer
    than a float32), or the values themselves when ``levels`` is empty."""
    levels: torch.Tensor
    """The distinct rating values, sorted, when there are at most
    :data:`rec.als.kernel.MAX_LEVELS`; else empty."""
    blocks: torch.Tensor
    """int64 row boundaries of ranges of about equal ratings, which the kernel's threads share."""
    degree: torch.Tensor
    """int64 (n_rows,) training ratings per row."""
    last_tile: torch.Tensor
    """int64 (n_rows,) the last tile holding ratings of each row; -1: none."""
    slot: torch.Tensor
    """int64 (n_rows,) each row's place among those over several tiles (-1: in one tile), where
    the kernel keeps the row's Gram between tile passes."""

    @property
    def n_split(self) -> int:
        """Rows whose ratings lie in more than one tile."""
        return int((self.slot >= 0).sum())

    @property
    def nnz(self) -> int:
        return int(self.cols.numel())

    @property
    def padded(self) -> int:
        return self.nnz

    def arrays(self) -> tuple:
        """``(indptr, cols, vals, levels)`` as the arrays the compiled kernels read."""
        return (self.indptr.numpy(), self.cols.numpy(), self.vals.numpy(),
                self.levels.numpy())

    def values(self) -> torch.Tensor:
        """(nnz,) the rating values, in this layout's order."""
        return self.levels[self.vals.long()] if self.levels.numel() else self.vals

    def triples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ratings back as (rows, cols, vals), in this layout's order."""
        keys = torch.arange(self.indptr.numel() - 1).remainder_(self.n_rows)
        return torch.repeat_interleave(keys, torch.diff(self.indptr)), self.cols, self.values()



ROW_BLOCKS = 256
"""Row ranges the kernel's threads share: enough for one thread's long rows to be evened out
by another's short ones (the schedule is static), few enough to cost nothing."""


def compact_index(t: torch.Tensor) -> torch.Tensor:
    """Indices as int32 where they all fit (half the bytes a compiled pass streams), else
    int64."""
    big = t.numel() and int(t.max()) >= 1 << 31
    return t.long() if big else t.int()


def build_rows(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int,
               n_cols: int, tile_cols: int = default_sizes("cpu")[2],
               tile_min: int = 1, index: torch.Tensor | None = None,
               dtype: torch.dtype | None = None, max_split: int | None = None) -> RowRatings:
    """Ratings (``rows[i]``, ``cols[i]``, ``vals[i]``) for ``i`` in ``index`` (``None``: all)
    ordered by (tile, row) by one counting sort; a row with fewer than ``tile_min`` ratings
    per tile keeps them all in the first, and when more than ``max_split`` rows would be
    split, none is (one tile).  The compiled passes read the ratings where they lie, so the
    only memory taken is the layout itself (``vals`` as ``dtype``)."""
    taken = torch.zeros(0, dtype=torch.int64) if index is None else index
    n_taken = rows.numel() if index is None else index.numel()
    source = (rows.numpy(), cols.numpy(), vals.numpy(), taken.numpy(), n_taken)
    degree = torch.zeros(n_rows, dtype=torch.int64)
    kernel.layout_degree(rows.numpy(), taken.numpy(), n_taken, degree.numpy())
    found = torch.empty(kernel.MAX_LEVELS, dtype=vals.dtype)
    n_levels = kernel.rating_levels(vals.numpy(), taken.numpy(), n_taken, found.numpy())
    return _lay_out(lambda: (source,), degree, n_cols, found[:n_levels] if n_levels >= 0 else None,
                    tile_cols, tile_min, dtype or vals.dtype, max_split)


def mapped_values(rows: RowRatings, f) -> RowRatings:
    """``rows`` with each value ``v`` replaced by ``f(v)`` (the implicit loss's targets of its
    ``c = 1`` pairs): the codes kept and their levels mapped, or the values themselves."""
    if rows.levels.numel():
        return replace(rows, levels=f(rows.levels))
    rows.vals.copy_(f(rows.vals))
    return rows


def stream_rows(blocks, degree: torch.Tensor, n_cols: int, levels: torch.Tensor | None,
                tile_cols: int, tile_min: int, dtype: torch.dtype,
                max_split: int | None = None) -> RowRatings:
    """:func:`build_rows` of ratings that arrive in blocks: ``blocks()`` gives a fresh
    iterator of ``(rows, cols, vals)`` arrays each call (read once, or twice when some row's
    ratings are split over tiles), ``degree`` each row's ratings among them and ``levels``
    every distinct value they hold, sorted (``None``: the values are kept as ``dtype``).  Only
    the layout is held, never the ratings as read; within a row they keep their order."""
    empty = np.zeros(0, dtype=np.int64)
    codes = None if levels is None or levels.numel() > kernel.MAX_LEVELS else levels
    return _lay_out(lambda: ((r, c, v, empty, r.size) for r, c, v in blocks()), degree, n_cols,
                    codes, tile_cols, tile_min, dtype, max_split)


def _lay_out(sources, degree: torch.Tensor, n_cols: int, levels: torch.Tensor | None,
             tile_cols: int, tile_min: int, dtype: torch.dtype,
             max_split: int | None) -> RowRatings:
    """The layout of the ratings ``sources()`` gives, as ``(rows, cols, vals, index,
    n_taken)`` arrays, with ``degree`` ratings per row: counted per (tile, row) by one pass,
    none when there is one tile, then placed by another; ``levels`` (or ``None``) as for
    :func:`stream_rows`."""
    n_rows = degree.numel()
    n_tiles = max(1, -(-n_cols // tile_cols))
    split = degree >= (n_tiles * tile_min if n_tiles > 1 else 1 << 62)
    if max_split is not None and int(split.sum()) > max_split:
        n_tiles, split = 1, torch.zeros_like(split)
    width = -(-n_cols // n_tiles)
    counts = degree.clone() if n_tiles == 1 else torch.zeros(n_tiles * n_rows, dtype=torch.int64)
    for rows, cols, _, taken, n_taken in sources() if n_tiles > 1 else ():
        kernel.layout_count(rows, cols, taken, n_taken, n_rows, width, split.numpy(),
                            counts.numpy())
    indptr = torch.zeros(n_tiles * n_rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    found = torch.zeros(0, dtype=torch.float32) if levels is None else levels
    out_cols = torch.empty(int(indptr[-1]), dtype=torch.int32)
    out_vals = torch.empty(out_cols.numel(), dtype=dtype if levels is None else torch.uint8)
    cursor = indptr[:-1].clone()
    for rows, cols, vals, taken, n_taken in sources():
        kernel.layout_fill(rows, cols, vals, taken, n_taken, n_rows, width, split.numpy(),
                           cursor.numpy(), found.numpy(), out_cols.numpy(), out_vals.numpy())
    last_tile = torch.full((n_rows,), -1, dtype=torch.int64)
    for k, held in enumerate(counts.view(n_tiles, n_rows) > 0):
        last_tile[held] = k
    spread = last_tile > 0
    slot = torch.where(spread, torch.cumsum(spread, 0) - 1, -1)
    return RowRatings(n_rows, n_cols, n_tiles, indptr, out_cols, out_vals, found.to(dtype),
                      torch.unique(balanced_bounds(degree, ROW_BLOCKS)), degree, last_tile, slot)


def tile_of(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int, n_tiles: int,
            tile_min: int) -> torch.Tensor:
    """The column tile of each rating, or 0 for every rating of a row with fewer than
    ``tile_min`` ratings per tile (splitting it would cost more Gram additions than it saves)."""
    split = torch.bincount(rows, minlength=n_rows) >= n_tiles * tile_min
    return torch.div(cols, -(-n_cols // n_tiles), rounding_mode="floor").mul_(split[rows])


def bucket_widths(max_degree: int, growth: float) -> torch.Tensor:
    """Increasing widths 1, 2, ... growing by ``growth`` until ``max_degree`` is covered."""
    if growth <= 1.0:
        raise ValueError(f"bucket growth must exceed 1, got {growth}")
    widths = [1]
    while widths[-1] < max_degree:
        widths.append(max(widths[-1] + 1, int(widths[-1] * growth + 0.999999)))
    return torch.tensor(widths, dtype=torch.int64)


def build_groups(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int,
                 n_cols: int, growth: float = 1.15, chunk_elems: int = default_sizes("cpu")[0],
                 batch_rows: int = default_sizes("cpu")[1],
                 tile_cols: int = default_sizes("cpu")[2], tile_min: int = 1) -> Groups:
    """Group ratings (``rows[i]``, ``cols[i]``, ``vals[i]``) by row into padded degree buckets."""
    if batch_rows < 1 or chunk_elems < 1 or tile_cols < 1:
        raise ValueError(f"chunk_elems, batch_rows and tile_cols must be positive, got "
                         f"{chunk_elems}, {batch_rows}, {tile_cols}")
    n_tiles = max(1, -(-n_cols // tile_cols))
    tile_degree, offsets, perm = _by_row_and_tile(rows, cols, n_rows, n_cols, n_tiles, tile_min)
    degree = tile_degree.sum(1)
    nonzero = torch.nonzero(degree).flatten()
    if nonzero.numel() == 0:
        return Groups(n_rows, n_cols, n_tiles, degree, [], 0)
    widths = torch.cat([torch.zeros(1, dtype=torch.int64),  # a tile without ratings
                        bucket_widths(int(degree.max()), growth)])
    # batches of rows of similar degree, so that each tile cuts them into few chunks
    order = nonzero[torch.argsort(torch.searchsorted(widths, degree[nonzero]), stable=True)]
    place = torch.empty(n_rows, dtype=torch.int64)
    batches = []
    for start in range(0, order.numel(), batch_rows):
        members = order[start:start + batch_rows]
        tiles = [_chunks(members, widths, tile_degree[:, t], offsets[:, t], perm, cols, vals,
                         n_cols, chunk_elems, skip_empty=t > 0) for t in range(n_tiles)]
        rows = torch.cat([c.rows for c in tiles[0]])
        place[rows] = torch.arange(rows.numel())
        for chunk in (c for tile in tiles[1:] for c in tile):
            chunk.at = place[chunk.rows]
        batches.append(Batch(rows, tiles))
    return Groups(n_rows, n_cols, n_tiles, degree, batches, int(cols.numel()))


def _by_row_and_tile(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int,
                     n_tiles: int, tile_min: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per (row, tile): the degree and where its ratings start in (row, tile) order, both
    ``(n_rows, n_tiles)``; and the rating ids in that order (``None``: they are in it).
    A row with fewer than ``tile_min`` ratings per tile keeps them all in the first."""
    keys = rows
    if n_tiles > 1:  # in place: ML-32M's keys are 115 MB
        keys = tile_of(rows, cols, n_rows, n_cols, n_tiles, tile_min).add_(rows, alpha=n_tiles)
    degree = torch.bincount(keys, minlength=n_rows * n_tiles)
    offsets = torch.cumsum(degree, 0) - degree
    perm = None
    if keys.numel() > 1 and not bool((keys[1:] >= keys[:-1]).all()):
        perm = _order(keys, offsets)
    return degree.view(n_rows, n_tiles), offsets.view(n_rows, n_tiles), perm


def _chunks(members: torch.Tensor, widths: torch.Tensor, degree: torch.Tensor,
            offsets: torch.Tensor, perm: torch.Tensor | None, cols: torch.Tensor,
            vals: torch.Tensor, sentinel: int, chunk_elems: int, skip_empty: bool) -> list[Chunk]:
    """``members``' ratings (``degree``, ``offsets``: within one tile) in padded chunks, one
    bucket of widths after another."""
    bucket = torch.searchsorted(widths, degree[members])
    if skip_empty:
        members, bucket = members[bucket > 0], bucket[bucket > 0]
    out = []
    for b in torch.unique(bucket).tolist():
        group, width = members[bucket == b], int(widths[b])
        step = max(1, chunk_elems // max(width, 1))
        out += [_pad(group[i:i + step], width, degree, offsets, perm, cols, vals, sentinel)
                for i in range(0, group.numel(), step)]
    return out


def _order(keys: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """int32 rating ids in stable key order: one compiled counting pass where Numba is, else
    :func:`row_order`."""
    if kernel.AVAILABLE and keys.device.type == "cpu":
        perm = torch.empty(keys.numel(), dtype=torch.int32)
        kernel.counting_order(keys.numpy(), offsets.numpy(), perm.numpy())
        return perm
    return row_order(keys, offsets)


def row_order(rows: torch.Tensor, offsets: torch.Tensor, block: int = 1 << 20) -> torch.Tensor:
    """int32 rating ids in stable row order: ``torch.argsort(rows, stable=True)``, in blocks.

    A whole-array stable sort of ML-32M's ratings peaks at ~660 MB of
    temporaries, which set the training process's peak memory.  Sorting blocks
    of ``block`` ratings and placing each block after the earlier blocks' ratings
    of the same row gives the same order for a fraction of the memory.  ``offsets[r]``
    is where row ``r``'s ratings start in that order.
    """
    perm = torch.empty(rows.numel(), dtype=torch.int32)
    seen = offsets.clone()  # next free slot of each row
    for start in range(0, rows.numel(), block):
        part = rows[start:start + block]
        local = torch.argsort(part, stable=True)
        keys = part[local].long()
        counts = torch.bincount(part, minlength=offsets.numel())
        first = torch.cumsum(counts, 0) - counts  # where each row starts inside the block
        slot = seen[keys] + torch.arange(part.numel()) - first[keys]
        perm[slot] = (local + start).to(torch.int32)
        seen += counts
    return perm


def _pad(members: torch.Tensor, width: int, degree: torch.Tensor, offsets: torch.Tensor,
         perm: torch.Tensor | None, cols: torch.Tensor, vals: torch.Tensor, sentinel: int) -> Chunk:
    """``members``' ratings padded to ``width``: their columns (``sentinel`` past a row's
    degree) and values (0 there); compiled where Numba is (no (rows, width) temporaries),
    else :func:`_pad_torch`."""
    if kernel.AVAILABLE and cols.device.type == "cpu":
        out_cols = torch.empty(members.numel(), width, dtype=torch.int32)
        out_vals = torch.empty(members.numel(), width, dtype=vals.dtype)
        none = torch.empty(0, dtype=torch.int32)
        kernel.pad_rows(members.numpy(), width, degree.numpy(), offsets.numpy(),
                        (none if perm is None else perm).numpy(), cols.numpy(), vals.numpy(),
                        sentinel, out_cols.numpy(), out_vals.numpy())
        return Chunk(members, out_cols, out_vals)
    return _pad_torch(members, width, degree, offsets, perm, cols, vals, sentinel)


def _pad_torch(members: torch.Tensor, width: int, degree: torch.Tensor, offsets: torch.Tensor,
               perm: torch.Tensor | None, cols: torch.Tensor, vals: torch.Tensor,
               sentinel: int) -> Chunk:
    slot = torch.arange(width)
    pos = offsets[members].unsqueeze(1) + slot
    real = slot < degree[members].unsqueeze(1)
    pos = torch.where(real, pos, 0)
    if perm is not None:
        pos = perm[pos]
    padded_cols = torch.where(real, cols[pos], sentinel).to(torch.int32)
    padded_vals = torch.where(real, vals[pos], 0).to(vals.dtype)
    return Chunk(members, padded_cols, padded_vals)
