"""What the movie is, beyond its genres (``model.movie_year``, ``model.movie_tags``): the columns
of A, the tags read from ``tags.csv`` through the cache and the model file, and the exact steps
and Gibbs draws on the wider A."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.als import ModelConfig
from rec.als.sizes import EngineSizes
from rec.bayes.config import InferenceConfig
from rec.bayes.sampler import GibbsSampler
from rec.data.catalog import Catalog
from rec.data.load import DataConfig, load_dataset
from rec.data.ratings import Ratings
from rec.errors import ConfigError
from rec.model import Recommender
from rec.training import build_engine
from tests.conftest import random_ratings

TITLES = ["Heat (1995)", "Fargo (TV series) (2014-)", "Untitled", "Metropolis (1927)",
          "Up (2009)"]
TAGS = [["Heist", "pacino", "heist "], ["dark comedy"], [], ["silent", "classic"],
        ["pixar", "dark comedy", "classic"]]


def catalog(tags=TAGS) -> Catalog:
    return Catalog.from_genre_lists(torch.arange(1, 6), TITLES,
                                    [["Crime"], ["Comedy", "Crime"], [], ["Sci-Fi"], ["Comedy"]],
                                    tag_lists=tags)


def test_years_and_decades_come_from_the_titles():
    c = catalog()
    assert c.years().tolist() == [1995, 2014, 0, 1927, 2009]
    names, index = c.decades()
    assert names == [f"{d}s" for d in range(1920, 2020, 10)]
    assert index.tolist() == [7, 9, -1, 0, 8]
    a = c.feature_matrix(torch.float64, year=True)
    assert a.shape == (5, c.n_genres + 10)
    decade = a[:, c.n_genres:]
    assert decade.sum(1).tolist() == [1, 1, 0, 1, 1] and decade[0, 7] == 1
    torch.testing.assert_close(a[:, :c.n_genres], c.genre_matrix(torch.float64))
    assert c.feature_names(year=True)[c.n_genres:][:2] == ["year:1920s", "year:1930s"]


def test_the_most_used_tags_become_columns_whose_row_is_a_mean():
    c = catalog()
    assert c.tag_names == ["classic", "dark comedy", "heist", "pacino", "pixar", "silent"]
    top = c.top_tags(2)  # classic and dark comedy: two movies each; ties by name
    assert [c.tag_names[t] for t in top] == ["classic", "dark comedy"]
    a = c.feature_matrix(torch.float64, tags=2)[:, c.n_genres:]
    np.testing.assert_allclose(a, [[0, 0], [0, 1], [0, 0], [1, 0], [0.5, 0.5]])
    assert c.feature_names(tags=2)[-2:] == ["tag:classic", "tag:dark comedy"]
    with pytest.raises(ConfigError, match="no tag file"):
        catalog(tags=None).feature_matrix(tags=5)


def test_the_options_belong_to_the_features_rung():
    with pytest.raises(ConfigError, match="features"):
        ModelConfig(name="embeddings", K=3, movie_year=True)
    with pytest.raises(ConfigError, match="number of tags"):
        ModelConfig(name="features", K=3, movie_tags=-1)
    assert ModelConfig(name="features", movie_year=True, movie_tags=20).variant == \
        "features+year+tags20"


def test_ml_latest_small_tags_are_read_and_survive_the_cache(small, small_root, tmp_path):
    m = small.movies
    assert len(m.tag_names) > 1000 and m.tag_index is not None
    heat = int(torch.nonzero(m.ids == 6).flatten()[0])  # movieId 6: Heat (1995)
    assert m.years()[heat] == 1995
    cfg = DataConfig(name="ml-latest-small", root=str(small_root), cache_dir=str(tmp_path))
    first, again = load_dataset(cfg), load_dataset(cfg)  # parsed, then read from the cache
    for r in (first, again):
        assert r.movies.tag_names == m.tag_names
        assert torch.equal(r.movies.tag_offsets, m.tag_offsets)
        assert torch.equal(r.movies.tag_index, m.tag_index)


def with_catalog(r: Ratings) -> Ratings:
    """``r`` with titles that carry years and a few tags."""
    n = r.n_items
    g = np.random.default_rng(1)
    titles = [f"Movie {i} ({1950 + 7 * i % 60})" for i in range(n)]
    tags = [[f"t{j}" for j in range(6) if g.random() < 0.3] for _ in range(n)]
    genres = [r.movies.genres_of(i) for i in range(n)]
    movies = Catalog.from_genre_lists(r.movies.ids, titles, genres, r.movies.genre_names, tags)
    return Ratings(r.name, r.user, r.item, r.rating, r.timestamp, r.user_ids, movies,
                   r.rating_range)


@pytest.mark.parametrize("kernel", ["torch", "fused"])
def test_every_step_lowers_j_with_decades_and_tags_in_a(kernel):
    r = with_catalog(random_ratings(seed=12))
    cfg = ModelConfig(name="features", K=3, tau=2.0, gamma=1.0, genre_bias=True,
                      movie_year=True, movie_tags=4)
    e = build_engine(r, None, cfg, EngineSizes(kernel), dtype=torch.float64)
    a = r.movies.feature_matrix(torch.float64, True, 4)
    assert e.n_features == a.shape[1] > r.n_genres
    torch.testing.assert_close(e.genre_matrix, a)
    p = e.initial_params(e.n_features, 0)
    with pytest.raises(ValueError, match="row per column"):
        e.initial_params(r.n_genres, 0)
    last = e.objective(p)
    for _ in range(4):
        for step in (e.user_step, e.item_step, e.genre_step):
            step(p)
            assert e.objective(p) <= last * (1 + 1e-10), step.__name__
            last = e.objective(p)
    sampler = GibbsSampler(e, InferenceConfig(method="gibbs"), 0)
    before = p.genre_factors.clone()
    sampler.sweep(p)
    assert p.genre_factors.shape == before.shape and not torch.equal(p.genre_factors, before)


def test_a_model_with_tags_keeps_them_and_its_prior_means_use_every_column(tmp_path):
    r = with_catalog(random_ratings(seed=13))
    cfg = ModelConfig(name="features", K=3, movie_year=True, movie_tags=3)
    e = build_engine(r, None, cfg)
    p = e.initial_params(e.n_features, 0)
    for _ in range(3):
        e.epoch(p)
    model = Recommender.from_training(r, torch.arange(len(r)), p, cfg)
    loaded = Recommender.load(model.save(tmp_path / "m.pt"))
    assert loaded.movies.tag_names == r.movies.tag_names
    torch.testing.assert_close(loaded.prior_means(),
                               r.movies.feature_matrix(torch.float32, True, 3) @ p.genre_factors)
    plain = Catalog(**{k: v for k, v in r.movies.state_dict().items() if not k.startswith("tag")})
    assert plain.tag_index is None  # a catalog of an earlier release: no tags, still loads
