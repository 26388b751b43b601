"""The fused CPU kernel of one ALS side: Gram, system and solve in one pass per row (SPEC §2.3, §2.4).

The torch path (:mod:`rec.als.solve`) gathers every rating's ``[x, offset]``
into a padded workspace, reads it back for a batched ``Z^T Z`` and then
solves; the gathered rows go through memory twice.  This kernel reads each
row's ratings once from a CSR layout (:class:`rec.als.groups.RowRatings`),
copies them into a small column-major block that stays in L1, forms only the
upper triangle of the Gram (it is symmetric), adds the prior and solves the
system by an in-place Cholesky factorization, all before moving to the next
row.  With ``noise`` it instead returns a draw ``mean + L^-T z`` of the
Gaussian whose precision is the system matrix (the Gibbs sampler's conditional).

It is compiled by Numba (a PyPI wheel, no compiler needed) on first use and
cached on disk; where Numba is missing, :data:`AVAILABLE` is false and the
torch path runs.  The torch path stays the reference the tests compare it with.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    AVAILABLE = True
except ImportError:  # pragma: no cover - the torch path runs instead
    numba = None
    AVAILABLE = False

BLOCK = 64
"""Ratings copied into the L1 block per pass: long enough to vectorize the Gram's dot products."""

STEP = 4
"""Gram columns formed together: each loaded entry of ``x`` feeds four multiply-adds."""


def _accumulate(indptr_row, stop, cols, vals, table, z, a):
    """Add ``[x, y]^T [x, y]`` (upper triangle) of the ratings ``indptr_row:stop`` to ``a``."""
    d = table.shape[1] - 1
    for first in range(indptr_row, stop, BLOCK):
        m = min(BLOCK, stop - first)
        for n in range(m):
            c = cols[first + n]
            for i in range(d):
                z[i, n] = table[c, i]
            z[d, n] = vals[first + n] - table[c, d]
        for i in range(d + 1):  # z's rows past d are zeros: the last group of STEP adds 0
            for j in range(i, d + 1, STEP):
                s0 = z[i, 0] * 0
                s1 = s0
                s2 = s0
                s3 = s0
                for n in range(m):
                    zi = z[i, n]
                    s0 += zi * z[j, n]
                    s1 += zi * z[j + 1, n]
                    s2 += zi * z[j + 2, n]
                    s3 += zi * z[j + 3, n]
                a[i, j] += s0
                a[i, j + 1] += s1
                a[i, j + 2] += s2
                a[i, j + 3] += s3


def _solve_one(a, lam, w, reg, prior, noise, out, inv, t):
    """Solve row ``a``'s system (``a``: its Gram's upper triangle, ``y``'s column last) into
    ``out``, or draw from its Gaussian when ``noise`` has entries; false if not positive
    definite.  ``prior``/``noise`` are the row's entries or empty."""
    d = out.shape[0]
    for i in range(d):
        for j in range(i, d):
            a[i, j] *= lam
        a[i, i] += w * reg[i]
        a[i, d] *= lam
        if prior.shape[0] > 0:
            a[i, d] += prior[i]
    # Cholesky A = L L^T in place, L^T in the upper triangle, 1 / L_jj in inv
    for j in range(d):
        s = a[j, j]
        for k in range(j):
            s -= a[k, j] * a[k, j]
        if not s > 0.0:
            return False
        inv[j] = 1.0 / np.sqrt(s)
        for i in range(j + 1, d):
            v = a[j, i]
            for k in range(j):
                v -= a[k, j] * a[k, i]
            a[j, i] = v * inv[j]
    for i in range(d):  # L t = rhs
        s = a[i, d]
        for k in range(i):
            s -= a[k, i] * t[k]
        t[i] = s * inv[i]
    if noise.shape[0] > 0:
        for i in range(d):
            t[i] += noise[i]
    for i in range(d - 1, -1, -1):  # L^T theta = t (+ z: theta + L^-T z)
        s = t[i]
        for k in range(i + 1, d):
            s -= a[i, k] * t[k]
        t[i] = s * inv[i]
        out[i] = t[i]
    return True


def _solve_rows(indptr, cols, vals, table, lam, reg, row_weight, prior, noise, out, blocks,
                degree, gram, first, last):
    """Overwrite ``out[r]`` for every row ``r`` with ratings (``degree[r] > 0``).

    Row ``r`` solves ``(lam sum x x^T + w_r diag(reg)) theta = lam sum x y + prior[r]`` with
    ``x = table[c, :D]``, ``y = vals - table[c, D]``, ``w_r = row_weight[r]``.  ``prior`` is
    ``(n_rows, D)`` or ``(0, D)`` (none); ``noise``, when ``(n_rows, D)``, turns the solve
    into a draw ``theta + L^-T noise[r]``.  The ratings are ordered by (table tile, row):
    tile ``k``'s ratings of row ``r`` are ``indptr[k n_rows + r]:indptr[k n_rows + r + 1]``.
    With one tile each row is solved as soon as its Gram is formed; with more, every tile's
    pass adds into ``gram`` (n_rows, D+1, D+1), so that a pass reads one tile of the table
    (which stays in cache), and a last pass solves.  ``blocks`` cuts the rows into ranges of
    about equal ratings; this call does ranges ``first:last`` (one thread's share, see
    :func:`run_blocks`).  Returns the number of rows whose matrix was not positive definite
    (their ``out`` is left as it was).
    """
    n_rows, d = out.shape
    n_tiles = (indptr.shape[0] - 1) // n_rows
    no_prior = np.empty(0, dtype=prior.dtype)
    no_noise = np.empty(0, dtype=noise.dtype)
    failed = 0
    z = np.zeros((d + STEP, BLOCK), dtype=table.dtype)
    a = np.empty((d + 1, d + STEP), dtype=np.float64)
    t = np.empty(d, dtype=np.float64)
    inv = np.empty(d, dtype=np.float64)
    for k in range(n_tiles):
        for b in range(first, last):
            for r in range(blocks[b], blocks[b + 1]):
                start, stop = indptr[k * n_rows + r], indptr[k * n_rows + r + 1]
                if n_tiles > 1:
                    if k == 0:
                        gram[r] = 0.0
                    if start < stop:
                        a[:, :] = 0.0
                        _accumulate(start, stop, cols, vals, table, z, a)
                        gram[r] += a[:, :d + 1]
                    if k < n_tiles - 1 or degree[r] == 0:
                        continue
                    a[:, :d + 1] = gram[r]
                elif start == stop:
                    continue
                else:
                    a[:, :] = 0.0
                    _accumulate(start, stop, cols, vals, table, z, a)
                ok = _solve_one(a, lam, row_weight[r], reg,
                                prior[r] if prior.shape[0] > 0 else no_prior,
                                noise[r] if noise.shape[0] > 0 else no_noise, out[r], inv, t)
                failed += 0 if ok else 1
    return failed


def _squared_errors(indptr, cols, vals, table, theta, lo, hi, blocks, sums, first, last):
    """Per block of rows, sums over its ratings of ``(r - r-hat)^2``, raw and with ``r-hat``
    clipped to ``[lo, hi]``, into ``sums`` (n_blocks, 2) (summed by the caller in a fixed
    order, so the total does not depend on the threads), for the blocks ``first:last``; ``r-hat = theta[row] . table[col]``
    (``theta = [u, b, 1]``, ``table``'s last column the offset); ratings ordered as for
    :func:`_solve_rows`."""
    d1 = table.shape[1]
    n_rows = theta.shape[0]
    n_tiles = (indptr.shape[0] - 1) // n_rows
    for b in range(first, last):
        raw = 0.0
        clipped = 0.0
        for r in range(blocks[b], blocks[b + 1]):
            for k in range(n_tiles):
                for n in range(indptr[k * n_rows + r], indptr[k * n_rows + r + 1]):
                    c = cols[n]
                    fit = 0.0
                    for i in range(d1):
                        fit += theta[r, i] * table[c, i]
                    e = vals[n] - fit
                    raw += e * e
                    e = vals[n] - min(max(fit, lo), hi)
                    clipped += e * e
        sums[b, 0] = raw
        sums[b, 1] = clipped
    return 0


def _csr_fill(keys, cols, vals, indptr, out_cols, out_vals):
    """Counting sort of the ratings by key into ``out_cols``/``out_vals`` (stable: a key's
    ratings keep their order), keys starting at ``indptr``."""
    slot = indptr[:-1].copy()
    for i in range(keys.shape[0]):
        r = keys[i]
        k = slot[r]
        out_cols[k] = cols[i]
        out_vals[k] = vals[i]
        slot[r] = k + 1


if AVAILABLE:
    _jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    _accumulate = _jit(_accumulate)
    _solve_one = numba.njit(cache=True, nogil=True)(_solve_one)
    solve_rows = _jit(_solve_rows)
    squared_errors = _jit(_squared_errors)
    csr_fill = numba.njit(cache=True, nogil=True)(_csr_fill)
else:  # pragma: no cover
    solve_rows = squared_errors = csr_fill = None


def run_blocks(fn, n_blocks: int, threads: int, pool, *args) -> int:
    """``fn(*args, first, last)`` over ``n_blocks`` blocks, cut into ``threads`` contiguous
    shares run at once on ``pool``'s threads (the kernels release the GIL); the sum of the
    results.

    Python threads, not Numba's own thread pool: that pool's threads spin between calls, as
    torch's OpenMP threads do, and on a machine with as many cores as threads the two pools
    took turns starving each other (epochs 1.5-5x slower in one process, measured).
    """
    bounds = np.linspace(0, n_blocks, max(1, threads) + 1).astype(np.int64)
    shares = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if len(shares) == 1 or pool is None:
        return sum(fn(*args, a, b) for a, b in shares)
    return sum(f.result() for f in [pool.submit(fn, *args, a, b) for a, b in shares])
