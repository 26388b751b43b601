"""Train / validation / test splits as index tensors (SPEC §1.3).

No rating is copied: a split is three sorted index tensors into the
dataset's rating tensors.  ``random`` is the report's seeded permutation;
``temporal`` sends each user's latest ratings to validation and test; ``leave_last``
holds out each user's last rating for test and the one before it for validation (the
per-user leave-last-out protocol of top-N studies); ``strong`` holds validation and test
*users* out whole, each to be folded in from a share of their ratings and scored on the rest
(strong generalization, Liang et al. 2018);
``predefined`` uses a dataset's official folds (ml-100k's u1-u5, ua, ub), with
validation carved from the base file by seed; ``cold_movies`` holds a seeded
share of the movies out of training with all their ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rec.data.ratings import Ratings
from rec.errors import ConfigError, DataError, RecError

SPLITS = ("random", "temporal", "predefined", "cold_movies", "leave_last", "strong")
TIMED = ("temporal", "leave_last")
"""The kinds that order each user's ratings by time."""


@dataclass(frozen=True)
class SplitConfig:
    """How to cut the ratings (``conf/split/<kind>.yaml``), validated when built.

    Every option a kind does not use is refused rather than dropped: a fold
    selects the predefined split only, the temporal split has no seed, and the
    predefined split's test part is its fold's ``.test`` file.
    """

    kind: str = "random"
    """``random`` (seeded permutation), ``temporal`` (each user's latest ratings last),
    ``leave_last`` (each user's last rating for test, the one before for validation; users
    with fewer than 3 ratings train on all of theirs), ``predefined`` (a dataset's official
    fold) or ``cold_movies``."""
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """Train, validation and test shares; ``predefined``: ``[1 - v, v, 0]``, v carved from the
    fold's base file."""
    seed: int = 0
    """Seed of the permutation (``random``) or of the validation draw (``predefined``)."""
    fold: str | None = None
    """``predefined``: the official fold, e.g. ml-100k's ``u1``-``u5``, ``ua``, ``ub``."""
    cold_fraction: float | None = None
    """``cold_movies``: the share of rated movies held out with all their ratings (default 0.1)."""
    fold_in: float | None = None
    """``strong``: the share of a held-out user's ratings given to fold them in (default 0.8);
    the others are scored."""

    def __post_init__(self) -> None:
        if self.kind not in SPLITS:
            raise ConfigError(f"split.kind={self.kind!r}: expected one of {', '.join(SPLITS)}.")
        f = self.fractions
        if len(f) != 3 or not all(x >= 0 for x in f) or not abs(sum(f) - 1) <= 1e-6:  # NaN fails
            raise ConfigError(f"split.fractions={list(f)}: expected three non-negative "
                              "fractions (train, val, test) that sum to 1.")
        if self.fold is not None and self.kind != "predefined":
            raise ConfigError(f"split.fold={self.fold} names an official fold, which only the "
                              f"predefined split uses, but this run's split is {self.kind}; "
                              f"write split=predefined split.fold={self.fold}.")
        if self.kind == "predefined" and not self.fold:
            raise ConfigError("split=predefined needs a fold: write split.fold=u1 (or u2-u5, ua, ub).")
        if self.kind == "predefined" and f[2] != 0:
            raise ConfigError(f"split.fractions={list(f)}: the predefined split's test part is "
                              f"the {self.fold}.test file, so the test share must be 0; write "
                              f"split.fractions=[{1 - f[1]:g},{f[1]:g},0].")
        if self.cold_fraction is not None and self.kind != "cold_movies":
            raise ConfigError(f"split.cold_fraction={self.cold_fraction} holds movies out, which "
                              f"only split=cold_movies does, but this run's split is {self.kind}; "
                              f"write split=cold_movies split.cold_fraction={self.cold_fraction}.")
        if self.fold_in is not None and self.kind != "strong":
            raise ConfigError(f"split.fold_in={self.fold_in} folds held-out users in, which only "
                              f"split=strong does, but this run's split is {self.kind}; write "
                              f"split=strong split.fold_in={self.fold_in}.")
        if self.kind == "strong" and not 0 < self.given < 1:
            raise ConfigError(f"split.fold_in={self.given}: expected a share between 0 and 1 "
                              "(of each held-out user's ratings, given to fold them in).")
        if self.kind == "cold_movies" and not 0 < self.held_out < 1:
            raise ConfigError(f"split.cold_fraction={self.held_out}: expected a share between 0 and 1.")
        if self.kind in TIMED and self.seed != 0:
            raise ConfigError(f"split.seed={self.seed}: the {self.kind} split has no seed (it "
                              "sends each user's latest ratings to validation and test); drop "
                              "it, or use split=random.")
        if self.kind == "leave_last" and tuple(f) != self.default_fractions("random"):
            raise ConfigError(f"split.fractions={list(f)}: the leave_last split holds out one "
                              "rating per user for validation and one for test, whatever the "
                              "fractions; drop split.fractions, or use split=temporal.")

    @staticmethod
    def default_fractions(kind: str) -> tuple[float, float, float]:
        """90/5/5, or for ``predefined`` a 5% validation share of the base file and no test share."""
        return (0.95, 0.05, 0.0) if kind == "predefined" else (0.9, 0.05, 0.05)

    @property
    def held_out(self) -> float:
        """``cold_movies``: the share of rated movies held out."""
        return 0.1 if self.cold_fraction is None else self.cold_fraction

    @property
    def given(self) -> float:
        """``strong``: the share of a held-out user's ratings given to fold them in."""
        return 0.8 if self.fold_in is None else self.fold_in

    @property
    def needs_timestamps(self) -> bool:
        """Whether the loader must keep the ratings' timestamps for this split."""
        return self.kind in TIMED

    def make(self, ratings: Ratings) -> Split:
        """The split of ``ratings`` this configuration describes."""
        if self.kind == "random":
            return random_split(ratings, self.fractions, self.seed)
        if self.kind == "temporal":
            return temporal_split(ratings, self.fractions)
        if self.kind == "leave_last":
            return temporal_split(ratings, last=1)
        if self.kind == "strong":
            return strong_split(ratings, self.fractions, self.given, self.seed)
        if self.kind == "cold_movies":
            return cold_movie_split(ratings, self.fractions, self.held_out, self.seed)
        return predefined_split(ratings, self.fold, self.fractions[1], self.seed)

    def options(self) -> dict:
        """The options that define the split, for fingerprints, summaries and saved models."""
        out = {"kind": self.kind}
        if self.kind != "leave_last":
            out["fractions"] = list(self.fractions)
        if self.kind not in TIMED:
            out["seed"] = self.seed
        if self.kind == "predefined":
            out["fold"] = self.fold
        if self.kind == "cold_movies":
            out["cold_fraction"] = self.held_out
        if self.kind == "strong":
            out["fold_in"] = self.given
        return out

    def tag(self) -> str:
        """A file-name-safe identity: ``random-0.9-0.05-0.05-seed0``, ``predefined-u1-val0.05-seed0``."""
        if self.kind == "predefined":
            return f"predefined-{self.fold}-val{self.fractions[1]:g}-seed{self.seed}"
        if self.kind == "leave_last":
            return "leave_last"
        shares = "-".join(f"{x:g}" for x in self.fractions)
        held = f"-{self.held_out:g}" if self.kind == "cold_movies" else \
            f"-given{self.given:g}" if self.kind == "strong" else ""
        return f"{self.kind}{held}-{shares}" + (f"-seed{self.seed}" if self.kind not in TIMED else "")

    def describe(self, sizes: dict[str, int]) -> dict:
        """The options with the sizes of the three parts (:meth:`Split.sizes`; printed and
        saved by every run)."""
        return {**self.options(), "sizes": dict(sizes)}


@dataclass(frozen=True)
class Split:
    """Sorted rating indices of each part (int32 below 2^31 ratings)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    fold_in: torch.Tensor | None = None
    """``strong``: the held-out users' given ratings, which fold them in against the trained
    movies (never trained on); their other ratings are ``val`` and ``test``."""

    def parts(self) -> dict[str, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        sizes = {k: int(v.numel()) for k, v in self.parts().items()}
        return sizes if self.fold_in is None else {**sizes, "fold_in": int(self.fold_in.numel())}

    def known(self) -> torch.Tensor:
        """The ratings a ranked list leaves out: training, and the held-out users' given ones."""
        if self.fold_in is None:
            return self.train
        return torch.sort(torch.cat([self.train, self.fold_in])).values


def _check(split: Split, ratings: Ratings, how: str) -> Split:
    require_parts(split.sizes(), ratings.name, len(ratings), how)
    return split


def require_parts(sizes: dict[str, int], name: str, n: int, how: str) -> None:
    """:class:`DataError` when the split ``how`` of the ``n`` ratings of ``name`` leaves a
    part (``sizes``: train, val, test) empty."""
    empty = [k for k, v in sizes.items() if v == 0]
    if empty:
        raise DataError(
            f"{name}: the {how} split of its {n} ratings leaves "
            f"{' and '.join(empty)} empty. Use a larger dataset or change split.fractions.")


GIVEN = 4
"""The label of a held-out user's given rating (3: in no part, a predefined fold's other rows)."""


def _parts(n: int, label: torch.Tensor) -> Split:
    """Sorted indices of labels 0, 1, 2 and :data:`GIVEN` (``nonzero`` yields them in order:
    no sort).

    int32 when they fit: at ML-32M scale that halves the largest index tensor.
    """
    dtype = torch.int32 if n < 2**31 else torch.int64
    parts = [torch.nonzero(label == k).flatten().to(dtype) for k in (0, 1, 2, GIVEN)]
    return Split(*parts[:3], fold_in=parts[3] if parts[3].numel() else None)


def _random_labels(n: int, fractions, generator: torch.Generator) -> torch.Tensor:
    """0 (train), 1 (val), 2 (test) for ``n`` items: one seeded permutation cut by ``fractions``."""
    perm = torch.randperm(n, generator=generator)
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    n_train = n - n_val - n_test
    label = torch.zeros(n, dtype=torch.int8)
    label[perm[n_train:n_train + n_val]] = 1
    label[perm[n_train + n_val:]] = 2
    return label


def random_labels(n: int, fractions=(0.9, 0.05, 0.05), seed: int = 0) -> torch.Tensor:
    """The random split's label of each of ``n`` ratings: it depends on their number alone
    (a job of several processes computes it without reading the ratings)."""
    return _random_labels(n, fractions, torch.Generator().manual_seed(seed))


def random_split(ratings: Ratings, fractions=(0.9, 0.05, 0.05), seed: int = 0) -> Split:
    """The report's split: one seeded permutation cut into train / val / test."""
    label = random_labels(len(ratings), fractions, seed)
    return _check(_parts(len(ratings), label), ratings, f"random {fractions}")


def cold_movie_split(ratings: Ratings, fractions=(0.9, 0.05, 0.05), cold_fraction: float = 0.1,
                     seed: int = 0) -> Split:
    """A seeded share of the rated movies leaves training with all of its ratings (those
    movies go to validation or test whole, in the ratio of ``fractions[1:]``); the other
    ratings are split at random by ``fractions``.  Cold-start is then measured on
    thousands of test rows, not on the few a random split leaves unseen."""
    part, g = cold_movie_parts(ratings.item_counts(), fractions, cold_fraction, seed)
    label = part[ratings.item.long()]
    warm_labels(label, fractions, g)
    return _check(_parts(len(ratings), label), ratings, f"cold_movies {cold_fraction} {fractions}")


def cold_movie_parts(item_counts: torch.Tensor, fractions, cold_fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """:func:`cold_movie_split`'s part of each movie (0: its ratings are split at random, 1
    or 2: all of them go to validation or test), from the ratings per movie; and the
    generator that :func:`warm_labels` goes on with."""
    g = torch.Generator().manual_seed(seed)
    rated = torch.nonzero(item_counts > 0).flatten()
    movies = rated[torch.randperm(rated.numel(), generator=g)][:round(rated.numel() * cold_fraction)]
    n_val = round(movies.numel() * fractions[1] / max(fractions[1] + fractions[2], 1e-12))
    part = torch.zeros(item_counts.numel(), dtype=torch.int8)
    part[movies[:n_val]], part[movies[n_val:]] = 1, 2
    return part, g


def warm_labels(label: torch.Tensor, fractions, g: torch.Generator) -> None:
    """Split the ratings labelled 0 (of warm movies) at random, in place."""
    warm = torch.nonzero(label == 0).flatten()
    label[warm] = _random_labels(warm.numel(), fractions, g)


def strong_split(ratings: Ratings, fractions=(0.9, 0.05, 0.05), given: float = 0.8,
                 seed: int = 0) -> Split:
    """Strong generalization: shares ``fractions[1:]`` of the users (of those with at least
    two ratings, drawn by seed) are held out of training whole, for validation and test.  Each
    held-out user's ratings are shuffled by the same seed; the first ``round(given n)`` of
    their ``n`` (at least one, and one fewer than ``n`` at most) fold them in, and the others
    are scored."""
    g = torch.Generator().manual_seed(seed)
    user = ratings.user.long()
    deg = ratings.user_counts()
    eligible = torch.nonzero(deg >= 2).flatten()
    eligible = eligible[torch.randperm(eligible.numel(), generator=g)]
    rated = int((deg > 0).sum())
    n_val, n_test = round(rated * fractions[1]), round(rated * fractions[2])
    if n_val + n_test > eligible.numel():
        raise DataError(f"{ratings.name}: split=strong would hold out {n_val + n_test} users, "
                        f"but only {eligible.numel()} have two or more ratings; lower "
                        "split.fractions' validation and test shares.")
    part = torch.zeros(ratings.n_users, dtype=torch.int8)
    part[eligible[:n_val]], part[eligible[n_val:n_val + n_test]] = 1, 2
    order = np.lexsort((torch.rand(user.numel(), generator=g).numpy(), user.numpy()))
    start = torch.cumsum(deg, 0) - deg
    position = torch.empty_like(user)
    order = torch.from_numpy(order)
    position[order] = torch.arange(user.numel()) - start[user[order]]
    n_given = torch.clamp(torch.round(deg * given).long(), min=1)
    n_given = torch.minimum(n_given, deg - 1)[user]
    label = part[user]
    label[(label > 0) & (position < n_given)] = GIVEN
    return _check(_parts(len(user), label), ratings, f"strong {fractions} given {given:g}")


def temporal_split(ratings: Ratings, fractions=(0.9, 0.05, 0.05), last: int | None = None) -> Split:
    """Each user's latest ratings go to test, the ones before them to validation: a share
    ``fractions`` of each user's ratings, or with ``last`` exactly that many of each for test
    and as many before them for validation (leave-last-out; a user with no more than
    ``2 last`` ratings keeps them all in training)."""
    if ratings.timestamp is None:
        raise ConfigError("the temporal split needs timestamps: load the dataset with them.")
    label = torch.from_numpy(temporal_labels(ratings.user.numpy(), ratings.timestamp.numpy(),
                                             fractions, last))
    how = f"temporal {fractions}" if last is None else f"leave-last-{last}-out"
    return _check(_parts(len(label), label), ratings, how)


def temporal_labels(user: np.ndarray, timestamp: np.ndarray, fractions=(0.9, 0.05, 0.05),
                    last: int | None = None) -> np.ndarray:
    """:func:`temporal_split`'s label of each rating (0 train, 1 val, 2 test).  A person's
    labels depend on their own ratings alone, so any run of whole persons' ratings is
    labelled as within all of them (how a job of several processes labels the cache in
    blocks)."""
    user = user - user.min() if user.size else user  # a run's persons from 0
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    deg = np.bincount(user)
    start = np.cumsum(deg) - deg
    u = user[order]
    from_end = deg[u] - (np.arange(len(order)) - start[u])  # 1 for a user's latest rating
    if last is None:
        n_test = np.round(deg * fractions[2]).astype(np.int64)[u]
        n_val = np.round(deg * fractions[1]).astype(np.int64)[u]
    else:
        n_test = n_val = np.where(deg > 2 * last, last, 0)[u]
    label = np.zeros(len(order), dtype=np.int8)
    label[order[from_end <= n_test + n_val]] = 1
    label[order[from_end <= n_test]] = 2
    return label


def predefined_split(ratings: Ratings, fold: str, val_fraction: float = 0.05, seed: int = 0) -> Split:
    """An official fold: its test file is test, its base file train minus a seeded validation share."""
    if fold not in ratings.folds:
        raise _missing_fold(ratings, fold)
    member = ratings.folds[fold]
    base = torch.nonzero(member == 0).flatten()
    perm = base[torch.randperm(len(base), generator=torch.Generator().manual_seed(seed))]
    n_val = round(len(base) * val_fraction)
    label = torch.where(member == 1, 2, torch.where(member == 0, 0, 3)).to(torch.int8)
    label[perm[:n_val]] = 1
    split = _parts(len(member), label)
    return _check(split, ratings, f"predefined {fold}")


def _missing_fold(ratings: Ratings, fold: str) -> RecError:
    if ratings.fold_hint:  # a dataset that has official folds: the fold's files are missing
        have = f" (it has {', '.join(sorted(ratings.folds))})" if ratings.folds else ""
        return DataError(f"split.fold={fold}: the fold files {fold}.base and {fold}.test of "
                         f"{ratings.name} are missing{have}. {ratings.fold_hint}")
    return ConfigError(f"split.fold={fold}: {ratings.name} has no official folds; split=predefined "
                       "works with ml-100k (u1-u5, ua, ub). Use split=random or split=temporal.")


def make_split(ratings: Ratings, kind: str = "random", fractions=None, seed: int = 0,
               fold: str | None = None) -> Split:
    """The split :class:`SplitConfig` ``(kind, fractions, seed, fold)`` describes; ``fractions``
    default to 90/5/5, or to a 5% validation share of the base file for ``predefined``."""
    if kind == "predefined":
        fold = fold or "u1"
    fractions = tuple(float(f) for f in (fractions or SplitConfig.default_fractions(kind)))
    return SplitConfig(kind, fractions, seed, fold).make(ratings)
