"""Ratings as aligned tensors with their id maps and the movie catalog (SPEC §1.2)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from rec.data.catalog import Catalog
from rec.data.people import People


class DatasetShape:
    """What a dataset and one rank's part of it both answer, from their ``user_ids``,
    ``movies``, ``name`` and ``rating_range``."""

    @property
    def n_users(self) -> int:
        return self.user_ids.numel()

    @property
    def n_items(self) -> int:
        return len(self.movies)

    @property
    def n_genres(self) -> int:
        return self.movies.n_genres

    def _summary(self, n: int, movies_rated: int, mean: float) -> dict:
        """The counts a user checks first: sizes, sparsity, rating range."""
        return {"dataset": self.name, "ratings": n, "users": self.n_users,
                "movies": self.n_items, "movies_rated": movies_rated, "genres": self.n_genres,
                "rating_min": float(self.rating_range[0]),
                "rating_max": float(self.rating_range[1]), "rating_mean": mean,
                "density": n / max(1, self.n_users * self.n_items)}


@dataclass(frozen=True)
class Ratings(DatasetShape):
    """One dataset: three aligned rating tensors plus the catalog they index.

    ``user[i]``, ``item[i]`` and ``rating[i]`` describe rating ``i``.  Indices
    are contiguous; ``user_ids`` maps users back to the file's ids, and
    ``movies`` holds every movie index's id, title and genres.  The item index
    covers every catalog movie, rated or not, so unrated movies
    still get an embedding from their genres (SPEC §2.3).
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
    movies: Catalog
    """Id, title and genres of each movie index."""
    rating_range: tuple[float, float]
    """Lowest and highest rating in the data: predictions are clipped to it."""
    folds: dict[str, torch.Tensor] = field(default_factory=dict)
    """Official folds (ml-100k): fold name -> int8 per rating, 0 base, 1 test, -1 neither."""
    fold_hint: str = ""
    """For a dataset that has official folds: where their files belong and where to get them
    (empty for one without folds), so a missing fold's error can say what to do."""
    digest: str = ""
    """Hash of the source files' contents and the options they were parsed with (set by the
    loader); empty for ratings built in memory, whose :meth:`content_digest` hashes the arrays."""
    people: People | None = None
    """Each person's features (age group, gender, occupation) where the dataset describes its
    people (ml-100k's ``u.user``, ml-1m's ``users.dat``); ``None`` elsewhere."""

    def __len__(self) -> int:
        return self.rating.numel()

    def content_digest(self) -> str:
        """What identifies these ratings' content: a resumed run must have the same."""
        if self.digest:
            return self.digest
        h = hashlib.sha256()
        for t in (self.user, self.item, self.rating, self.user_ids, self.movies.ids):
            h.update(t.contiguous().numpy().reshape(-1).view(np.uint8).data)
        return h.hexdigest()[:32]

    def item_counts(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Ratings per movie, over all ratings or the rows in ``index``."""
        return _counts(self.item, index, self.n_items)

    def user_counts(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Ratings per user, over all ratings or the rows in ``index``."""
        return _counts(self.user, index, self.n_users)

    def summary(self) -> dict:
        """Counts a user checks first: sizes, sparsity, rating range."""
        n = len(self)
        mean = float(self.rating.sum(dtype=torch.float64)) / n if n else float("nan")
        return self._summary(n, int((self.item_counts() > 0).sum()), mean)  # no float64 copy


def _counts(values: torch.Tensor, index: torch.Tensor | None, n: int,
            block: int = 1 << 22) -> torch.Tensor:
    """``bincount(values[index])``, a block of ``index`` at a time: no subset copy (115 MB at
    ML-32M, at the training process's peak)."""
    if index is None:
        return torch.bincount(values, minlength=n)
    out = torch.zeros(n, dtype=torch.int64, device=values.device)
    for s in range(0, index.numel(), block):
        out += torch.bincount(values[index[s:s + block]], minlength=n)
    return out
