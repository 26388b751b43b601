"""Figure helpers shared by the analyses: PCA maps, labelled points, genre maps and similarity
clustermaps, saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: analyses run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402

DPI = 150


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Principal components: (scores, components, mean, explained variance ratio)."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:k]
    if components.shape[0] < k:  # fewer dimensions than asked: pad with zero axes
        components = np.vstack([components, np.zeros((k - components.shape[0], x.shape[1]))])
    explained = s[:k] ** 2 / max((s ** 2).sum(), 1e-12)
    return (x - mean) @ components.T, components, mean, np.pad(explained, (0, k - len(explained)))


def short(title: str, width: int = 32) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def label_points(ax, xy: np.ndarray, labels: list[str], color: str = "black", size: int = 7) -> None:
    """Mark and label points, nudging labels off the markers."""
    for (x, y), text in zip(xy, labels):
        ax.annotate(short(text), (x, y), xytext=(4, 3), textcoords="offset points",
                    fontsize=size, color=color)


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def figure(ncols: int = 1, width: float = 7.5, height: float = 6.0):
    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)


def genre_map(ax, w: np.ndarray, names: list[str], title: str) -> None:
    coords = w[:, :2] if w.shape[1] == 2 else pca(w)[0]
    ax.scatter(coords[:, 0], coords[:, 1], s=30, c="tab:purple")
    label_points(ax, coords, names, size=8)
    ax.axhline(0, c="lightgray", lw=0.8)
    ax.axvline(0, c="lightgray", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel("dimension 1" if w.shape[1] == 2 else "PC1")
    ax.set_ylabel("dimension 2" if w.shape[1] == 2 else "PC2")


def clustermap(path, s: dict, names: list[str], title: str):
    """Similarity heatmap in dendrogram order, the dendrogram above it (a seaborn-style clustermap)."""
    fig = plt.figure(figsize=(10, 10.5))
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
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
