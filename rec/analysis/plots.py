"""Figure helpers shared by the analyses: PCA maps, labelled points, saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: analyses run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
