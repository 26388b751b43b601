"""A seed movie's dummy users and their top lists (SPEC §4; report §4.4, table 1).

The dummy user is ``u_hat = U^T r`` over the users who rated the seed in
training; each variant scores every movie (:data:`VARIANTS`, documented in
:mod:`rec.analysis.recommend`).  Used by ``task=recommend`` and
``task=dimensions``.
"""

from __future__ import annotations

import torch

from rec.data.ratings import Ratings
from rec.model import Recommender

VARIANTS = ("report", "cosine", "centered", "neighbours", "fold_in")


def seed_raters(r: Ratings, train: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Users who rated the seed among the training ratings ``train``, and their ratings."""
    hit = train[r.item[train] == seed]
    return r.user[hit].long(), r.rating[hit].float()


def dummy_users(model: Recommender, users: torch.Tensor, ratings: torch.Tensor,
                seed: int) -> dict[str, torch.Tensor]:
    """``u_hat = U^T r`` (the report) and its centered form (weights ``r - mu - b_m - c_seed``)."""
    p = model.params
    u = p.user_factors[users]
    centered = ratings - p.mu - p.user_bias[users] - p.item_bias[seed]
    return {"report": u.T @ ratings, "centered": u.T @ centered}


def scores(model: Recommender, seed: int, users: torch.Tensor, ratings: torch.Tensor,
           seed_rating: float = 5.0) -> dict[str, torch.Tensor]:
    """Every movie's score under each variant."""
    p = model.params
    v, c = p.item_factors, p.item_bias
    dummy = dummy_users(model, users, ratings, seed)
    unit = lambda x: x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    fold_u, fold_b = model.fold_in([(int(model.movies.ids[seed]), seed_rating)])
    return {
        "report": p.mu + v @ dummy["report"] + c,
        "cosine": unit(v) @ unit(dummy["report"]),
        "centered": p.mu + v @ dummy["centered"] + c,
        "neighbours": unit(v) @ unit(v[seed]),
        "fold_in": model.item_scores(fold_u, fold_b),
    }


def top_lists(model: Recommender, seed: int, users, ratings, min_count: int, n: int) -> dict[str, list]:
    """Top-``n`` records per variant; the seed itself and rarely rated movies excluded."""
    exclude = torch.tensor([seed])
    return {k: model.top_k(s, n, exclude, min_count)
            for k, s in scores(model, seed, users, ratings).items()}
