"""The ALS engine's math (SPEC §2.3, §2.4): exact steps, batched = dense, the ladder's limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.als import ALS, RUNGS, ModelConfig
from rec.als.groups import build_groups, row_order
from rec.als.sizes import EngineSizes
from rec.als.solve import solve_side_reference
from tests.conftest import random_ratings

SCALINGS = ("none", "count")


TILES = (None, 7)  # the device's default (no tiles at this size), or tables cut in 7-row tiles


KERNELS = ("torch", "fused")  # the reference path and the compiled one


def engine(r, tile_cols=None, kernel="torch", **cfg) -> ALS:
    """A float64 engine with tiny chunks and batches; ``tile_cols``: rows with at least 2
    ratings per tile are split over tiles of that many columns."""
    cfg = ModelConfig(**{"K": 3, "tau": 0.7, "gamma": 0.4, "eta": 0.9, **cfg}).validated()
    return ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items,
               r.movies.genre_matrix(torch.float64), dtype=torch.float64,
               sizes=EngineSizes(kernel, bucket_growth=1.3, chunk_elems=64, batch_rows=7,
                                 tile_cols=tile_cols, tile_min=2))


def test_groups_hold_every_rating_once_with_bounded_padding():
    g = torch.Generator().manual_seed(0)
    degree = (torch.rand(500, generator=g) ** -1.5).long().clamp(max=400)  # power-law rows
    rows = torch.repeat_interleave(torch.arange(500), degree)
    cols = torch.randint(0, 50, (rows.numel(),), generator=g)
    vals = torch.rand(rows.numel(), generator=g)
    groups = build_groups(rows, cols, vals, 500, 50, growth=1.2, chunk_elems=256, batch_rows=40)
    for b in groups.batches:  # solve batches: whole chunks, in order, at most batch_rows rows
        assert b.rows.numel() <= 40
        assert torch.equal(b.rows, torch.cat([c.rows for c in b.chunks]))
    assert len(groups.batches) < len(groups.chunks)
    seen = []
    for c in groups.chunks:
        real = c.cols != groups.sentinel
        assert torch.equal(real.sum(1), degree[c.rows])  # real entries first, then padding
        assert bool((c.vals[~real] == 0).all())
        assert c.cols.numel() <= max(256, c.cols.shape[1])  # memory bound per chunk
        seen += [(r, int(k), float(v)) for r, ks, vs, m in
                 zip(c.rows.tolist(), c.cols, c.vals, real) for k, v in zip(ks[m], vs[m])]
    assert sorted(seen) == sorted(zip(rows.tolist(), cols.tolist(), vals.tolist()))
    assert groups.padded <= 1.2 * groups.nnz + 500  # widths grow by 1.2 at most per bucket
    assert set(torch.nonzero(degree == 0).flatten().tolist()).isdisjoint(
        torch.cat([c.rows for c in groups.chunks]).tolist())


def test_tiles_split_each_row_by_column_range_and_add_up_in_the_batch():
    g = torch.Generator().manual_seed(5)
    degree = (torch.rand(300, generator=g) ** -1.5).long().clamp(max=200)
    rows = torch.repeat_interleave(torch.arange(300), degree)
    cols = torch.randint(0, 50, (rows.numel(),), generator=g)
    vals = torch.rand(rows.numel(), generator=g)
    groups = build_groups(rows, cols, vals, 300, 50, growth=1.2, chunk_elems=256, batch_rows=40,
                          tile_cols=12, tile_min=3)
    assert groups.n_tiles == 5  # 50 columns in tiles of 10
    split = degree >= 5 * 3  # rows with at least tile_min ratings per tile
    assert 0 < int(split.sum()) < 300
    seen = []
    for b in groups.batches:
        assert len(b.tiles) == 5 and b.rows.numel() <= 40
        assert torch.equal(b.rows, torch.cat([c.rows for c in b.tiles[0]]))  # written in place
        for t, tile in enumerate(b.tiles):
            for c in tile:
                real = c.cols != groups.sentinel
                in_tile = ((c.cols // 10) == t) | ~real
                assert bool(in_tile[split[c.rows]].all())  # one tile of the table per pass
                assert bool(real[~split[c.rows]].sum(1).eq(degree[c.rows][~split[c.rows]]).all())
                assert t == 0 or bool(split[c.rows].all())  # the others stay in the first tile
                assert (c.at is None) == (t == 0)
                if t:
                    assert torch.equal(b.rows[c.at], c.rows)  # added to its rows' Grams
                    assert bool(real.any(1).all())  # rows without ratings in a later tile: skipped
                seen += [(r, int(k)) for r, ks, m in zip(c.rows.tolist(), c.cols, real)
                         for k in ks[m]]
    assert sorted(seen) == sorted(zip(rows.tolist(), cols.tolist()))
    assert groups.padded <= 1.2 * groups.nnz + 5 * 300  # no more padding than untiled, per tile


def test_the_engine_tiles_tables_over_tile_cols_rows_and_0_turns_tiles_off():
    r = random_ratings(seed=1)  # 40 users, 30 movies
    tiled, untiled = engine(r, 7), engine(r, 0)
    assert (tiled.by_user.n_tiles, tiled.by_item.n_tiles) == (5, 6)  # ceil(30 / 7), ceil(40 / 7)
    assert (untiled.by_user.n_tiles, untiled.by_item.n_tiles) == (1, 1)


def test_fused_tiles_shrink_when_ranks_share_the_machine_and_a_set_tile_cols_is_kept():
    from rec.als.sizes import FUSED_TILE_BYTES, NO_TILES, SHARED_FUSED_TILE_BYTES
    auto, set_ = EngineSizes("fused"), EngineSizes("fused", tile_cols=7)
    assert auto.resolved("cpu", 48, 11).tile_cols == FUSED_TILE_BYTES // 48
    assert auto.resolved("cpu", 48, 11, cache_sharers=2).tile_cols == SHARED_FUSED_TILE_BYTES // 48
    assert SHARED_FUSED_TILE_BYTES < FUSED_TILE_BYTES
    assert set_.resolved("cpu", 48, 11, cache_sharers=2).tile_cols == 7  # the user's choice
    # wide rows: whole tables (a row over several tiles would hold a (D+1)^2 Gram), unless set
    assert auto.resolved("cpu", 4 * 66, 64).tile_cols == NO_TILES
    assert set_.resolved("cpu", 4 * 66, 64).tile_cols == 7


def dense_objective(r, cfg, mu, user_factors, user_bias, item_factors, item_bias, genre_factors,
                    genre_bias):
    """J of SPEC §2.1 written out from the ratings alone (features rung): the reference."""
    u, i = r.user.long(), r.item.long()
    err = r.rating.double() - mu - user_bias[u] - item_bias[i] - (user_factors[u] * item_factors[i]).sum(1)
    s = torch.ones(r.n_items, dtype=torch.float64)
    t = torch.ones(r.n_users, dtype=torch.float64)
    if cfg.count_scaled:
        s, t = (torch.bincount(x, minlength=m).double() for x, m in ((i, r.n_items), (u, r.n_users)))
    a = r.movies.genre_matrix(torch.float64)
    mean, c_mean = a @ genre_factors, a @ genre_bias
    users = cfg.gamma / 2 * (t * user_bias.square()).sum() + cfg.tau / 2 * (t * user_factors.square().sum(1)).sum()
    return (users + cfg.lam / 2 * err.square().sum()
            + cfg.gamma / 2 * (s * (item_bias - c_mean).square()).sum()
            + cfg.tau / 2 * (s * (item_factors - mean).square().sum(1)).sum()
            + cfg.eta / 2 * (genre_factors.square().sum() + genre_bias.square().sum()))


@pytest.mark.parametrize("genre_bias", [False, True])
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("tile_cols", TILES)
def test_joint_movie_genre_step_is_the_dense_joint_minimizer(scaling, tile_cols, genre_bias):
    """For fixed U and b, J is quadratic in (V, c, W, beta): its exact minimizer, by a dense
    Hessian solve of the J written out above, is what the joint step returns."""
    # count-scaled priors leave an unrated movie's J flat (weight 0): only rated movies then
    r = random_ratings(n_users=25, n_items=18, n_genres=4, seed=5,
                       cold_items=0 if scaling == "count" else 3)
    e = engine(r, tile_cols, name="features", reg_scaling=scaling, genre_bias=genre_bias)
    p = e.initial_params(r.n_genres, seed=3)
    e.user_step(p)
    n, k, f = r.n_items, e.dim, r.n_genres
    sizes = (n * k, n, f * k, f if genre_bias else 0)

    def j(x):
        v, c, w, beta = torch.split(x, sizes)
        beta = beta if genre_bias else torch.zeros(f, dtype=torch.float64)
        return dense_objective(r, e.cfg, e.mu, p.user_factors, p.user_bias, v.view(n, k), c,
                               w.view(f, k), beta)

    zero = torch.zeros(sum(sizes), dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(j, zero)
    gradient = torch.autograd.functional.jacobian(j, zero)
    best = torch.linalg.solve(hessian, -gradient)
    e.movie_genre_step(p)
    v, c, w, beta = torch.split(best, sizes)
    assert torch.allclose(p.item_factors, v.view(n, k), atol=1e-9)
    assert torch.allclose(p.item_bias, c, atol=1e-9)
    assert torch.allclose(p.genre_factors, w.view(f, k), atol=1e-9)
    if genre_bias:
        assert torch.allclose(p.genre_bias, beta, atol=1e-9) and float(p.genre_bias.abs().max()) > 1e-3
    got = [p.item_factors.flatten(), p.item_bias, p.genre_factors.flatten()]
    got += [p.genre_bias] if genre_bias else []
    assert float(j(torch.cat(got))) == pytest.approx(e.objective(p), rel=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("relaxation", [1.0, 1.8])
@pytest.mark.parametrize("tile_cols", TILES)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rung", [*RUNGS, "features+genre_bias"])
def test_every_step_never_increases_the_objective(rung, scaling, tile_cols, relaxation, kernel):
    """Each exact block step lowers J, and so does each over-relaxed one (0 < omega < 2)."""
    r = random_ratings(seed=1)
    rung, _, extra = rung.partition("+")
    e = engine(r, tile_cols, kernel, name=rung, reg_scaling=scaling, init_std=0.5,
               genre_bias=bool(extra))
    e.relaxation = relaxation
    p = e.initial_params(r.n_genres, seed=0)
    previous = e.objective(p)
    decrease = 0.0
    steps = (e.user_step, e.item_step, e.genre_step)
    if rung == "features":  # and the joint step, from where the alternating steps left off
        steps += (e.user_step, e.movie_genre_step)
    for _ in range(6):
        for step in steps:
            step(p)
            j = e.objective(p)
            assert j <= previous + 1e-9 * abs(previous), (rung, scaling, step.__name__)
            decrease, previous = decrease + previous - j, j
    assert decrease > 0


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("tile_cols", TILES)
@pytest.mark.parametrize("rung", RUNGS)
def test_train_errors_and_predictions_equal_the_plain_sums(rung, tile_cols, kernel):
    r = random_ratings(seed=6)
    e = engine(r, tile_cols, kernel, name=rung, init_std=1.5)  # wide: many predictions leave 0.5-5
    p = e.initial_params(r.n_genres, seed=2)
    e.epoch(p)
    if e.cfg.has_biases:
        p.item_bias.normal_(0, 2.0, generator=torch.Generator().manual_seed(7))
    u, i = r.user.long().numpy(), r.item.long().numpy()
    fit = (p.mu + p.user_bias.numpy()[u] + p.item_bias.numpy()[i]
           + (p.user_factors.numpy()[u] * p.item_factors.numpy()[i]).sum(1))
    clipped = np.clip(fit, 0.5, 5.0)
    assert (clipped != fit).mean() > 0.1
    np.testing.assert_allclose(p.predict(r.user, r.item).numpy(), fit, rtol=1e-12)
    raw, clip = e.train_errors(p, (0.5, 5.0))
    rating = r.rating.double().numpy()
    assert raw == pytest.approx(((rating - fit) ** 2).sum(), rel=1e-10)
    assert clip == pytest.approx(((rating - clipped) ** 2).sum(), rel=1e-10)


def dense_user_solution(r, e, p):
    """[u_m; b_m] per user by a plain per-row dense solve (numpy)."""
    cfg = e.cfg
    v, c = p.item_factors.numpy(), p.item_bias.numpy()
    user, item, rating = r.user.numpy(), r.item.numpy(), r.rating.numpy().astype(np.float64)
    out = np.zeros((r.n_users, e.width))
    for m in range(r.n_users):
        n = item[user == m]
        if len(n) == 0:
            continue
        x = np.hstack([v[n], np.ones((len(n), 1))]) if cfg.has_biases else v[n]
        y = rating[user == m] - e.mu - (c[n] if cfg.has_biases else 0)
        reg = np.array([cfg.tau] * e.dim + [cfg.gamma] * int(cfg.has_biases))
        reg = reg * (len(n) if cfg.count_scaled else 1)
        out[m] = np.linalg.solve(cfg.lam * x.T @ x + np.diag(reg), cfg.lam * x.T @ y)
    return out


def dense_item_solution(r, e, p):
    """[v_n; c_n] per movie, with the genre prior mean on the right-hand side."""
    cfg = e.cfg
    u, b = p.user_factors.numpy(), p.user_bias.numpy()
    mean = (r.movies.genre_matrix(torch.float64) @ p.genre_factors).numpy() * cfg.has_genres  # p_n
    user, item, rating = r.user.numpy(), r.item.numpy(), r.rating.numpy().astype(np.float64)
    out = np.zeros((r.n_items, e.width))
    for n in range(r.n_items):
        m = user[item == n]
        count = len(m)
        if count == 0:
            out[n, :e.dim] = mean[n]
            continue
        x = np.hstack([u[m], np.ones((count, 1))])
        y = rating[item == n] - e.mu - b[m]
        scale = count if cfg.count_scaled else 1
        reg = scale * np.array([cfg.tau] * e.dim + [cfg.gamma])
        rhs = cfg.lam * x.T @ y
        rhs[:e.dim] += scale * cfg.tau * mean[n]
        out[n] = np.linalg.solve(cfg.lam * x.T @ x + np.diag(reg), rhs)
    return out


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("tile_cols", TILES)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rung, lam", [("latent", 1.0), ("embeddings", 1.0), ("features", 1.0),
                                       ("features", 2.5)])
def test_batched_solves_equal_a_per_row_dense_solution(rung, lam, scaling, tile_cols, kernel):
    r = random_ratings(seed=2)
    e = engine(r, tile_cols, kernel, name=rung, reg_scaling=scaling, lam=lam)
    p = e.initial_params(r.n_genres, seed=1)
    p.item_bias.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    p.genre_factors.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    e.user_step(p)
    theta = torch.cat([p.user_factors, p.user_bias.unsqueeze(1)], 1)[:, :e.width]
    np.testing.assert_allclose(theta.numpy(), dense_user_solution(r, e, p), atol=1e-10)
    if rung != "latent":
        e.item_step(p)
        theta = torch.cat([p.item_factors, p.item_bias.unsqueeze(1)], 1)
        np.testing.assert_allclose(theta.numpy(), dense_item_solution(r, e, p), atol=1e-10)


def test_biases_rung_is_the_reports_closed_form():
    r = random_ratings(seed=3)
    e = engine(r, name="biases", reg_scaling="none")
    p = e.initial_params(r.n_genres, seed=0)
    p.item_bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    e.user_step(p)
    y = r.rating.double() - e.mu - p.item_bias[r.item.long()]
    sums = torch.zeros(r.n_users, dtype=torch.float64).index_add_(0, r.user.long(), y)
    count = torch.bincount(r.user.long(), minlength=r.n_users).double()
    assert torch.allclose(p.user_bias, sums / (count + e.cfg.gamma / e.cfg.lam))  # eq. 5


def test_reference_path_agrees_with_the_bucketed_path():
    r = random_ratings(n_users=80, n_items=60, seed=4)
    e = engine(r, name="embeddings", reg_scaling="count")
    p = e.initial_params(r.n_genres, seed=2)
    table = e._fill(e.item_table, p.item_factors, p.item_bias).clone()
    assert torch.allclose(table[:-1, -1], p.item_bias + e.mu)  # offsets c_n + mu: y = r - offset
    ref = solve_side_reference(r.user, r.item, r.rating.double(), table, r.n_users, e.cfg.lam,
                               e.reg, True)
    e.user_step(p)
    assert torch.allclose(torch.cat([p.user_factors, p.user_bias.unsqueeze(1)], 1), ref, atol=1e-12)


def test_features_with_huge_eta_is_the_embeddings_rung():
    r = random_ratings(seed=5)
    plain, prior = engine(r, name="embeddings"), engine(r, name="features", eta=1e12)
    p, q = plain.initial_params(r.n_genres, 7), prior.initial_params(r.n_genres, 7)
    for _ in range(5):
        plain.epoch(p)
        prior.epoch(q)
    assert q.genre_factors.abs().max() < 1e-9
    for name in ("user_factors", "user_bias", "item_factors", "item_bias"):
        assert torch.allclose(getattr(p, name), getattr(q, name), atol=1e-8), name


def test_over_relaxed_steps_move_each_block_past_its_exact_solution():
    r = random_ratings(seed=2)
    plain, relaxed = engine(r, name="features"), engine(r, name="features")
    relaxed.relaxation = 1.5
    p, q = plain.initial_params(r.n_genres, 0), relaxed.initial_params(r.n_genres, 0)
    start = q.clone()
    plain.user_step(p)
    relaxed.user_step(q)
    rated = plain.by_user.degree > 0
    expected = start.user_factors + 1.5 * (p.user_factors - start.user_factors)
    assert torch.allclose(q.user_factors[rated], expected[rated])
    assert bool((q.user_factors[~rated] == 0).all())  # unrated users: exactly their prior
    with pytest.raises(ValueError, match="relaxation must lie in"):
        ALS.from_ratings(ModelConfig(name="biases"), r.user, r.item, r.rating, r.n_users, r.n_items,
            r.movies.genre_matrix(), relaxation=2.0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("relaxation", [1.0, 1.8])
def test_unrated_users_and_movies_get_the_prior(relaxation, kernel):
    r = random_ratings(seed=6, cold_users=3, cold_items=4)
    e = engine(r, kernel=kernel, name="features")
    e.relaxation = relaxation
    p = e.initial_params(r.n_genres, 0)
    for _ in range(3):
        e.epoch(p)
    assert bool((p.user_factors[:3] == 0).all()) and bool((p.user_bias[:3] == 0).all())
    mean = r.movies.genre_matrix(torch.float64) @ p.genre_factors
    e.item_step(p)
    assert torch.allclose(p.item_factors[:4], mean[:4]) and bool((p.item_bias[:4] == 0).all())
    assert p.item_factors[:4].abs().sum() > 0  # genre prior: not zero


def test_float32_matches_float64():
    r = random_ratings(n_users=100, n_items=80, seed=8)
    e64 = engine(r, name="features")
    cfg = e64.cfg
    e32 = ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items, r.movies.genre_matrix(),
              dtype=torch.float32)
    p64, p32 = e64.initial_params(r.n_genres, 0), e32.initial_params(r.n_genres, 0)
    for _ in range(5):
        e64.epoch(p64)
        e32.epoch(p32)
    assert e32.objective(p32) == pytest.approx(e64.objective(p64), rel=1e-5)


@pytest.mark.parametrize("sizes", [{"chunk_elems": 0}, {"batch_rows": 0}, {"tile_cols": 0},
                                   {"growth": 1.0}])
def test_group_sizes_must_be_positive(sizes):
    rows = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="must"):
        build_groups(rows, torch.tensor([0, 1, 1]), torch.ones(3), 2, 2, **sizes)


@pytest.mark.parametrize("n, n_rows, block", [(1000, 7, 64), (5003, 300, 1000), (50, 3, 1 << 20), (9, 20, 2)])
def test_blocked_row_order_is_the_stable_sort(n, n_rows, block):
    rows = torch.randint(0, n_rows, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.int32)
    degree = torch.bincount(rows, minlength=n_rows)
    order = row_order(rows, torch.cumsum(degree, 0) - degree, block)
    assert order.dtype == torch.int32
    assert torch.equal(order.long(), torch.argsort(rows, stable=True))


@pytest.mark.parametrize("tile_cols", [50, 12])
def test_the_compiled_layout_helpers_equal_the_torch_ones(tile_cols, monkeypatch):
    """build_groups' compiled counting sort and padding (the setup at millions of people)
    give exactly the groups of the torch fallbacks, over unsorted ratings and column tiles."""
    from rec.als import groups as G
    from rec.als import kernel
    if not kernel.AVAILABLE:
        pytest.skip("Numba is not installed")
    g = torch.Generator().manual_seed(9)
    n = 20_000
    rows = torch.randint(0, 700, (n,), generator=g, dtype=torch.int32)  # not in row order
    cols = torch.randint(0, 50, (n,), generator=g, dtype=torch.int32)
    vals = torch.rand(n, generator=g, dtype=torch.float64)
    degree = torch.bincount(rows, minlength=700)
    offsets = torch.cumsum(degree, 0) - degree
    assert torch.equal(G._order(rows, offsets), G.row_order(rows, offsets))
    sizes = dict(growth=1.2, chunk_elems=512, batch_rows=64, tile_cols=tile_cols, tile_min=3)
    compiled = build_groups(rows, cols, vals, 700, 50, **sizes)
    monkeypatch.setattr(kernel, "AVAILABLE", False)
    reference = build_groups(rows, cols, vals, 700, 50, **sizes)
    assert len(compiled.batches) == len(reference.batches) > 1
    for a, b in zip(compiled.batches, reference.batches):
        assert torch.equal(a.rows, b.rows)
        for ta, tb in zip(a.tiles, b.tiles):
            assert len(ta) == len(tb)
            for ca, cb in zip(ta, tb):
                assert torch.equal(ca.rows, cb.rows) and torch.equal(ca.cols, cb.cols)
                assert torch.equal(ca.vals, cb.vals) and ca.vals.dtype == cb.vals.dtype


@pytest.mark.parametrize("n", [0, 5, 15, 16, 17, 31, 33, 47, 100])
@pytest.mark.parametrize("dim", [0, 1, 3, 10])
def test_initial_factors_drawn_in_parts_equal_one_draw(n, dim, monkeypatch):
    monkeypatch.setattr("rec.als.params.DRAW_ROWS", 16)
    from rec.als.params import normal_rows
    whole, parts = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    want = (torch.randn(n, dim, generator=whole, dtype=torch.float64) * 0.3).float()
    got = normal_rows(n, dim, 0.3, parts, torch.float32, "cpu")
    assert torch.equal(got, want)
    assert torch.equal(torch.randn(4, generator=parts), torch.randn(4, generator=whole))
