"""Train a model of the ladder: ``python train.py model=features K=10`` (see README.md).

Any key is a Hydra override (``data=ml-32m``, ``model.tau=0.5``, ``device=cuda``);
``-m K=8,10,12 model.tau=0.1,0.25,1`` runs a grid and ranks it by validation RMSE,
which this returns for a sweeper to minimize.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rec.cli import run_or_exit
from rec.pipeline import train_from_config


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return run_or_exit(lambda: train_from_config(cfg, run_dir)["final"]["val/rmse"])


if __name__ == "__main__":
    main()
