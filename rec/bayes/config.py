"""How a model is inferred (``inference:`` in the config): ALS point estimates or Gibbs sampling.

``inference=als`` (the default) trains the point estimate of SPEC §2.  ``inference=gibbs``
samples the posterior of the same rungs (Salakhutdinov & Mnih 2008, BPMF), with
Normal-Gamma hyperpriors per factor dimension (libFM, myFM) and Gamma hyperpriors on the
noise and bias precisions; :mod:`rec.bayes.hyper` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from rec.errors import ConfigError
from rec.mapping import from_mapping

METHODS = ("als", "gibbs")


@dataclass(frozen=True)
class InferenceConfig:
    """``inference:`` (``conf/inference/als.yaml``, ``conf/inference/gibbs.yaml``)."""

    method: str = "als"
    """``als``: the point estimate (``train:`` says how); ``gibbs``: posterior samples."""
    warm_start: int = 10
    """Gibbs: ALS epochs (the rung's own priors) before the first sweep; 0 starts at the
    initialization."""
    burn_in: int = 30
    """Gibbs: sweeps run and discarded before samples are kept."""
    samples: int = 200
    """Gibbs: sweeps after burn-in whose predictions are averaged (the posterior mean)."""
    keep: int = 32
    """Gibbs: posterior samples saved with the model, evenly thinned from ``samples``; they
    give the model's predictive mean and standard deviation."""
    a0: float = 1.0
    """Gamma(a0, b0) hyperprior (shape, rate) of every precision: noise, factors, biases, W."""
    b0: float = 1.0
    """Rate of that Gamma hyperprior (``a0 / b0`` is its mean precision)."""
    beta0: float = 1.0
    """Normal-Gamma: the prior mean of a factor dimension has precision ``beta0`` times its
    precision (around 0)."""
    checkpoint_every: int = 10
    """Gibbs: sweeps between checkpoints (a killed chain resumes from the last one)."""

    def __post_init__(self) -> None:
        checks = [("method", self.method in METHODS, "one of " + ", ".join(METHODS)),
                  ("warm_start", self.warm_start >= 0, "0 or more ALS epochs"),
                  ("burn_in", self.burn_in >= 0, "0 or more sweeps"),
                  ("samples", self.samples >= 1, "1 or more sweeps"),
                  ("keep", 1 <= self.keep, "1 or more samples"),
                  ("a0", self.a0 > 0, "positive"), ("b0", self.b0 > 0, "positive"),
                  ("beta0", self.beta0 > 0, "positive"),
                  ("checkpoint_every", self.checkpoint_every >= 1, "1 or more sweeps")]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"inference.{key}={getattr(self, key)}: must be {want}.")
        if self.method == "als":
            changed = [f.name for f in fields(self) if f.name != "method"
                       and getattr(self, f.name) != f.default]
            if changed:
                raise ConfigError(f"inference.{changed[0]}={getattr(self, changed[0])} is a Gibbs "
                                  "setting: add inference=gibbs, or drop the override.")

    @classmethod
    def from_mapping(cls, values, **overrides) -> "InferenceConfig":
        return from_mapping(cls, values, "inference", **overrides)

    @property
    def gibbs(self) -> bool:
        return self.method == "gibbs"

    @property
    def thin(self) -> int:
        """Keep every ``thin``-th of the averaged sweeps with the model."""
        return max(1, self.samples // self.keep)
