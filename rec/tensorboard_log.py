"""TensorBoard logging of a training run (SPEC §3).

Per-epoch scalars (RMSE and NLL per split, the objective, seconds per epoch),
the run's hyperparameters with its final metrics (the HPARAMS tab), and the
movie embeddings for the projector with title, genres and rating count.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from rec.als.params import Params

FINAL_RUN = "final"
FINAL_TAGS = ("train/rmse", "train/nll", "objective", "val/rmse", "val/nll", "test/rmse",
              "test/nll", "test/warm_rmse", "test/cold_rmse", "test/coverage_50",
              "test/coverage_90")
"""Final metrics shown in HPARAMS (beside ranking metrics such as ``test/ndcg@10``); the
interval coverages only for Gibbs runs."""


def _clean(value):
    return value if isinstance(value, (int, float, str, bool)) else str(value)


class TensorBoardLogger:
    """A training callback writing to ``log_dir``; ``purge_step`` drops events a resumed run redoes."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

    def on_epoch(self, epoch: int, record: dict, params: Params) -> None:
        for key, value in record.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def log_hparams(self, hparam_dict: dict, metrics: dict, best_epoch: int) -> None:
        """The hyperparameters with the kept model's metrics, for the HPARAMS tab.

        The metrics are written into the sub-run ``final`` at the kept epoch, under the tags
        of the per-epoch curves, so Time Series shows them as one marked point on those curves
        instead of a screen of one-point charts; HPARAMS reads them from there.
        """
        final = {k: float(v) for k, v in metrics.items() if k in FINAL_TAGS or "@" in k}
        exp, ssi, sei = hparams({k: _clean(v) for k, v in hparam_dict.items()}, final)
        data = HParamsPluginData.FromString(exp.value[0].metadata.plugin_data.content)
        for info in data.experiment.metric_infos:
            info.name.group = FINAL_RUN
        exp.value[0].metadata.plugin_data.content = data.SerializeToString()
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)
        with SummaryWriter(str(self.log_dir / FINAL_RUN)) as writer:
            for key, value in final.items():
                writer.add_scalar(key, value, best_epoch)

    def log_projector(self, item_factors: torch.Tensor, titles: list[str], genres: list[str],
                      counts: torch.Tensor, max_items: int = 20_000) -> None:
        """Movie embeddings with metadata; the ``max_items`` most rated when there are more."""
        if item_factors.shape[1] == 0:
            return
        keep = torch.argsort(counts, descending=True, stable=True)[:max_items]
        meta = [[titles[i].replace("\t", " "), genres[i], str(int(counts[i]))] for i in keep.tolist()]
        self.writer.add_embedding(item_factors[keep].float().cpu(), metadata=meta,
                                  metadata_header=["title", "genres", "ratings"],
                                  tag="movie_embeddings")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
