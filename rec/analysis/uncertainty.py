"""``task=uncertainty``: how well a Gibbs model knows what it does not know (inference=gibbs).

On the configured split's test rows: the calibration of the predictive intervals (nominal
coverage against the observed share of ratings inside), the predictive standard deviation
against a movie's number of training ratings, and the movies whose typical rating the
posterior is least sure about, with titles.  The model is the configured rung sampled by
Gibbs (with the configured ``inference.*`` when ``inference=gibbs``, else the defaults of
``conf/inference/gibbs.yaml``); it is trained first when the store has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rec.analysis import plots
from rec.analysis.context import Context
from rec.bayes.config import InferenceConfig
from rec.errors import ConfigError

COUNT_EDGES = (0, 1, 3, 10, 30, 100, 300, 1000, 10**12)


@dataclass(frozen=True)
class Options:
    """``conf/task/uncertainty.yaml``."""

    levels: int = 19
    """Nominal coverages 0.05, 0.10, ..., 0.95 of the calibration curve (``levels`` of them)."""
    top: int = 15
    """Movies listed as the least sure."""
    min_count: int = 1
    """Least-sure list: movies with at least this many training ratings (0: cold ones too)."""

    def __post_init__(self) -> None:
        if self.levels < 1 or self.top < 1 or self.min_count < 0:
            raise ConfigError("task.levels and task.top must be positive, task.min_count >= 0.")


def _gibbs(ctx: Context) -> InferenceConfig:
    run = ctx.run.inference
    return run if run.gibbs else InferenceConfig(method="gibbs")


def calibration(rating: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                levels: int) -> list[dict]:
    """Observed share of ratings within each central Gaussian predictive interval."""
    normal = torch.distributions.Normal(0.0, 1.0)
    dev = ((rating.double() - mean.double()).abs() / std.double())
    out = []
    for nominal in np.linspace(0, 1, levels + 2)[1:-1]:
        z = float(normal.icdf(torch.tensor((1 + nominal) / 2)))
        out.append({"nominal": float(nominal), "observed": float((dev <= z).double().mean())})
    return out


def typical_rating(ctx: Context, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Per movie, the posterior mean and standard deviation of its rating by the average
    user (``mu + mean(b) + c_n + mean(u) . v_n`` per sample)."""
    s = model.posterior.samples
    f = (model.posterior.mu + s["user_bias"].mean(1, keepdim=True) + s["item_bias"]
         + torch.bmm(s["item_factors"], s["user_factors"].mean(1).unsqueeze(2)).squeeze(2))
    return f.mean(0), f.std(0, correction=0)


def compute(ctx: Context, opts: Options) -> dict:
    model = ctx.model(inference=_gibbs(ctx))
    r, test = ctx.ratings, ctx.split.test.long()
    mean, std = model.posterior.predict(r.user[test], r.item[test], ctx.days(test))
    rating = r.rating[test]
    counts = model.item_counts[r.item[test].long()]
    bins = pd.cut(counts.numpy(), COUNT_EDGES, right=False)
    by_count = (pd.DataFrame({"bin": bins.astype(str), "low": bins.categories[bins.codes].left,
                              "std": std.numpy()})
                .groupby(["low", "bin"], observed=True)["std"].agg(["mean", "count"])
                .reset_index())
    typical, spread = typical_rating(ctx, model)
    eligible = torch.nonzero(model.item_counts >= opts.min_count).flatten()
    order = eligible[torch.argsort(spread[eligible], descending=True)[:opts.top]]
    least = [{"movie_id": int(model.movies.ids[i]), "title": model.movies.titles[i],
              "ratings": int(model.item_counts[i]), "mean": float(typical[i]),
              "std": float(spread[i])} for i in order.tolist()]
    cal = calibration(rating, mean, std, opts.levels)
    return {"model": model.meta.get("run"), "test_rows": int(test.numel()),
            "calibration": cal, "by_count": by_count.to_dict("records"), "least_sure": least,
            "noise_sd": float(model.posterior.noise_var.mean().sqrt()),
            "_pairs": (counts.numpy(), std.numpy())}


def render(result: dict, out: Path) -> None:
    cal, by_count = pd.DataFrame(result["calibration"]), pd.DataFrame(result["by_count"])
    cal.to_csv(out / "calibration.csv", index=False)
    by_count.to_csv(out / "std_by_count.csv", index=False)
    pd.DataFrame(result["least_sure"]).to_csv(out / "least_sure.csv", index=False)
    fig, axes = plots.figure(2, width=6, height=5)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(cal["nominal"], cal["observed"], "o-", label="observed")
    ax.set(title=f"Predictive intervals on {result['test_rows']:,} test ratings",
           xlabel="nominal coverage", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    counts, std = result["_pairs"]
    ax.scatter(np.maximum(counts, 0.5), std, s=3, alpha=0.25, color="tab:blue")
    centers = [max(low, 0.5) * (3 if math.isfinite(low) else 1) ** 0.5 for low in by_count["low"]]
    ax.plot(centers, by_count["mean"], "o-", color="tab:red", label="mean per bin")
    ax.axhline(result["noise_sd"], color="gray", ls="--", label="noise alone")
    ax.set_xscale("log")
    ax.set(title="Predictive sd against the movie's training ratings",
           xlabel="training ratings of the movie (0 shown at 0.5)", ylabel="predictive sd")
    ax.legend(fontsize=8)
    plots.save(fig, out / "uncertainty.png")


def summarize(result: dict) -> str:
    cal = {round(c["nominal"], 2): c["observed"] for c in result["calibration"]}
    near = lambda q: min(cal, key=lambda k: abs(k - q))
    lines = [f"{result['test_rows']:,} test ratings; observed coverage of the nominal "
             + ", ".join(f"{near(q):.0%}: {cal[near(q)]:.3f}" for q in (0.5, 0.9))
             + f" intervals; noise sd {result['noise_sd']:.3f}",
             "predictive sd by the movie's training ratings: " + ", ".join(
                 f"{b['bin']} {b['mean']:.3f} ({b['count']:,})" for b in result["by_count"]),
             "least sure (typical rating, posterior sd, training ratings):"]
    lines += [f"  {m['title'][:48]:48s} {m['mean']:.2f} ± {m['std']:.2f}  ({m['ratings']})"
              for m in result["least_sure"]]
    return "\n".join(lines)
