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
the precision of Y's entries.  Its matrix is shared by the K columns and is only ever applied
(two sparse products), so the step is a Jacobi-preconditioned conjugate-gradient solve started
at the current Y: each iteration lowers J, and it runs to a relative residual of ``tol``.
Under Gibbs the conditional of ``y_k`` is Gaussian with that precision; a draw is the solve
with the right-hand side perturbed by ``sqrt(tau_k) B^T S^(1/2) e1 + sqrt(rho_k) e2``
(perturb-then-solve, exact when the solve is).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RatedSums:
    """``B`` (n_rows x n_cols): row m holds ``|N(m)|^(-1/2)`` at the columns it rated."""

    matrix: torch.Tensor
    """Sparse CSR, float64."""
    transpose: torch.Tensor
    """``B^T``, sparse CSR, float64."""
    squares_t: torch.Tensor
    """``(B o B)^T``, sparse CSR: the Jacobi preconditioner's sums."""

    @classmethod
    def build(cls, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int,
              device: torch.device | str = "cpu") -> "RatedSums":
        """From the (row, column) pairs that were rated; a pair given twice counts once."""
        rows, cols = rows.long().to(device), cols.long().to(device)
        key = torch.unique(rows * n_cols + cols)
        rows, cols = key // n_cols, key % n_cols
        degree = torch.bincount(rows, minlength=n_rows).double()
        values = degree[rows].rsqrt()
        coo = lambda r, c, v, shape: torch.sparse_coo_tensor(
            torch.stack([r, c]), v, shape, check_invariants=False).coalesce().to_sparse_csr()
        with warnings.catch_warnings():  # "CSR support is in beta": products are all we use
            warnings.simplefilter("ignore", UserWarning)
            return cls(coo(rows, cols, values, (n_rows, n_cols)),
                       coo(cols, rows, values, (n_cols, n_rows)),
                       coo(cols, rows, values.square(), (n_cols, n_rows)))

    @property
    def n_rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_cols(self) -> int:
        return self.matrix.shape[1]

    def rows_of(self, index: torch.Tensor) -> "RatedSums":
        """The same sums for a subset of rows (``index``), e.g. the ones folded in."""
        coo = self.matrix.to_sparse_coo().coalesce()
        keep = torch.isin(coo.indices()[0], index.long())
        r, c = coo.indices()[:, keep]
        return RatedSums.build(r, c, self.n_rows, self.n_cols, self.matrix.device)

    def mean(self, y: torch.Tensor) -> torch.Tensor:
        """``B Y``: each row's normalized sum of what it rated, in ``y``'s dtype."""
        return (self.matrix @ y.double()).to(y.dtype)

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
        diag = tau * (self.squares_t @ w.unsqueeze(1)) + rho
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
