"""``task=data``: counts, sparsity, degree power laws and per-movie rating statistics.

SPEC §4 (report §2, figs 1-5): user and movie degree distributions on log-log
axes with a fitted power-law exponent, the rating histogram, and per-movie
variance vs count, mean vs count and variance vs mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Options:
    """``conf/task/data.yaml``."""

    min_count: int = 5
    """Movies with fewer ratings are left out of the variance and mean plots."""


SCATTERS = (("variance_vs_count", "count", "var", "ratings per movie (log)", "rating variance", True),
            ("mean_vs_count", "count", "mean", "ratings per movie (log)", "mean rating", True),
            ("variance_vs_mean", "mean", "var", "mean rating", "rating variance", False))


def compute(ctx: Context, opts: Options) -> dict:
    r = ctx.ratings
    summary = r.summary()
    user_deg, item_deg = r.user_counts().numpy(), r.item_counts().numpy()
    fits = {"users": power_law(user_deg), "movies": power_law(item_deg)}
    moments = movie_moments(r)
    many = {k: v[moments["count"] >= opts.min_count] for k, v in moments.items()}
    relations = {name: correlations(np.log(many[x]) if logx else many[x], many[y])
                 for name, x, y, _, _, logx in SCATTERS}
    levels, freq = np.unique(r.rating.numpy(), return_counts=True)
    movies = pd.DataFrame({"movie_id": r.movies.ids.numpy(), "title": r.movies.titles,
                           "ratings": moments["count"], "mean": moments["mean"],
                           "variance": moments["var"]})
    return {
        "counts": {**summary, "sparsity": 1 - summary["density"],
                   "user_degree": _describe(user_deg), "movie_degree": _describe(item_deg[item_deg > 0])},
        "power_law": fits,
        "rating_histogram": {f"{k:g}": int(v) for k, v in zip(levels, freq)},
        "relations": relations,
        "min_count": opts.min_count,
        "_plot": {"user_deg": user_deg, "item_deg": item_deg, "many": many, "levels": levels,
                  "freq": freq, "movies": movies, "name": r.name},
    }


def render(result: dict, out: Path) -> None:
    p, fits = result["_plot"], result["power_law"]
    fig, axes = plots.figure(3, width=5.5, height=4.6)
    _degree_panel(axes[0, 0], p["user_deg"], fits["users"], "users")
    _degree_panel(axes[0, 1], p["item_deg"], fits["movies"], "movies")
    _rank_panel(axes[0, 2], p["user_deg"], p["item_deg"])
    plots.save(fig, out / "degrees.png")
    fig, axes = plots.figure(1, width=6.5, height=4.5)
    axes[0, 0].bar(p["levels"], p["freq"], width=0.4)
    axes[0, 0].set(xlabel="rating", ylabel="number of ratings", title=f"Rating histogram ({p['name']})")
    plots.save(fig, out / "ratings_histogram.png")
    for scatter in SCATTERS:
        _scatter(out, p["many"], scatter, result["relations"][scatter[0]], result["min_count"])
    p["movies"].to_csv(out / "movies.csv", index=False)


def _scatter(out: Path, many: dict, scatter: tuple, relation: dict, min_count: int) -> None:
    name, x, y, xlabel, ylabel, logx = scatter
    fig, axes = plots.figure(1, width=6.5, height=5)
    ax = axes[0, 0]
    ax.scatter(many[x], many[y], s=4, alpha=0.35)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(f"Movies with >= {min_count} ratings: {ylabel} vs {xlabel.split(' (')[0]}\n"
                 f"Spearman r = {relation['spearman_r']:.2f}")
    plots.save(fig, out / f"{name}.png")


def summarize(result: dict) -> str:
    s, fits, rel = result["counts"], result["power_law"], result["relations"]
    return "\n".join([
        f"{s['dataset']}: {s['ratings']:,} ratings, {s['users']:,} users, "
        f"{s['movies']:,} movies ({s['movies_rated']:,} rated), {s['genres']} genres; "
        f"sparsity {s['sparsity']:.4%}",
        f"degree power laws: users alpha = {fits['users']['alpha']:.2f} (x >= {fits['users']['xmin']:.0f}), "
        f"movies alpha = {fits['movies']['alpha']:.2f} (x >= {fits['movies']['xmin']:.0f})",
        "movies with >= {} ratings: Spearman r variance~log count {:.2f}, mean~log count {:.2f}, "
        "variance~mean {:.2f}".format(result["min_count"], rel["variance_vs_count"]["spearman_r"],
                                      rel["mean_vs_count"]["spearman_r"],
                                      rel["variance_vs_mean"]["spearman_r"])])


def _describe(x: np.ndarray) -> dict:
    return {"min": int(x.min()), "median": float(np.median(x)), "mean": float(x.mean()),
            "max": int(x.max())}
