"""``task=recommend``: the report's dummy user for a seed movie, and better variants.

SPEC §4 (report §4.4, §5.4, table 1, fig 13).  The dummy user is
``u_hat = U^T r`` over the users who rated the seed in training; movies are
scored ``mu + V u_hat + c``, those under ``min_count`` ratings dropped.
Variants, side by side:

- ``report``: the report's score, which on small data is dominated by what
  every heavy rater likes;
- ``cosine``: ``V u_hat / (|V| |u_hat|)``, the report's alternative;
- ``centered``: weights ``r - mu - b_m - c_seed`` instead of ``r``: what those
  users liked beyond what the model already expected of them;
- ``neighbours``: movies whose embedding is closest in angle to the seed's;
- ``fold_in``: a new user who rated only the seed, 5 stars (one exact user step).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rec.analysis import plots
from rec.analysis.context import Context
from rec.errors import ConfigError
from rec.model import Recommender

VARIANTS = ("report", "cosine", "centered", "neighbours", "fold_in")


def seed_raters(model: Recommender, ctx: Context, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Users who rated the seed in the model's training split, and their ratings."""
    r, train = ctx.ratings, ctx.split(model).train
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


def _pca_map(ctx: Context, model: Recommender, seed: int, lists: dict, dummy: torch.Tensor,
             min_count: int, title: str) -> None:
    eligible = np.flatnonzero(model.item_counts.numpy() >= min_count)
    v = model.params.item_factors.double().numpy()
    coords, comps, mean, _ = plots.pca(v[eligible])
    position = {int(i): k for k, i in enumerate(eligible)}
    fig, axes = plots.figure(1, width=9, height=7)
    ax = axes[0, 0]
    ax.scatter(coords[:, 0], coords[:, 1], s=6, c="lightgray", label=f"movies with >= {min_count} ratings")
    for name, color in (("report", "tab:orange"), ("centered", "tab:green")):
        rows = [position[model.item_index(r["movie_id"])] for r in lists[name]]
        ax.scatter(coords[rows, 0], coords[rows, 1], s=28, c=color, label=f"top 10, {name}")
        plots.label_points(ax, coords[rows], [r["title"] for r in lists[name]], color)
    s = (v[seed] - mean) @ comps.T
    ax.scatter([s[0]], [s[1]], s=90, marker="D", c="tab:blue", label=f"seed: {plots.short(title)}")
    d = dummy.double().numpy()
    d = d / max(np.linalg.norm(d), 1e-12) * np.linalg.norm(v[eligible], axis=1).mean()
    dp = (d - mean) @ comps.T
    ax.scatter([dp[0]], [dp[1]], s=220, marker="*", c="red", label="dummy user (centered, scaled)")
    ax.set_xlabel("PC1 of movie embeddings")
    ax.set_ylabel("PC2")
    ax.set_title(f"Recommendations for a dummy user seeded with\n{title}")
    ax.legend(fontsize=8, loc="best")
    plots.save(fig, ctx.out_dir / "recommendations_map.png")


def side_by_side(lists: dict[str, list]) -> pd.DataFrame:
    n = max(len(v) for v in lists.values())
    return pd.DataFrame({k: [r["title"] for r in v] + [""] * (n - len(v)) for k, v in lists.items()},
                        index=pd.RangeIndex(1, n + 1, name="rank"))


def run(ctx: Context, task) -> dict:
    model = ctx.model()
    if model.params.dim == 0:
        raise ConfigError("recommend needs embeddings: use model=embeddings or model=features.")
    seed = model.find_movie(task.seed_movie)
    title = model.movies.titles[seed]
    users, ratings = seed_raters(model, ctx, seed)
    if users.numel() == 0:
        raise ConfigError(f"nobody rated {title!r} in training; choose another task.seed_movie.")
    lists = top_lists(model, seed, users, ratings, task.min_count, task.top_n)
    table = side_by_side(lists)
    table.to_csv(ctx.out_dir / "recommendations.csv")
    for name, records in lists.items():
        pd.DataFrame(records).to_csv(ctx.out_dir / f"top_{name}.csv", index=False)
    dummy = dummy_users(model, users, ratings, seed)["centered"]
    _pca_map(ctx, model, seed, lists, dummy, task.min_count, title)
    user_top = model.recommend(task.user_id, task.top_n, min_count=task.min_count)
    pd.DataFrame(user_top).to_csv(ctx.out_dir / f"user_{task.user_id}_top.csv", index=False)
    result = {"model": model.config.hparams(), "seed": {"movie_id": int(model.movies.ids[seed]),
              "title": title, "training_raters": int(users.numel())},
              "min_count": int(task.min_count), "lists": lists,
              "user": {"user_id": int(task.user_id), "top": user_top}}
    with pd.option_context("display.width", 250, "display.max_colwidth", 34):
        shown = table.map(lambda t: plots.short(t, 34)).to_string()
    result["summary"] = (f"seed: {title} ({users.numel()} raters in training); movies with >= "
                         f"{task.min_count} ratings\n{shown}\n"
                         f"user {task.user_id}: " + "; ".join(r["title"] for r in user_top))
    return result
