"""Time-aware biases (``model.time_bins``, ``model.time_drift``): each step against a dense
solve, J never rising on both kernels, the Gibbs conditional against its closed form,
predictions that use a rating's day, refusals, and resume after a kill."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rec.als import ModelConfig
from rec.als.params import Params, days, deviation
from rec.als.sizes import EngineSizes
from rec.als.time_biases import time_axis
from rec.bayes.chain import sample
from rec.bayes.config import InferenceConfig
from rec.bayes.sampler import GibbsSampler
from rec.data.splits import make_split
from rec.errors import ConfigError
from rec.training import TrainConfig, build_engine, fit, load_checkpoint
from tests.conftest import random_ratings

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


def _dense_j(e, p, bin_bias, drift):
    """J as a function of the time terms alone, from the raw ratings (autograd-able)."""
    t, cfg = e.timed, e.cfg
    static = p.without_time()
    fit_ = static.predict(t.user, t.item)
    if bin_bias is not None:
        fit_ = fit_ + bin_bias.reshape(-1)[t.key]
    if drift is not None:
        fit_ = fit_ + drift[t.user] * t.dev
    j = cfg.lam / 2 * ((t.rating - fit_) ** 2).sum()
    if bin_bias is not None:
        j = j + cfg.gamma_time / 2 * (bin_bias ** 2).sum()
    if drift is not None:
        j = j + cfg.gamma_drift / 2 * (drift ** 2).sum()
    return j


def test_each_time_step_is_the_dense_minimizer_of_its_block():
    """The bins given the drifts, then the drifts given the bins: each equals the dense ridge
    solution of J over that block, from the raw ratings."""
    r = random_ratings(seed=7)
    cfg = ModelConfig(name="features", K=2, gamma_time=0.7, gamma_drift=3.0, time_bins=3,
                      time_drift=True)
    e = _engine(r, cfg)
    p = _moved(e, r, 1)
    t = e.timed
    n_keys = p.bin_bias.numel()
    x_bins = torch.nn.functional.one_hot(t.key, n_keys).double()
    x_drift = torch.zeros(t.user.numel(), e.n_users, dtype=torch.float64)
    x_drift[torch.arange(t.user.numel()), t.user] = t.dev
    residual = t.rating - p.without_time().predict(t.user, t.item)
    drift_part = x_drift @ p.drift
    want_bins = torch.linalg.solve(cfg.lam * x_bins.T @ x_bins + cfg.gamma_time * torch.eye(n_keys,
                                   dtype=torch.float64), cfg.lam * x_bins.T @ (residual - drift_part))
    e.time_step(p)  # bins, then drifts given the new bins
    np.testing.assert_allclose(p.bin_bias.reshape(-1), want_bins, rtol=1e-9, atol=1e-12)
    want_drift = torch.linalg.solve(
        cfg.lam * x_drift.T @ x_drift + cfg.gamma_drift * torch.eye(e.n_users, dtype=torch.float64),
        cfg.lam * x_drift.T @ (residual - x_bins @ want_bins))
    np.testing.assert_allclose(p.drift, want_drift, rtol=1e-9, atol=1e-12)
    # repeated steps reach the joint minimizer: J's gradient in both blocks vanishes
    for _ in range(200):
        e.time_step(p)
    b, d = (p.bin_bias.clone().requires_grad_(), p.drift.clone().requires_grad_())
    _dense_j(e, p, b, d).backward()
    assert float(b.grad.abs().max()) < 1e-8 and float(d.grad.abs().max()) < 1e-8


def test_a_time_draw_follows_the_exact_gaussian_conditional():
    """4,000 draws of the biases per bin (and of the drifts) from the same state: their mean
    and variance against ``N(lam sum e / P, 1/P)``, ``P = lam |G| + gamma``."""
    r = random_ratings(seed=8)
    cfg = ModelConfig(name="embeddings", K=2, time_bins=2, time_drift=True)
    e = _engine(r, cfg)
    p = _moved(e, r, 2)
    t, lam, gammas = e.timed, 1.3, (0.8, 2.5)
    g = torch.Generator().manual_seed(4)
    start = p.clone()
    keys, n = p.bin_bias.numel(), 4000
    bins, drifts = [], []
    for _ in range(n):
        q = start.clone()
        q.drift.zero_()  # the bins' conditional given drifts 0
        e.timed.bin_step(q, t.residuals(q), lam, gammas[0], False,
                         noise=torch.randn(keys, generator=g, dtype=torch.float64))
        bins.append(q.bin_bias.reshape(-1).clone())
        q = start.clone()
        q.bin_bias.zero_()
        e.timed.drift_step(q, t.residuals(q), lam, gammas[1], None,
                           noise=torch.randn(e.n_users, generator=g, dtype=torch.float64))
        drifts.append(q.drift.clone())
    bins, drifts = torch.stack(bins), torch.stack(drifts)
    static = start.without_time().predict(t.user, t.item)
    e_ = t.rating - static
    count = torch.bincount(t.key, minlength=keys).double()
    precision = lam * count + gammas[0]
    mean = lam * torch.zeros(keys, dtype=torch.float64).index_add_(0, t.key, e_) / precision
    np.testing.assert_allclose(bins.mean(0), mean, atol=5 / (n * precision.min()) ** 0.5)
    np.testing.assert_allclose(bins.var(0), 1 / precision, rtol=0.12)
    dprec = lam * torch.zeros(e.n_users, dtype=torch.float64).index_add_(0, t.user, t.dev ** 2) \
        + gammas[1]
    dmean = lam * torch.zeros(e.n_users, dtype=torch.float64).index_add_(0, t.user, t.dev * e_) / dprec
    np.testing.assert_allclose(drifts.mean(0), dmean, atol=5 / (n * dprec.min()) ** 0.5)
    np.testing.assert_allclose(drifts.var(0), 1 / dprec, rtol=0.12)


def test_training_errors_and_predictions_use_each_ratings_day():
    """The layouts' values are ``r - o``: the engine's training errors equal
    :meth:`Params.predict` with the ratings' days, on both kernels; without a day the time
    terms are left out."""
    r = random_ratings(seed=11)
    cfg = ModelConfig(name="features", K=2, time_bins=3, time_drift=True)
    for kernel in ("torch", "fused"):
        e = _engine(r, cfg, kernel, dtype=torch.float32)
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
    split = make_split(r, seed=0)
    cfg = ModelConfig(name="features", K=2, genre_bias=True, time_bins=3, time_drift=True)

    class Kill:
        def on_epoch(self, epoch, record, params):
            if epoch == 6:
                raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    if method == "als":
        train = TrainConfig(max_epochs=8, patience=100, relaxation=1.5)
        run = lambda **kw: fit(r, split, cfg, train, fingerprint="x", **kw)
    else:
        inf = InferenceConfig(method="gibbs", warm_start=2, burn_in=2, samples=6, keep=3,
                              checkpoint_every=5)
        run = lambda **kw: sample(r, split, cfg, inf, seed=1, fingerprint="x", **kw).fit
    whole = run()
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=ckpt, callbacks=(Kill(),))
    assert load_checkpoint(ckpt, "x")
    resumed = run(checkpoint=ckpt)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert same(resumed.final, whole.final)
    for name in ("bin_bias", "drift", "user_factors"):
        assert torch.equal(getattr(resumed.params, name), getattr(whole.params, name))
