"""``task=polarization``: polarizing movies and the geometry of their embeddings.

SPEC §4 (report §4.3, §5.3, figs 10-12): per-movie rating variance against
the embedding norm ``||v_n||`` (Pearson and Spearman r; the report found
r = 0.78), and the most polarizing movies with at least ``min_count``
ratings by three criteria: embedding norm, rating variance, and position at
the poles of the first principal direction of the movie embeddings.
A fixed prior shrinks rarely rated movies towards it, so the norm also grows
with the rating count; the partial correlation (count held fixed) says how
much of the variance-norm link is more than that.  In the features rung the
distance from the genre prior, ``||v_n - p_n||``, is reported too: the genre
part of ``v_n`` says nothing about disagreement.  With count-scaled priors
(``model.reg_scaling=count``), which shrink every movie alike, the
correlation on ml-latest-small is the report's 0.78.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from rec.analysis import plots
from rec.analysis.context import Context
from rec.analysis.stats import correlations, movie_moments
from rec.errors import ConfigError


def _partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman correlation of x and y with z held fixed."""
    rx, ry, rz = (stats.rankdata(a) for a in (x, y, z))
    res = [a - np.polyval(np.polyfit(rz, a, 1), rz) for a in (rx, ry)]
    return float(np.corrcoef(*res)[0, 1])


def _top(order: np.ndarray, table: pd.DataFrame, n: int) -> list[dict]:
    return table.iloc[order[:n]][["movie_id", "title", "ratings", "variance", "norm", "pc1"]].to_dict("records")


def run(ctx: Context, task) -> dict:
    model = ctx.model()
    if model.params.dim == 0:
        raise ConfigError("polarization needs embeddings: use model=embeddings or model=features.")
    moments = movie_moments(ctx.ratings)
    v = model.params.item_factors.double().numpy()
    keep = np.flatnonzero(moments["count"] >= task.min_count)
    norm = np.linalg.norm(v, axis=1)
    deviation = np.linalg.norm(v - model.prior_means().double().numpy(), axis=1)  # ||v_n - p_n||
    coords, _, _, explained = plots.pca(v[keep])
    table = pd.DataFrame({
        "movie_id": model.movies.ids.numpy()[keep], "title": [model.movies.titles[i] for i in keep],
        "ratings": moments["count"][keep], "mean": moments["mean"][keep],
        "variance": moments["var"][keep], "norm": norm[keep], "deviation": deviation[keep],
        "pc1": coords[:, 0], "pc2": coords[:, 1]})
    n = task.top_n
    by_norm = np.argsort(-table["norm"].to_numpy(), kind="stable")
    by_var = np.argsort(-table["variance"].to_numpy(), kind="stable")
    by_dir = np.argsort(-np.abs(table["pc1"].to_numpy()), kind="stable")
    links = {
        "variance_vs_norm": correlations(table["variance"].to_numpy(), table["norm"].to_numpy()),
        "variance_vs_deviation_from_genre_prior": correlations(table["variance"].to_numpy(),
                                                               table["deviation"].to_numpy()),
        "variance_vs_pca2d_norm": correlations(table["variance"].to_numpy(),
                                               np.hypot(coords[:, 0], coords[:, 1])),
        "norm_vs_log_count": correlations(table["norm"].to_numpy(), np.log(table["ratings"].to_numpy())),
    }
    links["variance_vs_norm"]["partial_spearman_given_count"] = _partial_spearman(
        table["variance"].to_numpy(), table["norm"].to_numpy(), table["ratings"].to_numpy())

    fig, axes = plots.figure(1, width=7, height=5.5)
    ax = axes[0, 0]
    ax.scatter(table["norm"], table["variance"], s=5, alpha=0.35)
    slope, intercept = np.polyfit(table["norm"], table["variance"], 1)
    xs = np.linspace(table["norm"].min(), table["norm"].max(), 2)
    ax.plot(xs, slope * xs + intercept, "r-", lw=1.5)
    c = links["variance_vs_norm"]
    ax.set_title(f"Rating variance vs embedding norm ({len(table)} movies with >= {task.min_count} "
                 f"ratings)\nPearson r = {c['pearson_r']:.2f}, Spearman r = {c['spearman_r']:.2f} "
                 "(report: r = 0.78)")
    ax.set_xlabel("embedding norm ||v_n||")
    ax.set_ylabel("rating variance")
    plots.label_points(ax, table[["norm", "variance"]].to_numpy()[by_norm[:5]],
                       list(table["title"].iloc[by_norm[:5]]), "darkred")
    plots.save(fig, ctx.out_dir / "variance_vs_norm.png")

    xy = table[["pc1", "pc2"]].to_numpy()
    fig, axes = plots.figure(3, width=6, height=5.5)
    for ax, order, name in zip(axes[0], (by_norm, by_dir, by_var),
                               ("embedding norm", "PCA direction (|PC1|)", "rating variance")):
        ax.scatter(xy[:, 0], xy[:, 1], s=4, c="lightgray")
        ax.scatter(xy[order[:n], 0], xy[order[:n], 1], s=18, c="crimson")
        plots.label_points(ax, xy[order[:n]], list(table["title"].iloc[order[:n]]))
        ax.set_title(f"Top {n} polarizing by {name}")
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%})")
    plots.save(fig, ctx.out_dir / "polarizing_three_ways.png")

    fig, axes = plots.figure(1, width=8, height=6.5)
    ax = axes[0, 0]
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=5, c=table["variance"], cmap="viridis", alpha=0.6)
    fig.colorbar(sc, ax=ax, label="rating variance")
    ax.scatter(xy[by_norm[:n], 0], xy[by_norm[:n], 1], s=30, facecolors="none", edgecolors="red")
    plots.label_points(ax, xy[by_norm[:n]], list(table["title"].iloc[by_norm[:n]]), "darkred")
    ax.set_title(f"Movie embeddings (PCA); the {n} longest embeddings circled")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    plots.save(fig, ctx.out_dir / "polarizing_map.png")

    table.to_csv(ctx.out_dir / "movies.csv", index=False)
    result = {"model": model.config.hparams(), "min_count": int(task.min_count), "movies": len(table),
              "correlations": links, "pca_explained": explained.tolist(),
              "top_by_norm": _top(by_norm, table, n), "top_by_variance": _top(by_var, table, n),
              "top_by_direction": _top(by_dir, table, n)}
    c = links["variance_vs_norm"]
    d = links["variance_vs_deviation_from_genre_prior"]
    result["summary"] = "\n".join(
        [f"{len(table)} movies with >= {task.min_count} ratings ({model.config.name}, reg_scaling="
         f"{model.config.reg_scaling}); variance vs embedding norm: Pearson r = {c['pearson_r']:.3f}, "
         f"Spearman r = {c['spearman_r']:.3f} (report: 0.78); with the rating count held fixed: "
         f"{c['partial_spearman_given_count']:.3f}; vs distance from the genre prior ||v - p||: "
         f"Pearson r = {d['pearson_r']:.3f}",
         f"top {n} by norm: " + "; ".join(t["title"] for t in result["top_by_norm"]),
         f"top {n} by variance: " + "; ".join(t["title"] for t in result["top_by_variance"])])
    return result
