"""What a person rated (``model.svdpp``) and its flipped movie side (``model.svdpp_flipped``):
the Y and X steps against a dense solve, J never rising, the Gibbs conditional against its
closed form, fold-in with the rated sums, and resume after a kill."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.als import ALS, ModelConfig
from rec.als.rated import RatedSums
from rec.als.sizes import EngineSizes
from rec.bayes.config import InferenceConfig
from rec.bayes.sampler import GibbsSampler
from rec.data.splits import make_split
from rec.errors import ConfigError
from rec.model import Recommender
from rec.training import TrainConfig, build_engine, fit, heldout_rows, load_checkpoint
from tests.conftest import assert_killed_run_resumes, random_ratings

TERMS = [{"svdpp": True}, {"svdpp_flipped": True}, {"svdpp": True, "svdpp_flipped": True}]


def tiny_sums(n_rows=7, n_cols=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_rows, n_cols, generator=g) < 0.5
    mask[0] = False  # a row that rated nothing
    rows, cols = mask.nonzero(as_tuple=True)
    dense = mask.double() / mask.sum(1, keepdim=True).clamp_min(1).sqrt()
    return RatedSums.build(rows, cols, n_rows, n_cols), dense


def test_rated_sums_normalize_each_row_and_count_a_repeated_pair_once():
    sums, dense = tiny_sums()
    np.testing.assert_allclose(sums.matrix.to_dense(), dense)
    r, c = dense.nonzero(as_tuple=True)
    twice = RatedSums.build(torch.cat([r, r[:3]]), torch.cat([c, c[:3]]), *dense.shape)
    np.testing.assert_allclose(twice.matrix.to_dense(), dense)
    y = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_allclose(sums.mean(y), dense @ y)


def test_the_sums_product_is_kept_only_while_y_is_unchanged():
    sums, dense = tiny_sums()
    y = torch.randn(5, 3, dtype=torch.float64)
    first = sums.mean(y)
    first += 100.0  # the caller's copy: the kept product stays B Y
    np.testing.assert_allclose(sums.mean(y), dense @ y)
    for write in (lambda t: t.add_(1.0), lambda t: t[2].zero_(), lambda t: t[:, 1:].mul_(3.0),
                  lambda t: t.copy_(torch.randn(5, 3, dtype=torch.float64))):
        write(y)  # in place, through views too
        np.testing.assert_allclose(sums.mean(y), dense @ y)
    other = y.clone()  # the same values in another tensor, then changed
    other[0] = 7.0
    np.testing.assert_allclose(sums.mean(other), dense @ other)
    with torch.inference_mode():
        frozen = torch.randn(5, 3, dtype=torch.float64)
        np.testing.assert_allclose(sums.mean(frozen), dense @ frozen)


def ridge_problem(seed: int):
    """Tiny sums with a target, row weights and a per-column tau: the Y step's problem."""
    sums, b = tiny_sums()
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(7, 3, generator=g, dtype=torch.float64)
    weight = torch.rand(7, generator=g, dtype=torch.float64) + 0.5
    return sums, b, g, target, weight, torch.tensor([2.0, 5.0, 0.5], dtype=torch.float64)


def closed_form(b, tau, rho, t):
    """Mean and covariance of Y's conditional: ``N(P^-1 tau B^T t, P^-1)``."""
    cov = torch.linalg.inv(tau * b.T @ b + rho * torch.eye(b.shape[1], dtype=torch.float64))
    return cov @ (tau * b.T @ t), cov


def test_the_y_step_is_the_dense_ridge_solution_per_column():
    sums, b, g, target, weight, tau = ridge_problem(1)
    rho = 1.5
    got = sums.solve(target, weight, tau, rho, torch.randn(5, 3, generator=g, dtype=torch.float64))
    for k in range(3):
        a = tau[k] * b.T @ torch.diag(weight) @ b + rho * torch.eye(5, dtype=torch.float64)
        want = torch.linalg.solve(a, tau[k] * b.T @ (weight * target[:, k]))
        np.testing.assert_allclose(got[:, k], want, rtol=1e-7, atol=1e-9)


def test_a_y_draw_follows_the_exact_gaussian_conditional():
    """Each column is one draw (same target in all): 20,000 draws' mean and covariance against
    the closed form ``N(P^-1 tau B^T t, P^-1)``, ``P = tau B^T B + rho I``."""
    sums, b = tiny_sums(6, 3, seed=2)
    n, k = 20000, torch.Generator().manual_seed(3)
    t = torch.randn(6, 1, generator=k, dtype=torch.float64)
    noise = (torch.randn(6, n, generator=k, dtype=torch.float64),
             torch.randn(3, n, generator=k, dtype=torch.float64))
    tau, rho = 3.0, 0.7
    draws = sums.solve(t.expand(6, n), torch.ones(6, dtype=torch.float64), tau, rho,
                       torch.zeros(3, n, dtype=torch.float64), noise)
    mean, cov = closed_form(b, tau, rho, t[:, 0])
    np.testing.assert_allclose(draws.mean(1), mean, atol=4 * float(cov.diag().max().sqrt()) / n ** 0.5)
    np.testing.assert_allclose(torch.cov(draws), cov, atol=0.03 * float(cov.diag().max()))


def _engine(r, cfg, kernel="torch", heldout=None, dtype=torch.float64):
    return build_engine(r, None, cfg, EngineSizes(kernel), dtype=dtype, heldout=heldout)


@pytest.mark.parametrize("kernel", ["torch", "fused"])
@pytest.mark.parametrize("terms", TERMS)
@pytest.mark.parametrize("rung", ["latent", "embeddings", "features"])
def test_every_step_lowers_j_with_the_rated_sums(rung, terms, kernel):
    r = random_ratings(seed=5)
    extra = {"genre_bias": True} if rung == "features" else {}
    cfg = ModelConfig(name=rung, K=3, tau=2.0, gamma=1.0, tau_rated=0.8, **terms, **extra)
    e = _engine(r, cfg, kernel)
    assert e.sizes.kernel == kernel
    p = e.initial_params(r.n_genres, 0)
    p.rated_factors.normal_()
    p.rater_factors.normal_()
    last = e.objective(p)
    steps = [e.user_step, e.rated_step, e.item_step, e.genre_step, e.raters_step]
    for _ in range(4):
        for step in steps:
            step(p)
            now = e.objective(p)
            assert now <= last * (1 + 1e-10), step.__name__
            last = now


@pytest.mark.parametrize("terms", TERMS)
def test_the_y_and_x_steps_converge_to_the_exact_block_minimizers(terms):
    """Repeated Y (X) steps with the rest fixed reach the point where J's gradient in that
    block is 0 (each step is a pass of exact single-movie steps)."""
    r = random_ratings(seed=6)
    cfg = ModelConfig(name="features", K=2, tau=2.0, tau_rated=0.5, **terms)
    e = _engine(r, cfg)
    p = e.initial_params(r.n_genres, 1)
    for _ in range(2):
        e.epoch(p)
    for step, name in ((e.rated_step, "rated_factors"), (e.raters_step, "rater_factors")):
        block = getattr(p, name)
        if block.shape[0] == 0:
            continue
        for _ in range(400):
            step(p)
        x = block.clone().requires_grad_(True)
        j = _objective_of(e, p, name, x)
        (grad,) = torch.autograd.grad(j, x)
        assert float(grad.abs().max()) < 1e-6 * max(1.0, float(j.detach()))


def _objective_of(e: ALS, p, name, x):
    """J as a differentiable function of one block (the rest of ``p`` fixed)."""
    cfg = e.cfg
    y = x if name == "rated_factors" else p.rated_factors
    xr = x if name == "rater_factors" else p.rater_factors
    u_mean = e.rated.matrix @ y if e.rated is not None else 0
    v_mean = e.genre_mean(p) + (e.raters.matrix @ xr if e.raters is not None else 0)
    du = p.user_factors - u_mean
    dv = p.item_factors - v_mean
    return cfg.tau / 2 * ((du ** 2).sum() + (dv ** 2).sum()) + \
        cfg.tau_rated / 2 * ((y ** 2).sum() + (xr ** 2).sum())


def test_fold_in_uses_the_rated_sums_like_the_user_step():
    """Folding every person in from their own training ratings gives the user step's result,
    in the engine and (for one person) in the published model."""
    r = random_ratings(seed=7)
    cfg = ModelConfig(name="features", K=3, tau=2.0, svdpp=True, tau_rated=0.5)
    e = _engine(r, cfg)
    p = e.initial_params(r.n_genres, 2)
    for _ in range(3):
        e.epoch(p)
    stepped = p.clone()
    e.user_step(stepped)
    given = e.given_rows(r.user, r.item, r.rating)
    folded = e.fold_in(p, given, RatedSums.build(r.user, r.item, r.n_users, r.n_items))
    np.testing.assert_allclose(folded.user_factors, stepped.user_factors, atol=1e-8)
    with pytest.raises(ValueError, match="sums"):
        e.fold_in(p, given)
    m = int(r.user[0])
    mine = r.user == m
    pairs = [(int(r.movies.ids[i]), float(v)) for i, v in zip(r.item[mine], r.rating[mine])]
    model = Recommender.from_training(r, torch.arange(len(r)), p.to(dtype=torch.float32), cfg)
    u, b = model.fold_in(pairs)
    np.testing.assert_allclose(u, stepped.user_factors[m].float(), atol=1e-4)


def test_the_heldout_option_adds_identities_only_and_is_refused_where_it_cannot_apply():
    r = random_ratings(seed=8)
    split = make_split(r, seed=0)
    cfg = ModelConfig(name="features", K=2, svdpp=True, svdpp_flipped=True, svdpp_heldout=True)
    e = build_engine(r, split.train, cfg, heldout=heldout_rows(split))
    assert e.rated.matrix._nnz() == len(r) and e.raters.matrix._nnz() == len(r)
    plain = build_engine(r, split.train, ModelConfig(name="features", K=2, svdpp=True))
    assert plain.rated.matrix._nnz() == split.train.numel()
    with pytest.raises(ConfigError, match="held-out"):
        build_engine(r, split.train, cfg)
    with pytest.raises(ConfigError, match="svdpp"):
        ModelConfig(name="features", K=2, svdpp_heldout=True)
    with pytest.raises(ConfigError, match="ignore"):
        ModelConfig(name="biases", svdpp=True)
    with pytest.raises(ConfigError, match="ignore"):
        ModelConfig(name="features", K=2, svdpp=True, feedback="implicit")
    with pytest.raises(ConfigError, match="joint"):
        fit(r, split, ModelConfig(name="features", K=2, svdpp=True),
            TrainConfig(max_epochs=1, joint_genre_step=True))


def test_a_gibbs_sweep_draws_y_and_x_and_traces_their_precisions():
    r = random_ratings(n_users=60, n_items=40, seed=9)
    cfg = ModelConfig(name="features", K=2, svdpp=True, svdpp_flipped=True)
    e = _engine(r, cfg, dtype=torch.float32)
    p = e.initial_params(r.n_genres, 0)
    sampler = GibbsSampler(e, InferenceConfig(method="gibbs"), seed=0)
    before = p.clone()
    h = sampler.sweep(p)
    trace = h.trace()
    assert trace["rho_rated"] > 0 and trace["rho_raters"] > 0
    assert not torch.equal(p.rated_factors, before.rated_factors)
    assert not torch.equal(p.rater_factors, before.rater_factors)


@pytest.mark.parametrize("method", ["als", "gibbs"])
def test_a_killed_run_with_every_term_resumes_to_the_same_result(method, tmp_path):
    r = random_ratings(n_users=60, n_items=40, seed=10)
    cfg = ModelConfig(name="features", K=2, genre_bias=True, svdpp=True, svdpp_flipped=True)
    assert_killed_run_resumes(r, cfg, method, tmp_path,
                              ("user_factors", "rated_factors", "rater_factors"))
    engine = load_checkpoint(tmp_path / "run.pt", "x")["engine"]  # the sums' last B Y
    assert set(engine) == {"rated", "raters"}
    assert engine["rated"]["product"].shape == (60, 2)


def test_a_sweep_lowers_j_block_by_block_and_repeated_sweeps_reach_the_exact_solution():
    sums, b, g, target, weight, tau = ridge_problem(4)
    rho = 0.3
    j = lambda y: float((tau * weight.unsqueeze(1) * (target - b @ y) ** 2).sum()
                        + rho * (y ** 2).sum()) / 2
    exact = sums.solve(target, weight, tau, rho, torch.zeros(5, 3, dtype=torch.float64))
    for omega in (1.0, 1.7):
        y = torch.randn(5, 3, generator=g, dtype=torch.float64)
        last = j(y)
        for _ in range(300):
            y = sums.sweep(target, weight, tau, rho, y, omega=omega)
            assert j(y) <= last + 1e-12
            last = j(y)
        np.testing.assert_allclose(y, exact, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_sweep_keeps_b_y_of_the_y_it_returns_and_a_checkpoint_carries_it(dtype):
    """The pass keeps ``t - B Y`` current, so ``B Y`` of its result is kept, not multiplied
    again: it equals the product to float64 rounding (with a float32 Y, the product of the
    float32 values: the pass rounds each entry as it goes), any tensor holding those values
    reads it, and a RatedSums given its state reads the same bits; another Y is multiplied."""
    sums, _, g, target, weight, tau = ridge_problem(6)
    b = sums.matrix.to_dense()  # B's float64 values (the test's dense B is float32's)
    y = sums.sweep(target, weight, tau, 0.3, torch.randn(5, 3, generator=g).to(dtype),
                   torch.randn(5, 3, generator=g, dtype=torch.float64))
    assert y.dtype == dtype
    np.testing.assert_allclose(sums._product(y.clone()), b @ y.double(), rtol=1e-13, atol=1e-15)
    assert sums._kept and torch.equal(sums._product(y.clone()), sums._kept[1])
    again = RatedSums.build(*sums.matrix.to_dense().nonzero(as_tuple=True), *b.shape)
    again.load_state_dict(sums.state_dict())
    assert torch.equal(again._product(y.clone()), sums._kept[1])
    other = y.clone()
    other[1, 0] += 1
    np.testing.assert_allclose(again._product(other), b @ other.double(), rtol=1e-13,
                               atol=1e-15)


def test_sweeps_of_draws_leave_the_exact_gaussian_conditional_invariant():
    """Single-site draws, 4,000 columns at once (each its own chain, same target): after a
    burn-in their mean and covariance are the joint conditional's closed form."""
    sums, b = tiny_sums(6, 3, seed=2)
    n, g = 4000, torch.Generator().manual_seed(5)
    t = torch.randn(6, 1, generator=g, dtype=torch.float64).expand(6, n)
    tau, rho, ones = 3.0, 0.7, torch.ones(6, dtype=torch.float64)
    y = torch.zeros(3, n, dtype=torch.float64)
    kept = []
    for sweep in range(60):
        y = sums.sweep(t, ones, tau, rho, y, torch.randn(3, n, generator=g, dtype=torch.float64))
        if sweep >= 20:
            kept.append(y)
    draws = torch.cat(kept, 1)
    mean, cov = closed_form(b, tau, rho, t[:, 0])
    np.testing.assert_allclose(draws.mean(1), mean, atol=0.03 * float(cov.diag().max().sqrt()))
    np.testing.assert_allclose(torch.cov(draws), cov, atol=0.03 * float(cov.diag().max()))


def test_a_new_persons_prior_mean_is_the_sum_of_what_they_rated_in_both_models():
    """With a prior far stronger than the data, a folded-in person sits at their prior mean:
    ``|N|^-1/2 sum_{n in N} y_n`` (plus the sample's Normal-Gamma mean under Gibbs)."""
    from rec.bayes.posterior import Posterior
    r = random_ratings(seed=11)
    k, s = 3, 4
    g = torch.Generator().manual_seed(0)
    cfg = ModelConfig(name="features", K=k, svdpp=True, tau=1e7, gamma=1e7)
    e = _engine(r, cfg, dtype=torch.float32)
    p = e.initial_params(r.n_genres, 0)
    p.rated_factors.copy_(torch.randn(r.n_items, k, generator=g))
    pairs = [(int(r.movies.ids[3]), 4.0), (int(r.movies.ids[7]), 2.5), (int(r.movies.ids[9]), 5.0)]
    items = torch.tensor([3, 7, 9])
    model = Recommender.from_training(r, torch.arange(len(r)), p, cfg)
    u, _ = model.fold_in(pairs)
    np.testing.assert_allclose(u, p.rated_factors[items].sum(0) / 3 ** 0.5, atol=1e-4)
    samples = {name: torch.stack([getattr(p, name)] * s) for name in
               ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors",
                "genre_bias", "rater_factors")}
    samples["rated_factors"] = torch.randn(s, r.n_items, k, generator=g)
    mean = torch.randn(s, k, generator=g)
    post = Posterior(samples, p.mu, torch.full((s,), 0.8), torch.full((s, k + 1), 1e7), mean)
    gibbs = Recommender.from_training(r, torch.arange(len(r)), post.predictive_params(), cfg,
                                      posterior=post)
    us, _ = gibbs.fold_in_samples(pairs)
    want = mean + samples["rated_factors"][:, items].sum(1) / 3 ** 0.5
    np.testing.assert_allclose(us, want, atol=1e-4)


def test_a_sweep_splits_y_by_columns_over_threads_with_the_same_result():
    """Y's columns are independent problems: one thread or several sweep them to the same
    bits, minimizer and draw alike."""
    sums, _ = tiny_sums(40, 25, seed=3)
    g = torch.Generator().manual_seed(5)
    t = torch.randn(40, 5, generator=g, dtype=torch.float64)
    w = torch.rand(40, generator=g, dtype=torch.float64) + 0.5
    y, z = (torch.randn(25, 5, generator=g, dtype=torch.float64) for _ in range(2))
    tau = torch.linspace(1, 2, 5, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append((sums.sweep(t, w, tau, 0.5, y, omega=1.3), sums.sweep(t, w, tau, 0.5, y, z)))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        assert torch.equal(other[0], runs[0][0]) and torch.equal(other[1], runs[0][1])
