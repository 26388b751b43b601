"""What a row rated, as a prior mean: SVD++'s implicit factors (issue 27, item 1).

SVD++ gives person m the factor ``u_m + |N(m)|^(-1/2) sum_{j in N(m)} y_j``, with N(m) the
movies m rated.  rec stores the sum itself, ``u~_m``, so every prediction, ranking and
analysis reads the factor the model uses; the change of variables ``u_m = u~_m - z_m`` turns
u's prior ``N(0, 1/tau)`` into ``u~_m ~ N(z_m, 1/tau)``, with ``z = B Y`` and
``B = diag(|N(m)|^(-1/2)) N`` (rows: people, columns: movies).  The sum of what a person
rated is then a hierarchical prior mean of their factor, as the genres' ``A W`` is of a
movie's, and the same holds for the "flipped" movie side (``B``: movies by the people who
rated them).  J is unchanged by the substitution, so the person step is the usual exact step
towards the prior mean ``z_m``, and the step in Y is a ridge regression with the sparse design
``B``, one column of Y at a time:

    (tau_k B^T S B + rho_k I) y_k = tau_k B^T S t_k,

``S`` the rows' prior weights, ``t`` the factors ``u~`` (minus any other prior mean), ``rho``
the precision of Y's entries.  Two ways to take it:

- :meth:`RatedSums.sweep`, what training runs: one pass of block-coordinate steps, movie by
  movie.  Each ``y_n`` (K entries; the columns do not couple) moves to its exact minimizer
  given the others (over-relaxed by ``omega`` in (0, 2): successive over-relaxation, so J
  still falls at every block), and the residual ``t - B Y`` is kept current, so a pass costs
  two reads of the sums' nonzeros, as one sparse product does.  Under Gibbs each ``y_n`` is
  drawn from its exact conditional instead (single-site Gibbs, as libFM and myFM draw their
  implicit factors).  A compiled kernel (Numba) runs it; without Numba, :meth:`solve`.
- :meth:`RatedSums.solve`, the reference: the whole block's exact minimizer by
  Jacobi-preconditioned conjugate gradients (each iteration lowers J) to a relative residual
  of ``tol``; with noise, a draw of the block's joint conditional by perturb-then-solve
  (right-hand side plus ``sqrt(tau_k) B^T S^(1/2) e1 + sqrt(rho_k) e2``).  It costs tens of
  sparse products a step (``benchmarks/README.md``), which is why training sweeps.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from rec.als.groups import compact_index

try:
    import numba

    from rec.als.kernel import prefetch_ahead
except ImportError:  # pragma: no cover - solve runs instead
    numba = None


@dataclass(frozen=True)
class RatedSums:
    """``B`` (n_rows x n_cols): row m holds ``|N(m)|^(-1/2)`` at the columns it rated."""

    matrix: torch.Tensor
    """Sparse CSR, float64."""
    transpose: torch.Tensor
    """``B^T``, sparse CSR, float64."""
    _structure: list = field(default_factory=list, compare=False, repr=False)
    """:meth:`_pass_structure`, once made."""
    _kept: list = field(default_factory=list, compare=False, repr=False)
    """``[y, B y in float64]``: the last product, and the values it is of.  A Gibbs sweep
    asks for the same ``B Y`` three or four times between two changes of Y (the
    hyperparameters, the rows' prior means, the genre step, the residual of Y's own pass),
    each a pass over the sums' nonzeros; and :meth:`sweep` leaves ``B Y`` of the Y it
    returns, which its pass kept current as the residual ``t - B Y`` (it differs from a
    product by float64 rounding, a few ulps a pass).  A checkpoint keeps it
    (:meth:`state_dict`): a resumed chain must read the same ``B Y`` as one that was never
    stopped, to the last bit."""

    @classmethod
    def build(cls, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int,
              device: torch.device | str = "cpu") -> "RatedSums":
        """From the (row, column) pairs that were rated; a pair given twice counts once.

        Both CSR tables are laid out directly from sorted keys (no COO tensor to coalesce:
        at ML-32M's shape that took 3.3 GB beyond what the tables keep)."""
        key = torch.unique(rows.to(device).long() * n_cols + cols.to(device).long())
        rows = key // n_cols
        cols = key - rows * n_cols
        del key
        degree = torch.bincount(rows, minlength=n_rows)
        norm = degree.double().rsqrt()
        matrix = _csr(degree, cols, norm[rows], (n_rows, n_cols))
        # B^T: the same pairs by column, rows ascending within each (a stable sort of the
        # row-major pairs by their column)
        order = torch.sort(cols, stable=True)[1]
        rows = rows[order]
        del order
        transpose = _csr(torch.bincount(matrix.col_indices(), minlength=n_cols), rows,
                         norm[rows], (n_cols, n_rows))
        return cls(matrix, transpose)

    @property
    def n_rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_cols(self) -> int:
        return self.matrix.shape[1]

    def mean(self, y: torch.Tensor) -> torch.Tensor:
        """``B Y``: each row's normalized sum of what it rated, in ``y``'s dtype."""
        return self._product(y).to(y.dtype, copy=True)

    def _product(self, y: torch.Tensor) -> torch.Tensor:
        """``B Y`` in float64, multiplied only when ``y`` holds other values than the last
        one kept (:attr:`_kept`)."""
        kept = self._kept
        if not (kept and kept[0].shape == y.shape and kept[0].dtype == y.dtype
                and kept[0].device == y.device and torch.equal(kept[0], y)):
            kept[:] = [y.detach().clone(), self.matrix @ y.double()]
        return kept[1]

    def state_dict(self) -> dict | None:
        """What a resumed run needs to continue to the same bits: the last ``B Y`` and the
        Y it belongs to (``None``: none kept)."""
        return None if not self._kept else {"y": self._kept[0], "product": self._kept[1]}

    def load_state_dict(self, state: dict | None, device: torch.device | str = "cpu") -> None:
        self._kept[:] = [] if state is None else [state["y"].to(device),
                                                  state["product"].to(device)]

    def _apply(self, y: torch.Tensor, weight: torch.Tensor, tau: torch.Tensor,
               rho: torch.Tensor) -> torch.Tensor:
        return tau * (self.transpose @ (weight.unsqueeze(1) * (self.matrix @ y))) + rho * y

    def solve(self, target: torch.Tensor, weight: torch.Tensor, tau, rho, start: torch.Tensor,
              noise: tuple[torch.Tensor, torch.Tensor] | None = None, tol: float = 1e-8,
              max_iter: int = 1000) -> torch.Tensor:
        """Y minimizing ``sum_k [tau_k/2 sum_m weight_m (target_mk - (B Y)_mk)^2
        + rho_k/2 |Y_k|^2]``, by preconditioned conjugate gradients from ``start``.

        ``tau`` and ``rho`` are scalars or (K,) per column.  ``noise`` (standard normal,
        ``(n_rows, K)`` and ``(n_cols, K)``) turns the solve into a draw from the Gaussian
        whose precision is the system's and whose mean is the minimizer.
        """
        k = target.shape[1]
        as_row = lambda x: torch.as_tensor(x, dtype=torch.float64, device=target.device
                                           ).reshape(-1).expand(k).unsqueeze(0)
        tau, rho, w = as_row(tau), as_row(rho), weight.double()
        t = target.double()
        if noise is not None:  # perturb: t + S^(-1/2) e1 / sqrt(tau) and the prior's e2
            t = t + noise[0].double() / (w.clamp_min(1e-300).sqrt().unsqueeze(1) * tau.sqrt())
        rhs = tau * (self.transpose @ (w.unsqueeze(1) * t))
        if noise is not None:
            rhs = rhs + rho.sqrt() * noise[1].double()
        # the Jacobi preconditioner: column j's sum of B_mj^2 w_m, as B^T (|N(m)|^-1/2 w_m)
        diag = tau * (self.transpose @ (self._norm() * w).unsqueeze(1)) + rho
        y = start.double().clone()
        r = rhs - self._apply(y, w, tau, rho)
        scale = rhs.norm(dim=0).clamp_min(1e-300)
        z = r / diag
        d = z.clone()
        rz = (r * z).sum(0)
        for _ in range(max_iter):
            if bool(((r.norm(dim=0) / scale) <= tol).all()):
                break
            ad = self._apply(d, w, tau, rho)
            alpha = rz / (d * ad).sum(0).clamp_min(1e-300)
            y += alpha * d
            r -= alpha * ad
            z = r / diag
            rz_new = (r * z).sum(0)
            d = z + (rz_new / rz.clamp_min(1e-300)) * d
            rz = rz_new
        return y.to(start.dtype)

    def _pass_structure(self) -> list:
        """``[indptr, rows, norm]`` of :meth:`sweep`'s pass: ``B^T``'s row pointers, its
        column indices in 4 bytes where they fit, and :meth:`_norm`; made once."""
        if not self._structure:
            t = self.transpose
            self._structure[:] = [t.crow_indices().cpu().numpy(),
                                  compact_index(t.col_indices()).cpu().numpy(),
                                  self._norm().cpu().numpy()]
        return self._structure

    def _norm(self) -> torch.Tensor:
        """Each row's ``|N(m)|^-1/2``, B's value in that row (0 for a row that rated
        nothing)."""
        degree = self.matrix.crow_indices().diff().double()
        return torch.where(degree > 0, degree.rsqrt(), 0)

    def sweep(self, target: torch.Tensor, weight: torch.Tensor, tau, rho, y: torch.Tensor,
              noise: torch.Tensor | None = None, omega: float = 1.0) -> torch.Tensor:
        """One pass of block-coordinate steps on Y for :meth:`solve`'s objective, from ``y``
        (returned, not changed): each row of Y in turn set to its exact minimizer given the
        others, moved by ``omega``; with ``noise`` (standard normal, like ``y``) drawn from its
        exact conditional instead.  Runs :meth:`solve` where Numba is missing (the whole
        block's minimizer, or a draw of its joint conditional)."""
        if numba is None:  # pragma: no cover
            draws = None if noise is None else (torch.zeros_like(target), noise)
            return self.solve(target, weight, tau, rho, y, draws)
        k = target.shape[1]
        per_col = lambda x: np.asarray(np.broadcast_to(
            np.asarray(x, dtype=np.float64).reshape(-1), (k,)))
        indptr, rows, norm = self._pass_structure()
        weighted = weight.double().cpu().numpy() * norm
        out = y.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
        residual = (target.double() - self._product(y)).cpu().numpy()
        draws = None if noise is None else noise.double().cpu().numpy()
        # Y's columns are independent problems (each has its own tau and rho and reads only
        # its own residual column), so each thread sweeps a share of them, exactly as one
        # thread would: in arrays of its own (sharing rows' cache lines would slow both)
        threads = max(1, min(torch.get_num_threads(), k))
        shares = [c for c in np.array_split(np.arange(k), threads) if c.size]

        def run(cols: np.ndarray) -> tuple:
            part_y = np.ascontiguousarray(out[:, cols])
            # each row's residual with its |N(m)|^-1/2 and weight |N(m)|^-1/2 beside it:
            # a nonzero of the pass reads one row at random and nothing else but its index
            table = _line_rows(residual.shape[0], cols.size + 2)
            table[:, :cols.size] = residual[:, cols]
            table[:, cols.size], table[:, cols.size + 1] = norm, weighted
            part_noise = np.zeros((1, cols.size)) if draws is None else \
                np.ascontiguousarray(draws[:, cols])
            _sweep_kernel()(indptr, rows, np.ascontiguousarray(per_col(tau)[cols]),
                            np.ascontiguousarray(per_col(rho)[cols]), table, part_y,
                            part_noise, draws is not None, float(omega),
                            y.dtype == torch.float32)
            residual[:, cols] = table[:, :cols.size]
            return cols, part_y

        if len(shares) == 1:
            done = [run(shares[0])]
        else:
            with ThreadPoolExecutor(len(shares), thread_name_prefix="rec-rated") as pool:
                done = list(pool.map(run, shares))
        for cols, part in done:
            out[:, cols] = part
        result = torch.from_numpy(out).to(device=y.device, dtype=y.dtype)
        # the pass kept t - B Y current, so B Y of the new Y is t less it: no product to
        # compute again (the next sweep's first call would)
        self._kept[:] = [result.clone(),  # a copy: a caller may write to what it is given
                         target.double() - torch.from_numpy(residual).to(target.device)]
        return result


def _sweep(indptr, rows, tau, rho, table, y, noise, draw, omega, single):
    """The pass of :meth:`RatedSums.sweep`: ``indptr``/``rows`` are ``B^T``'s structure in
    CSR (each column of B: the rows that rated it); row m of ``table`` is ``t_m - (B Y)_m``
    in its first K columns, kept so, then ``|N(m)|^-1/2`` and ``weight_m |N(m)|^-1/2``.  Each
    nonzero reads a random row of it (at ML-32M's shape SVD++'s is 200 k people), so both
    loops ask for the row of the nonzero :data:`rec.als.kernel.PREFETCH_AHEAD` further on.
    With ``single`` each new entry is rounded to float32 before the residual follows it, so
    the residual stays that of the float32 table the caller keeps."""
    n_cols, k = y.shape
    num = np.empty(k)
    delta = np.empty(k)
    base, row_bytes = table.ctypes.data, table.strides[0]
    for j in range(n_cols):
        lo, hi = indptr[j], indptr[j + 1]
        d = 0.0
        num[:] = 0.0
        for p in range(lo, hi):
            prefetch_ahead(base, row_bytes, rows, p)
            row = table[rows[p]]
            ws = row[k + 1]
            d += ws * row[k]
            for c in range(k):
                num[c] += ws * row[c]
        for c in range(k):
            prec = tau[c] * d + rho[c]
            best = tau[c] * (num[c] + d * y[j, c]) / prec
            if draw:
                new = best + noise[j, c] / math.sqrt(prec)
            else:
                new = y[j, c] + omega * (best - y[j, c])
            if single:
                new = np.float64(np.float32(new))
            delta[c] = new - y[j, c]
            y[j, c] = new
        for p in range(lo, hi):
            prefetch_ahead(base, row_bytes, rows, p)
            row = table[rows[p]]
            s = row[k]
            for c in range(k):
                row[c] -= s * delta[c]


def _csr(counts: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
         shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR tensor from each row's count and the row-major columns and values."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=cols.device)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # "CSR support is in beta": products are all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _line_rows(n: int, width: int) -> np.ndarray:
    """Zeros, n rows of at least ``width`` float64 that start on 64-byte cache lines, each
    padded to whole lines: a row read at random is then as few lines as its width allows
    (7 entries unaligned straddle two lines most of the time)."""
    per_line = 64 // 8
    padded = -(-width // per_line) * per_line
    buffer = np.zeros(n * padded + per_line)
    start = (-buffer.ctypes.data % 64) // 8
    return buffer[start:start + n * padded].reshape(n, padded)


_COMPILED: list = []


def _sweep_kernel():
    """:func:`_sweep` compiled (once per process; Numba's disk cache keeps it)."""
    if not _COMPILED:
        _COMPILED.append(numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(_sweep))
    return _COMPILED[0]
