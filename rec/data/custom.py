"""A user's own ratings file with a column mapping (SPEC §1.1, ``csv``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rec.data.build import MoviesTable, RawRatings, unique_ids
from rec.data.movielens import make_movies_table, split_genres
from rec.data.tables import check_header, read_columns, require_file
from rec.errors import DataError

ROLES = ("user", "item", "rating", "timestamp")


def parse_custom(path: Path, columns: dict[str, str], sep: str = ",", header: bool = True,
                 names: list[str] | None = None, movies: Path | None = None,
                 movie_columns: dict[str, str] | None = None) -> tuple[RawRatings, MoviesTable]:
    """Parse ``path``; ``columns`` maps user, item, rating (and optional timestamp) to its columns.

    Without a ``movies`` file every rated item forms the catalog, titled by its
    id and with no genres.
    """
    hint = "Set data.path to your ratings file, or data=ml-latest-small to use MovieLens."
    require_file(path, "ratings file", hint)
    missing = [r for r in ROLES[:3] if not columns.get(r)]
    if missing:
        raise DataError(f"data.columns must name the {', '.join(missing)} column(s) of {path}.")
    if not header and not names:
        raise DataError(f"{path}: data.header=false needs data.names, the list of its columns.")
    wanted = {columns[r]: kind for r, kind in zip(ROLES, ("int", "int", "float", "int"))
              if columns.get(r)}
    if header:
        check_header(path, sep, list(wanted), "Set data.columns to the names in its header.")
    elif missing := [c for c in wanted if c not in names]:
        raise DataError(f"data.columns names {missing}, which are not in data.names={names}.")
    cols = read_columns(path, wanted, sep, header=header, names=names)
    n = len(cols[columns["rating"]])
    ts = cols[columns["timestamp"]] if columns.get("timestamp") else np.zeros(n, dtype=np.int64)
    raw = RawRatings(cols[columns["user"]], cols[columns["item"]], cols[columns["rating"]], ts,
                     path, header=header)
    if movies is None:
        ids = unique_ids(raw.item)
        return raw, MoviesTable(ids, [f"item {i}" for i in ids], [[] for _ in ids])
    mc = {"item": "movieId", "title": "title", "genres": "genres", **(movie_columns or {})}
    require_file(movies, "movies file", "Set data.movies to its path, or to null to do without.")
    check_header(movies, ",", list(mc.values()), "Set data.movie_columns to the names in its header.")
    m = read_columns(movies, {mc["item"]: "int", mc["title"]: "str", mc["genres"]: "str"}, ",", True)
    return raw, make_movies_table(movies, m[mc["item"]], m[mc["title"]],
                                  [split_genres(g) for g in m[mc["genres"]]])
