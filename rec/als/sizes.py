"""The engine's kernel and memory layout: degree buckets, Gram chunks, solve batches, table
tiles (SPEC §2.4).

One :class:`EngineSizes` (``engine:`` in the config) says which kernel runs the
steps and how the training ratings are laid out for it.  Its values change the
speed and the memory of an epoch, and the result only by rounding; ``None``
picks the device's measured defaults (:func:`default_sizes`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rec.als import kernel as fused
from rec.errors import ConfigError

KERNELS = ("auto", "torch", "fused")
SOLVERS = ("auto", "rows", "cholesky", "lu")

TILE_BYTES = 3 << 19
"""Most bytes of the gathered table one pass reads on CPU: 1.5 MiB, 2^15 rows at K = 10 in
float32 (measured at ML-32M's shape: 1-4% faster than 6 MiB tiles, 4-7% faster than none)."""

FUSED_TILE_BYTES = 16 << 20
"""Most bytes of the table one pass of the fused kernel reads: 16 MiB, 349,525 rows at
K = 10, so ML-32M's tables (4.2 and 9.6 MB) are read whole.  Since the kernel prefetches each
rating's row ahead (:data:`rec.als.kernel.PREFETCH_AHEAD`), cutting them costs more in split
rows than it saves in cache misses: ``python -m rec.compare tile=0 tile=349525`` gave 0.94x
and 0.93x the epoch of the 3 MiB tiles used before (0.90x and 0.89x in a second sitting).
Bigger tables are still cut, so a pass stays within a last-level cache's reach, for narrow
rows only: past :data:`rec.als.kernel.UNROLLED_WIDTHS` entries each row over several tiles holds
a float64 Gram of ``(D+1)^2`` entries between passes (at K = 64, 33 KB a row, hundreds of MB
at ML-32M's shape), and the register-blocked accumulation has enough arithmetic per row read
that whole tables ran faster (``python -m rec.compare --K 64 tile=0``: 0.93x the epoch of
16 MiB tiles)."""

SHARED_FUSED_TILE_BYTES = 3 << 20
"""The fused kernel's tiles when several processes of one job share a machine, and so its
last-level cache: 3 MiB, 65,536 rows at K = 10.  At P = 2 on the 2-core machine (each rank
reading the whole other table, one thread each) ML-32M's movie step read the 9.6 MB user
table about 25% slower than one process did; tiles of 3.2 MB made the two ranks' ALS time
0.78-0.87x that of whole tables (tile_cols of 50,240 / 67,000 / 87,383 rows: 0.36-0.40 /
0.36 / 0.40-0.42 s an epoch)."""

NO_TILES = 1 << 62

TILE_MIN_PER_UNKNOWN = 4
"""A row is split over table tiles only with at least this many ratings per tile per entry of
``[x, y]``: each split adds a (D+1)^2 Gram addition, which a tile's cached gathers repay
from about 3 (D+1) ratings on (measured at K = 10); at K = 64, splitting every row was 8%
slower than no tiles."""

WOODBURY_BELOW = 0.8
"""The fused kernel's default ``woodbury_below`` past its generated widths: a row with fewer
ratings than 0.8 of its unknowns takes the ``n x n`` Woodbury matrix instead of its Gram.  Per
row, the two cost the same near 0.83 D at D = 65 and at D = 129 (benchmarks/README.md, "Rows
with fewer ratings than unknowns")."""


GPU_GATHER_BYTES = 1 << 31
"""Most bytes of one chunk's gathered rows on a GPU (2^24 ratings at K = 10 take 0.8 GiB)."""

GPU_GRAM_BYTES = 1 << 32
"""Most bytes of one solve batch's Grams on a GPU, before the solver's own copies: 2^18 rows
at K = 10 take 0.15 GiB, but at K = 256 they would take 70 GiB; wide rows get fewer rows."""


def _pow2_at_most(n: float, low: int, high: int) -> int:
    return max(low, min(high, 1 << max(0, int(n).bit_length() - 1)))


def default_sizes(device: torch.device | str, row_bytes: int = 48) -> tuple[int, int, int]:
    """``(chunk_elems, batch_rows, tile_cols)`` that measured fastest: small chunks and table
    tiles that stay in a CPU's cache, or large chunks that fill a GPU (and no tiles); solve
    batches sized to amortize the solver call.  ``row_bytes``: one row of the gathered table
    (D + 1 entries), which on a GPU also bounds a chunk's gathers and a batch's Grams
    (``(D + 1)^2`` entries a row) by :data:`GPU_GATHER_BYTES` and :data:`GPU_GRAM_BYTES`."""
    if torch.device(device).type == "cuda":
        gram_row = row_bytes * row_bytes // 4  # (D + 1)^2 float32 entries, or fewer wider ones
        return (_pow2_at_most(GPU_GATHER_BYTES / row_bytes, 1 << 16, 1 << 24),
                _pow2_at_most(GPU_GRAM_BYTES / gram_row, 1 << 8, 1 << 18), NO_TILES)
    return 1 << 17, 1 << 15, max(1, TILE_BYTES // row_bytes)


@dataclass(frozen=True)
class EngineSizes:
    """Which kernel runs the steps, and how the grouped ratings are laid out in memory for it
    (``conf/engine/default.yaml``)."""

    kernel: str = "auto"
    """``torch``: padded degree buckets, batched gathers, Grams and solves on any device (the
    reference); ``fused``: one compiled pass per row over ratings ordered by (table tile, row)
    (:mod:`rec.als.kernel`, CPU, Numba): no padding, less memory, a faster setup, and at
    K = 10 an epoch 2.5x as fast at ML-32M's shape, at K = 64 1.9x; ``auto``: ``fused``
    where it runs, else ``torch``.  The sizes below lay out the torch path (``tile_cols``,
    ``tile_min`` both)."""
    solver: str = "auto"
    """The torch path's batched solver: ``rows`` (the fused kernel's compiled Cholesky, one
    system per row on the kernel's threads, CPU: at ML-32M's shape 1.6x faster than LU at
    K = 10 in the epoch and 4x in the solves at K = 64), ``lu`` (LAPACK's batched LU),
    ``cholesky`` (column steps of vector operations over the whole batch) or ``auto``:
    ``rows`` where the fused kernel runs (CPU, Numba), else ``lu``.  A Gibbs draw on the
    torch path uses ``rows`` or ``cholesky``, whose factor it needs."""
    bucket_growth: float = 1.15
    """Width ratio of successive degree buckets: padding stays under ``growth - 1``."""
    chunk_elems: int | None = None
    """Padded ratings per batched Gram chunk; ``None``: 2^17 on CPU, 2^24 on GPU (fewer for
    wide rows: at most 2 GiB of gathered rows)."""
    batch_rows: int | None = None
    """Rows (users or movies) solved per batched solver call; ``None``: 2^15 on CPU, 2^18 on GPU
    (fewer for wide rows: at most 4 GiB of Grams, 2^14 rows at K = 256)."""
    tile_cols: int | None = None
    """Most rows of the other side's table one gather pass reads; a larger table is cut into
    tiles of at most this many, so that each pass stays in cache.  ``None``: 1.5 MiB of table
    on CPU for the torch path (2^15 rows at K = 10), 16 MiB for the fused kernel (3 MiB when
    several ranks of a job share the machine), no tiles on GPU; 0: no tiles."""
    tile_min: int | None = None
    """Ratings per tile a row needs to be split over tiles; ``None``:
    ``TILE_MIN_PER_UNKNOWN (D+1)`` for D unknowns per row."""

    woodbury_below: float | None = None
    """The fused kernel's exact step solves a row with fewer than ``woodbury_below D``
    ratings (D unknowns, at most D) through the ``n x n`` matrix of the Woodbury identity
    instead of its ``D x D`` Gram, in exact steps (not Gibbs draws nor conjugate-gradient
    steps); under the implicit loss, in the eigenvectors of its shared Gramian, where every
    row's prior precision is diagonal.  The result is the same up to rounding.
    ``None``: 0.8 past the generated widths (K over about 22), else 0 (never); a ratio above
    0 at narrower rows or on the torch path is refused."""

    def __post_init__(self) -> None:
        checks = [("kernel", self.kernel in KERNELS, "one of " + ", ".join(KERNELS)),
                  ("solver", self.solver in SOLVERS, "one of " + ", ".join(SOLVERS)),
                  ("bucket_growth", self.bucket_growth > 1, "a ratio above 1, e.g. 1.15"),
                  ("chunk_elems", self.chunk_elems is None or self.chunk_elems >= 1,
                   "null or a positive count"),
                  ("batch_rows", self.batch_rows is None or self.batch_rows >= 1,
                   "null or a positive count"),
                  ("tile_cols", self.tile_cols is None or self.tile_cols >= 0,
                   "null, 0 (no tiles) or a positive count"),
                  ("tile_min", self.tile_min is None or self.tile_min >= 1,
                   "null or a positive count"),
                  ("woodbury_below", self.woodbury_below is None
                   or 0 <= self.woodbury_below <= 1, "null or a ratio from 0 to 1")]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"engine.{key}={getattr(self, key)}: must be {want}.")

    def resolved(self, device: torch.device | str, row_bytes: int, width: int,
                 needs_torch: str = "", cache_sharers: int = 1) -> "EngineSizes":
        """Every ``None`` replaced by the device's default, and ``tile_cols=0``
        by no tiles; ``row_bytes``: one row of the gathered table, ``width``: unknowns per
        row; ``needs_torch``: why, when a step only the torch path has is used (the joint
        genre step, the implicit loss's shared Gramian);
        ``cache_sharers``: processes of the job sharing this machine's last-level cache."""
        chunk, batch, tile = default_sizes(device, row_bytes)
        kernel = self.kernel_for(device, needs_torch)
        if kernel == "fused":
            budget = FUSED_TILE_BYTES if cache_sharers <= 1 else SHARED_FUSED_TILE_BYTES
            tile = max(1, budget // row_bytes) if fused.has_generated(width + 1) else NO_TILES
        compiled = fused.runs_on(torch.device(device))
        if self.solver == "rows" and not compiled:
            raise ConfigError("engine.solver=rows runs on the CPU with Numba only; write "
                              "engine.solver=lu.")
        solver = ("rows" if compiled else "lu") if self.solver == "auto" else self.solver
        woodbury, generic = self.woodbury_below, not fused.has_generated(width + 1)
        if woodbury is None:
            woodbury = WOODBURY_BELOW if kernel == "fused" and generic else 0.0
        elif woodbury > 0 and not (kernel == "fused" and generic):
            where = (f"the {kernel} path runs here" if kernel != "fused" else
                     f"rows of {width} unknowns take a generated kernel")
            raise ConfigError(f"engine.woodbury_below={woodbury} is a step of the fused kernel "
                              f"past {fused.UNROLLED_WIDTHS - 1} unknowns a row, and {where}; "
                              "leave it null.")
        return replace(self, kernel=kernel, solver=solver, woodbury_below=woodbury,
                       chunk_elems=self.chunk_elems or chunk,
                       batch_rows=self.batch_rows or batch,
                       tile_cols=tile if self.tile_cols is None else self.tile_cols or NO_TILES,
                       tile_min=self.tile_min or TILE_MIN_PER_UNKNOWN * (width + 1))

    def kernel_for(self, device: torch.device | str, needs_torch: str) -> str:
        """The kernel to run: ``auto`` resolved, and asking for ``fused`` where it cannot run
        an error."""
        where = fused.runs_on(torch.device(device)) and not needs_torch
        if self.kernel == "auto":
            return "fused" if where else "torch"
        if self.kernel == "fused" and not where:
            why = ("Numba is not installed (pip install -r requirements.txt)" if not fused.AVAILABLE
                   else "it runs on the CPU only" if torch.device(device).type != "cpu"
                   else needs_torch)
            raise ConfigError(f"engine.kernel=fused cannot run here: {why}; "
                              "write engine.kernel=torch.")
        return self.kernel
