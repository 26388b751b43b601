"""Trustworthy runs: the typed run configuration, visible splits, and the defects a new user met."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rec.analysis.run import TASKS, run_task
from rec.data import DataConfig, load_dataset
from rec.data.splits import SplitConfig
from rec.errors import ConfigError, DataError, RecError
from rec.hydra_config import analyze_config, run_config
from rec.mapping import from_mapping
from rec.model import Recommender
from rec.pipeline import train
from rec.progress import EpochProgress
from rec.run_config import RunConfig
from rec.training import TrainConfig
from tests.conftest import RANDOM, REPO
from tests.formats import write_ml100k

SHRINK = ["K=4", "train.max_epochs=4", "train.ranking_max_users=50", "tensorboard=false"]


def compose_cfg(name: str, tmp: Path, data_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=[f"paths.data_root={data_root}", f"paths.root={tmp}",
                                        *overrides])


@pytest.fixture(scope="module")
def ml100k_root(small, tmp_path_factory) -> Path:
    """ml-latest-small written as ml-100k (whole-star ratings) with two official folds."""
    root = tmp_path_factory.mktemp("ml100k")
    m = small.movies
    ids, users = m.ids.tolist(), small.user_ids.tolist()
    rows = [(users[u], ids[i], float(math.ceil(r)), t) for u, i, r, t in zip(
        small.user.tolist(), small.item.tolist(), small.rating.tolist(), small.timestamp.tolist())]
    movies = [(ids[i], m.titles[i].encode("latin-1", "replace").decode("latin-1"), m.genres_of(i))
              for i in range(small.n_items)]
    g = np.random.default_rng(0)
    folds = {}
    for fold in ("u1", "u2"):
        test = g.random(len(rows)) < 0.2
        folds[fold] = ([r for r, t in zip(rows, test) if not t], [r for r, t in zip(rows, test) if t])
    write_ml100k(root / "ml-100k", rows, movies, folds)
    return root


# -- the typed configuration ---------------------------------------------------------------

def test_the_composed_config_becomes_one_typed_run_config(small_root, tmp_path):
    run = run_config(compose_cfg("config", tmp_path, small_root, "model=embeddings", "K=7",
                                 "engine.tile_cols=0", "split=temporal"))
    assert isinstance(run, RunConfig)
    assert (run.model.name, run.model.K, run.engine.tile_cols) == ("embeddings", 7, 0)
    assert run.split == SplitConfig(kind="temporal") and run.split.needs_timestamps
    assert not SplitConfig().needs_timestamps
    assert run.paths.models == str(tmp_path / "models")


def test_from_mapping_refuses_unknown_keys_and_wrong_types_in_one_line():
    with pytest.raises(ConfigError, match=r"^train.max_epoch: train has no option 'max_epoch'"):
        from_mapping(TrainConfig, {"max_epoch": 3}, "train")
    with pytest.raises(ConfigError, match=r"^train.max_epochs='ten': expected an integer\.$"):
        from_mapping(TrainConfig, {"max_epochs": "ten"}, "train")
    with pytest.raises(ConfigError, match=r"^train.restore_best=1: expected true or false\.$"):
        from_mapping(TrainConfig, {"restore_best": 1}, "train")
    with pytest.raises(ConfigError, match=r"^split.fractions=\[0.9, nan, 0.1\]: expected three"):
        from_mapping(SplitConfig, {"fractions": [0.9, np.float64("nan"), 0.1]}, "split")
    with pytest.raises(ConfigError, match=r"^split.fractions=\[0.9, 0.1\]: expected a list of 3"):
        from_mapping(SplitConfig, {"fractions": [0.9, 0.1]}, "split")
    cfg = from_mapping(TrainConfig, {"min_delta": 0, "ranking_max_users": None}, "train")
    assert cfg.min_delta == 0.0 and isinstance(cfg.min_delta, float) and cfg.ranking_max_users is None


def test_a_mistyped_option_on_the_command_line_is_refused(small_root, tmp_path):
    with pytest.raises(ConfigError, match="train.max_epochs='ten'"):
        run_config(compose_cfg("config", tmp_path, small_root, "train.max_epochs=ten"))
    with pytest.raises(ConfigError, match="task has no option 'top'"):
        analyze_config(compose_cfg("analyze", tmp_path, small_root, "task=recommend", "+task.top=3"))


# -- defects --------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["temporal", "predefined"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_analysis_works_with_every_split_kind(task, split, small_root, ml100k_root, tmp_path):
    """Before the fix, the analysis context dropped the timestamps the temporal split needs."""
    root = ml100k_root if split == "predefined" else small_root
    data = "data=ml-100k" if split == "predefined" else "data=ml-latest-small"
    options = {"recommend": ["task.min_count=20"], "dimensions": ["task.Ks=[2,3]", "task.min_count=20"]}
    cfg = compose_cfg("analyze", tmp_path, root, f"task={task}", data, f"split={split}", *SHRINK,
                      *options.get(task, []))
    result = run_task(analyze_config(cfg), tmp_path / "out")
    assert result["split"]["kind"] == split and result["summary"]
    assert json.loads((tmp_path / "out" / f"{task}.json").read_text())["task"] == task


def test_a_fold_without_the_predefined_split_is_refused_saying_what_to_write(ml100k_root, tmp_path):
    cfg = compose_cfg("config", tmp_path, ml100k_root, "data=ml-100k", "split.fold=u1", *SHRINK)
    with pytest.raises(ConfigError, match="write split=predefined split.fold=u1"):
        run_config(cfg)
    cfg = compose_cfg("config", tmp_path, ml100k_root, "data=ml-100k", "split=temporal",
                      "split.fold=u2", *SHRINK)
    with pytest.raises(ConfigError, match="split is temporal; write split=predefined split.fold=u2"):
        run_config(cfg)
    assert not (tmp_path / "models").exists()  # refused before anything was trained


def test_dataset_options_another_kind_of_dataset_would_ignore_are_refused(small_root, tmp_path):
    with pytest.raises(ConfigError, match="data.scale=0.5: only data=synthetic uses it"):
        run_config(compose_cfg("config", tmp_path, small_root, "+data.scale=0.5"))
    with pytest.raises(ConfigError, match="data.path=x.csv: only data=csv uses it"):
        DataConfig(name="ml-100k", path="x.csv")
    assert DataConfig(name="synthetic", scale=0.5).scale == 0.5


@pytest.mark.parametrize("bad, message", [
    ({"kind": "temporal", "seed": 3}, "the temporal split has no seed"),
    ({"kind": "predefined", "fold": "u1", "fractions": (0.9, 0.05, 0.05)},
     r"write split.fractions=\[0.95,0.05,0\]"),
    ({"kind": "predefined"}, "needs a fold"),
    ({"kind": "by_user"}, "expected one of random, temporal, predefined"),
])
def test_split_options_that_its_kind_would_ignore_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        SplitConfig(**bad)


def test_the_summary_and_metrics_json_name_the_split(small_root, tmp_path, capsys):
    summary = train(run_config(compose_cfg("config", tmp_path, small_root, *SHRINK, "split.seed=3",
                                           "split.fractions=[0.8,0.1,0.1]")), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["split"]
    assert saved == summary["split"]
    assert {k: saved[k] for k in ("kind", "fractions", "seed")} == {
        "kind": "random", "fractions": [0.8, 0.1, 0.1], "seed": 3}
    sizes = saved["sizes"]
    assert sum(sizes.values()) == 100836 and sizes["val"] == sizes["test"] == round(100836 * 0.1)
    assert (f"  split     random 0.8/0.1/0.1, seed 3: {sizes['train']:,} train, {sizes['val']:,} val, "
            f"{sizes['test']:,} test") in capsys.readouterr().out
    assert summary["model_file"].endswith("random-0.8-0.1-0.1-seed3/features+genre_bias+flipped+year+drift-K4.pt")


def test_models_of_different_folds_never_overwrite_each_other(ml100k_root, tmp_path, capsys):
    files = {}
    for fold in ("u1", "u2"):
        cfg = compose_cfg("config", tmp_path, ml100k_root, "data=ml-100k", "split=predefined",
                          f"split.fold={fold}", *SHRINK)
        files[fold] = train(run_config(cfg), tmp_path / fold)["model_file"]
    assert files["u1"] != files["u2"] and all(Path(f).is_file() for f in files.values())
    assert Recommender.load(files["u2"]).meta["split"]["fold"] == "u2"
    capsys.readouterr()
    job = analyze_config(compose_cfg("analyze", tmp_path, ml100k_root, "task=genres", "data=ml-100k",
                                     "split=predefined", "split.fold=u2", *SHRINK))
    run_task(job, tmp_path / "genres")
    assert "training it first" not in capsys.readouterr().out  # found u2's model, not u1's
    job = analyze_config(compose_cfg("analyze", tmp_path, ml100k_root, "task=genres", "data=ml-100k",
                                     "split=predefined", "split.fold=u2", f"checkpoint={files['u1']}",
                                     *SHRINK))
    with pytest.raises(ConfigError, match="trained on the split kind=predefined.*fold=u1.*not the "
                                          "configured.*fold=u2"):
        run_task(job, tmp_path / "mismatch")


def test_a_missing_fold_file_is_named_with_where_to_get_it(tmp_path):
    write_ml100k(tmp_path / "ml-100k", [(1, 10, 4.0, 5), (2, 10, 3.0, 6)], [(10, "A (1990)", [])])
    r = load_dataset(DataConfig(name="ml-100k", root=str(tmp_path), download=False))
    with pytest.raises(DataError) as e:
        SplitConfig(kind="predefined", fold="u3", fractions=(0.95, 0.05, 0.0)).make(r)
    message = str(e.value)
    for needle in ("u3.base and u3.test", "are missing", str(tmp_path / "ml-100k"),
                   "https://files.grouplens.org/datasets/movielens/ml-100k.zip"):
        assert needle in message, message
    assert "no official folds" not in message


def test_a_dataset_without_official_folds_says_so(small):
    with pytest.raises(ConfigError, match="has no official folds"):
        SplitConfig(kind="predefined", fold="u1", fractions=(0.95, 0.05, 0.0)).make(small)


def cli(script: str, *args: str, cwd: Path, data_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "REC_DATA_ROOT": str(data_root),
                                          "REC_CACHE_DIR": str(cwd / "cache"),
                                          "HOME": str(cwd.parent / "home")})


def test_base_configs_are_not_offered_as_choices(tmp_path):
    out = cli("train.py", "--help", cwd=tmp_path, data_root=tmp_path)
    assert out.returncode == 0, out.stderr
    groups = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert "ml-100k" in groups["data"] and "features" in groups["model"]
    for group, choices in groups.items():
        assert not any(c.startswith("_") for c in choices.split(", ")), (group, choices)


def test_paths_root_puts_everything_a_run_writes_under_one_folder(small_root, tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    out = cli("train.py", f"paths.root={elsewhere}", "K=3", "train.max_epochs=2",
              "train.ranking_max_users=20", cwd=work, data_root=small_root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in work.iterdir()) == ["cache"]  # the data cache, nothing of the run
    assert next(elsewhere.glob(f"models/ml-latest-small/{RANDOM}/features+genre_bias+flipped+year+drift-K3.pt"))
    run = next(elsewhere.glob("outputs/train/ml-latest-small/features-K3/*"))
    assert {"metrics.json", "checkpoint.pt", "model.pt", ".hydra"} <= {p.name for p in run.iterdir()}
    assert next(elsewhere.glob("outputs/tensorboard/*/events.out.tfevents.*"))


def test_epoch_lines_go_to_the_log_file_and_to_the_terminal_only_when_verbose(small_root, tmp_path):
    args = ("K=3", "train.max_epochs=2", "train.ranking_max_users=20", "tensorboard=false")
    quiet = cli("train.py", *args, cwd=tmp_path, data_root=small_root)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "epoch 1:" not in quiet.stdout + quiet.stderr and "val       RMSE" in quiet.stdout
    log = next((tmp_path / "outputs" / "train").glob("*/*/*/train.log")).read_text()
    assert "epoch 1: time/als_s=" in log and "epoch 2:" in log
    loud = cli("train.py", *args, "verbose=true", "resume=false", cwd=tmp_path, data_root=small_root)
    assert "epoch 1: time/als_s=" in loud.stdout + loud.stderr


def test_progress_bar_shows_validation_rmse_and_seconds_per_epoch():
    screen = io.StringIO()
    bar = EpochProgress(10, file=screen)
    for epoch, val in ((1, 0.95), (2, 0.9), (3, 0.92)):
        bar.on_epoch(epoch, {"val/rmse": val, "time/als_s": 0.5, "time/eval_s": 0.25}, None)
    bar.finish()
    bar.close()
    text = screen.getvalue()
    assert "3/10" in text and "trained, stopped early: 100%" in text and "3/3" in text and "val RMSE 0.9200 (best 0.9000)" in text and "0.75 s/epoch" in text
    silent = EpochProgress(10, enabled=False, file=io.StringIO())
    silent.on_epoch(1, {"val/rmse": 1.0, "time/als_s": 1.0, "time/eval_s": 0.0}, None)
    assert silent.bar.disable


def test_user_errors_from_the_config_exit_cleanly(tmp_path):
    out = cli("train.py", "split.fold=u1", cwd=tmp_path, data_root=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "write split=predefined split.fold=u1" in out.stderr
    with pytest.raises(RecError):
        RunConfig.from_mapping({"dtype": "float16"})


def test_tuned_values_apply_to_their_dataset_only_and_the_report_runs_plain_als(small_root, tmp_path):
    small = run_config(compose_cfg("config", tmp_path, small_root))
    assert (small.train.relaxation, small.model.genre_bias) == (1.8, True)
    other = run_config(compose_cfg("config", tmp_path, small_root, "data=ml-100k"))
    assert (other.train.relaxation, other.model.genre_bias) == (1.0, False)
    report = run_config(compose_cfg("config", tmp_path, small_root, "+experiment=report"))
    assert (report.train.relaxation, report.model.genre_bias, report.model.tau) == (1.0, False, 0.25)
    biases = run_config(compose_cfg("config", tmp_path, small_root, "model=biases"))
    assert biases.train.relaxation == 1.0 and not biases.model.genre_bias
    topn = run_config(compose_cfg("config", tmp_path, small_root, "+experiment=topn_small"))
    assert (topn.model.implicit, topn.model.K, topn.model.liked_min, topn.model.genre_bias,
            topn.train.ranking_max_users, topn.train.relaxation) == (True, 256, 4.0, False, None, 1.0)
