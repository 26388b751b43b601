"""The structure of the genre embeddings W of the features rung (SPEC §4; report §4.5, §5.5).

Cosine similarities, a Ward tree on the unit-normalized rows (where Euclidean
distance is a monotone function of cosine similarity), its cophenetic
correlation and the mean similarity within and between its clusters.  Used
by ``task=genres`` and ``task=dimensions``.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

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
    # W's first rows are the genres'; a model with decades or tags has their rows after
    return model.params.genre_factors[:model.movies.n_genres].double().numpy()


def describe(model: Recommender, n_clusters: int) -> tuple[dict, dict]:
    names = model.movies.genre_names
    s = structure(genre_factors(model), n_clusters)
    clusters = [[names[i] for i in np.flatnonzero(s["labels"] == c)] for c in sorted(set(s["labels"]))]
    numbers = {"K": model.params.dim, "cophenetic": s["cophenetic"],
               "mean_similarity": s["mean_similarity"], "intra_cluster": s["intra_cluster"],
               "inter_cluster": s["inter_cluster"], "clusters": clusters}
    return numbers, s
