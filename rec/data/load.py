"""Find, fetch, parse and cache a dataset (SPEC §1.1).

``load_dataset(DataConfig(name=...))`` is the one entry point: it resolves the
dataset's folder under the data root (downloading a missing GroupLens dataset,
generating a missing synthetic one), then returns the binary cache when it is
intact and newer than the source files, else parses the files and rewrites
the cache.  A cache that is corrupt or stale is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import torch

from rec import bundle
from rec.data.build import MoviesTable, RawRatings, assemble
from rec.data.catalog import Catalog
from rec.data.custom import parse_custom
from rec.data.download import GROUPLENS_URL, download, offline_hint
from rec.data.movielens import LAYOUTS, Layout, parse, source_files
from rec.data.people import People
from rec.data.ratings import Ratings
from rec.data.synthetic import SyntheticSpec, generate
from rec.errors import CacheError, ConfigError, DataError
from rec.mapping import from_mapping

log = logging.getLogger(__name__)
CACHE_VERSION = 3
DATASETS = (*LAYOUTS, "synthetic", "csv")


@dataclass
class DataConfig:
    """Which dataset to load and where (``conf/data/*.yaml``)."""

    name: str = "ml-latest-small"
    """A GroupLens name (``ml-latest-small``, ``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-20m``,
    ``ml-25m``, ``ml-32m``, ``ml-latest``), ``synthetic`` or ``csv``."""
    root: str = "data"
    """Data root: datasets live in ``<root>/<name>/``."""
    cache_dir: str | None = None
    """Where binary caches go; default ``$REC_CACHE_DIR``, else ``~/.cache/rec`` (never inside the data root,
    which may be shared or read-only)."""
    download: bool = True
    """Download a missing GroupLens dataset."""
    url: str = GROUPLENS_URL
    """Base URL of the GroupLens downloads."""
    duplicates: str = "error"
    """A repeated (user, movie) pair: ``error``, or ``keep_last`` to keep the latest rating."""
    rating_scale: tuple[float, float] = (0.5, 5.0)
    """Valid ratings; anything outside, or NaN, is an error."""
    scale: float = 1.0
    """``synthetic``: fraction of ML-32M's shape."""
    seed: int = 0
    """``synthetic``: generator seed."""
    planted: dict | None = None
    """``synthetic``: other :class:`SyntheticSpec` settings (``rank``, ``noise`` ...), e.g.
    ``data.planted={rank: 5}`` or ``+data.planted.users=2000000``."""
    path: str | None = None
    """``csv``: the ratings file."""
    columns: dict = field(default_factory=lambda: {
        "user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"})
    """``csv``: which column holds user, item, rating and (optional) timestamp."""
    sep: str = ","
    """``csv``: field separator."""
    header: bool = True
    """``csv``: whether the first line names the columns."""
    names: list | None = None
    """``csv``: column names of a file without a header line."""
    movies: str | None = None
    """``csv``: optional movies file (movieId,title,genres)."""
    movie_columns: dict | None = None
    """``csv``: column names of the movies file when they differ."""

    def __post_init__(self) -> None:
        for kind, names in ONLY_FOR.items():
            if self.name == kind:
                continue
            for key in names:
                if getattr(self, key) != _DEFAULTS[key]:
                    raise ConfigError(f"data.{key}={getattr(self, key)}: only data={kind} uses it, "
                                      f"and {self.name} would ignore it; drop it (or use data={kind}).")

    @classmethod
    def from_mapping(cls, values, **overrides) -> "DataConfig":
        """Build from a plain mapping (``data:`` of the config); unknown keys are refused."""
        return from_mapping(cls, values, "data", **overrides)

    def synthetic_spec(self) -> SyntheticSpec:
        try:
            return SyntheticSpec(scale=self.scale, seed=self.seed, **(self.planted or {}))
        except TypeError as e:
            raise ConfigError(f"data.planted: {e}") from e


ONLY_FOR = {"synthetic": ("scale", "seed", "planted"),
            "csv": ("path", "columns", "sep", "header", "names", "movies", "movie_columns")}
"""Options that one kind of dataset reads and every other would ignore (so they are refused)."""
_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
             for f in fields(DataConfig)}


@dataclass
class Source:
    """A resolved dataset: display name, files to watch, and how to parse them."""

    name: str
    folder: Path
    files: list[Path]
    parse: Callable[[], tuple[RawRatings, MoviesTable]]
    rating_scale: tuple[float, float]
    fold_hint: str = ""


def _grouplens(cfg: DataConfig, root: Path) -> Source:
    layout: Layout = LAYOUTS[cfg.name]
    folder = root / cfg.name
    if not folder.is_dir() and (root / layout.archive_folder).is_dir():
        folder = root / layout.archive_folder  # extracted by hand under the zip's own name
    url = f"{cfg.url.rstrip('/')}/{cfg.name}.zip"
    hint = offline_hint(cfg.name, folder, url, [layout.ratings_file, layout.movies_file])
    if (folder / layout.ratings_file).is_dir():
        raise DataError(f"{folder / layout.ratings_file}: is a folder, not the ratings file. "
                        f"{hint}")
    if not (folder / layout.ratings_file).is_file():
        if folder.is_dir() and any(folder.iterdir()):
            raise DataError(f"{folder / layout.ratings_file}: missing ({layout.ratings_file} is not "
                            f"among the files in {folder}). {hint}")
        if not cfg.download:
            raise DataError(f"{cfg.name} is not in {folder} and data.download is false. {hint}")
        download(cfg.name, layout, folder, cfg.url)
    folds = (f"The official folds ({', '.join(layout.folds)}) are files beside "
             f"{layout.ratings_file} in {folder}; they come with GroupLens' {cfg.name}.zip ({url})."
             if layout.folds else "")
    return Source(cfg.name, folder, source_files(layout, folder),
                  lambda: parse(layout, folder, hint), cfg.rating_scale, folds)


def _synthetic(cfg: DataConfig, root: Path) -> Source:
    spec = cfg.synthetic_spec()
    folder = root / "synthetic" / spec.folder_name()
    if not ((folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file()):
        spec.shape()  # an impossible shape is refused before anything is written
        log.info("generating synthetic data (scale %g, seed %d) in %s", spec.scale, spec.seed, folder)
        generate(spec, folder)
    layout = LAYOUTS["ml-32m"]
    return Source(f"synthetic-{spec.folder_name()}", folder, source_files(layout, folder),
                  lambda: parse(layout, folder, "Delete the folder to regenerate it."),
                  spec.rating_scale())


def _custom(cfg: DataConfig, root: Path) -> Source:
    if not cfg.path:
        raise DataError("data=csv needs data.path=<your ratings file> and data.columns mapping "
                        "user, item, rating (and optionally timestamp) to its column names.")
    path = Path(cfg.path).expanduser()
    movies = Path(cfg.movies).expanduser() if cfg.movies else None
    files = [path] + ([movies] if movies else [])
    return Source(f"csv-{path.stem}", path.parent, files,
                  lambda: parse_custom(path, cfg.columns, cfg.sep, cfg.header, cfg.names, movies,
                                       cfg.movie_columns), cfg.rating_scale)


def resolve(cfg: DataConfig) -> Source:
    """Locate (download, generate) the dataset ``cfg`` names."""
    root = Path(cfg.root).expanduser()
    if cfg.name in LAYOUTS:
        return _grouplens(cfg, root)
    if cfg.name == "synthetic":
        return _synthetic(cfg, root)
    if cfg.name == "csv":
        return _custom(cfg, root)
    raise ConfigError(f"data.name={cfg.name!r} is not a dataset rec knows; choose one of "
                      f"{', '.join(DATASETS)}.")


def default_cache_dir() -> Path:
    if os.environ.get("REC_CACHE_DIR"):
        return Path(os.environ["REC_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "rec"


def cache_path(cfg: DataConfig, source: Source) -> Path:
    """Cache file of ``source``; its name hashes the folder and every parse option."""
    folder = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    options = [str(source.folder.resolve()), [str(f) for f in source.files], cfg.duplicates,
               list(source.rating_scale), cfg.columns, cfg.sep, cfg.header, cfg.names,
               cfg.movie_columns, CACHE_VERSION]
    digest = hashlib.sha1(json.dumps(options, default=str).encode()).hexdigest()[:12]
    return folder / f"{source.name}-{digest}.bin"


def _stamp(files: list[Path]) -> list:
    """Each source file's name, size and SHA-256: the cache is fresh only for these contents
    (a file edited in place, or replaced by another of the same size and time, is seen)."""
    out = []
    for f in files:
        with open(f, "rb") as handle:
            out.append([f.name, f.stat().st_size, hashlib.file_digest(handle, "sha256").hexdigest()])
    return out


def _digest(stamp: list, cfg: DataConfig, source: Source) -> str:
    """The dataset's identity: its files' contents and every option they are parsed with."""
    options = [[s[1:] for s in stamp], cfg.duplicates, list(source.rating_scale), cfg.columns,
               cfg.sep, cfg.header, cfg.names, cfg.movie_columns, CACHE_VERSION]
    return hashlib.sha256(json.dumps(options, default=str).encode()).hexdigest()[:32]


def _to_cache(path: Path, r: Ratings, stamp: list) -> None:
    m = r.movies
    arrays = {k: getattr(r, k).numpy() for k in ("user", "item", "rating", "timestamp", "user_ids")}
    arrays.update(item_ids=m.ids.numpy(), genre_offsets=m.genre_offsets.numpy(),
                  genre_index=m.genre_index.numpy())
    if m.tag_index is not None:
        arrays.update(tag_offsets=m.tag_offsets.numpy(), tag_index=m.tag_index.numpy())
    arrays.update({f"fold:{k}": v.numpy() for k, v in r.folds.items()})
    if r.people is not None:
        arrays.update(person_offsets=r.people.offsets.numpy(), person_index=r.people.index.numpy())
    meta = {"version": CACHE_VERSION, "sources": stamp, "name": r.name, "titles": m.titles,
            "genre_names": m.genre_names, "tag_names": m.tag_names,
            "person_names": None if r.people is None else r.people.names,
            "rating_range": list(r.rating_range),
            "fold_hint": r.fold_hint, "digest": r.digest}
    bundle.write_bundle(path, arrays, meta)


PER_RATING = ("user", "item", "rating", "timestamp")
"""The cache's arrays with one entry per rating (with the ``fold:*`` ones)."""


def _check_fresh(path: Path, stamp: list) -> dict:
    """The cache's header, when it was written by this version from these source files."""
    header = bundle.read_header(path)
    meta = header["meta"]
    if meta.get("version") != CACHE_VERSION or meta.get("sources") != stamp:
        raise CacheError(f"{path}: the source files changed since it was written")
    return header


def _catalog(t: dict, meta: dict) -> Catalog:
    return Catalog(t.pop("item_ids"), meta["titles"], meta["genre_names"], t.pop("genre_offsets"),
                   t.pop("genre_index"), meta.get("tag_names", []), t.pop("tag_offsets", None),
                   t.pop("tag_index", None))


def _from_cache(path: Path, stamp: list, timestamps: bool) -> Ratings:
    _check_fresh(path, stamp)
    arrays, meta = bundle.read_bundle(path, skip=() if timestamps else ("timestamp",))
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    t.setdefault("timestamp", None)
    n = len(t["rating"])
    if not (len(t["user"]) == len(t["item"]) == n) or (timestamps and len(t["timestamp"]) != n):
        raise CacheError(f"{path}: rating arrays differ in length")
    movies = _catalog(t, meta)
    people = None if meta.get("person_names") is None else \
        People(meta["person_names"], t.pop("person_offsets"), t.pop("person_index"))
    return Ratings(name=meta["name"], movies=movies, rating_range=tuple(meta["rating_range"]),
                   people=people,
                   fold_hint=meta.get("fold_hint", ""), digest=meta["digest"],
                   folds={k[5:]: v for k, v in t.items() if k.startswith("fold:")},
                   **{k: v for k, v in t.items() if not k.startswith("fold:")})


@dataclass(frozen=True)
class CachedDataset:
    """A dataset's valid cache file, with what it holds besides the per-rating arrays."""

    path: Path
    name: str
    n_ratings: int
    movies: Catalog
    user_ids: torch.Tensor
    rating_range: tuple[float, float]
    digest: str
    """The dataset's content identity (:attr:`Ratings.digest`)."""


def open_cache(cfg: DataConfig) -> CachedDataset:
    """The cache of the dataset ``cfg``, its catalog and id maps read, its per-rating arrays
    left on disk for :func:`rec.bundle.read_chunks`; :class:`CacheError` when the cache is
    missing, stale or corrupt (:func:`load_dataset` writes it)."""
    source = resolve(cfg)
    path = cache_path(cfg, source)
    if not path.is_file():
        raise CacheError(f"{path}: no cache of {source.name} yet")
    header = _check_fresh(path, _stamp([f for f in source.files if f.is_file()]))
    skip = tuple(s["name"] for s in header["arrays"]
                 if s["name"] in PER_RATING or s["name"].startswith("fold:"))
    arrays, meta = bundle.read_bundle(path, skip=skip)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    n = next(s["shape"][0] for s in header["arrays"] if s["name"] == "rating")
    return CachedDataset(path, meta["name"], n, _catalog(t, meta), t["user_ids"],
                         tuple(meta["rating_range"]), meta["digest"])


def load_dataset(cfg: DataConfig | dict, timestamps: bool = True) -> Ratings:
    """The ratings of the dataset ``cfg`` describes, from the cache when it is valid.

    ``timestamps=False`` leaves ``Ratings.timestamp`` as ``None`` (only the
    temporal split needs them), which saves 8 bytes per rating.
    """
    if not isinstance(cfg, DataConfig):
        cfg = DataConfig.from_mapping(cfg)
    source = resolve(cfg)
    stamp = _stamp([f for f in source.files if f.is_file()])
    path = cache_path(cfg, source)
    if path.is_file():
        try:
            return _from_cache(path, stamp, timestamps)
        except CacheError as e:
            log.warning("ignoring the cache (%s); rebuilding it from %s", e, source.folder)
    raw, catalog = source.parse()
    ratings = replace(assemble(source.name, raw, catalog, source.rating_scale, cfg.duplicates),
                      fold_hint=source.fold_hint, digest=_digest(stamp, cfg, source))
    if len(ratings) == 0:
        raise DataError(f"{raw.path}: holds no ratings.")
    try:
        _to_cache(path, ratings, stamp)
    except OSError as e:
        log.warning("could not write the cache %s (%s); the next load parses again", path, e)
    return ratings if timestamps else replace(ratings, timestamp=None)


def counts_report(r: Ratings) -> str:
    """The counts a user checks first, one per line (``python -m rec.data``)."""
    s = r.summary()
    lines = [f"dataset        {s['dataset']}",
             f"ratings        {s['ratings']:,}",
             f"users          {s['users']:,}",
             f"movies         {s['movies']:,} ({s['movies_rated']:,} rated)",
             f"genres         {s['genres']}",
             f"ratings range  {s['rating_min']:g} to {s['rating_max']:g} (mean {s['rating_mean']:.4f})",
             f"density        {s['density']:.4%}"]
    return "\n".join(lines)

