"""``task=coldstart``: how each rung predicts movies nobody rated in training (SPEC §4; report §3.2.4).

On the configured split's test rows whose movie has no training rating
(``split=cold_movies`` makes thousands of them), each rung's RMSE with its
bootstrap 95% interval, its paired difference to a reference rung, and the
RMSE against the number of genres a cold movie has: the genre prior is all a
cold movie's prediction has to go on.  Each rung is trained on the configured
split with the configured priors; ``features`` without and ``features+genre_bias``
with the genre prior on the movie bias (``model.genre_bias``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from rec.analysis import plots
from rec.analysis.context import Context
from rec.als.config import RUNGS
from rec.errors import ConfigError
from rec.metrics import paired_bootstrap_rmse, rmse_interval

GENRE_BUCKETS = ("0", "1", "2", "3", "4+")


@dataclass(frozen=True)
class Options:
    """``conf/task/coldstart.yaml``."""

    rungs: tuple[str, ...] = ("biases", "embeddings", "features", "features+genre_bias")
    """The rungs compared on the test movies nobody rated in training (each trained on the
    configured split; ``features+genre_bias`` is ``features`` with ``model.genre_bias``)."""
    reference: str = "features"
    """The rung every other is compared against, with a paired bootstrap interval."""
    n_boot: int = 2000
    """Bootstrap resamples of the intervals."""

    def __post_init__(self) -> None:
        known = (*RUNGS, "features+genre_bias")
        bad = [r for r in (*self.rungs, self.reference) if r not in known]
        if bad:
            raise ConfigError(f"task.rungs / task.reference: {bad[0]} is not one of {', '.join(known)}.")
        if self.reference not in self.rungs:
            raise ConfigError(f"task.reference={self.reference} must be one of task.rungs.")


def _errors(ctx: Context, rung: str, rows: torch.Tensor) -> torch.Tensor:
    name, _, extra = rung.partition("+")
    model = ctx.model(name, **({"genre_bias": bool(extra)} if name == "features" else {}))
    r = ctx.ratings
    pred = model.predictor.predict(r.user[rows].long(), r.item[rows].long(),
                                   ctx.days(rows)).clamp(*r.rating_range)
    return (pred - r.rating[rows]).double()


def _genre_bucket(ctx: Context, rows: torch.Tensor) -> list[str]:
    offsets = ctx.ratings.movies.genre_offsets
    count = (offsets[1:] - offsets[:-1])[ctx.ratings.item[rows].long()]
    return [GENRE_BUCKETS[min(int(c), 4)] for c in count]


def compute(ctx: Context, opts: Options) -> dict:
    test = ctx.split.test.long()
    seen = torch.zeros(ctx.ratings.n_items, dtype=torch.bool)
    seen[ctx.ratings.item[ctx.split.train.long()].long()] = True
    rows = test[~seen[ctx.ratings.item[test].long()]]
    if rows.numel() == 0:
        return {"cold_rows": 0, "rungs": [], "by_genres": [], "_plot": None}
    errors = {rung: _errors(ctx, rung, rows) for rung in opts.rungs}
    ref = errors[opts.reference]
    rungs = [{"rung": rung, **rmse_interval(e, opts.n_boot),
              "minus_reference": None if rung == opts.reference
              else paired_bootstrap_rmse(e, ref, opts.n_boot)} for rung, e in errors.items()]
    buckets = pd.Series(_genre_bucket(ctx, rows))
    by_genres = [{"rung": rung, "genres": b, "n": int((buckets == b).sum()),
                  "rmse": float(e[torch.tensor((buckets == b).to_numpy())].square().mean().sqrt())}
                 for rung, e in errors.items() for b in GENRE_BUCKETS if (buckets == b).any()]
    return {"cold_rows": int(rows.numel()), "split": ctx.run.split.options(),
            "reference": opts.reference, "rungs": rungs, "by_genres": by_genres, "_plot": True}


def render(result: dict, out: Path) -> None:
    if not result["_plot"]:
        return
    table = pd.DataFrame([{k: r[k] for k in ("rung", "diff", "low", "high", "n")} for r in result["rungs"]])
    table = table.rename(columns={"diff": "rmse"})
    table.to_csv(out / "coldstart.csv", index=False)
    genres = pd.DataFrame(result["by_genres"])
    genres.to_csv(out / "coldstart_by_genres.csv", index=False)
    fig, axes = plots.figure(2, width=6.5, height=5)
    ax = axes[0, 0]
    ax.bar(table["rung"], table["rmse"], yerr=[table["rmse"] - table["low"], table["high"] - table["rmse"]],
           capsize=4, color="tab:blue")
    ax.set_ylim(table["low"].min() - 0.05, table["high"].max() + 0.02)
    ax.set(title=f"Cold-start RMSE ({result['cold_rows']:,} test rows), 95% intervals",
           ylabel="RMSE on movies unseen in training")
    ax.tick_params(axis="x", rotation=20)
    ax = axes[0, 1]
    for rung, part in genres.groupby("rung", sort=False):
        ax.plot(part["genres"], part["rmse"], "o-", label=rung)
    ax.set(title="Cold-start RMSE by a movie's number of genres", xlabel="genres of the movie",
           ylabel="RMSE")
    ax.legend(fontsize=8)
    plots.save(fig, out / "coldstart.png")


def summarize(result: dict) -> str:
    if not result["cold_rows"]:
        return "no test movie is unseen in training: use split=cold_movies for a cold-start test."
    lines = [f"{result['cold_rows']:,} cold test rows; RMSE [95% interval], minus {result['reference']}:"]
    for r in result["rungs"]:
        d = r["minus_reference"]
        diff = "" if d is None else f"   {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        lines.append(f"  {r['rung']:22s} {r['diff']:.4f} [{r['low']:.4f}, {r['high']:.4f}]{diff}")
    counts = {g["genres"]: g["n"] for g in result["by_genres"]}
    lines.append("by number of genres (rows): " + ", ".join(f"{k}: {v:,}" for k, v in counts.items()))
    return "\n".join(lines)
