"""Run one of the report's analyses: ``python analyze.py task=<data|polarization|recommend|genres|dimensions>``.

It uses the trained model for ``data=``, ``model=`` and ``K=`` (training it first if there
is none; ``checkpoint=PATH`` picks a model file) and writes figures, JSON and CSV into
its run folder (see README.md).
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rec.analysis.run import run_task
from rec.cli import run_or_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_or_exit(lambda: run_task(cfg, run_dir))


if __name__ == "__main__":
    main()
