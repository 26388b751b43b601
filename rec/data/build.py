"""Turn parsed columns into :class:`Ratings`: remap ids, validate, resolve duplicates.

SPEC §1.2 (contiguous indices, a catalog that covers unrated movies) and §1.4
(NaN or out-of-range ratings, duplicate pairs: errors that name the line).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rec.data.catalog import NO_GENRE, Catalog
from rec.data.people import People
from rec.data.ratings import Ratings
from rec.data.tables import line_numbers
from rec.errors import DataError

log = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("error", "keep_last")


@dataclass
class MoviesTable:
    """The movies file: ids, titles and genre lists, in file order."""

    ids: np.ndarray
    titles: list[str]
    genres: list[list[str]]
    genre_names: list[str] | None = None
    """A fixed genre order (ml-100k's flags); ``None`` sorts the names found."""
    tags: list[list[str]] | None = None
    """Each movie's tags (the CSV family's ``tags.csv``); ``None`` where the dataset has none."""


@dataclass
class PeopleFile:
    """A file that describes the people (:mod:`rec.data.people`): their ids and features."""

    ids: np.ndarray
    lists: list[list[str]]
    """Each person's feature names (``gender:F``, ...)."""
    path: Path


@dataclass
class RawRatings:
    """Rating columns as parsed, with the file they came from (for error messages)."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    path: Path
    header: bool = True
    folds: dict[str, np.ndarray] = field(default_factory=dict)
    people: PeopleFile | None = None
    """What the dataset says of its people, where it does (ml-100k, ml-1m)."""


def dense_lookup(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in ``ids`` (unique), -1 where absent."""
    if len(ids) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    lo = min(int(ids.min()), int(keys.min()) if len(keys) else 0)
    hi = max(int(ids.max()), int(keys.max()) if len(keys) else 0)
    if hi - lo < 1 << 27:  # a direct table is O(n) and fits easily
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[ids - lo] = np.arange(len(ids))
        return table[keys - lo]
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids, keys, sorter=order), 0, len(ids) - 1)
    found = ids[order[pos]] == keys
    return np.where(found, order[pos], -1)


def unique_ids(keys: np.ndarray) -> np.ndarray:
    """Sorted unique ids, in O(n) when their range is moderate."""
    if len(keys) == 0:
        return keys.astype(np.int64)
    lo, hi = int(keys.min()), int(keys.max())
    if hi - lo < 1 << 27:
        present = np.zeros(hi - lo + 1, dtype=bool)
        present[keys - lo] = True
        return np.flatnonzero(present).astype(np.int64) + lo
    return np.unique(keys).astype(np.int64)


def check_ratings(raw: RawRatings, rating_scale: tuple[float, float]) -> None:
    low, high = rating_scale
    bad = ~(np.isfinite(raw.rating) & (raw.rating >= low) & (raw.rating <= high))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        (line,) = line_numbers(raw.path, raw.header, [row])
        raise DataError(
            f"{raw.path}: line {line}: rating {float(raw.rating[row])} is not a number in "
            f"[{low}, {high}] ({int(bad.sum())} such row(s)). Fix those rows, or set "
            f"data.rating_scale if this dataset uses another scale.")


def resolve_duplicates(raw: RawRatings, user: np.ndarray, item: np.ndarray, n_items: int,
                       policy: str) -> np.ndarray | None:
    """Rows to keep when some (user, movie) pair repeats, else ``None``."""
    if policy not in DUPLICATE_POLICIES:
        raise DataError(f"data.duplicates={policy!r}: expected one of {DUPLICATE_POLICIES}.")
    key = user.astype(np.int64) * n_items + item
    if len(key) < 2 or bool((key[1:] > key[:-1]).all()):
        return None  # sorted and strictly increasing: GroupLens files are
    order = np.lexsort((np.arange(len(key)), raw.timestamp, key))
    sk = key[order]
    repeat = sk[1:] == sk[:-1]
    if not repeat.any():
        return None
    if policy == "error":
        i = int(np.flatnonzero(repeat)[0])
        rows = sorted((int(order[i]), int(order[i + 1])))
        lines = line_numbers(raw.path, raw.header, rows)
        raise DataError(
            f"{raw.path}: lines {lines[0]} and {lines[1]} rate the same (user {raw.user[rows[0]]}, "
            f"movie {raw.item[rows[0]]}) pair ({int(repeat.sum())} repeated pair(s) in all). "
            "Remove the repeats, or set data.duplicates=keep_last to keep each pair's latest rating.")
    last = np.ones(len(sk), dtype=bool)
    last[:-1] = ~repeat
    log.warning("%s: %d repeated (user, movie) pairs; kept the latest rating of each",
                raw.path, int(repeat.sum()))
    return np.sort(order[last])


def assemble(name: str, raw: RawRatings, catalog: MoviesTable, rating_scale: tuple[float, float],
             duplicates: str = "error") -> Ratings:
    """Validate ``raw`` against ``catalog`` and build the dataset's tensors."""
    check_ratings(raw, rating_scale)
    item = dense_lookup(catalog.ids, raw.item)
    if (item < 0).any():  # rated but absent from the movies file: keep, without metadata
        extra = unique_ids(raw.item[item < 0])
        log.warning("%s: %d rated movie id(s) are not in the movies file (e.g. %d); "
                    "they are kept with no title and no genres", raw.path, len(extra), extra[0])
        catalog = MoviesTable(np.concatenate([catalog.ids, extra]),
                              catalog.titles + [f"movie {i}" for i in extra],
                              catalog.genres + [[NO_GENRE]] * len(extra), catalog.genre_names,
                              None if catalog.tags is None else catalog.tags + [[]] * len(extra))
        item = dense_lookup(catalog.ids, raw.item)
    user_ids = unique_ids(raw.user)
    user = dense_lookup(user_ids, raw.user)
    keep = resolve_duplicates(raw, user, item, len(catalog.ids), duplicates)
    rows = slice(None) if keep is None else keep
    rating = raw.rating[rows].astype(np.float32)
    return Ratings(
        name=name,
        user=torch.from_numpy(user[rows].astype(np.int32)),
        item=torch.from_numpy(item[rows].astype(np.int32)),
        rating=torch.from_numpy(rating),
        timestamp=torch.from_numpy(raw.timestamp[rows].astype(np.int64)),
        user_ids=torch.from_numpy(user_ids),
        movies=Catalog.from_genre_lists(torch.from_numpy(catalog.ids.astype(np.int64)),
                                        catalog.titles, catalog.genres, catalog.genre_names,
                                        catalog.tags),
        rating_range=(float(rating.min()), float(rating.max())) if len(rating) else rating_scale,
        folds={k: torch.from_numpy(v[rows]) for k, v in raw.folds.items()},
        people=None if raw.people is None else
        People.aligned(user_ids, raw.people.ids, raw.people.lists, raw.people.path),
    )
