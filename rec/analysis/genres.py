"""``task=genres``: the structure of the genre embeddings W of the features rung.

SPEC §4 (report §4.5, §5.5, figs 16-19): a PCA map of W, the cosine
similarity matrix ordered by Ward clustering with its dendrogram, the
cophenetic correlation of that clustering (report: 0.82 at K=10, 0.61 at
K=2), and mean intra- and inter-cluster similarity.  Ward linkage runs on
the unit-normalized rows, where Euclidean distance is a monotone function of
cosine similarity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

from rec.analysis import plots
from rec.analysis.context import Context
from rec.errors import ConfigError
from rec.model import Recommender


def structure(w: np.ndarray, n_clusters: int) -> dict:
    """Cosine similarities, Ward tree, cophenetic correlation and cluster cohesion of rows of ``w``."""
    unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    distances = pdist(unit)
    tree = hierarchy.linkage(unit, method="ward")
    cophenetic = float(hierarchy.cophenet(tree, distances)[0])
    labels = hierarchy.fcluster(tree, t=n_clusters, criterion="maxclust")
    off = ~np.eye(len(w), dtype=bool)
    same = (labels[:, None] == labels[None, :]) & off
    return {"similarity": sim, "tree": tree, "cophenetic": cophenetic, "labels": labels,
            "mean_similarity": float(sim[off].mean()),
            "intra_cluster": float(sim[same].mean()) if same.any() else float("nan"),
            "inter_cluster": float(sim[~same & off].mean()) if (~same & off).any() else float("nan")}


def genre_factors(model: Recommender) -> np.ndarray:
    if not model.config.has_genres or model.params.dim == 0:
        raise ConfigError("genre embeddings exist only in the features rung: use model=features.")
    return model.params.genre_factors.double().numpy()


def map_panel(ax, w: np.ndarray, names: list[str], title: str) -> None:
    coords = w[:, :2] if w.shape[1] == 2 else plots.pca(w)[0]
    ax.scatter(coords[:, 0], coords[:, 1], s=30, c="tab:purple")
    plots.label_points(ax, coords, names, size=8)
    ax.axhline(0, c="lightgray", lw=0.8)
    ax.axvline(0, c="lightgray", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel("dimension 1" if w.shape[1] == 2 else "PC1")
    ax.set_ylabel("dimension 2" if w.shape[1] == 2 else "PC2")


def clustermap(path, s: dict, names: list[str], title: str):
    """Similarity heatmap in dendrogram order, the dendrogram above it (a seaborn-style clustermap)."""
    fig = plots.plt.figure(figsize=(10, 10.5))
    top = fig.add_axes([0.25, 0.78, 0.6, 0.17])
    dendro = hierarchy.dendrogram(s["tree"], labels=names, ax=top, no_labels=True, color_threshold=None)
    top.set_title(f"{title}\nWard linkage, cophenetic correlation {s['cophenetic']:.2f}")
    top.set_yticks([])
    order = dendro["leaves"]
    heat = fig.add_axes([0.25, 0.12, 0.6, 0.64])
    image = heat.imshow(s["similarity"][np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    heat.set_xticks(range(len(order)), [names[i] for i in order], rotation=90, fontsize=8)
    heat.set_yticks(range(len(order)), [names[i] for i in order], fontsize=8)
    fig.colorbar(image, cax=fig.add_axes([0.88, 0.12, 0.02, 0.64]), label="cosine similarity")
    fig.savefig(path, dpi=plots.DPI)
    plots.plt.close(fig)


def describe(model: Recommender, n_clusters: int) -> tuple[dict, dict]:
    names = model.movies.genre_names
    s = structure(genre_factors(model), n_clusters)
    clusters = [[names[i] for i in np.flatnonzero(s["labels"] == c)] for c in sorted(set(s["labels"]))]
    numbers = {"K": model.params.dim, "cophenetic": s["cophenetic"],
               "mean_similarity": s["mean_similarity"], "intra_cluster": s["intra_cluster"],
               "inter_cluster": s["inter_cluster"], "clusters": clusters}
    return numbers, s


def run(ctx: Context, task) -> dict:
    model = ctx.model()
    names = model.movies.genre_names
    numbers, s = describe(model, task.n_clusters)
    w = genre_factors(model)
    fig, axes = plots.figure(1, width=8, height=6.5)
    map_panel(axes[0, 0], w, names, f"Genre embeddings, K = {model.params.dim}")
    plots.save(fig, ctx.out_dir / "genre_map.png")
    clustermap(ctx.out_dir / "genre_similarity.png", s, names,
               f"Cosine similarity of genre embeddings, K = {model.params.dim}")
    fig, axes = plots.figure(1, width=9, height=5)
    hierarchy.dendrogram(s["tree"], labels=names, ax=axes[0, 0], leaf_rotation=90)
    axes[0, 0].set_title(f"Ward dendrogram of genre embeddings (K = {model.params.dim})")
    axes[0, 0].set_ylabel("Ward distance")
    plots.save(fig, ctx.out_dir / "genre_dendrogram.png")
    pd.DataFrame(s["similarity"], index=names, columns=names).to_csv(ctx.out_dir / "genre_similarity.csv")
    result = {"model": model.config.hparams(), **numbers, "n_clusters": int(task.n_clusters),
              "genres": names}
    result["summary"] = "\n".join(
        [f"K = {numbers['K']}: cophenetic correlation {numbers['cophenetic']:.3f} (report: 0.82 at K=10, "
         f"0.61 at K=2); mean similarity {numbers['mean_similarity']:.3f}, intra-cluster "
         f"{numbers['intra_cluster']:.3f}, inter-cluster {numbers['inter_cluster']:.3f}"]
        + [f"cluster {i + 1}: {', '.join(c)}" for i, c in enumerate(numbers["clusters"])])
    return result
