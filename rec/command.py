"""The ``rec`` command: ``rec train|analyze|tune|data|serve ...`` (installed by ``pip install``).

``rec train`` and ``rec analyze`` take the same Hydra overrides as ``python train.py`` and
``python analyze.py``, which call the same entry points here; the configs are the package's
own (``rec/conf``, the top-level ``conf/`` in a clone).  ``rec tune`` is ``python -m
rec.tune``, ``rec data`` is ``python -m rec.data``, and ``rec serve MODEL`` puts a published
model behind a JSON API and a web page (:mod:`rec.serve`).
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from rec.cli import run_or_exit
from rec.hydra_config import (CONF, analyze_config, main_or_exit, route_epoch_lines, run_config,
                              run_dir)

RANK_QUIET = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled",
              "hydra/hydra_logging=disabled"]
"""Under torchrun, ranks other than 0 write nothing: no run folder, no config copy, no log."""


def _train(cfg: DictConfig) -> float:
    from rec.pipeline import train
    from rec.training import selection_loss
    run = run_config(cfg)
    route_epoch_lines(run.verbose)
    return selection_loss(train(run, run_dir())["final"], run.model, run.train.ranking_k)


def _analyze(cfg: DictConfig) -> None:
    from rec.analysis.run import run_task  # here: training need not import the analyses
    job = analyze_config(cfg)
    route_epoch_lines(job.run.verbose)
    run_task(job, run_dir())


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def _hydra_train(cfg: DictConfig) -> float:
    return run_or_exit(lambda: _train(cfg))


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="analyze")
def _hydra_analyze(cfg: DictConfig) -> None:
    run_or_exit(lambda: _analyze(cfg))


def _hydra(main, name: str, argv: list[str]) -> int:
    """Run a ``@hydra.main`` function on the overrides ``argv``, its job named ``name`` (its
    log file is ``name.log``, as it was for ``python train.py``)."""
    sys.argv = [f"rec {name}", *argv, f"hydra.job.name={name}"]
    if name == "train" and int(os.environ.get("RANK", "0")) > 0:
        sys.argv += RANK_QUIET
    main_or_exit(main)
    return 0


def train(argv: list[str] | None = None) -> int:
    """``rec train OVERRIDES`` and ``python train.py OVERRIDES``."""
    return _hydra(_hydra_train, "train", sys.argv[1:] if argv is None else argv)


def analyze(argv: list[str] | None = None) -> int:
    """``rec analyze OVERRIDES`` and ``python analyze.py OVERRIDES``."""
    return _hydra(_hydra_analyze, "analyze", sys.argv[1:] if argv is None else argv)


def _tune(argv: list[str]) -> int:
    from rec.tune import main as tune_main
    return tune_main(argv)


def _data(argv: list[str]) -> int:
    from rec.data.__main__ import main as data_main
    return data_main(argv)


def _serve(argv: list[str]) -> int:
    from rec.serve import main as serve_main
    return serve_main(argv)


COMMANDS = {"train": train, "analyze": analyze, "tune": _tune, "data": _data, "serve": _serve}

USAGE = """usage: rec COMMAND [ARGS...]

  rec train [OVERRIDES]      train a model: rec train model=features K=10 (Hydra overrides)
  rec analyze task=NAME      one of the report's analyses: data, polarization, recommend, ...
  rec tune [OPTIONS]         search settings on validation (rec tune --help)
  rec data NAME              a dataset's counts; rec data split NAME --out DIR exports a split
  rec serve MODEL            a JSON API and a web page over a published model (rec serve --help)

Each COMMAND --help says more; rec train --help lists the config groups."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: rec {name}: no such command; the commands are "
              f"{', '.join(COMMANDS)} (rec --help).", file=sys.stderr)
        return 2
    return COMMANDS[name](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
