"""One Gibbs sweep on the ALS engine: hyperparameters, then users, movies and genres.

With ``model.person_features`` a person's prior mean is ``D Z`` (their bias's ``D zeta``):
Z and zeta are drawn after the people, from the same ridge conditionals as W.

With the time-aware biases (``model.time_bins``, ``model.time_drift``) every other draw
fits ``r - o`` (:mod:`rec.als.time_biases`), and each sweep ends with the biases per (movie,
bin) drawn from their scalar Gaussian conditionals and each person's (bias, drift) pair from
its 2-D one.

With the SVD++ terms (``model.svdpp``, ``model.svdpp_flipped``) a person's prior mean is
``mean + B Y`` and a movie's gains ``C X`` (:mod:`rec.als.rated`): Y is drawn after the
people, X after W, each row from its exact Gaussian conditional given the others (one
single-site pass, :meth:`rec.als.rated.RatedSums.sweep`), and their precisions from their
Gamma conditionals.

Each row's conditional is the Gaussian whose precision is its ALS system matrix with the
sampled precisions (:meth:`rec.als.engine.ALS.draw_step`): the same batched Grams, one
Cholesky factor and one triangular solve more per row.  The genre embeddings W (and beta)
are drawn from the ridge system of SPEC §2.3, column by column.
"""

from __future__ import annotations

import numpy as np
import torch

from rec.als.engine import ALS
from rec.als.params import Params
from rec.als.solve import cholesky_solve
from rec.bayes.config import InferenceConfig
from rec.bayes.hyper import Hyper, as_numpy, gamma_precision, normal_gamma


class GibbsSampler:
    """The chain's random state and the last hyperparameters; ``sweep`` advances ``p``."""

    def __init__(self, engine: ALS, cfg: InferenceConfig, seed: int) -> None:
        self.engine, self.cfg = engine, cfg
        self.gen = torch.Generator(device=engine.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        a, d = engine.genre_matrix, engine.person_matrix
        self.genre_gram = a.T @ a  # unweighted: the Bayesian prior is not scaled by counts
        self.person_gram = None if d is None else d.T @ d
        self.hyper: Hyper | None = None
        self.sse: float | None = None
        """The training sum of squares at the current parameters, from the last movie draw's
        Grams (``None``: count it by a pass over the ratings)."""

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "rng": self.rng.bit_generator.state,
                "hyper": None if self.hyper is None else self.hyper.state_dict(), "sse": self.sse}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.rng.bit_generator.state = state["rng"]
        self.hyper = None if state["hyper"] is None else Hyper(**state["hyper"])
        self.sse = state.get("sse")

    def _noise(self, n: int, d: int) -> torch.Tensor:
        e = self.engine
        return torch.randn(n, d, generator=self.gen, dtype=e.dtype, device=e.device)

    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.engine.dtype).to(self.engine.device)

    def draw_hyper(self, p: Params) -> Hyper:
        """Precisions and prior means given the current parameters (conjugate draws)."""
        e, c, rng = self.engine, self.cfg, self.rng
        prec = lambda x, n: gamma_precision(float((x.double() ** 2).sum()), n, c.a0, c.b0, rng)
        sse = e.train_errors(p)[0] if self.sse is None else self.sse
        lam = gamma_precision(sse, e.n_train, c.a0, c.b0, rng)
        rated = e.user_prior_mean(p)
        du = p.user_factors if rated is None else p.user_factors - rated
        user_mean, user_tau = normal_gamma(as_numpy(du), c.a0, c.b0, c.beta0, rng)
        b_mean = e.user_bias_prior_mean(p)
        db = p.user_bias if b_mean is None else p.user_bias - b_mean
        gamma_b = [prec(db, e.n_users)] if e.cfg.has_biases else []
        prior = e.prior_mean(p)
        dv = p.item_factors if prior is None else p.item_factors - prior
        if not e.cfg.has_genres:  # a Normal-Gamma mean around C X, or around 0
            item_mean, item_tau = normal_gamma(as_numpy(dv), c.a0, c.b0, c.beta0, rng)
        else:
            item_mean = np.zeros(e.dim)
            item_tau = np.array([prec(dv[:, k], e.n_items) for k in range(e.dim)])
        bias_mean = e.bias_prior_mean(p)
        dc = p.item_bias if bias_mean is None else p.item_bias - bias_mean
        gamma_c = [prec(dc, e.n_items)] if e.cfg.has_biases else []
        has_w = e.cfg.has_genres and e.dim  # W exists (prior may be C X alone)
        eta = prec(p.genre_factors, p.genre_factors.numel()) if has_w else 1.0
        eta_bias = prec(p.genre_bias, p.genre_bias.numel()) if bias_mean is not None else 1.0
        rho = lambda x: None if x.numel() == 0 else prec(x, x.numel())
        return Hyper(lam, np.concatenate([user_tau, gamma_b]), user_mean,
                     np.concatenate([item_tau, gamma_c]), item_mean, eta, eta_bias,
                     rho(p.rated_factors), rho(p.rater_factors), rho(p.person_factors),
                     rho(p.person_bias) if b_mean is not None else None, rho(p.bin_bias),
                     rho(p.drift))

    def sweep(self, p: Params) -> Hyper:
        """Draw the hyperparameters, then every user, every movie, then W and beta."""
        e = self.engine
        h = self.hyper = self.draw_hyper(p)
        user_mean, item_mean = self._tensor(h.user_mean), self._tensor(h.item_mean)
        mean = torch.zeros(e.n_users, e.width, dtype=e.dtype, device=e.device)
        rated = e.user_prior_mean(p)
        mean[:, :e.dim] = user_mean if rated is None else rated + user_mean
        b_mean = e.user_bias_prior_mean(p)
        if b_mean is not None:
            mean[:, e.dim] = b_mean
        e.draw_step(p, "user", h.lam, self._tensor(h.user_precision), mean,
                    self._noise(e.n_users, e.width))
        if e.person_matrix is not None:  # Z given U less its other means, zeta given b
            u = p.user_factors - user_mean
            u = u if e.rated is None else u - e.rated.mean(p.rated_factors)
            draw = lambda y, prec, eta: self._ridge_draw(y, prec, eta, e.person_matrix,
                                                         self.person_gram)
            p.person_factors.copy_(draw(u, h.user_precision[:e.dim], h.eta_person))
            if b_mean is not None:
                p.person_bias.copy_(draw(p.user_bias.unsqueeze(1), h.user_precision[e.dim:],
                                         h.eta_person_bias)[:, 0])
        if e.rated is not None:
            people = e.person_mean(p)
            u = p.user_factors - user_mean - (0 if people is None else people)
            p.rated_factors.copy_(self._rated_draw(e.rated, u, h.user_precision, h.rho_rated,
                                                   p.rated_factors))
        mean = e.movie_prior_mean(p)
        if mean is None:
            mean = torch.zeros(e.n_items, e.width, dtype=e.dtype, device=e.device)
        mean[:, :e.dim] += item_mean  # zeros in the features rung
        self.sse = e.draw_step(p, "item", h.lam, self._tensor(h.item_precision), mean,
                               self._noise(e.n_items, e.width))
        flipped = None if e.raters is None else e.raters.mean(p.rater_factors)
        if e.cfg.has_genres and e.dim:
            v = p.item_factors if flipped is None else p.item_factors - flipped
            p.genre_factors.copy_(self._ridge_draw(v, h.item_precision[:e.dim], h.eta))
        if e.raters is not None:
            genres = e.genre_mean(p)
            v = p.item_factors - item_mean - (0 if genres is None else genres)
            p.rater_factors.copy_(self._rated_draw(e.raters, v, h.item_precision, h.rho_raters,
                                                   p.rater_factors))
        if e.cfg.has_bias_prior:
            p.genre_bias.copy_(self._ridge_draw(p.item_bias.unsqueeze(1),
                                                h.item_precision[e.dim:], h.eta_bias)[:, 0])
        if e.timed is not None:  # the time terms last: the errors after them are exact
            noise = (self._noise(p.bin_bias.numel(), 1).view(-1) if p.bin_bias.numel() else None,
                     self._noise(2, e.n_users) if p.drift.numel() else None)
            self.sse = e.time_step(p, h.lam, (h.gamma_time or 1.0, h.gamma_drift or 1.0,
                                              float(h.user_precision[e.dim])), noise)
        return h

    def _rated_draw(self, sums, target: torch.Tensor, precision: np.ndarray, rho: float,
                    start: torch.Tensor) -> torch.Tensor:
        """Y (or X) given the rows' factors less their other prior means, ``target``: column k
        is Gaussian with precision ``precision_k B^T B + rho I`` and mean
        ``P^-1 precision_k B^T target_k``; each row of Y is drawn in turn from its exact
        conditional given the others (:meth:`RatedSums.sweep`)."""
        k = self.engine.dim
        ones = torch.ones(sums.n_rows, dtype=torch.float64, device=target.device)
        return sums.sweep(target, ones, precision[:k], rho, start, self._noise(sums.n_cols, k))

    def _ridge_draw(self, y: torch.Tensor, precision: np.ndarray, eta: float,
                    matrix: torch.Tensor | None = None,
                    gram: torch.Tensor | None = None) -> torch.Tensor:
        """W's columns given the movies' values ``y`` (n, k): column j is Gaussian with
        precision ``precision_j A^T A + eta I`` and mean ``P^-1 precision_j A^T y_j``
        (``matrix``, ``gram``: another side's features and Gram, D for Z)."""
        matrix = self.engine.genre_matrix if matrix is None else matrix
        gram = self.genre_gram if gram is None else gram
        prec = self._tensor(precision)
        f = gram.shape[0]
        lhs = prec.view(-1, 1, 1) * gram + eta * torch.eye(f, dtype=prec.dtype, device=prec.device)
        rhs = prec.unsqueeze(1) * (matrix.T @ y).T
        return cholesky_solve(lhs, rhs, self._noise(len(precision), f)).T
