"""Run one of the report's analyses: ``python analyze.py task=<data|polarization|recommend|genres|dimensions>``.

It uses the trained model for ``data=``, ``split=``, ``model=`` and ``K=`` (training it
first if there is none; ``checkpoint=PATH`` picks a model file) and writes figures, JSON
and CSV into its run folder (see README.md).
"""

import hydra
from omegaconf import DictConfig

from rec.analysis.run import run_task
from rec.cli import run_or_exit
from rec.hydra_config import analyze_config, main_or_exit, route_epoch_lines, run_dir


def _analyze(cfg: DictConfig) -> None:
    job = analyze_config(cfg)
    route_epoch_lines(job.run.verbose)
    run_task(job, run_dir())


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    run_or_exit(lambda: _analyze(cfg))


if __name__ == "__main__":
    main_or_exit(main)
