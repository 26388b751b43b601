"""Model hyperparameters: the rung of the ladder and the priors of J (SPEC §2.1, §2.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rec.errors import ConfigError
from rec.mapping import from_mapping

RUNGS = ("latent", "biases", "embeddings", "features")
REG_SCALINGS = ("none", "count")
FEEDBACK = ("explicit", "implicit")
IMPLICIT_RUNGS = ("embeddings", "features")


@dataclass(frozen=True)
class ModelConfig:
    """One model of the ladder (``conf/model/<rung>.yaml`` plus the top-level ``K``)."""

    name: str = "features"
    """Rung: ``latent`` (U, V), ``biases`` (b, c), ``embeddings`` (b, c, U, V) or
    ``features`` (b, c, U, V and genre embeddings W as the prior mean of V)."""
    K: int = 10
    """Embedding dimension (ignored by ``biases``, which has none)."""
    lam: float = 1.0
    """lambda: precision of the rating noise."""
    tau: float = 15.0
    """tau: prior precision of the user and movie embeddings."""
    gamma: float = 3.0
    """gamma: prior precision of the user and movie biases."""
    eta: float = 1.0
    """eta: prior precision of the genre embeddings (``features`` only)."""
    reg_scaling: str = "none"
    """``none``: tau and gamma as given (the report). ``count``: each row's tau and gamma are
    multiplied by its training rating count (ALS-WR), which holds across dataset sizes."""
    init_std: float = 0.1
    """Standard deviation of the N(0, s^2) initial embeddings (the report used 0.01)."""
    genre_bias: bool = False
    """``features`` only: give the movie bias a genre prior too, ``c_n ~ N(a_n^T beta,
    1/gamma)`` with ``beta ~ N(0, 1/eta)`` learned exactly like W, so that a movie nobody
    rated gets its genres' bias as well as their embedding."""
    feedback: str = "explicit"
    """``explicit``: fit the ratings (J of SPEC §2.1).  ``implicit``: fit who rated what, the
    iALS loss of Rendle, Krichene, Zhang and Koren (2022), ``L = sum_obs c (u.v - t)^2 +
    alpha0 sum_all (u.v)^2 + tau sum_m (|N(m)| + alpha0 N)^nu |u_m|^2 + tau sum_n (|M(n)| +
    alpha0 M)^nu |v_n - a_n^T W|^2 + eta |W|^2`` (``embeddings`` and ``features``; no biases,
    ``lam`` and ``gamma`` unused; ``t = 1`` unless ``liked_min`` grades it): scores that rank
    the movies a person would pick."""
    alpha0: float = 0.1
    """``implicit``: weight of every (person, movie) pair as a zero (the unobserved term)."""
    nu: float = 1.0
    """``implicit``: exponent of the frequency-scaled regularization ``(|N(m)| + alpha0 N)^nu``
    (0: plain tau)."""
    confidence: float = 0.0
    """``implicit``: ``c = 1 + confidence * rating`` for an observed pair (Hu, Koren and
    Volinsky 2008); 0: ``c = 1`` (Rendle et al.)."""
    interaction_min: float | None = None
    """``implicit``: the training ratings at least this high count as interactions; ``None``:
    every rating does (a person picked the movie, whatever they thought of it)."""
    liked_min: float | None = None
    """``implicit``: an interaction rated at least this has target 1 and any other the target
    ``unliked_target``: a watched movie the person did not like is a weaker "yes" (the
    preference p of Hu, Koren and Volinsky, graded); ``None``: every interaction's target is 1."""
    unliked_target: float = 0.5
    """``implicit`` with ``liked_min``: the target, in [0, 1], of an interaction rated under
    ``liked_min`` (0: scored like an unwatched movie, but weighted as an observed pair)."""
    svdpp: bool = False
    """What a person rated (SVD++, Koren 2008): a person's factor becomes ``u_m +
    |N(m)|^(-1/2) sum_{n in N(m)} y_n`` over the movies N(m) they rated, with ``y_n ~
    N(0, 1/tau_rated)`` (:mod:`rec.als.rated`).  Explicit feedback, K > 0."""
    svdpp_flipped: bool = False
    """The "flipped" counterpart (Rendle, Zhang and Koren 2019): a movie's factor gains
    ``|M(n)|^(-1/2) sum_{m in M(n)} x_m`` over the people M(n) who rated it."""
    svdpp_heldout: bool = False
    """N(m) and M(n) also hold the identities (never the values) of the held-out ratings: the
    Netflix Prize's convention, which the papers' SVD++ numbers use.  Off: training only."""
    tau_rated: float = 15.0
    """Prior precision of Y's and X's entries (``svdpp``, ``svdpp_flipped``)."""
    movie_year: bool = False
    """``features``: the movie prior mean ``A W`` also holds the release decade (from the
    title's ``(YYYY)``), one embedding per decade (:meth:`rec.data.catalog.Catalog.feature_matrix`)."""
    movie_tags: int = 0
    """``features``: the movie prior mean also holds the ``movie_tags`` tags given to the most
    movies (``tags.csv``), the mean of the movie's embeddings among them; 0: none."""
    person_features: bool = False
    """``features``: what the person is (ml-100k's ``u.user``, ml-1m's ``users.dat``: age
    group, gender, occupation; :mod:`rec.data.people`) as the prior mean of their factors and
    bias, ``u_m ~ N(d_m^T Z, 1/tau)``, ``b_m ~ N(d_m^T zeta, 1/gamma)``, with Z and zeta
    ``~ N(0, 1/eta)`` learned like W: a new person with known attributes starts there."""
    time_bins: int = 0
    """When a movie was rated (Koren 2009): a rating at time t gains ``c_{n,bin(t)}``, a movie
    bias per time bin, ``c_{n,k} ~ N(0, 1/gamma_time)``; the bins cut the training ratings'
    days into this many parts of equal counts (:mod:`rec.als.time_biases`).  0: none.  The
    rungs with biases, explicit feedback; the dataset needs timestamps."""
    time_drift: bool = False
    """When a person rated: a rating at time t gains ``alpha_m dev_m(t)``, ``dev_m(t) =
    sign(t - t_m) |t - t_m|^0.4`` in days from the person's mean training day ``t_m``, with
    ``alpha_m ~ N(0, 1/gamma_drift)``: a person's bias drifting over time (Koren 2009)."""
    gamma_time: float = 100.0
    """Prior precision of the movie biases per time bin (``time_bins``)."""
    gamma_drift: float = 100.0
    """Prior precision of each person's drift ``alpha_m`` (``time_drift``)."""

    def __post_init__(self) -> None:
        self.validated()

    @classmethod
    def from_mapping(cls, values, **overrides) -> "ModelConfig":
        """Build from a plain mapping (``model:`` plus ``K``); unknown keys are refused."""
        return from_mapping(cls, values, "model", **overrides)

    @property
    def implicit(self) -> bool:
        return self.feedback == "implicit"

    @property
    def has_biases(self) -> bool:
        return self.name != "latent" and not self.implicit

    @property
    def dim(self) -> int:
        """Embedding columns actually trained: 0 for the biases rung."""
        return 0 if self.name == "biases" else int(self.K)

    @property
    def has_genres(self) -> bool:
        return self.name == "features"

    @property
    def variant(self) -> str:
        """The rung's name in file and run names: ``features+genre_bias`` with the bias prior,
        ``features+implicit`` for the implicit-feedback loss."""
        return self.name + ("+genre_bias" if self.genre_bias else "") + \
            ("+implicit" if self.implicit else "") + ("+svdpp" if self.svdpp else "") + \
            ("+flipped" if self.svdpp_flipped else "") + ("+heldout" if self.svdpp_heldout else "") \
            + ("+year" if self.movie_year else "") + ("+people" if self.person_features else "") + (f"+tags{self.movie_tags}" if self.movie_tags else "") \
            + (f"+bins{self.time_bins}" if self.time_bins else "") + ("+drift" if self.time_drift else "")

    @property
    def has_rated(self) -> bool:
        """Whether either side's prior mean sums what its rows rated (SVD++ terms)."""
        return self.svdpp or self.svdpp_flipped

    @property
    def has_time(self) -> bool:
        """Whether predictions depend on when a rating was made (``time_bins``, ``time_drift``)."""
        return bool(self.time_bins or self.time_drift)

    @property
    def has_bias_prior(self) -> bool:
        """Whether the movie biases have a genre prior mean (``features`` with ``genre_bias``)."""
        return self.has_genres and self.genre_bias

    @property
    def count_scaled(self) -> bool:
        return self.reg_scaling == "count"

    def movie_features(self, movies, dtype=torch.float32):
        """A: the movie features of the prior mean ``A W`` that this model uses, from the
        catalog ``movies`` (:meth:`rec.data.catalog.Catalog.feature_matrix`)."""
        return movies.feature_matrix(dtype, self.movie_year, self.movie_tags)

    def precisions(self) -> list[float]:
        """The diagonal prior precisions of one row's unknowns ``[u; b]``: tau per embedding
        coordinate, then gamma for the bias (before any count scaling)."""
        return [self.tau] * self.dim + [self.gamma] * int(self.has_biases)

    def validated(self) -> "ModelConfig":
        if self.name not in RUNGS:
            raise ConfigError(f"model={self.name!r}: choose one of {', '.join(RUNGS)}.")
        if self.reg_scaling not in REG_SCALINGS:
            raise ConfigError(f"model.reg_scaling={self.reg_scaling!r}: choose none or count.")
        if self.name != "biases" and (not isinstance(self.K, int) or self.K < 1):
            raise ConfigError(f"K={self.K!r}: the {self.name} rung needs a positive integer K.")
        if self.genre_bias and not self.has_genres:
            raise ConfigError(f"model.genre_bias=true: only the features rung has genre priors, "
                              f"and {self.name} would ignore it; use model=features.")
        if self.has_rated and (self.implicit or self.dim == 0):
            raise ConfigError("model.svdpp and model.svdpp_flipped add factors to the explicit "
                              "rungs with embeddings (embeddings, features, latent), and "
                              f"model={self.name} with feedback={self.feedback} would ignore them.")
        if self.person_features and (not self.has_genres or self.implicit):
            raise ConfigError(f"model.person_features gives the features rung's people a prior "
                              f"from their attributes, and model={self.name} with "
                              f"feedback={self.feedback} would ignore it; use model=features "
                              "with explicit feedback.")
        if (self.movie_year or self.movie_tags) and not self.has_genres:
            raise ConfigError(f"model.movie_year and model.movie_tags extend the genre prior of the "
                              f"features rung, and model={self.name} would ignore them; use "
                              "model=features.")
        if not isinstance(self.movie_tags, int) or self.movie_tags < 0:
            raise ConfigError(f"model.movie_tags={self.movie_tags!r}: a number of tags, 0 or more.")
        if not isinstance(self.time_bins, int) or self.time_bins < 0 or self.time_bins == 1:
            raise ConfigError(f"model.time_bins={self.time_bins!r}: a number of time bins, 2 or "
                              "more (one bin is the movie bias itself), or 0 for none.")
        if self.has_time and not self.has_biases:
            raise ConfigError("model.time_bins and model.time_drift are time-aware biases, and "
                              f"model={self.name} with feedback={self.feedback} has no biases to "
                              "move; use an explicit rung with biases (biases, embeddings, features).")
        if self.svdpp_heldout and not self.has_rated:
            raise ConfigError("model.svdpp_heldout=true says which ratings the SVD++ sums hold; "
                              "add model.svdpp=true or model.svdpp_flipped=true.")
        for key in ("lam", "tau", "gamma", "eta", "tau_rated", "gamma_time", "gamma_drift"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} must be positive: every "
                                  "ALS step is then an exact, unique minimizer.")
        if self.feedback not in FEEDBACK:
            raise ConfigError(f"model.feedback={self.feedback!r}: choose explicit or implicit.")
        if self.implicit:
            if self.name not in IMPLICIT_RUNGS:
                raise ConfigError(f"model.feedback=implicit trains the {' and '.join(IMPLICIT_RUNGS)}"
                                  f" rungs; model={self.name} has no embeddings to rank with.")
            if self.genre_bias or self.count_scaled:
                raise ConfigError("model.feedback=implicit has no biases and scales its own "
                                  "regularization (model.nu); drop model.genre_bias and "
                                  "model.reg_scaling.")
            unused = [f for f in ("lam", "gamma")
                      if getattr(self, f) != ModelConfig.__dataclass_fields__[f].default]
            if unused:
                raise ConfigError(f"model.{unused[0]}: model.feedback=implicit has no rating "
                                  "noise and no biases and would ignore it; its regularization "
                                  "is model.tau (lambda), model.alpha0 and model.nu.")
        checks = [("alpha0", self.alpha0 >= 0, "0 or more"), ("nu", self.nu >= 0, "0 or more"),
                  ("confidence", self.confidence >= 0, "0 or more"),
                  ("unliked_target", 0 <= self.unliked_target <= 1, "in [0, 1]")]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"model.{key}={getattr(self, key)!r}: must be {want}.")
        if not self.implicit:
            defaults = {f: ModelConfig.__dataclass_fields__[f].default for f in IMPLICIT_ONLY}
            changed = [f for f in IMPLICIT_ONLY if getattr(self, f) != defaults[f]]
            if changed:
                raise ConfigError(f"model.{changed[0]} applies to model.feedback=implicit only, "
                                  "and explicit feedback would ignore it; drop it or add "
                                  "feedback=implicit.")
        if self.liked_min is not None and self.confidence:
            raise ConfigError("model.liked_min grades the targets of c = 1 pairs, and "
                              "model.confidence weighs pairs whose target is 1; set one of them.")
        if self.liked_min is not None and self.interaction_min is not None \
                and self.liked_min <= self.interaction_min:
            raise ConfigError(f"model.liked_min={self.liked_min} is at most model.interaction_min="
                              f"{self.interaction_min}: every interaction would be liked and it "
                              "would be ignored; raise it or drop it.")
        if self.liked_min is None and self.unliked_target != 0.5:
            raise ConfigError("model.unliked_target is the target of interactions under "
                              "model.liked_min; set model.liked_min too, or drop it.")
        return self

    def targets(self, rating: torch.Tensor) -> torch.Tensor:
        """Each interaction's target under the implicit loss, from its rating (NaN: a movie
        watched without a rating, target 1): 1, or ``unliked_target`` under ``liked_min``."""
        one = torch.ones_like(rating)
        if self.liked_min is None:
            return one
        return torch.where(rating < self.liked_min, one * self.unliked_target, one)

    def hparams(self) -> dict:
        """The values that define J (or L), for logs and run names."""
        out = {"model": self.name, "K": self.dim, "lam": self.lam, "tau": self.tau,
               "gamma": self.gamma, "eta": self.eta, "reg_scaling": self.reg_scaling,
               "init_std": self.init_std, "genre_bias": self.genre_bias}
        if self.movie_year or self.movie_tags:
            out.update(movie_year=self.movie_year, movie_tags=self.movie_tags)
        if self.person_features:
            out.update(person_features=True)
        if self.has_rated:
            out.update(svdpp=self.svdpp, svdpp_flipped=self.svdpp_flipped,
                       svdpp_heldout=self.svdpp_heldout, tau_rated=self.tau_rated)
        if self.has_time:
            out.update(time_bins=self.time_bins, time_drift=self.time_drift,
                       gamma_time=self.gamma_time, gamma_drift=self.gamma_drift)
        if self.implicit:
            out.update(feedback=self.feedback, **{f: getattr(self, f) for f in IMPLICIT_ONLY})
        return out


IMPLICIT_ONLY = ("alpha0", "nu", "confidence", "interaction_min", "liked_min",
                 "unliked_target")
