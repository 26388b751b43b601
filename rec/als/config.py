"""Model hyperparameters: the rung of the ladder and the priors of J (SPEC §2.1, §2.2)."""

from __future__ import annotations

from dataclasses import dataclass

from rec.errors import ConfigError
from rec.mapping import from_mapping

RUNGS = ("latent", "biases", "embeddings", "features")
REG_SCALINGS = ("none", "count")


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

    def __post_init__(self) -> None:
        self.validated()

    @classmethod
    def from_mapping(cls, values, **overrides) -> "ModelConfig":
        """Build from a plain mapping (``model:`` plus ``K``); unknown keys are refused."""
        return from_mapping(cls, values, "model", **overrides)

    @property
    def has_biases(self) -> bool:
        return self.name != "latent"

    @property
    def dim(self) -> int:
        """Embedding columns actually trained: 0 for the biases rung."""
        return 0 if self.name == "biases" else int(self.K)

    @property
    def has_genres(self) -> bool:
        return self.name == "features"

    @property
    def variant(self) -> str:
        """The rung's name in file and run names: ``features+genre_bias`` with the bias prior."""
        return self.name + ("+genre_bias" if self.genre_bias else "")

    @property
    def has_bias_prior(self) -> bool:
        """Whether the movie biases have a genre prior mean (``features`` with ``genre_bias``)."""
        return self.has_genres and self.genre_bias

    @property
    def count_scaled(self) -> bool:
        return self.reg_scaling == "count"

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
        for key in ("lam", "tau", "gamma", "eta"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} must be positive: every "
                                  "ALS step is then an exact, unique minimizer.")
        return self

    def hparams(self) -> dict:
        """The values that define J, for logs and run names."""
        return {"model": self.name, "K": self.dim, "lam": self.lam, "tau": self.tau,
                "gamma": self.gamma, "eta": self.eta, "reg_scaling": self.reg_scaling,
                "init_std": self.init_std, "genre_bias": self.genre_bias}
