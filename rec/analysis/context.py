"""What every analysis starts from: the data, its split, and the trained model (SPEC §3).

The model is found in the model store by dataset, split, rung and K; when
there is none it is trained first with the same run configuration (and the
analysis says so); ``checkpoint=PATH`` names a model file explicitly, which
must have been trained on the configured dataset and split.  So "users who
rated the seed in training" always means exactly the ratings the model saw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from rec.als.params import days
from rec.bayes.config import InferenceConfig
from rec.data.load import load_dataset
from rec.data.ratings import Ratings
from rec.data.splits import Split
from rec.errors import ConfigError, RecError
from rec.model import Recommender
from rec.pipeline import train
from rec.run_config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class Context:
    """The run configuration, the dataset and an output folder; models on demand."""

    run: RunConfig
    out_dir: Path
    checkpoint: str | None = None
    ratings: Ratings = field(init=False)
    _models: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ratings = load_dataset(self.run.data, timestamps=self.run.split.needs_timestamps
                                    or self.run.model.has_time)

    def days(self, rows: torch.Tensor) -> torch.Tensor | None:
        """When the ratings at ``rows`` were made, for a model with time terms (``None``
        otherwise: its predictions need no day)."""
        stamps = self.ratings.timestamp
        return None if stamps is None or not self.run.model.has_time else days(stamps[rows])

    @cached_property
    def split(self) -> Split:
        """The configured split, the one every model used here was trained on."""
        return self.run.split.make(self.ratings)

    def model(self, rung: str | None = None, K: int | None = None,
              inference: InferenceConfig | None = None, **changes) -> Recommender:
        """The trained model of ``rung`` at ``K`` (default: the configured ones) with the
        configured priors, ``changes`` (e.g. ``genre_bias=True``) applied, inferred by
        ``inference`` (default: the configured); trained if missing."""
        name = rung or self.run.model.name
        if name != "features":  # only features has genre priors: another rung cannot take them
            for key, off in (("genre_bias", False), ("movie_year", False), ("movie_tags", 0)):
                changes.setdefault(key, off)
        if name != "features":
            changes.setdefault("person_features", False)
        if name == "biases":  # nor SVD++ sums: they add to embeddings, which biases has none of
            for key in ("svdpp", "svdpp_flipped", "svdpp_heldout"):
                changes.setdefault(key, False)
        if name == "latent":  # nor time terms: they move biases, which latent has none of
            changes.setdefault("time_bins", 0)
            changes.setdefault("time_drift", False)
        wanted = replace(self.run.model, name=name, K=self.run.model.K if K is None else int(K),
                         **changes)
        inference = inference or self.run.inference
        key = (wanted.name, wanted.dim, tuple(sorted(changes.items())), inference)
        if key not in self._models:
            self._models[key] = self._find_or_train(replace(self.run, model=wanted,
                                                            inference=inference))
        return self._models[key]

    def _find_or_train(self, run: RunConfig) -> Recommender:
        if self.checkpoint and run.model == self.run.model and run.inference == self.run.inference:
            return self._check(Recommender.load(self.checkpoint), self.checkpoint)
        path = run.published_model(self.ratings.name)
        reason = f"no trained {run.model.name} model with K={run.model.dim} for {self.ratings.name} at {path}"
        if path.is_file():
            try:
                stored = Recommender.load(path)
            except RecError as e:  # rec's own published copy, unreadable or an older format
                reason = str(e)
            else:
                inferred = stored.meta.get("inference", asdict(InferenceConfig()))
                if stored.config == run.model and stored.meta.get("split") == run.split.options() \
                        and inferred == asdict(run.inference):
                    return self._check(stored, path)
                reason = (f"the model at {path} was trained with {stored.config.hparams()} "
                          f"({inferred}), not the configured {run.model.hparams()} "
                          f"({asdict(run.inference)})")
        print(f"{reason}; training it first")
        train(run, self.out_dir / f"train-{run.variant}-K{run.model.dim}")
        return self._check(Recommender.load(path), path)

    def _check(self, model: Recommender, path) -> Recommender:
        if model.dataset != self.ratings.name or len(model.movies) != self.ratings.n_items:
            raise ConfigError(f"{path} was trained on {model.dataset}, not {self.ratings.name}; "
                              "choose the matching data= or another checkpoint=.")
        trained, configured = model.meta.get("split"), self.run.split.options()
        if trained != configured:
            raise ConfigError(f"{path} was trained on the split {_options(trained)}, not the "
                              f"configured {_options(configured)}; add the overrides of its split "
                              "(split=..., split.fold=..., split.seed=...) or drop checkpoint=.")
        log.info("using %s (%s)", path, model.config.hparams())
        return model

    def write_json(self, name: str, payload: dict) -> Path:
        path = self.out_dir / name
        path.write_text(json.dumps(payload, indent=2, default=_jsonable))
        return path


def _options(split: dict | None) -> str:
    if not split:
        return "(unknown: a model saved before splits were recorded)"
    return " ".join(f"{k}={v}" for k, v in split.items())


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
