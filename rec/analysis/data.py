"""``task=data``: counts, sparsity, degree power laws and per-movie rating statistics.

SPEC §4 (report §2, figs 1-5): user and movie degree distributions on log-log
axes with a fitted power-law exponent, the rating histogram, and per-movie
variance vs count, mean vs count and variance vs mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rec.analysis import plots
from rec.analysis.context import Context
from rec.analysis.stats import correlations, movie_moments, power_law


def _degree_panel(ax, degrees: np.ndarray, fit: dict, who: str) -> None:
    """The complementary CDF P(degree >= x) on log-log axes, with the fitted tail."""
    d = np.sort(degrees[degrees > 0])
    ccdf = 1 - np.arange(len(d)) / len(d)
    ax.loglog(d, ccdf, ".", ms=3, alpha=0.6, label=f"{who}: P(degree >= x)")
    if np.isfinite(fit["alpha"]):
        tail = np.unique(d[d >= fit["xmin"]])
        share = fit["n_tail"] / len(d)
        ax.loglog(tail, share * (tail / fit["xmin"]) ** (1 - fit["alpha"]), "r-", lw=1.5,
                  label=f"power law, alpha = {fit['alpha']:.2f} (x >= {fit['xmin']:.0f})")
    ax.set_xlabel(f"ratings per {who.rstrip('s')} (degree x)")
    ax.set_ylabel(f"share of {who} with degree >= x")
    ax.set_title(f"{who.capitalize()}: degree distribution")
    ax.legend(fontsize=8)


def _rank_panel(ax, user_deg: np.ndarray, item_deg: np.ndarray) -> None:
    for deg, who in ((user_deg, "users"), (item_deg, "movies")):
        d = np.sort(deg[deg > 0])[::-1]
        ax.loglog(np.arange(1, len(d) + 1), d, label=who)
    ax.set_xlabel("rank")
    ax.set_ylabel("ratings")
    ax.set_title("Rank vs rating count (report fig. 1)")
    ax.legend()


def run(ctx: Context, task) -> dict:
    r = ctx.ratings
    summary = r.summary()
    user_deg = r.user_counts().numpy()
    item_deg = r.item_counts().numpy()
    fits = {"users": power_law(user_deg), "movies": power_law(item_deg)}
    moments = movie_moments(r)
    many = moments["count"] >= task.min_count
    count, mean, var = moments["count"][many], moments["mean"][many], moments["var"][many]

    fig, axes = plots.figure(3, width=5.5, height=4.6)
    _degree_panel(axes[0, 0], user_deg, fits["users"], "users")
    _degree_panel(axes[0, 1], item_deg, fits["movies"], "movies")
    _rank_panel(axes[0, 2], user_deg, item_deg)
    plots.save(fig, ctx.out_dir / "degrees.png")

    fig, axes = plots.figure(1, width=6.5, height=4.5)
    ax = axes[0, 0]
    levels, freq = np.unique(r.rating.numpy(), return_counts=True)
    ax.bar(levels, freq, width=0.4)
    ax.set_xlabel("rating")
    ax.set_ylabel("number of ratings")
    ax.set_title(f"Rating histogram ({r.name})")
    plots.save(fig, ctx.out_dir / "ratings_histogram.png")

    scatter = [("variance_vs_count", count, var, "ratings per movie (log)", "rating variance", True),
               ("mean_vs_count", count, mean, "ratings per movie (log)", "mean rating", True),
               ("variance_vs_mean", mean, var, "mean rating", "rating variance", False)]
    relations = {}
    for name, x, y, xlabel, ylabel, logx in scatter:
        fig, axes = plots.figure(1, width=6.5, height=5)
        ax = axes[0, 0]
        ax.scatter(x, y, s=4, alpha=0.35)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        relations[name] = correlations(np.log(x) if logx else x, y)
        ax.set_title(f"Movies with >= {task.min_count} ratings: {ylabel} vs {xlabel.split(' (')[0]}\n"
                     f"Spearman r = {relations[name]['spearman_r']:.2f}")
        plots.save(fig, ctx.out_dir / f"{name}.png")

    table = pd.DataFrame({"movie_id": r.movies.ids.numpy(), "title": r.movies.titles,
                          "ratings": moments["count"], "mean": moments["mean"], "variance": moments["var"]})
    table.to_csv(ctx.out_dir / "movies.csv", index=False)
    result = {
        "counts": {**summary, "sparsity": 1 - summary["density"],
                   "user_degree": _describe(user_deg), "movie_degree": _describe(item_deg[item_deg > 0])},
        "power_law": fits,
        "rating_histogram": {f"{k:g}": int(v) for k, v in zip(levels, freq)},
        "relations": relations,
        "min_count": int(task.min_count),
    }
    result["summary"] = "\n".join([
        f"{r.name}: {summary['ratings']:,} ratings, {summary['users']:,} users, "
        f"{summary['movies']:,} movies ({summary['movies_rated']:,} rated), {summary['genres']} genres; "
        f"sparsity {1 - summary['density']:.4%}",
        f"degree power laws: users alpha = {fits['users']['alpha']:.2f} (x >= {fits['users']['xmin']:.0f}), "
        f"movies alpha = {fits['movies']['alpha']:.2f} (x >= {fits['movies']['xmin']:.0f})",
        "movies with >= {} ratings: Spearman r variance~log count {:.2f}, mean~log count {:.2f}, "
        "variance~mean {:.2f}".format(task.min_count, relations["variance_vs_count"]["spearman_r"],
                                      relations["mean_vs_count"]["spearman_r"],
                                      relations["variance_vs_mean"]["spearman_r"])])
    return result


def _describe(x: np.ndarray) -> dict:
    return {"min": int(x.min()), "median": float(np.median(x)), "mean": float(x.mean()),
            "max": int(x.max())}
