"""Train a model of the ladder: ``python train.py model=features K=10`` (see README.md).

Any key is a Hydra override (``data=ml-32m``, ``model.tau=0.5``, ``device=cuda``);
``-m K=8,10,12 model.tau=0.1,0.25,1`` runs a grid and ranks it by validation RMSE (minus
validation NDCG@k for ``feedback=implicit``), which this returns for a sweeper to minimize.
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from rec.cli import run_or_exit
from rec.hydra_config import main_or_exit, route_epoch_lines, run_config, run_dir
from rec.pipeline import train
from rec.training import selection_loss


def _train(cfg: DictConfig) -> float:
    run = run_config(cfg)
    route_epoch_lines(run.verbose)
    return selection_loss(train(run, run_dir())["final"], run.model, run.train.ranking_k)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run_or_exit(lambda: _train(cfg))


RANK_QUIET = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled",
              "hydra/hydra_logging=disabled"]
"""Under torchrun, ranks other than 0 write nothing: no run folder, no config copy, no log."""

if __name__ == "__main__":
    if int(os.environ.get("RANK", "0")) > 0:
        sys.argv += RANK_QUIET
    main_or_exit(main)
