"""One process's part of a split dataset, read from the binary cache block by block.

In a job of P processes (torchrun) no process loads the whole dataset.  One rank per machine
first makes sure that the cache (SPEC §1.1) and the split's *labels file* exist: one byte per rating,
train, validation, test or neither, computed once by the very code a one-process run
uses (the functions of :mod:`rec.data.splits` that :meth:`~rec.data.splits.SplitConfig.make`
calls, over the cache's arrays block by block where a split allows it:
:func:`write_labels`), in a child process, so every rank trains
on exactly the rows one process would and none of them holds the whole dataset to get
them.  Then each rank streams the two files in blocks and keeps only its part: the
training ratings of its contiguous shard of users (grouped by user) and of its shard of
movies (grouped by movie), each side read when the engine lays it out, and the
validation and test ratings of its users, which it evaluates.  Each training rating is so
held twice across the job and each held-out one once, and a rank's memory falls as P grows.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rec.bundle import StreamedArray, read_chunks, read_header, write_bundle
from rec.data.catalog import Catalog
from rec.data.load import CachedDataset, DataConfig, load_dataset, open_cache
from rec.data.ratings import DatasetShape
from rec.data.splits import (SplitConfig, cold_movie_parts, random_labels, require_parts,
                              temporal_labels, warm_labels)
from rec.errors import CacheError, DataError

LABELS_VERSION = 2
BLOCK = 1 << 20
"""Ratings per block read: 13 MB of user, movie, rating and label at a time."""
TRAIN, VAL, TEST, NEITHER = 0, 1, 2, 3
MOST_VALUES = 256
"""Most distinct training rating values a labels file lists (MovieLens has 10)."""


def labels_path(cache: Path, split: SplitConfig) -> Path:
    """Where the labels of ``split`` over the cache file ``cache`` are kept (beside it)."""
    return cache.with_name(f"{cache.stem}.{split.tag()}.labels.bin")


def _identity(cache: Path) -> dict:
    """What the labels were computed from: the checksums of the cache's rating arrays (not
    its time stamp: nodes that share a file system may each rewrite the same cache)."""
    return {s["name"]: s["crc32"] for s in read_header(cache)["arrays"]
            if s["name"] in ("user", "item", "rating")}


def _labels_meta(cached: CachedDataset, split: SplitConfig) -> dict:
    """The labels file's header for this cache and split; :class:`CacheError` when there is
    none yet or it was computed from another cache file."""
    path = labels_path(cached.path, split)
    if not path.is_file():
        raise CacheError(f"{path}: no labels yet")
    header = read_header(path)
    meta, shape = header["meta"], header["arrays"][0]["shape"]
    if meta.get("version") != LABELS_VERSION or meta.get("cache") != _identity(cached.path) \
            or meta.get("split") != split.options() or shape != [cached.n_ratings]:
        raise CacheError(f"{path}: computed from another cache or split")
    return meta


def write_labels(data: DataConfig, split: SplitConfig) -> Path:
    """Split the dataset and write the labels (writing its cache first if needed).  Over a
    cache, the random split never loads the dataset: it needs only the number of ratings
    (:func:`rec.data.splits.random_labels`; the permutation takes 8 bytes a rating); nor do
    the temporal and leave-last-out splits of a cache ordered by person (as GroupLens files
    are), which label each person's ratings as they stream past, nor the cold-movie split,
    which counts each movie's ratings first.  All read the ratings block by block for the
    training values.  The strong and predefined splits, and a temporal split of a cache in
    another order, load the whole dataset."""
    streamed = _random_split_labels(data, split) if split.kind == "random" else \
        _temporal_labels(data, split) if split.needs_timestamps else \
        _cold_movie_labels(data, split) if split.kind == "cold_movies" else None
    if streamed is not None:
        label, sizes, values = streamed
    else:
        ratings = load_dataset(data, timestamps=split.needs_timestamps)
        parts = split.make(ratings)
        label = np.full(len(ratings), NEITHER, dtype=np.int8)
        for code, index in enumerate((parts.train, parts.val, parts.test)):
            label[index.numpy()] = code
        sizes, values = parts.sizes(), torch.unique(ratings.rating[parts.train]).tolist()
    cache = open_cache(data).path
    path = labels_path(cache, split)
    write_bundle(path, {"label": label}, {
        "version": LABELS_VERSION, "cache": _identity(cache), "split": split.options(),
        "sizes": sizes, "values": values if len(values) <= MOST_VALUES else None})
    return path


Streamed = tuple[np.ndarray, dict, list]
"""A labels file's content: the labels, the parts' sizes, the distinct training values."""


def _cache(data: DataConfig) -> CachedDataset:
    try:
        return open_cache(data)
    except CacheError:
        load_dataset(data, timestamps=False)  # writes the cache; the ratings are let go
        return open_cache(data)


def _random_split_labels(data: DataConfig, split: SplitConfig) -> Streamed:
    """The random split's labels, from the cache's number of ratings."""
    cached = _cache(data)
    label = random_labels(cached.n_ratings, split.fractions, split.seed).numpy()
    return _finish(cached, label, f"random {split.fractions}")


def _temporal_labels(data: DataConfig, split: SplitConfig) -> Streamed | None:
    """The temporal or leave-last-out split's labels, from the cache's people and times
    block by block, each person's run of ratings labelled when it is whole
    (:func:`rec.data.splits.temporal_labels`); ``None`` when the cache is not ordered by
    person (then the whole dataset is loaded)."""
    cached = _cache(data)
    last = 1 if split.kind == "leave_last" else None
    label = np.empty(cached.n_ratings, dtype=np.int8)
    held = {"user": np.empty(0, np.int32), "timestamp": np.empty(0, np.int64)}
    done = 0
    for _, block in read_chunks(cached.path, ("user", "timestamp"), BLOCK):
        run = {k: np.concatenate([held[k], block[k]]) for k in held}
        user = run["user"]
        if user.size > 1 and bool((user[1:] < user[:-1]).any()):
            return None
        whole = int(np.searchsorted(user, user[-1])) if user.size else 0  # the last person
        label[done:done + whole] = temporal_labels(  # may go on in the next block
            user[:whole], run["timestamp"][:whole], split.fractions, last)
        done += whole
        held = {k: v[whole:] for k, v in run.items()}
    label[done:] = temporal_labels(held["user"], held["timestamp"], split.fractions, last)
    how = f"temporal {split.fractions}" if last is None else f"leave-last-{last}-out"
    return _finish(cached, label, how)


def _cold_movie_labels(data: DataConfig, split: SplitConfig) -> Streamed:
    """The cold-movie split's labels: the ratings per movie in one pass over the cache's
    movies, each rating's movie's part in a second, then the warm ratings split at random
    (:func:`rec.data.splits.cold_movie_parts`, :func:`~rec.data.splits.warm_labels`)."""
    cached = _cache(data)
    counts = np.zeros(len(cached.movies), dtype=np.int64)
    for _, block in read_chunks(cached.path, ("item",), BLOCK):
        counts += np.bincount(block["item"], minlength=counts.size)
    part, g = cold_movie_parts(torch.from_numpy(counts), split.fractions, split.held_out,
                               split.seed)
    label, part = np.empty(cached.n_ratings, dtype=np.int8), part.numpy()
    for start, block in read_chunks(cached.path, ("item",), BLOCK):
        label[start:start + block["item"].size] = part[block["item"]]
    warm_labels(torch.from_numpy(label), split.fractions, g)
    return _finish(cached, label, f"cold_movies {split.held_out} {split.fractions}")


def _finish(cached: CachedDataset, label: np.ndarray, how: str) -> Streamed:
    """The sizes of ``label``'s parts (refusing an empty one) and the distinct training
    rating values (up to one more than :data:`MOST_VALUES`), read block by block."""
    counts = np.bincount(label, minlength=3)
    sizes = {"train": int(counts[TRAIN]), "val": int(counts[VAL]), "test": int(counts[TEST])}
    require_parts(sizes, cached.name, cached.n_ratings, how)
    values = np.empty(0, dtype=np.float32)
    for start, block in read_chunks(cached.path, ("rating",), BLOCK):
        if values.size <= MOST_VALUES:
            rating = block["rating"]
            kept = rating[label[start:start + rating.size] == TRAIN]
            values = np.union1d(values, np.unique(kept))
    return label, sizes, values.tolist()


def prepare(data: DataConfig, split: SplitConfig) -> None:
    """One rank per machine, before any rank reads its shard: the cache and the labels of
    ``split``, each computed once (in a child process, whose whole-dataset memory is gone
    when it returns).  Machines that share the files write the same bytes, atomically."""
    try:
        cached = open_cache(data)
        _labels_meta(cached, split)
        for _ in read_chunks(labels_path(cached.path, split), ("label",), BLOCK):
            pass  # its checksum: a corrupt file is rewritten, not handed to the ranks
        return
    except CacheError:
        pass
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(write_labels, (data, split))


def _blocks(cache: Path, labels: Path, names: tuple[str, ...], block: int):
    """Blocks of the cache's arrays ``names`` with the label of each rating beside them."""
    marks = read_chunks(labels, ("label",), block)
    for (_, arrays), (_, mark) in zip(read_chunks(cache, names, block), marks):
        yield {**arrays, "label": mark["label"]}
    for _ in marks:  # zip stopped at the first: run the second to its end, where its
        pass  # checksum is verified


Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Shard(DatasetShape):
    """Rank ``rank`` of ``world``'s part of the split dataset (what it needs of a
    :class:`rec.data.ratings.Ratings` and a :class:`rec.data.splits.Split`, and no more)."""

    data: CachedDataset
    labels: Path
    rank: int
    world: int
    user_bounds: tuple[int, ...]
    """``world + 1`` boundaries of the users' shards: rank r's are ``[b_r, b_{r+1})``."""
    item_bounds: tuple[int, ...]
    """The movies' shards, likewise."""
    user_degree: torch.Tensor
    """Training ratings per user, over the whole job."""
    item_degree: torch.Tensor
    user_counts: torch.Tensor
    """Ratings per user in any part (what a published model excludes from top-k)."""
    movies_rated: int
    train_mean: float
    rating_mean: float
    sizes: dict
    """Ratings in train, val and test."""
    val: Triple
    """The validation ratings of this rank's users (:attr:`user_rows`)."""
    test: Triple
    """Their test ratings."""
    block: int = BLOCK
    rating_values: tuple[float, ...] | None = None
    """The distinct training rating values, sorted (``None``: more than
    :data:`MOST_VALUES`)."""

    def __len__(self) -> int:
        return self.data.n_ratings

    @property
    def user_rows(self) -> slice:
        """This rank's users: their training ratings are its user step's."""
        return slice(self.user_bounds[self.rank], self.user_bounds[self.rank + 1])

    @property
    def item_rows(self) -> slice:
        """This rank's movies."""
        return slice(self.item_bounds[self.rank], self.item_bounds[self.rank + 1])

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def movies(self) -> Catalog:
        return self.data.movies

    @property
    def user_ids(self) -> torch.Tensor:
        return self.data.user_ids

    @property
    def rating_range(self) -> tuple[float, float]:
        return self.data.rating_range

    def content_digest(self) -> str:
        """The whole dataset's content identity (:meth:`Ratings.content_digest`)."""
        return self.data.digest

    def summary(self) -> dict:
        """:meth:`rec.data.ratings.Ratings.summary`'s counts, of the whole dataset."""
        return self._summary(len(self), self.movies_rated, self.rating_mean)

    def side(self, by: str) -> Triple:
        """The training ratings (row, column, rating) of this rank's users (``by="user"``:
        rows are users) or movies (``"item"``: rows are movies), in file order, read now: the
        caller lays them out and drops them."""
        out = _empty(int(self.side_degree(by).sum()))
        fill = 0
        for rows, cols, vals in self.side_blocks(by):
            for target, part in zip(out, (rows, cols, vals)):
                target[fill:fill + rows.size] = torch.from_numpy(part)
            fill += rows.size
        return out

    def side_blocks(self, by: str):
        """:meth:`side` block by block, as numpy arrays: what a layout built as it reads
        (:func:`rec.als.groups.stream_rows`) takes."""
        rows = self.user_rows if by == "user" else self.item_rows
        other = "item" if by == "user" else "user"
        for b in _blocks(self.data.path, self.labels, ("user", "item", "rating"), self.block):
            key = b[by]
            keep = (b["label"] == TRAIN) & (key >= rows.start) & (key < rows.stop)
            yield key[keep], b[other][keep], b["rating"][keep]

    def side_degree(self, by: str) -> torch.Tensor:
        """Training ratings per row in :meth:`side` (zero outside this rank's rows)."""
        rows = self.user_rows if by == "user" else self.item_rows
        whole = self.user_degree if by == "user" else self.item_degree
        degree = torch.zeros_like(whole)
        degree[rows] = whole[rows]
        return degree

    def pairs(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user, movie) of the training ratings of ``users`` (int32), read now."""
        wanted = np.zeros(self.n_users, dtype=bool)
        wanted[users.cpu().numpy()] = True
        found = []
        for b in _blocks(self.data.path, self.labels, ("user", "item"), self.block):
            keep = (b["label"] == TRAIN) & wanted[b["user"]]
            found.append((b["user"][keep], b["item"][keep]))
        user, item = (np.concatenate(x) if x else np.zeros(0, np.int32) for x in zip(*found))
        return torch.from_numpy(user), torch.from_numpy(item)

    def rated_offsets(self) -> torch.Tensor:
        """The offsets of :meth:`rated_by_user`'s CSR: each user's ratings, summed."""
        offsets = torch.zeros(self.n_users + 1, dtype=torch.int64)
        torch.cumsum(self.user_counts, 0, out=offsets[1:])
        return offsets

    def rated_items_streamed(self) -> StreamedArray | None:
        """:meth:`rated_by_user`'s movies as a :class:`rec.bundle.StreamedArray` read from the
        cache block by block, when the cache is ordered by person (GroupLens files are: its
        movies are then the CSR's as they lie); ``None`` when it is not.  One pass checks the
        order and measures the movies; the write reads them again."""
        cache, unordered = self.data.path, []

        def in_order():
            last = -1
            for _, b in read_chunks(cache, ("user", "item"), self.block):
                user = b["user"]
                if user.size and (user[0] < last or bool((user[1:] < user[:-1]).any())):
                    unordered.append(True)
                    return
                last = int(user[-1]) if user.size else last
                yield b["item"]

        measured = StreamedArray.of(in_order, np.int32)
        items = lambda: (b["item"] for _, b in read_chunks(cache, ("item",), self.block))
        return None if unordered else replace(measured, blocks=items)

    def rated_by_user(self) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR over users of every movie each rated, in file order within a user (what
        :meth:`rec.model.Recommender.from_training` builds from the whole dataset)."""
        offsets = self.rated_offsets()
        cursor = offsets[:-1].numpy().copy()
        items = np.empty(len(self), dtype=np.int32)
        for _, b in read_chunks(self.data.path, ("user", "item"), self.block):
            user = b["user"].astype(np.int64)
            order = slice(None) if bool((user[1:] >= user[:-1]).all()) else \
                np.argsort(user, kind="stable")  # GroupLens files are by user already
            ranked = user[order]
            within = np.arange(user.size) - np.searchsorted(ranked, ranked)
            items[cursor[ranked] + within] = b["item"][order]
            cursor += np.bincount(user, minlength=self.n_users)
        return offsets, torch.from_numpy(items)


def _empty(n: int) -> Triple:
    return (torch.empty(n, dtype=torch.int32), torch.empty(n, dtype=torch.int32),
            torch.empty(n, dtype=torch.float32))


def _append(out: Triple, fill: int, block: dict, keep: np.ndarray) -> int:
    """Copy the kept ratings of ``block`` into ``out`` from position ``fill``; the new fill."""
    n = int(keep.sum())
    for target, name in zip(out, ("user", "item", "rating")):
        target[fill:fill + n] = torch.from_numpy(block[name][keep])
    return fill + n


def read_shard(data: DataConfig, split: SplitConfig, rank: int, world: int,
               bounds: Callable[[torch.Tensor, int], torch.Tensor],
               block: int = BLOCK) -> Shard:
    """Rank ``rank`` of ``world``'s part, after :func:`prepare`: one pass over the cache for
    the degrees, the counts and the held-out ratings; ``bounds(degree, world)`` cuts the
    users and the movies into the contiguous shards (by training degree)."""
    try:
        return _read_shard(data, split, rank, world, bounds, block)
    except CacheError as e:
        raise DataError(f"{e}. Run the command again: the first rank on each machine "
                        "rewrites a missing, stale or corrupt cache or labels file.") from e


def _read_shard(data: DataConfig, split: SplitConfig, rank: int, world: int,
                bounds: Callable[[torch.Tensor, int], torch.Tensor], block: int) -> Shard:
    cached = open_cache(data)
    labels = labels_path(cached.path, split)
    meta = _labels_meta(cached, split)
    sizes = meta["sizes"]
    n_users, n_items = cached.user_ids.numel(), len(cached.movies)
    user_degree, item_degree = np.zeros(n_users, np.int64), np.zeros(n_items, np.int64)
    user_counts, item_counts = np.zeros(n_users, np.int64), np.zeros(n_items, np.int64)
    held_counts = {VAL: np.zeros(n_users, np.int64), TEST: np.zeros(n_users, np.int64)}
    train_sum = total = 0.0
    for b in _blocks(cached.path, labels, ("user", "item", "rating"), block):
        train = b["label"] == TRAIN
        user_degree += np.bincount(b["user"][train], minlength=n_users)
        item_degree += np.bincount(b["item"][train], minlength=n_items)
        user_counts += np.bincount(b["user"], minlength=n_users)
        item_counts += np.bincount(b["item"], minlength=n_items)
        train_sum += float(b["rating"][train].sum(dtype=np.float64))
        total += float(b["rating"].sum(dtype=np.float64))
        for code, counts in held_counts.items():
            counts += np.bincount(b["user"][b["label"] == code], minlength=n_users)
    degrees = torch.from_numpy(user_degree), torch.from_numpy(item_degree)
    cuts = [tuple(int(b) for b in bounds(d, world)) for d in degrees]
    mine = slice(cuts[0][rank], cuts[0][rank + 1])
    held = _held_out(cached.path, labels, mine, {code: int(counts[mine].sum())
                                                  for code, counts in held_counts.items()}, block)
    return Shard(cached, labels, rank, world, *cuts, *degrees, torch.from_numpy(user_counts),
                 int((item_counts > 0).sum()), train_sum / max(sizes["train"], 1),
                 total / max(cached.n_ratings, 1), sizes, held[VAL], held[TEST], block,
                 None if meta["values"] is None else tuple(meta["values"]))


def _held_out(cache: Path, labels: Path, users: slice, sizes: dict[int, int],
              block: int) -> dict[int, Triple]:
    """The validation and test ratings of ``users`` (``sizes`` of each, by label), in file
    order, from one more pass: the rank that owns a person evaluates their held-out ratings,
    so no rank holds the job's."""
    held = {code: _empty(n) for code, n in sizes.items()}
    fill = dict.fromkeys(held, 0)
    for b in _blocks(cache, labels, ("user", "item", "rating"), block):
        own = (b["user"] >= users.start) & (b["user"] < users.stop)
        for code in held:
            fill[code] = _append(held[code], fill[code], b, own & (b["label"] == code))
    return held
