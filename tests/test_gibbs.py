"""Gibbs sampling (``inference=gibbs``): exact conditionals, calibrated intervals, exact resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from rec.als import ALS, ModelConfig
from rec.als.sizes import EngineSizes
from rec.bayes.chain import sample
from rec.bayes.config import InferenceConfig
from rec.bayes.hyper import normal_gamma
from rec.data.catalog import Catalog
from rec.data.ratings import Ratings
from rec.data.splits import make_split
from rec.errors import ConfigError, RecError
from rec.model import Recommender
from rec.training import TrainConfig, load_checkpoint
from tests.conftest import RANDOM, random_ratings
from tests.test_train_pipeline import train


@pytest.mark.parametrize("kernel", ["torch", "fused"])
def test_sampled_movie_rows_follow_the_exact_gaussian_conditional(kernel):
    """With U, b fixed, the draws of [v_n; c_n] have the conditional's mean and covariance
    (a wrong Cholesky side or a missing lam moves the covariance far outside the error)."""
    r = random_ratings(n_users=25, n_items=6, density=0.5, seed=3, cold_users=0, cold_items=1)
    cfg = ModelConfig(name="embeddings", K=2).validated()
    e = ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items,
            r.movies.genre_matrix(torch.float64), dtype=torch.float64, sizes=EngineSizes(kernel))
    p = e.initial_params(r.n_genres, 0)
    p.user_factors.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    p.user_bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    lam, precision = 2.5, torch.tensor([3.0, 0.7, 1.3], dtype=torch.float64)
    mean = torch.tensor([[0.2, -0.4, 0.1]], dtype=torch.float64).expand(r.n_items, 3).contiguous()
    g = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(4000):
        e.draw_step(p, "item", lam, precision, mean,
                    torch.randn(r.n_items, 3, generator=g, dtype=torch.float64))
        draws.append(torch.cat([p.item_factors, p.item_bias.unsqueeze(1)], 1).clone())
    draws = torch.stack(draws).numpy()  # (S, n_items, 3)
    u, b = p.user_factors.numpy(), p.user_bias.numpy()
    for n in range(r.n_items):
        m = (r.item == n).numpy()
        x = np.hstack([u[r.user.numpy()[m]], np.ones((m.sum(), 1))])
        y = r.rating.numpy()[m] - e.mu - b[r.user.numpy()[m]]
        prec = lam * x.T @ x + np.diag(precision.numpy())
        cov = np.linalg.inv(prec)
        want = cov @ (lam * x.T @ y + precision.numpy() * mean[n].numpy())
        got = draws[:, n]
        scale = np.sqrt(np.diag(cov))
        assert np.all(np.abs(got.mean(0) - want) < 4.5 * scale / np.sqrt(len(got))), n
        np.testing.assert_allclose(np.cov(got.T), cov, atol=0.08 * scale.max() ** 2, rtol=0.08)


def planted(n_users=400, n_items=250, k=3, density=0.2, noise=0.5, seed=0) -> Ratings:
    """Ratings ``mu + b + c + u.v + N(0, noise^2)`` from planted factors (continuous values,
    a rating range wide enough that nothing is clipped)."""
    g = np.random.default_rng(seed)
    u, v = g.normal(0, 0.7, (n_users, k)), g.normal(0, 0.7, (n_items, k))
    b, c = g.normal(0, 0.3, n_users), g.normal(0, 0.3, n_items)
    user, item = np.nonzero(g.random((n_users, n_items)) < density)
    rating = 3 + b[user] + c[item] + (u[user] * v[item]).sum(1) + g.normal(0, noise, len(user))
    genres = [[f"g{j}" for j in np.flatnonzero(g.random(4) < 0.5)] for _ in range(n_items)]
    return Ratings(name="planted", user=torch.from_numpy(user.astype(np.int32)),
                   item=torch.from_numpy(item.astype(np.int32)),
                   rating=torch.from_numpy(rating.astype(np.float32)), timestamp=None,
                   user_ids=torch.arange(1, n_users + 1),
                   movies=Catalog.from_genre_lists(torch.arange(1, n_items + 1),
                                                   [f"M{i}" for i in range(n_items)], genres),
                   rating_range=(-20.0, 30.0))


GIBBS = InferenceConfig(method="gibbs", warm_start=5, burn_in=20, samples=80, keep=8,
                        checkpoint_every=7)


@pytest.fixture(scope="module")
def planted_chain():
    r = planted()
    split = make_split(r, fractions=(0.7, 0.1, 0.2), seed=0)
    return r, split, sample(r, split, ModelConfig(name="embeddings", K=3).validated(), GIBBS)


def test_predictive_intervals_are_calibrated_and_the_mean_reaches_the_noise(planted_chain):
    r, split, chain = planted_chain
    f = chain.fit.final
    assert f["test/n"] > 4000
    assert 0.88 <= f["test/coverage_90"] <= 0.92, f["test/coverage_90"]
    assert 0.46 <= f["test/coverage_50"] <= 0.54, f["test/coverage_50"]
    assert f["test/rmse"] < 0.56  # the planted noise is 0.5
    lam = [h["hyper/lam"] for h in chain.fit.history[GIBBS.burn_in:]]
    assert 1 / np.mean(lam) == pytest.approx(0.25, rel=0.2)  # it learned the noise variance
    assert f["samples_kept"] == 8 and f["burn_in"] == 20 and f["samples_averaged"] == 80


def test_posterior_mean_is_the_average_of_sample_predictions(planted_chain):
    r, split, chain = planted_chain
    post = chain.posterior
    assert post.size == 8 and not torch.equal(post.samples["item_factors"][0],
                                              post.samples["item_factors"][1])
    user, item = r.user[split.test][:500], r.item[split.test][:500]
    each = torch.stack([post.sample(s).predict(user, item) for s in range(post.size)])
    np.testing.assert_allclose(chain.fit.params.predict(user, item), each.mean(0), atol=1e-4)
    mean, std = post.predict(user, item)
    np.testing.assert_allclose(mean, each.mean(0), atol=1e-5)
    assert bool((std >= post.noise_var.mean().sqrt() - 1e-6).all())


def test_a_seeded_chain_is_reproducible_and_a_killed_one_resumes_to_the_same_end(tmp_path):
    r = planted(n_users=120, n_items=80, seed=4)
    split = make_split(r, seed=0)
    cfg = ModelConfig(name="features", K=2, genre_bias=True).validated()
    inf = InferenceConfig(method="gibbs", warm_start=2, burn_in=4, samples=12, keep=4,
                          checkpoint_every=5)
    whole = sample(r, split, cfg, inf, seed=3)
    again = sample(r, split, cfg, inf, seed=3)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN too
    assert same(again.fit.final, whole.fit.final)

    class Kill:
        def on_epoch(self, epoch, record, params):
            if epoch == 12:
                raise KeyboardInterrupt  # after the checkpoint of sweep 10

    ckpt = tmp_path / "chain.pt"
    with pytest.raises(KeyboardInterrupt):
        sample(r, split, cfg, inf, seed=3, checkpoint=ckpt, fingerprint="x", callbacks=(Kill(),))
    assert load_checkpoint(ckpt, "x")["sweep"] == 10
    resumed = sample(r, split, cfg, inf, seed=3, checkpoint=ckpt, fingerprint="x")
    assert same(resumed.fit.final, whole.fit.final)
    for key, value in whole.posterior.samples.items():
        assert torch.equal(resumed.posterior.samples[key], value), key


def test_normal_gamma_draws_match_the_conjugate_posterior():
    rng = np.random.default_rng(0)
    x = rng.normal(1.5, 2.0, (5000, 1))
    draws = [normal_gamma(x, 1.0, 1.0, 1.0, rng) for _ in range(300)]
    means = np.array([m[0] for m, _ in draws])
    precisions = np.array([p[0] for _, p in draws])
    assert means.mean() == pytest.approx(1.5, abs=0.08)
    assert precisions.mean() == pytest.approx(0.25, rel=0.05)


def test_gibbs_refuses_the_latent_rung_and_bad_settings():
    r = random_ratings(seed=1)
    with pytest.raises(ConfigError, match="rungs biases, embeddings, features"):
        sample(r, make_split(r), ModelConfig(name="latent", K=2).validated(),
               InferenceConfig(method="gibbs"))
    with pytest.raises(ConfigError, match="joint_genre_step=true is an ALS step"):
        sample(r, make_split(r), ModelConfig(name="features", K=2).validated(),
               InferenceConfig(method="gibbs"), TrainConfig(joint_genre_step=True))
    with pytest.raises(ConfigError, match="eval_test=false"):
        sample(r, make_split(r), ModelConfig(name="biases").validated(),
               InferenceConfig(method="gibbs"), TrainConfig(eval_test=False))
    with pytest.raises(ConfigError, match="inference.samples=0"):
        InferenceConfig(method="gibbs", samples=0)
    with pytest.raises(ConfigError, match="inference.samples=400 is a Gibbs setting"):
        InferenceConfig(samples=400)
    with pytest.raises(ConfigError, match="inference.method=vb"):
        InferenceConfig(method="vb")


def test_gibbs_run_publishes_a_model_that_answers_with_uncertainty(small_root, tmp_path,
                                                                   caplog):
    with caplog.at_level(logging.WARNING, logger="rec.bayes.chain"):
        train(tmp_path, small_root, "inference=gibbs", "inference.burn_in=3",
              "inference.samples=8", "inference.keep=4", "inference.warm_start=2",
              "train.max_epochs=7", "tensorboard=false", "progress=false")
    # ALS's stopping rule is said to be unused, not ignored in silence
    said = [r.getMessage() for r in caplog.records if "train.max_epochs=7" in r.getMessage()]
    assert len(said) == 1 and "11 sweeps" in said[0] and "patience" not in said[0]
    model = Recommender.load(tmp_path / "models" / "ml-latest-small" / RANDOM /
                             "features+genre_bias+flipped+year+drift+gibbs-K10.pt")
    # the samples by name; the embeddings (posterior means, K = 10) and the packed predictor
    assert model.posterior.size == 4 and model.params.user_factors.shape[1] == 10
    assert model.predictor.user_factors.shape[1] == 40
    metrics = json.loads((tmp_path / "outputs" / "run" / "metrics.json").read_text())
    assert metrics["inference"]["method"] == "gibbs" and metrics["final"]["samples_kept"] == 4
    assert 0 < metrics["final"]["test/coverage_50"] < metrics["final"]["test/coverage_90"] < 1
    user, movie = int(model.user_ids[0]), int(model.movies.ids[0])
    mean, std = model.predict_with_std(user, movie)
    assert mean == pytest.approx(model.predict(user, movie), abs=1e-4) and std > 0
    by_mean = model.recommend_with_uncertainty(user, 5)
    assert [m["movie_id"] for m in by_mean] == [m["movie_id"] for m in model.recommend(user, 5)]
    optimistic = model.recommend_with_uncertainty(user, 5, rank_by="quantile", quantile=0.95)
    assert optimistic[0]["score"] >= optimistic[0]["mean"]
    pairs = [(int(model.movies.ids[i]), 4.5) for i in range(3)]
    u, b = model.fold_in_samples(pairs)
    scores = model._posterior().scores(u, b).mean(0)
    np.testing.assert_allclose(model.item_scores(*model.fold_in(pairs)), scores, atol=1e-4)
    mean, std = model.predict_new_movie_with_std(["Comedy"])
    assert mean.shape == std.shape == (len(model.user_ids),) and bool((std > 0).all())
    with pytest.raises(RecError, match="quantile"):
        model.recommend_with_uncertainty(user, 5, rank_by="quantile", quantile=1.5)


@pytest.mark.parametrize("kernel", ["torch", "fused"])
@pytest.mark.parametrize("rung", ["biases", "features"])
def test_a_draw_counts_the_training_error_from_its_own_grams(rung, kernel):
    r = random_ratings(seed=5)
    e = ALS.from_ratings(ModelConfig(name=rung, K=3).validated(), r.user, r.item, r.rating, r.n_users,
            r.n_items, r.movies.genre_matrix(torch.float64), dtype=torch.float64,
            sizes=EngineSizes(kernel, tile_cols=7, tile_min=2))
    assert e.by_item.n_tiles > 1
    p = e.initial_params(r.n_genres, 0)
    e.epoch(p)
    g = torch.Generator().manual_seed(0)
    precision = torch.full((e.width,), 2.0, dtype=torch.float64)
    mean = torch.zeros(r.n_items, e.width, dtype=torch.float64)
    sse = e.draw_step(p, "item", 1.7, precision, mean,
                      torch.randn(r.n_items, e.width, generator=g, dtype=torch.float64))
    assert sse == pytest.approx(e.train_errors(p)[0], rel=1e-10)


def test_an_unfinished_gibbs_run_resumes_through_train_py(small_root, tmp_path):
    overrides = ("model=embeddings", "inference=gibbs", "inference.burn_in=2",
                 "inference.samples=6", "inference.keep=2", "inference.warm_start=1",
                 "inference.checkpoint_every=3", "tensorboard=false", "progress=false")
    first, _ = train(tmp_path, small_root, *overrides)
    run_file = tmp_path / "outputs" / "run" / "run.json"
    info = json.loads(run_file.read_text())
    run_file.write_text(json.dumps({**info, "finished": False}))  # as if killed after the end
    again, _ = train(tmp_path, small_root, *overrides, run="again")
    assert again["final"]["test/rmse"] == first["final"]["test/rmse"]
    assert len(again["history"]) == len(first["history"]) == 8
    assert again["timing"]["epochs_timed"] == 0  # resumed at its last sweep: none ran again


def test_tensorboard_shows_the_chain_per_sweep(small_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    summary, _ = train(tmp_path, small_root, "model=biases", "inference=gibbs",
                       "inference.burn_in=2", "inference.samples=3", "inference.keep=3",
                       "inference.warm_start=1", "progress=false", "train.profile=true",
                       f"paths.tensorboard={tmp_path / 'tb'}")
    events = EventAccumulator(summary["tensorboard"], size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("val/rmse", "test/rmse", "val/sample_rmse", "test/sample_rmse", "hyper/lam",
                "hyper/gamma_user", "hyper/gamma_item"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4, 5], tag
    history = summary["history"]
    assert events.Scalars("hyper/lam")[-1].value == pytest.approx(history[-1]["hyper/lam"])
    assert history[0]["val/rmse"] == history[0]["val/sample_rmse"]  # burn-in: no mean yet
    phases = {k for k in history[0] if k.startswith("profile/")}  # train.profile=true
    assert {"profile/kernel_s", "profile/genre_s"} <= phases  # the fused kernel's phases
    final = EventAccumulator(str(Path(summary["tensorboard"]) / "final"))
    final.Reload()
    assert "test/coverage_90" in final.Tags()["scalars"]


def _gibbs_model(small, S=5, K=3, seed=0):
    """A Gibbs model of ml-latest-small from random samples (the answers' algebra does not
    depend on the chain that drew them)."""
    from rec.als.params import Params
    from rec.bayes.posterior import Posterior
    g = torch.Generator().manual_seed(seed)
    n_u, n_i, n_g = small.n_users, small.n_items, small.n_genres
    samples = {"user_factors": torch.randn(S, n_u, K, generator=g) * 0.5,
               "user_bias": torch.randn(S, n_u, generator=g) * 0.2,
               "item_factors": torch.randn(S, n_i, K, generator=g) * 0.5,
               "item_bias": torch.randn(S, n_i, generator=g) * 0.2,
               "genre_factors": torch.randn(S, n_g, K, generator=g) * 0.3,
               "genre_bias": torch.randn(S, n_g, generator=g) * 0.1}
    post = Posterior(samples, 3.5, torch.full((S,), 0.8), torch.ones(S, K + 1), torch.zeros(S, K))
    split = make_split(small)
    packed = post.predictive_params()  # what the chain hands over as its fit's params
    cfg = ModelConfig(name="features", K=K)
    return Recommender.from_training(small, split.train, packed, cfg, posterior=post), samples


def test_a_gibbs_model_keeps_its_embeddings_and_its_predictor_apart(small, tmp_path):
    model, s = _gibbs_model(small)
    # params: each parameter's posterior mean, K dimensions, what the analyses read
    assert model.params.dim == 3 and model.predictor.dim == 15
    torch.testing.assert_close(model.params.item_factors, s["item_factors"].mean(0))
    torch.testing.assert_close(model.params.genre_factors, s["genre_factors"].mean(0))
    # the predictor's predictions are the mean over samples of each sample's prediction
    users, items = torch.tensor([0, 5, 9]), torch.tensor([1, 2, 30])
    each = 3.5 + s["user_bias"][:, users] + s["item_bias"][:, items] + (
        s["user_factors"][:, users] * s["item_factors"][:, items]).sum(-1)
    got = model.predict_ids(model.user_ids[users], model.movies.ids[items])
    torch.testing.assert_close(got, each.mean(0).clamp(0.5, 5.0), atol=1e-5, rtol=0)
    # ... which is not what the mean embeddings predict (the mean of products)
    from_means = model.params.predict(users, items)
    assert not torch.allclose(from_means, each.mean(0), atol=1e-3)
    # geometry from the posterior means: a movie's nearest by cosine of mean embeddings
    v = s["item_factors"].mean(0)
    unit = v / v.norm(dim=1, keepdim=True)
    top = model.similar(int(model.movies.ids[7]), k=1)[0]
    cos = unit @ unit[7]
    cos[7] = -2
    assert top["movie_id"] == int(model.movies.ids[int(cos.argmax())])
    torch.testing.assert_close(model.new_movie(["Comedy"]),
                               s["genre_factors"].mean(0)[model.movies.genre_names.index("Comedy")])
    # saved and loaded: the same two
    back = Recommender.load(model.save(tmp_path / "gibbs.pt"))
    torch.testing.assert_close(back.params.item_factors, model.params.item_factors)
    torch.testing.assert_close(back.predict_ids(model.user_ids[users], model.movies.ids[items]), got)
    with pytest.raises(RecError, match="posterior means, 3 dimensions, not 15"):
        Recommender(**{**{k: getattr(model, k) for k in ("config", "dataset", "user_ids", "movies",
                                                          "item_counts", "rated_offsets",
                                                          "rated_items", "rating_range")},
                       "params": model.predictor, "posterior": model.posterior})


def test_analyses_of_a_gibbs_model_read_its_posterior_mean_embeddings(small):
    from rec.analysis.genre_structure import describe
    model, s = _gibbs_model(small, K=4)
    numbers, _ = describe(model, 3)
    assert numbers["K"] == 4  # not K S = 20, the packed predictor's width
    from types import SimpleNamespace
    from rec.analysis.polarization import _movies
    table, _ = _movies(SimpleNamespace(ratings=small), model, min_count=50)
    mean_norm = s["item_factors"].mean(0).double().norm(dim=1).numpy()
    rms_norm = s["item_factors"].double().square().sum(-1).mean(0).sqrt().numpy()
    index = [model.item_index(int(i)) for i in table["movie_id"]]
    np.testing.assert_allclose(table["norm"].to_numpy(), mean_norm[index], rtol=1e-5)
    assert not np.allclose(table["norm"].to_numpy(), rms_norm[index], rtol=1e-2)  # not the packed
