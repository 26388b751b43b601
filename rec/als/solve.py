"""Batched Gram matrices and ridge solves of one ALS side (SPEC §2.3, §2.4).

For every row at once (a user, or a movie) the step solves

    (lam * sum_n x_n x_n^T + diag(reg)) theta = lam * sum_n x_n y_n + prior

Per chunk of rows, one gather pulls ``[x_n, offset_n]`` for every rating into
a reused workspace (the offset is mu plus the other side's bias), the offset
column is turned into ``y = r - offset`` in place, and a single batched matmul
``Z^T Z`` yields both ``sum x x^T`` and ``sum x y``, written into a reused
buffer of Gram matrices.  Where the table is cut into tiles (:mod:`rec.als.groups`), the first tile's chunks write a batch's Grams
and each later tile's are added in.  The systems of the whole batch are then
solved in one batched call.  The same code runs on any device.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from rec.als import kernel
from rec.als.groups import Chunk, Groups, RowRatings


class PhaseTimer:
    """Seconds spent per phase of the steps (gather, gram, solve, ...), summed until read."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}
        self._last = None

    def lap(self, name: str | None = None) -> None:
        """Charge the time since the previous lap to ``name`` (``None`` starts timing)."""
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if name is not None and self._last is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


class Workspace:
    """Buffers reused across chunks, steps and epochs: gathered ratings, Gram matrices; and
    the threads that run the fused kernel."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self._pool: ThreadPoolExecutor | None = None

    def pool(self, threads: int) -> ThreadPoolExecutor | None:
        """A pool of ``threads`` threads (``None`` for one), kept while the count stays."""
        if threads <= 1:
            return None
        if self._pool is None or self._pool._max_workers != threads:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rec-kernel")
        return self._pool

    def get(self, numel: int, dtype: torch.dtype, device: torch.device,
            name: str = "gather") -> torch.Tensor:
        b = self.buffers.get(name)
        if b is None or b.numel() < numel or b.dtype != dtype or b.device != device:
            self.buffers[name] = b = torch.empty(numel, dtype=dtype, device=device)
        return b[:numel]


def gather(table: torch.Tensor, chunk: Chunk, workspace: Workspace) -> torch.Tensor:
    """``table[chunk.cols]`` as ``(n, width, D+1)``, in the reused workspace.

    ``table`` is ``(n_cols + 1, D + 1)``: each column's ``x`` then its offset,
    with a final row of zeros that the padding points at.
    """
    n, width = chunk.cols.shape
    d1 = table.shape[1]
    z = workspace.get(n * width * d1, table.dtype, table.device).view(n * width, d1)
    torch.index_select(table, 0, chunk.cols.view(-1), out=z)
    return z.view(n, width, d1)


def gram(table: torch.Tensor, chunk: Chunk, workspace: Workspace, out: torch.Tensor,
         timer: PhaseTimer | None = None, weighted: bool = False) -> torch.Tensor:
    """``Z^T Z`` per row of ``chunk``, into ``out``, with ``Z = [x_n, y_n]`` and
    ``y = vals - offset_n``; ``weighted``: ``Z = vals_n [x_n, 1]`` instead (the implicit
    loss, whose values are ``sqrt(c)`` and offsets 0: ``sum c x x^T`` and ``sum c x``)."""
    z = gather(table, chunk, workspace)
    y = z[..., -1]
    torch.sub(chunk.vals, y, out=y)
    if weighted:
        z[..., :-1] *= chunk.vals.unsqueeze(-1)
    if timer:
        timer.lap("gather")
    torch.bmm(z.transpose(1, 2), z, out=out)
    if timer:
        timer.lap("gram")
    return out


def _system(g: torch.Tensor, lam: float, reg: torch.Tensor,
            prior: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The matrices ``lam G_xx + diag(reg)`` and right-hand sides ``lam G_xy + prior``, in ``g``."""
    d = g.shape[-1] - 1
    if lam != 1:
        g.mul_(lam)
    a = g[:, :d, :d]
    a.diagonal(dim1=1, dim2=2).add_(reg)
    rhs = g[:, :d, d]
    if prior is not None:
        rhs += prior
    return a, rhs


def _refuse_singular(failed: int) -> None:
    if failed:
        raise FloatingPointError(f"{failed} ALS system(s) singular: the priors (tau, gamma) "
                                 "must be positive")


def _checked(solution: torch.Tensor, info: torch.Tensor) -> torch.Tensor:
    _refuse_singular(int((info != 0).sum()))
    return solution


COLUMN_STEPS_MAX = 16
"""Largest system that :func:`cholesky_solve` factors by column steps over the batch; past
it each step's temporaries grow as D^2 per system and LAPACK's batched factorization wins
(at K = 50 the column steps made a Gibbs sweep of ml-latest-small 6x slower: 1.5 s, 0.26 s)."""


def cholesky_solve(a: torch.Tensor, rhs: torch.Tensor,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """``a^-1 rhs`` for a batch of symmetric positive definite ``a`` (n, D, D), by a Cholesky
    factorization written as D column steps of vector operations over the whole batch.

    At D ~ 11 a batched LAPACK call handles one small matrix at a time; here every
    operation runs across all n systems, stored batch-last so that each is one contiguous
    sweep.  With ``noise`` (n, D) standard normal, returns the draw ``a^-1 rhs + L^-T noise``
    of the Gaussian with precision ``a = L L^T`` instead.  Only the lower triangle is read;
    ``a`` may be overwritten, ``rhs`` is not.  Past ``COLUMN_STEPS_MAX`` unknowns the
    factorization is LAPACK's (the same result).
    """
    if rhs.shape[1] > COLUMN_STEPS_MAX:
        return _lapack_cholesky_solve(a, rhs, noise)
    n, d = rhs.shape
    low = a.permute(1, 2, 0).contiguous()  # (D, D, n): L's column j is low[j:, j]
    inv = torch.empty(d, n, dtype=a.dtype, device=a.device)
    for j in range(d):
        if j:
            low[j:, j] -= torch.einsum("ikn,kn->in", low[j:, :j], low[j, :j])
        pivot = low[j, j]
        _refuse_singular(int((~(pivot > 0)).sum()))
        torch.rsqrt(pivot, out=inv[j])
        low[j:, j] *= inv[j]
    t = rhs.T.clone(memory_format=torch.contiguous_format)  # (D, n), never a view of rhs
    for i in range(d):  # L t = rhs
        if i:
            t[i] -= (low[i, :i] * t[:i]).sum(0)
        t[i] *= inv[i]
    if noise is not None:
        t += noise.T
    for i in range(d - 1, -1, -1):  # L^T theta = t
        if i < d - 1:
            t[i] -= (low[i + 1:, i] * t[i + 1:]).sum(0)
        t[i] *= inv[i]
    return t.T


def _lapack_cholesky_solve(a: torch.Tensor, rhs: torch.Tensor,
                           noise: torch.Tensor | None) -> torch.Tensor:
    low = _checked(*torch.linalg.cholesky_ex(a))
    theta = torch.cholesky_solve(rhs.unsqueeze(2), low)
    if noise is not None:
        theta += torch.linalg.solve_triangular(low.transpose(1, 2), noise.unsqueeze(2), upper=True)
    return theta.squeeze(2)


def ridge_solve(g: torch.Tensor, lam: float, reg: torch.Tensor,
                prior: torch.Tensor | None = None, solver: str = "lu",
                noise: torch.Tensor | None = None,
                workspace: Workspace | None = None) -> torch.Tensor:
    """Solve ``(lam G_xx + diag(reg)) theta = lam G_xy + prior`` for each row.

    ``g`` is ``(n, D+1, D+1)`` from :func:`gram`, and is overwritten; ``reg`` is
    ``(D,)`` or ``(n, D)``; ``prior`` is ``(n, D)`` or ``None``.  The matrices
    are symmetric positive definite (positive priors).  ``solver``: ``cholesky``
    (:func:`cholesky_solve`), ``lu`` (LAPACK's batched LU) or ``rows`` (the compiled
    per-row Cholesky, :func:`rec.als.kernel.solve_batch`, on ``workspace``'s threads; CPU).
    With ``noise`` (n, D), a Gaussian draw around the solution (by ``rows`` or else
    :func:`cholesky_solve`: always by Cholesky, whose factor it needs).
    """
    if solver == "rows":
        return _rows_solve(g, lam, reg, prior, noise, workspace or Workspace())
    if solver == "cholesky" or noise is not None:
        return cholesky_solve(*_system(g, lam, reg, prior), noise)
    return _checked(*torch.linalg.solve_ex(*_system(g, lam, reg, prior)))


def _rows_solve(g: torch.Tensor, lam: float, reg: torch.Tensor, prior: torch.Tensor | None,
                noise: torch.Tensor | None, workspace: Workspace) -> torch.Tensor:
    n, d = g.shape[0], g.shape[1] - 1
    out = torch.empty(n, d, dtype=g.dtype)
    none = torch.zeros(0, d, dtype=g.dtype)
    threads = torch.get_num_threads()
    rows = lambda x: (none if x is None else x.to(g.dtype).contiguous()).numpy()
    _refuse_singular(kernel.run_blocks(
        kernel.solve_batch, n, threads, workspace.pool(threads), g.contiguous().numpy(), lam,
        reg.to(g.dtype).reshape(-1, d).contiguous().numpy(), rows(prior), rows(noise),
        out.numpy()))
    return out


def cg_solve(a: torch.Tensor, rhs: torch.Tensor, start: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` conjugate-gradient steps on each system ``a theta = rhs`` of a batch (``a``
    (n, D, D) symmetric positive definite, ``rhs`` (n, D)), from ``start`` (n, D): the
    reference of the fused kernel's :func:`rec.als.kernel.cg_rows`, here on formed matrices.
    Each step lowers every row's quadratic ``theta^T a theta / 2 - rhs^T theta`` below its value
    at ``start``; after D steps the result is the exact solution up to rounding."""
    a, theta = a.double(), start.double().clone()
    mul = lambda v: torch.bmm(a, v.unsqueeze(2)).squeeze(2)
    res = rhs.double() - mul(theta)
    p, rr = res.clone(), (res * res).sum(1)
    for _ in range(steps):
        live = rr > 0  # converged rows stay where they are
        ap = mul(p)
        pap = (p * ap).sum(1)
        _refuse_singular(int((live & ~(pap > 0)).sum()))
        alpha = torch.where(live, rr / torch.where(live, pap, 1.0), 0.0).unsqueeze(1)
        theta += alpha * p
        res -= alpha * ap
        new = (res * res).sum(1)
        p = res + torch.where(live, new / torch.where(live, rr, 1.0), 0.0).unsqueeze(1) * p
        rr = new
    return theta.to(start.dtype)


def ridge_solve_inverse(g: torch.Tensor, lam: float, reg: torch.Tensor,
                        k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ridge_solve` without a prior term, and the first ``k`` columns of each system
    matrix's inverse, ``(n, D, k)``, from the same factorization."""
    a, rhs = _system(g, lam, reg, None)
    eye = torch.eye(a.shape[-1], k, dtype=a.dtype, device=a.device).expand(a.shape[0], -1, -1)
    solution = _checked(*torch.linalg.solve_ex(a, torch.cat([rhs.unsqueeze(2), eye], 2)))
    return solution[..., 0], solution[..., 1:]


def solve_side(groups: Groups, table: torch.Tensor, lam: float, reg: torch.Tensor,
               row_weight: torch.Tensor | None, out: torch.Tensor,
               prior: torch.Tensor | None = None, workspace: Workspace | None = None,
               timer: PhaseTimer | None = None, inverse: torch.Tensor | None = None,
               solver: str = "lu", noise: torch.Tensor | None = None,
               sse: torch.Tensor | None = None, shared: torch.Tensor | None = None,
               weighted: bool = False, cg_steps: int | None = None,
               woodbury_below: float = 0.0) -> None:
    """Overwrite ``out[row]`` with the solution of every row that has ratings.

    ``reg`` (D,) holds the prior precisions; ``row_weight`` (n_rows,), when given,
    multiplies each row's (ALS-WR: its rating count).  ``prior`` (n_rows, D) is
    the already-weighted prior term of the right-hand side, or ``None``.
    ``inverse`` (n_rows, D, k), when given, receives the first ``k`` columns of each
    row's inverse system matrix (``prior`` must then be ``None``; torch path only).
    ``groups`` in row order (:class:`RowRatings`) run the fused kernel; padded
    :class:`Groups` the torch path, solved by ``solver``.  With ``noise`` (n_rows, D) standard
    normal, each row gets ``solution + L^-T noise``, a draw of the Gaussian whose precision is
    its system matrix ``L L^T`` (the Gibbs sampler's conditional).  ``sse`` (n_rows,) float64,
    when given, receives each row's sum of squared errors at its new solution,
    ``y^T y - 2 theta^T X^T y + theta^T X^T X theta``, from the Gram it already formed: the
    training error without another pass over the ratings.  ``shared`` (D, D), when given, is
    added to every row's system matrix (the implicit loss's ``alpha0 X^T X``);
    ``weighted``: each rating's value weights its row of the Gram (:func:`gram`).
    ``cg_steps``: instead of the exact solution, that many conjugate-gradient steps from each
    row's current ``out[row]`` (:func:`cg_solve`; the fused kernel never forms the Grams).
    ``woodbury_below``: the fused kernel solves a row with fewer than ``woodbury_below D``
    ratings through its ``n x n`` Woodbury matrix (``engine.woodbury_below``).
    """
    if cg_steps is not None and (noise is not None or inverse is not None or sse is not None):
        raise ValueError("conjugate-gradient steps neither draw, invert nor sum errors")
    if isinstance(groups, RowRatings):
        if inverse is not None or weighted:
            raise ValueError("the joint genre step and the implicit loss's confidences need "
                             "the torch path (engine.kernel=torch)")
        return solve_rows(groups, table, lam, reg, row_weight, out, prior, timer, noise,
                          workspace, sse, shared, cg_steps, woodbury_below)
    workspace = workspace or Workspace()
    d1 = table.shape[1]
    if timer:
        timer.lap("other")  # filling the table, the prior
    for batch in groups.batches:
        n = batch.rows.numel()
        g = workspace.get(n * d1 * d1, table.dtype, table.device, "gram").view(n, d1, d1)
        start = 0
        for chunk in batch.tiles[0]:
            gram(table, chunk, workspace, g[start:start + chunk.rows.numel()], timer, weighted)
            start += chunk.rows.numel()
        for chunk in (c for tile in batch.tiles[1:] for c in tile):  # one table tile at a time
            k = chunk.rows.numel()
            part = workspace.get(k * d1 * d1, table.dtype, table.device, "part").view(k, d1, d1)
            g.index_add_(0, chunk.at, gram(table, chunk, workspace, part, timer, weighted))
            if timer:
                timer.lap("gram")
        reg_rows = reg if row_weight is None else reg * row_weight[batch.rows].unsqueeze(1)
        raw = g.to(torch.float64, copy=True) if sse is not None else None  # solves overwrite g
        if shared is not None:  # the solvers scale the Grams by lam
            g[:, :-1, :-1] += shared / lam
        if cg_steps is not None:
            a, rhs = _system(g, lam, reg_rows, None if prior is None else prior[batch.rows])
            theta = cg_solve(a, rhs, out[batch.rows], cg_steps)
        elif inverse is None:
            theta = ridge_solve(g, lam, reg_rows, None if prior is None else prior[batch.rows],
                                solver, None if noise is None else noise[batch.rows],
                                workspace)
        else:
            theta, inv = ridge_solve_inverse(g, lam, reg_rows, inverse.shape[2])
            inverse.index_copy_(0, batch.rows, inv)
        out.index_copy_(0, batch.rows, theta)
        if raw is not None:
            sse.index_copy_(0, batch.rows, _row_errors(raw, theta.double()))
        if timer:
            timer.lap("solve")


def _row_errors(g: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``y^T y - 2 theta^T X^T y + theta^T X^T X theta`` per row of Grams ``g = [X, y]^T [X, y]``."""
    d = theta.shape[1]
    fit = torch.bmm(g[:, :d, :d], theta.unsqueeze(2)).squeeze(2)
    return g[:, d, d] + ((fit - 2 * g[:, :d, d]) * theta).sum(1)


ROTATE_ROWS = 1 << 16
"""Rows rotated at a time into and out of the eigenvectors of the implicit loss's shared
Gramian by :func:`solve_rows`: the float64 temporaries stay a few MB, not a table's size."""


def solve_rows(rows: RowRatings, table: torch.Tensor, lam: float, reg: torch.Tensor,
               row_weight: torch.Tensor | None, out: torch.Tensor,
               prior: torch.Tensor | None = None, timer: PhaseTimer | None = None,
               noise: torch.Tensor | None = None, workspace: Workspace | None = None,
               sse: torch.Tensor | None = None, shared: torch.Tensor | None = None,
               cg_steps: int | None = None, woodbury_below: float = 0.0) -> None:
    """:func:`solve_side` by the fused kernel (:func:`rec.als.kernel.solve_rows`), on the
    CPU; with ``noise`` (n_rows, D), each row's Gaussian draw instead of its solution; with
    ``sse`` (n_rows,) float64, each row's squared training error at it; ``shared`` (D, D)
    added to every row's system matrix; ``cg_steps``: that many conjugate-gradient steps from
    ``out`` (:func:`rec.als.kernel.cg_rows`, any width) instead of the exact solve;
    ``woodbury_below``: a row with fewer than that many ratings per unknown is solved through
    the Woodbury identity (:func:`rec.als.kernel.few_max`); with ``shared`` and a prior
    precision the same for every entry, in the eigenvectors of ``shared``."""
    if timer:
        timer.lap("other")
    d1 = table.shape[1]
    none = torch.zeros(0, out.shape[1], dtype=out.dtype)
    weight = row_weight if row_weight is not None else torch.ones(rows.n_rows, dtype=out.dtype)
    n_gram = rows.n_split  # Grams of the rows over several tiles, summed between passes
    workspace = workspace or Workspace()
    threads = torch.get_num_threads()
    matrix = lambda m: (torch.zeros(0, 0, dtype=torch.float64) if m is None
                        else m.to(torch.float64).contiguous()).numpy()
    if cg_steps is not None:
        failed = kernel.run_blocks(
            kernel.cg_rows, rows.blocks.numel() - 1, threads, workspace.pool(threads),
            *rows.arrays(), table.numpy(), lam, reg.numpy(), weight.numpy(),
            (none if prior is None else prior.contiguous()).numpy(), matrix(shared), cg_steps,
            out.numpy(), rows.blocks.numpy())
        _refuse_singular(failed)
        if timer:
            timer.lap("kernel")
        return
    few = kernel.few_max(woodbury_below, out.shape[1])
    base = rotation = None
    if few and shared is not None and noise is None and bool((reg == reg[0]).all()):
        # S + w rho I is diagonal in S's eigenvectors Q (S = Q diag(base) Q^T): in the rotated
        # coordinates x Q every row's prior precision is diagonal, and rows of few ratings
        # take the Woodbury matrix; the solutions are rotated back below
        base, rotation = torch.linalg.eigh(shared.to(torch.float64))
        d = out.shape[1]
        rotated, q = table.clone(), rotation.to(table.dtype)  # the other side's table in Q's
        for a in range(0, table.shape[0], ROTATE_ROWS):  # coordinates, a block at a time
            rotated[a:a + ROTATE_ROWS, :d] = table[a:a + ROTATE_ROWS, :d] @ q
        table = rotated
        prior = None if prior is None else prior @ rotation.to(prior.dtype)
        shared = torch.diag(base)
    gram = workspace.get(n_gram * d1 * d1, torch.float64, table.device, "gram")
    failed = kernel.run_blocks(
        kernel.solve_rows(d1), rows.blocks.numel() - 1, threads, workspace.pool(threads),
        *rows.arrays(), table.numpy(), lam, reg.numpy(), weight.numpy(), (none if prior is None else prior.contiguous()).numpy(),
        (none if noise is None else noise.contiguous()).numpy(), matrix(shared),
        (torch.zeros(0, dtype=torch.float64) if base is None else base).numpy(), few,
        out.numpy(), rows.blocks.numpy(), rows.last_tile.numpy(), rows.slot.numpy(),
        gram.view(n_gram, d1, d1).numpy(),
        (torch.zeros(0, dtype=torch.float64) if sse is None else sse).numpy())
    if rotation is not None:
        solved = rows.last_tile >= 0
        for a in range(0, out.shape[0], ROTATE_ROWS):
            block, mask = out[a:a + ROTATE_ROWS], solved[a:a + ROTATE_ROWS]
            block[mask] = (block[mask].to(torch.float64) @ rotation.T).to(out.dtype)
    _refuse_singular(failed)
    if timer:
        timer.lap("kernel")


def squared_errors(rows: RowRatings, table: torch.Tensor, theta: torch.Tensor,
                   rating_range: tuple[float, float] | None,
                   workspace: Workspace | None = None) -> tuple[float, float]:
    """Sums of squared training errors, raw and clipped to ``rating_range``, by the kernel
    (``theta`` (n_rows, D+1): each row's ``[x, 1]``)."""
    lo, hi = rating_range or (-float("inf"), float("inf"))
    n_blocks, threads = rows.blocks.numel() - 1, torch.get_num_threads()
    sums = np.zeros((n_blocks, 2))
    kernel.run_blocks(kernel.squared_errors, n_blocks, threads,
                      (workspace or Workspace()).pool(threads), *rows.arrays(), table.numpy(),
                      theta.contiguous().numpy(), lo, hi, rows.blocks.numpy(), sums)
    raw, clipped = sums.sum(0).tolist()
    return raw, clipped


def solve_side_reference(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
                         table: torch.Tensor, n_rows: int, lam: float, reg: torch.Tensor,
                         count_scaled: bool, prior: torch.Tensor | None = None) -> torch.Tensor:
    """The same solutions by the plain route: one outer product per rating, ``index_add_``.

    ~30x slower; the reference the batched path is checked against.  Rows
    without ratings are returned as zeros.
    """
    x = table[cols.long()]
    y = vals - x[:, -1]
    z = torch.cat([x[:, :-1], y.unsqueeze(1)], 1)
    g = torch.zeros(n_rows, z.shape[1], z.shape[1], dtype=table.dtype, device=table.device)
    g.index_add_(0, rows.long(), z.unsqueeze(2) * z.unsqueeze(1))
    degree = torch.bincount(rows.long(), minlength=n_rows)
    has = torch.nonzero(degree).flatten()
    weight = degree[has].to(reg.dtype).unsqueeze(1)
    out = torch.zeros(n_rows, z.shape[1] - 1, dtype=table.dtype, device=table.device)
    out[has] = ridge_solve(g[has], lam, reg * weight if count_scaled else reg,
                           None if prior is None else prior[has])
    return out
