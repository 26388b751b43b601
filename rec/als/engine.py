"""Exact block-coordinate descent on J: the user, movie and genre steps (SPEC §2.3).

Each step minimizes J exactly over one block with the others fixed, so J
never increases.  One epoch = user step, movie step, genre step.  A user or
movie without training ratings gets its prior: ``u = 0, b = 0``; ``v = p_n, c = 0``.

With ``model.feedback=implicit`` the same steps minimize the iALS loss L of
:class:`rec.als.config.ModelConfig` instead: an observed pair's value is its target t when
``c = 1`` (1, or graded by ``model.liked_min``), else ``sqrt(c)`` with target 1; the data
term's weight is 1, and every row's system also holds the shared Gramian ``alpha0 X^T X`` of
the other side's factors, formed once per step,
``(alpha0 X^T X + sum_obs c x x^T + tau w_m I) u_m = sum_obs c t x + tau w_m p_m``, with
``w_m = (|N(m)| + alpha0 N)^nu``.  A row without interactions gets its exact optimum,
``(alpha0 X^T X + tau w I)^-1 tau w p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rec.als.config import ModelConfig
from rec.als.exchange import Exchange
from rec.als.groups import Groups, RowRatings
from rec.als.layout import Layout, LayoutSpec, joint_step, whole_layout
from rec.als.params import Params
from rec.als.rated import RatedSums
from rec.als.sizes import EngineSizes
from rec.als.time_biases import TimedRatings, timed_ratings
from rec.als.solve import PhaseTimer, Workspace, gather, solve_side, squared_errors


@dataclass(frozen=True)
class EngineFacts:
    """What later steps need to know of an engine, without holding its grouped ratings."""

    n_train: int
    """Training ratings."""
    padding: float
    """Padded slots per rating, minus one, of the user step's groups."""
    user_step_tiles: int
    """Column tiles of the movie table that the user step reads (1: none)."""
    movie_step_tiles: int
    """Column tiles of the user table that the movie step reads."""
    cold_users: int
    """Users without training ratings (they keep their prior)."""
    cold_movies: int
    """Movies without training ratings (their embedding is their genre prior)."""
    sizes: EngineSizes
    """The layout it ran with, every default resolved for its device."""


ROW_BLOCK = 1 << 16
"""Rows of a table that sums over it take at a time: the temporaries stay a few MB where a
whole table's (2 M people at K = 64: 512 MiB, 1 GiB in float64) set a run's peak memory."""


def row_squares(x: torch.Tensor, double: bool = False) -> torch.Tensor:
    """``(x ** 2).sum(1)`` (of ``x`` in float64 when ``double``), :data:`ROW_BLOCK` rows at a
    time: the same sums, without a temporary of ``x``'s size."""
    cast = (lambda t: t.double()) if double else (lambda t: t)
    parts = [(cast(x[s:s + ROW_BLOCK]) ** 2).sum(1) for s in range(0, x.shape[0], ROW_BLOCK)]
    return torch.cat(parts) if parts else cast(x).new_zeros(0)


def gram_of(x: torch.Tensor) -> torch.Tensor:
    """``X^T X`` in float64, summed over blocks of :data:`ROW_BLOCK` rows (no float64 copy of
    the whole table)."""
    out = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], ROW_BLOCK):
        part = x[s:s + ROW_BLOCK].double()
        out.addmm_(part.T, part)
    return out


def genre_pairs(genre_matrix: torch.Tensor) -> torch.Tensor:
    """Sparse ``(F^2, n)``: entry ``(f F + g, n)`` is ``A[n, f] A[n, g]``, for the sums
    ``sum_n a_n a_n^T (x) M_n`` of the joint step (a movie has a handful of genres)."""
    n, f = genre_matrix.shape
    row, col = genre_matrix.nonzero(as_tuple=True)  # row-major: each movie's genres together
    count = torch.bincount(row, minlength=n)
    start = torch.cumsum(count, 0) - count
    per = count[row]
    left = torch.repeat_interleave(torch.arange(row.numel(), device=row.device), per)
    first = torch.repeat_interleave(torch.cumsum(per, 0) - per, per)
    right = start[row[left]] + torch.arange(left.numel(), device=row.device) - first
    values = genre_matrix[row[left], col[left]] * genre_matrix[row[right], col[right]]
    keys = torch.stack([col[left] * f + col[right], row[left]])
    return torch.sparse_coo_tensor(keys, values, (f * f, n), check_invariants=True).coalesce()


class ALS:
    """Grouped training ratings, prior weights and reusable buffers for one model.

    ``layout`` holds the training ratings this process trains on, grouped both ways
    (:mod:`rec.als.layout`), laid out as ``spec`` says (the model, its kernel and sizes,
    precision and device); ``genre_matrix`` is A (movies x genres, ``A[n, f] = 1/|F(n)|``).
    ``exchange`` combines the work of the job's processes (:mod:`rec.als.exchange`): in one
    process it has nothing to do, under torchrun each rank solves its own rows and the
    exchange shares them, so that every rank ends each step with the parameters one process
    computes.  :meth:`from_ratings` lays out a whole dataset and builds the engine in one call.
    ``joint_genre_step`` makes each epoch's movie and genre steps one exact joint step over
    (V, c, W) in the ``features`` rung (:meth:`movie_genre_step`).  ``relaxation`` (omega)
    over-relaxes every step: a block moves to ``old + omega (exact - old)``.  J is quadratic
    in a block with its minimum at omega = 1 and symmetric about it, so for 0 < omega < 2
    each step still lowers J, and omega near 2 crosses the long narrow valleys of the
    coupled blocks in far fewer epochs (successive over-relaxation).  ``cg_steps`` replaces
    the user and movie steps' exact solves by that many conjugate-gradient steps from the
    current rows (:func:`rec.als.solve.cg_solve`): each still lowers J, for a fraction of the
    cost at large K (the genre step and fold-in stay exact).  ``rated`` (people by movies) and
    ``raters`` (movies by people) are the SVD++ sums of ``model.svdpp`` and
    ``model.svdpp_flipped`` (:mod:`rec.als.rated`): each person's prior mean is ``B Y``, each
    movie's gains ``C X``, and each epoch adds the exact Y and X steps.  ``timed``: the
    training ratings with their days, for the time-aware biases of ``model.time_bins`` and
    ``model.time_drift`` (:mod:`rec.als.time_biases`): every other step fits ``r - o``, and
    each epoch ends with their exact steps; ``time_axis`` is their fixed axis (the bins'
    edges and the people's mean days).  ``person_matrix``: D, the people's features of
    ``model.person_features``, whose embeddings Z (and entries zeta) give each person's prior
    mean ``d_m^T Z`` (and ``d_m^T zeta`` for the bias), learned by an exact step like W's.
    """

    def __init__(self, layout: Layout, spec: LayoutSpec, genre_matrix: torch.Tensor,
                 exchange: Exchange | None = None, joint_genre_step: bool = False,
                 relaxation: float = 1.0, cg_steps: int | None = None,
                 rated: RatedSums | None = None, raters: RatedSums | None = None,
                 timed: TimedRatings | None = None, time_axis: tuple | None = None,
                 person_matrix: torch.Tensor | None = None) -> None:
        if (person_matrix is not None) != spec.cfg.person_features:
            raise ValueError("model.person_features needs the people's feature matrix D "
                             "(rec.data.people), and only it uses one")
        if person_matrix is not None and exchange is not None and exchange.several:
            raise ValueError("the people's features train in one process")
        if (timed is not None) != spec.cfg.has_time or (time_axis is None) != (timed is None):
            raise ValueError("model.time_bins and model.time_drift need the timed training "
                             "ratings and their axis (rec.als.time_biases), and only they use them")
        if timed is not None and exchange is not None and exchange.several:
            raise ValueError("the time-aware biases train in one process")
        self.timed, self.time_axis = timed, time_axis
        self._time_seen: tuple | None = None
        """The time terms whose offsets the layouts hold (``None``: none yet, all zero)."""
        if (rated is not None) != spec.cfg.svdpp or (raters is not None) != spec.cfg.svdpp_flipped:
            raise ValueError("model.svdpp and model.svdpp_flipped need their rated sums "
                             "(rec.als.rated.RatedSums), and only they use them")
        if spec.cfg.has_rated and (joint_genre_step or (exchange is not None and exchange.several)):
            raise ValueError("the SVD++ terms train in one process, without the joint genre step")
        self.rated, self.raters = rated, raters
        if not 0 < relaxation < 2:
            raise ValueError(f"relaxation must lie in (0, 2) for J to decrease, got {relaxation}")
        if cg_steps is not None and (cg_steps < 1 or relaxation != 1 or joint_genre_step):
            raise ValueError("conjugate-gradient steps (1 or more) run with relaxation 1 and "
                             "without the joint genre step")
        self.cg_steps = cg_steps
        cfg = spec.cfg
        self.cfg, self.spec, self.sizes = cfg, spec, spec.sizes
        self.device, self.dtype = spec.device, spec.dtype
        self.exchange = exchange or Exchange()
        self.relaxation = relaxation
        self.implicit = cfg.implicit
        self.lam = 1.0 if cfg.implicit else cfg.lam
        """The data term's weight in each row's system (the implicit loss has no noise
        precision: its pairs carry their confidences)."""
        self.weighted = bool(cfg.implicit and cfg.confidence)
        """Whether each pair's value ``sqrt(c)`` weights its row of the Grams."""
        n_users, n_items = self.n_users, self.n_items = layout.n_users, layout.n_items
        self.mu = layout.mu if cfg.has_biases else 0.0
        self.dim = cfg.dim
        self.width = spec.width  # D: unknowns per row
        joint = joint_step(cfg, joint_genre_step)
        if joint and (self.sizes.kernel == "fused" or self.exchange.several):
            raise ValueError("the joint genre step runs on the torch path (a spec resolved "
                             "with joint=True), in one process")
        self.by_item, self.by_user = layout.by_item, layout.by_user
        self._n_train = layout.n_train
        self.own = dict(zip(("user", "item"), layout.own or (slice(0, n_users), slice(0, n_items))))
        """The users and the movies whose rows this process solves (all in one process): its
        layout's rows and per-row buffers are theirs, numbered from 0."""
        degrees = layout.degrees
        if degrees is None:
            degrees = tuple(self.exchange.total(self._whole(groups.degree, side))
                            for groups, side in ((self.by_user, "user"), (self.by_item, "item")))
        self.user_degree, self.item_degree = (d.to(self.device) for d in degrees)
        """Training ratings (implicit: interactions) per user and per movie, over the whole
        job (a shard's groups hold only its own rows' ratings)."""
        self.user_weight = self._weights(self.user_degree, n_items)
        self.item_weight = self._weights(self.item_degree, n_users)
        self.reg = torch.tensor(cfg.precisions(), dtype=self.dtype, device=self.device)
        self.genre_matrix = genre_matrix.to(device=self.device, dtype=self.dtype)
        self.genre_gram = self.genre_matrix.T @ (self.item_weight.unsqueeze(1) * self.genre_matrix)
        self.person_matrix = None if person_matrix is None else \
            person_matrix.to(device=self.device, dtype=self.dtype)
        """D (people x person features, ``model.person_features``), else ``None``."""
        self.person_gram = None if person_matrix is None else \
            self.person_matrix.T @ (self.user_weight.unsqueeze(1) * self.person_matrix)
        # gather tables: the other side's [x, offset = bias + mu] with a zero sentinel row
        self.item_table = self._table(n_items)
        self.user_table = self._table(n_users)
        self.user_theta, self.item_theta = (
            torch.zeros(self.by_user.n_rows, self.width, dtype=self.dtype, device=self.device),
            torch.zeros(self.by_item.n_rows, self.width, dtype=self.dtype, device=self.device))
        """Each step's solutions, a row per own row (:attr:`own`)."""
        self.cold_users = torch.nonzero(self.user_degree == 0).flatten()
        self.cold_items = torch.nonzero(self.item_degree == 0).flatten()
        self.joint = joint
        """Whether each epoch's movie and genre steps are one exact joint step (``features``)."""
        self.genre_pairs = genre_pairs(self.genre_matrix) if self.joint else None
        self.movie_inverse: torch.Tensor | None = None
        """``H_n^-1 E^T`` of each movie, kept between the two halves of the joint step."""
        self.workspace = Workspace()
        self.timer: PhaseTimer | None = None
        """Set to a :class:`PhaseTimer` to profile the steps (torch path: gather, gram, solve;
        fused kernel: kernel; both: genre, other)."""

    @classmethod
    def from_ratings(cls, cfg: ModelConfig, user: torch.Tensor, item: torch.Tensor,
                     rating: torch.Tensor, n_users: int, n_items: int,
                     genre_matrix: torch.Tensor, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32, sizes: EngineSizes = EngineSizes(),
                     joint_genre_step: bool = False, relaxation: float = 1.0,
                     mu: float | None = None,
                     degrees: tuple[torch.Tensor, torch.Tensor] | None = None,
                     subset: torch.Tensor | None = None, cg_steps: int | None = None,
                     rated: tuple[RatedSums | None, RatedSums | None] = (None, None),
                     timestamp: torch.Tensor | None = None,
                     person_matrix: torch.Tensor | None = None) -> "ALS":
        """One process's engine over the ratings at ``subset`` (``None``: all): ``sizes``
        resolved for ``device``, the ratings laid out (:func:`rec.als.layout.whole_layout`;
        the fused kernel's layout reads them in place), the engine built on them; ``rated``:
        its SVD++ sums (people by movies, movies by people); ``timestamp``: every rating's
        (the time terms need them); ``person_matrix``: D of ``model.person_features``."""
        spec = LayoutSpec.resolve(cfg, sizes, device, dtype, joint_step(cfg, joint_genre_step))
        layout = whole_layout(spec, user, item, rating, n_users, n_items, subset, mu, degrees)
        timed = timed_ratings(spec, user, item, rating, timestamp, n_users, n_items, subset) \
            if cfg.has_time else (None, None)
        return cls(layout, spec, genre_matrix, None, joint_genre_step, relaxation, cg_steps,
                   *rated, *timed, person_matrix)

    def state_dict(self) -> dict:
        """What the steps carry from one epoch to the next besides the parameters, for a
        checkpoint: the SVD++ sums' last ``B Y`` (:meth:`rec.als.rated.RatedSums.state_dict`)."""
        return {name: sums.state_dict() for name, sums in (("rated", self.rated),
                                                           ("raters", self.raters))
                if sums is not None}

    def load_state_dict(self, state: dict | None) -> None:
        """:meth:`state_dict`'s state back (``None`` or a part missing: from a checkpoint
        that has none, which costs only a product computed again)."""
        for name, sums in (("rated", self.rated), ("raters", self.raters)):
            if sums is not None:
                sums.load_state_dict((state or {}).get(name), self.device)

    def finish(self) -> EngineFacts:
        """The engine's facts, and the movie side's layout freed: after the last step only
        the errors are needed, which the user side gives (at ML-32M the movie side is 137 MiB
        of the final evaluation's peak).  No step runs after it."""
        facts = self.facts()
        self.by_item = None
        self.workspace.buffers.clear()
        return facts

    def facts(self) -> EngineFacts:
        return EngineFacts(self.n_train, self.by_user.padded / max(self.by_user.nnz, 1) - 1,
                           self.by_user.n_tiles, self.by_item.n_tiles, int(self.cold_users.numel()),
                           int(self.cold_items.numel()), self.sizes)

    @property
    def n_train(self) -> int:
        """Training ratings of the whole job."""
        return self._n_train

    def _weights(self, degree: torch.Tensor, n_other: int) -> torch.Tensor:
        """Each row's multiplier of its prior precisions: its rating count (ALS-WR), the
        implicit loss's ``(|N(m)| + alpha0 N)^nu``, else 1."""
        if self.implicit:
            return (degree.double() + self.cfg.alpha0 * n_other).pow(self.cfg.nu).to(self.dtype)
        if self.cfg.count_scaled:
            return degree.to(dtype=self.dtype)
        return torch.ones(degree.numel(), dtype=self.dtype, device=self.device)

    def _whole(self, degree: torch.Tensor, side: str) -> torch.Tensor:
        """A per-row count of the own rows as one over every row of ``side`` (zero elsewhere),
        for a sum over the job's processes."""
        own = self.own[side]
        n = self.n_users if side == "user" else self.n_items
        whole = torch.zeros(n, dtype=degree.dtype, device=self.device)
        whole[own] = degree.to(self.device)
        return whole

    def _row_weight(self, weight: torch.Tensor) -> torch.Tensor | None:
        return weight if self.cfg.count_scaled or self.implicit else None

    def shared_gramian(self, factors: torch.Tensor, side: str) -> torch.Tensor | None:
        """``alpha0 X^T X`` of the other side's factors (``side``: theirs, ``"user"`` or
        ``"item"``), which every row's system holds under the implicit loss (``None`` for
        explicit feedback): each process's product over its own rows, summed over the job."""
        if not self.implicit:
            return None
        gram = gram_of(factors[self.own[side]])
        return self.exchange.total(self.cfg.alpha0 * gram).to(self.dtype)

    def _cold_rows(self, mean: torch.Tensor | None, shared: torch.Tensor | None,
                   weight: torch.Tensor, cold: torch.Tensor,
                   rows: torch.Tensor | None = None) -> torch.Tensor | float:
        """The exact optimum of the rows without ratings (``cold`` of ``weight``'s rows;
        ``rows``: the same rows of ``mean``, when it is numbered otherwise): their prior mean
        (0 without one), pulled towards 0 by the shared Gramian under the implicit loss."""
        if mean is None:
            return 0
        mean = mean[cold if rows is None else rows]
        if shared is None or cold.numel() == 0:
            return mean
        r = float(self.reg[0] * weight[cold[0]])  # no interactions: every cold row's weight
        a = shared.double() + r * torch.eye(self.width, dtype=torch.float64, device=self.device)
        return torch.linalg.solve(a, r * mean.double().T).T.to(self.dtype)

    def _table(self, n: int) -> torch.Tensor:
        return self._reset(torch.zeros(n + 1, self.width + 1, dtype=self.dtype,
                                       device=self.device))

    def _reset(self, table: torch.Tensor) -> torch.Tensor:
        """A gather table's fixed columns: the other side's bias multiplies 1, and the offset
        is 0 until :meth:`_fill` (which writes the factors and offsets) sets it."""
        table[:, self.width] = 0
        if self.cfg.has_biases:
            table[:-1, self.dim] = 1.0
        return table

    @property
    def n_features(self) -> int:
        """Columns of A, the movie features of the prior mean (genres, and decades and tags
        where the model has them): rows of W."""
        return self.genre_matrix.shape[1]

    def initial_params(self, n_genres: int, seed: int) -> Params:
        """Initial parameters (:meth:`Params.initial`) with ``n_genres`` rows of W, which must
        be :attr:`n_features`."""
        if n_genres != self.n_features:
            raise ValueError(f"W has a row per column of A: {self.n_features}, not {n_genres}")
        rated = (self.n_items if self.rated else 0, self.n_users if self.raters else 0)
        return Params.initial(self.n_users, self.n_items, n_genres, self.dim, self.mu,
                              self.cfg.init_std, seed, self.dtype, self.device, rated,
                              self.time_axis, self.n_person_features)

    @property
    def n_person_features(self) -> int:
        """Columns of D (0 without ``model.person_features``): rows of Z."""
        return 0 if self.person_matrix is None else self.person_matrix.shape[1]

    def person_mean(self, p: Params) -> torch.Tensor | None:
        """``D Z``: each person's prior mean from their attributes, else ``None``."""
        return None if self.person_matrix is None else self.person_matrix @ p.person_factors

    def user_bias_prior_mean(self, p: Params) -> torch.Tensor | None:
        """``D zeta``: each person's bias prior mean from their attributes, else ``None``."""
        if self.person_matrix is None or not self.cfg.has_biases:
            return None
        return self.person_matrix @ p.person_bias

    def _sync_time(self, p: Params) -> None:
        """Make the layouts' values ``r - o`` for ``p``'s time terms, unless they already are
        (a step may read them after the time step, a resume or a caller's change of ``p``)."""
        if self.timed is None:
            return
        seen = self._time_seen
        if seen is not None and torch.equal(seen[0], p.bin_bias) and torch.equal(seen[1], p.drift):
            return
        self.timed.refresh(p, (self.by_user, self.by_item), self.workspace)
        self._time_seen = (p.bin_bias.clone(), p.drift.clone())

    def time_step(self, p: Params, lam: float | None = None,
                  precisions: tuple[float, float, float] | None = None,
                  noise: tuple | None = None) -> float | None:
        """The time-aware biases' exact steps given everything else: every ``c_{n,k}``, then
        every person's ``(b_m, alpha_m)`` together (:class:`rec.als.time_biases.TimedRatings`);
        under Gibbs (``lam``, ``precisions`` = sampled ``gamma_time, gamma_drift`` and the
        people's bias precision, ``noise`` a standard normal per bias and (2, people) per
        person) draws from their conditionals.  Returns the training sum of squared errors
        after the steps (``None`` without time terms)."""
        t = self.timed
        if t is None:
            return None
        cfg = self.cfg
        gibbs = lam is not None
        lam = cfg.lam if lam is None else lam
        gamma_time, gamma_drift, gamma_bias = precisions or (cfg.gamma_time, cfg.gamma_drift,
                                                             cfg.gamma)
        scaled = cfg.count_scaled and not gibbs  # Bayesian priors are not count-scaled
        omega = 1.0 if gibbs else self.relaxation
        bias_mean = self.user_bias_prior_mean(p)
        weight = self.user_weight if scaled else None
        drift = (gamma_drift, gamma_bias, bias_mean, weight, omega, noise and noise[1])
        bins = (lam, gamma_time, scaled, omega, noise and noise[0])
        if t.compiled:  # one pass of sums, no residual stored: the errors after by formula
            keys, people = t.key is not None, t.dev is not None
            key_sums, person, total = t.sums(p, keys, people, self.workspace)
            if keys:
                change = t.bin_step(p, key_sums, *bins)
                total = t.errors_after_bins(total, key_sums, change)
                if people:  # the drift's step is given the new bins
                    person = t.shifted(person, change, self.workspace)
            if people:
                total = t.errors_after_drift(total, person, t.drift_step(p, person, lam, *drift))
            return total
        residual = t.residuals(p, self.workspace)
        if t.key is not None:
            residual -= t.bin_step(p, t.bin_sums(residual), *bins).to(residual.dtype)[t.key]
        if t.dev is not None:
            db, da = (x.to(residual.dtype) for x in t.drift_step(p, t.drift_sums(residual),
                                                                  lam, *drift))
            residual -= db[t.user] + da[t.user] * t.dev
        return float(residual.double().square().sum())

    def genre_mean(self, p: Params) -> torch.Tensor | None:
        """``A W``: the mean of movie n's genre embeddings (features rung), else ``None``."""
        return self.genre_matrix @ p.genre_factors if self.cfg.has_genres and self.dim else None

    def prior_mean(self, p: Params) -> torch.Tensor | None:
        """p_n: ``A W`` (features rung) plus the raters' sum ``C X`` (``svdpp_flipped``);
        ``None`` where neither applies (p_n = 0)."""
        mean = self.genre_mean(p)
        if self.raters is None:
            return mean
        flipped = self.raters.mean(p.rater_factors)
        return flipped if mean is None else mean + flipped

    def user_prior_mean(self, p: Params, rated: RatedSums | None = None) -> torch.Tensor | None:
        """Each person's prior mean of ``u~_m``: the rated sum ``B Y`` (``svdpp``; ``rated``:
        other sums than training's) plus their attributes' ``D Z`` (``person_features``), else
        ``None``."""
        rated = rated or self.rated
        parts = [m for m in (None if rated is None else rated.mean(p.rated_factors),
                             self.person_mean(p)) if m is not None]
        return sum(parts[1:], parts[0]) if parts else None

    def _rows_mean(self, mean: torch.Tensor | None,
                   bias_mean: torch.Tensor | None = None) -> torch.Tensor | None:
        """A prior mean of the factors as one of ``[x; bias]`` (the bias's ``bias_mean``, 0
        when ``None``); ``None`` where neither has one."""
        if not self.cfg.has_biases or (mean is None and bias_mean is None):
            return mean
        n = (mean if mean is not None else bias_mean).shape[0]
        factors = mean if mean is not None else torch.zeros(n, self.dim, dtype=self.dtype,
                                                            device=self.device)
        bias = bias_mean if bias_mean is not None else factors.new_zeros(n)
        return torch.cat([factors, bias.unsqueeze(1)], 1)

    def bias_prior_mean(self, p: Params) -> torch.Tensor | None:
        """The prior mean of each movie bias, ``a_n^T beta`` (``model.genre_bias``), else ``None``."""
        return self.genre_matrix @ p.genre_bias if self.cfg.has_bias_prior else None

    def _fill(self, table: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n = factors.shape[0]
        table[:n, :self.dim] = factors
        if self.cfg.has_biases:
            torch.add(bias, self.mu, out=table[:n, self.width])
        return table

    def _start(self, theta: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor) -> None:
        """Conjugate-gradient steps start from the current rows: ``theta = [x; bias]``."""
        if self.cg_steps is not None:
            theta[:, :self.dim] = factors
            if self.cfg.has_biases:
                theta[:, self.dim] = bias

    def user_step(self, p: Params) -> None:
        """Solve every user's ``[u_m; b_m]`` exactly given V, c (or take ``cg_steps``
        conjugate-gradient steps towards it)."""
        self._sync_time(p)
        table = self._fill(self.item_table, p.item_factors, p.item_bias)
        mean = self._rows_mean(self.user_prior_mean(p), self.user_bias_prior_mean(p))
        self._side_step("user", table, mean, self.shared_gramian(p.item_factors, "item"),
                        p.user_factors, p.user_bias)

    def _side_step(self, side: str, table: torch.Tensor, mean: torch.Tensor | None,
                   shared: torch.Tensor | None, factors: torch.Tensor,
                   bias: torch.Tensor) -> None:
        """The user or movie step (``side``) given the other side's ``table``, the rows' prior
        mean of ``[x; bias]`` (``None``: 0) and the implicit loss's ``shared`` Gramian: this
        process's rows solved into its buffer, moved in ``factors`` and ``bias``, and shared
        with the job's other processes."""
        groups, theta, weight, cold = (
            (self.by_user, self.user_theta, self.user_weight, self.cold_users) if side == "user"
            else (self.by_item, self.item_theta, self.item_weight, self.cold_items))
        own = self.own[side]
        cold = cold[(cold >= own.start) & (cold < own.stop)]
        weight = weight[own]
        prior = None if mean is None else weight.unsqueeze(1) * self.reg * mean[own]
        self._start(theta, factors[own], bias[own])
        solve_side(groups, table, self.lam, self.reg, self._row_weight(weight), theta, prior,
                   self.workspace, self.timer, solver=self.sizes.solver, shared=shared,
                   weighted=self.weighted, cg_steps=self.cg_steps,
                   woodbury_below=self.sizes.woodbury_below)
        theta[cold - own.start] = self._cold_rows(mean, shared, weight, cold - own.start, cold)
        self._unpack(theta, factors[own], bias[own], cold - own.start)
        self.exchange.share(factors, side)
        if self.cfg.has_biases:
            self.exchange.share(bias, side)

    def given_rows(self, user: torch.Tensor, item: torch.Tensor,
                   rating: torch.Tensor) -> Groups | RowRatings:
        """The user side's layout of ratings outside training (held-out people's given
        movies), for :meth:`fold_in`."""
        return self.spec.group(user, item, rating, self.n_users, self.n_items)

    def fold_in(self, p: Params, given: Groups | RowRatings,
                rated: RatedSums | None = None) -> Params:
        """``p`` with every person who has ratings in ``given`` (:meth:`given_rows`) set to the
        exact user step over those ratings against ``p``'s movies: the same system, kernel and
        prior weights as a training person with those ratings would have (``rated``: their
        SVD++ sums over the given movies, with ``model.svdpp``)."""
        if (rated is None) != (self.rated is None):
            raise ValueError("model.svdpp folds a person in with the sums of what they rated")
        table = self._fill(self.item_table, p.item_factors, p.item_bias)
        weight = self._weights(given.degree.to(self.device), self.n_items)
        theta = torch.zeros(self.n_users, self.width, dtype=self.dtype, device=self.device)
        mean = self._rows_mean(self.user_prior_mean(p, rated), self.user_bias_prior_mean(p))
        prior = None if mean is None else weight.unsqueeze(1) * self.reg * mean
        solve_side(given, table, self.lam, self.reg, self._row_weight(weight), theta, prior,
                   self.workspace, solver=self.sizes.solver,
                   shared=self.shared_gramian(p.item_factors, "item"), weighted=self.weighted,
                   woodbury_below=self.sizes.woodbury_below)
        has = given.degree.to(self.device) > 0
        out = p.clone()
        out.user_factors[has] = theta[has, :self.dim]
        if self.cfg.has_biases:
            out.user_bias[has] = theta[has, self.dim]
        return out

    def item_step(self, p: Params) -> None:
        """Solve every movie's ``[v_n; c_n]`` exactly given U, b and the prior mean p_n (or
        take ``cg_steps`` conjugate-gradient steps towards it)."""
        self._sync_time(p)
        table = self._fill(self.user_table, p.user_factors, p.user_bias)
        self._side_step("item", table, self.movie_prior_mean(p),
                        self.shared_gramian(p.user_factors, "user"), p.item_factors, p.item_bias)

    def draw_step(self, p: Params, side: str, lam: float, precision: torch.Tensor,
                  mean: torch.Tensor, noise: torch.Tensor | None) -> float | None:
        """Set every row of one side (``"user"`` or ``"item"``) of ``p`` to a draw from its
        Gaussian conditional given the other side (the Gibbs step, SPEC §2.3's systems):
        precision ``lam X^T X + diag(precision)``, mean ``P^-1 (lam X^T y + precision * mean)``.

        ``precision`` (D,) is the prior precision of ``[x; bias]`` (not scaled by counts),
        ``mean`` (n_rows, D) each row's prior mean, ``noise`` (n_rows, D) standard normal
        (``None``: the conditional mean itself), both over every row of the side: each
        process draws its own rows and shares them.  A row without ratings is drawn from its
        prior.  Returns the training sum of squared errors at the new parameters, from the
        step's own Grams, over the job.
        """
        self._sync_time(p)
        if side == "user":
            groups, theta, cold = self.by_user, self.user_theta, self.cold_users
            table = self._fill(self.item_table, p.item_factors, p.item_bias)
            factors, bias = p.user_factors, p.user_bias
        else:
            groups, theta, cold = self.by_item, self.item_theta, self.cold_items
            table = self._fill(self.user_table, p.user_factors, p.user_bias)
            factors, bias = p.item_factors, p.item_bias
        own = self.own[side]  # this process's rows: its layout's, numbered from 0
        cold = cold[(cold >= own.start) & (cold < own.stop)]
        noise = None if noise is None else noise[own]
        sse = torch.zeros(groups.n_rows, dtype=torch.float64, device=self.device)
        solve_side(groups, table, lam, precision, None, theta, precision * mean[own],
                   self.workspace, self.timer, solver=self.sizes.solver, noise=noise, sse=sse)
        theta[cold - own.start] = mean[cold] + (0 if noise is None else
                                                noise[cold - own.start] * precision.rsqrt())
        factors[own] = theta[:, :self.dim]
        self.exchange.share(factors, side)
        if self.cfg.has_biases:
            bias[own] = theta[:, self.dim]
            self.exchange.share(bias, side)
        return float(self.exchange.total(sse.sum()))

    def movie_prior_mean(self, p: Params) -> torch.Tensor | None:
        """Each movie's prior mean of ``[v_n; c_n]`` (zeros where there is none), or ``None``
        where the movies have none (below the features rung, without ``svdpp_flipped``)."""
        v = self.prior_mean(p)
        if v is None or not self.cfg.has_biases:
            return v
        c = self.bias_prior_mean(p)
        return torch.cat([v, (torch.zeros_like(p.item_bias) if c is None else c).unsqueeze(1)], 1)

    def movie_genre_step(self, p: Params) -> None:
        """Minimize J exactly over V, c and W together, given U and b (``features`` rung).

        For fixed W, movie n's optimum is ``theta_n = H_n^-1 (g_n + tau s_n E^T W^T a_n)``
        (``H_n`` its system matrix, ``g_n`` its data term, ``s_n`` its prior weight and
        ``E = [I_K 0]``); substituting it leaves J quadratic in W alone:
        ``(sum_n a_n a_n^T (x) M_n + eta I) vec(W) = vec(sum_n a_n q_n^T)`` with
        ``M_n = tau s_n I - tau^2 s_n^2 (H_n^-1)_vv`` and ``q_n = tau s_n (H_n^-1 g_n)_v``,
        an F K system.  Its solution W then gives every ``theta_n`` by one product with
        the kept ``H_n^-1 E^T``.  A movie without ratings adds nothing (``M_n = 0``) and
        gets ``v_n = W^T a_n, c_n = 0``.
        """
        if self.exchange.several:
            raise NotImplementedError("the joint genre step runs in one process only")
        if self.genre_pairs is None:
            self.genre_pairs = genre_pairs(self.genre_matrix)
        if isinstance(self.by_item, RowRatings):  # a direct call: the joint step is torch's
            self.by_item = self.spec.padded(*self.by_item.triples(), self.n_items, self.n_users)
        self._sync_time(p)
        table = self._fill(self.user_table, p.user_factors, p.user_bias)
        k = self.dim + int(self.cfg.has_bias_prior)  # the coordinates with a genre prior mean
        if self.movie_inverse is None:
            self.movie_inverse = torch.zeros(self.n_items, self.width, k, dtype=self.dtype,
                                             device=self.device)
        inv = self.movie_inverse
        solve_side(self.by_item, table, self.lam, self.reg, self._row_weight(self.item_weight),
                   self.item_theta, None, self.workspace, self.timer, inverse=inv)
        self.item_theta[self.cold_items] = 0
        inv[self.cold_items] = 0
        s = self.item_weight.unsqueeze(1) * self.reg[:k]  # s_n P: tau per embedding, gamma for c
        m = -s.unsqueeze(2) * inv[:, :k, :] * s.unsqueeze(1)
        m.diagonal(dim1=1, dim2=2).add_(s)
        m[self.cold_items] = 0
        f = self.genre_gram.shape[0]
        lhs = torch.sparse.mm(self.genre_pairs, m.reshape(self.n_items, k * k))
        lhs = lhs.view(f, f, k, k).permute(0, 2, 1, 3).reshape(f * k, f * k)
        lhs.diagonal().add_(self.cfg.eta)
        rhs = self.genre_matrix.T @ (s * self.item_theta[:, :k])
        w = torch.linalg.solve(lhs, rhs.reshape(f * k)).view(f, k)
        self.item_theta += torch.bmm(inv, (s * (self.genre_matrix @ w)).unsqueeze(2)).squeeze(2)
        p.genre_factors.lerp_(w[:, :self.dim], self.relaxation)
        if self.cfg.has_bias_prior:
            p.genre_bias.lerp_(w[:, self.dim], self.relaxation)
        # rows without ratings: their exact optimum given the W just set (J separates by row)
        self.item_theta[self.cold_items] = self.movie_prior_mean(p)[self.cold_items]
        self._unpack(self.item_theta, p.item_factors, p.item_bias, self.cold_items)

    def genre_step(self, p: Params) -> None:
        """Exact ridge regression of V on A: ``(tau A^T S A + eta I) W = tau A^T S V``."""
        if not (self.cfg.has_genres and self.dim):
            return
        v = p.item_factors if self.raters is None else \
            p.item_factors - self.raters.mean(p.rater_factors)
        self._feature_step(self.genre_matrix, self.genre_gram, self.item_weight, v,
                           p.item_bias if self.cfg.has_bias_prior else None,
                           p.genre_factors, p.genre_bias, "item")

    def person_step(self, p: Params) -> None:
        """Exact ridge regression of U (less the rated sums) on D:
        ``(tau D^T S D + eta I) Z = tau D^T S (U - B Y)``, and of b on D for zeta."""
        if self.person_matrix is None:
            return
        u = p.user_factors if self.rated is None else \
            p.user_factors - self.rated.mean(p.rated_factors)
        self._feature_step(self.person_matrix, self.person_gram, self.user_weight, u,
                           p.user_bias if self.cfg.has_biases else None,
                           p.person_factors, p.person_bias, "user")

    def _feature_step(self, matrix: torch.Tensor, gram: torch.Tensor, weight: torch.Tensor,
                      factors: torch.Tensor, bias: torch.Tensor | None,
                      embeddings: torch.Tensor, bias_embeddings: torch.Tensor,
                      side: str) -> None:
        """The exact ridge step of one side's (``side``) feature embeddings: ``(tau F^T S F +
        eta I) E = tau F^T S X`` for the factors X (and with gamma for the biases, when given),
        over-relaxed like every step.  ``F^T S X`` is each process's product over its own rows,
        summed over the job (``F^T S F`` is fixed: formed once from the job's degrees)."""
        eye = torch.eye(gram.shape[0], dtype=self.dtype, device=self.device)
        own = self.own[side]
        for precision, values, out in ((self.cfg.tau, factors, embeddings),
                                       (self.cfg.gamma, bias, bias_embeddings)):
            if values is None:
                continue
            values = (values if values.dim() == 2 else values.unsqueeze(1))[own]
            lhs = precision * gram + self.cfg.eta * eye
            rhs = precision * matrix[own].T @ (weight[own].unsqueeze(1) * values)
            solved = torch.linalg.solve(lhs, self.exchange.total(rhs))
            out.lerp_(solved.view_as(out), self.relaxation)

    def rated_step(self, p: Params) -> None:
        """SVD++'s Y given the people's factors, for the ridge regression of ``u~`` on the rated
        sums, ``(tau B^T S B + tau_rated I) Y = tau B^T S U~``: one pass of exact
        block-coordinate steps, movie by movie (:meth:`rec.als.rated.RatedSums.sweep`)."""
        if self.rated is not None:
            people = self.person_mean(p)
            target = p.user_factors if people is None else p.user_factors - people
            p.rated_factors.copy_(self.rated.sweep(target, self.user_weight,
                                                   self.cfg.tau, self.cfg.tau_rated,
                                                   p.rated_factors, omega=self.relaxation))

    def raters_step(self, p: Params) -> None:
        """The flipped X given the movies' factors and W, for the ridge regression of
        ``V - A W`` on the raters' sums: one pass of exact block-coordinate steps."""
        if self.raters is not None:
            mean = self.genre_mean(p)
            target = p.item_factors if mean is None else p.item_factors - mean
            p.rater_factors.copy_(self.raters.sweep(target, self.item_weight, self.cfg.tau,
                                                    self.cfg.tau_rated, p.rater_factors,
                                                    omega=self.relaxation))

    def epoch(self, p: Params) -> None:
        """User step, then the movie and genre steps (one joint step when :attr:`joint`)."""
        timer = self.timer
        if timer:
            timer.lap()
        self.user_step(p)
        if timer:
            timer.lap("other")  # tables, unpacking, cold rows
        if self.person_matrix is not None:
            self.person_step(p)
            if timer:
                timer.lap("genre")
        if self.rated is not None:
            self.rated_step(p)
            if timer:
                timer.lap("rated")
        if self.joint:
            self.movie_genre_step(p)
            if timer:
                timer.lap("genre")
        else:
            self._movie_steps(p, timer)
        if self.timed is not None:
            self.time_step(p)
            if timer:
                timer.lap("time")

    def _movie_steps(self, p: Params, timer: PhaseTimer | None) -> None:
        """The movie step, then the genre and flipped steps."""
        self.item_step(p)
        if timer:
            timer.lap("other")
        self.genre_step(p)
        if timer:
            timer.lap("genre")
        if self.raters is not None:
            self.raters_step(p)
            if timer:
                timer.lap("rated")

    def _unpack(self, theta: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor,
                cold: torch.Tensor) -> None:
        """Move a block towards its exact solution ``theta`` by ``relaxation`` (rows are
        independent within a block, so each may take its own step); rows without ratings go
        straight to their prior, which is their exact optimum."""
        factors.lerp_(theta[:, :self.dim], self.relaxation)
        factors[cold] = theta[cold, :self.dim]
        if self.cfg.has_biases:
            bias.lerp_(theta[:, self.dim], self.relaxation)
            bias[cold] = theta[cold, self.dim]

    def train_errors(self, p: Params, rating_range: tuple[float, float] | None = None):
        """Sums over the job's training ratings of squared error, raw and with clipped
        predictions."""
        sums = torch.tensor(self._own_train_errors(p, rating_range), dtype=torch.float64,
                            device=self.device)
        raw, clipped = self.exchange.total(sums).tolist()
        return raw, clipped

    def _own_train_errors(self, p: Params, rating_range: tuple[float, float] | None):
        """:meth:`train_errors` over the ratings this process holds."""
        self._sync_time(p)
        table = self._fill(self.item_table, p.item_factors, p.item_bias)
        own = self.own["user"]
        # [u, b, 1] per own user (z . theta = r-hat), in the rows of the user gather table,
        # which the next movie step fills again: no temporary the size of a table
        theta = self.user_table[own]
        theta[:, :self.dim] = p.user_factors[own]
        if self.cfg.has_biases:
            theta[:, self.dim] = p.user_bias[own]
        theta[:, self.width] = 1
        try:
            return self._errors_at(table, theta, rating_range)
        finally:
            self._reset(self.user_table)

    def _errors_at(self, table: torch.Tensor, theta: torch.Tensor,
                   rating_range: tuple[float, float] | None) -> tuple[float, float]:
        """:meth:`_own_train_errors` given the movie ``table`` and each own user's ``theta``."""
        if isinstance(self.by_user, RowRatings):
            return squared_errors(self.by_user, table, theta, rating_range, self.workspace)
        theta = theta.unsqueeze(1)
        raw, clipped = torch.zeros(2, dtype=torch.float64, device=self.device)  # two tensors
        for chunk in self.by_user.chunks:
            z = gather(table, chunk, self.workspace)
            # (1 x D+1)(D+1 x width) per row: ~3x faster than (width x D+1)(D+1 x 1)
            fit = torch.bmm(theta.index_select(0, chunk.rows), z.transpose(1, 2))
            fit = fit.view(chunk.vals.shape)
            raw += (chunk.vals - fit).square_().sum(dtype=torch.float64)  # padding adds 0
            if rating_range is not None:
                fit.clamp_(*rating_range)
                clipped += fit.sub_(chunk.vals).square_().sum(dtype=torch.float64)
        if rating_range is not None:  # padding's prediction 0 became clamp(0, lo, hi)
            pad = min(max(0.0, rating_range[0]), rating_range[1])
            clipped -= (self.by_user.padded - self.by_user.nnz) * pad ** 2
        return float(raw), float(clipped)

    def implicit_errors(self, p: Params) -> float:
        """``sum_obs c (u.v - t)^2`` over the training interactions (each stored as its target
        t when ``c = 1``, else as ``sqrt(c)`` with ``t = 1``: ``(sqrt(c) u.v - sqrt(c))^2``),
        summed over the job's processes."""
        table = self._fill(self.item_table, p.item_factors, p.item_bias)
        total = torch.zeros(1, dtype=torch.float64, device=self.device)
        user_factors = p.user_factors[self.own["user"]]
        if isinstance(self.by_user, RowRatings):  # c = 1, each value its target: t - u.v
            theta = torch.cat([user_factors, torch.ones_like(user_factors[:, :1])], 1)
            total += squared_errors(self.by_user, table, theta, None, self.workspace)[0]
            return float(self.exchange.total(total))
        for chunk in self.by_user.chunks:
            z = gather(table, chunk, self.workspace)[..., :self.dim]
            fit = torch.bmm(z, user_factors.index_select(0, chunk.rows).unsqueeze(2))
            fit = fit.view(chunk.vals.shape)
            miss = chunk.vals * (fit - 1) if self.weighted else fit - chunk.vals  # target 1, or t
            total += miss.square().sum(dtype=torch.float64)  # padding: value 0, fit 0
        return float(self.exchange.total(total))

    def implicit_objective(self, p: Params) -> float:
        """L of the implicit loss at ``p`` (:class:`rec.als.config.ModelConfig`)."""
        cfg, d = self.cfg, lambda x: x.double()
        everything = float((gram_of(p.user_factors) * gram_of(p.item_factors)).sum())
        mean = self.prior_mean(p)
        dv = p.item_factors if mean is None else p.item_factors - mean
        reg = cfg.tau * (float((d(self.user_weight) * row_squares(p.user_factors, True)).sum())
                         + float((d(self.item_weight) * row_squares(dv, True)).sum()))
        genres = cfg.eta * float(d(p.genre_factors).square().sum()) if cfg.has_genres else 0.0
        return self.implicit_errors(p) + cfg.alpha0 * everything + reg + genres

    def objective(self, p: Params, sse: float | None = None) -> float:
        """J of SPEC §2.1 at ``p`` (``sse``: the raw training squared error, if known); L
        under the implicit loss."""
        if self.implicit:
            return self.implicit_objective(p)
        cfg = self.cfg
        sse = self.train_errors(p)[0] if sse is None else sse
        j = cfg.lam / 2 * sse
        wsum = lambda w, x: float((w.double() * x.double()).sum())
        if cfg.has_biases:
            c_mean, b_mean = self.bias_prior_mean(p), self.user_bias_prior_mean(p)
            dc = p.item_bias if c_mean is None else p.item_bias - c_mean
            db = p.user_bias if b_mean is None else p.user_bias - b_mean
            j += cfg.gamma / 2 * (wsum(self.user_weight, db ** 2)
                                  + wsum(self.item_weight, dc ** 2))
            if c_mean is not None:
                j += cfg.eta / 2 * float((p.genre_bias.double() ** 2).sum())
        if self.dim:
            mean, user_mean = self.prior_mean(p), self.user_prior_mean(p)
            dv = p.item_factors if mean is None else p.item_factors - mean
            du = p.user_factors if user_mean is None else p.user_factors - user_mean
            j += cfg.tau / 2 * (wsum(self.user_weight, row_squares(du))
                                + wsum(self.item_weight, row_squares(dv)))
            if cfg.has_genres:
                j += cfg.eta / 2 * float((p.genre_factors.double() ** 2).sum())
            j += cfg.tau_rated / 2 * sum(float((x.double() ** 2).sum())
                                         for x in (p.rated_factors, p.rater_factors))
            j += cfg.eta / 2 * sum(float((x.double() ** 2).sum())
                                   for x in (p.person_factors, p.person_bias))
        if self.timed is not None:
            j += self.timed.penalty(p, cfg.gamma_time, cfg.gamma_drift,
                                    self.user_weight if cfg.count_scaled else None)
        return j

