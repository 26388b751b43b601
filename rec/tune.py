"""Hyperparameter search by Bayesian optimization over any of ``train.py``'s overrides.

    python -m rec.tune model=features --space model.tau=log:1:100 --space model.gamma=log:0.1:30 \\
        --space model.eta=log:0.1:30 --trials 30 --seed 0

Optuna's TPE sampler proposes each trial's values from the trials before it;
each trial composes rec's Hydra config from the fixed overrides plus its
values, exactly as ``python train.py`` would, trains, and reports its
validation RMSE, or minus its validation NDCG@k for ``feedback=implicit`` (which the search
minimizes; test metrics are never used).
Every trial writes its normal run folder under the search's folder
(``<paths.output_root>/tune/<name>/<trial>/``, its model and TensorBoard run
inside it too, so the user's model store is untouched).  The study lives in
``optuna.db`` there: rerunning the same command resumes it and runs only the
trials still missing from ``--trials``; a trial that fails (a refused value, a
singular system, a NaN) is recorded as failed, with its error in ``trials.csv``,
and the search goes on.  It ends with the finished trials ranked in
``sweep_results.csv``, as a grid does, and the best
trial as a command line to paste; ``--save-tuned`` writes its ``model.*``
values to ``conf/tuned/<data>_<model>.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import optuna
import torch
import yaml

from rec.cli import run_or_exit
from rec.errors import ConfigError, RecError
from rec.hydra_config import CONF, compose_run
from rec.pipeline import load, train
from rec.training import selection_loss
from rec.sweep import write_summary

log = logging.getLogger(__name__)
FAILURES = (RecError, torch.linalg.LinAlgError, ValueError, FloatingPointError)
"""What a trial may raise and the search survives: refused values, singular systems."""
SPACE_HELP = ("KEY=LOW:HIGH (uniform), KEY=log:LOW:HIGH, KEY=int:LOW:HIGH, KEY=int:log:LOW:HIGH "
              "or KEY=choice:A,B,...")


@dataclass(frozen=True)
class Dimension:
    """One searched override: a float or integer range (optionally on a log scale) or choices."""

    key: str
    kind: str
    """``float``, ``int`` or ``choice``."""
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Dimension":
        key, _, spec = text.partition("=")
        parts = spec.split(":")
        if not key or not spec:
            raise ConfigError(f"--space {text}: write {SPACE_HELP}.")
        if parts[0] == "choice" and len(parts) == 2 and parts[1]:
            return cls(key, "choice", choices=tuple(parts[1].split(",")))
        kind = "int" if parts[0] == "int" else "float"
        parts = parts[1:] if parts[0] == "int" else parts
        log = parts[:1] == ["log"]
        return cls._range(text, key, kind, parts[1:] if log else parts, log)

    @classmethod
    def _range(cls, text: str, key: str, kind: str, bounds: list[str], log: bool) -> "Dimension":
        try:
            low, high = (int(b) if kind == "int" else float(b) for b in bounds)
        except ValueError:
            raise ConfigError(f"--space {text}: write {SPACE_HELP}.") from None
        if not low < high or (log and low <= 0) or not math.isfinite(high - low):
            raise ConfigError(f"--space {text}: needs LOW < HIGH" + (", both above 0 on a log "
                                                                     "scale." if log else "."))
        return cls(key, kind, low, high, log)

    def suggest(self, trial: optuna.Trial):
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def text(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice:{','.join(self.choices)}"
        prefix = ("int:" if self.kind == "int" else "") + ("log:" if self.log else "")
        return f"{self.key}={prefix}{self.low:g}:{self.high:g}"


def override(key: str, value) -> str:
    return f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"


@dataclass
class Search:
    """A named search: fixed overrides, the searched space, and its folder."""

    fixed: list[str]
    space: list[Dimension]
    folder: Path

    def overrides(self, values: dict, trial: str) -> list[str]:
        """The train.py overrides of one trial: its model and TensorBoard run are kept inside
        the search folder, never in the user's model store."""
        fixed = [o for o in self.fixed if o.split("=", 1)[0] not in ("paths.models", "paths.tensorboard")]
        own = [f"paths.models={self.folder / 'models'}",
               f"paths.tensorboard={self.folder / 'tensorboard' / trial}"]
        return [*fixed, *own, *(override(k, v) for k, v in values.items())]

    def run_trial(self, trial: optuna.Trial) -> float:
        values = {d.key: d.suggest(trial) for d in self.space}
        run_dir = self.folder / f"{trial.number:03d}"
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            [*self.fixed, *(override(k, v) for k, v in values.items())]))
        trial.set_user_attr("run", str(run_dir))
        try:
            run = compose_run(self.overrides(values, run_dir.name))
            return selection_loss(train(run, run_dir)["final"], run.model, run.train.ranking_k)
        except FAILURES as e:
            trial.set_user_attr("error", str(e))
            log.warning("trial %d failed: %s", trial.number, e)
            raise


def sampler(seed: int, startup: int) -> optuna.samplers.TPESampler:
    """TPE over all dimensions jointly (multivariate): rec's priors interact (tau with gamma
    and eta), which independent per-dimension models cannot see."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def open_study(search: Search, seed: int, startup: int = 10) -> optuna.Study:
    """The search's study in ``optuna.db``, created or resumed; trials a killed search left
    running are marked failed."""
    search.folder.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{search.folder / 'optuna.db'}")
    study = optuna.create_study(study_name="rec", storage=storage, direction="minimize",
                                sampler=sampler(seed, startup), load_if_exists=True)
    identity = {"fixed": search.fixed, "space": [d.text() for d in search.space]}
    stored = {k: study.user_attrs.get(k) for k in identity}
    if stored["space"] is None:
        for k, v in identity.items():
            study.set_user_attr(k, v)
    elif stored != identity:
        raise ConfigError(f"{search.folder} holds another search ({stored}); give this one "
                          "another --name, or rerun that one's command to resume it.")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return study


def finished(study: optuna.Study) -> int:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=done))


def best_command(search: Search, study: optuna.Study) -> str:
    best = study.best_trial
    return " ".join(["python train.py", *search.fixed,
                     *(override(k, best.params[k]) for k in (d.key for d in search.space))])


def save_tuned(search: Search, study: optuna.Study, command: str) -> Path:
    """The best trial's ``model.*`` values as ``conf/tuned/<data>_<model>.yaml``."""
    run = compose_run(search.fixed)
    params = study.best_trial.params
    model = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("model.")}
    other = [k for k in params if not k.startswith("model.")]
    if not model:
        raise ConfigError("--save-tuned saves model.* values, and this search has none.")
    path = CONF / "tuned" / f"{run.data.name}_{run.model.name}.yaml"
    head = (f"# @package model\n# Found by rec.tune on {date.today()}, {_best(run, study)}:\n"
            f"#   {command.replace('python train.py', 'python -m rec.tune')}\n"
            + (f"# Not saved here (not model.* keys): {', '.join(other)}; add them on the command "
               "line.\n" if other else ""))
    path.write_text(head + yaml.safe_dump(model, sort_keys=True))
    return path


def _best(run, study: optuna.Study) -> str:
    """The best trial's validation score, as the search saw it."""
    if run.model.implicit:
        return f"validation NDCG@{run.train.ranking_k} {-study.best_value:.4f}"
    return f"validation RMSE {study.best_value:.4f}"


def tune(args: argparse.Namespace) -> str:
    space = [Dimension.parse(t) for t in args.space]
    if not space:
        raise ConfigError(f"nothing to search: give --space {SPACE_HELP}.")
    if args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: run at least one trial.")
    run = compose_run(args.overrides)
    run.split.make(load(run)[0])  # a data or split problem would fail every trial: stop here
    command = [*args.overrides, *args.space, f"seed={args.seed}", f"startup={args.startup}"]
    name = args.name or hashlib.sha1(" ".join(command).encode()).hexdigest()[:10]
    search = Search(list(args.overrides), space, Path(run.paths.output_root) / "tune" / name)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one line
    study = open_study(search, args.seed, args.startup)
    remaining = args.trials - finished(study)
    if remaining > 0:
        study.optimize(search.run_trial, n_trials=remaining, catch=FAILURES)
    write_summary(search.folder)
    trials = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    trials.to_csv(search.folder / "trials.csv", index=False)
    failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RecError(f"all {failed} trials of {search.folder} failed; their errors are in "
                       f"{search.folder / 'trials.csv'}.")
    command = best_command(search, study)
    lines = [f"search {search.folder}: {finished(study)} trials ({failed} failed); best trial "
             f"{study.best_trial.number}, {_best(run, study)}",
             f"best command: {command}",
             f"tensorboard --logdir {search.folder / 'tensorboard'}   (HPARAMS: every trial)"]
    if args.save_tuned:
        lines.append(f"saved {save_tuned(search, study, command)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rec.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="fixed train.py overrides, e.g. model=features")
    parser.add_argument("--space", action="append", default=[], help=f"a searched override: {SPACE_HELP}")
    parser.add_argument("--trials", type=int, default=30, help="trials in all (a rerun resumes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    parser.add_argument("--startup", type=int, default=10,
                        help="random trials before TPE models the results (default 10)")
    parser.add_argument("--name", help="the search's folder under <paths.output_root>/tune/ "
                        "(default: a hash of the overrides, spaces, seed and startup)")
    parser.add_argument("--save-tuned", action="store_true",
                        help="write the best model.* values to conf/tuned/<data>_<model>.yaml")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    print(run_or_exit(lambda: tune(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
