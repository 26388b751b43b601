"""``task=genres``: the structure of the genre embeddings W of the features rung.

SPEC §4 (report §4.5, §5.5, figs 16-19): a PCA map of W, the cosine
similarity matrix ordered by Ward clustering with its dendrogram, the
cophenetic correlation of that clustering (report: 0.82 at K=10, 0.61 at
K=2), and mean intra- and inter-cluster similarity
(:mod:`rec.analysis.genre_structure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy.cluster import hierarchy

from rec.analysis import plots
from rec.analysis.context import Context
from rec.analysis.genre_structure import describe, genre_factors


@dataclass(frozen=True)
class Options:
    """``conf/task/genres.yaml``."""

    n_clusters: int = 5
    """Clusters cut from the Ward tree for intra-/inter-cluster similarity (the report's five)."""


def compute(ctx: Context, opts: Options) -> dict:
    model = ctx.model()
    numbers, s = describe(model, opts.n_clusters)
    names = model.movies.genre_names
    return {"model": model.config.hparams(), **numbers, "n_clusters": opts.n_clusters,
            "genres": names, "_plot": {"w": genre_factors(model), "structure": s}}


def render(result: dict, out: Path) -> None:
    names, K, s = result["genres"], result["K"], result["_plot"]["structure"]
    fig, axes = plots.figure(1, width=8, height=6.5)
    plots.genre_map(axes[0, 0], result["_plot"]["w"], names, f"Genre embeddings, K = {K}")
    plots.save(fig, out / "genre_map.png")
    plots.clustermap(out / "genre_similarity.png", s, names,
                     f"Cosine similarity of genre embeddings, K = {K}")
    fig, axes = plots.figure(1, width=9, height=5)
    hierarchy.dendrogram(s["tree"], labels=names, ax=axes[0, 0], leaf_rotation=90)
    axes[0, 0].set(title=f"Ward dendrogram of genre embeddings (K = {K})", ylabel="Ward distance")
    plots.save(fig, out / "genre_dendrogram.png")
    pd.DataFrame(s["similarity"], index=names, columns=names).to_csv(out / "genre_similarity.csv")


def summarize(result: dict) -> str:
    return "\n".join(
        [f"K = {result['K']}: cophenetic correlation {result['cophenetic']:.3f} (report: 0.82 at "
         f"K=10, 0.61 at K=2); mean similarity {result['mean_similarity']:.3f}, intra-cluster "
         f"{result['intra_cluster']:.3f}, inter-cluster {result['inter_cluster']:.3f}"]
        + [f"cluster {i + 1}: {', '.join(c)}" for i, c in enumerate(result["clusters"])])
