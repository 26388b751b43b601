"""What the accuracy benchmarks share: a model trained (or reused from a model store) and its
errors on the split's test rows, each predicted at its own timestamp."""

from __future__ import annotations

import shutil
from pathlib import Path

from rec.hydra_config import compose_run
from rec.model import Recommender
from rec.pipeline import load, train


def errors_on_test(out: Path, name: str, args: list[str]):
    """The metrics of the model ``args`` (``train.py`` overrides) configure, trained into
    ``out``'s model store unless it is there already, and its clipped prediction errors on
    the test rows.  A run folder ``name`` left by other settings is not this run's: it is
    cleared before training."""
    run = compose_run([*args, f"paths.root={out}", "progress=false", "tensorboard=false"])
    path = run.published_model(run.data.name)
    if not path.is_file():
        folder = out / "runs" / name.replace(" ", "_").replace("/", "-")
        shutil.rmtree(folder, ignore_errors=True)
        train(run, folder)
    model = Recommender.load(path)
    ratings, _ = load(run)
    test = run.split.make(ratings).test.long()
    stamps = None if ratings.timestamp is None else ratings.timestamp[test]
    pred = model.predict_ids(ratings.user_ids[ratings.user[test].long()],
                             ratings.movies.ids[ratings.item[test].long()], stamps)
    return model.metrics, (pred - ratings.rating[test]).double()
