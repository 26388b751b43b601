"""The implicit-feedback loss (iALS, Rendle et al. 2022) on rec's engine: every step is the
exact minimizer of L over its block, checked against L written densely, and the model's
answers from it."""

from __future__ import annotations

import math

import pytest
import torch

from rec.als import ALS, ModelConfig, Params
from rec.als.sizes import EngineSizes
from rec.bayes.config import InferenceConfig
from rec.data.splits import SplitConfig, make_split
from rec.errors import ConfigError, RecError
from rec.metrics import pairs_of_users, ranking
from rec.model import Recommender
from rec.run_config import RunConfig
from rec.training import POPULARITY_WEIGHTS, TrainConfig, _Subsets, fit, ranking_metrics
from tests.conftest import random_ratings


def dense_loss(cfg: ModelConfig, r, U, V, W) -> torch.Tensor:
    """L of the implicit loss over the full matrix, from its definition."""
    n_users, n_items = U.shape[0], V.shape[0]
    keep = torch.ones_like(r.rating, dtype=torch.bool) if cfg.interaction_min is None \
        else r.rating >= cfg.interaction_min
    user, item, rating = r.user[keep].long(), r.item[keep].long(), r.rating[keep].double()
    c = 1 + cfg.confidence * rating
    t = torch.where(rating >= cfg.liked_min, 1.0, cfg.unliked_target).double() \
        if cfg.liked_min is not None else torch.ones_like(rating)
    scores = U @ V.T
    observed = (c * (scores[user, item] - t) ** 2).sum()
    everything = cfg.alpha0 * (scores ** 2).sum()
    n_u = torch.bincount(user, minlength=n_users).double()
    n_i = torch.bincount(item, minlength=n_items).double()
    mean = r.movies.genre_matrix(torch.float64) @ W if cfg.has_genres else torch.zeros_like(V)
    reg = cfg.tau * (((n_u + cfg.alpha0 * n_items) ** cfg.nu * (U ** 2).sum(1)).sum()
                     + ((n_i + cfg.alpha0 * n_users) ** cfg.nu * ((V - mean) ** 2).sum(1)).sum())
    genres = cfg.eta * (W ** 2).sum() if cfg.has_genres else 0.0
    return observed + everything + reg + genres


def gradients(cfg, r, p):
    blocks = [p.user_factors.double().clone().requires_grad_(),
              p.item_factors.double().clone().requires_grad_(),
              p.genre_factors.double().clone().requires_grad_()]
    loss = dense_loss(cfg, r, *blocks)
    loss.backward()
    return float(loss.detach()), [b.grad for b in blocks]


CONFIGS = [ModelConfig(name="features", K=3, feedback="implicit", tau=0.3, alpha0=0.2, nu=1.0),
           ModelConfig(name="embeddings", K=4, feedback="implicit", tau=0.1, alpha0=0.05, nu=0.5,
                       confidence=2.0, interaction_min=2.5)]


FUSED = ModelConfig(name="features", K=3, feedback="implicit", tau=0.3, alpha0=0.2, nu=1.0,
                    interaction_min=2.5)
LIKED = ModelConfig(name="features", K=3, feedback="implicit", tau=0.3, alpha0=0.2, nu=1.0,
                    interaction_min=1.5, liked_min=3.5, unliked_target=0.25)
"""Graded targets; 0.25 is exact in float32, as the fused kernel's rating levels hold it."""


@pytest.mark.parametrize("cfg,kernel", [(CONFIGS[0], "torch"), (CONFIGS[1], "torch"),
                                        (FUSED, "fused"), (LIKED, "torch"), (LIKED, "fused")],
                         ids=["features", "embeddings+confidence+threshold", "fused+threshold",
                              "liked", "fused+liked"])
def test_each_step_is_the_exact_minimizer_of_the_dense_loss(cfg, kernel):
    r = random_ratings(n_users=14, n_items=11, density=0.35, seed=5)
    engine = ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items,
                 r.movies.genre_matrix(torch.float64), dtype=torch.float64,
                 sizes=EngineSizes(kernel=kernel, tile_cols=4))
    assert engine.sizes.kernel == kernel
    p = engine.initial_params(r.n_genres, seed=1)
    p.genre_factors.normal_(generator=torch.Generator().manual_seed(2))
    before, _ = gradients(cfg, r, p)
    assert engine.objective(p) == pytest.approx(before, rel=1e-10)
    engine.user_step(p)
    after_users, grads = gradients(cfg, r, p)
    assert float(grads[0].abs().max()) < 1e-9 and after_users <= before
    engine.item_step(p)
    after_items, grads = gradients(cfg, r, p)
    assert float(grads[1].abs().max()) < 1e-9 and after_items <= after_users
    engine.genre_step(p)
    after_genres, grads = gradients(cfg, r, p)
    if cfg.has_genres:
        assert float(grads[2].abs().max()) < 1e-9
    assert after_genres <= after_items + 1e-12
    assert engine.objective(p) == pytest.approx(after_genres, rel=1e-10)
    assert p.user_bias.abs().max() == 0 and p.item_bias.abs().max() == 0 and p.mu == 0


def test_the_loss_never_increases_and_training_selects_by_validation_ndcg(small):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=8, feedback="implicit", tau=0.01, alpha0=0.1)
    result = fit(small, split, cfg, TrainConfig(max_epochs=8, patience=100,
                                                ranking_max_users=100))
    losses = [h["objective"] for h in result.history]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), losses
    ndcg = [h["val/ndcg@10"] for h in result.history]
    assert result.best_epoch == 1 + max(range(len(ndcg)), key=ndcg.__getitem__)
    f = result.final
    assert "val/rmse" not in f and 0.05 < f["test/ndcg@10"] < 1
    for key in ("precision", "recall", "map", "hit_rate", "coverage", "popularity"):
        assert f"test/{key}@10" in f and f"val/{key}@10" in f


@pytest.fixture(scope="module", params=[{"confidence": 0.5}, {"liked_min": 4.0}],
                ids=["confidence", "liked"])
def implicit_model(small, request):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=6, feedback="implicit", tau=0.01, alpha0=0.1,
                      interaction_min=1.0, **request.param)
    result = fit(small, split, cfg, TrainConfig(max_epochs=4, ranking_max_users=50))
    return Recommender.from_training(small, split.train, result.params, cfg, result.final), \
        split, result


def test_fold_in_of_a_persons_movies_is_their_row_of_a_user_step(small, implicit_model):
    model, split, result = implicit_model
    cfg = model.config
    engine = ALS.from_ratings(cfg, small.user, small.item, small.rating, small.n_users, small.n_items,
                 small.movies.genre_matrix(), subset=split.train)
    p = result.params.clone()
    engine.user_step(p)
    train = split.train
    for m in (0, 7, 300):
        mine = train[small.user[train] == m]
        pairs = list(zip(small.movies.ids[small.item[mine].long()].tolist(),
                         small.rating[mine].tolist()))
        u, b = model.fold_in(pairs)
        assert b == 0.0
        torch.testing.assert_close(u, p.user_factors[m], rtol=2e-4, atol=2e-5)
    ids = [pair[0] for pair in pairs]  # ids alone: watched, every one an interaction
    keep = [pair for pair in pairs if pair[1] >= cfg.interaction_min]
    plain = ModelConfig(**{**cfg.__dict__, "confidence": 0.0, "interaction_min": None,
                           "liked_min": None})
    unweighted = Recommender(**{**{k: getattr(model, k) for k in ("params", "dataset", "user_ids",
                             "movies", "item_counts", "rated_offsets", "rated_items",
                             "rating_range")}, "config": plain})
    assert keep and torch.allclose(unweighted.fold_in(ids)[0],
                                   unweighted.fold_in([(i, 3.0) for i in ids])[0])


def test_an_implicit_models_answers_are_scores_not_ratings(implicit_model):
    model, _, _ = implicit_model
    user = int(model.user_ids[0])
    records = model.recommend(user, 5)
    assert len(records) == 5 and all("predicted" not in r for r in records)
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    with pytest.raises(RecError, match="not ratings"):
        model.predict(user, int(model.movies.ids[0]))
    new = model.recommend_new_user([4993, 5952, 7153], k=5)
    assert {r["movie_id"] for r in new}.isdisjoint({4993, 5952, 7153})
    similar = model.similar(4993, k=3)
    assert len(similar) == 3 and 4993 not in {r["movie_id"] for r in similar}
    with pytest.raises(RecError, match="movie ids or \\(movie id, rating\\) pairs, not both"):
        model.fold_in([4993, (5952, 4.0)])


def test_implicit_options_are_checked():
    with pytest.raises(ConfigError, match="trains the embeddings and features rungs"):
        ModelConfig(name="biases", feedback="implicit")
    with pytest.raises(ConfigError, match="model.alpha0 applies to model.feedback=implicit"):
        ModelConfig(alpha0=0.3)
    with pytest.raises(ConfigError, match="model.gamma: model.feedback=implicit"):
        ModelConfig(feedback="implicit", gamma=2.0)
    with pytest.raises(ConfigError, match="drop model.genre_bias"):
        ModelConfig(feedback="implicit", genre_bias=True)
    with pytest.raises(ConfigError, match="model.liked_min applies to model.feedback=implicit"):
        ModelConfig(liked_min=4.0)
    with pytest.raises(ConfigError, match="set one of them"):
        ModelConfig(feedback="implicit", liked_min=4.0, confidence=1.0)
    with pytest.raises(ConfigError, match="every interaction would be liked"):
        ModelConfig(feedback="implicit", liked_min=3.0, interaction_min=3.0)
    with pytest.raises(ConfigError, match="set model.liked_min too"):
        ModelConfig(feedback="implicit", unliked_target=0.2)
    with pytest.raises(ConfigError, match=r"model.unliked_target=1.5: must be in \[0, 1\]"):
        ModelConfig(feedback="implicit", liked_min=4.0, unliked_target=1.5)
    with pytest.raises(ConfigError, match="implicit loss's confidences .* run on the torch path"):
        ALS.from_ratings(ModelConfig(feedback="implicit", K=2, confidence=1.0),
            *[torch.zeros(1, dtype=torch.int32)] * 2,
            torch.ones(1), 1, 1, torch.ones(1, 1), sizes=EngineSizes(kernel="fused"))


def test_an_explicit_models_lists_rank_by_rating_and_popularity_and_beat_most_popular(small,
                                                                                       tmp_path):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=10, genre_bias=True)
    result = fit(small, split, cfg, TrainConfig(max_epochs=30, relaxation=1.8,
                                                ranking_max_users=None))
    f = result.final
    assert f["popularity_weight"] in POPULARITY_WEIGHTS and f["popularity_weight"] > 0
    counts = small.item_counts(split.train)
    zeros = lambda *shape: torch.zeros(*shape)
    popular = Params(0.0, zeros(small.n_users, 1), zeros(small.n_users), zeros(small.n_items, 1),
                     torch.log1p(counts.float()), zeros(small.n_genres, 1), zeros(small.n_genres))
    test = split.test
    seen = pairs_of_users(small, split.train, torch.arange(small.n_users))
    most_popular = ranking(popular, *seen, small.user[test].long(), small.item[test].long(),
                           small.rating[test], k=10)
    assert f["test/ndcg@10"] > most_popular["ndcg@10"] > 0.05
    model = Recommender.from_training(small, split.train, result.params, cfg, f)
    loaded = Recommender.load(model.save(tmp_path / "m.pt"))
    assert loaded.popularity_weight == f["popularity_weight"]
    top = loaded.recommend(int(small.user_ids[0]), 10)
    w, (lo, hi) = f["popularity_weight"], small.rating_range
    inside = [r for r in top if lo < r["predicted"] < hi]  # shown ratings are clipped
    assert inside and all(r["score"] == pytest.approx(r["predicted"] + w * math.log1p(r["ratings"]),
                                                      abs=1e-4) for r in inside)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_strong_generalization_scores_held_out_users_folded_in_from_their_given_movies(small,
                                                                                     feedback):
    split = make_split(small, "strong")
    implicit = feedback == "implicit"
    cfg = ModelConfig(name="features", K=8, feedback=feedback,
                      **({"tau": 0.01, "alpha0": 0.2} if implicit else {}))
    result = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=None))
    held = torch.unique(small.user[split.fold_in].long())
    assert result.params.user_factors[held].abs().max() == 0  # they never trained
    engine = ALS.from_ratings(cfg, small.user, small.item, small.rating, small.n_users, small.n_items,
                 small.movies.genre_matrix(), subset=split.train)
    given = engine.given_rows(*(t[split.fold_in] for t in (small.user, small.item, small.rating)))
    folded = engine.fold_in(result.params, given)
    # a held-out user's fold-in is the user step they would get with those ratings in training
    both = torch.sort(torch.cat([split.train, split.fold_in])).values
    whole = ALS.from_ratings(cfg, small.user, small.item, small.rating, small.n_users, small.n_items,
                small.movies.genre_matrix(), subset=both, mu=engine.mu)
    stepped = result.params.clone()
    whole.user_step(stepped)
    torch.testing.assert_close(folded.user_factors[held], stepped.user_factors[held],
                               rtol=1e-4, atol=1e-5)
    untouched = torch.ones(small.n_users, dtype=torch.bool)
    untouched[held] = False
    assert torch.equal(folded.user_factors[untouched], result.params.user_factors[untouched])
    if not implicit:  # its lists add a popularity term: RMSE says the fold-in is used
        assert result.final["test/rmse"] < 1.0
        return
    # the metrics rank every movie but their given ones, scored with the folded-in users
    data = _Subsets(small, split, torch.device("cpu"))
    tc = TrainConfig(ranking_max_users=None)
    ours = ranking_metrics(folded, small, split, data, tc, 0, engine, "test")
    assert ours["test/ndcg@10"] == pytest.approx(result.final["test/ndcg@10"], abs=1e-6)
    cold = ranking_metrics(result.params, small, split, data, tc, 0, engine, "test")
    assert ours["test/ndcg@10"] > cold["test/ndcg@10"] + 0.02


def test_strong_generalization_needs_one_process_and_als():
    with pytest.raises(ConfigError, match="inference=gibbs does not fold users in"):
        RunConfig(split=SplitConfig("strong"), inference=InferenceConfig(method="gibbs"))
