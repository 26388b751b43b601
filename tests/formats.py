"""Writers of tiny datasets in GroupLens' exact file formats, independent of rec's code.

Each writer takes ratings as (user id, movie id, rating, timestamp) tuples and
movies as (movie id, title, [genres]) tuples and lays the files out as the
GroupLens zip does.
"""

from __future__ import annotations

from pathlib import Path

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _csv_title(title: str) -> str:
    return f'"{title}"' if "," in title or '"' in title else title


def write_csv_family(folder: Path, ratings, movies, newline: str = "\r\n") -> Path:
    """ml-latest-small / ml-20m / ml-25m / ml-32m: headers, CRLF, quoted titles with commas."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r:.1f},{t}" for u, m, r, t in ratings]
    (folder / "ratings.csv").write_bytes((newline.join(lines) + newline).encode())
    lines = ["movieId,title,genres"] + [
        f"{m},{_csv_title(title)},{'|'.join(g) if g else '(no genres listed)'}" for m, title, g in movies]
    (folder / "movies.csv").write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return folder


def write_dat_family(folder: Path, ratings, movies, encoding: str = "latin-1") -> Path:
    """ml-1m / ml-10m: ``::`` separated, no header; ml-1m is latin-1 with integer ratings."""
    folder.mkdir(parents=True, exist_ok=True)
    fmt = (lambda r: f"{r:g}")
    (folder / "ratings.dat").write_bytes("".join(
        f"{u}::{m}::{fmt(r)}::{t}\n" for u, m, r, t in ratings).encode("ascii"))
    (folder / "movies.dat").write_bytes("".join(
        f"{m}::{title}::{'|'.join(g)}\n" for m, title, g in movies).encode(encoding))
    return folder


def write_ml100k(folder: Path, ratings, movies, folds: dict[str, tuple[list, list]] | None = None) -> Path:
    """ml-100k: tab-separated u.data; pipe-separated latin-1 u.item with 19 flags; u.genre; folds."""
    folder.mkdir(parents=True, exist_ok=True)
    udata = lambda rows: "".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in rows).encode()
    (folder / "u.data").write_bytes(udata(ratings))
    lines = []
    for m, title, genres in movies:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        lines.append(f"{m}|{title}|01-Jan-1995||http://us.imdb.com/M/title-exact?{m}|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.genre").write_bytes("".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)).encode()
                                     + b"\n")
    for name, (base, test) in (folds or {}).items():
        (folder / f"{name}.base").write_bytes(udata(base))
        (folder / f"{name}.test").write_bytes(udata(test))
    return folder


def write_people(folder: Path, family: str, people) -> Path:
    """ml-100k's ``u.user`` (``id|age|gender|occupation|zip``) or ml-1m's ``users.dat``
    (``id::gender::age-code::occupation-code::zip``) from ``(id, age, gender, occupation)``."""
    if family == "100k":
        text = "".join(f"{u}|{a}|{g}|{o}|85711\n" for u, a, g, o in people)
        (folder / "u.user").write_bytes(text.encode("latin-1"))
    else:
        text = "".join(f"{u}::{g}::{a}::{o}::48067\n" for u, a, g, o in people)
        (folder / "users.dat").write_bytes(text.encode("latin-1"))
    return folder
