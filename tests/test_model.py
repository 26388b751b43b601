"""A trained model's answers (SPEC §3): predict, top-k, fold-in, new movies, persistence."""

from __future__ import annotations

import time

import pytest
import torch

from rec.als import ModelConfig
from rec.data import make_split
from rec.errors import RecError
from rec.bundle import load_tree, save_tree
from rec.model import FORMAT, KIND, Recommender
from rec.titles import find_title, normalize
from rec.training import TrainConfig, fit


@pytest.fixture(scope="module")
def trained(small):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=6, tau=15, gamma=3, reg_scaling="none")
    result = fit(small, split, cfg, TrainConfig(max_epochs=15, ranking_max_users=100))
    return Recommender.from_training(small, split.train, result.params, cfg, result.final), result


def test_predict_matches_the_parameters(trained, small):
    model, result = trained
    m, n = 5, 17
    expected = float(result.params.predict(torch.tensor([m]), torch.tensor([n])).clamp(0.5, 5))
    assert model.predict(int(small.user_ids[m]), int(small.movies.ids[n])) == pytest.approx(expected)


def test_recommend_skips_rated_movies_and_sorts(trained, small):
    model, _ = trained
    top = model.recommend(1, k=10)
    rated = set(small.movies.ids[small.item[small.user == 0].long()].tolist())
    assert len(top) == 10 and not rated & {r["movie_id"] for r in top}
    scores = [r["score"] for r in top]
    assert scores == sorted(scores, reverse=True)
    assert all(r["ratings"] >= 20 for r in model.recommend(1, k=10, min_count=20))


def test_fold_in_is_one_exact_user_step(trained, small):
    model, result = trained
    user = 7
    rows = small.user == user
    pairs = list(zip(small.movies.ids[small.item[rows].long()].tolist(), small.rating[rows].tolist()))
    start = time.perf_counter()
    u, b = model.fold_in(pairs)
    assert time.perf_counter() - start < 0.5  # milliseconds, loosely
    # the user step's normal equations, solved densely: (lam X'X + diag(tau, gamma)) theta = lam X'y
    p, cfg, items = model.params, model.config, small.item[rows].long()
    x = torch.cat([p.item_factors[items], torch.ones(len(items), 1)], 1).double()
    y = (small.rating[rows] - p.mu - p.item_bias[items]).double()
    reg = torch.tensor([cfg.tau] * p.dim + [cfg.gamma], dtype=torch.float64)
    theta = torch.linalg.solve(cfg.lam * x.T @ x + torch.diag(reg), cfg.lam * x.T @ y)
    assert torch.allclose(u.double(), theta[:-1], atol=1e-4) and b == pytest.approx(float(theta[-1]), abs=1e-4)


def test_new_user_recommendations_exclude_their_movies(trained, small):
    model, _ = trained
    seed = model.find_movie("Lord of the Rings: The Fellowship of the Ring")
    movie_id = int(model.movies.ids[seed])
    top = model.recommend_new_user([(movie_id, 5.0)], k=10, min_count=50)
    assert movie_id not in {r["movie_id"] for r in top} and len(top) == 10
    with pytest.raises(RecError, match=r"\[0.5, 5.0\]"):
        model.fold_in([(movie_id, 9.0)])
    with pytest.raises(RecError, match="not in"):
        model.fold_in([(10**9, 4.0)])


def test_new_movie_from_genres(trained):
    model, _ = trained
    w = model.params.genre_factors
    v = model.new_movie(["Action", "Sci-Fi"])
    names = model.movies.genre_names
    assert torch.allclose(v, (w[names.index("Action")] + w[names.index("Sci-Fi")]) / 2)
    predictions = model.predict_new_movie(["Action", "Sci-Fi"])
    assert predictions.shape == (610,) and float(predictions.min()) >= 0.5
    with pytest.raises(RecError, match="Space Opera"):
        model.new_movie(["Space Opera"])


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "m.pt")
    again = Recommender.load(path)
    assert torch.equal(again.params.item_factors, model.params.item_factors)
    assert again.config == model.config and again.movies.titles == model.movies.titles
    assert again.recommend(3, k=5) == model.recommend(3, k=5)


def test_unreadable_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(RecError, match="Retrain"):
        Recommender.load(bad)
    with pytest.raises(RecError, match="python train.py"):
        Recommender.load(tmp_path / "absent.pt")


def test_older_model_formats_say_so(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "m.pt")
    state = load_tree(path, KIND, FORMAT)
    save_tree(path, state, KIND, 2)
    with pytest.raises(RecError, match="rec-model format 2; this version of rec reads format 3"):
        Recommender.load(path)
    torch.save({"format": 2, "params": None}, path)  # what rec wrote before version 3
    with pytest.raises(RecError, match="PyTorch zip archive, the format of rec before version 3"):
        Recommender.load(path)


def test_title_search_is_forgiving(small):
    titles = small.movies.titles
    lotr = find_title("Lord of the Rings: The Fellowship of the Ring", titles, small.item_counts())
    assert titles[lotr] == "Lord of the Rings: The Fellowship of the Ring, The (2001)"
    assert find_title("the matrix", titles, small.item_counts()) == titles.index("Matrix, The (1999)")
    assert normalize("American President, The (1995)") == "the american president"
    with pytest.raises(RecError, match="Close matches") as e:
        find_title("Lord of the Rngs Fellowship", titles)
    assert "Fellowship" in str(e.value)


def test_a_new_movie_gets_its_genres_bias_with_genre_bias(small):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=4, genre_bias=True)
    result = fit(small, split, cfg, TrainConfig(max_epochs=6, ranking_max_users=20))
    model = Recommender.from_training(small, split.train, result.params, cfg, result.final)
    beta, names = model.params.genre_bias, model.movies.genre_names
    pair = ["Horror", "Documentary"]
    expected = float(beta[names.index("Horror")] + beta[names.index("Documentary")]) / 2
    assert model.new_movie_bias(pair) == pytest.approx(expected) and abs(expected) > 0.01
    p = model.params
    unclipped = p.mu + expected + p.user_bias + p.user_factors @ model.new_movie(pair)
    assert torch.allclose(model.predict_new_movie(pair), unclipped.clamp(0.5, 5))
    assert float(beta[names.index("Documentary")]) > float(beta[names.index("Horror")])  # as rated
    with pytest.raises(RecError, match="only the features rung"):
        ModelConfig(name="embeddings", genre_bias=True)
