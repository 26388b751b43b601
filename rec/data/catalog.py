"""The movie catalog: ids, titles and genres of every movie index (SPEC §1.2).

Shared by the data (``Ratings.movies``) and a trained model
(``Recommender.movies``): both index the same movies, so both answer "what is
movie n" the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

NO_GENRE = "(no genres listed)"


@dataclass(frozen=True)
class Catalog:
    """Every movie index's id, title and genres; rated or not."""

    ids: torch.Tensor
    """int64 original movie id of each movie index."""
    titles: list[str]
    """Title of each movie index."""
    genre_names: list[str]
    """Name of each genre index."""
    genre_offsets: torch.Tensor
    """int64 CSR offsets: movie n has genres ``genre_index[genre_offsets[n]:genre_offsets[n+1]]``."""
    genre_index: torch.Tensor
    """int32 genre indices; every movie has at least one (``(no genres listed)`` counts)."""

    @classmethod
    def from_genre_lists(cls, ids: torch.Tensor, titles: list[str], genre_lists: list[list[str]],
                         names: list[str] | None = None) -> "Catalog":
        """From one list of genre names per movie (see :func:`genres_to_csr`)."""
        names, offsets, index = genres_to_csr(genre_lists, names)
        return cls(ids, list(titles), names, offsets, index)

    def __len__(self) -> int:
        return self.ids.numel()

    @property
    def n_genres(self) -> int:
        return len(self.genre_names)

    def genres_of(self, item: int) -> list[str]:
        """Genre names of movie index ``item``."""
        lo, hi = int(self.genre_offsets[item]), int(self.genre_offsets[item + 1])
        return [self.genre_names[g] for g in self.genre_index[lo:hi].tolist()]

    def genre_matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dense A (movies x genres), ``A[n, f] = 1/|F(n)|`` for f in F(n): ``A @ W`` is every
        movie's prior mean p_n (SPEC §2.3)."""
        counts = self.genre_offsets.diff()
        rows = torch.repeat_interleave(torch.arange(len(counts)), counts)
        a = torch.zeros(len(counts), self.n_genres, dtype=dtype)
        a[rows, self.genre_index.long()] = 1.0 / counts[rows].to(dtype)
        return a

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
