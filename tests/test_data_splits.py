"""Splits (SPEC §1.3): index tensors, fractions, determinism, temporal order, official folds."""

from __future__ import annotations

import pytest
import torch

from rec.data import DataConfig, load_dataset, make_split
from rec.data.ratings import _counts
from rec.data.splits import SplitConfig
from rec.errors import ConfigError
from tests.conftest import random_ratings
from tests.formats import write_ml100k
from tests.test_data_movielens import MOVIES


def test_random_split_is_a_seeded_partition(small):
    s = make_split(small, "random", seed=3)
    n = len(small)
    assert [len(s.train), len(s.val), len(s.test)] == [n - 2 * round(n * 0.05), round(n * 0.05),
                                                       round(n * 0.05)]
    everything = torch.cat([s.train, s.val, s.test])
    assert torch.equal(torch.sort(everything).values, torch.arange(n))  # disjoint and complete
    assert all(torch.equal(v, torch.sort(v).values) for v in s.parts().values())
    again, other = make_split(small, "random", seed=3), make_split(small, "random", seed=4)
    assert torch.equal(again.test, s.test) and not torch.equal(other.test, s.test)


def test_temporal_split_holds_each_users_latest_ratings(small):
    s = make_split(small, "temporal")
    ts, user = small.timestamp, small.user.long()
    for part in (s.val, s.test):
        assert len(part) > 0.03 * len(small)
    latest_train = torch.full((small.n_users,), -1, dtype=torch.int64).scatter_reduce(
        0, user[s.train], ts[s.train], "amax")
    earliest_val = torch.full((small.n_users,), 2**62).scatter_reduce(0, user[s.val], ts[s.val], "amin")
    earliest_test = torch.full((small.n_users,), 2**62).scatter_reduce(0, user[s.test], ts[s.test], "amin")
    latest_val = torch.full((small.n_users,), -1, dtype=torch.int64).scatter_reduce(
        0, user[s.val], ts[s.val], "amax")
    assert bool((latest_train <= earliest_val).all()) and bool((latest_train <= earliest_test).all())
    assert bool((latest_val <= earliest_test).all())
    per_user = torch.bincount(user[s.test], minlength=small.n_users)
    assert bool((per_user >= 1).all())  # every user (all have >= 20 ratings) has a test rating


def test_predefined_split_uses_the_official_fold(tmp_path):
    ratings = [(u, m, float(1 + (u + m) % 5), 1000 * u + m) for u in range(1, 21)
               for m in (10, 20, 30, 40, 50)]
    test_rows = ratings[::5]
    base_rows = [r for r in ratings if r not in test_rows]
    write_ml100k(tmp_path / "ml-100k", ratings, MOVIES, {"u1": (base_rows, test_rows)})
    r = load_dataset(DataConfig(name="ml-100k", root=str(tmp_path), download=False))
    s = make_split(r, "predefined", fold="u1", seed=0)
    pair = lambda i: (int(r.user_ids[r.user[i]]), int(r.movies.ids[r.item[i]]))
    assert {pair(i) for i in s.test.tolist()} == {(u, m) for u, m, _, _ in test_rows}
    assert len(s.val) == round(len(base_rows) * 0.05) and len(s.train) + len(s.val) == len(base_rows)
    assert not set(s.val.tolist()) & set(s.train.tolist())


def test_counts_over_a_split_part_equal_the_plain_bincount(small):
    part = make_split(small, "random", seed=1).train
    assert torch.equal(small.item_counts(part),
                       torch.bincount(small.item[part], minlength=small.n_items))
    assert torch.equal(_counts(small.user, part, small.n_users, block=1000),
                       torch.bincount(small.user[part], minlength=small.n_users))
    assert int(small.user_counts().sum()) == len(small)


def test_cold_movie_split_holds_whole_movies_out_of_training(small):
    r = random_ratings(n_users=60, n_items=50, density=0.8, cold_items=0, seed=3)  # ~48 per movie
    s = SplitConfig(kind="cold_movies", cold_fraction=0.2).make(r)
    item = r.item.long()
    held = set(item.tolist()) - set(item[s.train.long()].tolist())
    assert len(held) == 10  # 20% of the 50 rated movies, none with a training rating
    val, test = set(s.val.tolist()), set(s.test.tolist())
    whole = [set(torch.nonzero(item == m).flatten().tolist()) for m in held]
    assert all(rows <= val or rows <= test for rows in whole)  # each held movie goes whole
    assert sum(rows <= val for rows in whole) == 5  # movies shared 5:5 between val and test
    warm = len(r) - sum(len(rows) for rows in whole)
    assert len(s.train) == warm - round(warm * 0.05) * 2
    again, other = (SplitConfig(kind="cold_movies", cold_fraction=0.2, seed=k).make(r) for k in (0, 1))
    assert torch.equal(again.test, s.test) and not torch.equal(other.test, s.test)
    assert SplitConfig(kind="cold_movies", cold_fraction=0.2).tag() == "cold_movies-0.2-0.9-0.05-0.05-seed0"
    big = SplitConfig(kind="cold_movies").make(small)  # ml-latest-small: thousands of cold rows
    seen = torch.zeros(small.n_items, dtype=torch.bool)
    seen[small.item[big.train.long()].long()] = True
    assert int((~seen[small.item[big.test.long()].long()]).sum()) > 2000


def test_cold_fraction_only_with_the_cold_movies_split():
    with pytest.raises(ConfigError, match="write split=cold_movies split.cold_fraction=0.2"):
        SplitConfig(kind="random", cold_fraction=0.2)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        SplitConfig(kind="cold_movies", cold_fraction=1.5)


def test_leave_last_out_holds_each_users_last_rating_for_test_and_the_one_before_for_val():
    r = random_ratings(n_users=30, n_items=25, density=0.3, seed=4, cold_users=3)
    deg = torch.bincount(r.user.long(), minlength=r.n_users)
    split = make_split(r, "leave_last")
    parts = {name: idx.long() for name, idx in split.parts().items()}
    assert sorted(torch.cat(list(parts.values())).tolist()) == list(range(len(r)))
    for m in range(r.n_users):
        mine = {name: idx[r.user[idx] == m] for name, idx in parts.items()}
        if deg[m] < 3:
            assert mine["val"].numel() == mine["test"].numel() == 0
            continue
        assert mine["val"].numel() == mine["test"].numel() == 1
        t = r.timestamp
        assert t[mine["test"]].item() >= t[mine["val"]].item() >= int(t[mine["train"]].max())
    config = SplitConfig("leave_last")
    assert config.needs_timestamps and config.tag() == "leave_last"
    assert "fractions" not in config.options() and "seed" not in config.options()
    with pytest.raises(ConfigError, match="one rating per user"):
        SplitConfig("leave_last", fractions=(0.8, 0.1, 0.1))
    with pytest.raises(ConfigError, match="leave_last split has no seed"):
        SplitConfig("leave_last", seed=3)


def test_strong_split_holds_users_out_whole_and_gives_a_share_of_each_to_fold_them_in():
    r = random_ratings(n_users=200, n_items=40, density=0.2, seed=5, cold_users=3)
    r_deg = torch.bincount(r.user.long(), minlength=r.n_users)
    split = make_split(r, "strong", fractions=(0.8, 0.1, 0.1), seed=2)
    parts = {**{name: idx.long() for name, idx in split.parts().items()},
             "fold_in": split.fold_in.long()}
    assert sorted(torch.cat(list(parts.values())).tolist()) == list(range(len(r)))
    users = {name: set(r.user[idx].tolist()) for name, idx in parts.items()}
    rated = int((r_deg > 0).sum())
    assert len(users["val"]) == round(rated * 0.1) and len(users["test"]) == round(rated * 0.1)
    assert not users["train"] & (users["val"] | users["test"])  # no held-out user trains
    assert not users["val"] & users["test"]
    assert users["fold_in"] == users["val"] | users["test"]
    for m in users["val"] | users["test"]:
        given = int((r.user[parts["fold_in"]] == m).sum())
        assert given == min(max(round(0.8 * int(r_deg[m])), 1), int(r_deg[m]) - 1)
    assert torch.equal(split.known(), torch.sort(torch.cat([split.train, split.fold_in])).values)
    assert split.sizes()["fold_in"] == split.fold_in.numel()
    again, other = make_split(r, "strong", (0.8, 0.1, 0.1), seed=2), \
        make_split(r, "strong", (0.8, 0.1, 0.1), seed=3)
    assert torch.equal(again.fold_in, split.fold_in) and not torch.equal(other.test, split.test)
    assert make_split(r).fold_in is None
    config = SplitConfig("strong", seed=2, fold_in=0.5)
    assert config.options() == {"kind": "strong", "fractions": [0.9, 0.05, 0.05], "seed": 2,
                                "fold_in": 0.5}
    assert config.tag() == "strong-given0.5-0.9-0.05-0.05-seed2"
    with pytest.raises(ConfigError, match="write split=strong split.fold_in=0.5"):
        SplitConfig("random", fold_in=0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        SplitConfig("strong", fold_in=1.0)
