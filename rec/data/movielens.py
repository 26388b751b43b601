"""Parsers for the GroupLens MovieLens file formats (SPEC §1.1).

Three families: the CSV family (ml-latest-small, ml-latest, ml-20m, ml-25m,
ml-32m: ``ratings.csv`` + ``movies.csv`` with headers), the ``::`` family
(ml-1m, ml-10m: ``ratings.dat`` + ``movies.dat``) and ml-100k (tab-separated
``u.data``; pipe-separated latin-1 ``u.item`` with 19 genre flags, plus the
official ``u1``-``u5``, ``ua``, ``ub`` folds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rec.data.build import MoviesTable, PeopleFile, RawRatings, dense_lookup
from rec.data.people import ML1M_OCCUPATIONS, attribute_list
from rec.data.tables import check_header, read_columns, read_text, require_file
from rec.errors import DataError

RATING_COLUMNS = {"user": "int", "item": "int", "rating": "float", "timestamp": "int"}
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]
ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
TAGS_FILE = "tags.csv"
"""The CSV family's tag applications (userId,movieId,tag,timestamp), read where present."""
PEOPLE_FILES = {"100k": "u.user", "dat": "users.dat"}
"""Where a family describes its people (ml-1m; ml-10m has no such file), read where present."""


@dataclass(frozen=True)
class Layout:
    """Where a GroupLens dataset keeps its files."""

    family: str
    """``csv``, ``dat`` or ``100k``."""
    archive_folder: str
    """Top folder inside GroupLens' zip (ml-10m's is ``ml-10M100K``)."""
    ratings_file: str
    movies_file: str

    @property
    def folds(self) -> tuple[str, ...]:
        """The dataset's official folds (files ``<fold>.base``, ``<fold>.test``), if any."""
        return ML100K_FOLDS if self.family == "100k" else ()


LAYOUTS = {
    **{n: Layout("csv", n, "ratings.csv", "movies.csv")
       for n in ("ml-latest-small", "ml-latest", "ml-20m", "ml-25m", "ml-32m")},
    "ml-1m": Layout("dat", "ml-1m", "ratings.dat", "movies.dat"),
    "ml-10m": Layout("dat", "ml-10M100K", "ratings.dat", "movies.dat"),
    "ml-100k": Layout("100k", "ml-100k", "u.data", "u.item"),
}


def source_files(layout: Layout, folder: Path) -> list[Path]:
    """The files a parse reads (their sizes and times key the cache)."""
    files = [folder / layout.ratings_file, folder / layout.movies_file]
    if layout.family == "csv" and (folder / TAGS_FILE).is_file():
        files.append(folder / TAGS_FILE)
    people = PEOPLE_FILES.get(layout.family)
    if people and (folder / people).is_file():
        files.append(folder / people)
    if layout.family == "100k":
        files += [folder / "u.genre"] + [folder / f"{f}.{s}" for f in ML100K_FOLDS
                                          for s in ("base", "test")]
    return [f for f in files if f.is_file()] if layout.family == "100k" else files


def parse(layout: Layout, folder: Path, hint: str) -> tuple[RawRatings, MoviesTable]:
    """Parse the dataset in ``folder``; ``hint`` says how to get missing files."""
    for name in (layout.ratings_file, layout.movies_file):
        require_file(folder / name, f"{layout.family} file {name}", hint)
    return {"csv": _parse_csv_family, "dat": _parse_dat_family,
            "100k": _parse_100k}[layout.family](layout, folder)


def split_genres(field: str) -> list[str]:
    return [g for g in field.split("|") if g]


def _parse_csv_family(layout: Layout, folder: Path) -> tuple[RawRatings, MoviesTable]:
    path = folder / layout.ratings_file
    hint = "GroupLens' ratings.csv has the header userId,movieId,rating,timestamp."
    check_header(path, ",", ["userId", "movieId", "rating", "timestamp"], hint)
    cols = read_columns(path, {"userId": "int", "movieId": "int", "rating": "float",
                               "timestamp": "int"}, ",", header=True)
    raw = RawRatings(cols["userId"], cols["movieId"], cols["rating"], cols["timestamp"], path)
    movies = folder / layout.movies_file
    check_header(movies, ",", ["movieId", "title", "genres"],
                 "GroupLens' movies.csv has the header movieId,title,genres.")
    m = read_columns(movies, {"movieId": "int", "title": "str", "genres": "str"}, ",", header=True)
    genres = [split_genres(g) for g in m["genres"]]
    tags = _read_tags(folder / TAGS_FILE, m["movieId"])
    return raw, make_movies_table(movies, m["movieId"], m["title"], genres, tags=tags)


def _read_tags(path: Path, movie_ids: np.ndarray) -> list[list[str]] | None:
    """Each movie's tags from ``tags.csv`` (``None`` without the file); a tag of a movie that
    is not in the movies file is dropped."""
    if not path.is_file():
        return None
    check_header(path, ",", ["userId", "movieId", "tag", "timestamp"],
                 "GroupLens' tags.csv has the header userId,movieId,tag,timestamp.")
    t = read_columns(path, {"movieId": "int", "tag": "str"}, ",", header=True)
    rows = dense_lookup(movie_ids.astype(np.int64), t["movieId"].astype(np.int64))
    out: list[list[str]] = [[] for _ in range(len(movie_ids))]
    for row, tag in zip(rows.tolist(), t["tag"]):
        if row >= 0:
            out[row].append(tag)
    return out


def _dat_bytes(path: Path) -> bytes:
    """A ``::``-separated file re-encoded as UTF-8 with tab separators, for pyarrow."""
    if path.stat().st_size > 1 << 26:  # ratings.dat: ASCII digits, skip the decode
        return path.read_bytes().replace(b"::", b"\t")
    return read_text(path).replace("::", "\t").encode()


def _parse_dat_family(layout: Layout, folder: Path) -> tuple[RawRatings, MoviesTable]:
    path = folder / layout.ratings_file
    names = ["user", "item", "rating", "timestamp"]
    cols = read_columns(path, RATING_COLUMNS, "\t", header=False, names=names,
                        data=_dat_bytes(path), quoting=False, file_delimiter="::")
    raw = RawRatings(cols["user"], cols["item"], cols["rating"], cols["timestamp"], path,
                     header=False, people=_people_dat(folder / PEOPLE_FILES["dat"]))
    movies = folder / layout.movies_file
    m = read_columns(movies, {"item": "int", "title": "str", "genres": "str"}, "\t", header=False,
                     names=["item", "title", "genres"], data=_dat_bytes(movies), quoting=False,
                     file_delimiter="::")
    genres = [split_genres(g) for g in m["genres"]]
    return raw, make_movies_table(movies, m["item"], m["title"], genres)


def _read_udata(path: Path) -> dict[str, np.ndarray]:
    return read_columns(path, RATING_COLUMNS, "\t", header=False,
                        names=["user", "item", "rating", "timestamp"], quoting=False)


def _parse_100k(layout: Layout, folder: Path) -> tuple[RawRatings, MoviesTable]:
    path = folder / layout.ratings_file
    cols = _read_udata(path)
    raw = RawRatings(cols["user"], cols["item"], cols["rating"], cols["timestamp"], path,
                     header=False, folds=_folds_100k(folder, cols),
                     people=_people_100k(folder / PEOPLE_FILES["100k"]))
    genre_names = _genres_100k(folder / "u.genre")
    movies = folder / layout.movies_file
    names = ["item", "title", "release", "video", "url"] + [f"g{i}" for i in range(len(genre_names))]
    text = read_text(movies, "latin-1").encode()
    m = read_columns(movies, {"item": "int", "title": "str",
                              **{f"g{i}": "int" for i in range(len(genre_names))}},
                     "|", header=False, names=names, data=text, quoting=False)
    flags = np.stack([m[f"g{i}"] for i in range(len(genre_names))], axis=1).astype(bool)
    genres = [[genre_names[j] for j in np.flatnonzero(row)] for row in flags]
    return raw, make_movies_table(movies, m["item"], m["title"], genres, genre_names)


def _people_100k(path: Path) -> PeopleFile | None:
    """ml-100k's ``u.user`` (``id|age|gender|occupation|zip``), where present."""
    if not path.is_file():
        return None
    c = read_columns(path, {"user": "int", "age": "int", "gender": "str", "occupation": "str"},
                     "|", header=False, names=["user", "age", "gender", "occupation", "zip"],
                     data=read_text(path, "latin-1").encode(), quoting=False)
    return PeopleFile(c["user"].astype(np.int64), [attribute_list(g, a, o) for a, g, o in
                                                   zip(c["age"].tolist(), c["gender"], c["occupation"])],
                      path)


def _people_dat(path: Path) -> PeopleFile | None:
    """ml-1m's ``users.dat`` (``id::gender::age::occupation::zip``, ages and occupations as
    codes), where present."""
    if not path.is_file():
        return None
    c = read_columns(path, {"user": "int", "gender": "str", "age": "int", "occupation": "int"},
                     "\t", header=False, names=["user", "gender", "age", "occupation", "zip"],
                     data=_dat_bytes(path), quoting=False, file_delimiter="::")
    codes = c["occupation"].tolist()
    bad = [o for o in codes if not 0 <= o < len(ML1M_OCCUPATIONS)]
    if bad:
        raise DataError(f"{path}: occupation code {bad[0]} is not one of ml-1m's 0-20.")
    return PeopleFile(c["user"].astype(np.int64),
                      [attribute_list(g, a, ML1M_OCCUPATIONS[o])
                       for g, a, o in zip(c["gender"], c["age"].tolist(), codes)], path)


def _genres_100k(path: Path) -> list[str]:
    if not path.is_file():
        return list(ML100K_GENRES)
    pairs = [line.rsplit("|", 1) for line in read_text(path, "latin-1").splitlines() if line.strip()]
    return [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]


def _folds_100k(folder: Path, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-rating membership of each official fold: 0 base, 1 test, -1 neither."""
    scale = int(cols["item"].max()) + 1
    key = cols["user"] * scale + cols["item"]
    folds = {}
    for fold in ML100K_FOLDS:
        base, test = folder / f"{fold}.base", folder / f"{fold}.test"
        if not (base.is_file() and test.is_file()):
            continue
        member = np.full(len(key), -1, dtype=np.int8)
        for value, part in ((0, base), (1, test)):
            c = _read_udata(part)
            rows = dense_lookup(key, c["user"] * scale + c["item"])
            if (rows < 0).any():
                raise DataError(f"{part}: {int((rows < 0).sum())} rating(s) are not in "
                                f"{folder / 'u.data'}; the fold files do not match u.data.")
            member[rows] = value
        folds[fold] = member
    return folds


def make_movies_table(path: Path, ids: np.ndarray, titles: list[str], genres: list[list[str]],
                      genre_names: list[str] | None = None,
                      tags: list[list[str]] | None = None) -> MoviesTable:
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1][0]
        raise DataError(f"{path}: movie id {dup} appears more than once; each movie must be "
                        "listed once.")
    return MoviesTable(ids.astype(np.int64), titles, genres, genre_names, tags)
