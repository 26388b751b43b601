"""What the person is (``model.person_features``): the prior mean ``D Z`` of a person's
factors and ``D zeta`` of their bias; the Z step against a dense solve, J never rising, the
draw against its closed form, fold-in with attributes, refusals, resume after a kill."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from rec.als import ModelConfig
from rec.als.sizes import EngineSizes
from rec.bayes.chain import sample
from rec.bayes.config import InferenceConfig
from rec.bayes.sampler import GibbsSampler
from rec.data.people import People, attribute_list
from rec.data.splits import make_split
from rec.errors import ConfigError, RecError
from rec.model import Recommender
from rec.training import build_engine
from tests.conftest import assert_killed_run_resumes, random_ratings

GENDERS, OCCUPATIONS = ("F", "M"), ("writer", "engineer", "student")


def with_people(r, seed=0, undescribed=3):
    """``r`` with random attributes for every person but the last ``undescribed``."""
    g = np.random.default_rng(seed)
    lists = [attribute_list(GENDERS[g.integers(2)], int(g.integers(12, 70)),
                            OCCUPATIONS[g.integers(3)]) for _ in range(r.n_users)]
    lists[-undescribed:] = [[] for _ in range(undescribed)]
    return replace(r, people=People.from_lists(lists))


def _engine(r, cfg, kernel="torch", dtype=torch.float64, relaxation=1.0):
    return build_engine(r, None, cfg, EngineSizes(kernel), dtype=dtype, relaxation=relaxation)


@pytest.mark.parametrize("kernel", ["torch", "fused"])
@pytest.mark.parametrize("terms", [{}, {"svdpp": True}, {"reg_scaling": "count"}])
def test_every_step_lowers_j_with_the_person_prior(terms, kernel):
    r = with_people(random_ratings(seed=5))
    cfg = ModelConfig(name="features", K=3, tau=2.0, gamma=1.0, eta=0.5, genre_bias=True,
                      person_features=True, **terms)
    e = _engine(r, cfg, kernel, relaxation=1.5)
    p = e.initial_params(e.n_features, 0)
    p.person_factors.normal_()
    p.person_bias.normal_()
    last = e.objective(p)
    for _ in range(4):
        for step in (e.user_step, e.person_step, e.rated_step, e.item_step, e.genre_step):
            step(p)
            now = e.objective(p)
            assert now <= last * (1 + 1e-10), step.__name__
            last = now


def test_the_z_step_is_the_dense_ridge_solution_and_cold_people_start_at_their_prior():
    r = with_people(random_ratings(seed=6))  # random_ratings leaves its first 2 people unrated
    cfg = ModelConfig(name="features", K=2, tau=2.0, gamma=1.5, eta=0.7, person_features=True)
    e = _engine(r, cfg)
    p = e.initial_params(e.n_features, 1)
    e.user_step(p)
    e.person_step(p)
    d = r.people.feature_matrix(torch.float64)
    eye = torch.eye(d.shape[1], dtype=torch.float64)
    for precision, values, got in ((cfg.tau, p.user_factors, p.person_factors),
                                   (cfg.gamma, p.user_bias.unsqueeze(1), p.person_bias)):
        want = torch.linalg.solve(precision * d.T @ d + cfg.eta * eye, precision * d.T @ values)
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-12)
    e.user_step(p)
    np.testing.assert_allclose(p.user_factors[:2], (d @ p.person_factors)[:2], atol=1e-12)
    np.testing.assert_allclose(p.user_bias[:2], (d @ p.person_bias)[:2], atol=1e-12)
    assert float(p.person_factors.abs().sum()) > 0


def test_a_z_draw_follows_the_exact_gaussian_conditional():
    """20,000 draws of Z's column from the same target: mean and covariance against
    ``N(P^-1 a D^T y, P^-1)``, ``P = a D^T D + eta I``."""
    r = with_people(random_ratings(n_users=30, seed=7), undescribed=1)
    cfg = ModelConfig(name="features", K=2, person_features=True)
    e = _engine(r, cfg)
    sampler = GibbsSampler(e, InferenceConfig(method="gibbs"), seed=0)
    y = torch.randn(r.n_users, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    n, a, eta = 20000, 2.0, 0.8
    draws = torch.stack([sampler._ridge_draw(y, np.array([a]), eta, e.person_matrix,
                                             sampler.person_gram)[:, 0] for _ in range(n)])
    d = e.person_matrix
    cov = torch.linalg.inv(a * d.T @ d + eta * torch.eye(d.shape[1], dtype=torch.float64))
    mean = cov @ (a * d.T @ y[:, 0])
    np.testing.assert_allclose(draws.mean(0), mean, atol=5 * float(cov.diag().max().sqrt()) / n ** 0.5)
    np.testing.assert_allclose(torch.cov(draws.T), cov, atol=0.05 * float(cov.diag().max()))


def test_a_gibbs_sweep_draws_z_and_zeta_and_traces_their_precisions():
    r = with_people(random_ratings(n_users=60, n_items=40, seed=9))
    e = _engine(r, ModelConfig(name="features", K=2, person_features=True), dtype=torch.float32)
    p = e.initial_params(e.n_features, 0)
    trace = GibbsSampler(e, InferenceConfig(method="gibbs"), seed=0).sweep(p).trace()
    assert trace["eta_person"] > 0 and trace["eta_person_bias"] > 0
    assert float(p.person_factors.abs().sum()) > 0 and float(p.person_bias.abs().sum()) > 0


@pytest.mark.parametrize("method", ["als", "gibbs"])
def test_fold_in_with_attributes_is_the_user_step_of_a_person_with_them(method, tmp_path):
    """A known person's ratings and attributes, folded in through the published model, give
    their own user step (ALS) or per-sample conditional means (Gibbs); a model file keeps the
    people's features."""
    r = with_people(random_ratings(seed=8))
    cfg = ModelConfig(name="features", K=3, tau=2.0, person_features=True)
    m = int(r.user[len(r) // 2])  # rated, and described
    mine = r.user == m
    pairs = [(int(r.movies.ids[i]), float(v)) for i, v in zip(r.item[mine], r.rating[mine])]
    people = r.people
    names = [people.names[i] for i in people.index[people.offsets[m]:people.offsets[m + 1]]]
    attributes = {n.split(":")[0]: n.split(":")[1] for n in names}
    attributes["age"] = {"under 18": 12, "56+": 60}.get(attributes["age"],
                                                        int(attributes["age"][:2]))
    if method == "als":
        e = _engine(r, cfg)
        p = e.initial_params(e.n_features, 2)
        for _ in range(3):
            e.epoch(p)
        stepped = p.clone()
        e.user_step(stepped)
        model = Recommender.from_training(r, torch.arange(len(r)), p.to(dtype=torch.float32), cfg)
        path = model.save(tmp_path / "m.pt")
        u, b = Recommender.load(path).fold_in(pairs, attributes)
        np.testing.assert_allclose(u, stepped.user_factors[m].float(), atol=1e-4)
        np.testing.assert_allclose(b, float(stepped.user_bias[m]), atol=1e-4)
        plain, _ = model.fold_in(pairs)
        assert float((plain - u).abs().max()) > 1e-3
    else:
        split = make_split(r, seed=0)
        inf = InferenceConfig(method="gibbs", warm_start=2, burn_in=2, samples=4, keep=2)
        result = sample(r, split, cfg, inf, seed=1)
        model = Recommender.from_training(r, split.train, result.fit.params, cfg,
                                          posterior=result.posterior)
        model = Recommender.load(model.save(tmp_path / "g.pt"))
        u, b = model.fold_in_samples(pairs, attributes)
        plain, _ = model.fold_in_samples(pairs)
        assert u.shape == (2, 3) and float((plain - u).abs().max()) > 1e-4
    with pytest.raises(RecError, match="not among"):
        model.fold_in(pairs, {"occupation": "astronaut"})


def test_person_features_are_refused_where_they_cannot_apply():
    with pytest.raises(ConfigError, match="features"):
        ModelConfig(name="embeddings", person_features=True)
    with pytest.raises(ConfigError, match="features"):
        ModelConfig(name="features", feedback="implicit", person_features=True)
    with pytest.raises(ConfigError, match="does not describe its people"):
        _engine(random_ratings(seed=1), ModelConfig(name="features", K=2, person_features=True))
    r = random_ratings(seed=1)
    model = Recommender.from_training(r, torch.arange(len(r)),
                                      _engine(r, ModelConfig(K=2)).initial_params(r.n_genres, 0),
                                      ModelConfig(K=2))
    pair = [(int(r.movies.ids[int(r.item[0])]), 4.0)]
    with pytest.raises(RecError, match="without model.person_features"):
        model.fold_in(pair, {"gender": "F"})


@pytest.mark.parametrize("method", ["als", "gibbs"])
def test_a_killed_run_with_person_features_resumes_to_the_same_result(method, tmp_path):
    r = with_people(random_ratings(n_users=60, n_items=40, seed=10))
    cfg = ModelConfig(name="features", K=2, genre_bias=True, person_features=True, svdpp=True)
    assert_killed_run_resumes(r, cfg, method, tmp_path,
                              ("person_factors", "person_bias", "user_factors"), relaxation=1.5)
