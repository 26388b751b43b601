"""The sampled precisions and prior means, and their conjugate conditionals.

The likelihood is the rung's, ``r ~ N(mu + b_m + c_n + u_m . v_n, 1/lam)``, and each
block has a Gaussian prior as in SPEC §2.1, but every precision is now sampled:

- ``lam`` ~ Gamma(a0, b0): the noise precision;
- each factor dimension k of U (and of V in the ``embeddings`` rung) has a Normal-Gamma
  prior on its mean and precision, ``alpha_k ~ Gamma(a0, b0)``,
  ``mean_k | alpha_k ~ N(0, 1/(beta0 alpha_k))`` (libFM / myFM);
- in the ``features`` rung the prior mean of ``v_n`` is ``(A W)_n`` as in SPEC §2.3 and
  each dimension's precision ``alpha_k`` (tau) is Gamma; W's entries are ``N(0, 1/eta)``
  with ``eta`` Gamma;
- the bias precisions (gamma for b, for c) are Gamma; with ``model.genre_bias`` the prior
  mean of c is ``A beta``, ``beta ~ N(0, 1/eta_bias)``;
- the time terms' precisions (``gamma_time`` of the biases per bin, ``gamma_drift`` of the
  drifts) are Gamma, and so are those of SVD++'s Y and X.

Why Normal-Gamma per dimension and not BPMF's Normal-Wishart: it keeps each row's prior
precision diagonal, so the conditional of a row is exactly rec's ALS system with
``diag(tau, gamma)`` replaced by the sampled ``diag(alpha, gamma)`` and runs through the
same batched kernels; a Wishart gives every row a full prior precision matrix, a different
kernel, and K(K+1)/2 hyperparameters that the features rung's genre prior would then have to
share.  libFM and myFM use this hyperprior and match BPMF's accuracy (Rendle et al. 2019).
Priors are not scaled by rating counts (that is ALS-WR's regularization, not a prior).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class Hyper:
    """One draw of the hyperparameters (all float64 numpy, small)."""

    lam: float
    """Noise precision."""
    user_precision: np.ndarray
    """(D,) precision of each entry of ``[u; b]``."""
    user_mean: np.ndarray
    """(K,) prior mean of u (Normal-Gamma)."""
    item_precision: np.ndarray
    """(D,) precision of each entry of ``[v; c]`` around its prior mean."""
    item_mean: np.ndarray
    """(K,) prior mean of v below the features rung (Normal-Gamma); zeros in it."""
    eta: float = 1.0
    """Precision of W's entries (features)."""
    eta_bias: float = 1.0
    """Precision of beta's entries (features with ``model.genre_bias``)."""
    rho_rated: float | None = None
    """Precision of Y's entries (``model.svdpp``), else ``None``."""
    rho_raters: float | None = None
    """Precision of X's entries (``model.svdpp_flipped``), else ``None``."""
    eta_person: float | None = None
    """Precision of Z's entries (``model.person_features``), else ``None``."""
    eta_person_bias: float | None = None
    """Precision of zeta's entries (``model.person_features``), else ``None``."""
    gamma_time: float | None = None
    """Precision of the movie biases per time bin (``model.time_bins``), else ``None``."""
    gamma_drift: float | None = None
    """Precision of the people's drifts (``model.time_drift``), else ``None``."""

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def trace(self) -> dict[str, float]:
        """Scalars for TensorBoard: lam and the mean of each block's precisions."""
        k = self.user_mean.shape[0]
        out = {"lam": self.lam, "eta": self.eta}
        if k:
            out.update(tau_user=float(self.user_precision[:k].mean()),
                       tau_item=float(self.item_precision[:k].mean()))
        out.update({name: getattr(self, name) for name in ("rho_rated", "rho_raters",
                                                           "eta_person", "eta_person_bias",
                                                           "gamma_time", "gamma_drift")
                    if getattr(self, name) is not None})
        if self.user_precision.shape[0] > k:
            out.update(gamma_user=float(self.user_precision[k]),
                       gamma_item=float(self.item_precision[k]))
        return out


def gamma_precision(sum_squares: float, count: int, a0: float, b0: float,
                    rng: np.random.Generator) -> float:
    """A draw of the precision of ``count`` zero-mean Gaussians given their sum of squares."""
    return float(rng.gamma(a0 + count / 2, 1.0 / (b0 + sum_squares / 2)))


def normal_gamma(x: np.ndarray, a0: float, b0: float, beta0: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``x`` (n, K): a draw of (mean, precision) under the Normal-Gamma prior
    ``mean ~ N(0, 1/(beta0 alpha))``, ``alpha ~ Gamma(a0, b0)``."""
    n = x.shape[0]
    xbar = x.mean(0) if n else np.zeros(x.shape[1])
    spread = ((x - xbar) ** 2).sum(0)
    beta_n = beta0 + n
    rate = b0 + spread / 2 + beta0 * n * xbar ** 2 / (2 * beta_n)
    precision = rng.gamma(a0 + n / 2, 1.0 / rate)
    mean = rng.normal(n * xbar / beta_n, 1.0 / np.sqrt(beta_n * precision))
    return mean, precision


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
