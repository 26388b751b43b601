"""Train / validation / test splits as index tensors (SPEC §1.3).

No rating is copied: a split is three sorted index tensors into the
dataset's rating tensors.  ``random`` is the report's seeded permutation;
``temporal`` sends each user's latest ratings to validation and test;
``predefined`` uses a dataset's official folds (ml-100k's u1-u5, ua, ub), with
validation carved from the base file by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rec.data.ratings import Ratings
from rec.errors import ConfigError, DataError

SPLITS = ("random", "temporal", "predefined")


@dataclass(frozen=True)
class Split:
    """Sorted rating indices of each part (int32 below 2^31 ratings)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def parts(self) -> dict[str, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _check(split: Split, ratings: Ratings, how: str) -> Split:
    empty = [k for k, v in split.parts().items() if v.numel() == 0]
    if empty:
        raise DataError(
            f"{ratings.name}: the {how} split of its {len(ratings)} ratings leaves "
            f"{' and '.join(empty)} empty. Use a larger dataset or change split.fractions.")
    return split


def _parts(n: int, label: torch.Tensor) -> Split:
    """Sorted indices of labels 0, 1, 2 (``nonzero`` yields them in order: no sort).

    int32 when they fit: at ML-32M scale that halves the largest index tensor.
    """
    dtype = torch.int32 if n < 2**31 else torch.int64
    return Split(*(torch.nonzero(label == k).flatten().to(dtype) for k in range(3)))


def random_split(ratings: Ratings, fractions=(0.9, 0.05, 0.05), seed: int = 0) -> Split:
    """The report's split: one seeded permutation cut into train / val / test."""
    n = len(ratings)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    n_train = n - n_val - n_test
    label = torch.zeros(n, dtype=torch.int8)
    label[perm[n_train:n_train + n_val]] = 1
    label[perm[n_train + n_val:]] = 2
    del perm
    return _check(_parts(n, label), ratings, f"random {fractions}")


def temporal_split(ratings: Ratings, fractions=(0.9, 0.05, 0.05)) -> Split:
    """Each user's latest ratings go to test, the ones before them to validation."""
    if ratings.timestamp is None:
        raise ConfigError("the temporal split needs timestamps: load the dataset with them.")
    user = ratings.user.numpy()
    order = np.lexsort((np.arange(len(user)), ratings.timestamp.numpy(), user))
    deg = np.bincount(user, minlength=ratings.n_users)
    start = np.cumsum(deg) - deg
    u = user[order]
    from_end = deg[u] - (np.arange(len(order)) - start[u])  # 1 for a user's latest rating
    n_test = np.round(deg * fractions[2]).astype(np.int64)[u]
    n_val = np.round(deg * fractions[1]).astype(np.int64)[u]
    label = torch.zeros(len(order), dtype=torch.int8)
    label[torch.from_numpy(order[from_end <= n_test + n_val])] = 1
    label[torch.from_numpy(order[from_end <= n_test])] = 2
    return _check(_parts(len(order), label), ratings, f"temporal {fractions}")


def predefined_split(ratings: Ratings, fold: str, val_fraction: float = 0.05, seed: int = 0) -> Split:
    """An official fold: its test file is test, its base file train minus a seeded validation share."""
    if not ratings.folds:
        raise ConfigError(f"{ratings.name} has no official folds; split=predefined works with "
                          "ml-100k (u1-u5, ua, ub). Use split=random or split=temporal.")
    if fold not in ratings.folds:
        raise ConfigError(f"split.fold={fold!r}: {ratings.name} has folds "
                          f"{', '.join(sorted(ratings.folds))}.")
    member = ratings.folds[fold]
    base = torch.nonzero(member == 0).flatten()
    perm = base[torch.randperm(len(base), generator=torch.Generator().manual_seed(seed))]
    n_val = round(len(base) * val_fraction)
    label = torch.where(member == 1, 2, torch.where(member == 0, 0, 3)).to(torch.int8)
    label[perm[:n_val]] = 1
    split = _parts(len(member), label)
    return _check(split, ratings, f"predefined {fold}")


def make_split(ratings: Ratings, kind: str = "random", fractions=(0.9, 0.05, 0.05), seed: int = 0,
               fold: str = "u1") -> Split:
    """Dispatch on ``kind`` (``split.kind`` in the config)."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split.fractions={list(fractions)}: expected three non-negative "
                          "fractions (train, val, test) that sum to 1.")
    if kind == "random":
        return random_split(ratings, fractions, seed)
    if kind == "temporal":
        return temporal_split(ratings, fractions)
    if kind == "predefined":
        return predefined_split(ratings, fold, fractions[1], seed)
    raise ConfigError(f"split.kind={kind!r}: expected one of {', '.join(SPLITS)}.")
