"""Time-aware biases (``model.time_bins``, ``model.time_drift``): each step against a dense
solve, J never rising on both kernels, the Gibbs conditional against its closed form,
predictions that use a rating's day, refusals, and resume after a kill."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from rec.als import ModelConfig
from rec.als.params import Params, days, deviation
from rec.als.sizes import EngineSizes
from rec.als.time_biases import time_axis
from rec.bayes.config import InferenceConfig
from rec.bayes.sampler import GibbsSampler
from rec.data.splits import make_split
from rec.errors import ConfigError
from rec.training import TrainConfig, build_engine, fit
from tests.conftest import assert_killed_run_resumes, random_ratings

TERMS = [{"time_bins": 4}, {"time_drift": True}, {"time_bins": 3, "time_drift": True}]


def _engine(r, cfg, kernel="torch", dtype=torch.float64, relaxation=1.0):
    return build_engine(r, None, cfg, EngineSizes(kernel), dtype=dtype, relaxation=relaxation)


def _moved(e, r, seed=0) -> Params:
    """Initial parameters with every block away from its optimum."""
    p = e.initial_params(e.n_features, seed)
    g = torch.Generator().manual_seed(seed)
    for name in ("user_bias", "item_bias", "bin_bias", "drift"):
        x = getattr(p, name)
        x.copy_(torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype) * 0.3)
    return p


def test_the_bins_hold_equal_counts_and_each_persons_mean_day():
    user = torch.tensor([0, 0, 1, 1, 1, 1, 0, 1])
    day = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8], dtype=torch.float64)
    edges, mean = time_axis(user, day, 3, 4)
    np.testing.assert_allclose(edges, [2.75, 4.5, 6.25])
    counts = torch.bincount(torch.bucketize(day, edges, right=True), minlength=4)
    assert counts.tolist() == [2, 2, 2, 2]
    np.testing.assert_allclose(mean, [10 / 3, 26 / 5, 36 / 8])  # no ratings: the overall mean
    np.testing.assert_allclose(deviation(torch.tensor([0.0, 9.0, 1.0]), torch.tensor(1.0)),
                               [-1.0, 8 ** 0.4, 0.0])


@pytest.mark.parametrize("kernel", ["torch", "fused"])
@pytest.mark.parametrize("terms", TERMS)
@pytest.mark.parametrize("rung", ["biases", "embeddings", "features"])
def test_every_step_lowers_j_with_the_time_terms(rung, terms, kernel):
    r = random_ratings(seed=5)
    extra = {"genre_bias": True, "reg_scaling": "count"} if rung == "features" else {}
    cfg = ModelConfig(name=rung, K=3, tau=2.0, gamma=1.0, gamma_time=0.5, gamma_drift=2.0,
                      **terms, **extra)
    e = _engine(r, cfg, kernel, relaxation=1.5)
    assert e.sizes.kernel == kernel
    p = _moved(e, r)
    last = e.objective(p)
    for _ in range(4):
        for step in (e.user_step, e.item_step, e.genre_step, e.time_step):
            step(p)
            now = e.objective(p)
            assert now <= last * (1 + 1e-10), step.__name__
            last = now


def _dense_j(e, p, bin_bias, drift, user_bias):
    """J as a function of the time terms and the people's biases alone, from the raw ratings
    (autograd-able)."""
    t, cfg = e.timed, e.cfg
    static = replace(p.without_time(), user_bias=torch.zeros_like(p.user_bias))
    fit_ = static.predict(t.user, t.item) + user_bias[t.user] + drift[t.user] * t.dev
    fit_ = fit_ + bin_bias.reshape(-1)[t.key]
    return cfg.lam / 2 * ((t.rating - fit_) ** 2).sum() + cfg.gamma_time / 2 * (
        bin_bias ** 2).sum() + cfg.gamma_drift / 2 * (drift ** 2).sum() + cfg.gamma / 2 * (
        user_bias ** 2).sum()


def test_each_time_step_is_the_dense_minimizer_of_its_block():
    """The bins given the rest, then each person's bias and drift together given the new
    bins: each equals the dense ridge solution of J over that block, from the raw ratings."""
    r = random_ratings(seed=7)
    cfg = ModelConfig(name="features", K=2, gamma=1.5, gamma_time=0.7, gamma_drift=3.0,
                      time_bins=3, time_drift=True)
    e = _engine(r, cfg)
    p = _moved(e, r, 1)
    t = e.timed
    n, n_keys = t.user.numel(), p.bin_bias.numel()
    x_bins = torch.nn.functional.one_hot(t.key.long(), n_keys).double()
    x_people = torch.zeros(n, 2 * e.n_users, dtype=torch.float64)  # [b | alpha]
    x_people[torch.arange(n), t.user] = 1.0
    x_people[torch.arange(n), e.n_users + t.user] = t.dev
    static = replace(p.without_time(), user_bias=torch.zeros_like(p.user_bias))
    residual = t.rating - static.predict(t.user, t.item)
    people = x_people @ torch.cat([p.user_bias, p.drift])
    eye = lambda k: torch.eye(k, dtype=torch.float64)
    want_bins = torch.linalg.solve(cfg.lam * x_bins.T @ x_bins + cfg.gamma_time * eye(n_keys),
                                   cfg.lam * x_bins.T @ (residual - people))
    e.time_step(p)
    np.testing.assert_allclose(p.bin_bias.reshape(-1), want_bins, rtol=1e-9, atol=1e-12)
    prior = torch.cat([torch.full((e.n_users,), cfg.gamma, dtype=torch.float64),
                       torch.full((e.n_users,), cfg.gamma_drift, dtype=torch.float64)])
    want = torch.linalg.solve(cfg.lam * x_people.T @ x_people + torch.diag(prior),
                              cfg.lam * x_people.T @ (residual - x_bins @ want_bins))
    np.testing.assert_allclose(torch.cat([p.user_bias, p.drift]), want, rtol=1e-9, atol=1e-12)
    # repeated steps reach the joint minimizer: J's gradient in all three blocks vanishes
    for _ in range(300):
        e.time_step(p)
    b, d, u = (x.clone().requires_grad_() for x in (p.bin_bias, p.drift, p.user_bias))
    _dense_j(e, p, b, d, u).backward()
    assert max(float(x.grad.abs().max()) for x in (b, d, u)) < 1e-8


def test_a_time_draw_follows_the_exact_gaussian_conditional():
    """4,000 draws of the biases per bin, and of each person's (bias, drift) pair, from the
    same state: their mean and (co)variance against the closed form."""
    r = random_ratings(seed=8)
    cfg = ModelConfig(name="embeddings", K=2, time_bins=2, time_drift=True)
    e = _engine(r, cfg)
    p = _moved(e, r, 2)
    t, lam, gammas = e.timed, 1.3, (0.8, 2.5, 1.7)
    g = torch.Generator().manual_seed(4)
    start = p.clone()
    keys, n = p.bin_bias.numel(), 4000
    bins, pairs = [], []
    for _ in range(n):
        q = start.clone()
        q.drift.zero_()  # the bins' conditional given drifts 0
        t.bin_step(q, t.bin_sums(t.residuals(q)), lam, gammas[0], False,
                   noise=torch.randn(keys, generator=g, dtype=torch.float64))
        bins.append(q.bin_bias.reshape(-1).clone())
        q = start.clone()
        q.bin_bias.zero_()
        t.drift_step(q, t.drift_sums(t.residuals(q)), lam, gammas[1], gammas[2], None, None,
                     noise=torch.randn(2, e.n_users, generator=g, dtype=torch.float64))
        pairs.append(torch.stack([q.user_bias, q.drift]).clone())
    bins, pairs = torch.stack(bins), torch.stack(pairs)  # (n, keys), (n, 2, users)
    no_bias = replace(start.without_time(), user_bias=torch.zeros_like(start.user_bias))
    e_ = t.rating - no_bias.predict(t.user, t.item)
    count = torch.bincount(t.key, minlength=keys).double()
    precision = lam * count + gammas[0]
    e_bins = e_ - start.user_bias[t.user]
    mean = lam * torch.zeros(keys, dtype=torch.float64).index_add_(0, t.key, e_bins) / precision
    np.testing.assert_allclose(bins.mean(0), mean, atol=5 / (n * precision.min()) ** 0.5)
    np.testing.assert_allclose(bins.var(0), 1 / precision, rtol=0.12)
    for m in torch.unique(t.user)[:6].tolist():
        mine = t.user == m
        x = torch.stack([torch.ones(int(mine.sum()), dtype=torch.float64), t.dev[mine]], 1)
        prec = lam * x.T @ x + torch.diag(torch.tensor(gammas[2:0:-1], dtype=torch.float64))
        cov = torch.linalg.inv(prec)
        want = cov @ (lam * x.T @ e_[mine])
        draws = pairs[:, :, m]
        np.testing.assert_allclose(draws.mean(0), want, atol=5 * float(cov.diag().max().sqrt()) / n ** 0.5)
        np.testing.assert_allclose(torch.cov(draws.T), cov, atol=0.12 * float(cov.diag().max()))


def test_training_errors_and_predictions_use_each_ratings_day():
    """The layouts' values are ``r - o``: the engine's training errors equal
    :meth:`Params.predict` with the ratings' days, on both kernels, the fused one with the
    ratings ordered by person (its by-user layout takes ``r - o`` as it is computed) and not;
    without a day the time terms are left out."""
    ordered = random_ratings(seed=11)
    shuffle = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(1))
    shuffled = replace(ordered, **{name: getattr(ordered, name)[shuffle]
                                   for name in ("user", "item", "rating", "timestamp")})
    cfg = ModelConfig(name="features", K=2, time_bins=3, time_drift=True)
    for kernel, r, in_order in (("torch", ordered, False), ("fused", ordered, True),
                                ("fused", shuffled, False)):
        e = _engine(r, cfg, kernel, dtype=torch.float32)
        assert (e.timed.slots[0] is None) == in_order
        p = _moved(e, r, 3)
        for step in (e.user_step, e.item_step, e.time_step):
            step(p)
        user, item = r.user.long(), r.item.long()
        fitted = p.predict(user, item, days(r.timestamp))
        want = float(((r.rating.double() - fitted.double()) ** 2).sum())
        np.testing.assert_allclose(e.train_errors(p)[0], want, rtol=1e-5)
        static = p.predict(user, item)
        assert float((fitted - static).abs().max()) > 1e-3
        np.testing.assert_allclose(fitted - static, p.time_offset(user, item, days(r.timestamp)),
                                   atol=1e-6)


def test_a_gibbs_sweep_draws_the_time_terms_and_traces_their_precisions():
    r = random_ratings(n_users=60, n_items=40, seed=9)
    cfg = ModelConfig(name="features", K=2, time_bins=3, time_drift=True)
    e = _engine(r, cfg, dtype=torch.float32)
    p = e.initial_params(e.n_features, 0)
    sampler = GibbsSampler(e, InferenceConfig(method="gibbs"), seed=0)
    before = p.clone()
    trace = sampler.sweep(p).trace()
    assert trace["gamma_time"] > 0 and trace["gamma_drift"] > 0
    assert not torch.equal(p.bin_bias, before.bin_bias)
    assert not torch.equal(p.drift, before.drift)
    np.testing.assert_allclose(sampler.sse, e.train_errors(p)[0], rtol=1e-4)


def test_the_time_terms_are_refused_where_they_cannot_apply():
    with pytest.raises(ConfigError, match="no biases"):
        ModelConfig(name="latent", time_bins=4)
    with pytest.raises(ConfigError, match="no biases"):
        ModelConfig(name="embeddings", feedback="implicit", time_drift=True)
    with pytest.raises(ConfigError, match="2 or more"):
        ModelConfig(time_bins=1)
    r = random_ratings(seed=1)
    with pytest.raises(ConfigError, match="timestamps"):
        _engine(replace(r, timestamp=None), ModelConfig(time_bins=3))
    split = make_split(r, seed=0, kind="strong")
    with pytest.raises(ConfigError, match="strong"):
        fit(r, split, ModelConfig(time_drift=True), TrainConfig(max_epochs=1))


@pytest.mark.parametrize("method", ["als", "gibbs"])
def test_a_killed_run_with_the_time_terms_resumes_to_the_same_result(method, tmp_path):
    r = random_ratings(n_users=60, n_items=40, seed=10)
    cfg = ModelConfig(name="features", K=2, genre_bias=True, time_bins=3, time_drift=True)
    assert_killed_run_resumes(r, cfg, method, tmp_path, ("bin_bias", "drift", "user_factors"),
                              relaxation=1.5)


def test_the_compiled_pass_gives_the_torch_ops_targets_and_residuals(monkeypatch):
    r = random_ratings(seed=12)
    e = _engine(r, ModelConfig(name="features", K=3, time_bins=3, time_drift=True))
    p = _moved(e, r, 4)
    compiled = e.timed.targets(p, residual=True, workspace=e.workspace)
    monkeypatch.setattr("rec.als.time_biases.kernel.AVAILABLE", False)
    plain = e.timed.targets(p, residual=True)
    for a, b in zip(compiled, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("terms", [{"time_drift": True}, {"time_bins": 3},
                                   {"time_bins": 3, "time_drift": True}])
@pytest.mark.parametrize("method", ["als", "gibbs"])
def test_the_compiled_time_step_equals_the_residual_path(method, terms, monkeypatch):
    """On a CPU with Numba each time term takes one compiled pass of sums that stores no
    residual, and the errors after the steps follow by formula; they give the general path's
    parameters and errors (which stores the residuals and updates them)."""
    r = random_ratings(seed=13)
    cfg = ModelConfig(name="features", K=3, genre_bias=True, **terms)
    e = _engine(r, cfg, relaxation=1.4)
    start = _moved(e, r, 5)
    g = torch.Generator().manual_seed(6)
    noise = (torch.randn(start.bin_bias.numel(), dtype=torch.float64, generator=g),
             torch.randn(2, e.n_users, dtype=torch.float64, generator=g))
    args = {"als": (), "gibbs": (1.2, (1.5, 3.0, 2.0), noise)}[method]
    fast, slow = start.clone(), start.clone()
    sse_fast = e.time_step(fast, *args)
    monkeypatch.setattr(type(e.timed), "compiled", property(lambda self: False))
    sse_slow = e.time_step(slow, *args)
    for name in ("bin_bias", "user_bias", "drift"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-10, atol=1e-12)
    assert not torch.equal(fast.bin_bias if "time_bins" in terms else fast.drift,
                           start.bin_bias if "time_bins" in terms else start.drift)
    np.testing.assert_allclose(sse_fast, sse_slow, rtol=1e-10)
    np.testing.assert_allclose(sse_fast, e.train_errors(fast)[0], rtol=1e-10)
