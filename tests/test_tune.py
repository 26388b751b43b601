"""rec.tune: a model-based search over train.py's overrides, on tiny synthetic data."""

from __future__ import annotations

import csv

import optuna
import pytest

from rec.errors import ConfigError
from rec.tune import Dimension, main

TINY = ["data=synthetic", "data.scale=0.005", "K=3", "train.max_epochs=4",
        "train.ranking_max_users=20", "tensorboard=true"]


def search(tmp_path, *extra: str, trials: int = 3) -> list[str]:
    return [*TINY, f"paths.data_root={tmp_path / 'data'}", f"paths.root={tmp_path}",
            "--space", "model.tau=log:1:100", "--space", "model.gamma=log:0.1:30", *extra,
            "--trials", str(trials), "--seed", "1", "--name", "s"]


def study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="rec", storage=f"sqlite:///{tmp_path / 'outputs/tune/s/optuna.db'}")


def test_a_three_trial_search_ranks_its_trials_and_prints_the_best_command(tmp_path, capsys):
    assert main(search(tmp_path)) == 0
    out = capsys.readouterr().out
    s = study(tmp_path)
    assert [t.state for t in s.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    folder = tmp_path / "outputs" / "tune" / "s"
    rows = list(csv.DictReader(open(folder / "sweep_results.csv")))
    assert len(rows) == 3 and float(rows[0]["val_rmse"]) == pytest.approx(s.best_value)
    assert [float(r["val_rmse"]) for r in rows] == sorted(float(r["val_rmse"]) for r in rows)
    best = s.best_trial.params
    assert (f"best command: python train.py {' '.join(TINY)} paths.data_root={tmp_path / 'data'} "
            f"paths.root={tmp_path} model.tau={best['model.tau']:.6g} "
            f"model.gamma={best['model.gamma']:.6g}") in out
    for n in range(3):  # every trial: its run folder, and its own TensorBoard run with hparams
        assert (folder / f"{n:03d}" / "metrics.json").is_file()
        assert list((folder / "tensorboard" / f"{n:03d}").glob("*/events.out.tfevents.*"))
    assert not (tmp_path / "models").exists()  # the user's model store is left alone
    assert len(list((folder / "models").glob("synthetic-*/*/features-K3.pt"))) == 1


def test_failed_trials_are_recorded_and_the_search_goes_on_and_resumes(tmp_path, capsys):
    bad = ["--space", "model.lam=-1:1"]  # a lambda of 0 or below is refused: that trial fails
    assert main(search(tmp_path, *bad, trials=4)) == 0
    states = [t.state for t in study(tmp_path).trials]
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.COMPLETE in states
    failed = [t for t in study(tmp_path).trials if t.state == optuna.trial.TrialState.FAIL]
    assert all("model.lam=" in t.user_attrs["error"] and t.params["model.lam"] <= 0 for t in failed)
    assert "failed" in open(tmp_path / "outputs/tune/s/trials.csv").read()
    before = [(t.number, t.params, t.value) for t in study(tmp_path).trials]
    assert main(search(tmp_path, *bad, trials=6)) == 0  # the same command again: resumes
    after = study(tmp_path).trials
    assert len(after) == 6 and [(t.number, t.params, t.value) for t in after[:4]] == before
    with pytest.raises(SystemExit) as stop:  # another search under the same name
        main(search(tmp_path, "--space", "K=int:2:8", trials=1))
    assert stop.value.code == 2 and "holds another search" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [("model.tau=log:0:5", "above 0 on a log scale"),
                                           ("model.tau=5:1", "LOW < HIGH"),
                                           ("model.tau", "write KEY=LOW:HIGH"),
                                           ("K=int:a:b", "write KEY=LOW:HIGH")])
def test_bad_ranges_are_refused_before_any_trial(text, message):
    with pytest.raises(ConfigError, match=message):
        Dimension.parse(text)


def test_dimensions_parse_and_print_back():
    for text in ("model.tau=log:1:100", "K=int:4:32", "K=int:log:2:64", "model.eta=0.1:30",
                 "model.reg_scaling=choice:none,count"):
        assert Dimension.parse(text).text() == text
