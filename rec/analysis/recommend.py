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

And, with no rating-count filter, what the two kinds of model make of a person who loved the
seed: the explicit model's top list for a new user who rated it 5 stars (by predicted rating
and popularity, as its ``recommend`` ranks) beside the implicit rung's for a new user who
watched it (``feedback=implicit``, trained first if missing), each movie with its rating count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rec.analysis import plots
from rec.analysis.context import Context
from rec.analysis.seeds import dummy_users, seed_raters, top_lists
from rec.als.config import IMPLICIT_ONLY, ModelConfig
from rec.errors import ConfigError


@dataclass(frozen=True)
class Options:
    """``conf/task/recommend.yaml``."""

    seed_movie: str = "Lord of the Rings: The Fellowship of the Ring"
    """The seed, searched forgivingly (:mod:`rec.titles`)."""
    min_count: int = 100
    """Movies with fewer training ratings are not recommended (the report's 100)."""
    top_n: int = 10
    """Length of each list."""
    user_id: int = 1
    """Also the top list of this existing user."""
    implicit: dict = field(default_factory=lambda: dict(IMPLICIT))
    """The implicit rung shown beside the explicit model (``model.*`` keys and ``K``; the
    values of ``conf/feedback/implicit.yaml``)."""


IMPLICIT = {"K": 64, "tau": 0.01, "alpha0": 0.2, "nu": 1.0}


def compute(ctx: Context, opts: Options) -> dict:
    model = ctx.model()
    if model.params.dim == 0:
        raise ConfigError("recommend needs embeddings: use model=embeddings or model=features.")
    seed = model.find_movie(opts.seed_movie)
    title = model.movies.titles[seed]
    users, ratings = seed_raters(ctx.ratings, ctx.split.train, seed)
    if users.numel() == 0:
        raise ConfigError(f"nobody rated {title!r} in training; choose another task.seed_movie.")
    lists = top_lists(model, seed, users, ratings, opts.min_count, opts.top_n)
    plot = {"v": model.params.item_factors.double().numpy(), "counts": model.item_counts.numpy(),
            "index": {int(m): i for i, m in enumerate(model.movies.ids.tolist())}, "seed": seed,
            "dummy": dummy_users(model, users, ratings, seed)["centered"].double().numpy()}
    return {"model": model.config.hparams(),
            "seed": {"movie_id": int(model.movies.ids[seed]), "title": title,
                     "training_raters": int(users.numel())},
            "loved": loved(ctx, model, int(model.movies.ids[seed]), opts),
            "min_count": opts.min_count, "lists": lists,
            "user": {"user_id": opts.user_id,
                     "top": model.recommend(opts.user_id, opts.top_n, min_count=opts.min_count)},
            "_plot": plot}


def loved(ctx: Context, model, seed_id: int, opts: Options) -> dict:
    """The top lists, unfiltered, for a new person who loved the seed: the explicit model's
    (rated it 5 stars) and the implicit rung's (watched it)."""
    explicit = model if not model.config.implicit else ctx.model(
        K=ModelConfig.K, **{f: getattr(ModelConfig, f) for f in ("feedback", "tau", *IMPLICIT_ONLY)})
    options = dict(opts.implicit)
    k = options.pop("K", None)
    plain = {f: getattr(ModelConfig, f) for f in ("lam", "gamma", "reg_scaling")}  # unused there
    explicit_only = {"genre_bias": False, "svdpp": False, "svdpp_flipped": False,
                     "svdpp_heldout": False, "time_bins": 0, "time_drift": False,
                     "person_features": False, "movie_year": False, "movie_tags": 0}
    # the implicit loss has none of the first seven; the last two were validated for ratings
    implicit = model if model.config.implicit else ctx.model(
        K=k, feedback="implicit", **explicit_only, **{**plain, **options})
    top = explicit.rating_range[1]
    return {"explicit": explicit.recommend_new_user([(seed_id, top)], opts.top_n),
            "implicit": implicit.recommend_new_user([seed_id], opts.top_n)}


def render(result: dict, out: Path) -> None:
    p, lists = result["_plot"], result["lists"]
    side_by_side(lists).to_csv(out / "recommendations.csv")
    for name, records in lists.items():
        pd.DataFrame(records).to_csv(out / f"top_{name}.csv", index=False)
    _pca_map(out, p["v"], p["counts"], p["index"], p["seed"], lists, p["dummy"], result["min_count"],
             result["seed"]["title"])
    user = result["user"]
    pd.DataFrame(user["top"]).to_csv(out / f"user_{user['user_id']}_top.csv", index=False)
    for kind, records in result["loved"].items():
        pd.DataFrame(records).to_csv(out / f"loved_seed_{kind}.csv", index=False)


def summarize(result: dict) -> str:
    seed, user = result["seed"], result["user"]
    with pd.option_context("display.width", 250, "display.max_colwidth", 34):
        shown = side_by_side(result["lists"]).map(lambda t: plots.short(t, 34)).to_string()
    loved = result["loved"]
    with pd.option_context("display.width", 250, "display.max_colwidth", 48):
        both = pd.DataFrame({f"{kind} (ratings)": [f"{plots.short(r['title'], 40)} ({r['ratings']})"
                                                   for r in records]
                             for kind, records in loved.items()},
                            index=pd.RangeIndex(1, len(loved["explicit"]) + 1, name="rank"))
        both = both.to_string()
    return (f"seed: {seed['title']} ({seed['training_raters']} raters in training); movies with >= "
            f"{result['min_count']} ratings\n{shown}\n"
            f"user {user['user_id']}: " + "; ".join(r["title"] for r in user["top"]) +
            f"\na new person who loved {seed['title']}, every movie a candidate: the explicit "
            "model (rated it 5 stars) and the implicit rung (watched it)\n" + both)


def _pca_map(out: Path, v: np.ndarray, counts: np.ndarray, index: dict, seed: int, lists: dict,
             dummy: np.ndarray, min_count: int, title: str) -> None:
    eligible = np.flatnonzero(counts >= min_count)
    coords, comps, mean, _ = plots.pca(v[eligible])
    position = {int(i): k for k, i in enumerate(eligible)}
    fig, axes = plots.figure(1, width=9, height=7)
    ax = axes[0, 0]
    ax.scatter(coords[:, 0], coords[:, 1], s=6, c="lightgray", label=f"movies with >= {min_count} ratings")
    for name, color in (("report", "tab:orange"), ("centered", "tab:green")):
        rows = [position[index[r["movie_id"]]] for r in lists[name]]
        ax.scatter(coords[rows, 0], coords[rows, 1], s=28, c=color, label=f"top 10, {name}")
        plots.label_points(ax, coords[rows], [r["title"] for r in lists[name]], color)
    s = (v[seed] - mean) @ comps.T
    ax.scatter([s[0]], [s[1]], s=90, marker="D", c="tab:blue", label=f"seed: {plots.short(title)}")
    d = dummy
    d = d / max(np.linalg.norm(d), 1e-12) * np.linalg.norm(v[eligible], axis=1).mean()
    dp = (d - mean) @ comps.T
    ax.scatter([dp[0]], [dp[1]], s=220, marker="*", c="red", label="dummy user (centered, scaled)")
    ax.set_xlabel("PC1 of movie embeddings")
    ax.set_ylabel("PC2")
    ax.set_title(f"Recommendations for a dummy user seeded with\n{title}")
    ax.legend(fontsize=8, loc="best")
    plots.save(fig, out / "recommendations_map.png")


def side_by_side(lists: dict[str, list]) -> pd.DataFrame:
    n = max(len(v) for v in lists.values())
    return pd.DataFrame({k: [r["title"] for r in v] + [""] * (n - len(v)) for k, v in lists.items()},
                        index=pd.RangeIndex(1, n + 1, name="rank"))
