"""Conjugate-gradient steps (``train.cg_steps``): every step still lowers the objective, D steps
are the exact solve, and the fused kernel (which never forms a Gram) takes the same steps as the
torch path's reference on formed matrices, at every width and for both losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.als import ALS, ModelConfig
from rec.als.sizes import EngineSizes
from rec.als.solve import cg_solve
from rec.errors import ConfigError
from rec.training import TrainConfig
from tests.conftest import random_ratings
from tests.test_kernel import assert_kernels_agree

IMPLICIT = {"feedback": "implicit", "alpha0": 0.3, "tau": 2.0}


def engine(cfg, r, kernel, cg_steps, dtype=torch.float64):
    e = ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items,
                         r.movies.genre_matrix(), dtype=dtype,
                         sizes=EngineSizes(kernel, tile_cols=16), cg_steps=cg_steps)
    assert e.sizes.kernel == kernel
    return e


def model(rung, feedback, width):
    extra = IMPLICIT if feedback == "implicit" else {"genre_bias": rung == "features"}
    k = width - 1 - int(ModelConfig(name=rung, **extra).has_biases)
    return ModelConfig(name=rung, K=k, **extra).validated()


def test_batched_cg_lowers_each_quadratic_and_reaches_the_solution_in_d_steps():
    g = torch.Generator().manual_seed(0)
    n, d = 40, 9
    m = torch.randn(n, d, d, generator=g, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    rhs = torch.randn(n, d, generator=g, dtype=torch.float64)
    start = torch.randn(n, d, generator=g, dtype=torch.float64)
    q = lambda t: 0.5 * (t.unsqueeze(1) @ a @ t.unsqueeze(2)).flatten() - (rhs * t).sum(1)
    exact = torch.linalg.solve(a, rhs)
    last = q(start)
    for steps in range(1, d + 1):
        now = q(cg_solve(a, rhs, start, steps))
        assert (now <= last + 1e-9).all()
        last = now
    np.testing.assert_allclose(cg_solve(a, rhs, start, d), exact, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(cg_solve(a, rhs, exact, 3), exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [5, 24, 65])
@pytest.mark.parametrize("rung, feedback", [("latent", "explicit"), ("features", "explicit"),
                                            ("embeddings", "implicit"),
                                            ("features", "implicit")])
def test_the_kernel_takes_the_torch_paths_cg_steps_at_every_width(width, rung, feedback):
    """Four epochs of two CG steps a row: the fused kernel (ratings, no Gram) and the torch
    path (formed Grams) reach the same parameters and objective in float64."""
    assert_kernels_agree(model(rung, feedback, width),
                         random_ratings(n_users=70, n_items=50, seed=width), cg_steps=2)


@pytest.mark.parametrize("kernel", ["torch", "fused"])
@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
def test_d_cg_steps_are_the_exact_step_and_one_step_never_raises_the_objective(kernel, feedback):
    cfg = model("features", feedback, 7)
    r = random_ratings(n_users=40, n_items=30, seed=3)
    exact, cg = engine(cfg, r, kernel, None), engine(cfg, r, kernel, cfg.dim + 1)
    p, q = exact.initial_params(r.n_genres, 0), cg.initial_params(r.n_genres, 0)
    exact.user_step(p)
    cg.user_step(q)
    exact.item_step(p)
    cg.item_step(q)
    for name in ("user_factors", "user_bias", "item_factors", "item_bias"):
        np.testing.assert_allclose(getattr(q, name), getattr(p, name), rtol=1e-6, atol=1e-9)
    one = engine(cfg, r, kernel, 1)
    p = one.initial_params(r.n_genres, 0)
    last = one.objective(p)
    for _ in range(6):
        for step in (one.user_step, one.item_step, one.genre_step):
            step(p)
            now = one.objective(p)
            assert now <= last * (1 + 1e-12), (step.__name__, last, now)
            last = now


def test_cg_and_exact_steps_run_fused_at_any_width_and_cg_conflicts_are_refused():
    cfg = model("features", "implicit", 65)
    r = random_ratings(n_users=20, n_items=15, seed=1)
    auto = lambda steps: ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items,
                                          r.movies.genre_matrix(), cg_steps=steps).sizes.kernel
    assert auto(3) == "fused" and auto(None) == "fused"  # width 66: past the generated kernels
    with pytest.raises(ConfigError, match="cg_steps"):
        TrainConfig(cg_steps=0)
    with pytest.raises(ConfigError, match="relaxation=1"):
        TrainConfig(cg_steps=3, relaxation=1.8)
    from rec.bayes.chain import _check
    with pytest.raises(ConfigError, match="cg_steps"):
        _check(ModelConfig(name="features", K=4), TrainConfig(cg_steps=3))
