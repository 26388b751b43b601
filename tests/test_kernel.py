"""The fused CPU kernel and the column-step Cholesky against dense references (SPEC §2.3, §2.4)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numba
import numpy as np
import pytest
import torch

from llvmlite.binding import get_host_cpu_features

from rec.als import ALS, ModelConfig
from rec.als import kernel
from rec.als.groups import build_rows, stream_rows
from rec.als.sizes import EngineSizes
from rec.als import solve as solve_module
from rec.als.solve import cholesky_solve, ridge_solve, solve_rows
from rec.errors import ConfigError
from tests.conftest import random_ratings


def spd_batch(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, d + 3, generator=g, dtype=dtype)
    return x @ x.transpose(1, 2) + 0.1 * torch.eye(d, dtype=dtype), \
        torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("d", [1, 2, 11, 65])
def test_column_step_cholesky_solves_and_draws_like_lapack(d):
    a, rhs, z = spd_batch(50, d, seed=d)
    np.testing.assert_allclose(cholesky_solve(a.clone(), rhs), torch.linalg.solve(a, rhs),
                               rtol=1e-9, atol=1e-9)
    low = torch.linalg.cholesky(a)  # the draw mean + L^-T z of the Gaussian with precision a
    want = torch.linalg.solve(a, rhs) + torch.linalg.solve_triangular(
        low.transpose(1, 2), z.unsqueeze(2), upper=True).squeeze(2)
    np.testing.assert_allclose(cholesky_solve(a.clone(), rhs, z), want, rtol=1e-9, atol=1e-9)


def test_cholesky_reads_only_the_lower_triangle_and_refuses_a_singular_system():
    a, rhs, _ = spd_batch(8, 4, seed=1)
    lower_only = a.tril()  # the strict upper triangle zeroed: must not matter
    np.testing.assert_allclose(cholesky_solve(lower_only, rhs), cholesky_solve(a.clone(), rhs))
    a[3] = 0
    with pytest.raises(FloatingPointError, match="priors"):
        cholesky_solve(a, rhs)


def dense_side(rows, cols, vals, table, n_rows, lam, reg, weight, prior):
    """Per row: the system matrix ``lam X^T X + w diag(reg)`` and ``lam X^T y + prior``."""
    d = table.shape[1] - 1
    a = np.zeros((n_rows, d, d))
    rhs = prior.copy()
    for r, c, v in zip(rows, cols, vals):
        x, y = table[c, :d], v - table[c, d]
        a[r] += lam * np.outer(x, x)
        rhs[r] += lam * x * y
    a += weight[:, None, None] * np.diag(reg)
    return a, rhs


@pytest.mark.parametrize("tile_cols, dtype, woodbury", [
    (10**9, torch.float64, 0.0), (3, torch.float64, 0.0), (3, torch.float32, 0.0),
    (10**9, torch.float64, 0.4), (10**9, torch.float32, 0.4), (3, torch.float64, 0.4)])
@pytest.mark.parametrize("d", [4, 40, 150])  # a generated kernel, the register-blocked tiles,
def test_fused_kernel_solves_and_draws_every_row_exactly(tile_cols, dtype, woodbury, d):  # and
    # the Woodbury matrix's columns packed in two rounds (over TILE_RATINGS)
    """Every row's solution, draw and squared error against dense numpy, by the Gram and, for
    rows with fewer ratings than unknowns (``woodbury``), through the Woodbury identity."""
    g = np.random.default_rng(0)
    n_rows, n_cols = 30, 12
    rows = g.integers(2, n_rows, 400)  # rows 0, 1 have no ratings
    cols = g.integers(0, n_cols, 400)
    vals = g.uniform(0.5, 5, 400)
    table = np.vstack([g.normal(size=(n_cols, d + 1)), np.zeros((1, d + 1))])
    reg, weight = g.uniform(0.5, 2, d), g.uniform(1, 3, n_rows)
    prior, noise = g.normal(size=(n_rows, d)), g.normal(size=(n_rows, d))
    layout = build_rows(torch.from_numpy(rows.astype(np.int32)),
                        torch.from_numpy(cols.astype(np.int32)),
                        torch.from_numpy(vals).to(dtype), n_rows, n_cols, tile_cols, tile_min=2)
    assert layout.n_tiles == (1 if tile_cols > n_cols else 4)
    a, rhs = dense_side(rows, cols, vals, table, n_rows, 1.7, reg, weight, prior)
    as_t = lambda x: torch.from_numpy(x).to(dtype)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    degree = np.bincount(rows, minlength=n_rows)
    few = (degree > 0) & (degree < woodbury * d) & (layout.last_tile.numpy() == 0)
    assert few.any() == (woodbury > 0 and d >= 40 and layout.n_tiles == 1)
    assert (~few[2:]).any() == (d <= 40 or not few.any())  # at d = 40 both ways are taken
    for z in (None, noise):
        out = torch.full((n_rows, d), 7.0, dtype=dtype)
        sse = torch.zeros(n_rows, dtype=torch.float64)
        solve_rows(layout, as_t(table), 1.7, as_t(reg), as_t(weight), out, as_t(prior),
                   noise=None if z is None else as_t(z), sse=sse, woodbury_below=woodbury)
        want = np.linalg.solve(a[2:], rhs[2:, :, None])[..., 0]
        fit = (table[cols, :d] * out.double().numpy()[rows]).sum(1) + table[cols, d]
        np.testing.assert_allclose(sse.numpy(), np.bincount(rows, (vals - fit) ** 2, n_rows),
                                   rtol=1e-3 if dtype == torch.float32 else 1e-8)
        if z is not None:
            low = np.linalg.cholesky(a[2:])
            want += np.linalg.solve(np.transpose(low, (0, 2, 1)), z[2:, :, None])[..., 0]
        np.testing.assert_allclose(out[2:].double().numpy(), want, rtol=tol, atol=tol)
        assert bool((out[:2] == 7.0).all())  # rows without ratings are left alone


@pytest.mark.parametrize("uniform,blocks", [(True, False), (True, True), (False, False)])
def test_rows_with_a_shared_matrix_take_the_woodbury_matrix_in_its_eigenvectors(uniform, blocks,
                                                                               monkeypatch):
    """The implicit loss's systems ``S + w rho I + lam X^T X`` (``uniform``: one prior
    precision for every entry, rotated into S's eigenvectors) against dense numpy, rows of few
    ratings and rows of many in one layout; with precisions that differ, the Grams.
    ``blocks``: the rotations run 7 rows at a time (the table's and the solutions' last
    blocks partial, the unsolved rows inside the first)."""
    if blocks:
        monkeypatch.setattr(solve_module, "ROTATE_ROWS", 7)
    g = np.random.default_rng(1)
    n_rows, n_cols, d = 30, 60, 40
    rows = np.concatenate([g.integers(2, 20, 200), g.integers(20, n_rows, 900)])
    cols = g.integers(0, n_cols, rows.size)
    vals = g.uniform(0.5, 1, rows.size)
    table = np.hstack([g.normal(size=(n_cols, d)), g.normal(size=(n_cols, 1))])
    reg = np.full(d, 0.7) if uniform else g.uniform(0.5, 2, d)
    weight, prior = g.uniform(1, 3, n_rows), g.normal(size=(n_rows, d))
    x = g.normal(size=(50, d))
    shared = 0.3 * x.T @ x
    layout = build_rows(torch.from_numpy(rows.astype(np.int32)),
                        torch.from_numpy(cols.astype(np.int32)), torch.from_numpy(vals),
                        n_rows, n_cols, 10**9, tile_min=2)
    degree = np.bincount(rows, minlength=n_rows)
    assert (degree[2:20] < 0.5 * d).all() and (degree[20:] >= 0.5 * d).all()
    a, rhs = dense_side(rows, cols, vals, table, n_rows, 1.0, reg, weight, prior)
    out = torch.full((n_rows, d), 7.0, dtype=torch.float64)
    seen = []
    eigh = torch.linalg.eigh
    try:  # whether the step rotated
        torch.linalg.eigh = lambda m: seen.append(1) or eigh(m)
        solve_rows(layout, torch.from_numpy(table), 1.0, torch.from_numpy(reg),
                   torch.from_numpy(weight), out, torch.from_numpy(prior),
                   shared=torch.from_numpy(shared), woodbury_below=0.5)
    finally:
        torch.linalg.eigh = eigh
    assert bool(seen) == uniform
    want = np.linalg.solve(a[2:] + shared, rhs[2:, :, None])[..., 0]
    np.testing.assert_allclose(out[2:].numpy(), want, rtol=1e-9, atol=1e-9)
    assert bool((out[:2] == 7.0).all())


def test_row_layout_holds_every_rating_once_by_tile_then_row():
    r = random_ratings(seed=4)
    layout = build_rows(r.user, r.item, r.rating, r.n_users, r.n_items, tile_cols=8, tile_min=2)
    rows, cols, vals = layout.triples()
    got = sorted(zip(rows.tolist(), cols.tolist(), vals.tolist()))
    assert got == sorted(zip(r.user.tolist(), r.item.tolist(), r.rating.tolist()))
    slot_tile = torch.repeat_interleave(torch.arange(layout.indptr.numel() - 1),
                                        torch.diff(layout.indptr)) // r.n_users
    split = layout.degree[rows] >= layout.n_tiles * 2
    assert layout.n_tiles == 4 and bool(split.any()) and bool((~split).any())
    assert torch.equal(slot_tile[split], torch.div(cols[split], 8, rounding_mode="floor").long())
    assert bool((slot_tile[~split] == 0).all())  # short rows keep all their ratings in tile 0
    assert torch.equal(layout.degree, torch.bincount(r.user.long(), minlength=r.n_users))


@pytest.mark.parametrize("tile_cols, codes", [(8, True), (10**9, True), (8, False)])
def test_a_layout_filled_block_by_block_equals_the_one_built_at_once(tile_cols, codes):
    """What a rank of a torchrun job builds as it reads the cache (rows split over tiles
    counted in a first pass; values as codes or kept as floats) is the one-process layout."""
    r = random_ratings(seed=4)
    whole = build_rows(r.user, r.item, r.rating, r.n_users, r.n_items, tile_cols, tile_min=2)
    reads = []

    def blocks():  # uneven blocks, a fresh iterator each pass
        reads.append(1)
        cut = [0, 1, 50, 51, 300, len(r)]
        return ((r.user[a:b].numpy(), r.item[a:b].numpy(), r.rating[a:b].numpy())
                for a, b in zip(cut[:-1], cut[1:]))
    levels = torch.unique(r.rating) if codes else None
    dtype = torch.float32 if codes else torch.float64
    streamed = stream_rows(blocks, torch.bincount(r.user.long(), minlength=r.n_users),
                           r.n_items, levels, tile_cols, 2, dtype)
    assert len(reads) == (2 if whole.n_tiles > 1 else 1)
    for name in ("indptr", "cols", "blocks", "degree", "last_tile", "slot"):
        assert torch.equal(getattr(streamed, name), getattr(whole, name)), name
    assert torch.equal(streamed.values(), whole.values().to(dtype))
    assert streamed.vals.dtype == (torch.uint8 if codes else torch.float64)
    assert streamed.levels.numel() == (10 if codes else 0)


@pytest.mark.parametrize("rung", ["biases", "embeddings", "features"])
def test_fused_and_torch_engines_train_the_same_float32_model(rung):
    r = random_ratings(n_users=120, n_items=90, seed=9)
    cfg = ModelConfig(name=rung, K=5).validated()
    params = []
    for kernel in ("torch", "fused"):
        e = ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items, r.movies.genre_matrix(),
                sizes=EngineSizes(kernel, tile_cols=16))
        assert e.sizes.kernel == kernel and e.by_user.n_tiles == 6
        p = e.initial_params(r.n_genres, 0)
        for _ in range(4):
            e.epoch(p)
        params.append((p, e.objective(p), e.train_errors(p, (0.5, 5.0))))
    (a, ja, ea), (b, jb, eb) = params
    assert jb == pytest.approx(ja, rel=1e-5) and eb == pytest.approx(ea, rel=1e-5)
    for name in ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=2e-4)


JOINT = "the joint genre step (train.joint_genre_step) needs the torch path"


def test_kernel_choice_is_automatic_where_it_runs_and_checked():
    auto = EngineSizes()
    assert auto.kernel == "auto"
    assert auto.kernel_for("cpu", needs_torch="") == "fused"  # at every width
    assert auto.resolved("cpu", 4 * 258, 256).kernel == "fused"
    assert auto.kernel_for("cpu", needs_torch=JOINT) == "torch"
    assert auto.kernel_for("cuda", needs_torch="") == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        EngineSizes(kernel="fused").kernel_for("cuda", needs_torch="")
    with pytest.raises(ConfigError, match="joint genre step"):
        EngineSizes(kernel="fused").kernel_for("cpu", needs_torch=JOINT)
    with pytest.raises(ConfigError, match="engine.kernel=numba: must be one of auto, torch, fused"):
        EngineSizes(kernel="numba")
    with pytest.raises(ConfigError, match="engine.solver"):
        EngineSizes(solver="qr")


def test_the_woodbury_rows_default_past_the_generated_widths_and_are_checked():
    assert EngineSizes().resolved("cpu", 4 * 66, 65).woodbury_below == 0.8
    assert EngineSizes().resolved("cpu", 4 * 12, 11).woodbury_below == 0.0  # generated kernel
    assert EngineSizes(kernel="torch").resolved("cpu", 4 * 66, 65).woodbury_below == 0.0
    assert EngineSizes(woodbury_below=0.5).resolved("cpu", 4 * 66, 65).woodbury_below == 0.5
    assert EngineSizes(woodbury_below=0).resolved("cpu", 4 * 12, 11).woodbury_below == 0
    with pytest.raises(ConfigError, match="engine.woodbury_below=0.5 is a step of the fused"):
        EngineSizes(kernel="torch", woodbury_below=0.5).resolved("cpu", 4 * 66, 65)
    with pytest.raises(ConfigError, match="rows of 11 unknowns take a generated kernel"):
        EngineSizes(woodbury_below=0.5).resolved("cpu", 4 * 12, 11)
    with pytest.raises(ConfigError, match="engine.woodbury_below=1.5: must be null or a ratio"):
        EngineSizes(woodbury_below=1.5)
    assert kernel.few_max(0.8, 64) == 51 and kernel.few_max(1.0, 300) == kernel.TILE_RATINGS
    assert kernel.few_max(1.0, 11) == 0  # a generated kernel's buffers are cut to its width
    from rec.compare import Setting  # rec.compare times the choice: woodbury=0 turns it off
    assert [Setting.parse(t, Setting()).sizes().woodbury_below
            for t in ("woodbury=0", "woodbury=0.9", "tile=0")] == [0.0, 0.9, None]
    with pytest.raises(ConfigError, match="woodbury=RATIO"):
        Setting.parse("woodbury=x", Setting())


@pytest.mark.parametrize("d", [6, 65])
def test_lu_cholesky_and_compiled_row_solvers_agree(d):
    a, rhs, z = spd_batch(20, d, seed=3)
    g = torch.zeros(20, d + 1, d + 1, dtype=torch.float64)
    g[:, :d, :d], g[:, :d, d] = a, rhs
    prior = torch.randn(20, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for reg in (torch.full((d,), 0.5, dtype=torch.float64), torch.rand(20, d, dtype=torch.float64)):
        want = ridge_solve(g.clone(), 2.0, reg, prior, solver="lu")
        for solver in ("cholesky", "rows"):
            np.testing.assert_allclose(ridge_solve(g.clone(), 2.0, reg, prior, solver=solver),
                                       want, rtol=1e-9, atol=1e-9)
        draws = [ridge_solve(g.clone(), 2.0, reg, prior, solver=s, noise=z)
                 for s in ("cholesky", "rows")]
        np.testing.assert_allclose(draws[1], draws[0], rtol=1e-9, atol=1e-9)
        assert not torch.allclose(draws[1], want)  # the noise moved them


def test_generated_and_generic_accumulations_solve_alike_and_values_are_coded(monkeypatch,
                                                                                tmp_path):
    r = random_ratings(n_users=60, n_items=40, seed=2)
    layout = build_rows(r.user, r.item, r.rating, r.n_users, r.n_items, tile_cols=16, tile_min=2)
    assert layout.vals.dtype == torch.uint8 and 0 < layout.levels.numel() <= kernel.MAX_LEVELS
    assert torch.equal(layout.values(), layout.levels[layout.vals.long()])
    g = torch.Generator().manual_seed(0)
    table = torch.randn(r.n_items + 1, 7, generator=g)
    reg, weight = torch.full((6,), 0.7), torch.ones(r.n_users)
    outs = []
    for width_limit in (kernel.UNROLLED_WIDTHS, 0):  # generated, then the generic loops
        monkeypatch.setattr(kernel, "UNROLLED_WIDTHS", width_limit)
        out = torch.zeros(r.n_users, 6)
        solve_rows(layout, table, 1.3, reg, weight, out)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache folder that cannot be made: compiled in memory instead
    monkeypatch.setattr(kernel, "UNROLLED_WIDTHS", 24)
    monkeypatch.setattr(kernel, "_COMPILED", {})
    monkeypatch.setenv("REC_KERNEL_CACHE", str(blocked / "kernels"))
    out = torch.zeros(r.n_users, 6)
    solve_rows(layout, table, 1.3, reg, weight, out)
    np.testing.assert_allclose(out, outs[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("strided", [False, True])
def test_the_wide_accumulation_copies_rows_of_any_table_into_the_gram(strided):
    # rows are copied as one memcpy where a table's row is contiguous, one entry at a time
    # where it is not (a view of every other column)
    width, n = 65, 300
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((50, 2 * width)).astype(np.float32)
    table = whole[:, ::2] if strided else np.ascontiguousarray(whole[:, ::2])
    cols = rng.integers(0, 50, n).astype(np.int32)
    vals = rng.standard_normal(n).astype(np.float32)
    size = kernel.gram_size(width)
    a = np.zeros((size, size))
    kernel.accumulate(0, n, cols, vals, np.zeros(0, np.float32), table, a,
                      np.zeros(kernel.buffer_size(width), np.float32))
    x = table[cols].astype(np.float64)
    x[:, -1] = vals - x[:, -1]
    np.testing.assert_allclose(np.triu(a[:width, :width]), np.triu(x.T @ x), rtol=1e-5,
                               atol=1e-3)


WIDE_GRAMS = """
import numpy as np
from rec.als import kernel
rng = np.random.default_rng(0)
for width in (25, 34, 41, 66, 130):  # every kind of last tile of a row
    for dtype in (np.float32, np.float64):
        table = rng.standard_normal((60, width)).astype(dtype)
        cols = rng.integers(0, 60, 300).astype(np.int32)
        vals = rng.standard_normal(300).astype(np.float32)
        size = kernel.gram_size(width)
        a = np.full((size, size), np.nan)
        kernel.accumulate(0, 300, cols, vals, np.zeros(0, np.float32), table, a,
                          np.zeros(kernel.buffer_size(width), dtype))
        x = table[cols].astype(np.float64)
        x[:, -1] = vals - x[:, -1]
        np.testing.assert_allclose(np.triu(a[:width, :width]), np.triu(x.T @ x), rtol=1e-5,
                                   atol=1e-3)
print(kernel.TILE_ROWS, kernel.TILE_VECTORS)
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 features")
@pytest.mark.parametrize("features,shape", [
    ("+64bit,+avx,+avx2,+fma,+f16c,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt", "4 1"),
    (None, None)])
def test_the_tile_shape_follows_the_vector_registers_and_forms_every_gram(features, shape,
                                                                          tmp_path):
    # AVX's 16 registers take 4 x 1 tiles (8 x 2 would spill them), AVX-512's 32 take 8 x 2;
    # either shape forms the same Gram at every width and kind of last tile
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    if features:
        env.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=features)
    out = subprocess.run([sys.executable, "-c", WIDE_GRAMS], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    if shape is None:  # this machine's own
        shape = "8 2" if "+avx512f" in get_host_cpu_features().flatten().split(",") else "4 1"
    assert out.stdout.split()[-2:] == shape.split()


@pytest.mark.parametrize("width,dtype,coded", [(2, np.float32, False), (3, np.float32, True),
                                                (12, np.float32, True), (16, np.float32, False),
                                                (12, np.float64, True)])
def test_the_row_form_accumulates_every_rating_of_narrow_rows(width, dtype, coded):
    # one masked vector load a rating: lanes past the width stay zero (the next row's entries
    # never enter), whatever the table's dtype and whether values are codes or values
    rng = np.random.default_rng(width)
    n, n_cols = 500, 40
    table = rng.standard_normal((n_cols, width)).astype(dtype)  # no sentinel row after the last
    cols = rng.integers(0, n_cols, n).astype(np.int32)
    cols[-1] = n_cols - 1
    levels = np.arange(0.5, 5.5, 0.5).astype(np.float32)
    codes = rng.integers(0, levels.size, n).astype(np.uint8)
    vals, lev = (codes, levels) if coded else (levels[codes], np.zeros(0, np.float32))
    lanes = kernel._row_lanes(width)
    a = np.full((lanes + 1, lanes), np.nan)
    start, stop = 7, n
    row_gram = kernel.row_gram_for(width)
    call = numba.njit(lambda s, e, c, v, lv, t, out: row_gram(s, e, c, v, lv, t, out))
    call(start, stop, cols, vals, lev, table, a)
    x = table[cols[start:stop]].astype(np.float64)
    x[:, -1] = levels[codes[start:stop]] - x[:, -1]
    tol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(a[:width, :width], x.T @ x, rtol=tol, atol=tol * 100)
    assert (a[:width, width:] == 0).all()  # lanes past the width
    assert np.isnan(a[width:]).all()  # rows past the width untouched
    call(3, 3, cols, vals, lev, table, a)  # no ratings: zeros
    assert (a[:width] == 0).all()


@pytest.mark.parametrize("d", [1, 6, 11])
def test_the_unrolled_row_solve_is_the_loop_solve(d):
    namespace = {"np": np}
    exec(kernel.solve_one_source(d), namespace)
    unrolled, loop = namespace["solve_one"], kernel._solve_one
    rng = np.random.default_rng(d)
    x = rng.standard_normal((3 * d + 2, d + 1))
    empty = np.empty(0, np.float32)
    no_shared = np.empty((0, 0))
    s = rng.standard_normal((d + 2, d))
    shared = s.T @ s
    cases = [(empty, empty, no_shared), (rng.standard_normal(d).astype(np.float32),
                                         rng.standard_normal(d).astype(np.float32), no_shared),
             (empty, empty, shared)]
    for prior, noise, added in cases:
        outs = []
        for solve in (unrolled, loop):
            a = np.zeros((d + 1, kernel.gram_size(d + 1)))
            a[:, :d + 1] = x.T @ x
            out = np.zeros(d, np.float32)
            assert solve(a, 1.7, 0.5, np.full(d, 2.0, np.float32), prior, noise, added, out,
                         np.zeros(d), np.zeros(d))
            outs.append(out)
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)
        if added.size:  # the shared matrix joins the system: (1.7 X^T X + S + I) theta = 1.7 X^T y
            g = x.T @ x
            want = np.linalg.solve(1.7 * g[:d, :d] + added + np.eye(d), 1.7 * g[:d, d])
            np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
    singular = np.zeros((d + 1, kernel.gram_size(d + 1)))  # no ratings and no prior: not definite
    for solve in (unrolled, loop):
        out = np.full(d, 9.0, np.float32)
        assert not solve(singular.copy(), 1.0, 0.0, np.zeros(d, np.float32), empty, empty,
                         no_shared, out, np.zeros(d), np.zeros(d))
        assert (out == 9.0).all()  # left as it was


WIDTHS = [5, 11, 24, 65, 129]
"""Rows ``[x, y]`` of these many entries: the unrolled kernels' narrowest, a middle one and
widest, and two past them, where ``engine.kernel=fused`` runs the generic accumulation."""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("rung, feedback", [("latent", "explicit"), ("embeddings", "explicit"),
                                            ("features", "explicit"), ("embeddings", "implicit"),
                                            ("features", "implicit")])
def test_the_kernel_equals_the_torch_path_at_every_width(width, rung, feedback):
    """Each rung and both losses, at widths up to 129: four epochs of the fused kernel and of the
    torch path (the reference) reach the same parameters and objective, in float64."""
    implicit = {"feedback": "implicit", "alpha0": 0.3, "tau": 2.0} if feedback == "implicit" else {}
    K = width - 1 - int(ModelConfig(name=rung, **implicit).has_biases)
    cfg = ModelConfig(name=rung, K=K, **implicit).validated()
    assert_kernels_agree(cfg, random_ratings(n_users=70, n_items=50, seed=width))


def assert_kernels_agree(cfg, r, cg_steps=None):
    """Four epochs of the torch path and of the fused kernel (``cg_steps``: conjugate-gradient
    steps instead of exact solves) reach the same parameters and objective, in float64."""
    params = []
    for kernel in ("torch", "fused"):
        e = ALS.from_ratings(cfg, r.user, r.item, r.rating, r.n_users, r.n_items,
                             r.movies.genre_matrix(), dtype=torch.float64,
                             sizes=EngineSizes(kernel, tile_cols=16), cg_steps=cg_steps)
        assert e.sizes.kernel == kernel
        p = e.initial_params(r.n_genres, 0)
        for _ in range(4):
            e.epoch(p)
        params.append((p, e.objective(p)))
    (a, ja), (b, jb) = params
    assert jb == pytest.approx(ja, rel=1e-9)
    for name in ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=1e-8, rtol=1e-7)
