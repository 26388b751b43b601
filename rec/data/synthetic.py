"""A MovieLens-shaped dataset with a planted model (SPEC §1.1, ``synthetic``).

Ratings follow ``r = mu + b_m + c_n + u_m . v_n + noise``, rounded to half
stars and clipped, where movie factors scatter around the mean of their
genres' factors (the features rung's prior, SPEC §2.1).  User degrees follow a
power law with every user at ``min_user_degree`` or more; movie popularity is
log-normal with a soft cap, which gives ML-32M's long tail of rarely rated
movies and its plateau of blockbusters.  Generation is vectorized over chunks
of users (bounded memory) and deterministic for a seed.  The result is written
in ml-32m's file layout (``ratings.csv``, ``movies.csv``) with the planted
parameters beside it in ``planted.npz``, and is loaded like real data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rec.data.catalog import NO_GENRE
from rec.errors import ConfigError
from rec.system import gib, total_memory

log = logging.getLogger(__name__)

ML32M_SHAPE = (200_948, 87_585, 32_000_204)
BYTES_PER_RATING = 20
"""A loaded rating: int32 user and movie, float32 rating, int64 timestamp."""
# Share of ML movies carrying each genre; a movie with none is "(no genres listed)".
GENRE_SHARES = {
    "Drama": 0.39, "Comedy": 0.27, "Thriller": 0.13, "Romance": 0.12, "Action": 0.11,
    "Horror": 0.10, "Documentary": 0.08, "Crime": 0.09, "Adventure": 0.07, "Sci-Fi": 0.06,
    "Animation": 0.05, "Children": 0.05, "Mystery": 0.05, "Fantasy": 0.05, "War": 0.03,
    "Western": 0.02, "Musical": 0.02, "Film-Noir": 0.005, "IMAX": 0.003,
}
EPOCH_1996, EPOCH_2023 = 820_454_400, 1_685_577_600


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and planted model of a synthetic dataset."""

    scale: float = 1.0
    """Fraction of ML-32M's users, movies and ratings (1.0 = 200,948 / 87,585 / 32,000,204)."""
    seed: int = 0
    """Seed of every random draw: the same seed gives the same files."""
    rank: int = 10
    """Dimension of the planted user and movie factors."""
    noise: float = 0.75
    """Standard deviation of the Gaussian rating noise, before rounding."""
    mu: float = 3.55
    """Planted global mean."""
    user_bias_std: float = 0.35
    item_bias_std: float = 0.45
    user_factor_std: float = 0.35
    genre_factor_std: float = 0.45
    item_factor_std: float = 0.25
    """Spread of a movie's factors around the mean of its genres' factors."""
    min_user_degree: int = 20
    """Every user rates at least this many movies."""
    user_degree_exponent: float = 2.15
    """Power-law exponent of the user degree density."""
    popularity_sigma: float = 2.2
    """Log-normal spread of movie popularity (larger: longer tail)."""
    unrated_share: float = 0.036
    """Share of catalog movies nobody rates (ML-32M: 3,153 of 87,585): cold-start movies."""
    round_ratings: bool = True
    """Round to half stars, as MovieLens does."""
    clip: bool = True
    """Clip ratings to [0.5, 5.0]."""
    users: int | None = None
    """Override the number of users (default: scale x 200,948)."""
    movies: int | None = None
    """Override the number of movies (default: scale x 87,585)."""
    ratings: int | None = None
    """Override the number of ratings (default: scale x 32,000,204)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"data.{f.name}={v}: expected a finite number.")
        if self.scale <= 0:
            raise ConfigError(f"data.scale={self.scale}: expected a fraction of ML-32M's shape "
                              "above 0 (1.0 is ML-32M's 32 million ratings).")
        for name in ("users", "movies", "ratings"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"data.planted.{name}={getattr(self, name)}: expected a "
                                  "positive count (or leave it out).")

    def shape(self) -> tuple[int, int, int]:
        base = [max(1, round(x * self.scale)) for x in ML32M_SHAPE]
        n_users, n_items, n_ratings = [o if o is not None else b for o, b in
                                       zip((self.users, self.movies, self.ratings), base)]
        rateable = n_items * (1 - self.unrated_share)
        if n_ratings < n_users * self.min_user_degree or n_ratings > n_users * rateable // 2:
            raise ConfigError(
                f"synthetic: {n_ratings} ratings cannot give {n_users} users at least "
                f"{self.min_user_degree} ratings each among {n_items} movies (at most half "
                "of all pairs); change data.scale, data.ratings or data.min_user_degree.")
        memory = total_memory()
        if memory and n_ratings * BYTES_PER_RATING > memory:
            raise ConfigError(
                f"synthetic: {n_ratings:,} ratings need about {gib(n_ratings * BYTES_PER_RATING)}"
                f" of memory to load, and this machine has {gib(memory)}; lower data.scale "
                "(1.0 is ML-32M's 32 million ratings).")
        return n_users, n_items, n_ratings

    def folder_name(self) -> str:
        """``scale-<s>-seed-<n>``, plus a hash of any other non-default setting."""
        changed = {k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("scale", "seed") and v != getattr(SyntheticSpec, k)}
        tag = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        return f"scale-{self.scale:g}-seed-{self.seed}" + (f"-{tag}" if changed else "")

    def rating_scale(self) -> tuple[float, float]:
        return (0.5, 5.0) if self.clip else (-1e9, 1e9)


def _genres(rng: np.random.Generator, n_items: int) -> tuple[list[str], np.ndarray]:
    names = [NO_GENRE] + sorted(GENRE_SHARES)
    shares = np.array([0.0] + [GENRE_SHARES[g] for g in names[1:]])
    flags = rng.random((n_items, len(names))) < shares
    flags[:, 0] = ~flags[:, 1:].any(axis=1)
    return names, flags


def _user_degrees(rng: np.random.Generator, spec: SyntheticSpec, n_users: int, n_items: int,
                  total: int) -> np.ndarray:
    """Power-law degrees, at least ``min_user_degree``, at most half the movies, summing to ``total``."""
    lo, hi = spec.min_user_degree, max(spec.min_user_degree, n_items // 2)
    excess = lo * (1 - rng.random(n_users)) ** (-1 / (spec.user_degree_exponent - 1)) - lo
    a, b = 0.0, 2.0 * total / max(excess.sum(), 1e-12)
    for _ in range(60):  # the stretch s with sum(min(lo + s * excess, hi)) = total
        s = (a + b) / 2
        a, b = (s, b) if np.minimum(lo + s * excess, hi).sum() < total else (a, s)
    deg = np.minimum(lo + np.floor(a * excess), hi).astype(np.int64)
    while (gap := total - int(deg.sum())) != 0:  # hand out the rounding remainder
        room = np.flatnonzero(deg < hi) if gap > 0 else np.flatnonzero(deg > lo)
        pick = rng.choice(room, size=min(abs(gap), len(room)), replace=False)
        deg[pick] += np.sign(gap)
    return deg


def _popularity(rng: np.random.Generator, spec: SyntheticSpec, n_items: int):
    """Cumulative popularity, and the movies anyone may rate (the rest stay catalog-only)."""
    z = rng.standard_normal(n_items)
    s = spec.popularity_sigma
    w = np.exp(s * z) / (1 + np.exp(s * (z - 3.54)))  # soft cap near the 99.98th percentile
    rateable = rng.random(n_items) >= spec.unrated_share
    if not rateable.any():
        rateable[:] = True
    w[~rateable] = 0
    return np.cumsum(w / w.sum()), np.flatnonzero(rateable)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a stable sort merges the sorted head with new keys fast;
    ``np.unique``'s hash path is far slower here)."""
    keys.sort(kind="stable")
    keep = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def _sample_pairs(rng: np.random.Generator, deg: np.ndarray, cdf: np.ndarray,
                  rateable: np.ndarray, n_items: int, first_user: int) -> np.ndarray:
    """Distinct (user, movie) keys ``user * n_items + movie``, ``deg[i]`` for user ``first_user + i``."""
    users = np.arange(first_user, first_user + len(deg), dtype=np.int64)
    keys = np.empty(0, dtype=np.int64)
    need = deg.copy()
    for attempt in range(64):
        u = np.repeat(users, need)
        if attempt < 3:
            items = np.minimum(np.searchsorted(cdf, rng.random(len(u))), n_items - 1)
        else:  # heavy users exhaust the popular movies: fill them uniformly
            items = rateable[rng.integers(0, len(rateable), len(u))]
        keys = _sorted_unique(np.concatenate([keys, u * n_items + items]))
        need = deg - np.bincount(keys // n_items - first_user, minlength=len(deg))
        if not need.any():
            return keys
    raise RuntimeError("synthetic: could not draw distinct movies for every user")


@dataclass
class Planted:
    """The planted parameters, indexed like the written files (user i has userId i+1)."""

    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    genre_factors: np.ndarray
    genre_flags: np.ndarray
    noise: float


def _planted(rng: np.random.Generator, spec: SyntheticSpec, n_users: int, n_items: int,
             flags: np.ndarray) -> Planted:
    k = spec.rank
    w = rng.normal(0, spec.genre_factor_std, (flags.shape[1], k))
    prior = (flags @ w) / flags.sum(1, keepdims=True)
    return Planted(
        mu=spec.mu,
        user_bias=rng.normal(0, spec.user_bias_std, n_users),
        item_bias=rng.normal(0, spec.item_bias_std, n_items),
        user_factors=rng.normal(0, spec.user_factor_std, (n_users, k)),
        item_factors=prior + rng.normal(0, spec.item_factor_std, (n_items, k)),
        genre_factors=w, genre_flags=flags, noise=spec.noise)


def _ratings(rng: np.random.Generator, spec: SyntheticSpec, p: Planted, user: np.ndarray,
             item: np.ndarray) -> np.ndarray:
    r = (p.mu + p.user_bias[user] + p.item_bias[item]
         + np.einsum("ij,ij->i", p.user_factors[user], p.item_factors[item])
         + rng.normal(0, spec.noise, len(user)))
    if spec.round_ratings:
        r = np.round(r * 2) / 2
    return np.clip(r, 0.5, 5.0) if spec.clip else r


def _rating_column(r: np.ndarray, rounded: bool) -> pa.Array:
    if not rounded:
        return pa.array(np.round(r, 4))
    halves = np.round(r * 2).astype(np.int32)
    lo = int(halves.min())
    labels = [f"{h / 2:.1f}" for h in range(lo, int(halves.max()) + 1)]
    return pa.DictionaryArray.from_arrays(pa.array(halves - lo), pa.array(labels))


def generate(spec: SyntheticSpec, folder: Path, chunk_ratings: int = 4_000_000) -> Path:
    """Write the dataset described by ``spec`` to ``folder`` (atomically) and return it."""
    n_users, n_items, n_ratings = spec.shape()
    start = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        seeds = np.random.SeedSequence(spec.seed)
        rng = np.random.default_rng(seeds.spawn(1)[0])
        genre_names, flags = _genres(rng, n_items)
        planted = _planted(rng, spec, n_users, n_items, flags)
        cdf, rateable = _popularity(rng, spec, n_items)
        deg = _user_degrees(rng, spec, n_users, len(rateable), n_ratings)
        movie_ids = np.sort(rng.choice(np.arange(1, 4 * n_items + 1), n_items, replace=False))
        first_time = rng.integers(EPOCH_1996, EPOCH_2023, n_users)
        span = np.minimum(rng.exponential(365 * 86400, n_users), EPOCH_2023 + 5e7 - first_time)
        _write_movies(work / "movies.csv", movie_ids, genre_names, flags, rng)
        bounds = np.searchsorted(np.cumsum(deg), np.arange(chunk_ratings, n_ratings, chunk_ratings))
        edges = [0, *np.unique(bounds).tolist(), n_users]
        with open(work / "ratings.csv", "wb") as out:
            out.write(b"userId,movieId,rating,timestamp\n")
            for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
                crng = np.random.default_rng(seeds.spawn(1)[0])
                keys = _sample_pairs(crng, deg[a:b], cdf, rateable, n_items, a)
                user, item = keys // n_items, keys % n_items
                r = _ratings(crng, spec, planted, user, item)
                ts = first_time[user] + (crng.random(len(user)) * span[user]).astype(np.int64)
                table = pa.table({"userId": user + 1, "movieId": movie_ids[item],
                                  "rating": _rating_column(r, spec.round_ratings), "timestamp": ts})
                pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False,
                                                                quoting_style="none"))
                log.debug("synthetic chunk %d: users %d-%d", i, a, b)
        np.savez(work / "planted.npz", movie_ids=movie_ids, user_ids=np.arange(1, n_users + 1),
                 genre_names=np.array(genre_names), **dataclasses.asdict(planted))
        (work / "README.txt").write_text(
            "Synthetic MovieLens-shaped data written by rec (rec/data/synthetic.py).\n"
            f"spec: {json.dumps(dataclasses.asdict(spec))}\n"
            f"users {n_users}, movies {n_items}, ratings {n_ratings}\n"
            "planted.npz holds the planted model; user i has userId i+1, movies follow movies.csv.\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("generated %s (%d ratings) in %.1f s", folder, n_ratings, time.perf_counter() - start)
    return folder


def _write_movies(path: Path, movie_ids: np.ndarray, genre_names: list[str], flags: np.ndarray,
                  rng: np.random.Generator) -> None:
    years = rng.integers(1915, 2024, len(movie_ids))
    genres = ["|".join(genre_names[j] for j in np.flatnonzero(row)) for row in flags]
    titles = [f"Synthetic Movie {m} ({y})" for m, y in zip(movie_ids, years)]
    with open(path, "wb") as out:
        out.write(b"movieId,title,genres\n")
        pacsv.write_csv(pa.table({"movieId": movie_ids, "title": titles, "genres": genres}), out,
                        pacsv.WriteOptions(include_header=False, quoting_style="none"))


def load_planted(folder: Path) -> Planted:
    """The planted model saved beside a generated dataset."""
    with np.load(folder / "planted.npz") as z:
        return Planted(**{f.name: (z[f.name].item() if z[f.name].ndim == 0 else z[f.name])
                          for f in dataclasses.fields(Planted)})
