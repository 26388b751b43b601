"""Ratings as aligned tensors with their id maps and genres (SPEC §1.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

NO_GENRE = "(no genres listed)"


@dataclass(frozen=True)
class Ratings:
    """One dataset: three aligned rating tensors plus the catalog they index.

    ``user[i]``, ``item[i]`` and ``rating[i]`` describe rating ``i``.  Indices
    are contiguous; ``user_ids`` and ``item_ids`` map them back to the file's
    ids.  The item index covers every catalog movie, rated or not, so unrated
    movies still get an embedding from their genres (SPEC §2.3).
    """

    name: str
    """Dataset name, e.g. ``ml-latest-small``."""
    user: torch.Tensor
    """int32 user index of each rating."""
    item: torch.Tensor
    """int32 movie index of each rating."""
    rating: torch.Tensor
    """float32 rating value."""
    timestamp: torch.Tensor | None
    """int64 seconds since the epoch (zeros when the source has none); ``None`` when the
    loader was asked to skip them (they are a fifth of the memory at ML-32M scale)."""
    user_ids: torch.Tensor
    """int64 original user id of each user index."""
    item_ids: torch.Tensor
    """int64 original movie id of each movie index."""
    titles: list[str]
    """Title of each movie index."""
    genre_names: list[str]
    """Name of each genre index."""
    genre_offsets: torch.Tensor
    """int64 CSR offsets: movie n has genres ``genre_index[genre_offsets[n]:genre_offsets[n+1]]``."""
    genre_index: torch.Tensor
    """int32 genre indices; every movie has at least one (``(no genres listed)`` counts)."""
    rating_range: tuple[float, float]
    """Lowest and highest rating in the data: predictions are clipped to it."""
    folds: dict[str, torch.Tensor] = field(default_factory=dict)
    """Official folds (ml-100k): fold name -> int8 per rating, 0 base, 1 test, -1 neither."""

    def __len__(self) -> int:
        return self.rating.numel()

    @property
    def n_users(self) -> int:
        return self.user_ids.numel()

    @property
    def n_items(self) -> int:
        return self.item_ids.numel()

    @property
    def n_genres(self) -> int:
        return len(self.genre_names)

    def item_genres(self, item: int) -> list[str]:
        """Genre names of movie index ``item``."""
        return genres_of(item, self.genre_names, self.genre_offsets, self.genre_index)

    def item_counts(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Ratings per movie, over all ratings or the rows in ``index``."""
        items = self.item if index is None else self.item[index]
        return torch.bincount(items, minlength=self.n_items)

    def user_counts(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Ratings per user, over all ratings or the rows in ``index``."""
        users = self.user if index is None else self.user[index]
        return torch.bincount(users, minlength=self.n_users)

    def genre_matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dense A (movies x genres) with ``A[n, f] = 1/|F(n)|`` for f in F(n) (SPEC §2.3)."""
        return genre_matrix(self.genre_offsets, self.genre_index, self.n_genres, dtype)

    def summary(self) -> dict:
        """Counts a user checks first: sizes, sparsity, rating range."""
        n_rated = int((self.item_counts() > 0).sum())
        return {
            "dataset": self.name,
            "ratings": len(self),
            "users": self.n_users,
            "movies": self.n_items,
            "movies_rated": n_rated,
            "genres": self.n_genres,
            "rating_min": float(self.rating_range[0]),
            "rating_max": float(self.rating_range[1]),
            "rating_mean": float(self.rating.double().mean()) if len(self) else float("nan"),
            "density": len(self) / max(1, self.n_users * self.n_items),
        }


def genres_of(item: int, names: list[str], offsets: torch.Tensor, index: torch.Tensor) -> list[str]:
    """Genre names of movie ``item`` from the genre CSR."""
    lo, hi = int(offsets[item]), int(offsets[item + 1])
    return [names[g] for g in index[lo:hi].tolist()]


def genre_matrix(offsets: torch.Tensor, index: torch.Tensor, n_genres: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (movies x genres), ``A[n, f] = 1/|F(n)|``: ``A @ W`` is every movie's prior mean p_n."""
    counts = offsets.diff()
    rows = torch.repeat_interleave(torch.arange(len(counts)), counts)
    a = torch.zeros(len(counts), n_genres, dtype=dtype)
    a[rows, index.long()] = 1.0 / counts[rows].to(dtype)
    return a


def genres_to_csr(genre_lists: list[list[str]], names: list[str] | None = None):
    """Encode per-movie genre name lists as CSR tensors; empty lists get ``NO_GENRE``."""
    genre_lists = [g if g else [NO_GENRE] for g in genre_lists]
    if names is None:
        names = sorted({g for gs in genre_lists for g in gs})
    elif NO_GENRE not in names and any(gs == [NO_GENRE] for gs in genre_lists):
        names = [*names, NO_GENRE]
    lookup = {g: i for i, g in enumerate(names)}
    counts = np.fromiter((len(g) for g in genre_lists), dtype=np.int64, count=len(genre_lists))
    offsets = np.zeros(len(genre_lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    index = np.fromiter((lookup[g] for gs in genre_lists for g in gs), dtype=np.int32,
                        count=int(offsets[-1]))
    return names, torch.from_numpy(offsets), torch.from_numpy(index)
