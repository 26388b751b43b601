"""A progress bar over training epochs for a person at a terminal (tqdm).

It shows the epoch, the current validation RMSE, the best so far and the
seconds per epoch; the full per-epoch records go to the run's log file.  On
a terminal that is not interactive (a pipe, CI, a sweep's log) it stays
silent, like tqdm's ``disable=None``.
"""

from __future__ import annotations

import math

from tqdm import tqdm

from rec.als.params import Params


class EpochProgress:
    """A training callback; ``done`` epochs were run before (a resumed run).  ``file``: where
    to draw (default: the terminal's stderr, and only when it is interactive)."""

    def __init__(self, max_epochs: int, done: int = 0, enabled: bool = True, file=None,
                 unit: str = "epoch"):
        self.best, self.unit = math.inf, unit
        disable = (None if file is None else False) if enabled else True
        self.bar = tqdm(total=max_epochs, initial=done, desc="training", unit=unit, file=file,
                        disable=disable, dynamic_ncols=True, leave=True)

    def on_epoch(self, epoch: int, record: dict, params: Params) -> None:
        name, value, better = _selected(record)
        self.best = value if self.best == math.inf else better(self.best, value)
        seconds = record["time/als_s"] + record["time/eval_s"]
        self.bar.set_postfix_str(f"val {name} {value:.4f} (best {self.best:.4f}), "
                                 f"{seconds:.2f} s/{self.unit}", refresh=False)
        self.bar.update(epoch - self.bar.n)

    def finish(self) -> None:
        """Training ended normally: an early stop fills the bar at the epochs it ran."""
        if not self.bar.disable and self.bar.n < self.bar.total:
            self.bar.set_description("trained, stopped early")
            self.bar.total = self.bar.n
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _selected(record: dict):
    """The validation metric that selects epochs: RMSE (lower is better), or NDCG@k for the
    implicit loss (higher is better)."""
    if "val/rmse" in record:
        return "RMSE", record["val/rmse"], min
    key = next(k for k in record if k.startswith("val/ndcg@"))
    return f"NDCG@{key.split('@')[1]}", record[key], max
