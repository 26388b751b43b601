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

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Options:
    """``conf/task/polarization.yaml``."""

    min_count: int = 20
    """Only movies with at least this many ratings (the report used 32M ratings)."""
    top_n: int = 10
    """Movies listed as the most and the least polarizing."""


def _movies(ctx: Context, model, min_count: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Per movie with ``min_count`` ratings: moments, norm, distance from the genre prior, PCs."""
    moments = movie_moments(ctx.ratings)
    v = model.params.item_factors.double().numpy()
    keep = np.flatnonzero(moments["count"] >= min_count)
    deviation = np.linalg.norm(v - model.prior_means().double().numpy(), axis=1)  # ||v_n - p_n||
    coords, _, _, explained = plots.pca(v[keep])
    table = pd.DataFrame({
        "movie_id": model.movies.ids.numpy()[keep], "title": [model.movies.titles[i] for i in keep],
        "ratings": moments["count"][keep], "mean": moments["mean"][keep],
        "variance": moments["var"][keep], "norm": np.linalg.norm(v, axis=1)[keep],
        "deviation": deviation[keep], "pc1": coords[:, 0], "pc2": coords[:, 1]})
    return table, explained


def _links(t: pd.DataFrame) -> dict:
    col = lambda k: t[k].to_numpy()
    links = {
        "variance_vs_norm": correlations(col("variance"), col("norm")),
        "variance_vs_deviation_from_genre_prior": correlations(col("variance"), col("deviation")),
        "variance_vs_pca2d_norm": correlations(col("variance"), np.hypot(col("pc1"), col("pc2"))),
        "norm_vs_log_count": correlations(col("norm"), np.log(col("ratings"))),
    }
    links["variance_vs_norm"]["partial_spearman_given_count"] = _partial_spearman(
        col("variance"), col("norm"), col("ratings"))
    return links


def compute(ctx: Context, opts: Options) -> dict:
    model = ctx.model()
    if model.params.dim == 0:
        raise ConfigError("polarization needs embeddings: use model=embeddings or model=features.")
    table, explained = _movies(ctx, model, opts.min_count)
    orders = {"norm": np.argsort(-table["norm"].to_numpy(), kind="stable"),
              "variance": np.argsort(-table["variance"].to_numpy(), kind="stable"),
              "direction": np.argsort(-np.abs(table["pc1"].to_numpy()), kind="stable")}
    return {"model": model.config.hparams(), "min_count": opts.min_count, "movies": len(table),
            "correlations": _links(table), "pca_explained": explained.tolist(),
            **{f"top_by_{k}": _top(order, table, opts.top_n) for k, order in orders.items()},
            "_plot": {"table": table, "orders": orders, "top_n": opts.top_n}}


def render(result: dict, out: Path) -> None:
    p = result["_plot"]
    table, orders, n = p["table"], p["orders"], p["top_n"]
    _variance_vs_norm(out, table, orders["norm"], result["correlations"]["variance_vs_norm"],
                      result["min_count"])
    xy = table[["pc1", "pc2"]].to_numpy()
    explained = result["pca_explained"]
    fig, axes = plots.figure(3, width=6, height=5.5)
    for ax, key, name in zip(axes[0], ("norm", "direction", "variance"),
                             ("embedding norm", "PCA direction (|PC1|)", "rating variance")):
        top = orders[key][:n]
        ax.scatter(xy[:, 0], xy[:, 1], s=4, c="lightgray")
        ax.scatter(xy[top, 0], xy[top, 1], s=18, c="crimson")
        plots.label_points(ax, xy[top], list(table["title"].iloc[top]))
        ax.set(title=f"Top {n} polarizing by {name}", xlabel=f"PC1 ({explained[0]:.0%} of variance)",
               ylabel=f"PC2 ({explained[1]:.0%})")
    plots.save(fig, out / "polarizing_three_ways.png")
    _variance_map(out, table, xy, orders["norm"][:n])
    table.to_csv(out / "movies.csv", index=False)


def _variance_vs_norm(out: Path, table: pd.DataFrame, by_norm: np.ndarray, c: dict,
                      min_count: int) -> None:
    fig, axes = plots.figure(1, width=7, height=5.5)
    ax = axes[0, 0]
    ax.scatter(table["norm"], table["variance"], s=5, alpha=0.35)
    slope, intercept = np.polyfit(table["norm"], table["variance"], 1)
    xs = np.linspace(table["norm"].min(), table["norm"].max(), 2)
    ax.plot(xs, slope * xs + intercept, "r-", lw=1.5)
    ax.set_title(f"Rating variance vs embedding norm ({len(table)} movies with >= {min_count} "
                 f"ratings)\nPearson r = {c['pearson_r']:.2f}, Spearman r = {c['spearman_r']:.2f} "
                 "(report: r = 0.78)")
    ax.set(xlabel="embedding norm ||v_n||", ylabel="rating variance")
    plots.label_points(ax, table[["norm", "variance"]].to_numpy()[by_norm[:5]],
                       list(table["title"].iloc[by_norm[:5]]), "darkred")
    plots.save(fig, out / "variance_vs_norm.png")


def _variance_map(out: Path, table: pd.DataFrame, xy: np.ndarray, top: np.ndarray) -> None:
    fig, axes = plots.figure(1, width=8, height=6.5)
    ax = axes[0, 0]
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=5, c=table["variance"], cmap="viridis", alpha=0.6)
    fig.colorbar(sc, ax=ax, label="rating variance")
    ax.scatter(xy[top, 0], xy[top, 1], s=30, facecolors="none", edgecolors="red")
    plots.label_points(ax, xy[top], list(table["title"].iloc[top]), "darkred")
    ax.set(title=f"Movie embeddings (PCA); the {len(top)} longest embeddings circled",
           xlabel="PC1", ylabel="PC2")
    plots.save(fig, out / "polarizing_map.png")


def summarize(result: dict) -> str:
    c = result["correlations"]["variance_vs_norm"]
    d = result["correlations"]["variance_vs_deviation_from_genre_prior"]
    m, n = result["model"], len(result["top_by_norm"])
    return "\n".join(
        [f"{result['movies']} movies with >= {result['min_count']} ratings ({m['model']}, reg_scaling="
         f"{m['reg_scaling']}); variance vs embedding norm: Pearson r = {c['pearson_r']:.3f}, "
         f"Spearman r = {c['spearman_r']:.3f} (report: 0.78); with the rating count held fixed: "
         f"{c['partial_spearman_given_count']:.3f}; vs distance from the genre prior ||v - p||: "
         f"Pearson r = {d['pearson_r']:.3f}",
         f"top {n} by norm: " + "; ".join(t["title"] for t in result["top_by_norm"]),
         f"top {n} by variance: " + "; ".join(t["title"] for t in result["top_by_variance"])])
