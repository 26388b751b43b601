"""Posterior samples and what they predict: means, predictive deviations, interval coverage.

The posterior-mean prediction of a pair is the average of the samples' predictions, not
the prediction of averaged factors.  Over S samples it is still one dot product:
``mean_s (u_s . v_s) = [u_1 .. u_S] . [v_1 .. v_S] / S``, so
:meth:`Posterior.predictive_params` packs the samples into one :class:`Params` of S K
dimensions whose ordinary predictions, rankings and new-movie priors are exactly the
posterior means.  Those packed columns are not embeddings: what has a geometry (norms,
cosines, genre structure) is read from :meth:`Posterior.mean`, each parameter's posterior
mean, K dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rec.als.params import TENSORS, Params

Z_OF = {0.5: 0.6744897501960817, 0.9: 1.6448536269514722}
"""Half-widths of the central 50% and 90% intervals of a standard normal."""


@dataclass
class Posterior:
    """S kept samples, stacked along a first dimension, with each sample's noise variance
    and user-side prior precision (for fold-in)."""

    samples: dict
    """``TENSORS`` name -> (S, ...) tensor."""
    mu: float
    noise_var: torch.Tensor
    """(S,) 1/lam of each sample."""
    user_precision: torch.Tensor
    """(S, D) prior precision of ``[u; b]`` of each sample."""
    user_mean: torch.Tensor
    """(S, K) prior mean of u of each sample."""

    @classmethod
    def stack(cls, kept: list[tuple[Params, float, torch.Tensor, torch.Tensor]]) -> "Posterior":
        """From ``(params, lam, user_precision, user_mean)`` of each kept sweep."""
        samples = {k: torch.stack([getattr(p, k).detach().cpu().float() for p, *_ in kept])
                   for k in TENSORS}
        return cls(samples, kept[0][0].mu, torch.tensor([1.0 / lam for _, lam, *_ in kept]),
                   torch.stack([u.float() for *_, u, _ in kept]),
                   torch.stack([m.float() for *_, m in kept]))

    @property
    def size(self) -> int:
        return int(self.noise_var.numel())

    def sample(self, s: int) -> Params:
        return Params(self.mu, *(self._get(k, lambda x: x[s]) for k in TENSORS))

    def _get(self, name: str, take):
        """``take`` of one parameter's samples; ``None`` for Y and X in a file from before
        ``model.svdpp`` (:class:`Params` then holds them empty)."""
        x = self.samples.get(name)
        return None if x is None else take(x)

    def mean(self) -> Params:
        """Each parameter's posterior mean (K dimensions): the model's embeddings and biases,
        what the analyses read.  Its predictions are not the posterior-mean predictions (the
        mean of products is not the product of means): :meth:`predictive_params` gives those."""
        return Params(self.mu, *(self._get(k, lambda x: x.mean(0)) for k in TENSORS))

    def predictive_params(self) -> Params:
        """One Params (S K dimensions, the samples' factors side by side, scaled by
        ``1/sqrt(S)``) whose predictions are exactly the posterior-mean predictions."""
        s = self.samples
        pack = lambda x: x.permute(1, 0, 2).reshape(x.shape[1], -1) / math.sqrt(self.size)
        mean = lambda name: self._get(name, lambda x: x.mean(0))  # time terms: linear
        return Params(self.mu, pack(s["user_factors"]), s["user_bias"].mean(0),
                      pack(s["item_factors"]), s["item_bias"].mean(0),
                      pack(s["genre_factors"]), s["genre_bias"].mean(0),
                      bin_bias=mean("bin_bias"), drift=mean("drift"),
                      bin_edges=mean("bin_edges"), user_day=mean("user_day"))

    def predict(self, user: torch.Tensor, item: torch.Tensor, day: torch.Tensor | None = None,
                chunk: int = 1 << 18) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and predictive standard deviation (parameter spread and noise) of
        each pair (unclipped); ``day``: when each rating is made, for the time terms."""
        means, stds = [], []
        for start in range(0, user.numel(), chunk):
            u, i = user[start:start + chunk].long(), item[start:start + chunk].long()
            when = None if day is None else day[start:start + chunk]
            f = torch.stack([self.sample(s).predict(u, i, when) for s in range(self.size)])
            means.append(f.mean(0))
            stds.append(self.spread(f))
        return torch.cat(means), torch.cat(stds)

    def spread(self, f: torch.Tensor) -> torch.Tensor:
        """Predictive standard deviation from ``(S, ...)`` per-sample predictions: their
        spread plus the mean noise variance."""
        return (f.var(0, correction=0) + self.noise_var.mean()).sqrt()

    def scores(self, user_factors: torch.Tensor, user_bias: torch.Tensor) -> torch.Tensor:
        """(S, n_items) every sample's prediction of every movie for one user, given that
        user's ``(S, K)`` factors and ``(S,)`` biases per sample."""
        s = self.samples
        return (self.mu + user_bias.unsqueeze(1) + s["item_bias"]
                + torch.bmm(s["item_factors"], user_factors.unsqueeze(2)).squeeze(2))

    def state_dict(self) -> dict:
        return {"samples": self.samples, "mu": self.mu, "noise_var": self.noise_var,
                "user_precision": self.user_precision, "user_mean": self.user_mean}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Posterior":
        return cls(**state)


@dataclass
class RunningPredictions:
    """Running sums over the averaged sweeps of one split's predictions: the posterior mean,
    its spread, and the mean noise variance."""

    total: torch.Tensor
    squares: torch.Tensor
    count: int = 0
    noise_var: float = 0.0

    @classmethod
    def zeros(cls, n: int, device) -> "RunningPredictions":
        z = lambda: torch.zeros(n, dtype=torch.float64, device=device)
        return cls(z(), z())

    def add(self, prediction: torch.Tensor, lam: float) -> None:
        f = prediction.double()
        self.total += f
        self.squares += f * f
        self.count += 1
        self.noise_var += 1.0 / lam

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> torch.Tensor:
        n = max(self.count, 1)
        spread = (self.squares / n - self.mean ** 2).clamp_(min=0)
        return (spread + self.noise_var / n).sqrt()

    def state_dict(self) -> dict:
        return {"total": self.total.cpu(), "squares": self.squares.cpu(), "count": self.count,
                "noise_var": self.noise_var}

    def load_state_dict(self, state: dict) -> None:
        self.total.copy_(state["total"])
        self.squares.copy_(state["squares"])
        self.count, self.noise_var = state["count"], state["noise_var"]

