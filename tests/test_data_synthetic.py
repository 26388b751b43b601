"""The synthetic generator and the user's own CSV files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from rec.data import DataConfig, load_dataset
from rec.data.synthetic import SyntheticSpec, generate, load_planted
from rec.errors import ConfigError, DataError

SPEC = dict(scale=0.02, seed=5)


def digest(folder):
    return {f.name: hashlib.sha1(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic-root")
    cfg = DataConfig(name="synthetic", root=str(root), cache_dir=str(root / "cache"), **SPEC)
    return root, load_dataset(cfg)


def test_shape_and_layout(synthetic):
    root, r = synthetic
    spec = SyntheticSpec(**SPEC)
    n_users, n_items, n_ratings = spec.shape()
    assert (r.n_users, r.n_items, len(r)) == (n_users, n_items, n_ratings)
    assert (n_users, n_items, n_ratings) == (4019, 1752, 640004)  # 2% of ML-32M's shape
    folder = root / "synthetic" / spec.folder_name()
    assert {p.name for p in folder.iterdir()} >= {"ratings.csv", "movies.csv", "planted.npz"}
    assert (folder / "ratings.csv").read_text().splitlines()[0] == "userId,movieId,rating,timestamp"
    assert r.user_counts().min() >= 20
    halves = r.rating * 2
    assert torch.equal(halves, halves.round()) and r.rating.min() >= 0.5 and r.rating.max() <= 5.0
    assert r.movies.genre_names[0] == "(no genres listed)" and r.n_genres == 20
    assert (r.item_counts() == 0).sum() > 0  # catalog-only movies: cold starts


def test_degrees_follow_a_power_law(tmp_path):
    spec = SyntheticSpec(scale=0.125, seed=1)
    r = load_dataset(DataConfig(name="synthetic", root=str(tmp_path), scale=0.125, seed=1))
    counts = r.item_counts().double()
    top = counts.sort(descending=True).values
    assert top[0] > 20 * counts[counts > 0].median()  # blockbusters vs a long tail
    users = r.user_counts().double()
    assert users.max() > 20 * users.min() and users.min() == spec.min_user_degree


def test_deterministic_for_a_seed(tmp_path):
    a = generate(SyntheticSpec(scale=0.005, seed=9), tmp_path / "a")
    b = generate(SyntheticSpec(scale=0.005, seed=9), tmp_path / "b")
    c = generate(SyntheticSpec(scale=0.005, seed=10), tmp_path / "c")
    assert digest(a) == digest(b)
    assert digest(a)["ratings.csv"] != digest(c)["ratings.csv"]


def test_planted_model_explains_the_ratings(synthetic):
    root, r = synthetic
    p = load_planted(root / "synthetic" / SyntheticSpec(**SPEC).folder_name())
    u, i = r.user.long().numpy(), r.item.long().numpy()
    planted = (p.mu + p.user_bias[u] + p.item_bias[i]
               + np.einsum("ij,ij->i", p.user_factors[u], p.item_factors[i]))
    residual = r.rating.numpy() - np.clip(planted, 0.5, 5.0)
    # noise 0.75 plus half-star rounding and clipping: the planted model is near-exact
    assert 0.70 < residual.std() < 0.82
    assert p.user_factors.shape == (r.n_users, 10) and p.genre_factors.shape == (20, 10)


def test_impossible_shape_is_a_clear_error():
    with pytest.raises(ConfigError, match="data.scale"):
        SyntheticSpec(scale=0.01, ratings=100).shape()


def test_own_csv_with_a_column_mapping(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("who;what;stars\n7;a1;4\n7;3;2\n9;3;5\n".replace("a1", "1"))
    r = load_dataset(DataConfig(name="csv", root=str(tmp_path), path=str(path), sep=";",
                                columns={"user": "who", "item": "what", "rating": "stars"},
                                rating_scale=(1, 5)))
    assert len(r) == 3 and r.n_users == 2 and r.n_items == 2
    assert r.movies.titles == ["item 1", "item 3"] and r.movies.genres_of(0) == ["(no genres listed)"]
    assert r.timestamp.tolist() == [0, 0, 0]


def test_own_csv_names_its_missing_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="user, movie, stars|who"):
        load_dataset(DataConfig(name="csv", path=str(path), root=str(tmp_path),
                                columns={"user": "who", "item": "b", "rating": "c"}))
