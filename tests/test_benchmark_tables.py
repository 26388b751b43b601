"""The benchmark table scripts read what the runs wrote and compute their ratios right."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def _metrics(folder, peaks, als, comm=None):
    timing = {"peak_rss_mb": max(peaks), "als_s_median": als, "als_s_min": als * 0.9}
    if len(peaks) > 1:
        timing.update(peak_rss_mb_per_rank=peaks, comm_s_median=comm, comm_mb_per_epoch=6.1)
    run = folder / "outputs" / "train" / "x"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "dataset": "synthetic", "model": {"K": 10}, "timing": timing,
        "machine": {"cpu": "Test CPU", "threads": 2 if len(peaks) == 1 else 1}}))


def test_the_distributed_table_reports_each_ranks_share_above_the_imports(tmp_path):
    _metrics(tmp_path / "P1", [1350.0], 0.40)
    _metrics(tmp_path / "P2", [750.0, 740.0], 0.42, comm=0.05)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "distributed_table.py"),
                           str(tmp_path), "1", "2", "4", "--imports-mb", "350"],
                          capture_output=True, text=True, check=True)
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert "Test CPU" in done.stdout
    assert "| 1.00 |" in rows["1"]
    assert "| 0.40, 0.39 |" in rows["2"]  # (750 - 350) / 1000, (740 - 350) / 1000
    assert "0.050" in rows["2"] and "6.1" in rows["2"]
    assert "no run" in rows["4"]


def test_the_speed_table_divides_medians(tmp_path):
    (tmp_path / "rec-K10.txt").write_text(
        "  machine   cpu, 2 threads, Test CPU\n  epochs    5 run, best 5; ALS s/epoch median "
        "0.400, min 0.380 (x)\n")
    (tmp_path / "lenskit-K10.txt").write_text(  # as benchmarks/lenskit_speed.py prints it
        "lenskit BiasedMF K=10 threads=2 (28,800,184 ratings): s/epoch median 1.800 min 1.700 "
        "(first 2.0, 5 timed; setup 3.1 s; torch threads 2)\n")
    (tmp_path / "rec-implicit-K10.txt").write_text("ALS s/epoch median 0.250, min 0.240\n")
    (tmp_path / "rec-implicit-cg-K10.txt").write_text("ALS s/epoch median 0.500, min 0.450\n")
    (tmp_path / "implicit-K10.txt").write_text(  # as benchmarks/implicit_speed.py prints it
        "implicit 0.7.3 ALS (conjugate gradient), K = 10, 2 threads, 28,800,184 interactions: "
        "s/iteration median 2.000, min 1.900\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed_table.py"),
                           str(tmp_path), "10", "64"], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert "Test CPU" in lines[0]
    row = next(line for line in lines if line.startswith("| 10 |"))
    assert "| 4.50 |" in row and "| 0.12 |" in row  # 1.8 / 0.4, 0.25 / 2.0 (rounded)
    assert row.endswith("| 0.25 |")  # rec implicit CG / implicit: 0.5 / 2.0
    assert row.count("| - ") == 2  # no rec explicit CG log: its cell and ratio
    assert next(line for line in lines if line.startswith("| 64 |")).count("| - ") == 10


@pytest.mark.skipif(shutil.which("g++") is None, reason="the C++ anchor needs g++")
def test_the_cpp_anchor_solves_the_movie_step_rec_solves(tmp_path):
    """benchmarks/anchor/als_anchor.cpp is a speed anchor only if it takes the same step: its
    last movie step, given its last users, is the exact minimizer of J's movie block (a dense
    solve per movie: ``(sum [u, 1][u, 1]^T + diag(tau, gamma)) [v, c] = sum [u, 1] (r - mu
    - b) + diag(tau, gamma) p``, with its prior means p), and a movie without ratings its p."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from anchor_speed import K, build, write_rows
    g = np.random.default_rng(0)
    n_users, n_items = 30, 20
    mask = g.random((n_users, n_items)) < 0.4
    mask[:, 0] = False
    user, item = (x.astype(np.int64) for x in np.nonzero(mask))
    value = (np.round(g.uniform(0.5, 5.0, user.size) * 2) / 2).astype(np.float32)
    write_rows(tmp_path / "by_user.bin", user, item, value, n_users, n_items)
    write_rows(tmp_path / "by_item.bin", item, user, value, n_items, n_users)
    prior = g.normal(0, 0.1, (n_items, K + 1)).astype(np.float32)
    with open(tmp_path / "prior.bin", "wb") as f:
        np.array([n_items], dtype=np.int64).tofile(f)
        prior.tofile(f)
    subprocess.run([str(build(tmp_path)), str(tmp_path), "3", str(tmp_path)], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    users = np.fromfile(tmp_path / "users.bin", dtype=np.float32).reshape(n_users, 16)
    items = np.fromfile(tmp_path / "items.bin", dtype=np.float32).reshape(n_items, 16)
    mu = value.astype(np.float64).mean()
    reg = np.array([15.0] * K + [3.0])
    for n in range(n_items):
        rows = user[item == n]
        x = np.concatenate([users[rows, :K], np.ones((rows.size, 1))], 1).astype(np.float64)
        y = value[item == n] - mu - users[rows, K]
        want = np.linalg.solve(x.T @ x + np.diag(reg), x.T @ y + reg * prior[n])
        np.testing.assert_allclose(items[n, :K + 1], want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(items[1:, :K + 1], prior[1:])  # the ratings moved them
