"""The movie catalog: ids, titles and genres of every movie index (SPEC §1.2).

Shared by the data (``Ratings.movies``) and a trained model
(``Recommender.movies``): both index the same movies, so both answer "what is
movie n" the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from rec.errors import ConfigError

NO_GENRE = "(no genres listed)"
YEAR = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")
"""A release year closing a GroupLens title: ``Heat (1995)``, ``Fargo (TV series) (2014-)``."""


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
    tag_names: list[str] = field(default_factory=list)
    """Name of each tag index: the distinct tags of the dataset's tag file (``tags.csv``),
    lower-cased and stripped; empty where the dataset has none."""
    tag_offsets: torch.Tensor | None = None
    """int64 CSR offsets of each movie's distinct tags in ``tag_index`` (``None``: no tags)."""
    tag_index: torch.Tensor | None = None
    """int32 tag indices."""

    @classmethod
    def from_genre_lists(cls, ids: torch.Tensor, titles: list[str], genre_lists: list[list[str]],
                         names: list[str] | None = None,
                         tag_lists: list[list[str]] | None = None) -> "Catalog":
        """From one list of genre names per movie (see :func:`genres_to_csr`) and, where the
        dataset tags its movies, one list of tags per movie."""
        names, offsets, index = genres_to_csr(genre_lists, names)
        if tag_lists is None:
            return cls(ids, list(titles), names, offsets, index)
        tag_lists = [sorted({t.strip().lower() for t in ts} - {""}) for ts in tag_lists]
        tags, tag_offsets, tag_index = lists_to_csr(tag_lists, sorted({t for ts in tag_lists
                                                                       for t in ts}))
        return cls(ids, list(titles), names, offsets, index, tags, tag_offsets, tag_index)

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
        return mean_block(self.genre_offsets, self.genre_index.long(), self.n_genres, dtype)

    def years(self) -> torch.Tensor:
        """int64 release year of each movie from its title's closing ``(YYYY)``; 0 if none."""
        found = (YEAR.search(t) for t in self.titles)
        return torch.tensor([int(m.group(1)) if m else 0 for m in found], dtype=torch.int64)

    def decades(self) -> tuple[list[str], torch.Tensor]:
        """The decades the titles span (names such as ``1990s``, oldest first) and each
        movie's index among them (-1: no year in its title)."""
        years = self.years()
        known = years > 0
        if not bool(known.any()):
            return [], torch.full_like(years, -1)
        first = int(years[known].min()) // 10
        last = int(years[known].max()) // 10
        index = torch.where(known, years // 10 - first, torch.full_like(years, -1))
        return [f"{10 * d}s" for d in range(first, last + 1)], index

    def top_tags(self, n: int) -> list[int]:
        """The ``n`` tags given to the most movies (ties: by name), as tag indices."""
        if self.tag_index is None or n <= 0:
            return []
        counts = torch.bincount(self.tag_index.long(), minlength=len(self.tag_names))
        order = sorted(range(len(self.tag_names)), key=lambda t: (-int(counts[t]),
                                                                   self.tag_names[t]))
        return order[:n]

    def feature_matrix(self, dtype: torch.dtype = torch.float32, year: bool = False,
                       tags: int = 0) -> torch.Tensor:
        """A of the movie prior mean ``A W``: the genre columns (:meth:`genre_matrix`), then
        with ``year`` one column per decade (1 at the movie's, none without a year), then
        with ``tags`` the ``tags`` most used tags (``1/|T(n)|`` over the movie's of them).
        Each block of a movie's row sums to 1 where the movie has any of it, so each is a
        mean of that block's embeddings, added to the others."""
        blocks = [self.genre_matrix(dtype)]
        if year:
            names, index = self.decades()
            has = index >= 0  # a movie's one decade, or none
            offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(has, 0)])
            blocks.append(mean_block(offsets, index[has], len(names), dtype))
        if tags:
            if self.tag_index is None or not self.tag_names:
                raise ConfigError("model.movie_tags: this dataset has no tag file (tags.csv), so "
                                  "there are no tags to learn from; set model.movie_tags=0.")
            top = self.top_tags(tags)
            column = torch.full((len(self.tag_names),), -1, dtype=torch.int64)
            column[top] = torch.arange(len(top))
            blocks.append(mean_block(self.tag_offsets, column[self.tag_index.long()], len(top),
                                     dtype))
        return torch.cat(blocks, 1)

    def feature_names(self, year: bool = False, tags: int = 0) -> list[str]:
        """The name of each column of :meth:`feature_matrix` (``genre``, ``year:1990s``,
        ``tag:dark comedy``)."""
        names = list(self.genre_names)
        if year:
            names += [f"year:{d}" for d in self.decades()[0]]
        if tags:
            names += [f"tag:{self.tag_names[t]}" for t in self.top_tags(tags)]
        return names

    def state_dict(self) -> dict:
        """Every field, tags left out where there are none (files of earlier releases have
        none)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


def genres_to_csr(genre_lists: list[list[str]], names: list[str] | None = None):
    """Encode per-movie genre name lists as CSR tensors; empty lists get ``NO_GENRE``."""
    genre_lists = [g if g else [NO_GENRE] for g in genre_lists]
    if names is None:
        names = sorted({g for gs in genre_lists for g in gs})
    elif NO_GENRE not in names and any(gs == [NO_GENRE] for gs in genre_lists):
        names = [*names, NO_GENRE]
    return lists_to_csr(genre_lists, names)


def lists_to_csr(lists: list[list[str]], names: list[str]):
    """``names`` and CSR tensors (int64 offsets, int32 indices into ``names``) of one list of
    names per movie."""
    lookup = {g: i for i, g in enumerate(names)}
    counts = np.fromiter((len(g) for g in lists), dtype=np.int64, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    index = np.fromiter((lookup[g] for gs in lists for g in gs), dtype=np.int32,
                        count=int(offsets[-1]))
    return names, torch.from_numpy(offsets), torch.from_numpy(index)


def mean_block(offsets: torch.Tensor, columns: torch.Tensor, width: int,
               dtype: torch.dtype) -> torch.Tensor:
    """Dense (movies x ``width``): row n the mean of the one-hot rows of its entries
    ``columns[offsets[n]:offsets[n + 1]]`` (distinct; -1: left out), zeros for none."""
    n = offsets.numel() - 1
    rows = torch.repeat_interleave(torch.arange(n), offsets.diff())
    keep = columns >= 0
    a = torch.zeros(n, width, dtype=dtype)
    a[rows[keep], columns[keep]] = 1.0
    return a / a.sum(1, keepdim=True).clamp_min(1.0)
