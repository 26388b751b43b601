"""Training ratings grouped per row (user or movie) into degree buckets (SPEC §2.4).

Ratings are grouped by a stable sort on the row index (degrees by bincount,
offsets by cumsum).  Rows are then bucketed by degree: bucket widths grow
geometrically by ``growth`` (1.1-1.25 keeps padding under ~10%), so a row is
never padded to more than ``growth`` times its degree, and power-law degrees
(one movie with 100k ratings, most with a handful) cost no more than their
ratings.  Each bucket is cut into chunks of at most ``chunk_elems`` padded
entries, which bounds the memory of every batched Gram computation, and
consecutive chunks form batches of at most ``batch_rows`` rows whose systems
are solved in one call: small chunks keep the gathered ratings in cache, large
solve batches keep the per-call cost of the batched solver low.

Padded entries point at ``sentinel`` (= number of columns), a row of zeros
appended to the gathered table, so they add nothing to any sum: no masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def default_sizes(device: torch.device | str) -> tuple[int, int]:
    """``(chunk_elems, batch_rows)`` that measured fastest: small chunks that stay in a CPU's
    cache, or large ones that fill a GPU; solve batches sized to amortize the solver call."""
    return (1 << 24, 1 << 18) if torch.device(device).type == "cuda" else (1 << 17, 1 << 15)


@dataclass
class Chunk:
    """A padded batch of rows of equal width."""

    rows: torch.Tensor
    """int64 (n,) row indices."""
    cols: torch.Tensor
    """int32 (n, width) column index of each rating; padding holds the sentinel."""
    vals: torch.Tensor
    """(n, width) rating values; padding holds 0."""


@dataclass
class Batch:
    """Consecutive chunks whose rows' systems are solved together."""

    rows: torch.Tensor
    """int64 (n,) the rows of ``chunks``, concatenated in order."""
    chunks: list[Chunk]


@dataclass
class Groups:
    """All training ratings of one side (per user, or per movie)."""

    n_rows: int
    n_cols: int
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
        moved = [Batch(b.rows.to(device), [Chunk(c.rows.to(device), c.cols.to(device),
                                                 c.vals.to(device)) for c in b.chunks])
                 for b in self.batches]
        return Groups(self.n_rows, self.n_cols, self.degree.to(device), moved, self.nnz)


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
                 batch_rows: int = default_sizes("cpu")[1]) -> Groups:
    """Group ratings (``rows[i]``, ``cols[i]``, ``vals[i]``) by row into padded degree buckets."""
    if batch_rows < 1 or chunk_elems < 1:
        raise ValueError(f"chunk_elems and batch_rows must be positive, got {chunk_elems}, "
                         f"{batch_rows}")
    degree = torch.bincount(rows, minlength=n_rows)
    offsets = torch.cumsum(degree, 0) - degree
    perm = None  # rating ids in row order; None when the ratings are grouped already
    if rows.numel() > 1 and not bool((rows[1:] >= rows[:-1]).all()):
        perm = row_order(rows, offsets)
    nonzero = torch.nonzero(degree).flatten()
    if nonzero.numel() == 0:
        return Groups(n_rows, n_cols, degree, [], 0)
    widths = bucket_widths(int(degree.max()), growth)
    bucket = torch.searchsorted(widths, degree[nonzero])
    chunks = []
    for b in torch.unique(bucket).tolist():
        members = nonzero[bucket == b]
        width = int(widths[b])
        step = max(1, min(chunk_elems // width, batch_rows))
        for start in range(0, members.numel(), step):
            chunks.append(_pad(members[start:start + step], width, degree, offsets, perm, cols,
                               vals, n_cols))
    return Groups(n_rows, n_cols, degree, _batch(chunks, batch_rows), int(cols.numel()))


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


def _batch(chunks: list[Chunk], batch_rows: int) -> list[Batch]:
    """Consecutive chunks, greedily, into batches of at most ``batch_rows`` rows."""
    runs: list[list[Chunk]] = []
    n = batch_rows
    for c in chunks:
        if n + c.rows.numel() > batch_rows:
            runs.append([])
            n = 0
        runs[-1].append(c)
        n += c.rows.numel()
    return [Batch(torch.cat([c.rows for c in run]), run) for run in runs]


def _pad(members: torch.Tensor, width: int, degree: torch.Tensor, offsets: torch.Tensor,
         perm: torch.Tensor | None, cols: torch.Tensor, vals: torch.Tensor, sentinel: int) -> Chunk:
    slot = torch.arange(width)
    pos = offsets[members].unsqueeze(1) + slot
    real = slot < degree[members].unsqueeze(1)
    pos = torch.where(real, pos, 0)
    if perm is not None:
        pos = perm[pos]
    padded_cols = torch.where(real, cols[pos], sentinel).to(torch.int32)
    padded_vals = torch.where(real, vals[pos], 0).to(vals.dtype)
    return Chunk(members, padded_cols, padded_vals)
