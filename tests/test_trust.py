"""Trust, as a hostile user would test it: files that cannot run code, damaged files that are
refused, resumes that cannot mix data, runs that cannot collide, and one line for every
failure a user can cause."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rec.als import ModelConfig
from rec.bundle import StreamedArray, load_tree, save_tree
from rec.data import DataConfig, load_dataset, make_split
from rec.errors import CacheError, ConfigError, DataError, RecError
from rec.files import atomic_write, clean_stale_temps
from rec.model import FORMAT, KIND, Recommender
from rec.runs import RunLock, claim_run, sidecar
from rec.training import TrainConfig, fit, load_checkpoint
from tests.conftest import RANDOM, REPO

TINY = ["K=3", "train.max_epochs=3", "train.ranking_max_users=20", "tensorboard=false"]


def cli(script: str, *args: str, cwd: Path, data_root: Path, prelude: str = "",
        timeout: int = 300) -> subprocess.CompletedProcess:
    """``python script args`` in a clean environment; ``prelude`` runs first (to simulate a
    failing disk)."""
    command = [sys.executable, str(REPO / script), *args]
    if prelude:
        command = [sys.executable, "-c", prelude + "\nimport runpy, sys\n"
                   f"sys.argv = {[str(REPO / script), *args]!r}\n"
                   f"runpy.run_path({str(REPO / script)!r}, run_name='__main__')"]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "REC_DATA_ROOT": str(data_root),
                               "REC_CACHE_DIR": str(cwd / "cache"), "HOME": str(cwd / "home"),
                               "PYTHONPATH": str(REPO)})


def assert_one_line(out: subprocess.CompletedProcess, *expected: str) -> str:
    """The run failed with exit status 2 and one line on standard error that says each of
    ``expected``."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model(small) -> Recommender:
    split = make_split(small)
    cfg = ModelConfig(name="features", K=3)
    result = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=20))
    return Recommender.from_training(small, split.train, result.params, cfg, result.final)


# -- 1. no file rec reads can run code -------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A file that runs ``touch marker`` when unpickled: a torch.save archive or a bare pickle."""
    marker, path = tmp_path / f"ran-{how}", tmp_path / f"crafted-{how}.pt"
    payload = {"format": 3, "params": _Payload(marker)}
    if how == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path, marker


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_a_crafted_pickle_runs_nothing_as_a_model_or_a_checkpoint(tmp_path, how, small):
    path, marker = _crafted(tmp_path, how)
    with pytest.raises(RecError, match="loading a pickle can run code"):
        Recommender.load(path)
    with pytest.raises(RecError, match="unusable checkpoint"):
        load_checkpoint(path, "any")
    split = make_split(small)
    with pytest.raises(RecError, match="unusable checkpoint"):  # a resumed run reads it first
        fit(small, split, ModelConfig(name="biases"), TrainConfig(max_epochs=1),
            checkpoint=path, fingerprint="any")
    assert not marker.exists()


def test_a_crafted_pickle_runs_nothing_through_analyze_or_a_resume(small_root, tmp_path):
    path, marker = _crafted(tmp_path, "torch")
    out = cli("analyze.py", "task=recommend", f"checkpoint={path}", "K=3",
              cwd=tmp_path / "a", data_root=small_root)
    assert_one_line(out, str(path), "loading a pickle can run code")
    # a resume: a finished run marked unfinished, its checkpoint replaced by the payload
    done = cli("train.py", *TINY, cwd=tmp_path / "r", data_root=small_root)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = next((tmp_path / "r" / "outputs" / "train").glob("*/*/*"))
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "finished": False}))
    (folder / "checkpoint.pt").write_bytes(path.read_bytes())
    again = cli("train.py", *TINY, cwd=tmp_path / "r", data_root=small_root)
    assert_one_line(again, "checkpoint.pt", "unusable checkpoint", "move it away")
    assert not marker.exists()


# -- 2. integrity ------------------------------------------------------------------------------

def test_every_flipped_byte_of_a_model_is_refused_with_the_files_name(model, tmp_path):
    path = model.save(tmp_path / "m.pt")
    good = path.read_bytes()
    assert Recommender.load(path).dataset == model.dataset
    header_end = 20 + int.from_bytes(good[8:16], "little")
    rng = np.random.default_rng(0)
    places = [9, 17, 30, header_end - 2, *rng.integers(header_end + 64, len(good), 12).tolist()]
    for at in places:
        damaged = bytearray(good)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(RecError, match=f"{path}: not a usable rec model"):
            Recommender.load(path)
    path.write_bytes(good[:-100])  # truncated
    with pytest.raises(RecError, match="truncated"):
        Recommender.load(path)


def test_nan_parameters_are_refused_at_save_and_at_load(model, tmp_path):
    bad = dataclasses.replace(model, params=model.params.clone())
    bad.params.item_bias[7] = float("nan")
    with pytest.raises(RecError, match="1 NaN or infinite value"):
        bad.save(tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()
    path = model.save(tmp_path / "m.pt")
    state = load_tree(path, KIND, FORMAT)
    state["params"]["item_bias"][3] = float("inf")
    save_tree(path, state, KIND, FORMAT)  # written without the finite check, as a tamperer would
    with pytest.raises(RecError, match="infinite value.*params/item_bias"):
        Recommender.load(path)


def test_a_streamed_array_writes_the_bytes_of_the_whole_one_or_nothing(tmp_path):
    parts = [np.arange(5, dtype=np.int32), np.arange(5, 12, dtype=np.int32)]
    streamed = StreamedArray.of(lambda: iter(parts), np.int32)
    whole = save_tree(tmp_path / "whole", {"a": torch.cat([torch.from_numpy(p) for p in parts])},
                      "k", 1)
    assert save_tree(tmp_path / "parts", {"a": streamed}, "k", 1).read_bytes() == \
        whole.read_bytes()
    loaded = load_tree(tmp_path / "parts", "k", 1)["a"]
    assert torch.equal(loaded, torch.arange(12, dtype=torch.int32))
    parts[1] = parts[1] + 1  # the source changed between the checksum and the write
    with pytest.raises(CacheError, match="changed while it was written"):
        save_tree(tmp_path / "changed", {"a": streamed}, "k", 1)
    assert not list(tmp_path.glob("*changed*"))  # nothing half-written left
    floats = StreamedArray.of(lambda: iter([np.ones(3, np.float32)]), np.float32)
    with pytest.raises(CacheError, match="not checked for NaN"):
        save_tree(tmp_path / "f", {"params": floats}, "k", 1, finite=("params",))


def test_a_model_round_trips_exactly(model, tmp_path):
    loaded = Recommender.load(model.save(tmp_path / "m.pt"))
    for name in ("user_factors", "item_bias", "genre_factors"):
        assert torch.equal(getattr(loaded.params, name), getattr(model.params, name))
    assert loaded.rating_range == model.rating_range and loaded.movies.titles == model.movies.titles
    assert loaded.recommend(1, 5) == model.recommend(1, 5)


# -- 3. a resume resumes only the same run -----------------------------------------------------

def _two_files_of_one_name_and_size(small, tmp_path) -> tuple[Path, Path]:
    """ml-latest-small's ratings as two CSVs named alike, of the same size, whose ratings
    differ (the rating column shuffled: every value is written as three characters)."""
    users = small.user_ids[small.user.long()].numpy()
    movies = small.movies.ids[small.item.long()].numpy()
    ratings = small.rating.numpy()
    paths = []
    for name, values in (("a", ratings), ("b", np.random.default_rng(1).permutation(ratings))):
        folder = tmp_path / name
        folder.mkdir()
        lines = ["userId,movieId,rating,timestamp"] + [
            f"{u},{m},{r:.1f},0" for u, m, r in zip(users, movies, values)]
        (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
        paths.append(folder / "ratings.csv")
    assert paths[0].stat().st_size == paths[1].stat().st_size
    return paths[0], paths[1]


def test_an_unfinished_run_on_other_data_of_the_same_name_and_size_is_not_resumed(small, tmp_path):
    a, b = _two_files_of_one_name_and_size(small, tmp_path)
    args = [*TINY, "data=csv", "train.max_epochs=2"]
    first = cli("train.py", *args, f"data.path={a}", cwd=tmp_path / "w", data_root=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    folder = next((tmp_path / "w" / "outputs" / "train").glob("*/*/*"))
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "finished": False}))  # as if killed
    second = cli("train.py", *args, f"data.path={b}", cwd=tmp_path / "w", data_root=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    relative = folder.relative_to(tmp_path / "w")
    assert f"not resuming {relative}: it was started with other data (its content differs); " \
        "training afresh" in second.stdout
    fresh = cli("train.py", *args, f"data.path={b}", "resume=false", cwd=tmp_path / "f",
                data_root=tmp_path)
    val = lambda out: next(line for line in out.stdout.splitlines() if "val       RMSE" in line)
    assert val(second) == val(fresh) != val(first)


def test_a_ratings_file_edited_in_place_is_parsed_again(small, tmp_path):
    a, _ = _two_files_of_one_name_and_size(small, tmp_path)
    cfg = DataConfig(name="csv", path=str(a), cache_dir=str(tmp_path / "cache"))
    before = load_dataset(cfg)
    stat = a.stat()
    text = a.read_text().splitlines()
    first = text[1].rsplit(",", 2)
    text[1] = f"{first[0]},{'0.5' if first[1] != '0.5' else '5.0'},{first[2]}"
    a.write_text("\n".join(text) + "\n")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time
    assert a.stat().st_size == stat.st_size
    after = load_dataset(cfg)
    assert after.digest != before.digest
    assert not torch.equal(after.rating, before.rating)


def test_a_run_being_trained_is_never_resumed_by_another_process(tmp_path):
    identity = {"data": ["x", "d1"], "seed": 0}
    first = claim_run(tmp_path, tmp_path / "one", identity, "x_K3", True, tmp_path / "tb")
    (first[0] / "checkpoint.pt").write_bytes(b"...")  # an unfinished run with a checkpoint
    first[2].release()
    again = claim_run(tmp_path, tmp_path / "two", identity, "x_K3", True, tmp_path / "tb")
    assert again[0] == first[0] and not again[3]  # free: resumed
    third = claim_run(tmp_path, tmp_path / "three", identity, "x_K3", True, tmp_path / "tb")
    assert third[0] == tmp_path / "three"  # held by `again`: a folder of its own
    assert third[3] == [f"not resuming {first[0]}: another process is training it; this run "
                        "trains in a folder of its own"]
    other = claim_run(tmp_path, tmp_path / "four", {**identity, "seed": 1}, "x_K3", True,
                      tmp_path / "tb")
    assert other[0] == tmp_path / "four" and "other seed; training afresh" in other[3][-1]
    with pytest.raises(RecError, match="another run already uses this folder"):
        claim_run(tmp_path, tmp_path / "four", identity, "x_K3", False, tmp_path / "tb")
    for claim in (again, third, other):
        claim[2].release()
    assert RunLock(first[0]).acquire()


# -- 4. runs never share a folder -------------------------------------------------------------

def test_two_runs_started_together_keep_their_own_folders_and_the_sidecar_names_the_winner(
        small_root, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "REC_DATA_ROOT": str(small_root),
           "REC_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    load_dataset(DataConfig(name="ml-latest-small", root=str(small_root),
                            cache_dir=str(tmp_path / "cache")))  # one cache, written once
    jobs = [subprocess.Popen([sys.executable, str(REPO / "train.py"), *TINY, f"model.tau={tau}"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for tau in (15, 5)]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
    folders = sorted((tmp_path / "outputs" / "train").glob("*/*/*"))
    assert len(folders) == 2
    for folder in folders:
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        tau = json.loads((folder / "metrics.json").read_text())["model"]["tau"]
        assert f"model.tau={tau:g}" in overrides, (overrides, tau)
        assert Recommender.load(folder / "model.pt").config.tau == tau
    published = next((tmp_path / "models").glob(f"*/{RANDOM}/*.pt"))
    record = json.loads(sidecar(published).read_text())
    winner = Recommender.load(published)
    assert winner.meta["run"] == record["run"] and f"model.tau={winner.config.tau:g}" in \
        record["overrides"]


def test_a_killed_writers_temporary_files_are_cleaned_and_a_live_ones_kept(tmp_path):
    import socket
    target = tmp_path / "model.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f".model.pt.{host}.{dead}.abcd1234.tmp"
    live = tmp_path / f".model.pt.{host}.{os.getppid()}.abcd1234.tmp"
    other = tmp_path / f".other.pt.{host}.{dead}.abcd1234.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"half")
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"whole"))
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists()
    assert clean_stale_temps(tmp_path / "other.pt") == [other]


# -- 5. nothing silent --------------------------------------------------------------------------

def test_max_epochs_zero_is_refused_and_the_published_model_stays(small_root, tmp_path):
    first = cli("train.py", *TINY, cwd=tmp_path, data_root=small_root)
    assert first.returncode == 0, first.stderr[-2000:]
    published = next((tmp_path / "models").glob(f"*/{RANDOM}/*.pt"))
    before = published.read_bytes()
    out = cli("train.py", *TINY, "train.max_epochs=0", cwd=tmp_path, data_root=small_root)
    assert_one_line(out, "train.max_epochs=0", "1 or more")
    assert published.read_bytes() == before
    with pytest.raises(ConfigError, match="max_epochs=0"):
        TrainConfig(max_epochs=0)


@pytest.mark.parametrize("pairs, message", [
    ([(1, float("nan"))], r"numbers in \[0.5, 5.0\]"),
    ([(1, 6.0)], r"numbers in \[0.5, 5.0\]"),
    ([(1, 4.0), (1, 5.0)], r"movie id\(s\) \[1\] more than once"),
    ([(1.7, 4.0)], "movie id 1.7 is not an integer"),
    ([(99999999, 4.0)], "movie id 99999999 is not in"),
    ([], "at least one"),
    ("4993", "list of \\(movie id, rating\\) pairs"),
    ([(1, "good")], "ratings must be numbers"),
])
def test_fold_in_refuses_what_it_cannot_use(model, pairs, message):
    with pytest.raises(RecError, match=message):
        model.fold_in(pairs)
    with pytest.raises(RecError, match=message):
        model.recommend_new_user(pairs)


def test_ids_and_k_are_checked_never_truncated(model):
    user = int(model.user_ids[0])
    assert model.recommend(user, 3) == model.recommend(float(user), 3)  # 1.0 is the id 1
    for bad in (1.7, "1", True, float("nan")):
        with pytest.raises(RecError, match="is not an integer"):
            model.recommend(bad)
    for k in (-5, 0, 2.5, "10"):
        with pytest.raises(RecError, match=f"k={k!r}: expected a whole number, 1 or more"):
            model.recommend(user, k)
    with pytest.raises(RecError, match="2 user ids and 1 movie ids"):
        model.predict_ids(torch.tensor([user, user]), torch.tensor([1]))
    with pytest.raises(RecError, match="ids must be integers"):
        model.predict_ids(torch.tensor([user + 0.5]), torch.tensor([1]))
    everything = model.recommend(user, 10**9, exclude_rated=False)
    assert len(everything) == model.movies.ids.numel()


def test_recommendations_show_ratings_on_the_scale(model):
    lo, hi = model.rating_range
    records = model.recommend(int(model.user_ids[0]), 50, exclude_rated=False)
    assert all(lo <= r["predicted"] <= hi for r in records)
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)


def test_a_genre_may_be_given_as_one_string(model):
    assert torch.equal(model.new_movie("Action"), model.new_movie(["Action"]))
    assert torch.equal(model.new_movie("Action|Comedy"), model.new_movie(["Action", "Comedy"]))
    with pytest.raises(RecError, match=r"genres \['Acton'\] are not among"):
        model.new_movie("Acton")


# -- 6. one line for every failure a user can cause --------------------------------------------

NO_SPACE = """
import errno, os, tempfile
_real = tempfile.mkstemp
def _full(*args, prefix='', **kw):
    if {what!r} in prefix:
        raise OSError(errno.{code}, os.strerror(errno.{code}), prefix)
    return _real(*args, prefix=prefix, **kw)
tempfile.mkstemp = _full
"""
HYDRA_NO_SPACE = """
import errno, os
import hydra.core.utils as u
def _full(cfg, filename, output_dir):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(output_dir / filename))
u._save_config = _full
"""


MODEL = ".features+genre_bias+flipped+year+drift-K3.pt."


@pytest.mark.parametrize("prelude, where, problem", [
    (HYDRA_NO_SPACE, "config.yaml", "no space left on its disk"),
    (NO_SPACE.format(what=".checkpoint.pt.", code="ENOSPC"), "checkpoint", "no space left"),
    (NO_SPACE.format(what=MODEL, code="ENOSPC"), MODEL[1:-1], "no space left on its disk"),
    (NO_SPACE.format(what=MODEL, code="EROFS"), MODEL[1:-1], "read-only file system"),
    (NO_SPACE.format(what=MODEL, code="EACCES"), MODEL[1:-1], "permission denied")])
def test_a_full_or_unwritable_disk_is_one_line_that_names_the_file_and_destroys_nothing(
        small_root, tmp_path, prelude, where, problem):
    first = cli("train.py", *TINY, cwd=tmp_path, data_root=small_root)
    assert first.returncode == 0, first.stderr[-2000:]
    published = next((tmp_path / "models").glob(f"*/{RANDOM}/*.pt"))
    before = published.read_bytes()
    out = cli("train.py", *TINY, "model.tau=3", cwd=tmp_path, data_root=small_root,
              prelude=prelude)
    assert_one_line(out, problem, where, "paths.root")
    assert published.read_bytes() == before
    Recommender.load(published)


@pytest.mark.parametrize("override, expected", [
    ("device=mps", "device=mps: rec runs on cpu or cuda"),
    ("device=banana", "device=banana: rec runs on cpu or cuda"),
    ("K=100000", "K=100000 needs at least"),
    ("data.planted.rank=5", "+data.planted.rank=5"),
    ("model.nope=1", "Could not override 'model.nope'"),
])
def test_bad_options_are_one_line(small_root, tmp_path, override, expected):
    assert_one_line(cli("train.py", *TINY, override, cwd=tmp_path, data_root=small_root),
                    expected)


@pytest.mark.parametrize("scale, expected", [("nan", "data.scale=nan: expected a finite number"),
                                             ("1e9", "lower data.scale")])
def test_impossible_synthetic_sizes_are_one_line_and_write_nothing(tmp_path, scale, expected):
    out = cli("train.py", "data=synthetic", f"data.scale={scale}", *TINY, cwd=tmp_path / "w",
              data_root=tmp_path / "data")
    assert_one_line(out, expected)
    assert not (tmp_path / "data").exists()


def test_an_unusable_output_folder_is_one_line(small_root, tmp_path):
    (tmp_path / "a-file").write_text("x")
    out = cli("train.py", *TINY, f"paths.root={tmp_path / 'a-file'}", cwd=tmp_path / "w",
              data_root=small_root)
    assert_one_line(out, "a file stands where rec needs a folder")
    out = cli("train.py", *TINY, "paths.root=/proc/rec-test", cwd=tmp_path / "w",
              data_root=small_root)
    assert_one_line(out, "/proc/rec-test", "paths.root")
    assert (tmp_path / "a-file").read_text() == "x"


def test_compressed_folder_and_huge_id_inputs_say_what_they_are(tmp_path):
    import gzip
    plain = "userId,movieId,rating,timestamp\n1,1,4.0,0\n2,1,3.0,0\n"
    packed = tmp_path / "gz" / "ratings.csv"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.encode()))
    cfg = lambda path: DataConfig(name="csv", path=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"is gzip-compressed; rec reads plain text. Decompress "
                                        r"it first \(gunzip ratings.csv\)") as e:
        load_dataset(cfg(packed))
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
    folder = tmp_path / "dir" / "ratings.csv"
    folder.mkdir(parents=True)
    with pytest.raises(DataError, match="is a folder, not a ratings file"):
        load_dataset(cfg(folder))
    (tmp_path / "ml" / "ml-latest-small" / "ratings.csv").mkdir(parents=True)
    with pytest.raises(DataError, match="is a folder, not the ratings file"):
        load_dataset(DataConfig(name="ml-latest-small", root=str(tmp_path / "ml"),
                                cache_dir=str(tmp_path / "cache")))
    huge = tmp_path / "huge.csv"
    huge.write_text(plain + f"{2**64},1,4.0,0\n")
    with pytest.raises(DataError, match=r"line 4, column 'userId': 18446744073709551616 is too "
                                        r"large for an id"):
        load_dataset(cfg(huge))


def test_run_folders_are_unique_within_one_second(tmp_path):
    out = [subprocess.run([sys.executable, "-c", "\n".join([
        "from rec.hydra_config import register_resolvers",
        "from omegaconf import OmegaConf",
        "register_resolvers()",
        "c = OmegaConf.create({'a': '${run_id:}', 'b': '${run_id:}'})",
        "print(c.a, c.b)"])], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split() for _ in range(2)]
    assert out[0][0] == out[0][1] and out[0][0] != out[1][0]
