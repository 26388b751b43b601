"""Statistics the analyses share: per-movie rating moments, power-law fits, correlations."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from rec.data.ratings import Ratings


def movie_moments(ratings: Ratings) -> dict[str, np.ndarray]:
    """Per movie: rating count, mean and sample variance (NaN below 1 and 2 ratings)."""
    item = ratings.item.long()
    r = ratings.rating.double()
    count = torch.bincount(item, minlength=ratings.n_items).double()
    total = torch.zeros(ratings.n_items, dtype=torch.float64).index_add_(0, item, r)
    squares = torch.zeros(ratings.n_items, dtype=torch.float64).index_add_(0, item, r * r)
    mean = total / count
    var = (squares - count * mean ** 2) / (count - 1)
    return {"count": count.long().numpy(), "mean": mean.numpy(),
            "var": torch.where(count > 1, var.clamp(min=0), torch.nan).numpy()}


def power_law(degrees: np.ndarray, candidates: int = 60) -> dict:
    """Discrete power-law fit ``p(x) ~ x^-alpha`` for ``x >= xmin`` (Clauset, Shalizi & Newman 2009).

    alpha by maximum likelihood (the discrete approximation
    ``1 + n / sum(ln(x / (xmin - 1/2)))``); xmin minimizes the Kolmogorov-Smirnov
    distance between the data and the fit, over quantiles of the degrees.
    """
    x = np.sort(degrees[degrees > 0].astype(np.float64))
    best = None
    for xmin in np.unique(np.quantile(x, np.linspace(0, 0.95, candidates)).round()):
        tail = x[x >= xmin]
        if len(tail) < 50:
            continue
        alpha = 1 + len(tail) / np.log(tail / (xmin - 0.5)).sum()
        empirical = 1 - np.arange(len(tail)) / len(tail)  # P(X >= x) at the sorted tail
        model = (tail / xmin) ** (1 - alpha)
        ks = float(np.abs(empirical - model).max())
        if best is None or ks < best["ks"]:
            best = {"alpha": float(alpha), "xmin": float(xmin), "ks": ks, "n_tail": int(len(tail))}
    return best or {"alpha": math.nan, "xmin": math.nan, "ks": math.nan, "n_tail": 0}


def correlations(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson and Spearman r (and their p-values) over the finite pairs."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return {"pearson_r": math.nan, "spearman_r": math.nan, "n": int(ok.sum())}
    p = stats.pearsonr(x[ok], y[ok])
    s = stats.spearmanr(x[ok], y[ok])
    return {"pearson_r": float(p.statistic), "pearson_p": float(p.pvalue),
            "spearman_r": float(s.statistic), "spearman_p": float(s.pvalue), "n": int(ok.sum())}
