"""ALS across processes (torchrun, gloo on CPU): the same model as one process, and resume
after a rank is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rec.als.config import ModelConfig
from rec.als.params import TENSORS, Params
from rec.bundle import load_tree
from rec.distributed import shard_bounds
from rec.model import Recommender
from rec.training import CHECKPOINT_FORMAT, CHECKPOINT_KIND
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")

COMMON = ["data=synthetic", "data.scale=0.02", "K=4", "train.patience=1000", "threads=1",
          "tensorboard=false", "progress=false"]


def command(root: Path, epochs: int, nproc: int = 0, restarts: int = 0,
            extra: tuple[str, ...] = ()) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", f"--max-restarts={restarts}"] if nproc \
        else [sys.executable]
    return [*launcher, str(REPO / "train.py"), *COMMON, f"train.max_epochs={epochs}",
            f"paths.root={root}", f"paths.data_root={root.parent / 'data'}", *extra]


def run(cmd: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def model_of(root: Path) -> Recommender:
    (path,) = root.glob("models/**/*.pt")
    return Recommender.load(path)


def assert_same_model(a: Recommender, b: Recommender) -> None:
    for name in TENSORS:
        x, y = getattr(a.params, name), getattr(b.params, name)
        if y.numel():
            assert float((x - y).abs().max()) <= 1e-4 * max(float(y.abs().max()), 1e-12), name
    if "val/rmse" in b.metrics:
        assert a.metrics["val/rmse"] == pytest.approx(b.metrics["val/rmse"], abs=1e-5)


def test_shards_are_contiguous_balanced_and_cover_every_row():
    degree = torch.tensor([50, 1, 1, 1, 1, 1, 30, 30, 0, 0, 5, 5])
    bounds = shard_bounds(degree, 3)
    assert bounds[0] == 0 and bounds[-1] == 12 and bool((bounds[1:] >= bounds[:-1]).all())
    loads = [int(degree[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    assert sum(loads) == int(degree.sum()) and max(loads) <= 60


def test_two_ranks_train_the_model_one_process_trains(tmp_path):
    one = run(command(tmp_path / "one", 5), tmp_path / "cwd-one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(command(tmp_path / "two", 5, nproc=2), tmp_path / "cwd-two")
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 processes (torch.distributed)" in two.stdout
    two_model, one_model = model_of(tmp_path / "two"), model_of(tmp_path / "one")
    assert_same_model(two_model, one_model)
    for name in ("item_counts", "rated_offsets", "rated_items", "user_ids"):
        assert torch.equal(getattr(two_model, name), getattr(one_model, name)), name
    for key in ("train/n", "test/ranked_users", "test/cold_n"):
        assert two_model.metrics[key] == one_model.metrics[key], key
    assert two_model.metrics["test/ndcg@10"] == pytest.approx(one_model.metrics["test/ndcg@10"],
                                                             abs=1e-6)
    assert len(list((tmp_path / "two").glob("outputs/train/*/*/*/run.json"))) == 1  # rank 0's
    assert list((tmp_path / "cwd-two").iterdir()) == []  # rank 1 wrote nothing


IMPLICIT = ("feedback=implicit", "K=6", "model.interaction_min=2.0", "train.ranking_max_users=100")


@pytest.mark.parametrize("extra", [("model.confidence=0.5", "engine.kernel=torch"),
                                   ("engine.kernel=fused", "model.liked_min=4.0"),
                                   ("engine.kernel=fused", "train.cg_steps=2")],
                         ids=["confidence+torch", "fused+liked", "fused+cg"])
def test_two_and_three_ranks_train_the_implicit_loss_one_process_trains(tmp_path, extra):
    one = run(command(tmp_path / "one", 4, extra=IMPLICIT + extra), tmp_path / "cwd-one")
    assert one.returncode == 0, one.stderr[-2000:]
    for nproc in (2, 3):
        many = run(command(tmp_path / f"p{nproc}", 4, nproc=nproc, extra=IMPLICIT + extra),
                   tmp_path / f"cwd-{nproc}")
        assert many.returncode == 0, many.stderr[-2000:]
        a, b = model_of(tmp_path / f"p{nproc}"), model_of(tmp_path / "one")
        assert a.config.implicit and "val/rmse" not in a.metrics
        assert_same_model(a, b)
        for key in ("val/ndcg@10", "test/ndcg@10", "objective"):
            assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-5), key


GIBBS = ("inference=gibbs", "inference.warm_start=2", "inference.burn_in=3",
         "inference.samples=4")


def assert_same_chain(a: Recommender, b: Recommender) -> None:
    """The same kept samples (to float32 rounding) and the same posterior metrics."""
    assert a.posterior is not None and a.posterior.size == b.posterior.size > 0
    for name, y in b.posterior.samples.items():
        if y.numel():
            x = a.posterior.samples[name]
            assert float((x - y).abs().max()) <= 1e-4 * max(float(y.abs().max()), 1e-12), name
    for key in ("val/rmse", "test/rmse", "test/nll", "test/coverage_90", "test/ndcg@10",
                "train/rmse"):
        assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-5), key
    assert a.metrics["test/n"] == b.metrics["test/n"]


def test_two_and_three_ranks_run_the_chain_one_process_runs(tmp_path):
    """Each rank draws its own rows from the same random numbers: one process's chain."""
    one = run(command(tmp_path / "one", 1, extra=GIBBS), tmp_path / "cwd-one")
    assert one.returncode == 0, one.stderr[-2000:]
    for nproc in (2, 3):
        many = run(command(tmp_path / f"p{nproc}", 1, nproc=nproc, extra=GIBBS),
                   tmp_path / f"cwd-{nproc}")
        assert many.returncode == 0, many.stderr[-2000:]
        a, b = model_of(tmp_path / f"p{nproc}"), model_of(tmp_path / "one")
        assert_same_model(a, b)  # the posterior means
        assert_same_chain(a, b)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker ``rank`` under the launcher ``parent``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def _epoch(root: Path) -> int:
    found = list(root.glob("outputs/train/**/checkpoint.pt"))
    if not found:
        return 0
    try:
        state = load_tree(found[0], CHECKPOINT_KIND, CHECKPOINT_FORMAT)
    except Exception:  # being replaced: ask again
        return 0
    return state["state"]["epoch"] if "state" in state else state["sweep"]  # ALS or Gibbs


KILL_EPOCHS = 150


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Recommender:
    """One process's uninterrupted run: where a job whose rank was killed must end."""
    root = tmp_path_factory.mktemp("whole")
    one = run(command(root, KILL_EPOCHS), root / "cwd")
    assert one.returncode == 0, one.stderr[-2000:]
    return model_of(root)


def _start_and_kill_rank_1(root: Path, cwd: Path, restarts: int = 0, sig=signal.SIGKILL,
                           timeout: str = "120",
                           extra: tuple[str, ...] = ()) -> tuple[int, str, int, float]:
    """Start a 2-rank job, send rank 1 ``sig`` (SIGKILL: killed, SIGSTOP: hung) after epoch
    3; its exit code, output, the epoch of the last checkpoint, and the seconds from the
    signal to the job's end."""
    cwd.mkdir(parents=True, exist_ok=True)
    job = subprocess.Popen(command(root, KILL_EPOCHS, nproc=2, restarts=restarts, extra=extra),
                           cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "REC_DIST_TIMEOUT": timeout})
    victim = None
    try:
        deadline = time.time() + 90
        while _epoch(root) < 3 and job.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        victim = _rank_pid(job.pid, 1)
        assert victim is not None and job.poll() is None, "the job ended before the kill"
        os.kill(victim, sig)
        start = time.monotonic()
        out, _ = job.communicate(timeout=150)  # stops (or restarts): no hang
        took = time.monotonic() - start
    finally:
        if job.poll() is None:
            job.kill()
        if victim is not None and sig != signal.SIGKILL:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return job.returncode, out, _epoch(root), took


def _assert_ends_like(root: Path, whole: Recommender) -> None:
    resumed = model_of(root)
    assert_same_model(resumed, whole)
    assert resumed.metrics["epochs"] == whole.metrics["epochs"] == KILL_EPOCHS
    np.testing.assert_allclose(resumed.metrics["test/rmse"], whole.metrics["test/rmse"], atol=1e-5)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_rank_stops_the_job_and_the_rerun_resumes_to_the_same_end(tmp_path, whole_run):
    root, cwd = tmp_path / "two", tmp_path / "cwd"
    code, out, killed_at, _ = _start_and_kill_rank_1(root, cwd)
    assert code != 0 and "SIGKILL" in out and 3 <= killed_at < KILL_EPOCHS
    again = run(command(root, KILL_EPOCHS, nproc=2), cwd)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming the unfinished run" in again.stdout + again.stderr
    _assert_ends_like(root, whole_run)


LONG_CHAIN = ("inference=gibbs", "inference.warm_start=0", "inference.burn_in=2",
              f"inference.samples={KILL_EPOCHS}", "inference.keep=3",
              "inference.checkpoint_every=1")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_chain_resumes_to_one_process_chain(tmp_path):
    """Each rank's running averages of its own users' held-out predictions are in the
    checkpoint: the rerun continues every rank's, and ends where one process ends (killed
    after sweep 3, past the burn-in: the averages have begun)."""
    one = run(command(tmp_path / "one", KILL_EPOCHS, extra=LONG_CHAIN), tmp_path / "cwd-one")
    assert one.returncode == 0, one.stderr[-2000:]
    root, cwd = tmp_path / "two", tmp_path / "cwd"
    code, out, killed_at, _ = _start_and_kill_rank_1(root, cwd, extra=LONG_CHAIN)
    assert code != 0 and 3 <= killed_at < 2 + KILL_EPOCHS, (killed_at, out[-2000:])
    again = run(command(root, KILL_EPOCHS, nproc=2, extra=LONG_CHAIN), cwd)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming the unfinished run" in again.stdout + again.stderr
    resumed, whole = model_of(root), model_of(tmp_path / "one")
    assert_same_model(resumed, whole)
    assert_same_chain(resumed, whole)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_under_max_restarts_the_job_resumes_by_itself(tmp_path, whole_run):
    root = tmp_path / "two"
    code, out, _, _ = _start_and_kill_rank_1(root, tmp_path / "cwd", restarts=1)
    assert code == 0, out[-3000:]
    assert "exitcode: -9" in out and "resuming the unfinished run" in out  # restarted
    assert len(list(root.glob("outputs/train/*/*/*/run.json"))) == 1  # the same run folder
    _assert_ends_like(root, whole_run)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_hung_rank_stops_the_job_within_the_timeout(tmp_path):
    code, out, _, took = _start_and_kill_rank_1(tmp_path / "two", tmp_path / "cwd",
                                                sig=signal.SIGSTOP, timeout="8")
    assert code != 0 and "another rank stopped answering" in out, out[-3000:]
    assert took < 8 + 10, took  # torchrun alone would wait 30 s more for the hung rank


def test_a_failed_collective_says_what_happened_and_what_to_do():
    from rec.distributed import Dist, LostPeer

    def broken(*_):
        raise RuntimeError("[gloo/pair.cc:537] Read error: Connection reset by peer\nmore")
    with pytest.raises(LostPeer, match=r"rank 1 of 2: another rank stopped answering during "
                       r"all_reduce \(\[gloo/pair.cc:537\] Read error: Connection reset by "
                       r"peer\)\..*Rerun the same command.*--max-restarts"):
        Dist(1, 2)._collective("all_reduce", broken)


def test_the_plan_counts_what_a_rank_holds_and_sends():
    from rec.data.shards import BLOCK
    from rec.distributed import (FUSED_RATING_BYTES, OWN_TABLE_COPIES, PADDED_RATING_BYTES,
                                  READ_BLOCK_BYTES, TABLE_COPIES, plan)
    p = plan(n_users=10, n_items=5, nnz=100, k=3, parts=2)
    row = 4 * 4  # K + 1 floats
    assert p["tables"] == (TABLE_COPIES + OWN_TABLE_COPIES / 2) * 15 * row
    assert p["exchange_sent"] == 15 * row / 2  # its own rows to P - 1 ranks: (P - 1) / P
    assert p["grouped"] == 100 * FUSED_RATING_BYTES  # 2 nnz / P ratings
    assert plan(10, 5, 100, 3, 2, kernel="torch")["grouped"] == pytest.approx(
        100 * PADDED_RATING_BYTES)
    assert p["outblocks_received"] == (5 + 10) * row  # all rows: 50 ratings touch them all
    # nnz / P read; the rank's users' share of the 10% held out
    assert p["read_side"] == 50 * 12 and p["held_out"] == pytest.approx(5 * 12)
    big = dict(n_users=10, n_items=5, nnz=10 * BLOCK, k=3, parts=2)
    assert plan(**big)["read_side"] == READ_BLOCK_BYTES  # the fused layout: one block read
    assert plan(**big, kernel="torch")["read_side"] == 5 * BLOCK * 12  # the side, whole
    assert p["rank0_rated"] == 100 * 4 + 11 * 8  # nnz under one block: all of it
    assert plan(**big)["rank0_rated"] == BLOCK * 4 + 11 * 8  # one block of movies
    many = plan(n_users=10, n_items=5, nnz=100, k=3, parts=100)
    assert many["outblocks_received"] == 2 * row and many["exchange_sent"] > p["exchange_sent"]


def _rows(*tensors) -> set:
    return set(zip(*(t.tolist() for t in tensors)))


def _check_shards(cfg, split_cfg, world: int, block: int) -> None:
    """Every rank's shard against the whole dataset loaded in one process."""
    from rec.data import load_dataset
    from rec.data.shards import prepare, read_shard
    from rec.metrics import pairs_of_users
    ratings = load_dataset(cfg)
    split = split_cfg.make(ratings)
    prepare(cfg, split_cfg)
    shards = [read_shard(cfg, split_cfg, r, world, shard_bounds, block) for r in range(world)]
    train = tuple(t[split.train] for t in (ratings.user, ratings.item, ratings.rating))
    for by, (row, col) in (("user", (0, 1)), ("item", (1, 0))):
        sides = [s.side(by) for s in shards]  # (row, column, rating): rows are the side's
        assert sum(side[0].numel() for side in sides) == split.train.numel()  # once per side
        assert set().union(*(_rows(*side) for side in sides)) == _rows(train[row], train[col],
                                                                       train[2])
        for s, side in zip(shards, sides):
            rows = s.user_rows if by == "user" else s.item_rows
            assert bool(((side[0] >= rows.start) & (side[0] < rows.stop)).all())
            degree = s.side_degree(by)
            assert torch.equal(degree, torch.bincount(side[0].long(), minlength=degree.numel()))
        assert max(side[0].numel() for side in sides) < 0.7 * split.train.numel()
    whole = Recommender.from_training(ratings, split.train, Params.initial(
        ratings.n_users, ratings.n_items, ratings.n_genres, 2, 0.0, 0.1, 0), ModelConfig(K=2))
    for s in shards:
        assert torch.equal(s.user_degree, ratings.user_counts(split.train))
        assert torch.equal(s.item_degree, ratings.item_counts(split.train))
        assert s.sizes == split.sizes() and len(s) == len(ratings)
        for part in ("val", "test"):  # exactly its users' held-out ratings, in file order
            index = getattr(split, part)
            user = ratings.user[index]
            index = index[(user >= s.user_rows.start) & (user < s.user_rows.stop)]
            assert 0 < index.numel() < getattr(split, part).numel()
            for got, want in zip(getattr(s, part), (ratings.user, ratings.item, ratings.rating)):
                assert torch.equal(got, want[index])
        assert s.summary() == pytest.approx(ratings.summary())
        assert s.rating_values == tuple(torch.unique(train[2]).tolist())
        users = torch.arange(s.user_rows.start, s.user_rows.stop)
        assert _rows(*s.pairs(users)) == _rows(*pairs_of_users(ratings, split.train, users))
    offsets, items = shards[-1].rated_by_user()
    assert torch.equal(offsets, whole.rated_offsets) and torch.equal(items, whole.rated_items)


def test_each_rank_reads_only_its_shard_of_ml_latest_small(small_root, tmp_path):
    from rec.data import DataConfig
    from rec.data.splits import SplitConfig
    cfg = DataConfig(name="ml-latest-small", root=str(small_root), cache_dir=str(tmp_path))
    _check_shards(cfg, SplitConfig(), world=3, block=5000)


def test_shards_of_an_unordered_file_split_by_time(small, tmp_path):
    """Ratings in no particular order (the published model's rows are sorted by user block
    by block) and a split that needs timestamps, computed once for every rank."""
    from rec.data import DataConfig
    from rec.data.shards import labels_path
    from rec.data.splits import SplitConfig
    order = torch.randperm(len(small), generator=torch.Generator().manual_seed(3))
    lines = ["u,m,r,t"] + [f"{int(small.user_ids[u])},{int(small.movies.ids[m])},{float(r)},{int(t)}"
                           for u, m, r, t in zip(small.user[order], small.item[order],
                                                 small.rating[order], small.timestamp[order])]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(name="csv", path=str(tmp_path / "ratings.csv"), cache_dir=str(tmp_path),
                     columns={"user": "u", "item": "m", "rating": "r", "timestamp": "t"})
    split = SplitConfig(kind="temporal")
    _check_shards(cfg, split, world=2, block=777)
    (labels,) = tmp_path.glob("*.labels.bin")
    assert labels.name.endswith(f"{split.tag()}.labels.bin")


@pytest.mark.parametrize("kind", ["random", "temporal", "leave_last", "cold_movies"])
def test_labels_are_one_process_split_without_loading_the_dataset(kind, small, small_root,
                                                                  tmp_path, monkeypatch):
    from rec.bundle import read_bundle
    from rec.data import DataConfig
    from rec.data import shards
    from rec.data.load import load_dataset
    from rec.data.splits import SplitConfig
    from rec.errors import DataError
    cfg = DataConfig(name="ml-latest-small", root=str(small_root), cache_dir=str(tmp_path))
    load_dataset(cfg)  # the cache, as a machine's first rank finds it

    def refuse(*_, **__):
        raise AssertionError(f"the {kind} split's labels loaded the whole dataset")
    monkeypatch.setattr(shards, "load_dataset", refuse)
    monkeypatch.setattr(shards, "BLOCK", 777)  # people's runs of ratings across blocks
    split = SplitConfig(kind=kind) if kind == "leave_last" else \
        SplitConfig(kind=kind, fractions=(0.8, 0.15, 0.05), seed=0 if kind == "temporal" else 4,
                    cold_fraction=0.2 if kind == "cold_movies" else None)
    arrays, meta = read_bundle(shards.write_labels(cfg, split))
    parts = split.make(small)
    want = np.full(len(small), shards.NEITHER, np.int8)
    for code, index in enumerate((parts.train, parts.val, parts.test)):
        want[index.numpy()] = code
    np.testing.assert_array_equal(arrays["label"], want)
    assert meta["sizes"] == parts.sizes()
    assert meta["values"] == torch.unique(small.rating[parts.train]).tolist()
    if kind in ("random", "temporal"):  # leave-last's fractions are fixed, cold movies' held
        with pytest.raises(DataError, match="leaves val (and test )?empty"):  # out anyway
            shards.write_labels(cfg, SplitConfig(kind=kind, fractions=(0.99999, 0.0, 0.00001)))


def test_a_corrupt_or_stale_labels_file_is_refused_then_rewritten(small, small_root, tmp_path):
    from rec.data import DataConfig
    from rec.bundle import read_header, write_bundle
    from rec.data.load import open_cache
    from rec.data.shards import labels_path, prepare, read_shard
    from rec.data.splits import SplitConfig
    from rec.errors import DataError
    cfg, split = DataConfig(name="ml-latest-small", root=str(small_root),
                            cache_dir=str(tmp_path)), SplitConfig()
    prepare(cfg, split)
    path = labels_path(open_cache(cfg).path, split)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        read_shard(cfg, split, 0, 2, shard_bounds)
    other = SplitConfig(seed=1)
    with pytest.raises(DataError, match="no labels"):
        read_shard(cfg, other, 0, 2, shard_bounds)
    prepare(cfg, other)  # labels of another cache's ratings are refused
    alien = labels_path(open_cache(cfg).path, other)
    header = read_header(alien)["meta"]
    write_bundle(alien, {"label": np.zeros(len(small), np.int8)},
                 {**header, "cache": {**header["cache"], "rating": 0}})
    with pytest.raises(DataError, match="another cache"):
        read_shard(cfg, other, 0, 2, shard_bounds)
    for labels in (split, other):
        prepare(cfg, labels)
        assert read_shard(cfg, labels, 1, 2, shard_bounds).sizes["train"] > 0


def test_a_shards_model_file_streams_its_rated_movies_to_the_same_bytes(small_root, tmp_path):
    """The published model of a job of several processes: its rated-movies CSR goes from the
    cache to the file block by block, and the file is the one the whole CSR would give."""
    from rec.bundle import StreamedArray
    from rec.data import DataConfig
    from rec.data.shards import prepare, read_shard
    from rec.data.splits import SplitConfig
    cfg = DataConfig(name="ml-latest-small", root=str(small_root), cache_dir=str(tmp_path))
    prepare(cfg, SplitConfig())
    shard = read_shard(cfg, SplitConfig(), 1, 2, shard_bounds, 7000)
    streamed = shard.rated_items_streamed()
    offsets, items = shard.rated_by_user()
    assert isinstance(streamed, StreamedArray) and streamed.length == items.numel()
    assert torch.equal(torch.from_numpy(np.concatenate(list(streamed.blocks()))), items)
    params = Params.initial(shard.n_users, shard.n_items, shard.n_genres, 2, 3.5, 0.1, 0)
    whole = Recommender.from_shard(shard, params, ModelConfig(K=2)).save(tmp_path / "whole.pt")
    parts = Recommender.save_from_shard(tmp_path / "parts.pt", shard, params, ModelConfig(K=2))
    assert parts.read_bytes() == whole.read_bytes()
    loaded = Recommender.load(parts)
    assert torch.equal(loaded.rated_items, items) and torch.equal(loaded.rated_offsets, offsets)
