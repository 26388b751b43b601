"""Splits (SPEC §1.3): index tensors, fractions, determinism, temporal order, official folds."""

from __future__ import annotations

import torch

from rec.data import DataConfig, load_dataset, make_split
from rec.data.ratings import _counts
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
