"""Training (SPEC §2.6): planted truth, early stopping, exact resume after a kill, metrics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rec.als import ModelConfig, Params
from rec.data import DataConfig, Split, load_dataset, make_split
from rec.errors import ConfigError, RecError
from rec.metrics import ranked_lists, ranking, top_k
from rec.als.sizes import EngineSizes
from rec.training import TrainConfig, fit, load_checkpoint
from tests.conftest import REPO, random_ratings

FAST = TrainConfig(max_epochs=30, ranking_max_users=200)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Rank-3 planted ratings with Gaussian noise 0.5, unrounded and unclipped."""
    root = tmp_path_factory.mktemp("planted")
    return load_dataset(DataConfig(name="synthetic", root=str(root), scale=0.02, seed=3, planted={
        "rank": 3, "noise": 0.5, "round_ratings": False, "clip": False}))


def test_planted_truth_is_recovered_to_the_noise_level(planted):
    split = make_split(planted, seed=1)
    cfg = ModelConfig(name="embeddings", K=3, tau=0.05, gamma=0.05, reg_scaling="count")
    result = fit(planted, split, cfg, FAST)
    sigma = 0.5
    assert result.final["test/rmse"] == pytest.approx(sigma, rel=0.05)
    assert result.final["test/rmse"] >= sigma * 0.95  # and it does not beat the noise


def test_early_stopping_keeps_the_best_epoch(small):
    split = make_split(small)
    cfg = ModelConfig(name="embeddings", K=10, tau=0.25, gamma=1, reg_scaling="none", init_std=0.01)
    result = fit(small, split, cfg, TrainConfig(max_epochs=30, patience=0, ranking_max_users=100))
    vals = [h["val/rmse"] for h in result.history]
    assert len(vals) < 30  # it stopped
    assert vals[-1] > vals[-2]  # at the first non-improvement (zero patience)
    assert result.final["val/rmse"] == pytest.approx(min(vals), abs=1e-6)
    assert result.best_epoch == vals.index(min(vals)) + 1
    objective = [h["objective"] for h in result.history]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(objective, objective[1:]))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from rec.als import ModelConfig
    from rec.data import DataConfig, load_dataset, make_split
    from rec.als.sizes import EngineSizes
    from rec.training import TrainConfig, fit
    r = load_dataset(DataConfig(name="ml-latest-small", root=sys.argv[1], cache_dir=sys.argv[3]))
    class Kill:
        def on_epoch(self, epoch, record, params):
            if epoch == 4:  # epoch 3's checkpoint is on disk; die before epoch 4's
                os.kill(os.getpid(), signal.SIGKILL)
    fit(r, make_split(r), ModelConfig(name="features", K=4, tau=15, gamma=3, reg_scaling="none"),
        TrainConfig(max_epochs=8, patience=100, ranking_max_users=50),
        checkpoint=Path(sys.argv[2]), fingerprint="kill-test", callbacks=(Kill(),))
""")


def test_killed_run_resumes_to_the_same_parameters(small, small_root, session_cache, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(small_root), str(checkpoint),
                             str(session_cache)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9, killed.stderr  # really killed
    saved = load_checkpoint(checkpoint, "kill-test")
    assert saved["state"]["epoch"] == 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = ModelConfig(name="features", K=4, tau=15, gamma=3, reg_scaling="none")
        train = TrainConfig(max_epochs=8, patience=100, ranking_max_users=50)
        split = make_split(small)
        resumed = fit(small, split, cfg, train, checkpoint=checkpoint, fingerprint="kill-test")
        straight = fit(small, split, cfg, train)
    finally:
        torch.set_num_threads(threads)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 9))
    for name in ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"):
        assert torch.equal(getattr(resumed.params, name), getattr(straight.params, name)), name
    assert resumed.final["test/rmse"] == straight.final["test/rmse"]


def test_the_best_epoch_is_kept_in_a_file_and_restored_after_a_resume(small, tmp_path):
    """The report's values overfit: validation RMSE is best early, and a run continued from
    its checkpoint restores that epoch from the file the checkpoint names, as one straight
    run keeps it in memory."""
    split = make_split(small)
    cfg = ModelConfig(name="embeddings", K=10, tau=0.25, gamma=1, reg_scaling="none", init_std=0.01)
    checkpoint = tmp_path / "checkpoint.pt"
    part = fit(small, split, cfg, TrainConfig(max_epochs=5, patience=100, ranking_max_users=50),
               checkpoint=checkpoint, fingerprint="best-test")
    resumed = fit(small, split, cfg, TrainConfig(max_epochs=12, patience=100, ranking_max_users=50),
                  checkpoint=checkpoint, fingerprint="best-test")
    straight = fit(small, split, cfg, TrainConfig(max_epochs=12, patience=100, ranking_max_users=50))
    assert 1 <= part.best_epoch <= 5 and resumed.best_epoch == straight.best_epoch < 12
    assert [p.name for p in tmp_path.iterdir() if ".best" in p.name] == \
        [f"checkpoint.best{straight.best_epoch}.pt"]
    assert load_checkpoint(checkpoint, "best-test")["best"] == f"checkpoint.best{straight.best_epoch}.pt"
    for name in ("user_factors", "user_bias", "item_factors", "item_bias"):
        assert torch.equal(getattr(resumed.params, name), getattr(straight.params, name)), name
    assert resumed.final["val/rmse"] == straight.final["val/rmse"] == pytest.approx(
        min(h["val/rmse"] for h in straight.history), abs=1e-6)
    plain = tmp_path / "plain" / "checkpoint.pt"
    plain.parent.mkdir()
    fit(small, split, cfg, TrainConfig(max_epochs=2, restore_best=False, ranking_max_users=50),
        checkpoint=plain, fingerprint="plain")
    with pytest.raises(RecError, match="names no file of its best epoch"):
        fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=50),
            checkpoint=plain, fingerprint="plain")


def test_deterministic_for_a_seed(small):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=5, tau=15, gamma=3, reg_scaling="none")
    a = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=50), seed=4)
    b = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=50), seed=4)
    c = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=50), seed=5)
    assert torch.equal(a.params.item_factors, b.params.item_factors)
    assert not torch.equal(a.params.item_factors, c.params.item_factors)


def test_cold_start_rmse_covers_movies_unseen_in_training():
    r = random_ratings(n_users=60, n_items=40, seed=9, cold_items=0, density=0.4)
    split = make_split(r, seed=2)
    result = fit(r, split, ModelConfig(name="features", K=2, tau=1, gamma=1, reg_scaling="none"),
                 TrainConfig(max_epochs=3, ranking_max_users=None))
    train_items = set(r.item[split.train].tolist())
    unseen = [i for i in split.test.tolist() if r.item[i].item() not in train_items]
    assert result.final["test/cold_n"] == len(unseen)
    assert math.isnan(result.final["test/cold_rmse"]) == (len(unseen) == 0)


def test_ranking_does_not_depend_on_its_user_batches():
    g = torch.Generator().manual_seed(3)
    p = Params(3.0, torch.randn(50, 4, generator=g), torch.randn(50, generator=g),
               torch.randn(30, 4, generator=g), torch.randn(30, generator=g), torch.zeros(2, 4),
               torch.zeros(2))
    pairs = lambda n: (torch.randint(0, 50, (n,), generator=g), torch.randint(0, 30, (n,), generator=g))
    seen, (test_user, test_item) = pairs(300), pairs(200)
    test_rating = torch.randint(1, 11, (200,), generator=g) / 2
    runs = [ranking(p, *seen, test_user, test_item, test_rating, k=5, batch=b) for b in (None, 1, 7)]
    assert runs[0]["ranked_users"] > 20 and 0 < runs[0]["ndcg@5"] < 1
    assert runs[1] == pytest.approx(runs[0]) and runs[2] == pytest.approx(runs[0])


@pytest.mark.parametrize("n_items", [30, 700, 5003])
def test_top_k_by_group_maxima_is_torch_topk(n_items):
    g = torch.Generator().manual_seed(n_items)
    scores = torch.randn(41, n_items, generator=g)
    scores[:, ::3] = float("-inf")  # left-out movies
    scores[5, 7:] = float("-inf")  # a row with fewer candidates than groups' worth
    scores[6, :n_items // 2] = 0.0  # and one whose top is inside the trailing columns
    scores[6, -1] = 9.0
    want = torch.topk(scores, 10, dim=1)
    got = top_k(scores, 10)
    assert torch.equal(scores.gather(1, got), want.values)
    assert torch.equal(got[:5], want.indices[:5]) and got[6, 0] == n_items - 1


def test_ranked_lists_leave_a_callers_scores_unchanged():
    shared = torch.arange(12.0)
    before = shared.clone()
    out = list(ranked_lists(lambda b: shared.expand(len(b), -1), 3, 12, torch.tensor([0, 1]),
                            torch.tensor([11, 10]), torch.tensor([0, 1]), torch.tensor([3, 4]),
                            torch.tensor([5.0, 5.0]), 2, 4.0, torch.tensor([0, 1])))
    assert torch.equal(shared, before)
    assert out[0][1].tolist() == [[10, 9], [11, 9]]  # each user's own training movie left out


def test_ranking_metrics_on_a_planted_answer():
    n_users, n_items = 3, 6
    p = Params(0.0, torch.zeros(n_users, 1), torch.zeros(n_users), torch.zeros(n_items, 1),
               torch.tensor([6.0, 5, 4, 3, 2, 1]), torch.zeros(2, 1), torch.zeros(2))  # 0 > 1 > ... > 5
    train_user, train_item = torch.tensor([0, 1]), torch.tensor([0, 1])  # excluded from candidates
    test_user = torch.tensor([0, 0, 1, 2, 2])
    test_item = torch.tensor([1, 5, 2, 4, 5])
    test_rating = torch.tensor([5.0, 4.0, 4.5, 3.0, 2.0])  # user 2 has nothing relevant
    popularity = torch.tensor([9.0, 8, 7, 6, 5, 4])
    m = ranking(p, train_user, train_item, test_user, test_item, test_rating, k=2,
                popularity=popularity)
    # user 0 ranks [1, 2]: 1 hit of 2 relevant, at rank 1; user 1 ranks [0, 2]: 1 hit of 1,
    # at rank 2
    assert m["ranked_users"] == 2
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1 / 1) / 2)  # hits / min(k, relevant)
    ndcg0 = 1 / (1 + 1 / math.log2(3))
    ndcg1 = (1 / math.log2(3)) / 1
    assert m["ndcg@2"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["map@2"] == pytest.approx((1 / 2 + (1 / 2) / 1) / 2)  # AP: P@1 / 2, P@2 / 1
    assert m["hit_rate@2"] == 1.0
    assert m["popularity@2"] == pytest.approx(((8 + 7) / 2 + (9 + 7) / 2) / 2)
    assert m["coverage@2"] == pytest.approx(3 / 6)  # movies 0, 1, 2
    # three relevant of which the list finds all it can: recall counts min(k, relevant)
    m = ranking(p, torch.tensor([0]), torch.tensor([0]), torch.tensor([0, 0, 0]),
                torch.tensor([1, 2, 3]), torch.tensor([5.0, 5.0, 5.0]), k=2)
    assert m["recall@2"] == 1.0 and m["ndcg@2"] == pytest.approx(1.0) and m["map@2"] == 1.0


def test_gpu_chunking_gives_the_cpu_result(small):
    """Sizes change the speed, not the model: the GPU's (one chunk per bucket, 2^18-row solves)
    and tiny chunks, batches and table tiles give the CPU defaults' result."""
    split = make_split(small)
    cfg = ModelConfig(name="features", K=8, tau=15, gamma=3, reg_scaling="none")
    runs = [fit(small, split, cfg, TrainConfig(max_epochs=4, ranking_max_users=100),
                EngineSizes(**sizes), dtype=torch.float64)
            for sizes in ({}, {"kernel": "torch"},  # auto: the fused kernel on CPU
                          {"kernel": "torch", "chunk_elems": 1 << 24, "batch_rows": 1 << 18},
                          {"kernel": "torch", "chunk_elems": 512, "batch_rows": 16,
                           "tile_cols": 1000})]
    for other in runs[1:]:
        assert other.final["objective"] == pytest.approx(runs[0].final["objective"], rel=1e-10)
        assert torch.allclose(other.params.item_factors, runs[0].params.item_factors, atol=1e-9)


@pytest.mark.parametrize("K", [10, 64, 128, 256, 1024])
def test_gpu_sizes_bound_the_gathers_and_grams_of_wide_rows(K):
    """On a GPU a chunk's gathers stay within 2 GiB and a solve batch's Grams within 4 GiB
    whatever the width (2^18 rows of 257 x 257 Grams would be 70 GiB); narrow rows keep the
    measured 2^24-rating chunks and 2^18-row batches."""
    from rec.als.sizes import GPU_GATHER_BYTES, GPU_GRAM_BYTES, NO_TILES, default_sizes
    row = (K + 2) * 4  # [x, bias, offset] in float32
    chunk, batch, tiles = default_sizes("cuda", row)
    assert tiles == NO_TILES and chunk & (chunk - 1) == 0 and batch & (batch - 1) == 0
    assert chunk * row <= GPU_GATHER_BYTES and batch * (K + 2) ** 2 * 4 <= GPU_GRAM_BYTES
    assert chunk * row > GPU_GATHER_BYTES / 2 or chunk == 1 << 24  # not needlessly small
    if K == 10:
        assert (chunk, batch) == (1 << 24, 1 << 18)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_matches_cpu(small):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=8, tau=15, gamma=3, reg_scaling="none")
    train = TrainConfig(max_epochs=5, ranking_max_users=100)
    cpu = fit(small, split, cfg, train, device="cpu", dtype=torch.float64)
    gpu = fit(small, split, cfg, train, device="cuda", dtype=torch.float64)
    assert gpu.params.item_factors.device.type == "cuda"
    assert gpu.final["objective"] == pytest.approx(cpu.final["objective"], rel=1e-9)
    assert torch.allclose(gpu.params.item_factors.cpu(), cpu.params.item_factors, atol=1e-8)


def test_users_and_movies_unseen_in_training_get_the_prior():
    r = random_ratings(n_users=30, n_items=20, seed=11, cold_users=0, cold_items=0, density=0.5)
    newcomer = torch.nonzero(r.user == 4).flatten()  # user 4: all of their ratings go to test
    others = torch.nonzero(r.user != 4).flatten()
    part = torch.arange(len(others)) % 7  # 1: validation, 2: test, else training
    split = Split(others[(part != 1) & (part != 2)], others[part == 1],
                  torch.cat([newcomer, others[part == 2]]).sort().values)
    cfg = ModelConfig(name="features", K=2, tau=1, gamma=1, reg_scaling="none")
    result = fit(r, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=None))
    p = result.params
    assert bool((p.user_factors[4] == 0).all()) and float(p.user_bias[4]) == 0.0
    assert math.isfinite(result.final["test/rmse"]) and math.isfinite(result.final["test/ndcg@10"])
    expected = (p.mu + p.item_bias[r.item[newcomer].long()]).clamp(0.5, 5)  # mu + c_n alone
    assert torch.allclose(p.predict(r.user[newcomer], r.item[newcomer]).clamp(0.5, 5), expected)


@pytest.mark.parametrize("bad", [{"max_epochs": -1}, {"ranking_k": 0}, {"patience": -2},
                                 {"ranking_max_users": 0}])
def test_bad_training_options_are_config_errors(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=f"train.{key}="):
        TrainConfig(**bad)


@pytest.mark.parametrize("bad", [{"bucket_growth": 1.0}, {"chunk_elems": 0}, {"batch_rows": -3},
                                 {"tile_cols": -1}, {"tile_min": 0}])
def test_bad_engine_sizes_are_config_errors(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=f"engine.{key}="):
        EngineSizes(**bad)


def test_the_joint_genre_step_reaches_the_minimum_in_few_epochs(small):
    split = make_split(small)
    cfg = ModelConfig(name="features", K=6)
    joint = fit(small, split, cfg, TrainConfig(max_epochs=40, patience=100, joint_genre_step=True,
                                               ranking_max_users=20))
    alternating = fit(small, split, cfg, TrainConfig(max_epochs=40, patience=100, ranking_max_users=20))
    j = [h["objective"] for h in joint.history]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(j, j[1:]))
    assert j[-1] < alternating.history[-1]["objective"]  # further down J after the same epochs
    assert abs(j[-1] - j[-2]) < 1e-4 * j[-1]  # and already converged
